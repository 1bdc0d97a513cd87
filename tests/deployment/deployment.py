"""A real Airflow 3 deployment on loopback for the deployment tests, started and stopped by PID.

``running_deployment(workdir)`` starts, in this order: the vendor sandbox (``SandboxProcess``), two
fresh PostgreSQL databases on the machine's server (Airflow's metadata, and the warehouse holding
``crm.customers``), ``airflow db migrate``, then ``airflow api-server``, ``airflow scheduler``
(LocalExecutor) and ``airflow dag-processor``, each in a session of its own. The connections, the
pool and a Variable are created with the commands the README gives users. On exit, whatever
happened, every component gets SIGTERM, then SIGKILL, by its process group (whose id is the
component's PID, so task runners it forked go too), the sandbox stops and both databases are
dropped. Component logs and AIRFLOW_HOME stay under ``workdir`` for a post-mortem.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.fernet import Fernet

from airflow_provider_phonestatus.sandbox.config import SandboxConfig
from airflow_provider_phonestatus.sandbox.process import SandboxProcess

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "dags"
#: A second DAG bundle with what stands for users' downstream DAGs (see its module docstring).
TEST_DAGS = Path(__file__).resolve().parent / "dags"
AIRFLOW = Path(sys.executable).parent / "airflow"
POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432"
DB_PREFIX = "phonestatus_deploy_"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"

#: The plan of the deployment's API key. The sandbox admits ``PLAN_PER_MINUTE * window / 60``
#: requests per 2 s window, counted over 1.5 s (the grace absorbs 0.5 s of arrival jitter on a
#: busy 2-core machine: the pacer's precision is proven by the benchmarks, not here). One task at
#: the plan rate stays far below the limit; two at once exceed it within a second.
PLAN_PER_MINUTE = 1200
SANDBOX_CONFIG = SandboxConfig(rate_limit_per_minute=PLAN_PER_MINUTE, window_s=2.0, grace_s=0.5)
USERNAME = "admin"
DAG_IDS = {
    "phone_status_revalidation",
    "phone_status_manual_check",
    "phone_status_on_new_rows",
    "example_customer_load",
    "phone_status_changes",
    "deployment_status_consumer",
}
#: The Celery deployment's broker (RabbitMQ runs on the machine) and workers' slots each.
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
CELERY_CONCURRENCY = 4
#: The connection of the shared rate limit (the machine's Redis), as the README adds it.
REDIS_CONN_ID = "phonestatus_redis"
REDIS_URI = "redis://127.0.0.1:6379"
WORKER_NAME_ENV = "PHONESTATUS_TEST_WORKER"
WORKER_NAME_CALLABLE = "tests.deployment.worker_name.hostname"
#: ``PHONESTATUS_SCHEDULE``: 02:00 on 29 February. With ``catchup=False`` and a start date, Airflow
#: starts a run for the latest past 02:00 as soon as the DAG is unpaused; this cron's latest is
#: before the DAG's start date, so during the session only the tests start runs.
NIGHTLY_CRON = "0 2 29 2 *"

#: The README's commands, verbatim where they take no deployment-specific value.
POOL_COMMAND = 'airflow pools set phonestatus_api 1 "Phone status API: one key, one task at a time"'
WINDOW_MINUTES = 30  # the run window Variable, set with ``airflow variables set``

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls it


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Component:
    """One Airflow process, leader of its own process group, logging to ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the group this component leads (its PID is the group id)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"--- last {lines} lines of {self.log}\n" + "\n".join(text[-lines:])


def stop_components(components: list[Component], timeout: float = 20.0) -> None:
    """SIGTERM every group, wait up to ``timeout`` for the leaders, SIGKILL whatever is left."""
    for component in components:
        if component.proc.poll() is None:
            component.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for component in components:
        try:
            component.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            component.signal(signal.SIGKILL)
            component.proc.wait()
        component.signal(signal.SIGKILL)  # task runners the leader left behind, if any


