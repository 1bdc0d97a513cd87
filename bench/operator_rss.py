"""Operator benchmark 5: peak memory of a full refresh, in a subprocess, at 100k and 1M rows, and
at 4M rows of 4M distinct numbers (memory flat in distinct numbers, not only in rows), as a dry
run with an empty store (every number one to ask) and as a run with every number in the store.

The parent builds the tables (SQLite) and the prefilled results store, then starts
``python -m bench.operator_rss CONN_ID TABLE STORE RUNS`` once per table: the child imports the
Airflow SDK (a task process has it loaded), runs the refresh as the operator does (no request:
every number is fresh in the store) and prints its own peak RSS, ``VmHWM`` of /proc/self/status.
Not ``getrusage``: the child's ``ru_maxrss`` keeps the peak of the forking parent (which holds the
benchmark's million generated values) across exec, and the parent's ``RUSAGE_CHILDREN`` is the
maximum over every child ever waited for, sandboxes included.
Baseline: the naive loop in a child the same way, whose ``fetchall()`` holds the whole table.

The distinct case is built in SQL (a recursive CTE, no Python per row): row ``i`` holds
``13800000000 + i * 61803399 % 10**8`` (61803399 is coprime with 10**8, so the 4M numbers are
distinct, and consecutive rows land far apart, as a real table's do), and the store holds a fresh
answer for each, copied from the sandbox's truth for its last two digits (all are 138 numbers).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time

from bench.common import FIRST_NUMBER, Goal, Result, isolate_airflow_home, ratio, register, say
from bench.operator_common import (
    Db,
    _sqlite_row,
    correctness_row,
    create_customers,
    load_note,
    phones,
    shared,
    shared_store,
    vendor_result,
    wrong_statuses,
)

LIMIT_MB = 300.0
DISTINCT_ROWS, QUICK_DISTINCT_ROWS = 4_000_000, 400_000
SCRAMBLE = 61_803_399  #: coprime with 10**8: i -> i * SCRAMBLE % 10**8 is one-to-one below 10**8


def _peak_kb() -> tuple[int, int]:
    """(VmHWM from /proc/self/status, ru_maxrss), both in kB."""
    hwm = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(argv: list[str]) -> int:
    """In the subprocess: one refresh (or the naive loop with ``--naive``), then the peak RSS as JSON."""
    import sqlalchemy as sa
    from airflow.sdk import BaseHook

    from bench.naive import naive_loop, truth_answers
    from bench.operator_common import Db, new_hook, run_refresh

    naive = argv[0] == "--naive"
    if naive:
        conn_id, table, cap_s = argv[1:]
    else:
        conn_id, table, store, runs, *dry = argv  # "--dry": a dry run
    engine: sa.Engine = BaseHook.get_connection(conn_id).get_hook().get_sqlalchemy_engine()  # type: ignore[no-untyped-call]
    db = Db("child", engine, conn_id, "")
    before, _ = _peak_kb()
    started = time.perf_counter()
    if naive:
        run = naive_loop(db, table, None, cap_s=float(cap_s), answers=truth_answers)
        rows = run.rows
        counts = {}
    else:
        from airflow_provider_phonestatus.refresh import RefreshOptions

        options = RefreshOptions(dry_run=dry == ["--dry"])
        summary = run_refresh(db, table, new_hook(None), store, runs, options).summary
        rows = summary.rows_written
        counts = {
            "distinct": summary.distinct_numbers,
            "from_store": summary.from_store,
            "sent": summary.requests_sent,
            "to_pay": summary.lookups_to_pay or 0,
        }
    hwm, maxrss = _peak_kb()
    engine.dispose()
    print(
        json.dumps(
            {
                "hwm_kb": hwm,
                "maxrss_kb": maxrss,
                "import_kb": before,
                "rows": rows,
                "seconds": time.perf_counter() - started,
                **counts,
            }
        )
    )
    return 0


def _run_child(args: list[str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.operator_rss", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child {args} failed ({done.returncode}): {done.stderr[-1500:]}")
    figures: dict[str, float] = json.loads(lines[-1])
    return figures


def build_distinct(db: Db, rows: int) -> tuple[str, str, float]:
    """(table, store, seconds): ``rows`` rows of as many distinct numbers, and a store holding a
    fresh answer for every one of them, both made by SQLite itself (SQLite only)."""
    from airflow_provider_phonestatus.warehouse.store import ResultStore

    if db.dialect != "sqlite":
        raise ValueError("the distinct case is built with SQLite's own statements")
    started = time.perf_counter()
    table, store_name = db.name("rss_distinct"), db.name("store_distinct")
    now = dt.datetime.now(dt.UTC)
    with db.engine.connect() as conn:
        store = ResultStore.ensure(conn, store_name)
        # The truth depends on the prefix (all 138 here) and the last two digits only.
        template = [
            store._record(national, vendor_result(national, now))
            for national in (str(FIRST_NUMBER + k) for k in range(100))
        ]
    names = [c.name for c in store.table.columns]
    copied = [n for n in names if n not in ("national", "order_no")]
    numbers = (
        f"WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < {rows - 1}) "
        f"SELECT n, {FIRST_NUMBER} + n * {SCRAMBLE} % 100000000 AS number FROM i"
    )
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"CREATE TEMP TABLE truth (k INTEGER PRIMARY KEY, {', '.join(copied)})")
        cursor.executemany(
            f"INSERT INTO truth VALUES (?{', ?' * len(copied)})",
            [
                (k, *_sqlite_row(tuple(v for n, v in zip(names, record, strict=True) if n in copied)))
                for k, record in enumerate(template)
            ],
        )
        cursor.execute(f"CREATE TABLE {table} (id INTEGER NOT NULL PRIMARY KEY, phone VARCHAR(64))")
        cursor.execute(f"INSERT INTO {table} (id, phone) SELECT n + 1, CAST(number AS TEXT) FROM ({numbers})")
        cursor.execute(
            f"INSERT INTO {store_name} ({', '.join(names)}) "
            f"SELECT {', '.join(_store_value(n) for n in names)} FROM ({numbers}) "
            "JOIN truth ON truth.k = number % 100 ORDER BY number"
        )
        cursor.execute("DROP TABLE truth")
        raw.commit()
    finally:
        raw.close()
    return table, store_name, time.perf_counter() - started


def _store_value(name: str) -> str:
    if name == "national":
        return "CAST(number AS TEXT)"
    if name == "order_no":
        return "'BENCH' || number"
    return f"truth.{name}"


@register("operator_rss")
def operator_rss(quick: bool) -> list[Result]:
    """Peak RSS of a full refresh in a subprocess at 100k and 1M rows, and at 4M distinct numbers."""
    small, large = (10_000, 100_000) if quick else (100_000, 1_000_000)
    spread = QUICK_DISTINCT_ROWS if quick else DISTINCT_ROWS
    db = shared("sqlite")
    store, prefill_s = shared_store(db, large, large * 2 // 5)
    if prefill_s:
        say(f"store prefilled with {large * 2 // 5:,} fresh answers in {prefill_s:.1f} s")
    peaks: dict[int, dict[str, float]] = {}
    for rows in (small, large):
        table = db.name("rss")
        create_customers(db, table, phones(rows, rows * 2 // 5))
        peaks[rows] = _run_child([db.conn_id, table, store, db.name("runs")])
        say(
            f"{rows:,} rows: peak {peaks[rows]['hwm_kb'] / 1024:.0f} MB (after imports "
            f"{peaks[rows]['import_kb'] / 1024:.0f} MB), {peaks[rows]['rows']:,} rows in "
            f"{peaks[rows]['seconds']:.1f} s; {load_note()}"
        )
        if rows == large:
            base = _run_child(["--naive", db.conn_id, table, "2"])
            say(f"naive loop, fetchall() of {rows:,} rows: peak {base['hwm_kb'] / 1024:.0f} MB")
        db.drop(table)
    table, spread_store, built_s = build_distinct(db, spread)
    say(f"{spread:,} rows of {spread:,} distinct numbers and their store built in {built_s:.1f} s")
    # First a dry run with an empty store (it writes nothing): every number is one to ask.
    dry = _run_child([db.conn_id, table, db.name("store_empty"), db.name("runs"), "--dry"])
    dry_mb = dry["hwm_kb"] / 1024
    say(
        f"dry run, {spread:,} distinct numbers to ask: peak {dry_mb:.0f} MB, {dry['seconds']:.1f} s, "
        f"distinct {dry['distinct']:,}, lookups to pay {dry['to_pay']:,}, sent {dry['sent']:,}"
    )
    if (dry["distinct"], dry["to_pay"], dry["sent"]) != (spread, spread, 0):
        raise AssertionError(f"dry run: expected {spread:,} distinct and to pay, no request: {dry}")
    wide = _run_child([db.conn_id, table, spread_store, db.name("runs")])
    wide_mb = wide["hwm_kb"] / 1024
    say(
        f"{spread:,} distinct: peak {wide_mb:.0f} MB (after imports {wide['import_kb'] / 1024:.0f} MB), "
        f"{wide['rows']:,} rows in {wide['seconds']:.1f} s ({spread / wide['seconds']:,.0f} rows/s), "
        f"distinct {wide['distinct']:,}, from store {wide['from_store']:,}, sent {wide['sent']:,}; "
        f"{load_note()}"
    )
    counted = (wide["rows"], wide["distinct"], wide["from_store"], wide["sent"])
    if counted != (spread, spread, spread, 0):
        raise AssertionError(f"expected {spread:,} rows, distinct and from store, no request: {counted}")
    wrong = wrong_statuses(db, table, spread)
    db.drop(table)
    db.drop(spread_store)
    mb = {rows: figures["hwm_kb"] / 1024 for rows, figures in peaks.items()}
    base_mb = base["hwm_kb"] / 1024
    return [
        Result(
            f"peak RSS, {small:,} rows",
            mb[small],
            "MB",
            goal=Goal(high=LIMIT_MB, on="value"),
            note=f"VmHWM of the child; {peaks[small]['import_kb'] / 1024:.0f} MB after imports (its "
            "ru_maxrss keeps the forking parent's peak across exec, so it is not used)",
        ),
        Result(
            f"peak RSS, {large:,} rows",
            mb[large],
            "MB",
            baseline=base_mb,
            ratio=ratio(mb[large], base_mb),
            goal=Goal(high=LIMIT_MB, on="value"),
            note=f"baseline: the naive loop's child after fetchall() of {large:,} rows (same imports)",
        ),
        Result(
            f"peak RSS {large:,} / {small:,} rows",
            mb[large],
            "MB",
            baseline=mb[small],
            ratio=ratio(mb[large], mb[small]),
            goal=Goal(high=1.5),
            note="flat in table size: within 1.5x",
        ),
        Result(
            f"peak RSS, {spread:,} rows of {spread:,} distinct numbers",
            wide_mb,
            "MB",
            baseline=mb[large],
            ratio=ratio(wide_mb, mb[large]),
            goal=Goal(high=LIMIT_MB, on="value"),
            note=f"all fresh in the store; baseline: {large:,} rows of {large * 2 // 5:,} distinct; "
            f"{wide['seconds']:.0f} s ({spread / wide['seconds']:,.0f} rows/s); distinct and from store "
            "counted exactly",
        ),
        Result(
            f"peak RSS, dry run over {spread:,} distinct numbers to ask",
            dry_mb,
            "MB",
            baseline=mb[large],
            ratio=ratio(dry_mb, mb[large]),
            goal=Goal(high=LIMIT_MB, on="value"),
            note=f"empty store: a real run would ask every one; baseline: {large:,} rows of "
            f"{large * 2 // 5:,} distinct; {dry['seconds']:.0f} s; distinct and to pay counted exactly",
        ),
        correctness_row(f"{spread:,} distinct", wrong, 10_000),
    ]


if __name__ == "__main__":
    isolate_airflow_home()
    sys.exit(_child(sys.argv[1:]))
