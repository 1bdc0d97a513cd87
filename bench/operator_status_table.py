"""Issue 15's goal: a full refresh into a status table at >= 50,000 rows/s, next to in place.

For each of SQLite, PostgreSQL and DuckDB: a table of 1,000,000 messy rows (100,000 with
``--quick``) whose numbers are all fresh in the results store, and a hook that can reach nothing,
so the run is the warehouse's work only. It is refreshed with ``status_table`` set (the status
table does not exist yet: the run creates it and writes every row into it), then a rerun in the
same mode must find no due row (asserted). An identical fresh table is then refreshed in place in
the same run: that is the baseline (ratio = status table / in place), so a host that is slow this
hour shows in both figures. Both runs go through :func:`bench.operator_common.run_refresh`, which
mirrors the operator (access checks included), and print their CPU split (``bench/phases.py``).
A sample of 10,000 ids is checked in both tables against the sandbox's truth.
"""

from __future__ import annotations

import time

from bench.common import Goal, Result, ratio, register, say
from bench.operator_common import (
    ALL_KINDS,
    Db,
    Refresh,
    correctness_row,
    create_customers,
    describe,
    load_note,
    new_hook,
    phones,
    run_refresh,
    shared,
    shared_store,
    wrong_statuses,
)
from bench.operator_warehouse import sizes
from bench.phases import describe_machine, describe_phases, machine_cpu, phase_cpu


@register("operator_status_table")
def operator_status_table(quick: bool) -> list[Result]:
    """All fresh in the store, status_table mode vs in place: rows/s (goal 50k/s), SQLite, PG, DuckDB."""
    rows, distinct = sizes(quick)
    values = phones(rows, distinct)
    out: list[Result] = []
    for kind in ALL_KINDS:
        db = shared(kind)
        store, prefill_s = shared_store(db, rows, distinct)
        if prefill_s:
            say(f"{kind}: store prefilled with {distinct:,} answers (ResultStore.save) in {prefill_s:.1f} s")

        source, status = db.name("st_source"), db.name("st_status")
        started = time.perf_counter()
        create_customers(db, source, values)
        built = time.perf_counter() - started
        say(f"{kind}: table of {rows:,} messy rows built in {built:.1f} s; {load_note()}")
        ours, ours_note = _measured(db, source, store, status, rows, "status_table")
        again = run_refresh(db, source, new_hook(None), store, db.name("runs"), status_table=status)
        if again.summary.due_rows or again.summary.rows_written or again.summary.requests_sent:
            raise AssertionError(f"the rerun in status_table mode found work: {describe(again.summary)}")
        say(f"rerun in status_table mode: 0 due rows, {again.seconds:.2f} s")
        wrong = [f"status table: {w}" for w in wrong_statuses(db, source, rows, status_table=status)]
        db.drop(status)
        db.drop(source)

        table = db.name("st_in_place")
        create_customers(db, table, values)
        base, base_note = _measured(db, table, store, None, rows, "in place")
        wrong += [f"in place: {w}" for w in wrong_statuses(db, table, rows)]
        db.drop(table)

        ours_rate, base_rate = rows / ours.seconds, rows / base.seconds
        if kind == "duckdb":  # the phases count their own thread's CPU only
            base_note += "; DuckDB runs statements on worker threads too: their CPU counts as parsing"
        out += [
            Result(
                f"{kind}: status_table, all fresh in store, {rows:,} rows",
                ours_rate,
                "rows/s",
                baseline=base_rate,
                ratio=ratio(ours_rate, base_rate),
                goal=Goal(50_000, on="value"),
                note=f"status table (created by the run) / in place, same run; status table: {ours_note}; "
                f"rerun {again.seconds:.2f} s, 0 due; in place: {base_note}; {load_note()}",
            ),
            correctness_row(f"{kind}: status_table and in place, same ids", wrong, min(rows, 10_000)),
        ]
    return out


def _measured(
    db: Db, table: str, store: str, status_table: str | None, rows: int, mode: str
) -> tuple[Refresh, str]:
    """One full refresh with its CPU split; checks it wrote every row and sent nothing."""
    with phase_cpu() as spent, machine_cpu() as machine:
        run = run_refresh(db, table, new_hook(None), store, db.name("runs"), status_table=status_table)
    summary = run.summary
    if summary.requests_sent or summary.rows_written != rows:
        raise AssertionError(f"{mode}: expected {rows:,} rows written and no request: {describe(summary)}")
    note = (
        f"{run.seconds:.1f} s wall, {describe_phases(spent, run.cpu_s, rows)}; "
        f"{describe_machine(machine, with_server=db.kind == 'postgres')}"
    )
    say(f"{db.kind} {mode}: {rows / run.seconds:,.0f} rows/s; {note}")
    say(describe(summary))
    return run, note
