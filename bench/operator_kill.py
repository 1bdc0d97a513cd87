"""Operator benchmark 6: paid answers a ``kill -9`` loses, at a 20 req/s plan.

A refresh runs in a subprocess (``python -m bench.operator_kill ...``, as ``PhoneStatusCheckOperator
.execute`` runs it, see :func:`bench.operator_common.run_refresh`) against a sandbox enforcing a
1,200/min plan with 100 ms answers, over a SQLite table of a few hundred distinct numbers (each on
two rows). The parent SIGKILLs it a few seconds after its first paid answer, starts it again, kills
it again at another instant, and so on; the last run completes. After each kill, the answers lost
are the numbers the sandbox billed (its ledger) that are not in the results store: exactly what
the next run pays for again. At the end the ledger's repeat billings (billed - 1, summed over the
numbers; a number lost at two kills is paid three times) must equal the sum of those losses, and
every row must hold its number's true status.

A paid answer is committed by count (``batch_size``, 500: never reached here) or by time
(``flush_interval``), so a kill loses at most ``rate * flush_interval`` answers taken and not yet
committed, plus the requests in flight (billed on arrival, never answered): the goal per kill is
``rate * 1 s + concurrency``. Baseline in the same run: the same kills with the former default
``flush_interval=5.0``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bench.common import Goal, Result, Sandbox, isolate_airflow_home, numbers, register, sandbox, say
from bench.operator_common import (
    Db,
    correctness_row,
    create_customers,
    load_note,
    shared,
    wrong_statuses,
)

PER_MINUTE = 1_200  #: the plan: 20 requests per second
CONCURRENCY = 4  #: the hook's max_concurrency: at most this many requests in flight
LATENCY_MS = 100  #: each answer takes this long: 2 requests in flight at the plan rate
#: Seconds after a run's first paid answer at which it is killed, one run each; the next run
#: completes. Spread so that kills fall at different phases of the flush clock.
KILLS_S, QUICK_KILLS_S = (6.5, 3.2, 8.9), (3.2,)
DISTINCT, QUICK_DISTINCT = 500, 150
DEFAULT_FLUSH_S, FORMER_FLUSH_S = 1.0, 5.0


@dataclass
class KillRun:
    """One configuration's runs: answers lost at each kill, and the ledger's count at the end."""

    flush_interval: float
    lost: list[int] = field(default_factory=list)  #: billed, not in the store, after each kill
    paid_again: int = 0  #: repeat billings after the final run: sum of (billed - 1) over the numbers
    billed: int = 0
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _child(argv: list[str]) -> int:
    """In the subprocess: one refresh at the plan rate; prints its summary as JSON when it ends."""
    import sqlalchemy as sa
    from airflow.sdk import BaseHook

    from airflow_provider_phonestatus.refresh import RefreshOptions
    from bench.operator_common import new_hook, run_refresh

    conn_id, table, store, runs, url, flush_interval = argv
    engine: sa.Engine = BaseHook.get_connection(conn_id).get_hook().get_sqlalchemy_engine()  # type: ignore[no-untyped-call]
    db = Db("child", engine, conn_id, "")
    hook = new_hook(url, per_minute=PER_MINUTE, max_concurrency=CONCURRENCY)
    print("READY", flush=True)
    done = run_refresh(db, table, hook, store, runs, RefreshOptions(flush_interval=float(flush_interval)))
    engine.dispose()
    print(json.dumps({"paid": done.summary.paid_lookups, "rows": done.summary.rows_written}), flush=True)
    return 0


@contextmanager
def refresh_process(args: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A refresh in a subprocess, its imports done (the pass starts now); killed on exit if it still
    runs. Its stderr goes to a file: a pipe nobody reads could fill up and stall it."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.operator_kill", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise ChildFailed("the refresh did not start")
            yield proc
        except ChildFailed as exc:
            proc.kill()
            proc.wait()
            errors.seek(0)
            raise RuntimeError(f"{exc}: {errors.read()[-1500:]}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


class ChildFailed(Exception):
    """Raised inside :func:`refresh_process`: re-raised with the end of the child's stderr."""


def _stored(db: Db, store: str) -> set[str]:
    with db.engine.connect() as conn:
        return {row[0] for row in conn.exec_driver_sql(f"SELECT national FROM {store}")}


def _billed(by_number: dict[str, dict[str, int]]) -> set[str]:
    return {n for n, entry in by_number.items() if entry["billed"]}


