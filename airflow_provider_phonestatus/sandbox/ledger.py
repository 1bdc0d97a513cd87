"""The ledger: what reached the sandbox, what it refused, and what it billed.

Tests prove a client's behaviour with it (nothing sent twice, nothing billed for a bad number, never
more than the plan rate in a window, which ``orderNo`` each billed answer carried). It also owns
the window of admitted arrivals, because the rate limiter and ``peak_in_window`` are two readings
of that same window.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any


class SlidingWindow:
    """Admitted arrival times; a request is admitted while fewer than ``limit`` fall in the window."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self.peak = 0

    def admit(self, now: float, limit: int | None, window_s: float, grace_s: float) -> float | None:
        """Record an admitted arrival and return None, or return the seconds until a slot frees.

        Arrivals count in ``(now - window_s + grace_s, now]``, so a client paced exactly at the plan
        rate is not tripped by loopback jitter while a burst is.
        """
        span = window_s - grace_s
        times = self._times
        while times and times[0] <= now - span:
            times.popleft()
        if limit is not None and len(times) >= limit:
            return times[len(times) - limit] + span - now
        times.append(now)
        self.peak = max(self.peak, len(times))
        return None


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` in whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_s)))


class Ledger:
    """Thread-safe counters of the endpoint's traffic; ``snapshot()`` is a plain dict.

    It also keeps the order numbers of the billed answers, in billing order (``orders()``), apart
    from the snapshot: a million billed lookups make a long list, and the snapshot is polled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self.clear()

    def clear(self) -> None:
        """Forget the history (``reset()``); ``in_flight`` is a live gauge, so it is kept."""
        with self._lock:
            self.window = SlidingWindow()
            self._counts = dict.fromkeys(("requests", "throttled", "faults", "rejected", "billed"), 0)
            self._by_number: dict[str, dict[str, int]] = {}
            self._orders: list[tuple[str | None, str | None]] = []  # (number, order_no), compact
            self._max_concurrency = self._in_flight

    def enter(self, number: str | None) -> None:
        """A request reached the endpoint (``number``: what it sent, if anything)."""
        with self._lock:
            self._counts["requests"] += 1
            self._in_flight += 1
            self._max_concurrency = max(self._max_concurrency, self._in_flight)
            if number is not None:
                self._entry(number)["requests"] += 1

    def leave(self) -> None:
        """The request was answered (or dropped)."""
        with self._lock:
            self._in_flight -= 1

    def admit(self, now: float, limit: int | None, window_s: float, grace_s: float) -> float | None:
        """Ask the rate limiter; a refusal counts as ``throttled``. See ``SlidingWindow.admit``."""
        with self._lock:
            wait = self.window.admit(now, limit, window_s, grace_s)
            if wait is not None:
                self._counts["throttled"] += 1
            return wait

    def count(self, outcome: str, number: str | None = None, order_no: str | None = None) -> None:
        """Count a "faults", "rejected" or "billed" outcome; billed also per number, and its
        ``order_no`` (the answer's ``data.orderNo``, None if it had none) in ``orders()``."""
        with self._lock:
            self._counts[outcome] += 1
            if outcome == "billed":
                self._orders.append((number, order_no))
                if number is not None:
                    self._entry(number)["billed"] += 1

    def _entry(self, number: str) -> dict[str, int]:
        entry = self._by_number.get(number)
        if entry is None:
            entry = self._by_number[number] = {"requests": 0, "billed": 0}
        return entry

    def orders(self) -> list[dict[str, Any]]:
        """Every billed answer in billing order: ``{"number": ..., "order_no": ...}`` (a copy)."""
        with self._lock:
            orders = list(self._orders)
        return [{"number": number, "order_no": order_no} for number, order_no in orders]

    def snapshot(self) -> dict[str, Any]:
        """Counters, ``by_number``, ``peak_in_window``, ``max_concurrency`` and ``in_flight``."""
        with self._lock:
            return {
                **self._counts,
                "by_number": {n: dict(e) for n, e in self._by_number.items()},
                "peak_in_window": self.window.peak,
                "max_concurrency": self._max_concurrency,
                "in_flight": self._in_flight,
            }
