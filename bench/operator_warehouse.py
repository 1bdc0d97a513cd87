"""Operator benchmarks 3 and 4: the warehouse side alone, at a million rows.

3. Every number of the table is fresh in the results store (prefilled with ``ResultStore.save``),
   so no request is sent (the hook points at a closed port: a request would fail the run): rows/s
   of a full refresh. Baseline in the same run: the naive loop's read+update part (``SELECT id,
   phone`` + ``fetchall()``, one UPDATE per row with the answer, one commit), which cannot use a
   store; it is stopped at a time cap (its rate is steady). The goal is absolute: 50,000 rows/s.
4. Finding the due rows: 10,000 due (never checked, phone changed, expired: a third each) among a
   million rows otherwise fresh; ``DueList.create`` + reading every page (``pages(5000)``) against
   a full ``SELECT *`` fetched into Python and filtered there with the same rules.

The goal of 3 is absolute, so benchmark 3 also measures one of the issue's anchors of machine
speed in the same run: SQLite's own ``executemany`` UPDATE by primary key (the issue: about
400,000 rows/s). The other anchor, ``phonenumbers`` on one core (about 17,000/s), is the baseline
of ``numbers_parse``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bench.common import Goal, Result, ratio, register, say
from bench.naive import add_status_columns, naive_loop, truth_answers
from bench.operator_common import (
    correctness_row,
    create_customers,
    describe,
    kinds,
    load_note,
    new_hook,
    phones,
    run_refresh,
    shared,
    shared_store,
    wrong_statuses,
)
from bench.phases import describe_machine, describe_phases, machine_cpu, phase_cpu

FULL_ROWS, QUICK_ROWS = 1_000_000, 100_000


def sizes(quick: bool) -> tuple[int, int]:
    rows = QUICK_ROWS if quick else FULL_ROWS
    return rows, rows * 2 // 5


@register("operator_warehouse")
def operator_warehouse(quick: bool) -> list[Result]:
    """Every number fresh in the results store, no request: rows/s of a full refresh (goal 50k/s)."""
    rows, distinct = sizes(quick)
    cap_s = 4.0 if quick else 6.0
    values = phones(rows, distinct)
    anchor = sqlite_update_rate(rows)
    say(f"anchor: SQLite executemany UPDATE by primary key, {rows:,} rows: {anchor:,.0f} rows/s")
    out = [
        Result(
            f"anchor: SQLite executemany UPDATE by key, {rows:,} rows",
            anchor,
            "rows/s",
            note="machine speed in this run; the issue measured about 400,000 rows/s",
        )
    ]
    for kind in kinds(quick):
        db = shared(kind)
        store, prefill_s = shared_store(db, rows, distinct)
        if prefill_s:
            say(f"{kind}: store prefilled with {distinct:,} answers (ResultStore.save) in {prefill_s:.1f} s")
        table = db.name("wh")
        started = time.perf_counter()
        create_customers(db, table, values)
        built = time.perf_counter() - started
        say(f"{kind}: table of {rows:,} messy rows built in {built:.1f} s; {load_note()}")
        with phase_cpu() as spent, machine_cpu() as machine:
            ours = run_refresh(db, table, new_hook(None), store, db.name("runs"))
        summary = ours.summary
        if summary.requests_sent or summary.rows_written != rows:
            raise AssertionError(f"expected {rows:,} rows written and no request: {describe(summary)}")
        ours_rate = rows / ours.seconds
        phases = describe_phases(spent, ours.cpu_s, rows)
        phases += f"; {describe_machine(machine, with_server=kind == 'postgres')}"
        say(f"ours: {ours.seconds:.1f} s wall, {ours_rate:,.0f} rows/s; {phases}")
        say(describe(summary))
        wrong = wrong_statuses(db, table, rows)
        db.drop(table)

        table = db.name("wh_naive")
        create_customers(db, table, values)
        add_status_columns(db, table)
        base = naive_loop(db, table, None, cap_s=cap_s, answers=truth_answers)
        base_rate = base.rows / base.seconds
        say(f"naive read+update: {base.rows:,} rows in {base.seconds:.1f} s ({base_rate:,.0f} rows/s)")
        db.drop(table)
        out += [
            Result(
                f"{kind}: all fresh in store, {rows:,} rows",
                ours_rate,
                "rows/s",
                baseline=base_rate,
                ratio=ratio(ours_rate, base_rate),
                goal=Goal(50_000, on="value"),
                note=f"ours/naive read+update loop (capped at {cap_s:g} s); {ours.seconds:.1f} s wall, "
                f"{phases}; {load_note()}",
            ),
            correctness_row(f"{kind}: all fresh in store", wrong, 10_000),
        ]
    return out


def sqlite_update_rate(rows: int) -> float:
    """Rows/s of one ``executemany`` UPDATE of seven columns by INTEGER PRIMARY KEY, committed, on
    a fresh SQLite file of ``rows`` rows, through the plain ``sqlite3`` module (no SQLAlchemy)."""
    with (
        tempfile.TemporaryDirectory(prefix="phonestatus-bench-anchor-") as folder,
        contextlib.closing(sqlite3.connect(os.path.join(folder, "anchor.db"))) as conn,
    ):
        conn.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, phone TEXT, status TEXT, code TEXT, carrier TEXT,"
            " ported BOOLEAN, checked_at DATETIME, order_no TEXT, checked_value TEXT)"
        )
        conn.executemany("INSERT INTO t (id, phone) VALUES (?, ?)", ((i, "13800138000") for i in range(rows)))
        conn.commit()
        at = "2026-11-28 10:00:00.000000"
        values = [("active", "1", "china_mobile", 0, at, f"BENCH{i}", "13800138000", i) for i in range(rows)]
        started = time.perf_counter()
        conn.executemany(
            "UPDATE t SET status = ?, code = ?, carrier = ?, ported = ?, checked_at = ?, order_no = ?,"
            " checked_value = ? WHERE id = ?",
            values,
        )
        conn.commit()
        return rows / (time.perf_counter() - started)


# -- 4. due selection ----------------------------------------------------------------------------


def _status_of(rows: int, due: int, now: dt.datetime) -> Any:
    """Status columns per row: ``due`` rows spread evenly are due (never checked, changed value,
    expired active), the rest fresh; returns (function for create_customers, the due ids)."""
    step = rows // due
    fresh_at = now.replace(tzinfo=None) - dt.timedelta(days=1)
    old_at = now.replace(tzinfo=None) - dt.timedelta(days=90)
    due_ids: set[int] = set()

    def status(i: int, phone: str | None) -> tuple[Any, ...]:
        text = phone
        checked: dt.datetime | None = fresh_at
        state: str | None = "active"
        if i % step == 0 and len(due_ids) < due:
            due_ids.add(i)
            kind = (i // step) % 3
            if kind == 0:
                state, checked, text = None, None, None
            elif kind == 1:
                text = f"{phone}x"
            else:
                checked = old_at
        return (state, "1", "china_mobile", False, checked, "BENCH", text)

    return status, due_ids


def _python_due(rows: Sequence[Any], columns: list[str], now: dt.datetime) -> set[int]:
    """The due rule applied in Python to ``SELECT *`` rows (what a baseline does)."""
    from airflow_provider_phonestatus.revalidation import RevalidationPolicy

    policy = RevalidationPolicy()
    cutoffs = policy.cutoffs(now)
    other = policy.other_cutoff(now)
    at = {name: i for i, name in enumerate(columns)}
    i_id, i_phone, i_status = at["id"], at["phone"], at["phone_status"]
    i_at, i_value = at["phone_checked_at"], at["phone_checked_value"]
    found: set[int] = set()
    for row in rows:
        status, checked = row[i_status], row[i_at]
        phone = row[i_phone]
        if isinstance(checked, str):  # SQLite without SQLAlchemy types: ISO text
            checked = dt.datetime.fromisoformat(checked)
        if (
            status is None
            or checked is None
            or (None if phone is None else str(phone)) != row[i_value]
            or checked < cutoffs.get(status, other)
        ):
            found.add(row[i_id])
    return found


@register("operator_due")
def operator_due(quick: bool) -> list[Result]:
    """Finding 10,000 due rows among 1,000,000 (DueList.create + paging) vs SELECT * and filtering."""
    from airflow_provider_phonestatus.revalidation import RevalidationPolicy
    from airflow_provider_phonestatus.warehouse.columns import StatusColumns
    from airflow_provider_phonestatus.warehouse.due import DueList
    from airflow_provider_phonestatus.warehouse.target import TargetTable

    rows = QUICK_ROWS if quick else FULL_ROWS
    due = rows // 100
    values = phones(rows, rows * 2 // 5)
    now = dt.datetime.now(dt.UTC)
    out: list[Result] = []
    for kind in kinds(quick):
        db = shared(kind)
        table = db.name("due")
        status, due_ids = _status_of(rows, due, now)
        started = time.perf_counter()
        create_customers(db, table, values, status=status)
        say(f"{kind}: {rows:,} rows, {len(due_ids):,} due, built in {time.perf_counter() - started:.1f} s")
        with db.engine.connect() as conn:
            target = TargetTable.load(
                conn, table, key_columns="id", phone_column="phone", columns=StatusColumns()
            )
            started = time.perf_counter()
            listed = DueList.create(conn, target, RevalidationPolicy(), now)
            with listed:
                found = [r.key[0] for page in listed.pages(5000) for r in page]
            ours_s = time.perf_counter() - started
            conn.commit()
            started = time.perf_counter()
            result = conn.execute(sa.text(f"SELECT * FROM {table}"))
            columns = list(result.keys())
            everything = result.fetchall()
            base_found = _python_due(everything, columns, now)
            base_s = time.perf_counter() - started
            del everything
        if set(found) != due_ids or base_found != due_ids or len(found) != len(due_ids):
            raise AssertionError(
                f"due rows differ: DueList {len(found)}, Python {len(base_found)}, expected {len(due_ids)}"
            )
        say(f"DueList {ours_s:.2f} s, SELECT * + Python {base_s:.2f} s; {load_note()}")
        db.drop(table)
        out.append(
            Result(
                f"{kind}: find {len(due_ids):,} due among {rows:,}",
                ours_s,
                "s",
                baseline=base_s,
                ratio=ratio(ours_s, base_s),
                goal=Goal(high=1.0),
                note="ours/baseline seconds (lower is better); DueList.create + pages(5000) vs SELECT * "
                "fetched and filtered in Python; both found exactly the due rows",
            )
        )
    return out
