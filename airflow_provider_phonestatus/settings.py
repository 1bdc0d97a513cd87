"""How to reach the vendor: one immutable settings object, read from an Airflow connection.

The contract leaves the body field, error codes and plan size unknown, so every such choice is a
connection extra with the contract's default; hooks and benchmarks build the same object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError

DEFAULT_BASE_URL = "https://openapi.toolkk.com"
DEFAULT_ENDPOINT = "/mobile_status/check"
DEFAULT_NUMBER_FIELD = "mobile"
DEFAULT_RATE_LIMIT_PER_MINUTE = 60
DEFAULT_TIMEOUT = 5.0
#: Upper bound of the derived concurrency: 300 req/s still holds with answers taking 400 ms.
MAX_DERIVED_CONCURRENCY = 128


@dataclass(frozen=True)
class PhoneStatusSettings:
    """Everything a lookup needs; ``api_key`` never appears in its repr."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    endpoint: str = DEFAULT_ENDPOINT
    number_field: str = DEFAULT_NUMBER_FIELD
    rate_limit_per_minute: float = DEFAULT_RATE_LIMIT_PER_MINUTE
    timeout: float = DEFAULT_TIMEOUT
    max_concurrency: int | None = None  #: None derives it from the rate and the timeout
    max_retries: int = 4  #: further attempts per number after the first, for retryable failures
    backoff_base: float = 0.5  #: seconds; doubles per attempt, full jitter
    backoff_max: float = 30.0
    max_retry_after: float = 300.0  #: cap on a vendor's Retry-After, so a bad header cannot hang a task
    max_consecutive_failures: int = 10  #: numbers in a row failed or rejected before the batch stops
    proxy: str | None = None
    verify_ssl: bool = True
    #: An Airflow Redis connection: every hook on this API key, in every process, shares one
    #: limit through it (:mod:`~.shared_pacing`); None paces each hook on its own.
    rate_limit_redis_conn_id: str | None = None

    def __post_init__(self) -> None:
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https") or not urlsplit(self.base_url).netloc:
            raise PhoneStatusConfigError(
                f"phonestatus host must be a URL with http:// or https://, got {self.base_url!r}"
            )
        if not self.number_field:
            raise PhoneStatusConfigError("number_field must not be empty")
        for name in ("rate_limit_per_minute", "timeout", "backoff_base", "backoff_max"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PhoneStatusConfigError(f"{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.max_retry_after) and self.max_retry_after >= 0):
            raise PhoneStatusConfigError("max_retry_after must be a number >= 0")
        for name in ("max_retries", "max_consecutive_failures"):
            if getattr(self, name) < 0:
                raise PhoneStatusConfigError(f"{name} must not be negative")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise PhoneStatusConfigError("max_concurrency must be at least 1")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/" + self.endpoint.lstrip("/")

    @property
    def interval(self) -> float:
        """Seconds between two request starts at the plan rate."""
        return 60.0 / self.rate_limit_per_minute

    @property
    def concurrency(self) -> int:
        """Requests in flight at once: enough to keep the plan rate busy while answers take up to
        ``timeout``, bounded so a high plan does not open hundreds of sockets."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        needed = math.ceil(self.rate_limit_per_minute / 60.0 * self.timeout) + 1
        return max(2, min(MAX_DERIVED_CONCURRENCY, needed))

    def with_changes(self, **changes: Any) -> PhoneStatusSettings:
        return replace(self, **changes)

    @classmethod
    def from_connection(
        cls, host: str | None, password: str | None, extra: Mapping[str, Any]
    ) -> PhoneStatusSettings:
        """Build settings from a connection's host, password (the API key) and extras."""
        if not password:
            raise PhoneStatusConfigError("the phonestatus connection has no API key (password)")
        known = {f for f in cls.__dataclass_fields__ if f not in ("api_key", "base_url")}
        # Forms of some Airflow versions store widget values as ``extra__phonestatus__<name>``.
        extra = {str(k).removeprefix("extra__phonestatus__"): v for k, v in extra.items()}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise PhoneStatusConfigError(f"unknown phonestatus connection extras: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in extra.items():
            if value is None or value == "" or name not in known:
                continue
            kwargs[name] = _coerce(name, value)
        base_url = (host or "").strip() or DEFAULT_BASE_URL
        return cls(api_key=password, base_url=base_url, **kwargs)


_INTS = {"max_concurrency", "max_retries", "max_consecutive_failures"}
_FLOATS = {"rate_limit_per_minute", "timeout", "backoff_base", "backoff_max", "max_retry_after"}
_BOOLS = {"verify_ssl"}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _coerce(name: str, value: Any) -> Any:
    """Extras typed in the UI arrive as strings: turn each into its field's type, strictly.

    Anything that is not clearly of the type is an error naming the extra: a typo must never
    become a silent default (``verify_ssl: "flase"`` would otherwise turn TLS checks off).
    """
    if name in _BOOLS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise PhoneStatusConfigError(
            f"phonestatus extra {name} must be true or false (yes/no, on/off, 1/0), got {value!r}"
        )
    if name in _INTS or name in _FLOATS:
        number = _number(value)
        if number is None or not math.isfinite(number) or (name in _INTS and not number.is_integer()):
            kind = "a whole number" if name in _INTS else "a number"
            raise PhoneStatusConfigError(f"phonestatus extra {name} must be {kind}, got {value!r}")
        return int(number) if name in _INTS else number
    if not isinstance(value, str):
        raise PhoneStatusConfigError(f"phonestatus extra {name} must be text, got {value!r}")
    return value


def _number(value: Any) -> float | None:
    """A number given as a JSON number or as its text; booleans and other types are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None
