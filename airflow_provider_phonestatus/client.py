"""The lookup engine: paced, retried, concurrent requests for distinct national numbers.

Each worker thread owns one :class:`~.transport.Channel`: one keep-alive connection. A single
``AsyncClient`` pool collapses when a hundred requests share it; a thread per connection keeps the
per-request cost flat, and all workers share one :class:`~.pacing.Pacer`, so together they start
requests exactly at the plan rate, whatever the concurrency.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field, fields
from functools import cached_property

import httpx

from airflow_provider_phonestatus.exceptions import VendorUnavailable
from airflow_provider_phonestatus.numbers import mask_number
from airflow_provider_phonestatus.pacing import Pacer
from airflow_provider_phonestatus.protocol import Outcome, Verdict, build_body, read_response
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from airflow_provider_phonestatus.transport import Channel, ssl_context
from airflow_provider_phonestatus.vocabulary import PhoneStatusResult

log = logging.getLogger(__name__)

#: Weight of the newest exchange in :attr:`LookupClient.latency` (a moving average).
LATENCY_WEIGHT = 0.1


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

    def __init__(
        self, settings: PhoneStatusSettings, stats: LookupStats | None = None, pacer: Pacer | None = None
    ) -> None:
        self.settings = settings
        self.stats = stats if stats is not None else LookupStats()
        #: this client's own pacer, or one shared with other hooks (:mod:`~.shared_pacing`)
        self.pacer = pacer if pacer is not None else Pacer(settings.rate_limit_per_minute)
        #: Moving average of seconds per exchange (0 until the first): how many requests must be in
        #: flight to keep the plan rate (see :class:`~.batch.LookupBatch`).
        self.latency = 0.0
        self._streak = 0
        self._streak_lock = threading.Lock()

    @cached_property
    def _ssl_context(self) -> ssl.SSLContext:
        """Shared by every channel of this client (see :func:`~.transport.ssl_context`)."""
        return ssl_context(self.settings.verify_ssl)

    def new_channel(self) -> Channel:
        """A connection of its own for one worker thread; close it when done."""
        return Channel(self.settings, self._ssl_context)

    def exchange(self, channel: Channel, body: bytes) -> Outcome:
        """One request, paced by the caller; transport failures become retryable outcomes."""
        self.stats.add(requests_sent=1)
        started = time.monotonic()
        try:
            response = channel.post(body)
        except httpx.TimeoutException:
            return Outcome(Verdict.RETRY, "timeout")
        except httpx.TransportError as exc:
            return Outcome(Verdict.RETRY, f"transport error: {type(exc).__name__}")
        finally:  # unlocked: a lost update between threads only nudges an average
            took = time.monotonic() - started
            self.latency = took if not self.latency else self.latency + LATENCY_WEIGHT * (took - self.latency)
        return read_response(response.status_code, response.headers, response.content)

    def lookup(self, channel: Channel, national: str, stop: threading.Event) -> PhoneStatusResult | None:
        """Ask until answered, rejected, or out of retries; None if the batch stopped first.

        Raises :class:`BatchStopped` when the vendor says something no retry fixes.
        """
        s = self.settings
        body = build_body(s.number_field, national)
        attempt = 0
        while True:
            if not self.pacer.wait(stop):
                return None
            outcome = self.exchange(channel, body)
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
