"""The lookup ledger's cost: end-to-end time of a refresh with and without it.

Every paid answer is appended to the ledger in the transaction that stores it, so the ledger's
cost grows with the paid lookups per second. The worst case is the sandbox answering instantly
with no rate limit (thousands of lookups a second; a real plan allows one to a few hundred): a
messy table whose every distinct number is paid for. Runs with and without the ledger alternate
on fresh copies of the table and store, and the medians are compared, so a drift of the
machine's speed during the benchmark falls on both sides.
"""

from __future__ import annotations

import statistics

from bench.common import Goal, Result, ratio, register, sandbox, say
from bench.operator_common import create_customers, kinds, load_note, new_hook, phones, run_refresh, shared


@register("operator_ledger")
def operator_ledger(quick: bool) -> list[Result]:
    """Median seconds of refreshes with the ledger / without it (goal: at most 1.15)."""
    rows, distinct, pairs = (10_000, 4_000, 1) if quick else (60_000, 24_000, 3)
    values = phones(rows, distinct)
    out: list[Result] = []
    with sandbox(rate_limit_per_minute=None, latency_ms=0) as box:
        for kind in kinds(quick):
            db = shared(kind)
            say(f"{kind}: {rows:,} rows, {distinct:,} distinct numbers, {pairs} pairs; {load_note()}")
            seconds: dict[bool, list[float]] = {True: [], False: []}
            paid = 0
            for _ in range(pairs):
                for with_ledger in (True, False):
                    table = db.name("ledger")
                    create_customers(db, table, values)
                    box.reset()
                    done = run_refresh(
                        db, table, new_hook(box.url), db.name("store"), db.name("runs"), ledger=with_ledger
                    )
                    seconds[with_ledger].append(done.seconds)
                    paid = done.summary.paid_lookups
                    db.drop(table)
            ours, base = statistics.median(seconds[True]), statistics.median(seconds[False])
            say(f"with ledger {seconds[True]} s, without {seconds[False]} s")
            out.append(
                Result(
                    f"{kind}: end to end with the lookup ledger, {rows:,} rows, {paid:,} paid",
                    ours,
                    "s",
                    baseline=base,
                    ratio=ratio(ours, base),
                    goal=Goal(None, 1.15),
                    note=f"median of {pairs} alternating runs each; ratio = with / without the ledger; "
                    f"{paid / ours:,.0f} paid lookups/s; {load_note()}",
                )
            )
    return out
