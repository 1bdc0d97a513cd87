"""``PhoneStatusHook`` against the sandbox subprocess: pacing at a plan, a high plan, client CPU.

Rates follow the two formulas of :mod:`bench.common`: the *paced rate* (n - 1 over the span of
request starts) is compared with a plan, *throughput* (answers over the whole run) between clients.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_provider_phonestatus.protocol import build_body
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from bench import reference_clients
from bench.common import Goal, Result, Run, Sandbox, numbers, ratio, register, sandbox, say

if TYPE_CHECKING:
    from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
    from airflow_provider_phonestatus.transport import Channel

WINDOW_S = 5.0  #: sandbox rate-limit window in the pacing benchmark, short enough to be crossed
IN_FLIGHT = 128  #: requests in flight for the baseline and the ceiling


def new_hook(box: Sandbox, rate_limit_per_minute: float) -> PhoneStatusHook:
    """A hook on ready-made settings (no Airflow connection), pointed at ``box``."""
    from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook

    settings = PhoneStatusSettings(
        api_key=box.api_key, base_url=box.url, rate_limit_per_minute=rate_limit_per_minute, timeout=5.0
    )
    return PhoneStatusHook(settings=settings)


def run_hook(hook: PhoneStatusHook, batch: Sequence[str], timed: bool = True) -> Run:
    """``check_many`` over ``batch``; ``timed`` records each request's start (wraps the client's
    ``exchange`` on this instance only: one clock read per request)."""
    client = hook.client
    run = Run()
    if timed:
        exchange, starts = client.exchange, run.starts

        def timed_exchange(channel: Channel, body: bytes) -> object:
            starts.append(time.perf_counter())
            return exchange(channel, body)

        client.exchange = timed_exchange  # type: ignore[assignment,method-assign]
    cpu = time.process_time()
    run.began = time.perf_counter()
    for _, result in hook.check_many(batch):
        run.answer(result.is_paid)
    run.cpu_s = time.process_time() - cpu
    return run


def _describe(run: Run, hook: PhoneStatusHook | None, ledger: dict[str, object]) -> str:
    stats = hook.stats.as_dict() if hook is not None else {}
    sent = stats.get("requests_sent", len(run.starts))
    retries = f", retries {stats['retries']}" if stats else ""
    return (
        f"{sent} sent, {run.ok}/{run.answered} answered OK{retries}; sandbox saw "
        f"{ledger['requests']}, throttled {ledger['throttled']}, max in flight {ledger['max_concurrency']}"
    )


def _timing(run: Run) -> str:
    """Where a paced rate comes from, and what the client spent on it."""
    span = max(run.starts) - min(run.starts) if run.starts else math.nan
    return (
        f"{len(run.starts) - 1} intervals in {span:.4f} s, longest {1000 * run.longest_gap:.1f} ms; "
        f"{run.ok} OK; client CPU {run.cpu_s:.1f} s"
    )


def _paced_case(box: Sandbox, per_minute: int, count: int, first: int) -> list[Result]:
    box.configure(rate_limit_per_minute=per_minute, window_s=WINDOW_S)
    box.reset()
    hook = new_hook(box, per_minute)
    say(f"hook at {per_minute}/min: {count} numbers (about {count * 60 / per_minute:.0f} s)")
    run = run_hook(hook, numbers(count, first))
    ledger = box.ledger()
    plan = per_minute / 60
    limit = math.floor(per_minute * WINDOW_S / 60 + 1e-9)
    say(_describe(run, hook, ledger))
    label = f"hook @ {per_minute}/min, {count} numbers"
    return [
        Result(
            f"{label}: achieved (paced)",
            run.paced_rate,
            "req/s",
            baseline=plan,
            ratio=ratio(run.paced_rate, plan),
            goal=Goal(0.95, 1.00),
            note=f"baseline = plan; {_timing(run)}",
        ),
        Result(
            f"{label}: sandbox throttled",
            float(ledger["throttled"]),
            "answers",
            goal=Goal(0, 0, on="value"),
            note=f"peak {ledger['peak_in_window']} of {limit} admitted per {WINDOW_S:g} s window",
        ),
    ]


@register("pacing")
def pacing(quick: bool) -> list[Result]:
    """The hook at the plan rate against a sandbox enforcing that plan (5 s sliding window)."""
    with sandbox(rate_limit_per_minute=6000, window_s=WINDOW_S, latency_ms=0) as box:
        rows = _paced_case(box, 6000, 1000, first=13800000000)
        if not quick:
            rows += _paced_case(box, 60, 30, first=13900000000)
    return rows


@register("high_plan")
def high_plan(quick: bool) -> list[Result]:
    """300 req/s plan, 150 ms answers: the hook next to an httpx.AsyncClient and raw sockets."""
    count, cap_s = (1500, 5.0) if quick else (3000, 10.0)
    per_minute = 18000
    plan = per_minute / 60
    batch = numbers(count, first=14700000000)
    bodies = [build_body("mobile", n) for n in batch]
    with sandbox(rate_limit_per_minute=None, latency_ms=150) as box:
        box.reset()
        hook = new_hook(box, per_minute)
        say(f"hook at {per_minute}/min ({hook.settings.concurrency} threads at most): {count} numbers")
        ours = run_hook(hook, batch)
        say(_describe(ours, hook, box.ledger()))
        box.reset()
        say(f"baseline httpx.AsyncClient, {IN_FLIGHT} in flight: up to {count} requests or {cap_s:g} s")
        base = reference_clients.httpx_async(box.endpoint_url, box.api_key, bodies, IN_FLIGHT, cap_s)
        say(_describe(base, None, box.ledger()))
        box.reset()
        say(f"ceiling raw asyncio sockets, {IN_FLIGHT} connections: up to {count} requests or {cap_s:g} s")
        ceiling = reference_clients.raw_sockets(box.endpoint_url, box.api_key, bodies, IN_FLIGHT, cap_s)
        say(_describe(ceiling, None, box.ledger()))
    ideal = IN_FLIGHT / 0.150
    return [
        Result(
            f"hook @ {per_minute}/min: achieved (paced)",
            ours.paced_rate,
            "req/s",
            baseline=plan,
            ratio=ratio(ours.paced_rate, plan),
            goal=Goal(0.90),
            note=f"ours/plan; {_timing(ours)}",
        ),
        Result(
            "hook vs httpx.AsyncClient x128 (throughput)",
            ours.throughput,
            "req/s",
            baseline=base.throughput,
            ratio=ratio(ours.throughput, base.throughput),
            note=f"ours/baseline; baseline answered {base.answered} ({base.ok} OK) in its run",
        ),
        Result(
            "hook vs raw asyncio sockets x128 (throughput)",
            ours.throughput,
            "req/s",
            baseline=ceiling.throughput,
            ratio=ratio(ours.throughput, ceiling.throughput),
            note=f"ours/ceiling; ceiling answered {ceiling.answered} ({ceiling.ok} OK); "
            f"{IN_FLIGHT} x 1/150 ms = {ideal:.0f} req/s",
        ),
        Result(
            "baseline httpx.AsyncClient x128 / plan",
            base.throughput,
            "req/s",
            baseline=plan,
            ratio=ratio(base.throughput, plan),
            note="why the hook does not use one AsyncClient (informational)",
        ),
        Result(
            "ceiling raw sockets x128 / plan",
            ceiling.throughput,
            "req/s",
            baseline=plan,
            ratio=ratio(ceiling.throughput, plan),
            note="what this machine and sandbox allow (informational)",
        ),
    ]


@register("client_cpu")
def client_cpu(quick: bool) -> list[Result]:
    """Unlimited plan, instant answers: client CPU per request limits the run (informational)."""
    count = 5000 if quick else 20000
    batch = numbers(count, first=15000000000)
    bodies = [build_body("mobile", n) for n in batch]
    with sandbox(rate_limit_per_minute=None, latency_ms=0) as box:
        box.reset()
        hook = new_hook(box, 10_000_000)
        say(f"hook, unlimited plan ({hook.settings.concurrency} threads at most): {count} numbers")
        box_cpu = box.cpu_seconds()
        ours = run_hook(hook, batch, timed=False)
        ours_box = 1000 * (box.cpu_seconds() - box_cpu) / max(1, ours.answered)
        say(_describe(ours, hook, box.ledger()) + f"; CPU {ours.cpu_s:.1f} s")
        box.reset()
        say(f"baseline: one httpx.Client, sync loop over {count} numbers")
        box_cpu = box.cpu_seconds()
        base = reference_clients.sync_loop(box.endpoint_url, box.api_key, bodies)
        base_box = 1000 * (box.cpu_seconds() - box_cpu) / max(1, base.answered)
        say(_describe(base, None, box.ledger()) + f"; CPU {base.cpu_s:.1f} s")
    return [
        Result(
            "hook, unlimited plan: throughput",
            ours.throughput,
            "req/s",
            baseline=base.throughput,
            ratio=ratio(ours.throughput, base.throughput),
            note=f"ours/sync loop; {ours.ok} OK, {hook.settings.concurrency} threads at most",
        ),
        Result(
            "hook, unlimited plan: client CPU per 1k requests",
            ours.cpu_per_1k,
            "CPU s",
            baseline=base.cpu_per_1k,
            ratio=ratio(ours.cpu_per_1k, base.cpu_per_1k),
            note=f"ours/sync loop (lower is better); sandbox CPU/1k {ours_box:.2f} vs {base_box:.2f} s",
        ),
    ]
