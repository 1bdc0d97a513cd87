"""dbt in a virtual environment of its own (``<repo>/.venv-dbt``), built once and reused.

dbt pins its own dependency tree (protobuf, networkx, agate, ...), which must not be solved together
with Airflow's, so it lives beside the test venv and runs as a subprocess, as it would beside an
Airflow worker. The venv is rebuilt only when its requirement line changes: the stamp file holds it.
DuckDB is pinned to the version the tests' interpreter imports, so that the operator (in-process)
and dbt (in the subprocess) read and write one file format.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-dbt"
STAMP = VENV / ".requirements"
PROJECT = REPO / "examples" / "dbt_customers"

#: dbt-core and both adapters of one minor. 1.12 cannot be installed here: its build downloads from
#: outside the package index.
DBT_MINOR = (1, 11)

#: Variables of the tests' interpreter that would make the venv's Python load the wrong packages.
_LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")


def requirements() -> list[str]:
    """dbt-core, dbt-postgres, dbt-duckdb of ``DBT_MINOR``; duckdb as importable here, if it is."""
    major, minor = DBT_MINOR
    spec = f">={major}.{minor},<{major}.{minor + 1}"
    reqs = [f"dbt-core{spec}", f"dbt-postgres{spec}", f"dbt-duckdb{spec}"]
    try:
        import duckdb
    except ImportError:
        pass
    else:
        reqs.append(f"duckdb=={duckdb.__version__}")
    return reqs


def requirement_line() -> str:
    """What the stamp holds: the Python the venv is built for, and the requirements."""
    return f"python{sys.version_info.major}.{sys.version_info.minor} " + " ".join(requirements())


def dbt_executable() -> Path:
    return VENV / "bin" / "dbt"


def ensure_dbt_venv() -> Path:
    """The dbt venv, (re)built when missing or built for another requirement line; its ``dbt``."""
    line = requirement_line()
    if STAMP.is_file() and STAMP.read_text().strip() == line and dbt_executable().is_file():
        return dbt_executable()
    shutil.rmtree(VENV, ignore_errors=True)
    # The running interpreter's base Python (venv resolves it), so the major.minor is the same.
    _run([sys.executable, "-m", "venv", str(VENV)], "creating the dbt venv")
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "install", *requirements()], "installing dbt")
    STAMP.write_text(line + "\n")  # last: an interrupted build is rebuilt next time
    return dbt_executable()


def _run(cmd: Sequence[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), check=False)
    if done.returncode != 0:
        output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{output}")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with the tests' Python settings removed, dbt's telemetry off, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env.update(DO_NOT_TRACK="1", DBT_SEND_ANONYMOUS_USAGE_STATS="false", DBT_VERSION_CHECK="false")
    env.update(extra or {})
    return env


def run_dbt(
    *args: str,
    project_dir: Path = PROJECT,
    profiles_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``dbt <args> --project-dir ... --profiles-dir ...``; raises with dbt's output unless it exits 0.

    The profiles directory defaults to the project's own ``profiles.yml``; target and log paths go
    under the project directory (give a copy of the project to keep the checkout clean).
    """
    cmd = [
        str(ensure_dbt_venv()),
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(profiles_dir or project_dir),
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=clean_env(env),
        cwd=project_dir,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"dbt {' '.join(args)} exited {done.returncode}:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
        )
    return done
