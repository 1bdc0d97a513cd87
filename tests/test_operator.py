"""PhoneStatusCheckOperator through real Airflow (``dag.test()``) on SQLite, PostgreSQL and MariaDB.

The vendor is the sandbox over real HTTP; every cost assertion reads its ledger. Expected statuses
come from the sandbox's documented truth table, never from the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.operators.phonestatus import PhoneStatusCheckOperator
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.sandbox.customers import expected_status, messy_phones
from airflow_provider_phonestatus.sandbox.faults import KINDS as FAULT_KINDS
from tests.airflow_run import test_dag_file
from tests.db import Layout, Warehouse, customers

pytestmark = pytest.mark.usefixtures("airflow_db")


DAG_FILE = """
import json
import pendulum
from airflow.sdk import DAG
from airflow_provider_phonestatus.operators.phonestatus import PhoneStatusCheckOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    PhoneStatusCheckOperator(task_id="check", **json.loads({kwargs!r}))
"""


def run_task(**kwargs: Any) -> tuple[str, dict[str, Any] | None]:
    """Run one PhoneStatusCheckOperator through ``dag.test()`` from a DAG file in the DAGs folder
    (Airflow 3.3's ``dag.test()`` serialises the DAG from its bundle); (state, XCom value)."""
    dag_id = f"phonestatus_test_{secrets.token_hex(4)}"
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    path.write_text(DAG_FILE.format(dag_id=dag_id, kwargs=json.dumps(kwargs)))
    try:
        run = test_dag_file(path, dag_id)
    finally:
        path.unlink()
    return str(run.state), _xcom(dag_id, run.run_id)


def _xcom(dag_id: str, run_id: str) -> dict[str, Any] | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            sa.select(XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == "check",
                XComModel.key == "return_value",
            )
        ).scalar()
    if row is None:
        return None
    value = json.loads(row) if isinstance(row, str) else row
    return value if isinstance(value, dict) else None


def distinct_mobiles(phones: list[Any]) -> set[str]:
    from airflow_provider_phonestatus.numbers import parse_number

    return {p.national for p in map(parse_number, phones) if p.national}


def test_messy_table_is_made_correct_complete_and_cheap(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer
) -> None:
    phones = list(messy_phones(600, 350, seed=11))
    name = customers(warehouse, phones)
    layout.register(name)

    state, summary = run_task(**layout.kwargs(name))
    assert state == "success"

    rows = layout.rows(name)
    assert [r["phone_status"] for r in rows] == [expected_status(p) for p in phones]
    distinct = distinct_mobiles(phones)
    ledger = vendor.ledger()
    assert ledger["requests"] == ledger["billed"] == len(distinct)  # one request per distinct number
    assert all(entry["requests"] == 1 for entry in ledger["by_number"].values())
    assert all(r["phone_checked_at"] is not None for r in rows)
    mobile_rows = [r for r in rows if r["phone_status"] not in ("invalid", "unsupported")]
    assert all(r["phone_order_no"] and r["phone_carrier"] for r in mobile_rows)
    assert summary is not None and summary["paid_lookups"] == len(distinct)
    assert summary["due_rows"] == len(phones) and summary["rows_written"] == len(phones)
    assert not re.search(r"\d{11}", json.dumps(summary))  # counts only in XCom

    # A second run right after a complete run sends nothing and writes nothing.
    state, again = run_task(**layout.kwargs(name))
    assert state == "success"
    assert vendor.ledger()["requests"] == len(distinct)
    assert again is not None and again["due_rows"] == 0 and again["requests_sent"] == 0


def test_store_answers_other_tables_for_free_and_changes_are_rechecked(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer
) -> None:
    first = customers(warehouse, ["13800138001", "13800138005", "+86 139 0013 8008"])
    layout.register(first)
    assert run_task(**layout.kwargs(first))[0] == "success"
    assert vendor.ledger()["requests"] == 3

    # Another table, same store: known numbers cost nothing, one new number costs one request.
    second = warehouse.table_name("leads")
    warehouse.create_customers(
        second, rows=[{"id": 1, "phone": "8613800138001"}, {"id": 2, "phone": "13700137002"}]
    )
    state, summary = run_task(**{**layout.kwargs(second), "results_table": f"{first}_store"})
    assert state == "success" and summary is not None
    assert (summary["from_store"], summary["paid_lookups"]) == (1, 1)
    assert vendor.ledger()["requests"] == 4

    # A changed phone value is due whatever its age; the others are not.
    with warehouse.engine.begin() as conn:
        table = sa.Table(first, sa.MetaData(), autoload_with=conn)
        conn.execute(table.update().where(table.c.id == 0).values(phone="13800138006"))
    state, summary = run_task(**layout.kwargs(first))
    assert summary is not None and summary["due_rows"] == 1 and summary["paid_lookups"] == 1
    assert layout.rows(first)[0]["phone_status"] == "unavailable"


