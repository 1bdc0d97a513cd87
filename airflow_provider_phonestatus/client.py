"""The lookup engine: paced, retried, concurrent requests for distinct national numbers.

Each worker thread owns one keep-alive ``httpx.Client`` with a single connection. A single
``AsyncClient`` pool collapses when a hundred requests share it; a thread per connection keeps the
per-request cost flat, and all workers share one :class:`~.pacing.Pacer`, so together they start
requests exactly at the plan rate, whatever the concurrency.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from dataclasses import dataclass, field, fields
from functools import cached_property

import httpx

from airflow_provider_phonestatus.exceptions import VendorUnavailable
from airflow_provider_phonestatus.numbers import mask_number
from airflow_provider_phonestatus.pacing import Pacer
from airflow_provider_phonestatus.protocol import Outcome, Verdict, build_body, read_response
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from airflow_provider_phonestatus.vocabulary import PhoneStatusResult

log = logging.getLogger(__name__)

USER_AGENT = "airflow-provider-phonestatus"


@dataclass
class LookupStats:
    """What a hook has spent; thread-safe, read with :meth:`as_dict`."""

    requests_sent: int = 0  #: HTTP requests that left, retries included: what quota counts
    lookups_ok: int = 0  #: answers with a status: what comparable vendors bill
    throttled: int = 0  #: "too many requests" answers
    retries: int = 0  #: requests that repeated an earlier one for the same number
    rejected: int = 0  #: numbers the vendor refused
    failed: int = 0  #: numbers left unanswered after retries
    answered_locally: int = 0  #: inputs labelled invalid/unsupported without a request
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class LookupClient:
    """Sends lookups for distinct national numbers; one instance per hook."""

    def __init__(self, settings: PhoneStatusSettings, stats: LookupStats | None = None) -> None:
        self.settings = settings
        self.stats = stats if stats is not None else LookupStats()
        self.pacer = Pacer(settings.rate_limit_per_minute)
        self._streak = 0
        self._streak_lock = threading.Lock()

    @cached_property
    def _verify(self) -> ssl.SSLContext | bool:
        """One TLS context for all workers: building one costs ~40 ms of CPU, which at start-up
        would delay paced requests by as much."""
        return httpx.create_ssl_context() if self.settings.verify_ssl else False

    def new_http_client(self, connections: int = 1) -> httpx.Client:
        s = self.settings
        return httpx.Client(
            timeout=s.timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"X-API-Key": s.api_key, "Content-Type": "application/json", "User-Agent": USER_AGENT},
            proxy=s.proxy,
            verify=self._verify,
        )

    def exchange(self, http: httpx.Client, body: bytes) -> Outcome:
        """One request, paced by the caller; transport failures become retryable outcomes."""
        self.stats.add(requests_sent=1)
        try:
            response = http.post(self.settings.url, content=body)
        except httpx.TimeoutException:
            return Outcome(Verdict.RETRY, "timeout")
        except httpx.TransportError as exc:
            return Outcome(Verdict.RETRY, f"transport error: {type(exc).__name__}")
        return read_response(response.status_code, response.headers, response.content)

    def lookup(self, http: httpx.Client, national: str, stop: threading.Event) -> PhoneStatusResult | None:
        """Ask until answered, rejected, or out of retries; None if the batch stopped first.

        Raises :class:`BatchStopped` when the vendor says something no retry fixes.
        """
        s = self.settings
        body = build_body(s.number_field, national)
        attempt = 0
        while True:
            if not self.pacer.wait(stop):
                return None
            outcome = self.exchange(http, body)
            if outcome.verdict is Verdict.ANSWER:
                self.stats.add(lookups_ok=1)
                return outcome.result
            if outcome.verdict is Verdict.REJECTED:
                self.stats.add(rejected=1)
                return outcome.result
            if outcome.verdict is Verdict.STOP:
                assert outcome.error is not None
                raise outcome.error
            delay = self._backoff(attempt, outcome.retry_after)
            if outcome.throttled:
                self.stats.add(throttled=1)
                self.pacer.hold(delay)
            if attempt >= s.max_retries:
                self.stats.add(failed=1)
                log.warning(
                    "No answer for %s after %d attempts: %s",
                    mask_number(national),
                    attempt + 1,
                    outcome.reason,
                )
                return PhoneStatusResult.failed(outcome.reason)
            attempt += 1
            self.stats.add(retries=1)
            if not outcome.throttled and stop.wait(delay):
                return None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        if retry_after is not None:
            return min(retry_after, s.max_retry_after)
        return random.uniform(0, min(s.backoff_max, s.backoff_base * 2**attempt))  # full jitter

    def count_streak(self, result: PhoneStatusResult) -> None:
        """Raise when too many numbers in a row got no status: a systematic fault, not bad luck."""
        limit = self.settings.max_consecutive_failures
        with self._streak_lock:
            self._streak = 0 if result.is_paid else self._streak + 1
            if limit and self._streak >= limit:
                self._streak = 0
                raise VendorUnavailable(
                    f"{limit} numbers in a row got no status (last: {result.message}); stopping to "
                    "save quota: check the connection's endpoint and number_field"
                )
