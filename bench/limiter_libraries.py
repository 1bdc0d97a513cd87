"""Why the shared limit reserves slots itself: well-kept Redis rate limiters at the same job.

Each limiter paces one caller at 300 requests/s on the machine's Redis for a few seconds, the way
the hook uses one: a single waiter per hook (the gate that makes shares fair between hooks),
asking for the next start, then starting. Measured from the caller's start times: the fraction of
the plan reached, the 5th percentile of gaps between starts (smoothness: 3.33 ms is the plan's
interval) and the most starts in any 1 s (never above 300).

- ours: :class:`~airflow_provider_phonestatus.shared_pacing.SharedPacer`, a reserved slot per start;
- throttled-py's GCRA (Redis server time), called without its blocking wait (which sleeps 0.2 s at
  least), sleeping its ``retry_after`` instead: burst 1 (spaced like the plan), and burst 3 with the
  rate lowered by 3 (what it needs to keep up);
- pyrate-limiter's GCRA (``StateBucket`` on ``RedisStateStore``), its blocking ``try_acquire``.
"""

from __future__ import annotations

import bisect
import itertools
import os
import secrets
import time
from collections.abc import Callable

from bench.common import Goal, Result, ratio, register, say

REDIS_URI = "redis://127.0.0.1:6379"
PER_SECOND = 300


def _ours(key: str) -> Callable[[], None]:
    from airflow_provider_phonestatus.shared_pacing import shared_pacer

    os.environ["AIRFLOW_CONN_BENCH_LIMITER_REDIS"] = REDIS_URI
    pacer = shared_pacer("bench_limiter_redis", "http://bench", key, PER_SECOND * 60)

    def acquire() -> None:
        pacer.wait()

    return acquire


def _throttled(key: str, burst: int) -> Callable[[], None]:
    from throttled import Throttled, rate_limiter, store

    quota = rate_limiter.per_sec(PER_SECOND - burst + 1, burst=burst)
    limiter = Throttled(key=key, using="gcra", quota=quota, store=store.RedisStore(server=REDIS_URI))

    def acquire() -> None:
        while (result := limiter.limit()).limited:
            time.sleep(result.state.retry_after)

    return acquire


def _pyrate(key: str) -> Callable[[], None]:
    import redis
    from pyrate_limiter import GCRA, Duration, Limiter, Rate, RedisStateStore, StateBucket

    bucket = StateBucket(
        [Rate(PER_SECOND, Duration.SECOND, burst=1)],
        GCRA(),
        RedisStateStore(redis.Redis.from_url(REDIS_URI), key),
    )
    limiter = Limiter(bucket, buffer_ms=0)

    def acquire() -> None:
        limiter.try_acquire("bench", blocking=True, timeout=10)

    return acquire


def _measure(acquire: Callable[[], None], seconds: float) -> tuple[float, float, int]:
    """(fraction of the plan, 5th percentile gap in ms, most starts in any 1 s)."""
    starts: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        acquire()
        starts.append(time.perf_counter())
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    peak = max(bisect.bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts))
    fraction = (len(starts) - 1) / (starts[-1] - starts[0]) / PER_SECOND
    return fraction, 1000 * gaps[len(gaps) // 20], peak


@register("limiter_libraries")
def limiter_libraries(quick: bool) -> list[Result]:
    """Ours next to throttled-py and pyrate-limiter at 300 req/s, one waiter each (informational
    but for ours, whose goal is the shared_plan one)."""
    seconds = 4.0 if quick else 8.0
    cases: list[tuple[str, Callable[[str], Callable[[], None]]]] = [
        ("ours: reserved slots", _ours),
        ("throttled-py GCRA, burst 1", lambda key: _throttled(key, 1)),
        ("throttled-py GCRA, burst 3 at 298/s", lambda key: _throttled(key, 3)),
        ("pyrate-limiter GCRA, burst 1", _pyrate),
    ]
    rows = []
    for name, make in cases:
        say(f"{name}: {seconds:g} s at {PER_SECOND}/s")
        fraction, p5_gap, peak = _measure(make("bench-" + secrets.token_hex(6)), seconds)
        rows.append(
            Result(
                f"limiter at 300/s, one waiter: {name}",
                fraction * PER_SECOND,
                "starts/s",
                baseline=PER_SECOND,
                ratio=ratio(fraction * PER_SECOND, PER_SECOND),
                goal=Goal(0.90) if name.startswith("ours") else None,
                note=f"5th percentile gap {p5_gap:.2f} ms (plan interval 3.33); most in 1 s: {peak}",
            )
        )
    return rows
