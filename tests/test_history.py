"""Status history through real Airflow: the lookup ledger, changes on the row, recycled suspects.

The world changes through the sandbox's documented switch (``world``); what every row must hold
is computed here from the sandbox's documented truth table, never from the code under test.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.sandbox import SandboxServer
from tests.db import Layout, Warehouse, customers
from tests.documented import LIVE, true_status
from tests.test_operator import run_task

pytestmark = pytest.mark.usefixtures("airflow_db")

#: When the rows and the store were last checked, before a run over aged rows.
LONG_AGO = dt.datetime(2024, 1, 1, 8, 0, 0)


def numbers() -> list[str]:
    """Every last digit, with a third-to-last digit 0 (changes in world 1) and 5 (does not)."""
    rng = random.Random(16)
    return [
        f"13{rng.randint(5, 9)}{rng.randrange(100_000):05d}{third}{rng.choice('0129')}{last}"
        for third in (0, 5)
        for last in range(10)
    ]


def spellings(nationals: list[str]) -> list[Any]:
    """Each number once, a few twice in another spelling (one number, one lookup), and junk."""
    return [*nationals, *(f"+86 {n[:3]} {n[3:7]} {n[7:]}" for n in nationals[::4]), "not a phone", None]


def national_of(phone: Any) -> str | None:
    digits = "".join(ch for ch in str(phone) if ch.isdigit())[-11:] if phone else ""
    return digits if len(digits) == 11 and phone != "not a phone" else None


def age_everything(wh: Warehouse, layout: Layout, name: str) -> None:
    """Move every check of the rows and of the store to :data:`LONG_AGO`: all of it is due."""
    with wh.engine.begin() as conn:
        status = layout.statuses(conn, name)
        conn.execute(
            status.update().where(status.c.phone_checked_at.is_not(None)).values(phone_checked_at=LONG_AGO)
        )
        store = sa.Table(f"{name}_store", sa.MetaData(), autoload_with=conn)
        conn.execute(store.update().values(checked_at=LONG_AGO))


def owned_rows(wh: Warehouse, table: str) -> list[dict[str, Any]]:
    with wh.engine.connect() as conn:
        t = sa.Table(table, sa.MetaData(), autoload_with=conn)
        return [dict(r._mapping) for r in conn.execute(sa.select(t))]


def flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def assert_ledger_matches_the_bill(wh: Warehouse, name: str, vendor: SandboxServer) -> list[dict[str, Any]]:
    """One ledger row per billed lookup: the same numbers with the same order numbers."""
    ledger = owned_rows(wh, f"{name}_lookups")
    billed = vendor.orders()
    assert sorted((r["national"], r["order_no"]) for r in ledger) == sorted(
        (o["number"], o["order_no"]) for o in billed
    )
    assert len({r["order_no"] for r in ledger}) == len(ledger)
    return ledger


def test_changes_are_seen_on_every_row_counted_and_billed_once(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer
) -> None:
    nationals = numbers()
    phones = spellings(nationals)
    name = customers(warehouse, phones)
    layout.register(name)

    state, first = run_task(**layout.kwargs(name))
    assert state == "success" and first is not None
    assert first["status_changes"] == first["recycled_suspects"] == 0
    assert_ledger_matches_the_bill(warehouse, name, vendor)
    rows = layout.rows(name)
    for row in rows:
        assert row["phone_previous_status"] is None and row["phone_status_changed_at"] is None
        assert flag(row["phone_recycled_suspect"]) is False  # checked, nothing known before

    vendor.configure(world=1)
    age_everything(warehouse, layout, name)
    state, second = run_task(**layout.kwargs(name))
    assert state == "success" and second is not None
    assert second["paid_lookups"] == len(nationals)

    rows = layout.rows(name)
    changes: Counter[str] = Counter()
    suspects = 0
    for row in rows:
        national = national_of(row["phone"])
        if national is None:
            assert row["phone_previous_status"] is None and row["phone_status_changed_at"] is None
            continue
        before, now = true_status(national, 0), true_status(national, 1)
        assert row["phone_status"] == now
        assert row["phone_previous_status"] == before
        changed = before != now
        assert row["phone_status_changed_at"] == (row["phone_checked_at"] if changed else None)
        suspect = before == "not_in_service" and now in LIVE
        assert flag(row["phone_recycled_suspect"]) is suspect
        if changed:
            changes[f"{before}->{now}"] += 1
            suspects += suspect
    assert changes["not_in_service->active"] and changes["active->not_in_service"]  # the test's reach
    assert (second["status_changes"], second["recycled_suspects"]) == (sum(changes.values()), suspects)
    assert second["changes_by_transition"] == dict(changes)
    runs = sorted(owned_rows(warehouse, f"{name}_runs"), key=lambda r: r["started_at"])
    assert [(r["status_changes"], r["recycled_suspects"]) for r in runs] == [
        (0, 0),
        (sum(changes.values()), suspects),
    ]

    ledger = assert_ledger_matches_the_bill(warehouse, name, vendor)
    second_run = [r for r in ledger if r["previous_status"] is not None]
    assert len(second_run) == len(nationals) == len(ledger) // 2
    for entry in second_run:
        assert entry["previous_status"] == true_status(entry["national"], 0)
        assert entry["status"] == true_status(entry["national"], 1)
        assert entry["previous_checked_at"] == LONG_AGO
    assert {r["run_uid"] for r in ledger} == {r["run_uid"] for r in runs}

    # The same world again: no change; a change seen before keeps its time.
    seen = {r["id"]: r["phone_status_changed_at"] for r in rows}
    age_everything(warehouse, layout, name)
    state, third = run_task(**layout.kwargs(name))
    assert state == "success" and third is not None and third["status_changes"] == 0
    for row in layout.rows(name):
        if (national := national_of(row["phone"])) is not None:
            assert row["phone_previous_status"] == true_status(national, 1)
            assert row["phone_status_changed_at"] == seen[row["id"]]
            assert flag(row["phone_recycled_suspect"]) is False


def test_tables_of_an_older_version_gain_the_new_columns_and_keep_their_rows(
    warehouse: Warehouse, vendor: SandboxServer
) -> None:
    """The store, run log and status columns as the version before the history made them."""
    stamp = sa.DateTime().with_variant(sa.dialects.mysql.DATETIME(fsp=6), "mysql", "mariadb")
    name = warehouse.table_name("customers")
    layout = Layout(warehouse, beside=False)
    layout.register(name)
    old_status = [
        sa.Column("phone_status", sa.String(32)),
        sa.Column("phone_status_code", sa.String(16)),
        sa.Column("phone_carrier", sa.String(32)),
        sa.Column("phone_ported", sa.Boolean),
        sa.Column("phone_checked_at", sa.DateTime),  # as the operator adds it
        sa.Column("phone_order_no", sa.String(64)),
        sa.Column("phone_checked_value", sa.String(64)),
    ]
    cancelled, live = "13800138000", "13800138001"  # the truth: not_in_service, active
    warehouse.create_customers(
        name,
        rows=[
            {
                "id": 1,
                "phone": cancelled,
                "phone_status": "active",
                "phone_checked_at": LONG_AGO,
                "phone_checked_value": cancelled,
                "phone_order_no": "OLD-1",
            },
            {
                "id": 2,
                "phone": live,
                "phone_status": "active",
                "phone_checked_at": LONG_AGO,
                "phone_checked_value": live,
                "phone_order_no": "OLD-2",
            },
        ],
        extra_columns=old_status,
    )
    warehouse.create_table(
        f"{name}_store",
        sa.Column("national", sa.String(11), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("vendor_code", sa.String(16)),
        sa.Column("carrier", sa.String(32)),
        sa.Column("carrier_raw", sa.String(64)),
        sa.Column("ported", sa.Boolean),
        sa.Column("order_no", sa.String(64)),
        sa.Column("message", sa.String(255)),
        sa.Column("checked_at", stamp, nullable=False),
        rows=[
            {"national": n, "status": "active", "order_no": f"OLD-{i}", "checked_at": LONG_AGO}
            for i, n in enumerate((cancelled, live), 1)
        ],
    )
    counters = (
        "due_rows",
        "distinct_numbers",
        "requests_sent",
        "paid_lookups",
        "from_store",
        "local_labels",
        "throttled",
        "retries",
        "failures",
        "rows_written",
    )
    warehouse.create_table(
        f"{name}_runs",
        sa.Column("run_uid", sa.String(36), primary_key=True),
        *(sa.Column(c, sa.String(250), nullable=False) for c in ("dag_id", "task_id", "run_id")),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("table_name", sa.String(250), nullable=False),
        sa.Column("started_at", stamp, nullable=False),
        sa.Column("ended_at", stamp),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.String(255)),
        *(sa.Column(c, sa.Integer, nullable=False) for c in counters),
        sa.Column("status_counts", sa.Text),
        rows=[
            {
                "run_uid": "old-run",
                "dag_id": "d",
                "task_id": "t",
                "run_id": "r",
                "map_index": -1,
                "try_number": 1,
                "table_name": name,
                "started_at": LONG_AGO,
                "ended_at": LONG_AGO,
                "state": "success",
                "status_counts": '{"active": 2}',
                **dict.fromkeys(counters, 2),
            }
        ],
    )

    state, summary = run_task(**layout.kwargs(name))

    assert state == "success" and summary is not None
    rows = {r["id"]: r for r in layout.rows(name)}
    assert rows[1]["phone_status"] == "not_in_service" and rows[1]["phone_previous_status"] == "active"
    # the same time, of which an old whole-second column (MariaDB's DATETIME) kept the seconds
    changed_at, checked_at = rows[1]["phone_status_changed_at"], rows[1]["phone_checked_at"]
    assert changed_at.replace(microsecond=checked_at.microsecond) == checked_at
    assert rows[2]["phone_previous_status"] == "active" and rows[2]["phone_status_changed_at"] is None
    assert summary["changes_by_transition"] == {"active->not_in_service": 1}
    runs = {r["run_uid"]: r for r in owned_rows(warehouse, f"{name}_runs")}
    old = runs.pop("old-run")  # kept as it was, the new counters 0 on it
    assert [old[c] for c in counters] == [2] * len(counters) and old["status_counts"] == '{"active": 2}'
    assert (old["status_changes"], old["recycled_suspects"], old["pruned_rows"]) == (0, 0, 0)
    assert [(r["status_changes"], r["paid_lookups"]) for r in runs.values()] == [(1, 2)]
    ledger = assert_ledger_matches_the_bill(warehouse, name, vendor)
    assert {(r["national"], r["previous_status"], r["previous_checked_at"]) for r in ledger} == {
        (cancelled, "active", LONG_AGO),
        (live, "active", LONG_AGO),
    }


def ledger_cli(*args: str) -> list[dict[str, str]]:
    """``phonestatus-ledger`` as a finance user runs it; its CSV rows."""
    command = [str(Path(sys.executable).parent / "phonestatus-ledger"), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return list(csv.DictReader(io.StringIO(done.stdout)))


def test_the_ledger_reconciles_with_the_bill_per_day_run_and_dag(
    warehouse: Warehouse, vendor: SandboxServer
) -> None:
    layout = Layout(warehouse, beside=False)
    first, second = customers(warehouse, numbers()[:12]), customers(warehouse, numbers()[6:])
    for name in (first, second):
        layout.register(name)
    shared = f"{first}_lookups"  # one ledger for both tables, as in a deployment
    for name in (first, second):
        state, _ = run_task(**layout.kwargs(name, lookups_table=shared, results_table=f"{first}_store"))
        assert state == "success"
    billed = vendor.orders()
    assert len(billed) == len(numbers())  # the second table's first 6 numbers came from the store

    by_run = ledger_cli("--conn-id", warehouse.conn_id, "--table", shared, "--by", "run")
    assert sorted(int(r["lookups"]) for r in by_run) == [len(numbers()) - 12, 12]
    assert {r["table_name"] for r in by_run} == {first, second}
    assert all(int(r["order_numbers"]) == int(r["lookups"]) for r in by_run)
    by_day = ledger_cli("--conn-id", warehouse.conn_id, "--table", shared, "--by", "day")
    assert [int(r["lookups"]) for r in by_day] == [len(billed)]
    assert by_day[0]["day"] == dt.datetime.now(dt.UTC).date().isoformat()
    by_dag = ledger_cli("--conn-id", warehouse.conn_id, "--table", shared, "--by", "dag")
    assert len(by_dag) == 2 and sum(int(r["lookups"]) for r in by_dag) == len(billed)
    today = dt.datetime.now(dt.UTC).date()
    lines = ledger_cli(
        "--conn-id", warehouse.conn_id, "--table", shared, "--by", "lookup", "--from", str(today)
    )
    assert sorted(r["order_no"] for r in lines) == sorted(o["order_no"] for o in billed)
    assert {r["national"] for r in lines} == {f"{o['number'][:3]}****{o['number'][-4:]}" for o in billed}
    tomorrow = today + dt.timedelta(days=1)
    assert ledger_cli("--conn-id", warehouse.conn_id, "--table", shared, "--from", str(tomorrow)) == []


def test_a_rejection_is_neither_a_previous_status_nor_a_change(
    warehouse: Warehouse, vendor: SandboxServer
) -> None:
    layout = Layout(warehouse, beside=False)
    number = "13800138001"  # active by the truth table
    first, second = customers(warehouse, [number]), customers(warehouse, [f"+86 {number}"])
    for name in (first, second):
        layout.register(name)
    store = {"results_table": f"{first}_store", "lookups_table": f"{first}_lookups"}
    assert run_task(**layout.kwargs(first, **store))[0] == "success"

    vendor.set_truth(number, {"code": 400, "message": "手机号格式错误"})  # the vendor refuses it now
    age_everything(warehouse, layout, first)
    state, refused = run_task(**layout.kwargs(first, **store))
    assert state == "success" and refused is not None and refused["failures"] == 1
    assert layout.rows(first)[0]["phone_status"] == "active"  # a refusal never replaces a status
    # Another table meets the number: the stored refusal answers it, without history.
    state, _ = run_task(**layout.kwargs(second, **store))
    row = layout.rows(second)[0]
    assert (row["phone_status"], row["phone_previous_status"], row["phone_status_changed_at"]) == (
        "rejected",
        None,
        None,
    )
    assert flag(row["phone_recycled_suspect"]) is False

    vendor.set_truth(number, None)  # answered again: compared with the last vendor status
    age_everything(warehouse, layout, first)
    state, again = run_task(**layout.kwargs(first, **store))
    assert state == "success" and again is not None and again["status_changes"] == 0
    row = layout.rows(first)[0]
    assert (row["phone_status"], row["phone_previous_status"], row["phone_status_changed_at"]) == (
        "active",
        "active",
        None,
    )
    ledger = owned_rows(warehouse, f"{first}_lookups")
    assert [r["previous_status"] for r in sorted(ledger, key=lambda r: r["checked_at"])] == [None, "active"]
