"""``SandboxProcess``: the sandbox in a child process, driven over its ``/_sandbox/*`` endpoints.

A real vendor is another process on another machine. ``SandboxServer`` runs the sandbox on a
thread of the caller's process, so under load its event loop waits for the GIL behind the client's
threads and timestamps arrivals late and in bursts: a client pacing itself correctly can then be
throttled. ``SandboxProcess`` runs ``python -m airflow_provider_phonestatus.sandbox --port 0``
with one flag per ``SandboxConfig`` field, in its own interpreter, and offers the same API (both
follow ``airflow_provider_phonestatus.sandbox.api.Sandbox``)::

    with SandboxProcess(SandboxConfig(rate_limit_per_minute=1200, window_s=1.0)) as sandbox:
        sandbox.inject("http_503", count=2)
        run_my_client(sandbox.url, sandbox.config.api_key)
        assert sandbox.ledger()["throttled"] == 0

Differences, all from the state living in the child: every control and every read of ``config``
is one loopback HTTP call (about a millisecond); errors the server reports come back as
``ValueError`` with the server's message; the controls need the process running
(``RuntimeError`` otherwise), and a restart begins again from the constructor's config with an
empty ledger. The child's stderr (the access log with ``access_log=True``, any traceback) goes,
line by line, to this module's logger at INFO. The child stops with ``stop()``, at interpreter
exit, or when this process dies (it watches its stdin), so it never outlives its parent.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import IO, Any, Unpack

import httpx

from airflow_provider_phonestatus.sandbox.api import ADMIN, Listen, SandboxBase, error_from_admin, fault_rule
from airflow_provider_phonestatus.sandbox.config import SandboxConfig, cli_args

log = logging.getLogger(__name__)

URL_LINE = re.compile(r"listening on (http://\S+)")
#: Where ``airflow_provider_phonestatus`` lives: put first on the child's path, so it runs this copy.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SandboxStartError(OSError):
    """The sandbox process did not start (port taken, too slow, crashed); the message has its stderr.

    An ``OSError``, as ``SandboxServer.start`` raises when it cannot listen.
    """


class SandboxProcess(SandboxBase):
    """The sandbox CLI as a child process; same API as ``SandboxServer``, controls over HTTP.

    ``start_timeout``: seconds to wait for the URL line. ``stop_timeout``: seconds ``stop()``
    waits after SIGTERM before it kills the child.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        **listen: Unpack[Listen],
    ) -> None:
        super().__init__(**listen)
        self._initial_config = config or SandboxConfig()
        self._start_timeout, self._stop_timeout = start_timeout, stop_timeout
        self._url = None
        self._proc: subprocess.Popen[str] | None = None
        self._admin: httpx.Client | None = None
        self._pumps: list[threading.Thread] = []
        self._stderr: deque[str] = deque(maxlen=100)
        self._reaper: weakref.finalize[[subprocess.Popen[str], float], SandboxProcess] | None = None

    # lifecycle
    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "airflow_provider_phonestatus.sandbox"]
        argv += [f"--host={self.host}", f"--port={self.port}", "--stop-on-stdin-eof"]
        argv += ["--access-log"] if self.access_log else []
        return argv + cli_args(self._initial_config)

    def start(self) -> str:
        """Start the process (idempotent) and return its base URL, e.g. ``http://127.0.0.1:41234``.

        ``SandboxStartError`` (with the child's stderr) if no URL comes within ``start_timeout``.
        """
        if self._url is not None:
            return self._url
        argv = self._argv()
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT + (os.pathsep + path if path else "")}
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._proc = proc
        self._reaper = weakref.finalize(self, _terminate, proc, self._stop_timeout)
        lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stderr.clear()
        self._pumps = [_pump(proc.stdout, lines.put, "stdout"), _pump(proc.stderr, self._on_stderr, "stderr")]
        try:
            first = lines.get(timeout=self._start_timeout)  # None: stdout closed, the child is ending
        except queue.Empty:
            first = ""
        match = URL_LINE.search(first or "")
        if match is None:
            self.stop()
            if first is None:
                problem = f"it exited with status {proc.returncode}"
            elif first:
                problem = f"its first line has no URL: {first.strip()!r}"
            else:
                problem = f"no URL printed within {self._start_timeout:g} s"
            raise SandboxStartError(
                f"the phonestatus sandbox process did not start: {problem}\n"
                f"command: {shlex.join(argv)}\n{self._stderr_tail()}"
            )
        self._url = match.group(1)
        self._admin = httpx.Client(base_url=self._url + ADMIN, timeout=30, trust_env=False)
        return self._url

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; always reaps the child (idempotent)."""
        proc, self._proc, self._url = self._proc, None, None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if proc is None:
            return
        _terminate(proc, self._stop_timeout)
        if self._reaper is not None:
            self._reaper.detach()
        for pump in self._pumps:
            pump.join(self._stop_timeout)
        self._pumps = []
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def _stderr_tail(self) -> str:
        return "stderr:\n" + ("\n".join(self._stderr) or "(empty)")

    def _on_stderr(self, line: str | None) -> None:
        if line is not None:
            self._stderr.append(line.rstrip("\n"))
            log.info("%s", line.rstrip("\n"))

    @property
    def config(self) -> SandboxConfig:
        """The config in force (``GET /_sandbox/config``); before start, the one it will start with."""
        if self._proc is None:
            return self._initial_config
        return SandboxConfig(**self._call("GET", "/config"))

    # controls: the /_sandbox/* endpoints (which call the SandboxState methods SandboxServer calls)
    def configure(self, **changes: Any) -> SandboxConfig:
        """Change config fields; returns the new config. ``ValueError`` on unknown or invalid values."""
        return SandboxConfig(**self._call("POST", "/config", changes))

    def inject(self, kind: str, count: int | None = 1, number: str | None = None, **kw: Any) -> int:
        """Queue a fault (``retry_after=``, ``status=`` in ``kw``); returns how many rules are pending."""
        pending: int = self._call("POST", "/faults", fault_rule(kind, count, number, **kw))["faults_pending"]
        return pending

    def set_truth(self, number: str, data: Mapping[str, Any] | None) -> None:
        """Serve ``data`` (or a whole envelope if it has ``code``) for ``number``; ``None`` removes."""
        self._call("POST", "/truth", {"number": number, "data": None if data is None else dict(data)})

    def ledger(self) -> dict[str, Any]:
        """Snapshot of the ledger (see ``Ledger.snapshot``) plus ``balance`` and ``faults_pending``."""
        snapshot: dict[str, Any] = self._call("GET", "/ledger")
        return snapshot

    def orders(self) -> list[dict[str, Any]]:
        """Every billed answer, in billing order: ``{"number": ..., "order_no": ...}``."""
        orders: list[dict[str, Any]] = self._call("GET", "/orders")
        return orders

    def reset(self) -> None:
        """Clear ledger (and orders), faults, rate-limit window and overrides; refill the balance;
        keep config."""
        self._call("POST", "/reset")

    def _call(self, method: str, path: str, payload: object = None) -> Any:
        """One admin request: its JSON answer; ``ValueError`` for a 400, ``RuntimeError`` if it died."""
        admin, proc = self._admin, self._proc
        if admin is None or proc is None:
            raise RuntimeError("the sandbox is not running: call start() first")
        try:
            response = admin.request(method, path, json=payload)
        except httpx.TransportError as exc:
            if _exited(proc, 0.5):
                status = proc.returncode
                raise RuntimeError(f"the sandbox process exited ({status}); {self._stderr_tail()}") from exc
            raise
        if response.status_code == 400:
            try:
                body: object = response.json()
            except ValueError:
                body = response.text
            raise error_from_admin(body)
        return response.raise_for_status().json()


def _pump(stream: IO[str] | None, sink: Callable[[str | None], None], name: str) -> threading.Thread:
    """Feed ``stream``'s lines to ``sink`` on a thread, then ``None`` at its end (so pipes never fill)."""

    def run() -> None:
        assert stream is not None
        try:
            for line in stream:
                sink(line)
        except (OSError, ValueError):  # closed under us by stop()
            pass
        finally:
            sink(None)

    thread = threading.Thread(target=run, name=f"phonestatus-sandbox-{name}", daemon=True)
    thread.start()
    return thread


def _exited(proc: subprocess.Popen[str], within: float) -> bool:
    """Whether the child has ended, or ends within ``within`` seconds (then it is reaped)."""
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        return False
    return True


def _terminate(proc: subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns once the child is reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
