"""Progress lines for long runs: a 60/min plan takes a day for 86,400 numbers, so say how far."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Progress:
    """Logs ``done/total, rate, ETA`` at most every ``interval`` seconds; no number in it."""

    def __init__(
        self, total_rows: int, interval: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total = total_rows
        self.interval = interval
        self._clock = clock
        self._start = clock()
        self._last = self._start

    def maybe_log(self, rows_done: int, lookups_paid: int, lookups_pending: int) -> str | None:
        now = self._clock()
        if now - self._last < self.interval:
            return None
        self._last = now
        line = self.line(rows_done, lookups_paid, lookups_pending, now)
        log.info("%s", line)
        return line

    def line(self, rows_done: int, lookups_paid: int, lookups_pending: int, now: float | None = None) -> str:
        elapsed = max(1e-9, (self._clock() if now is None else now) - self._start)
        share = rows_done / self.total if self.total else 1.0
        rows_rate = rows_done / elapsed
        eta = (self.total - rows_done) / rows_rate if rows_rate > 0 else float("inf")
        return (
            f"progress: {rows_done:,}/{self.total:,} due rows done ({share:.0%}), "
            f"{lookups_paid:,} lookups paid ({lookups_paid / elapsed:.1f}/s), {lookups_pending:,} in queue; "
            f"elapsed {format_seconds(elapsed)}, ETA {format_seconds(eta)}"
        )


def format_seconds(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
