"""One pacer per hook: request starts spaced evenly at the plan rate, however many threads ask.

Slots are handed out under a lock, so any number of threads sharing a pacer (the hook's async
methods run on threads too) never start requests faster than ``rate_per_minute`` together, and
never slower while they have work: each slot is ``max(now, previous slot + interval)``, so there
is no burst after idling either. A throttled answer holds every later slot until the vendor's
``Retry-After`` has passed.

Slots are when a request *may* start; a thread can wake late (a garbage-collection pause, a busy
CPU) and then start close to the next one. So before a request really starts, its start time is
checked against the actual starts before it: never more than the plan allows in any 1-second or
60-second window (the vendor's window is unpublished; these are the two such platforms use).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

#: Windows (seconds) over which actual starts are counted; one whose limit would exceed
#: ``_MAX_TRACKED`` starts is left to the slot spacing alone (plans that large are per second).
WINDOWS = (1.0, 60.0)
_MAX_TRACKED = 20_000


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
        #: (window seconds, most starts allowed in it)
        self.limits = [
            (window, int(rate_per_minute * window / 60.0))
            for window in WINDOWS
            if 1 <= int(rate_per_minute * window / 60.0) <= _MAX_TRACKED
        ]
        self._starts: collections.deque[float] = collections.deque(
            maxlen=max((limit for _, limit in self.limits), default=1)
        )

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

    def start(self) -> float:
        """Record a start now if every window allows it (return 0.0), else return how long to wait.

        A hold placed while the caller slept is reported as -1.0: take a new slot after it.
        """
        with self._lock:
            now = self._clock()
            if self._hold_until > now:
                return -1.0
            wait = 0.0
            for window, limit in self.limits:
                if len(self._starts) >= limit:
                    wait = max(wait, self._starts[-limit] + window - now)
            if wait <= 0:
                self._starts.append(now)
            return max(wait, 0.0)

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until this caller may start a request; False if ``stop`` was set meanwhile."""
        delay = self.reserve()
        while True:
            if delay > 0:
                if stop is not None and stop.wait(delay):
                    return False
                if stop is None:
                    time.sleep(delay)
            delay = self.start()
            if delay == 0.0:
                return stop is None or not stop.is_set()
            if delay < 0:  # held while we slept: queue again behind the hold
                delay = self.reserve()