def test_expired_statuses_are_due_and_a_failure_keeps_the_old_status(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer
) -> None:
    name = customers(warehouse, ["13800138001", "13800138008"])
    layout.register(name)
    assert run_task(**layout.kwargs(name))[0] == "success"
    old = dt.datetime(2020, 1, 1)
    with warehouse.engine.begin() as conn:  # both answers are now years old
        table = layout.statuses(conn, name)
        conn.execute(table.update().values(phone_checked_at=old))
        conn.execute(sa.delete(sa.Table(f"{name}_store", sa.MetaData(), autoload_with=conn)))
    vendor.inject("http_503", count=None, number="13800138001")  # this one never answers now
    state, summary = run_task(**layout.kwargs(name))
    assert state == "success" and summary is not None
    assert summary["due_rows"] == 2 and summary["failures"] == 1
    rows = layout.rows(name)
    assert rows[0]["phone_status"] == "active" and rows[0]["phone_checked_at"] == old  # kept, still due
    assert rows[1]["phone_status"] == "powered_off" and rows[1]["phone_checked_at"] > old


def test_a_vendor_answering_only_malformed_envelopes_never_overwrites_good_statuses(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer
) -> None:
    """Success envelopes without a usable data.result, in every shape, then nothing else: the
    table's expired good statuses all survive, and nothing is billed."""
    phones = [f"1380014{i:04d}" for i in range(60)]
    name = customers(warehouse, phones)
    layout.register(name)
    assert run_task(**layout.kwargs(name))[0] == "success"
    before = layout.rows(name)
    assert all(r["phone_status"] == expected_status(p) for r, p in zip(before, phones, strict=True))
    old = dt.datetime(2020, 1, 1)
    with warehouse.engine.begin() as conn:  # every answer is now years old, and the store forgot it
        table = layout.statuses(conn, name)
        conn.execute(table.update().values(phone_checked_at=old))
        conn.execute(sa.delete(sa.Table(f"{name}_store", sa.MetaData(), autoload_with=conn)))
    billed = vendor.ledger()["billed"]
    shapes = [k for k in FAULT_KINDS if k.startswith("malformed_")]
    for shape in shapes:
        vendor.inject(shape, count=3)
    vendor.inject(shapes[0], count=None)

    state, _ = run_task(**layout.kwargs(name))

    assert state == "failed"  # many numbers in a row got no status: the batch stopped
    after = layout.rows(name)
    assert [(r["phone_status"], r["phone_order_no"]) for r in after] == [
        (r["phone_status"], r["phone_order_no"]) for r in before
    ]
    assert all(r["phone_checked_at"] == old for r in after)  # kept, and still due
    assert vendor.ledger()["billed"] == billed
    with warehouse.engine.connect() as conn:
        store = sa.Table(f"{name}_store", sa.MetaData(), autoload_with=conn)
        assert conn.execute(sa.select(sa.func.count()).select_from(store)).scalar() == 0


@pytest.mark.parametrize(("fault", "status"), [("bad_key", None), ("http_500", 404)])
def test_a_cause_no_retry_can_fix_fails_the_task_without_airflow_retries(
    warehouse: Warehouse, vendor: SandboxServer, fault: str, status: int | None
) -> None:
    """A refused key (or a wrong URL) fails the task at once: retries=2 would ask three times."""
    layout = Layout(warehouse, beside=False)  # the vendor's refusal, whichever layout
    name = customers(warehouse, [f"1380015{i:04d}" for i in range(20)])
    layout.register(name)
    vendor.inject(fault, count=None, status=status)
    state, _ = run_task(**layout.kwargs(name, retries=2, retry_delay=0))
    assert state == "failed"
    assert [(t, error.split(":")[0]) for t, error in _tries(warehouse, name)] == [
        (1, "api_key_refused" if fault == "bad_key" else "endpoint_not_found")
    ]
    assert vendor.ledger()["requests"] <= 4  # what was in flight when the first refusal came


def _tries(warehouse: Warehouse, name: str) -> list[tuple[int, str]]:
    """(try number, error) of each run in the run log, in order of tries."""
    with warehouse.engine.connect() as conn:
        log_table = sa.Table(f"{name}_runs", sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(log_table.c.try_number, log_table.c.error)).all()
    return sorted((int(r[0]), r[1] or "") for r in rows)


