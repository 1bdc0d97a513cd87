"""One pacer per hook: request starts spaced evenly at the plan rate, however many threads ask.

Slots are handed out under a lock, so any number of threads sharing a pacer (the hook's async
methods run on threads too) never
start requests faster than ``rate_per_minute`` together, and never slower while they have work:
each slot is ``max(now, previous slot + interval)``, so there is no burst after idling either. A
throttled answer holds every later slot until the vendor's ``Retry-After`` has passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """Hands out start times ``interval`` apart; shared by all callers of one hook instance."""

    def __init__(self, rate_per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.interval = 60.0 / rate_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._hold_until = float("-inf")

    def reserve(self) -> float:
        """Claim the next free slot; return how many seconds to wait before starting the request."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next, self._hold_until)
            self._next = slot + self.interval
            return slot - now

    def hold(self, seconds: float) -> None:
        """Let no request start for ``seconds`` (the vendor asked us to back off)."""
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)

    def _held_for(self) -> float:
        with self._lock:
            return self._hold_until - self._clock()

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until this caller may start a request; False if ``stop`` was set meanwhile."""
        while True:
            delay = self.reserve()
            if delay > 0 and stop is not None:
                if stop.wait(delay):
                    return False
            elif delay > 0:
                time.sleep(delay)
            # A hold placed while we slept applies to us too: take a new slot after it.
            if self._held_for() <= 0:
                return stop is None or not stop.is_set()
