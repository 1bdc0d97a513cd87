"""How the sandbox behaves: one frozen dataclass, validated once, shared by the API, the CLI and HTTP.

Every field carries its own help text and value kind in its metadata, so the CLI flags, the
``POST /_sandbox/config`` validation and the docs are generated from this single definition.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

STYLES = ("http", "envelope")
VALUE_TYPES = ("string", "number", "mixed")


def _opt(default: Any, kind: str, help: str, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field whose metadata drives validation and the CLI."""
    return field(default=default, metadata={"kind": kind, "help": help, "choices": choices})


@dataclass(frozen=True)
class SandboxConfig:
    """The vendor behaviour the sandbox imitates; change it with ``SandboxServer.configure(**changes)``."""

    api_key: str = _opt("sandbox-key", "str", "the only X-API-Key accepted")
    rate_limit_per_minute: int | None = _opt(
        60, "int?", "plan rate; at most rate*window_s/60 requests admitted per window (none = unlimited)"
    )
    window_s: float = _opt(60.0, "float", "length of the sliding rate-limit window in seconds")
    grace_s: float = _opt(
        0.05, "float", "arrivals count in (t - window_s + grace_s, t]: absorbs loopback jitter"
    )
    throttle_style: str = _opt(
        "http", "str", "http: HTTP 429 + Retry-After; envelope: HTTP 200 + code 429", STYLES
    )
    key_style: str = _opt("http", "str", "http: HTTP 401 + code 401; envelope: HTTP 200 + code 401", STYLES)
    balance: int | None = _opt(None, "int?", "billed lookups left before code 402 (none = unlimited)")
    latency_ms: float = _opt(0.0, "float", "delay before every answer, in milliseconds")
    latency_jitter_ms: float = _opt(0.0, "float", "extra random delay in [0, jitter], in milliseconds")
    number_field: str = _opt("mobile", "str", "JSON body field that carries the number")
    endpoint: str = _opt("/mobile_status/check", "str", "path of the status check")
    value_types: str = _opt(
        "string", "str", "result/transferStatus as strings, JSON numbers, or mixed by parity", VALUE_TYPES
    )
    timeout_hold_s: float = _opt(30.0, "float", "how long a 'timeout' fault holds the request")
    world: int = _opt(
        0, "int", "0: the documented truth; w >= 1: numbers whose third-to-last digit is < w change"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = f.metadata["kind"]
            if kind == "float" and _is_int(value):
                object.__setattr__(self, f.name, float(value))
            elif not _KIND_CHECKS[kind](value):
                raise ValueError(f"{f.name}: {value!r} is not a valid {_KIND_NAMES[kind]}")
            choices = f.metadata["choices"]
            if choices and value not in choices:
                raise ValueError(f"{f.name}: {value!r} is not one of {', '.join(choices)}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        rate, balance = self.rate_limit_per_minute, self.balance
        problems = {
            "rate_limit_per_minute": rate is not None and rate < 1,
            "window_s": self.window_s <= 0,
            "grace_s": not 0 <= self.grace_s < self.window_s,
            "balance": balance is not None and balance < 0,
            "latency_ms": self.latency_ms < 0,
            "latency_jitter_ms": self.latency_jitter_ms < 0,
            "timeout_hold_s": self.timeout_hold_s < 0,
            "world": self.world < 0,
            "number_field": not self.number_field,
            "endpoint": not self.endpoint.startswith("/") or self.endpoint.startswith("/_sandbox"),
        }
        bad = [name for name, wrong in problems.items() if wrong]
        if bad:
            raise ValueError(f"out of range: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    @property
    def window_limit(self) -> int | None:
        """Requests admitted per sliding window: ``rate * window_s / 60`` rounded down, at least 1."""
        if self.rate_limit_per_minute is None:
            return None
        return max(1, math.floor(self.rate_limit_per_minute * self.window_s / 60 + 1e-9))

    def replace(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """A validated copy with ``changes`` applied; unknown names raise ``ValueError``."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what ``GET /_sandbox/config`` answers)."""
        return dataclasses.asdict(self)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


_KIND_CHECKS: dict[str, Callable[[object], bool]] = {
    "str": lambda v: isinstance(v, str),
    "float": _is_float,
    "int": _is_int,
    "int?": lambda v: v is None or _is_int(v),
}
_KIND_NAMES = {"str": "string", "float": "number", "int": "integer", "int?": "integer or null"}


def int_or_none(text: str) -> int | None:
    """CLI parser for "int?" fields: "none", "null" or "unlimited" mean ``None``."""
    return None if text.strip().lower() in ("none", "null", "unlimited") else int(text)


#: How the CLI parses each value kind (named functions, so argparse errors read well).
CLI_TYPES: dict[str, Callable[[str], Any]] = {"str": str, "float": float, "int": int, "int?": int_or_none}


def cli_flag(name: str) -> str:
    """The CLI flag of a config field: ``rate_limit_per_minute`` -> ``--rate-limit-per-minute``."""
    return "--" + name.replace("_", "-")


def cli_args(config: SandboxConfig) -> list[str]:
    """Flags that make ``phonestatus-sandbox`` serve exactly ``config`` (the inverse of ``CLI_TYPES``).

    One ``--flag=value`` per field, so values starting with "-" are not read as options; floats
    use ``repr``, which round-trips exactly.
    """
    args = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        text = "none" if value is None else repr(value) if isinstance(value, float) else str(value)
        args.append(f"{cli_flag(f.name)}={text}")
    return args