def test_a_passing_outage_is_retried_by_airflow(warehouse: Warehouse, vendor: SandboxServer) -> None:
    """The control: a vendor outage (every answer a 503) stays retryable, so the task runs again."""
    layout = Layout(warehouse, beside=False)
    name = customers(warehouse, [f"1380016{i:04d}" for i in range(20)])
    layout.register(name)
    vendor.inject("http_503", count=None)
    state, _ = run_task(**layout.kwargs(name, retries=1, retry_delay=0))
    assert state == "failed"
    assert [(t, error.split(":")[0]) for t, error in _tries(warehouse, name)] == [
        (1, "vendor_unavailable"),
        (2, "vendor_unavailable"),
    ]


def test_exhausted_balance_fails_the_task_with_its_cause_and_keeps_what_was_answered(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer
) -> None:
    phones = [f"1380013{i:04d}" for i in range(1, 61)]
    name = customers(warehouse, phones)
    layout.register(name)
    vendor.configure(balance=25)
    state, _ = run_task(**layout.kwargs(name, batch_size=10))
    assert state == "failed"
    assert vendor.ledger()["billed"] == 25
    written = [r for r in layout.rows(name) if r["phone_status"] is not None]
    assert len(written) == 25  # every paid answer was saved
    with warehouse.engine.connect() as conn:
        log_table = sa.Table(f"{name}_runs", sa.MetaData(), autoload_with=conn)
        runs = conn.execute(sa.select(log_table.c.state, log_table.c.error, log_table.c.paid_lookups)).all()
    assert [(r[0], r[2]) for r in runs] == [("failed", 25)] and "balance_exhausted" in runs[0][1]
    # The rerun pays only for what is left.
    vendor.configure(balance=None)
    assert run_task(**layout.kwargs(name))[0] == "success"
    assert vendor.ledger()["billed"] == 60


def test_max_checks_and_dry_run(warehouse: Warehouse, layout: Layout, vendor: SandboxServer) -> None:
    phones = [f"1390013{i:04d}" for i in range(1, 41)] + ["n/a", None, "010-12345678"]
    name = customers(warehouse, phones)
    layout.register(name)

    state, dry = run_task(**layout.kwargs(name, dry_run=True, max_checks=30))
    assert state == "success" and dry is not None
    assert (dry["due_rows"], dry["distinct_numbers"], dry["lookups_to_pay"]) == (43, 40, 30)
    assert dry["seconds_at_plan_rate"] == pytest.approx(30 * 60 / 600000)
    assert vendor.ledger()["requests"] == 0
    assert not layout.has_status_columns(name)  # a dry run writes nothing, not even columns

    state, capped = run_task(**layout.kwargs(name, max_checks=30))
    assert state == "success" and capped is not None
    assert vendor.ledger()["requests"] == 30 and capped["deferred_rows"] == 10
    state, rest = run_task(**layout.kwargs(name, max_checks=30))
    assert rest is not None and rest["paid_lookups"] == 10 and rest["due_rows"] == 10
    assert Counter(r["phone_status"] for r in layout.rows(name))[None] == 0


def test_row_filter_values_are_bound_and_names_checked(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer
) -> None:
    name = warehouse.table_name("customers")
    warehouse.create_customers(
        name,
        rows=[
            {"id": 1, "phone": "13800138001", "region": "east"},
            {"id": 2, "phone": "13800138002", "region": "west"},
        ],
        extra_columns=[sa.Column("region", sa.String(16))],
    )
    layout.register(name)
    state, summary = run_task(**layout.kwargs(name, row_filter={"region": "' OR 1=1 --"}))
    assert state == "success" and summary is not None and summary["due_rows"] == 0
    state, summary = run_task(**layout.kwargs(name, row_filter=[["region", "=", "east"]]))
    assert summary is not None and summary["due_rows"] == 1
    assert [r["phone_status"] for r in layout.rows(name)] == ["active", None]
    state, _ = run_task(**layout.kwargs(name, row_filter={"region; DROP TABLE x": "east"}))
    assert state == "failed"


def test_a_table_that_does_not_exist_fails_clearly(warehouse: Warehouse, vendor: SandboxServer) -> None:
    state, _ = run_task(
        conn_id=warehouse.conn_id, table="no_such_table_x", key_column="id", phone_column="phone"
    )
    assert state == "failed"
    assert vendor.ledger()["requests"] == 0


RUNNER = """
import sys
from pathlib import Path
from tests.airflow_run import test_dag_file
run = test_dag_file(Path(sys.argv[1]), sys.argv[2])
print("STATE", run.state, flush=True)
"""


def start_task_process(**kwargs: Any) -> tuple[subprocess.Popen[str], Path]:
    """The same task in a worker process of its own, so the test can kill it."""
    dag_id = f"phonestatus_kill_{secrets.token_hex(4)}"
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    path.write_text(DAG_FILE.format(dag_id=dag_id, kwargs=json.dumps(kwargs)))
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(path), dag_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    return proc, path