def kill_runs(
    db: Db, box: Sandbox, flush_interval: float, kills: tuple[float, ...], distinct: int
) -> KillRun:
    """Kill a refresh at each of ``kills`` (seconds after its first paid answer), then complete it."""
    out = KillRun(flush_interval)
    wanted = numbers(distinct)
    table, store = db.name("kill"), db.name("store")
    create_customers(db, table, [n for n in wanted for _ in range(2)])
    args = [db.conn_id, table, store, db.name("runs"), box.url, str(flush_interval)]
    box.reset()
    started = time.perf_counter()
    for at in kills:
        before = int(box.ledger()["billed"])
        with refresh_process(args) as proc:
            first = None
            while True:
                billed = int(box.ledger()["billed"])
                now = time.perf_counter()
                if first is None and billed > before:
                    first = now
                if first is not None and now - first >= at:
                    break
                if proc.poll() is not None:
                    raise ChildFailed(f"the run ended before its kill at {at:g} s")
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        time.sleep(0.5)  # a request the child had sent reaches the sandbox (billed on arrival)
        lost = _billed(box.by_number()) - _stored(db, store)
        out.lost.append(len(lost))
        say(
            f"flush_interval {flush_interval:g} s: killed {at:g} s after its first paid answer; "
            f"billed so far {int(box.ledger()['billed']):,}, not in the store (to be paid again) {len(lost)}"
        )
    with refresh_process(args) as proc:
        if proc.wait(timeout=600) != 0:
            raise ChildFailed(f"the final run failed ({proc.returncode})")
    out.seconds = time.perf_counter() - started
    by_number = box.by_number()
    out.billed = sum(entry["billed"] for entry in by_number.values())
    out.paid_again = sum(entry["billed"] - 1 for entry in by_number.values())
    if set(by_number) != set(wanted) or _stored(db, store) != set(wanted):
        raise AssertionError("the runs did not ask, or did not store, exactly the table's numbers")
    if out.paid_again != sum(out.lost):
        raise AssertionError(f"paid again {out.paid_again}, lost at the kills {out.lost}")
    out.wrong = wrong_statuses(db, table, 2 * distinct, sample=2 * distinct)
    say(
        f"flush_interval {flush_interval:g} s: final run done; billed {out.billed:,} for "
        f"{distinct:,} numbers, {out.paid_again} paid again; {out.seconds:.0f} s in all; {load_note()}"
    )
    db.drop(table)
    db.drop(store)
    return out


@register("operator_kill")
def operator_kill(quick: bool) -> list[Result]:
    """kill -9 mid-run at a 20 req/s plan, then rerun: answers paid again (goal: rate * 1 s + in flight)."""
    kills = QUICK_KILLS_S if quick else KILLS_S
    distinct = QUICK_DISTINCT if quick else DISTINCT
    db = shared("sqlite")
    rate = PER_MINUTE / 60
    goal = math.ceil(rate * DEFAULT_FLUSH_S) + CONCURRENCY
    say(
        f"{distinct:,} numbers on {2 * distinct:,} rows, SQLite; sandbox plan {PER_MINUTE:,}/min, "
        f"answers in {LATENCY_MS} ms; hook {PER_MINUTE:,}/min, max_concurrency {CONCURRENCY}; "
        f"kills at {', '.join(f'{k:g}' for k in kills)} s after each run's first paid answer"
    )
    with sandbox(rate_limit_per_minute=PER_MINUTE, latency_ms=LATENCY_MS) as box:
        ours = kill_runs(db, box, DEFAULT_FLUSH_S, kills, distinct)
        base = kill_runs(db, box, FORMER_FLUSH_S, kills, distinct)
    worst, base_worst = max(ours.lost), max(base.lost)
    return [
        Result(
            "paid again per kill -9, flush_interval 1 s (default), worst",
            float(worst),
            "answers",
            baseline=float(base_worst),
            ratio=worst / base_worst if base_worst else math.nan,
            goal=Goal(high=goal, on="value"),
            note=f"lost at each kill {ours.lost}, former 5 s interval {base.lost}; goal {rate:g}/s * 1 s + "
            f"{CONCURRENCY} in flight = {goal}; lost: billed, not in the store after the kill",
        ),
        Result(
            f"paid again in all, {len(kills)} kill{'s' if len(kills) > 1 else ''} and a complete run",
            float(ours.paid_again),
            "answers",
            baseline=float(base.paid_again),
            ratio=ours.paid_again / base.paid_again if base.paid_again else math.nan,
            note=f"sandbox ledger: repeat billings for {distinct:,} numbers (= the losses above); baseline: "
            f"flush_interval 5 s; {ours.seconds:.0f} s and {base.seconds:.0f} s of runs",
        ),
        correctness_row("after the kills and the final run", ours.wrong + base.wrong, 4 * distinct),
    ]


if __name__ == "__main__":
    isolate_airflow_home()
    sys.exit(_child(sys.argv[1:]))
