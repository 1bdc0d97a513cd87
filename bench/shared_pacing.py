"""The rate limit shared through Redis (``rate_limit_redis_conn_id``) at a high plan.

The 300 req/s case of ``high_plan`` (150 ms answers) through the shared limit on the machine's
Redis, next to the in-process pacer in the same run; then two hooks sharing the key at once, each
with its own half of the numbers: their combined paced rate against the plan, and how evenly
they shared it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_provider_phonestatus.settings import PhoneStatusSettings
from bench.common import Goal, Result, Run, numbers, ratio, register, sandbox, say
from bench.hook_pacing import run_hook

if TYPE_CHECKING:
    from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook

REDIS_CONN_ID = "bench_phonestatus_redis"
REDIS_URI = "redis://127.0.0.1:6379"
PER_MINUTE = 18000


def shared_hook(url: str, api_key: str, shared: bool) -> PhoneStatusHook:
    from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook

    settings = PhoneStatusSettings(
        api_key=api_key,
        base_url=url,
        rate_limit_per_minute=PER_MINUTE,
        timeout=5.0,
        rate_limit_redis_conn_id=REDIS_CONN_ID if shared else None,
    )
    return PhoneStatusHook(settings=settings)


def _together(hooks: Sequence[PhoneStatusHook], batches: Sequence[list[str]]) -> list[Run]:
    """Run each hook on its batch in a thread of its own, all at once."""
    runs: list[Run] = [Run() for _ in hooks]

    def one(i: int) -> None:
        runs[i] = run_hook(hooks[i], batches[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(hooks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs


@register("shared_plan")
def shared_plan(quick: bool) -> list[Result]:
    """300 req/s, 150 ms answers, through the shared limit; and two hooks sharing it."""
    os.environ[f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}"] = REDIS_URI
    count = 1500 if quick else 3000
    plan = PER_MINUTE / 60
    with sandbox(rate_limit_per_minute=None, latency_ms=150) as box:
        box.reset()
        say(f"in-process pacer at {PER_MINUTE}/min: {count} numbers")
        local = run_hook(shared_hook(box.url, box.api_key, False), numbers(count, 16100000000))
        box.reset()
        say(f"shared limit (Redis) at {PER_MINUTE}/min: {count} numbers")
        shared = run_hook(shared_hook(box.url, box.api_key, True), numbers(count, 16200000000))
        say(f"sandbox saw {box.ledger()['requests']}, throttled {box.ledger()['throttled']}")
        box.reset()
        half = count // 2
        say(f"two hooks sharing the limit at once, {half} numbers each")
        batches = [numbers(half, 15100000000), numbers(half, 15200000000)]
        pair = _together([shared_hook(box.url, box.api_key, True) for _ in batches], batches)
    both = Run(starts=sorted(s for run in pair for s in run.starts))
    overlap_from = max(min(run.starts) for run in pair)
    overlap_to = min(max(run.starts) for run in pair)
    during = [sum(overlap_from <= s <= overlap_to for s in run.starts) for run in pair]
    return [
        Result(
            f"shared limit @ {PER_MINUTE}/min, 150 ms answers: achieved (paced)",
            shared.paced_rate,
            "req/s",
            baseline=plan,
            ratio=ratio(shared.paced_rate, plan),
            goal=Goal(0.90),
            note=f"baseline = plan; the in-process pacer in the same run: {local.paced_rate:.1f} req/s",
        ),
        Result(
            "two hooks sharing the limit: combined (paced)",
            both.paced_rate,
            "req/s",
            baseline=plan,
            ratio=ratio(both.paced_rate, plan),
            goal=Goal(0.90, 1.00),
            note=f"requests while both ran: {during[0]} and {during[1]}",
        ),
        Result(
            "two hooks sharing the limit: smaller share / larger while both ran",
            min(during),
            "requests",
            baseline=max(during),
            ratio=ratio(min(during), max(during)),
            goal=Goal(0.80),
            note="1.0 = equal shares",
        ),
    ]
