"""A local stand-in for the phone status vendor API: real HTTP, rate limit, faults and a ledger.

``SandboxServer`` runs it in-process (tests, benchmarks); ``phonestatus-sandbox`` runs it as a
process (a DAG author's CI); the pytest plugin gives the ``phonestatus_sandbox`` fixture. The truth
it answers is documented in ``airflow_provider_phonestatus.sandbox.truth``. Needs the ``sandbox``
extra (aiohttp), imported only when ``SandboxServer`` is first used, so merely importing this
package (as pytest does for the plugin) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_phonestatus.sandbox.config import SandboxConfig

if TYPE_CHECKING:
    from airflow_provider_phonestatus.sandbox.server import SandboxServer

__all__ = ["SandboxConfig", "SandboxServer"]


def __getattr__(name: str) -> Any:
    if name == "SandboxServer":
        from airflow_provider_phonestatus.sandbox.server import SandboxServer

        return SandboxServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
