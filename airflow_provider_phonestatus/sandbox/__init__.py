"""A local stand-in for the phone status vendor API: real HTTP, rate limit, faults and a ledger.

Two runners with one API (the ``Sandbox`` protocol: ``start``/``stop``, context manager, ``url``,
``endpoint_url``, ``config``, ``connection_json``, ``configure``, ``inject``, ``set_truth``,
``ledger``, ``reset``):

* ``SandboxProcess`` runs the ``phonestatus-sandbox`` CLI as a child process and drives it over
  its ``/_sandbox/*`` admin endpoints. Like a real vendor, it does not share the GIL with your
  client, so its timestamps (and so its rate limit) stay true on a loaded machine. The pytest
  fixtures use it by default.
* ``SandboxServer`` runs it on a background thread of your own process; controls act in-process.
  Starts faster and can be debugged in-process, but a busy client delays it.

``phonestatus-sandbox`` runs it by hand (a DAG author's CI); the pytest plugin gives the
``phonestatus_sandbox`` fixture (see ``airflow_provider_phonestatus.sandbox.pytest_plugin``). The
truth it answers is documented in ``airflow_provider_phonestatus.sandbox.truth``. Needs the
``sandbox`` extra (aiohttp), imported only when ``SandboxServer`` is first used, and httpx, imported
when ``SandboxProcess`` is, so merely importing this package (as pytest does for the plugin) stays
cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_phonestatus.sandbox.api import Sandbox
from airflow_provider_phonestatus.sandbox.config import SandboxConfig

if TYPE_CHECKING:
    from airflow_provider_phonestatus.sandbox.process import SandboxProcess, SandboxStartError
    from airflow_provider_phonestatus.sandbox.server import SandboxServer

__all__ = ["Sandbox", "SandboxConfig", "SandboxProcess", "SandboxServer", "SandboxStartError"]


def __getattr__(name: str) -> Any:
    if name == "SandboxServer":
        from airflow_provider_phonestatus.sandbox.server import SandboxServer

        return SandboxServer
    if name in ("SandboxProcess", "SandboxStartError"):
        from airflow_provider_phonestatus.sandbox import process

        return getattr(process, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
