"""Operator benchmarks 1 and 2: requests wasted, and end-to-end rows/s against the sandbox.

Both compare our refresh (run as ``PhoneStatusCheckOperator.execute`` runs it, see
:mod:`bench.operator_common`) with the naive per-row loop a DAG author writes with stock parts
(:mod:`bench.naive`), on the same messy table (``messy_phones``: many spellings, junk, landlines,
foreign numbers, NULLs), built anew for each run. The sandbox answers instantly (latency 0) with no
rate limit, and the hook's plan is "unlimited" (rate_limit_per_minute = 1e8, so the batch may grow
to 128 threads).
"""

from __future__ import annotations

from bench.common import Goal, Result, ratio, register, sandbox, say
from bench.naive import add_status_columns, naive_loop
from bench.operator_common import (
    correctness_row,
    create_customers,
    describe,
    kinds,
    load_note,
    nationals_of,
    new_hook,
    phones,
    run_refresh,
    shared,
    wrong_statuses,
)


@register("operator_waste")
def operator_waste(quick: bool) -> list[Result]:
    """Requests sent / distinct due valid numbers (sandbox ledger): ours must be exactly 1.00."""
    rows, distinct = (3_000, 2_100) if quick else (10_000, 7_000)
    values = phones(rows, distinct)
    wanted = len(nationals_of(rows, distinct))
    db = shared("sqlite")
    say(f"messy table of {rows:,} rows, {wanted:,} distinct valid mobile numbers, SQLite; sandbox latency 0")
    with sandbox(rate_limit_per_minute=None, latency_ms=0) as box:
        table = db.name("waste")
        create_customers(db, table, values)
        box.reset()
        ours = run_refresh(db, table, new_hook(box.url), db.name("store"), db.name("runs"))
        ledger = box.ledger()
        say(f"ours: {describe(ours.summary)}; sandbox saw {ledger['requests']}, billed {ledger['billed']}")
        wrong = wrong_statuses(db, table, rows, sample=rows)
        db.drop(table)

        table = db.name("waste_naive")
        create_customers(db, table, values)
        add_status_columns(db, table)
        box.reset()
        base = naive_loop(db, table, box.endpoint_url)
        base_ledger = box.ledger()
        say(f"naive loop: {base.rows:,} rows, {base.requests:,} POSTs; sandbox saw {base_ledger['requests']}")
        db.drop(table)
    ours_ratio = ledger["requests"] / wanted
    base_ratio = base_ledger["requests"] / wanted
    return [
        Result(
            "ours: requests / distinct due valid numbers",
            ours_ratio,
            "",
            baseline=base_ratio,
            ratio=ratio(ours_ratio, base_ratio),
            goal=Goal(1.0, 1.0, on="value"),
            note=f"{ledger['requests']:,} requests for {wanted:,} numbers; baseline: the naive loop's",
        ),
        Result(
            "naive loop: requests / distinct due valid numbers",
            base_ratio,
            "",
            note=f"{base_ledger['requests']:,} requests: one POST per non-empty row, spaces removed "
            "(one httpx.Client, keep-alive; one UPDATE per row, one commit at the end)",
        ),
        correctness_row("waste table (every row)", wrong, rows),
    ]


@register("operator_e2e")
def operator_e2e(quick: bool) -> list[Result]:
    """End to end, sandbox instant and unlimited: rows/s of our refresh vs the naive per-row loop."""
    rows, distinct = (10_000, 4_000) if quick else (100_000, 40_000)
    cap_s = 6.0 if quick else 15.0
    values = phones(rows, distinct)
    out: list[Result] = []
    with sandbox(rate_limit_per_minute=None, latency_ms=0) as box:
        for kind in kinds(quick):
            db = shared(kind)
            say(f"{kind}: messy table of {rows:,} rows, {distinct:,} distinct numbers; {load_note()}")
            table = db.name("e2e")
            create_customers(db, table, values)
            box.reset()
            hook = new_hook(box.url)
            ours = run_refresh(db, table, hook, db.name("store"), db.name("runs"))
            ours_rate = ours.summary.due_rows / ours.seconds
            sent = ours.summary.requests_sent
            say(
                f"ours: {ours.seconds:.1f} s ({ours_rate:,.0f} rows/s), client CPU {ours.cpu_s:.1f} s "
                f"({1000 * ours.cpu_s / max(1, sent):.2f} ms per request), "
                f"{hook.settings.concurrency} threads at most; {describe(ours.summary)}"
            )
            wrong = wrong_statuses(db, table, rows)
            db.drop(table)

            table = db.name("e2e_naive")
            create_customers(db, table, values)
            add_status_columns(db, table)
            box.reset()
            base = naive_loop(db, table, box.endpoint_url, cap_s=cap_s)
            base_rate = base.rows / base.seconds
            done = "all rows" if base.complete else f"stopped at the {cap_s:g} s cap"
            say(f"naive loop: {base.rows:,} rows, {base.requests:,} POSTs in {base.seconds:.1f} s ({done})")
            db.drop(table)
            out += [
                Result(
                    f"{kind}: end to end, {rows:,} rows",
                    ours_rate,
                    "rows/s",
                    baseline=base_rate,
                    ratio=ratio(ours_rate, base_rate),
                    goal=Goal(4.0),
                    note=f"ours/naive loop; TableRefresh as the operator runs it; {sent:,} requests, "
                    f"{ours.summary.from_store} from store; client CPU {ours.cpu_s:.1f} s; baseline "
                    f"{base.rows:,} rows in {base.seconds:.1f} s ({done}); {load_note()}",
                ),
                correctness_row(f"{kind}: end to end", wrong, min(rows, 10_000)),
            ]
    return out
