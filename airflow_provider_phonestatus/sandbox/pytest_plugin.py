"""Pytest fixtures for the vendor-API sandbox, registered through the ``pytest11`` entry point.

Installed with the package, so every pytest run loads this module: it imports nothing heavy
(aiohttp and the server are imported inside the fixtures).

Use in a DAG author's tests (``pip install airflow-provider-phonestatus[sandbox]``)::

    def test_refresh(phonestatus_sandbox, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_DEFAULT", phonestatus_sandbox.connection_json())
        phonestatus_sandbox.inject("http_503", count=2)          # the first two requests fail
        phonestatus_sandbox.set_truth("13800138001", {"result": "9", "channel": "卫星"})
        run_my_task()
        ledger = phonestatus_sandbox.ledger()
        assert ledger["billed"] == 3 and ledger["by_number"]["13800138001"]["billed"] == 1

Change the defaults for a whole suite by overriding ``phonestatus_sandbox_config`` in a
``conftest.py`` (e.g. ``return SandboxConfig(rate_limit_per_minute=None)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_phonestatus.sandbox.config import SandboxConfig
    from airflow_provider_phonestatus.sandbox.server import SandboxServer


@pytest.fixture(scope="session")
def phonestatus_sandbox_config() -> SandboxConfig:
    """The config each test starts from; override this fixture to change the suite's defaults."""
    from airflow_provider_phonestatus.sandbox.config import SandboxConfig

    return SandboxConfig()


@pytest.fixture(scope="session")
def phonestatus_sandbox_server(phonestatus_sandbox_config: SandboxConfig) -> Iterator[SandboxServer]:
    """One sandbox server on a free loopback port for the whole session (state shared: prefer
    ``phonestatus_sandbox``, which resets it)."""
    from airflow_provider_phonestatus.sandbox.server import SandboxServer

    with SandboxServer(phonestatus_sandbox_config) as server:
        yield server


@pytest.fixture
def phonestatus_sandbox(
    phonestatus_sandbox_server: SandboxServer, phonestatus_sandbox_config: SandboxConfig
) -> SandboxServer:
    """The session's sandbox with config restored and ledger, faults, rate window and overrides cleared."""
    phonestatus_sandbox_server.configure(**dataclasses.asdict(phonestatus_sandbox_config))
    phonestatus_sandbox_server.reset()
    return phonestatus_sandbox_server