@contextlib.contextmanager
def databases(*roles: str) -> Iterator[dict[str, str]]:
    """A fresh database per role (``{role: name}``), dropped on exit; leftovers of dead sessions
    (their PID is in the name) are dropped first."""
    admin = sa.create_engine(f"{POSTGRES}/test", isolation_level="AUTOCOMMIT")
    names = {role: f"{DB_PREFIX}{os.getpid()}_{secrets.token_hex(3)}_{role}" for role in roles}
    try:
        with admin.connect() as conn:
            existing = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": DB_PREFIX + "%"}
            ).scalars()
            for name in existing:
                if not _pid_alive(int(name.removeprefix(DB_PREFIX).split("_")[0])):
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for name in names.values():
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield names
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Deployment:
    """What the tests use: URLs, the UI login, the vendor key, ``cli()`` and ``api()``."""

    home: Path  #: AIRFLOW_HOME
    artifacts: Path  #: component logs, screenshots: kept after the session
    sandbox: SandboxProcess
    metadata_url: str
    warehouse_url: str
    port: int = field(default_factory=free_port)
    username: str = USERNAME
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    components: list[Component] = field(default_factory=list)
    #: Celery workers to start (0: the scheduler's LocalExecutor runs the tasks).
    celery_workers: int = 0
    #: More parse-time settings (``PHONESTATUS_*``) for every component.
    settings: dict[str, str] = field(default_factory=dict)
    #: The phonestatus connection's extras beyond the plan rate and the number field.
    conn_extra: dict[str, Any] = field(default_factory=dict)
    _token: str | None = field(default=None, repr=False)
    _client: httpx.Client | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """The API server, which also serves the UI."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def sandbox_url(self) -> str:
        return self.sandbox.url

    @property
    def api_key(self) -> str:
        return self.sandbox.config.api_key

    @property
    def bad_api_key(self) -> str:
        """A key the sandbox refuses."""
        return "refused-" + self.api_key

    @property
    def env(self) -> dict[str, str]:
        """Environment of every component and of ``cli()``: this deployment's config only."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PHONESTATUS_"))}
        bundles = [
            {"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
            {"name": "deployment-tests", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(TEST_DAGS)}},
        ]
        config = {
            "core": {
                "dags_folder": str(DAGS_FOLDER),
                "load_examples": "False",
                "executor": "LocalExecutor",
                "parallelism": "4",
                "dags_are_paused_at_creation": "False",
                "test_connection": "Enabled",  # as the README tells users, for the UI's Test button
                "fernet_key": self._secret("fernet_key", lambda: Fernet.generate_key().decode()),
                "simple_auth_manager_users": f"{self.username}:admin",
                "simple_auth_manager_passwords_file": str(self.home / "passwords.json"),
                "execution_api_server_url": f"{self.base_url}/execution/",
            },
            "database": {"sql_alchemy_conn": self.metadata_url},
            "api": {
                "base_url": self.base_url,
                "host": "127.0.0.1",
                "port": str(self.port),
                "workers": "1",
                "secret_key": self._secret("api_secret", lambda: secrets.token_hex(16)),
            },
            "api_auth": {"jwt_secret": self._secret("jwt_secret", lambda: secrets.token_hex(32))},
            "scheduler": {"scheduler_heartbeat_sec": "2", "scheduler_idle_sleep_time": "0.5"},
            "dag_processor": {
                "dag_bundle_config_list": json.dumps(bundles),
                "refresh_interval": "5",
                "min_file_process_interval": "10",
                "parsing_processes": "1",
            },
            "logging": {"base_log_folder": str(self.home / "logs")},
        }
        if self.celery_workers:
            config["core"]["executor"] = "CeleryExecutor"
            config["celery"] = {
                "broker_url": BROKER_URL,
                "result_backend": "db+" + self.metadata_url.replace("+psycopg2", ""),
                "worker_concurrency": str(CELERY_CONCURRENCY),
            }
            # a queue of its own: other Airflows on the machine's broker never take its tasks
            config["operators"] = {"default_queue": self.home.parent.name + "_" + str(os.getpid())}
        env = {f"AIRFLOW__{s.upper()}__{k.upper()}": v for s, opts in config.items() for k, v in opts.items()}
        return {
            **base,
            "AIRFLOW_HOME": str(self.home),
            "PHONESTATUS_SCHEDULE": NIGHTLY_CRON,
            **self.settings,
            **env,
        }

    def _secret(self, name: str, make: Callable[[], str]) -> str:
        """One value per deployment, shared by every component (tokens signed by one are read by all)."""
        path = self.home / f".{name}"
        if not path.exists():
            path.write_text(make())
        return path.read_text()

    # -- the CLI and the REST API ----------------------------------------------------------------

    def cli(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``airflow *args`` with this deployment's environment; ``check`` fails on a non-zero exit."""
        done = subprocess.run(
            [str(AIRFLOW), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"airflow {shlex.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
            )
        return done

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A REST call (``/api/v2/...``) with a JWT from ``/auth/token``; renewed once on a 401."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=30, trust_env=False)
        headers = dict(kw.pop("headers", None) or {})
        for _ in range(2):
            if self._token is None:
                login = self._client.post(
                    "/auth/token", json={"username": self.username, "password": self.password}
                )
                login.raise_for_status()
                self._token = login.json()["access_token"]
            auth = {"Authorization": f"Bearer {self._token}"}
            response = self._client.request(method, path, headers={**headers, **auth}, **kw)
            if response.status_code != 401:
                break
            self._token = None
        return response

    def get(self, path: str, **kw: Any) -> Any:
        """GET ``path``: its JSON, or an AssertionError with the answer."""
        response = self.api("GET", path, **kw)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 180) -> None:
        """Migrate, start the components, create connections/pool/Variable, wait for the DAGs."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({self.username: self.password}))
        self.cli("db", "migrate", check=True, timeout=300)
        for name, *args in (
            ("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port)),
            ("scheduler", "scheduler"),
            ("dag-processor", "dag-processor"),
        ):
            self._spawn(name, *args)
        for number in range(1, self.celery_workers + 1):
            # Both workers run on this machine: each names itself (the task instances' hostname)
            # through ``hostname_callable``, so the tests can tell which worker ran what.
            worker = f"worker{number}"
            self._spawn(
                worker,
                *("celery", "worker", "--concurrency", str(CELERY_CONCURRENCY), "--celery-hostname"),
                f"{worker}@%h",
                env={WORKER_NAME_ENV: worker, "AIRFLOW__CORE__HOSTNAME_CALLABLE": WORKER_NAME_CALLABLE},
            )
        self.configure()
        self.wait_until_ready(timeout)

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = self.artifacts / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(AIRFLOW), *args],
                env={**self.env, "PYTHONPATH": str(ROOT), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole by its PID
                preexec_fn=_die_with_parent,
            )
        self.components.append(Component(name, proc, log))

    def configure(self) -> None:
        """The connections, the pool and the window Variable, as the README tells users to."""
        phonestatus = {
            "conn_type": "phonestatus",
            "host": self.sandbox_url,
            "password": self.api_key,
            "extra": {
                "rate_limit_per_minute": self.plan_per_minute,
                "number_field": "mobile",
                **self.conn_extra,
            },
        }
        commands = [
            ["connections", "add", "phonestatus_default", "--conn-json", json.dumps(phonestatus)],
            ["connections", "add", REDIS_CONN_ID, "--conn-uri", REDIS_URI],
            ["connections", "add", "warehouse_default", "--conn-uri", self.warehouse_url],
            shlex.split(POOL_COMMAND)[1:],
            ["variables", "set", "phonestatus_window_minutes", str(WINDOW_MINUTES)],
        ]
        for args in commands:
            self.cli(*args, check=True)

    @property
    def plan_per_minute(self) -> int:
        return self.sandbox.config.rate_limit_per_minute or PLAN_PER_MINUTE

    def wait_until_ready(self, timeout: float) -> None:
        """Healthy scheduler and DAG processor, and every DAG of both bundles parsed."""
        deadline, problem = time.monotonic() + timeout, "not started"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self.get("/api/v2/monitor/health")
                sick = [c for c in ("scheduler", "dag_processor") if health[c]["status"] != "healthy"]
                dags = {d["dag_id"] for d in self.get("/api/v2/dags", params={"limit": 100})["dags"]}
                errors = self.get("/api/v2/importErrors")["import_errors"]
            except (httpx.TransportError, AssertionError) as exc:
                problem = f"API server: {exc}"
            else:
                assert not errors, f"DAG import errors: {errors}"
                problem = f"unhealthy: {sick}, DAGs missing: {sorted(DAG_IDS - dags)}"
                if not sick and dags >= DAG_IDS:
                    return
            time.sleep(1)
        raise AssertionError(f"the deployment was not ready within {timeout:g} s ({problem})\n{self.tails()}")

    def check_alive(self) -> None:
        """AssertionError with its log if a component has exited."""
        for component in self.components:
            if component.proc.poll() is not None:
                raise AssertionError(
                    f"airflow {component.name} exited ({component.proc.returncode})\n{component.tail()}"
                )

    def tails(self, lines: int = 40) -> str:
        return "\n".join(component.tail(lines) for component in self.components)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        stop_components(self.components)


@contextlib.contextmanager
def running_deployment(
    workdir: Path, sandbox_config: SandboxConfig = SANDBOX_CONFIG, **options: Any
) -> Iterator[Deployment]:
    """A started deployment under ``workdir``; stopped and its databases dropped on exit.
    ``options``: :class:`Deployment` fields (``celery_workers``, ``settings``, ``conn_extra``)."""
    with contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(SandboxProcess(sandbox_config))
        names = stack.enter_context(databases("metadata", "warehouse"))
        deployment = Deployment(
            home=workdir / "airflow-home",
            artifacts=workdir / "artifacts",
            sandbox=sandbox,
            metadata_url=f"{POSTGRES}/{names['metadata']}",
            warehouse_url=f"postgres://postgres@127.0.0.1:5432/{names['warehouse']}",
            **options,
        )
        stack.callback(deployment.stop)
        deployment.start()
        yield deployment
