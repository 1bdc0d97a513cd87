"""What every sandbox offers, whether it runs in-process (``SandboxServer``) or as a child process
(``SandboxProcess``): the ``Sandbox`` protocol, and ``SandboxBase``, the half both runners share.

Type fixtures and helpers with ``Sandbox``; they then work with either runner. Only the lifecycle
and the controls differ (state calls in-process, the ``/_sandbox/*`` endpoints for a process);
URLs, the Airflow connection, fault rules and admin errors are defined here once. Imports nothing
heavy (no aiohttp, no httpx).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol, Self, TypedDict, Unpack

from airflow_provider_phonestatus.sandbox.config import SandboxConfig

ADMIN = "/_sandbox"  # prefix of the control endpoints; the vendor endpoint may not live under it


class Sandbox(Protocol):
    """The common API of ``SandboxServer`` and ``SandboxProcess`` (what the pytest fixtures yield)."""

    def start(self) -> str:
        """Start serving (idempotent) and return the base URL, e.g. ``http://127.0.0.1:41234``."""
        ...

    def stop(self) -> None:
        """Stop serving (idempotent); requests still held are dropped."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    @property
    def url(self) -> str:
        """Base URL; ``RuntimeError`` when not running."""
        ...

    @property
    def endpoint_url(self) -> str:
        """Full URL of the status check."""
        ...

    @property
    def config(self) -> SandboxConfig:
        """The config in force (after every ``configure``, whoever made it)."""
        ...

    def connection_json(self) -> str:
        """An Airflow connection in JSON form, e.g. for ``AIRFLOW_CONN_PHONESTATUS_DEFAULT``."""
        ...

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change config fields; returns the new config. ``ValueError`` on unknown or invalid values."""
        ...

    def inject(self, kind: str, count: int | None = 1, number: str | None = None, **kw: Any) -> int:
        """Queue a fault (``retry_after=``, ``status=`` in ``kw``); returns how many rules are pending."""
        ...

    def set_truth(self, number: str, data: Mapping[str, Any] | None) -> None:
        """Serve ``data`` (or a whole envelope if it has ``code``) for ``number``; ``None`` removes."""
        ...

    def ledger(self) -> dict[str, Any]:
        """Snapshot of the ledger (see ``Ledger.snapshot``) plus ``balance`` and ``faults_pending``."""
        ...

    def orders(self) -> list[dict[str, Any]]:
        """Every billed answer, in billing order: ``{"number": ..., "order_no": ...}``, the
        ``order_no`` being the answer's ``data.orderNo`` (None if it had none). Not in ``ledger()``."""
        ...

    def reset(self) -> None:
        """Clear ledger (and orders), faults, rate-limit window and overrides; refill the balance;
        keep config."""
        ...


class Listen(TypedDict, total=False):
    """Where a sandbox listens: ``host`` (127.0.0.1), ``port`` (0: a free one), and whether it logs
    request lines (``access_log``, numbers masked)."""

    host: str
    port: int
    access_log: bool


class SandboxBase(ABC):
    """URLs, connection and context manager on top of ``start``/``stop``/``config``; ``_url`` is set
    by ``start`` and cleared by ``stop``."""

    _url: str | None = None

    def __init__(self, **listen: Unpack[Listen]) -> None:
        self.host = listen.get("host", "127.0.0.1")
        self.port = listen.get("port", 0)
        self.access_log = listen.get("access_log", False)

    @abstractmethod
    def start(self) -> str: ...

    @abstractmethod
    def stop(self) -> None: ...

    @property
    @abstractmethod
    def config(self) -> SandboxConfig: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL; the sandbox must be started."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running: call start() first")
        return self._url

    @property
    def endpoint_url(self) -> str:
        """Full URL of the status check."""
        return self.url + self.config.endpoint

    def connection_json(self) -> str:
        """An Airflow connection in JSON form, e.g. for ``AIRFLOW_CONN_PHONESTATUS_DEFAULT``."""
        url, cfg = self.url, self.config
        extra: dict[str, Any] = {"endpoint": cfg.endpoint, "number_field": cfg.number_field}
        if cfg.rate_limit_per_minute is not None:
            extra["rate_limit_per_minute"] = cfg.rate_limit_per_minute
        conn = {"conn_type": "phonestatus", "host": url, "password": cfg.api_key, "extra": extra}
        return json.dumps(conn, ensure_ascii=False)


def fault_rule(kind: str, count: int | None = 1, number: str | None = None, **kw: Any) -> dict[str, Any]:
    """The rule ``inject`` queues (validated by ``FaultRule`` where the server runs)."""
    return {"kind": kind, "count": count, "number": number, **kw}


def admin_error(exc: Exception) -> dict[str, Any]:
    """The body of an admin endpoint's HTTP 400: ``{"ok": false, "error": "ValueError: ..."}``."""
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def error_from_admin(body: object) -> ValueError:
    """The ``ValueError`` a client raises for an admin 400, with the message the server raised."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, str):
        return ValueError(f"the sandbox refused the request: {body!r}")
    return ValueError(error.removeprefix(f"{ValueError.__name__}: "))
