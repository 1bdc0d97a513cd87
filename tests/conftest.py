"""Every test runs against a throwaway AIRFLOW_HOME, set before Airflow is first imported."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="phonestatus-airflow-home-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(_HOME, "dags")
os.makedirs(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], exist_ok=True)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
# Tests reshape the example DAGs between runs (env settings); Airflow 3.1 would otherwise keep the
# previous serialisation for 30 s and run tasks of the old shape.
os.environ["AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL"] = "0"


import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

if TYPE_CHECKING:
    from airflow_provider_phonestatus.sandbox import SandboxServer

#: Plan rate of the tests' phonestatus connection (per minute): the sandbox answers as fast as it can.
FAST_RATE = 600_000
FAST_EXTRA = {"rate_limit_per_minute": FAST_RATE, "max_retries": 2, "backoff_base": 0.01, "backoff_max": 0.05}

pytest_plugins = ["tests.db"]


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """Airflow's metadata database, migrated once per session, as ``airflow db migrate`` does it."""
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return _HOME


@pytest.fixture
def vendor(phonestatus_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """The sandbox with no rate limit, and the default phonestatus connection pointing at it."""
    phonestatus_sandbox.configure(rate_limit_per_minute=None)
    conn = {
        "conn_type": "phonestatus",
        "host": phonestatus_sandbox.url,
        "password": phonestatus_sandbox.config.api_key,
        "extra": {**FAST_EXTRA, "timeout": 2},
    }
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_DEFAULT", json.dumps(conn))
    return phonestatus_sandbox
