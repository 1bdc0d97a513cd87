"""Pytest fixtures for the vendor-API sandbox, registered through the ``pytest11`` entry point.

Installed with the package, so every pytest run loads this module: it imports nothing heavy
(aiohttp, httpx and the runners are imported inside the fixtures).

Use in a DAG author's tests (``pip install airflow-provider-phonestatus[sandbox]``)::

    def test_refresh(phonestatus_sandbox, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_DEFAULT", phonestatus_sandbox.connection_json())
        phonestatus_sandbox.inject("http_503", count=2)          # the first two requests fail
        phonestatus_sandbox.set_truth("13800138001", {"result": "9", "channel": "卫星"})
        run_my_task()
        ledger = phonestatus_sandbox.ledger()
        assert ledger["billed"] == 3 and ledger["by_number"]["13800138001"]["billed"] == 1

Fixtures:

* ``phonestatus_sandbox`` (function scope): the session's sandbox with its config restored and
  ledger, faults, rate window and overrides cleared. Type it as
  ``airflow_provider_phonestatus.sandbox.Sandbox``.
* ``phonestatus_sandbox_server`` (session scope): the one sandbox of the session, not reset.
* ``phonestatus_sandbox_config`` (session scope): the config each test starts from. Override it
  in a ``conftest.py`` to change a suite's defaults (e.g. ``return SandboxConfig(balance=100)``).
* ``phonestatus_sandbox_mode`` (session scope): how the sandbox runs. ``"process"`` (the default)
  is a ``SandboxProcess``, a child process, so a loaded machine cannot make it throttle a client
  that paces itself correctly; ``"thread"`` is a ``SandboxServer`` in the test process (starts
  faster, debuggable in-process). Override the fixture in a ``conftest.py``
  (``return "thread"``), or set the environment variable ``PHONESTATUS_SANDBOX_MODE``, which the
  default fixture reads (e.g. ``PHONESTATUS_SANDBOX_MODE=thread pytest``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_phonestatus.sandbox.api import Sandbox
    from airflow_provider_phonestatus.sandbox.config import SandboxConfig

MODE_VARIABLE = "PHONESTATUS_SANDBOX_MODE"
MODES = ("process", "thread")


@pytest.fixture(scope="session")
def phonestatus_sandbox_config() -> SandboxConfig:
    """The config each test starts from; override this fixture to change the suite's defaults."""
    from airflow_provider_phonestatus.sandbox.config import SandboxConfig

    return SandboxConfig()


@pytest.fixture(scope="session")
def phonestatus_sandbox_mode() -> str:
    """ "process" (default: a ``SandboxProcess``) or "thread" (a ``SandboxServer``); override this
    fixture or set ``PHONESTATUS_SANDBOX_MODE``."""
    return os.environ.get(MODE_VARIABLE) or "process"


@pytest.fixture(scope="session")
def phonestatus_sandbox_server(
    phonestatus_sandbox_config: SandboxConfig, phonestatus_sandbox_mode: str
) -> Iterator[Sandbox]:
    """One sandbox on a free loopback port for the whole session (state shared: prefer
    ``phonestatus_sandbox``, which resets it)."""
    server: Sandbox
    if phonestatus_sandbox_mode == "process":
        from airflow_provider_phonestatus.sandbox.process import SandboxProcess

        server = SandboxProcess(phonestatus_sandbox_config)
    elif phonestatus_sandbox_mode == "thread":
        from airflow_provider_phonestatus.sandbox.server import SandboxServer

        server = SandboxServer(phonestatus_sandbox_config)
    else:
        raise pytest.UsageError(
            f"phonestatus_sandbox_mode (or ${MODE_VARIABLE}) must be one of {', '.join(MODES)}, "
            f"not {phonestatus_sandbox_mode!r}"
        )
    with server:
        yield server


@pytest.fixture
def phonestatus_sandbox(
    phonestatus_sandbox_server: Sandbox, phonestatus_sandbox_config: SandboxConfig
) -> Sandbox:
    """The session's sandbox with config restored and ledger, faults, rate window and overrides cleared."""
    phonestatus_sandbox_server.configure(**dataclasses.asdict(phonestatus_sandbox_config))
    phonestatus_sandbox_server.reset()
    return phonestatus_sandbox_server
