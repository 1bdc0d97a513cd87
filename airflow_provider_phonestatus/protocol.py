"""Reading the vendor's answers: both the HTTP layer and the JSON envelope, without any I/O.

The contract publishes no error table. Platforms of this kind fail either with an HTTP status or
with HTTP 200 and a non-200 envelope ``code``, so each answer is sorted into one verdict:

=========  ==========================================================  =====================
verdict    when                                                        effect
=========  ==========================================================  =====================
ANSWER     envelope code 200 with ``data.result`` (a non-empty scalar)   the number's result
REJECTED   HTTP 400/422 or envelope 400/422 (bad parameter, bad        the number's result,
           number format) and other 4xx not listed below               not retried
RETRY      HTTP 408/425/429/5xx, envelope 429/5xx or a "too frequent"  retried with backoff;
           message, timeouts, resets, malformed or empty bodies,      429 honours
           success envelopes without a usable ``data.result``,       ``Retry-After``
           unknown envelope codes
STOP       HTTP or envelope 401/403 (key refused), 402 or a balance    the whole batch stops
           message (balance exhausted), HTTP 404/405 (wrong URL)       with an exception
=========  ==========================================================  =====================
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_phonestatus.exceptions import (
    ApiKeyRefused,
    BalanceExhausted,
    BatchStopped,
    EndpointNotFound,
)
from airflow_provider_phonestatus.numbers import mask_number
from airflow_provider_phonestatus.vocabulary import PhoneStatusResult, result_code


class Verdict(enum.Enum):
    ANSWER = "answer"
    REJECTED = "rejected"
    RETRY = "retry"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one HTTP exchange means for its number and for the batch."""

    verdict: Verdict
    reason: str
    result: PhoneStatusResult | None = None  #: for ANSWER and REJECTED
    throttled: bool = False  #: the vendor said "too many requests"
    retry_after: float | None = None  #: seconds the vendor asked us to wait
    error: BatchStopped | None = None  #: for STOP


_BALANCE_WORDS = ("余额", "欠费", "额度", "balance", "insufficient", "quota", "arrears")
_THROTTLE_WORDS = ("频繁", "限流", "too many", "rate limit", "too frequent")
_KEY_WORDS = ("密钥", "apikey", "api key", "api-key", "unauthor", "forbidden", "鉴权", "授权", "认证")
_REJECT_CODES = frozenset({400, 422})
_KEY_CODES = frozenset({401, 403})


def build_body(number_field: str, national: str) -> bytes:
    """The request body: ``{"mobile": "13800138000"}`` with the configured field name."""
    return json.dumps({number_field: national}, separators=(",", ":")).encode()


def read_response(status_code: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Sort one answer into a verdict, reading the HTTP status first and the envelope second."""
    envelope = _decode(body)
    code = _int(envelope.get("code")) if envelope is not None else None
    message = _message(envelope)
    retry_after = parse_retry_after(headers.get("retry-after"))
    if status_code == 429:
        return Outcome(Verdict.RETRY, f"HTTP 429 {message}".strip(), throttled=True, retry_after=retry_after)
    if status_code in _KEY_CODES:
        return _stop(ApiKeyRefused, f"API key refused (HTTP {status_code}) {message}", status_code, code)
    if status_code == 402:
        return _stop(BalanceExhausted, f"balance exhausted (HTTP 402) {message}", status_code, code)
    if status_code in (404, 405):
        return _stop(EndpointNotFound, f"endpoint not found (HTTP {status_code})", status_code, code)
    if status_code == 408 or status_code == 425 or status_code >= 500:
        return Outcome(Verdict.RETRY, f"HTTP {status_code}", retry_after=retry_after)
    if 400 <= status_code < 500:
        # Other 4xx: a key, balance or throttle signal in the envelope still wins over "bad number".
        if envelope is not None:
            outcome = _read_envelope(code, message, envelope, status_code, retry_after)
            if outcome.verdict is Verdict.STOP or outcome.throttled:
                return outcome
        return _reject(str(code if code is not None else status_code), f"HTTP {status_code} {message}")
    if not 200 <= status_code < 300:
        return Outcome(Verdict.RETRY, f"unexpected HTTP {status_code}")
    if envelope is None:
        return Outcome(Verdict.RETRY, "malformed or empty body" if body.strip() else "empty body")
    return _read_envelope(code, message, envelope, status_code, retry_after)


def _read_envelope(
    code: int | None, message: str, envelope: Mapping[str, Any], status_code: int, retry_after: float | None
) -> Outcome:
    lowered = message.lower()
    data = envelope.get("data")
    if code == 200:
        # Only data.result says anything about the number: anything less is a malformed body,
        # which must never become (or overwrite) a status.
        if isinstance(data, Mapping) and result_code(data.get("result")) is not None:
            return Outcome(Verdict.ANSWER, "success", result=PhoneStatusResult.from_vendor_data(data))
        return Outcome(Verdict.RETRY, "malformed success envelope: no usable data.result")
    if code == 429 or any(w in lowered for w in _THROTTLE_WORDS):
        return Outcome(Verdict.RETRY, f"throttled: {message}", throttled=True, retry_after=retry_after)
    if code == 402 or any(w in lowered for w in _BALANCE_WORDS):
        return _stop(BalanceExhausted, f"balance exhausted (code {code}) {message}", status_code, code)
    if code in _KEY_CODES or any(w in lowered for w in _KEY_WORDS):
        return _stop(ApiKeyRefused, f"API key refused (code {code}) {message}", status_code, code)
    if code in _REJECT_CODES:
        return _reject(str(code), message or f"code {code}")
    if code is None:
        return Outcome(Verdict.RETRY, "envelope without a code")
    return Outcome(Verdict.RETRY, f"vendor code {code} {message}".strip())


def _stop(kind: type[BatchStopped], text: str, status_code: int, code: int | None) -> Outcome:
    error = kind(text.strip(), http_status=status_code, vendor_code=None if code is None else str(code))
    return Outcome(Verdict.STOP, text.strip(), error=error)


def _reject(vendor_code: str, message: str) -> Outcome:
    result = PhoneStatusResult.rejected(vendor_code, message.strip() or None)
    return Outcome(Verdict.REJECTED, f"rejected: {message}".strip(), result=result)


def _decode(body: bytes) -> Mapping[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, Mapping) else None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


_DIGIT_RUN = re.compile(r"\d{7,}")


def _message(envelope: Mapping[str, Any] | None) -> str:
    """The envelope's message, cut short, with any number it echoes masked (it may reach logs)."""
    if envelope is None:
        return ""
    text = envelope.get("message", envelope.get("msg"))
    if text is None:
        return ""
    return _DIGIT_RUN.sub(lambda m: mask_number(m.group()), str(text)[:200])


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