def wait_for_billed(vendor: SandboxServer, proc: subprocess.Popen[str], at_least: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        billed = int(vendor.ledger()["billed"])
        if billed >= at_least:
            return billed
        assert proc.poll() is None, (proc.stdout.read() if proc.stdout else "")[-3000:]
        time.sleep(0.02)
    raise AssertionError("the task did not get going")


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_killed_worker_loses_at_most_one_batch_and_the_rerun_pays_for_nothing_saved(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer, signal_name: str
) -> None:
    phones = list(messy_phones(700, 500, seed=5))
    distinct = distinct_mobiles(phones)
    name = customers(warehouse, phones)
    layout.register(name)
    vendor.configure(latency_ms=20)
    batch_size, concurrency = 25, 4
    conn = json.loads(os.environ["AIRFLOW_CONN_PHONESTATUS_DEFAULT"])
    conn["extra"]["max_concurrency"] = concurrency
    os.environ["AIRFLOW_CONN_PHONESTATUS_DEFAULT"] = json.dumps(conn)  # monkeypatch restores it
    kwargs = layout.kwargs(name, batch_size=batch_size, flush_interval=60)

    proc, path = start_task_process(**kwargs)
    try:
        wait_for_billed(vendor, proc, at_least=len(distinct) // 3)
        proc.send_signal(getattr(signal, signal_name))
        output, _ = proc.communicate(timeout=60)

    finally:
        if proc.poll() is None:
            proc.kill()
        path.unlink()
    billed_first = int(vendor.ledger()["billed"])
    assert billed_first < len(distinct), "the first run finished before it was killed"
    if signal_name == "SIGTERM":
        assert "STATE failed" in output  # on_kill: no new lookups, answers saved, task failed

    state, summary = run_task(**kwargs)
    assert state == "success" and summary is not None
    rows = layout.rows(name)
    assert [r["phone_status"] for r in rows] == [expected_status(p) for p in phones]
    ledger = vendor.ledger()
    assert set(ledger["by_number"]) == distinct
    paid_twice = sum(1 for entry in ledger["by_number"].values() if entry["billed"] > 1)
    if signal_name == "SIGTERM":
        assert paid_twice == 0  # everything in flight was answered and saved before the task ended
    else:
        assert paid_twice <= batch_size + concurrency  # lost: one unflushed batch and what was in flight


def test_openlineage_column_lineage_when_the_provider_is_installed(warehouse: Warehouse) -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="lineage is silent without the provider")
    op = PhoneStatusCheckOperator(
        task_id="t", conn_id=warehouse.conn_id, table="crm.customers", key_column="id", phone_column="mobile"
    )
    lineage = op.get_openlineage_facets_on_complete(None)
    (source,) = lineage.inputs
    target, store = lineage.outputs
    expected_scheme = {
        "sqlite": "sqlite://",
        "postgresql": "postgres://127.0.0.1:5432",
        "mysql": "mysql://127.0.0.1:3306",
    }
    assert source.namespace.startswith(expected_scheme[warehouse.dialect])
    assert source.name.endswith("crm.customers") and (target.namespace, target.name) == (
        source.namespace,
        source.name,
    )
    assert store.name.endswith("phone_status_results")
    fields = target.facets["columnLineage"].fields
    assert set(fields) == {
        "phone_status",
        "phone_status_code",
        "phone_carrier",
        "phone_ported",
        "phone_checked_at",
        "phone_order_no",
        "phone_checked_value",
        "phone_previous_status",
        "phone_status_changed_at",
        "phone_recycled_suspect",
    }
    assert all([f.field for f in spec.inputFields] == ["mobile"] for spec in fields.values())


def test_openlineage_is_silent_without_the_provider(warehouse: Warehouse) -> None:
    try:
        import airflow.providers.openlineage  # noqa: F401
    except ImportError:
        op = PhoneStatusCheckOperator(
            task_id="t", conn_id=warehouse.conn_id, table="c", key_column="id", phone_column="p"
        )
        assert op.get_openlineage_facets_on_complete(None) is None
    else:
        pytest.skip("the OpenLineage provider is installed here; the lowest-Airflow environment runs this")


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("batch_size", "500"),
        ("flush_interval", "1s"),
        ("flush_interval", -1),
        ("flush_interval", float("nan")),
        ("progress_interval", True),
        ("create_columns", "maybe"),
    ],
)
def test_a_typo_in_a_tuning_argument_fails_when_the_dag_is_parsed(argument: str, value: object) -> None:
    kwargs: dict[str, Any] = {"conn_id": "w", "table": "t", "key_column": "id", "phone_column": "phone"}
    with pytest.raises(PhoneStatusConfigError, match=argument):
        PhoneStatusCheckOperator(task_id="check", **kwargs, **{argument: value})
