"""A kill -9 mid-run loses about a second of paid answers at most, whatever the batch size.

Paid answers are committed by count (``batch_size``) or by time (``flush_interval``, default 1 s),
store and table in one transaction. A pass killed at a 20 req/s plan, after a few seconds of
answers and before any batch fills, has committed all but the last second's answers; the rerun
pays again for exactly the answers that were not committed (and the requests that were in
flight), each once. With the former default of 5 s the same kill loses every answer of the run.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from airflow_provider_phonestatus.refresh import RefreshOptions, TableRefresh
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.sandbox.customers import expected_status
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.lookups import LookupLedger, RunIdentity
from airflow_provider_phonestatus.warehouse.store import ResultStore
from airflow_provider_phonestatus.warehouse.target import TargetTable
from tests.db import Warehouse, customers, table_rows
from tests.test_hook import make_hook, numbers

PER_MINUTE = 1_200  #: the plan of the killed run: 20 answers a second
CONCURRENCY = 4  #: requests in flight at most (billed on arrival, never answered)
KILL_AFTER = 70  #: paid answers before the kill: 3.5 s of them, fewer than a batch

#: The killed run: the operator's options (RefreshOptions() defaults) on its own process.
CHILD = """
import sys
import sqlalchemy as sa
from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
from airflow_provider_phonestatus.refresh import RefreshOptions, TableRefresh
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.lookups import LookupLedger, RunIdentity
from airflow_provider_phonestatus.warehouse.store import ResultStore
from airflow_provider_phonestatus.warehouse.target import TargetTable

url, table, store, lookups, base_url, api_key, per_minute, concurrency = sys.argv[1:]
settings = PhoneStatusSettings(
    api_key=api_key,
    base_url=base_url,
    rate_limit_per_minute=float(per_minute),
    max_concurrency=int(concurrency),
    timeout=5.0,
)
with sa.create_engine(url).connect() as conn:
    target = TargetTable.load(conn, table, key_columns="id", phone_column="phone", columns=StatusColumns())
    results = ResultStore.ensure(conn, store)
    ledger = LookupLedger.ensure(conn, lookups)
    run = RunIdentity("killed", "dag", "task", "run", -1, 1, table)
    print("READY", flush=True)
    TableRefresh(
        conn, target, results, PhoneStatusHook(settings=settings), RevalidationPolicy(), RefreshOptions(),
        ledger=ledger, run=run,
    ).run()
"""


def load(conn: sa.Connection, table: str) -> TargetTable:
    return TargetTable.load(conn, table, key_columns="id", phone_column="phone", columns=StatusColumns())


def tail(log: IO[str]) -> str:
    log.seek(0)
    return log.read()[-3000:]


def stored(wh: Warehouse, store: str) -> set[str]:
    with wh.engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT national FROM {store}")).scalars())


def answers(wh: Warehouse, table: str) -> list[tuple[str, str]]:
    """(number, order number) of every answer in the store or every row of the ledger."""
    with wh.engine.connect() as conn:
        return sorted(conn.execute(sa.text(f"SELECT national, order_no FROM {table}")).tuples())


def billed(sandbox: SandboxServer, more_than: int = 0) -> set[str]:
    return {n for n, entry in sandbox.ledger()["by_number"].items() if entry["billed"] > more_than}


def test_a_kill_mid_run_loses_at_most_the_last_second_of_paid_answers(
    warehouse: Warehouse, phonestatus_sandbox: SandboxServer, tmp_path: Path
) -> None:
    sandbox = phonestatus_sandbox
    sandbox.configure(rate_limit_per_minute=PER_MINUTE, latency_ms=50)
    wanted = numbers(150)
    table = customers(warehouse, [p for n in wanted for p in (n, f"+86 {n}")])
    store, lookups = warehouse.table_name("store"), warehouse.table_name("lookups")
    with warehouse.engine.connect() as conn:  # columns, store and ledger made before the child starts
        load(conn, table)
        ResultStore.ensure(conn, store)
        LookupLedger.ensure(conn, lookups)
        conn.commit()
    url = warehouse.engine.url.render_as_string(hide_password=False)
    argv = [
        url,
        table,
        store,
        lookups,
        sandbox.url,
        sandbox.config.api_key,
        str(PER_MINUTE),
        str(CONCURRENCY),
    ]
    with open(tmp_path / "child.log", "w+") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *argv],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=os.environ.copy(),
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "READY", tail(log)
            deadline = time.monotonic() + 120
            while int(sandbox.ledger()["billed"]) < KILL_AFTER:
                assert child.poll() is None, tail(log)
                assert time.monotonic() < deadline, "the run did not get going"
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate()
    time.sleep(0.5)  # a request the child had sent reaches the sandbox (billed on arrival)
    paid = billed(sandbox)
    assert len(paid) < len(wanted), "the run finished before it was killed"
    lost = paid - stored(warehouse, store)
    # one second of answers at the plan rate and what was in flight; a second more of slack for
    # a loaded machine (the former default of 5 s lost all of the ~70 here)
    assert len(lost) <= 2 * PER_MINUTE // 60 + CONCURRENCY, f"{len(lost)} of {len(paid)} paid answers lost"
    assert answers(warehouse, lookups) == answers(warehouse, store)  # one ledger row per stored answer

    with warehouse.engine.connect() as conn:
        results = ResultStore.ensure(conn, store)
        ledger = LookupLedger.ensure(conn, lookups)
        run = RunIdentity("rerun", "dag", "task", "run", -1, 2, table)
        rerun = TableRefresh(
            conn,
            load(conn, table),
            results,
            make_hook(sandbox),
            RevalidationPolicy(),
            RefreshOptions(),
            ledger=ledger,
            run=run,
        )
        summary = rerun.run()
    assert summary.paid_lookups == len(wanted) - len(paid) + len(lost)
    assert billed(sandbox, more_than=1) == lost  # paid twice: exactly the answers not committed
    assert billed(sandbox) == set(wanted) == stored(warehouse, store)
    assert all(entry["billed"] <= 2 for entry in sandbox.ledger()["by_number"].values())
    # Every stored answer has exactly one ledger row; the ledger holds every bill line but those
    # paid for answers the kill lost (billed, never stored), each once.
    ledger_rows = answers(warehouse, lookups)
    assert set(answers(warehouse, store)) <= set(ledger_rows) and len(set(ledger_rows)) == len(ledger_rows)
    bill = {(o["number"], o["order_no"]) for o in sandbox.orders()}
    assert set(ledger_rows) <= bill and len(bill - set(ledger_rows)) == len(lost)
    assert len(ledger_rows) == len(wanted)  # each number stored once: by the killed run or the rerun
    assert [r["phone_status"] for r in table_rows(warehouse, table)] == [
        expected_status(n) for n in wanted for _ in range(2)
    ]


def test_the_operator_and_the_pass_default_to_one_second() -> None:
    from airflow_provider_phonestatus.operators.phonestatus import PhoneStatusCheckOperator

    parameters = inspect.signature(PhoneStatusCheckOperator.__init__).parameters
    assert parameters["flush_interval"].default == RefreshOptions().flush_interval == 1.0
