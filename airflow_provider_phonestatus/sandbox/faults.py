"""Failure answers: the injected faults, and the refusals the rate limiter and key check share.

Faults are a FIFO list of rules; the first rule that matches a request (any request, or only those
for its ``number``) consumes one of its ``count`` and decides the answer. A faulted request is
never billed. ``count=None`` keeps a rule until ``reset()``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from airflow_provider_phonestatus.sandbox.config import SandboxConfig
from airflow_provider_phonestatus.sandbox.truth import (
    MSG_BAD_KEY,
    MSG_NO_BALANCE,
    MSG_THROTTLED,
    MSG_UPSTREAM_BUSY,
    envelope,
)

#: Success envelopes that say nothing about the number (no usable ``data.result``): malformed.
MALFORMED_SUCCESS: dict[str, dict[str, Any]] = {
    "malformed_no_data": {"code": 200, "message": "success"},
    "malformed_empty_data": {"code": 200, "message": "success", "data": {}},
    "malformed_null_result": {"code": 200, "message": "success", "data": {"result": None, "orderNo": "x"}},
    "malformed_empty_result": {"code": 200, "message": "success", "data": {"result": "", "orderNo": "x"}},
    "malformed_list_data": {"code": 200, "message": "success", "data": [{"result": "1"}]},
}
KINDS = (
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_429",
    "envelope_429",
    "envelope_500",
    "timeout",
    "reset",
    "bad_json",
    "empty_body",
    "html",
    "bad_key",
    "balance_exhausted",
    *MALFORMED_SUCCESS,
)
BAD_JSON = '{"code": 200, "data": '
_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def answer(status: int, body: object, headers: Mapping[str, str] | None = None) -> web.Response:
    """The one place an envelope becomes an HTTP answer (UTF-8 JSON, Chinese left readable)."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)


def html_page(status: int, title: str) -> web.Response:
    """A gateway-style HTML page, what proxies and WAFs send instead of JSON."""
    text = f"<html><head><title>{status} {title}</title></head><body><center><h1>{status} {title}</h1>"
    text += "</center><hr><center>nginx</center></body></html>"
    return web.Response(status=status, text=text, content_type="text/html")


def throttled(style: str, wait_s: int | str, status: int | None = None) -> web.Response:
    """Code 429 "请求过于频繁": HTTP 429 + ``Retry-After`` (style "http") or HTTP 200 (style "envelope")."""
    if style == "envelope":
        return answer(status or 200, envelope(429, MSG_THROTTLED))
    return answer(status or 429, envelope(429, MSG_THROTTLED), {"Retry-After": str(wait_s)})


def bad_key(style: str, status: int | None = None) -> web.Response:
    """Code 401: HTTP 401 (style "http") or HTTP 200 (style "envelope")."""
    return answer(status or (401 if style == "http" else 200), envelope(401, MSG_BAD_KEY))


def no_balance(status: int | None = None) -> web.Response:
    """HTTP 200, code 402 "余额不足"."""
    return answer(status or 200, envelope(402, MSG_NO_BALANCE))


@dataclass
class FaultRule:
    """One injected fault; ``status`` replaces the HTTP status of the answer, ``retry_after`` the header."""

    kind: str
    count: int | None = 1
    number: str | None = None
    retry_after: int | str | None = None
    status: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 1):
            raise ValueError("count must be a positive integer or null (until reset)")
        if self.status is not None and not (isinstance(self.status, int) and 100 <= self.status <= 599):
            raise ValueError("status must be an HTTP status code")
        if self.number is not None and not isinstance(self.number, str):
            raise ValueError("number must be a string")


class FaultQueue:
    """The FIFO of pending rules; thread-safe, so tests inject while requests are in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, rules: Iterable[Mapping[str, Any]]) -> int:
        """Validate and queue rules (all or none); returns how many rules are pending.

        Every bad rule is a ``ValueError``, an unknown or missing key included, whether the rule
        comes from ``inject`` or from ``POST /_sandbox/faults``.
        """
        try:
            parsed = [FaultRule(**dict(r)) for r in rules]
        except TypeError as exc:
            raise ValueError(f"bad fault rule: {exc}") from None
        with self._lock:
            self._rules.extend(parsed)
            return len(self._rules)

    def take(self, number: str | None) -> FaultRule | None:
        """Consume one count of the first rule matching a request for ``number``."""
        if not self._rules:  # the hot path: no lock when nothing is queued
            return None
        with self._lock:
            for i, rule in enumerate(self._rules):
                if rule.number is None or rule.number == number:
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count == 0:
                            del self._rules[i]
                    return rule
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(r) for r in self._rules]

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()


async def perform(rule: FaultRule, request: web.Request, config: SandboxConfig) -> web.StreamResponse:
    """Misbehave as ``rule`` says; "reset" and "timeout" raise ``ConnectionDropped`` when nothing is sent."""
    kind, status = rule.kind, rule.status
    if kind.startswith("http_") and kind != "http_429":
        code = status or int(kind[5:])
        if code in (502, 504):
            return html_page(code, _REASONS.get(code, "Error"))
        return answer(code, envelope(code, _REASONS.get(code, "Error")))
    if kind == "http_429":
        return throttled("http", rule.retry_after if rule.retry_after is not None else 1, status)
    if kind == "envelope_429":
        return throttled("envelope", 0, status)
    if kind == "envelope_500":
        return answer(status or 200, envelope(500, MSG_UPSTREAM_BUSY))
    if kind in MALFORMED_SUCCESS:
        return answer(status or 200, MALFORMED_SUCCESS[kind])
    if kind == "bad_json":
        return web.Response(status=status or 200, text=BAD_JSON, content_type="application/json")
    if kind == "empty_body":
        return web.Response(status=status or 200, body=b"", content_type="application/json")
    if kind == "html":
        return html_page(status or 200, "OK")
    if kind == "bad_key":
        return bad_key(config.key_style, status)
    if kind == "balance_exhausted":
        return no_balance(status)
    if kind == "timeout":
        await _hold(request, config.timeout_hold_s)
        return html_page(status or 504, "Gateway Timeout")
    reset_connection(request)
    raise ConnectionDropped


class ConnectionDropped(Exception):
    """Raised after the connection was dropped on purpose, so no answer is written."""


def reset_connection(request: web.Request) -> None:
    """Abort the TCP connection with an RST: ``SO_LINGER (1, 0)``, then close; no bytes are sent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _hold(request: web.Request, hold_s: float) -> None:
    """Sleep up to ``hold_s``, stopping early once the client has gone."""
    deadline = time.monotonic() + hold_s
    while (left := deadline - time.monotonic()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionDropped
        await asyncio.sleep(min(0.05, left))
