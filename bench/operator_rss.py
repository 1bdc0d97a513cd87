"""Operator benchmark 5: peak memory of a full refresh, in a subprocess, at 100k and 1M rows.

The parent builds the tables (SQLite) and the prefilled results store, then starts
``python -m bench.operator_rss CONN_ID TABLE STORE RUNS`` once per table: the child imports the
Airflow SDK (a task process has it loaded), runs the refresh as the operator does (no request:
every number is fresh in the store) and prints its own peak RSS, ``VmHWM`` of /proc/self/status.
Not ``getrusage``: the child's ``ru_maxrss`` keeps the peak of the forking parent (which holds the
benchmark's million generated values) across exec, and the parent's ``RUSAGE_CHILDREN`` is the
maximum over every child ever waited for, sandboxes included.
Baseline: the naive loop in a child the same way, whose ``fetchall()`` holds the whole table.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from bench.common import Goal, Result, isolate_airflow_home, ratio, register, say
from bench.operator_common import create_customers, load_note, phones, shared, shared_store

LIMIT_MB = 300.0


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
        conn_id, table, store, runs = argv
    engine: sa.Engine = BaseHook.get_connection(conn_id).get_hook().get_sqlalchemy_engine()  # type: ignore[no-untyped-call]
    db = Db("child", engine, conn_id, "")
    before, _ = _peak_kb()
    started = time.perf_counter()
    if naive:
        run = naive_loop(db, table, None, cap_s=float(cap_s), answers=truth_answers)
        rows = run.rows
    else:
        rows = run_refresh(db, table, new_hook(None), store, runs).summary.rows_written
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


@register("operator_rss")
def operator_rss(quick: bool) -> list[Result]:
    """Peak RSS of a full refresh in a subprocess at 100k and 1M rows (store prefilled, no request)."""
    small, large = (10_000, 100_000) if quick else (100_000, 1_000_000)
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
    ]


if __name__ == "__main__":
    isolate_airflow_home()
    sys.exit(_child(sys.argv[1:]))
