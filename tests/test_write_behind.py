"""Write-behind: batches of free rows go to a second connection (PostgreSQL, MariaDB) while the run
reads on; paid answers are committed on the run's own connection. On SQLite and DuckDB everything
is written on the one connection. Real databases, the sandbox as the vendor over HTTP."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.refresh import RefreshOptions, TableRefresh
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.sandbox.customers import expected_status
from airflow_provider_phonestatus.summary import RunSummary
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.store import ResultStore
from airflow_provider_phonestatus.warehouse.target import TargetTable
from airflow_provider_phonestatus.warehouse.write_behind import WriteBehind
from tests.db import Warehouse, customers, table_rows
from tests.test_hook import make_hook, numbers

#: Small batches, so that one run writes many of them, free and paid interleaved.
SMALL = RefreshOptions(page_size=40, batch_size=7, free_batch_size=25)


@pytest.fixture
def sandbox(phonestatus_sandbox: SandboxServer) -> SandboxServer:
    phonestatus_sandbox.configure(rate_limit_per_minute=None)
    return phonestatus_sandbox


def refresh(
    wh: Warehouse, sandbox: SandboxServer, table: str, store: str, options: RefreshOptions = SMALL
) -> RunSummary:
    with wh.engine.connect() as conn:
        target = TargetTable.load(
            conn, table, key_columns="id", phone_column="phone", columns=StatusColumns()
        )
        results = ResultStore.ensure(conn, store)
        run = TableRefresh(conn, target, results, make_hook(sandbox), RevalidationPolicy(), options)
        return run.run()


def writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("phonestatus-write-behind")]


def test_free_batches_behind_paid_ones_now_every_row_right(
    warehouse: Warehouse, sandbox: SandboxServer
) -> None:
    thresholds = gc.get_threshold()
    known, new = numbers(60), numbers(25, start=13900000001)
    store = warehouse.table_name("store")
    assert refresh(warehouse, sandbox, customers(warehouse, known), store).paid_lookups == 60
    sandbox.reset()
    # Known numbers (free, from the store), new ones (paid) and junk (free, local), interleaved
    # and repeated, so free batches are written behind while paid ones are committed in between.
    phones: list[Any] = []
    for i in range(200):
        phones.append(known[i % 60] if i % 3 else new[i % 25])
        if i % 17 == 0:
            phones.append("N/A")
    table = customers(warehouse, phones)
    summary = refresh(warehouse, sandbox, table, store)
    assert gc.get_threshold() == thresholds  # raised for the pass only (the process's setting)
    assert sandbox.ledger()["requests"] == 25 and summary.paid_lookups == 25
    # each number counts once, however many pages hold it; a paid answer read back is not free
    used = set(phones) - {"N/A"}
    assert (summary.distinct_numbers, summary.from_store) == (len(used), len(used & set(known)))
    assert len(used & set(known)) == 40  # known[i % 60] with i % 3 != 0: 40 of them, on many pages
    assert summary.rows_written == summary.due_rows == len(phones)
    assert [row["phone_status"] for row in table_rows(warehouse, table)] == list(map(expected_status, phones))
    assert writers() == []  # the second connection's thread is gone with the run
    assert WriteBehind.suits(warehouse.engine.connect()) is (warehouse.dialect not in ("sqlite", "duckdb"))


def test_a_failed_write_behind_fails_the_run_and_keeps_the_batches_before(
    warehouse: Warehouse, sandbox: SandboxServer
) -> None:
    # The table refuses one status (a CHECK constraint): the batch holding it fails wherever it is
    # written; the run fails with the database's error, batches committed before it stay written.
    thresholds = gc.get_threshold()
    phones = [*numbers(40), "13800138008"]  # the last one is powered_off in the sandbox's truth
    store = warehouse.table_name("store")
    refresh(warehouse, sandbox, customers(warehouse, phones), store)  # every number now in the store
    refuse = [sa.Column("phone_status", sa.String(32)), sa.CheckConstraint("phone_status <> 'powered_off'")]
    # DuckDB has no ALTER TABLE ... ADD CONSTRAINT: the table is made with it
    table = customers(warehouse, phones, extra_columns=refuse if warehouse.dialect == "duckdb" else [])
    with warehouse.engine.connect() as conn:
        TargetTable.load(conn, table, key_columns="id", phone_column="phone", columns=StatusColumns())
        if warehouse.dialect == "sqlite":  # no ALTER TABLE ... ADD CONSTRAINT: refuse it by trigger
            conn.exec_driver_sql(
                f"CREATE TRIGGER {table}_refuse BEFORE UPDATE ON {table} "
                "WHEN NEW.phone_status = 'powered_off' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        elif warehouse.dialect != "duckdb":
            conn.exec_driver_sql(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_refuse CHECK (phone_status <> 'powered_off')"
            )
        conn.commit()
    sandbox.reset()
    with pytest.raises(sa.exc.DBAPIError):
        refresh(warehouse, sandbox, table, store, RefreshOptions(page_size=10, free_batch_size=10))
    assert gc.get_threshold() == thresholds  # restored when the pass fails too
    assert sandbox.ledger()["requests"] == 0  # everything came from the store
    assert expected_status(phones[-1]) == "powered_off"
    written = [row["phone_status"] for row in table_rows(warehouse, table)]
    assert written[:40] == ["active"] * 40 and written[40] is None
    assert writers() == []


def test_a_refresh_that_writes_needs_the_store(warehouse: Warehouse, sandbox: SandboxServer) -> None:
    """Without the store a number met again after its batch was committed would be paid twice."""
    table = customers(warehouse, numbers(3))
    sandbox.reset()
    with warehouse.engine.connect() as conn:
        target = TargetTable.load(
            conn, table, key_columns="id", phone_column="phone", columns=StatusColumns()
        )
        with pytest.raises(PhoneStatusConfigError, match="needs the results store"):
            TableRefresh(conn, target, None, make_hook(sandbox), RevalidationPolicy(), SMALL)
        dry = TableRefresh(
            conn, target, None, make_hook(sandbox), RevalidationPolicy(), RefreshOptions(dry_run=True)
        )
        assert dry.run().lookups_to_pay == 3
    assert sandbox.ledger()["requests"] == 0  # a dry run sends nothing
