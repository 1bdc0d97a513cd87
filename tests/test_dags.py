"""The example DAGs in ``dags/``: they parse cleanly and fast, and run end to end through real
Airflow (``dag.test()``) against the vendor sandbox, on SQLite and PostgreSQL.

Expected statuses come from the sandbox's documented truth (``expected_status``), never from the
code under test; every cost assertion reads the sandbox's ledger.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.numbers import parse_number
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.sandbox.customers import expected_status, messy_phones
from airflow_provider_phonestatus.warehouse.engine import sqlalchemy_engine
from tests.airflow_run import test_dag_file
from tests.conftest import FAST_EXTRA
from tests.conftest import FAST_RATE as RATE
from tests.db import Warehouse, customers, table_rows
from tests.documented import true_status

pytestmark = pytest.mark.usefixtures("airflow_db")

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"
REVALIDATION = "phone_status_revalidation"
MANUAL = "phone_status_manual_check"
ON_NEW_ROWS = "phone_status_on_new_rows"
LOAD = "example_customer_load"
CHANGES = "phone_status_changes"
FILES = {
    REVALIDATION: "phone_status_revalidation.py",
    MANUAL: "phone_status_manual_check.py",
    ON_NEW_ROWS: "phone_status_on_new_rows.py",
    LOAD: "example_customer_load.py",
    CHANGES: "phone_status_changes.py",
}
PARSE_TIME_SETTINGS = (
    "PHONESTATUS_TABLES",
    "PHONESTATUS_WAREHOUSE_CONN_ID",
    "PHONESTATUS_CONN_ID",
    "PHONESTATUS_SCHEDULE",
    "PHONESTATUS_TIMEZONE",
    "PHONESTATUS_POOL",
    "PHONESTATUS_MANUAL_MAX_CHECKS",
    "PHONESTATUS_PARALLEL_TABLES",
)

SQL_WAREHOUSES = pytest.mark.parametrize("warehouse", ["sqlite", "postgres"], indirect=True)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def api_pool(airflow_db: str) -> str:
    """The pool, created the way the README tells users to."""
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run(
        [
            str(airflow),
            "pools",
            "set",
            "phonestatus_api",
            "1",
            "Phone status API: one key, one task at a time",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return "phonestatus_api"


@pytest.fixture
def dags_folder(monkeypatch: pytest.MonkeyPatch, api_pool: str) -> Iterator[Path]:
    """The example DAGs copied into Airflow's DAGs folder (``dag.test()`` serialises from there),
    which is put on ``sys.path`` as Airflow does for a bundle; removed afterwards."""
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    copies = [folder / p.name for p in (*DAGS_DIR.glob("*.py"), DAGS_DIR / ".airflowignore")]
    for copy in copies:
        shutil.copy(DAGS_DIR / copy.name, copy)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("phone_status_config", None)
    try:
        yield folder
    finally:
        for copy in copies:
            copy.unlink(missing_ok=True)
        sys.modules.pop("phone_status_config", None)


def dag_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A module of ``dags/`` (``phone_status_config`` or a DAG file), imported fresh."""
    monkeypatch.syspath_prepend(str(DAGS_DIR))
    sys.modules.pop("phone_status_config", None)
    if name == "phone_status_config":
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(f"dags_{name}", DAGS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def configure(monkeypatch: pytest.MonkeyPatch, wh: Warehouse, table: str, **variables: Any) -> None:
    """Point the DAGs at ``table`` in this test's warehouse, with side tables of its own."""
    monkeypatch.setenv(
        "PHONESTATUS_TABLES", json.dumps({table: {"key_column": "id", "phone_column": "phone"}})
    )
    monkeypatch.setenv("PHONESTATUS_WAREHOUSE_CONN_ID", wh.conn_id)
    wh._tables.extend([(None, f"{table}_{side}") for side in ("store", "runs", "lookups")])
    variables = {
        "results_table": f"{table}_store",
        "run_log_table": f"{table}_runs",
        "lookups_table": f"{table}_lookups",
        **variables,
    }
    for name, value in variables.items():
        set_variable(monkeypatch, name, value)


def set_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_VAR_PHONESTATUS_{name.upper()}", str(value))


def run_dag(folder: Path, dag_id: str, **kwargs: Any) -> Any:
    return test_dag_file(folder / FILES[dag_id], dag_id, **kwargs)


# -- database helpers ----------------------------------------------------------------------------


def set_phones(wh: Warehouse, name: str, phones: dict[int, str]) -> None:
    with wh.engine.begin() as conn:
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        for key, phone in phones.items():
            conn.execute(table.update().where(table.c.id == key).values(phone=phone))


def run_log(wh: Warehouse, name: str) -> list[dict[str, Any]]:
    with wh.engine.connect() as conn:
        table = sa.Table(f"{name}_runs", sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(table).order_by(table.c.started_at))
        return [{**r._mapping, "status_counts": json.loads(r.status_counts or "{}")} for r in rows]


def distinct_mobiles(phones: list[Any]) -> set[str]:
    return {p.national for p in map(parse_number, phones) if p.national}


# -- Airflow metadata helpers --------------------------------------------------------------------


def task_states(dag_id: str, run_id: str) -> dict[str, str | None]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            sa.select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
            )
        ).all()
    return {task_id: None if state is None else str(state) for task_id, state in rows}


def xcom(dag_id: str, run_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.execute(
            sa.select(XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
        ).scalar()
    return json.loads(value) if isinstance(value, str) else value


def rendered_fields(dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.execute(
            sa.select(RTIF.rendered_fields).where(
                RTIF.dag_id == dag_id, RTIF.run_id == run_id, RTIF.task_id == task_id
            )
        ).scalar()
    assert value is not None, f"no rendered fields for {task_id}"
    return dict(value)


def run_times(dag_id: str, run_id: str, task_id: str) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    """(the DAG run's start, the task's start, the task's end), as Airflow recorded them."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run_started = session.execute(
            sa.select(DagRun.start_date).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).scalar_one()
        task_started, task_ended = session.execute(
            sa.select(TaskInstance.start_date, TaskInstance.end_date).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        ).one()
    assert run_started and task_started and task_ended, (run_started, task_started, task_ended)
    return run_started, task_started, task_ended


def asset_events(uri: str, run_id: str) -> int:
    return len(asset_event_extras(uri, run_id))


def asset_event_extras(uri: str, run_id: str) -> list[dict[str, Any]]:
    """The ``extra`` of each event of the asset ``uri`` that the run ``run_id`` emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        extras = session.execute(
            sa.select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri, AssetEvent.source_run_id == run_id)
        ).scalars()
        return [json.loads(e) if isinstance(e, str) else dict(e or {}) for e in extras]


@contextlib.contextmanager
def started_by(dag_id: str, uri: str, source_run_id: str) -> Iterator[None]:
    """``dag.test()`` runs of ``dag_id`` start as the scheduler starts an asset-triggered run: the
    events of ``uri`` that ``source_run_id`` emitted are its consumed (triggering) events."""
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent, AssetModel

    create = dagrun_module.get_or_create_dagrun

    def with_events(*, dag: Any, session: Any, **kwargs: Any) -> Any:
        run = create(dag=dag, session=session, **kwargs)
        if dag.dag_id == dag_id:
            events = session.scalars(
                sa.select(AssetEvent)
                .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                .where(AssetModel.uri == uri, AssetEvent.source_run_id == source_run_id)
            ).all()
            assert events, f"no event of {uri} from {source_run_id}"
            run.consumed_asset_events.extend(events)
            session.commit()
        return run

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dagrun_module, "get_or_create_dagrun", with_events)  # dag.test() imports it late
        yield


def queued_for(dag_id: str, uri: str) -> bool:
    """An asset event is waiting to start a run of ``dag_id`` (the scheduler's queue)."""
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return bool(
            session.execute(
                sa.select(sa.func.count())
                .select_from(AssetDagRunQueue)
                .join(AssetModel, AssetModel.id == AssetDagRunQueue.asset_id)
                .where(AssetDagRunQueue.target_dag_id == dag_id, AssetModel.uri == uri)
            ).scalar_one()
        )


def unpause(dag_id: str) -> None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.execute(sa.update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=False))


# -- (a) parsing ---------------------------------------------------------------------------------


def dagbag(path: Path) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.2+
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[attr-defined,no-redef,unused-ignore]
    return DagBag(dag_folder=str(path))


def _cron(timetable: Any) -> tuple[str, str]:
    """(expression, zone name) of a cron trigger timetable, SDK (3.2+) or core (3.1) class."""
    expression = getattr(timetable, "expression", None) or timetable._expression
    zone = getattr(timetable, "timezone", None) or timetable._timezone
    return expression, getattr(zone, "name", str(zone))


def test_dagbag_loads_the_example_dags_with_their_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PARSE_TIME_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.syspath_prepend(str(DAGS_DIR))
    sys.modules.pop("phone_status_config", None)
    bag = dagbag(DAGS_DIR)
    assert bag.import_errors == {}
    assert set(bag.dags) == {REVALIDATION, MANUAL, ON_NEW_ROWS, LOAD, CHANGES}

    nightly = bag.dags[REVALIDATION]
    assert type(nightly.timetable).__name__ == "CronTriggerTimetable"
    assert _cron(nightly.timetable) == ("0 2 * * *", "Asia/Shanghai")
    assert (nightly.catchup, nightly.max_active_runs) == (False, 1)
    refresh = nightly.get_task("crm__customers.refresh")
    check = nightly.get_task("crm__customers.check_dead_share")
    assert refresh.pool == "phonestatus_api" and check.pool != "phonestatus_api"
    assert refresh.table == "crm.customers" and refresh.conn_id == "warehouse_default"
    assert refresh.phonestatus_conn_id == "phonestatus_default"
    assert "phonestatus_lookups_table" in refresh.lookups_table
    assert "phonestatus_budget" in refresh.max_checks and "phonestatus_budget" in refresh.time_budget
    assert refresh.outlets == []
    assert [a.uri for a in check.outlets] == ["phonestatus://crm/customers"]
    assert check.upstream_task_ids == {refresh.task_id}

    manual = bag.dags[MANUAL]
    assert type(manual.timetable).__name__ == "NullTimetable"  # schedule=None
    schema = {name: manual.params.get_param(name).schema for name in manual.params}
    assert set(schema) == {"table", "row_filter", "max_checks", "dry_run", "ignore_revalidation_ages"}
    assert schema["table"]["enum"] == ["crm.customers"]
    assert schema["row_filter"]["type"] == "object" and schema["row_filter"]["maxProperties"] == 10
    assert (schema["max_checks"]["type"], schema["max_checks"]["minimum"]) == ("integer", 0)
    assert schema["max_checks"]["maximum"] == 10_000
    assert schema["dry_run"]["type"] == schema["ignore_revalidation_ages"]["type"] == "boolean"
    assert manual.params["dry_run"] is True  # a trigger without changes only reports
    assert manual.get_task("check").pool == "phonestatus_api"

    on_new = bag.dags[ON_NEW_ROWS]
    assert type(on_new.timetable).__name__ == "AssetTriggeredTimetable"
    assert on_new.timetable.asset_condition.uri == "warehouse://crm/customers"
    assert (on_new.catchup, on_new.max_active_runs) == (False, 1)
    (task,) = on_new.tasks
    assert task.pool == "phonestatus_api"
    assert set(task.revalidate_after.values()) == {36_500}
    assert [a.uri for a in task.outlets] == ["phonestatus://crm/customers"]

    (load,) = bag.dags[LOAD].tasks
    assert [a.uri for a in load.outlets] == ["warehouse://crm/customers"]

    # Every refresh of the example DAGs keeps its lookup ledger where the Variable says.
    refreshes = [t for d in bag.dags.values() for t in d.tasks if hasattr(t, "lookups_table")]
    assert len(refreshes) == 3
    assert all(t.lookups_table == refresh.lookups_table for t in refreshes)

    changes = bag.dags[CHANGES]
    assert type(changes.timetable).__name__ == "AssetTriggeredTimetable"
    assert changes.timetable.asset_condition.uri == "phonestatus://crm/customers"
    assert (changes.catchup, changes.max_active_runs) == (False, 1)
    (suppress,) = changes.tasks
    assert suppress.task_id == "suppress_changes__crm__customers"
    assert [a.uri for a in suppress.inlets] == ["phonestatus://crm/customers"]
    assert suppress.pool != "phonestatus_api" and suppress.outlets == []


def test_parse_time_settings_reshape_the_dags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DAGS_DIR))
    sys.modules.pop("phone_status_config", None)
    monkeypatch.setenv("PHONESTATUS_SCHEDULE", "30 1 * * *")
    monkeypatch.setenv("PHONESTATUS_TIMEZONE", "Asia/Hong_Kong")
    monkeypatch.setenv("PHONESTATUS_POOL", "other_key")
    monkeypatch.setenv("PHONESTATUS_MANUAL_MAX_CHECKS", "500")
    tables = {
        "crm.customers": {"key_column": "id", "phone_column": "phone"},
        "leads": {"key_column": ["src", "id"], "phone_column": "mobile", "source_asset": "s3://lake/leads"},
    }
    monkeypatch.setenv("PHONESTATUS_TABLES", json.dumps(tables))
    bag = dagbag(DAGS_DIR)
    assert bag.import_errors == {}
    nightly = bag.dags[REVALIDATION]
    assert _cron(nightly.timetable) == ("30 1 * * *", "Asia/Hong_Kong")
    assert {t.task_id for t in nightly.tasks} == {
        "crm__customers.refresh",
        "crm__customers.check_dead_share",
        "leads.refresh",
        "leads.check_dead_share",
    }
    assert nightly.get_task("leads.refresh").key_column == ["src", "id"]
    assert {t.pool for t in nightly.tasks if t.task_id.endswith("refresh")} == {"other_key"}
    manual = bag.dags[MANUAL]
    assert manual.params.get_param("table").schema["enum"] == ["crm.customers", "leads"]
    assert manual.params.get_param("max_checks").schema["maximum"] == 500
    condition = bag.dags[ON_NEW_ROWS].timetable.asset_condition
    assert {a.uri for a in condition.objects} == {"warehouse://crm/customers", "s3://lake/leads"}
    changes = bag.dags[CHANGES]
    condition = changes.timetable.asset_condition
    assert {a.uri for a in condition.objects} == {"phonestatus://crm/customers", "phonestatus://leads/"}
    assert {t.task_id: [a.uri for a in t.inlets] for t in changes.tasks} == {
        "suppress_changes__crm__customers": ["phonestatus://crm/customers"],
        "suppress_changes__leads": ["phonestatus://leads/"],
    }

    # A typo in the parallel switch is an import error, not a silent "false".
    monkeypatch.setenv("PHONESTATUS_PARALLEL_TABLES", "ture")
    sys.modules.pop("phone_status_config", None)
    errors = dagbag(DAGS_DIR).import_errors
    assert any("PHONESTATUS_PARALLEL_TABLES" in e for e in errors.values()), errors
    monkeypatch.delenv("PHONESTATUS_PARALLEL_TABLES")

    # A broken allow-list is an import error that says what is wrong, not a silent default.
    monkeypatch.setenv("PHONESTATUS_TABLES", json.dumps({"crm.customers; drop table x": {}}))
    sys.modules.pop("phone_status_config", None)
    errors = dagbag(DAGS_DIR).import_errors
    assert len(errors) == len(FILES) and all("PHONESTATUS_TABLES" in e for e in errors.values())


PARSE_ALONE = """
import json, os, socket, sys
import airflow, airflow.sdk
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
sys.path.insert(0, sys.argv[1])
asked = []  # what a DAG file asked for while it was parsed: each is a query or a connection


def refuse(what):
    def refused(*args, **kwargs):
        asked.append(what)
        raise RuntimeError(f"{what} while parsing")
    return refused


for owner, name in [(airflow.sdk.Variable, "get"), (airflow.sdk.BaseHook, "get_connection"),
                    (getattr(airflow.sdk, "Connection", None), "get"), (socket.socket, "connect"),
                    (socket, "create_connection")]:
    if owner is not None and hasattr(owner, name):
        what = refuse(f"{owner.__name__}.{name}")
        setattr(owner, name, staticmethod(what) if isinstance(owner, type) else what)
for path in sys.argv[2:]:  # each file in a fork of this process: its own imports count
    read, write = os.pipe()
    if os.fork() == 0:
        bag = DagBag(dag_folder=path)
        result = {"file": os.path.basename(path), "errors": list(bag.import_errors),
                  "dags": list(bag.dags), "asked": asked}
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        print(pipe.read(), flush=True)
    os.wait()
"""


def test_each_dag_file_parses_alone_without_asking_for_variables_connections_or_the_network() -> None:
    """Each file parsed in a fresh fork of an interpreter that has imported Airflow only, where a
    Variable, a connection or a socket would fail the parse: settings that shape the DAGs come
    from the environment, so the DAG processor's parse loop never waits for a database or a
    vendor. (How long a parse takes is the machine's business, not a test's.)"""
    done = subprocess.run(
        [sys.executable, "-c", PARSE_ALONE, str(DAGS_DIR), *(str(DAGS_DIR / f) for f in FILES.values())],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in PARSE_TIME_SETTINGS},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["file"] for r in results] == list(FILES.values())
    assert all(r["errors"] == [] and len(r["dags"]) == 1 for r in results), results
    assert all(r["asked"] == [] for r in results), results


# -- pure parts ----------------------------------------------------------------------------------


def test_lookup_budget_fits_the_window_at_the_plan_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dag_module("phone_status_config", monkeypatch)
    start = dt.datetime(2026, 3, 1, 18, 0, tzinfo=dt.UTC)  # 02:00 in Shanghai
    assert cfg.lookup_budget(60, 24 * 60, start, start) == {"max_checks": 86_400, "time_budget": 86_400.0}
    assert cfg.lookup_budget(60, 240, start, start) == {"max_checks": 14_400, "time_budget": 14_400.0}
    # A task that starts an hour into the window gets the rest of it.
    later = start + dt.timedelta(hours=1)
    assert cfg.lookup_budget(60, 240, start, later) == {"max_checks": 10_800, "time_budget": 10_800.0}
    assert cfg.lookup_budget(60, 240, start, start + dt.timedelta(hours=5)) == {
        "max_checks": 0,
        "time_budget": 0.0,
    }


def test_dead_share_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    nightly = dag_module("phone_status_revalidation", monkeypatch)
    before = {"active": 70, "not_in_service": 10, "suspended": 10, "pending_cancellation": 10, "invalid": 500}
    same = {"active": 140, "not_in_service": 30, "suspended": 10, "unavailable": 20}  # 20% dead
    judge = nightly.judge
    limits = {"warn": 0.1, "fail": 0.25, "min_answers": 100}
    assert nightly.dead_share(before) == (30, 100)  # local labels are not answers
    assert judge(same, before, **limits)["verdict"] == "ok"  # 30% -> 20%: a drop is fine
    assert judge({"active": 60, "not_in_service": 45}, before, **limits)["verdict"] == "warn"  # +12.9 pp
    assert judge({"active": 40, "suspended": 60}, before, **limits)["verdict"] == "fail"  # +30 pp
    assert judge({"active": 5, "suspended": 60}, before, **limits)["verdict"] == "too_few"
    assert judge(same, None, **limits)["verdict"] == "no_baseline"
    assert judge({"unavailable": 100, "active": 100}, before, **limits)["share"] == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"table": "crm.secrets"}, "not in the allow-list"),
        ({"tabel": "crm.customers"}, "unknown settings"),
        ({"max_checks": True}, "max_checks must be a whole number"),
        ({"max_checks": 10_001}, "max_checks must be a whole number from 0 to 10000"),
        ({"max_checks": -1}, "max_checks"),
        ({"dry_run": "false"}, "dry_run must be true or false"),
        ({"row_filter": {"phone": {"op": "like", "value": "138%"}}}, "phone column is not allowed"),
        ({"row_filter": {"region; drop table x": "east"}}, "not a column name"),
        ({"row_filter": {"region": {"op": "regexp", "value": "."}}}, "unknown operator"),
        ({"row_filter": {"region": {"op": "in", "value": ["east", None]}}}, "null is not allowed"),
        ({"row_filter": {"region": {"op": "between", "value": [1]}}}, "exactly 2 values"),
        ({"row_filter": {"region": {"nested": {"x": 1}}}}, "a condition is"),
        ({"row_filter": {"region": ["east"]}}, "values must be text"),
        ({"row_filter": {"region": "x" * 201}}, "at most 200 characters"),
        ({"row_filter": {f"c{i}": 1 for i in range(11)}}, "at most 10"),
        ({"row_filter": "region = 'east'"}, "must be a JSON object"),
    ],
)
def test_the_task_checks_every_form_value_again(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], message: str
) -> None:
    for name in PARSE_TIME_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    manual = dag_module("phone_status_manual_check", monkeypatch)
    cfg = sys.modules["phone_status_config"]
    params = {"table": "crm.customers", "row_filter": {}, "max_checks": 10, "dry_run": True}
    params |= {"ignore_revalidation_ages": False, **change}
    with pytest.raises(manual.RequestError, match=message):
        manual.check_request(params, cfg.tables(), cfg.manual_max_checks_limit())


def test_the_task_resolves_a_valid_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PHONESTATUS_TABLES",
        json.dumps(
            {"crm.customers": {"key_column": "id", "phone_column": "phone", "filter_columns": ["region"]}}
        ),
    )
    manual = dag_module("phone_status_manual_check", monkeypatch)
    cfg = sys.modules["phone_status_config"]
    row_filter = {"region": {"op": "in", "value": ["east", "west"]}}
    params = {"table": "crm.customers", "row_filter": row_filter, "max_checks": 5.0, "dry_run": False}
    params["ignore_revalidation_ages"] = True
    request = manual.check_request(params, cfg.tables(), cfg.manual_max_checks_limit())
    assert request == {
        "table": "crm.customers",
        "key_column": "id",
        "phone_column": "phone",
        "row_filter": row_filter,
        "max_checks": 5,
        "dry_run": False,
        "ignore_revalidation_ages": True,
    }
    with pytest.raises(manual.RequestError, match=r"not a filter column of crm\.customers"):
        manual.check_request({**params, "row_filter": {"score": 1}}, cfg.tables(), 10)


def test_a_warehouse_connection_that_is_not_sql_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DAGs' own tasks reach the warehouse as the operator does, through ``sqlalchemy_engine``."""
    # A file-system connection: not a phonestatus one, whose hook this process's ProvidersManager
    # would then import with real form widgets (Airflow 3.1), unlike the UI's metadata service.
    conn = {"conn_type": "fs", "extra": {"path": "/tmp"}}
    monkeypatch.setenv("AIRFLOW_CONN_NOT_A_WAREHOUSE", json.dumps(conn))
    message = r"'not_a_warehouse' \(FSHook\) is not a SQL connection .*DbApiHook.*; use a SQL connection"
    with pytest.raises(PhoneStatusConfigError, match=message):
        sqlalchemy_engine("not_a_warehouse")


# -- (b) end to end ------------------------------------------------------------------------------


@SQL_WAREHOUSES
def test_nightly_revalidation_refreshes_the_table_and_its_check_warns_or_fails_on_a_jump(
    warehouse: Warehouse, vendor: SandboxServer, dags_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phones = list(messy_phones(300, 180, seed=21))
    name = customers(warehouse, phones)
    configure(monkeypatch, warehouse, name, dead_share_min_answers=10)
    refresh, check = f"{name}.refresh", f"{name}.check_dead_share"
    status_asset = f"phonestatus://{name}/"

    first = run_dag(dags_folder, REVALIDATION)
    assert str(first.state) == "success"
    rows = table_rows(warehouse, name)
    assert [r["phone_status"] for r in rows] == [expected_status(p) for p in phones]
    assert vendor.ledger()["billed"] == vendor.ledger()["requests"] == len(distinct_mobiles(phones))
    (logged,) = run_log(warehouse, name)
    assert (logged["dag_id"], logged["task_id"], logged["run_id"]) == (REVALIDATION, refresh, first.run_id)
    assert logged["state"] == "success"
    assert logged["status_counts"] == dict(Counter(expected_status(p) for p in phones))
    verdict = xcom(REVALIDATION, first.run_id, check)
    assert verdict["verdict"] == "no_baseline" and 0.15 < verdict["share"] < 0.45
    # The budget was computed when the task started: plan rate x what was left then of the
    # 240-minute window opened by the DAG run's start, however long the task waited to start.
    rendered = rendered_fields(REVALIDATION, first.run_id, refresh)
    run_started, task_started, task_ended = run_times(REVALIDATION, first.run_id, refresh)
    least, most = (max(0.0, 240 * 60 - (t - run_started).total_seconds()) for t in (task_ended, task_started))
    assert least - 0.001 <= float(rendered["time_budget"]) <= most + 0.001
    assert RATE / 60 * least - 1 <= int(rendered["max_checks"]) <= RATE / 60 * most
    # The check's asset event describes the refresh behind it, as the run log has it.
    (extra,) = asset_event_extras(status_asset, first.run_id)
    assert (extra["table"], extra["run_uid"]) == (name, logged["run_uid"])
    assert extra["paid_lookups"] == logged["paid_lookups"] == vendor.ledger()["billed"]
    assert (extra["status_changes"], extra["recycled_suspects"], extra["changes_by_transition"]) == (0, 0, {})
    assert extra["run_started_at"] < extra["run_ended_at"]
    # The lookup ledger is the table the Variable names: one row per paid lookup.
    with warehouse.engine.connect() as conn:
        ledger = sa.Table(f"{name}_lookups", sa.MetaData(), autoload_with=conn)
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger)).scalar_one() == len(
            distinct_mobiles(phones)
        )

    # A bad load: 30 rows now hold numbers that are cancelled (last digit 0: not_in_service).
    set_phones(warehouse, name, {i: f"1390000{i:03d}0" for i in range(30)})
    set_variable(monkeypatch, "dead_share_fail", 0.5)
    second = run_dag(dags_folder, REVALIDATION)
    assert str(second.state) == "failed"
    assert task_states(REVALIDATION, second.run_id) == {refresh: "success", check: "failed"}
    assert asset_events(status_asset, second.run_id) == 0  # downstream DAGs do not run on it
    assert [r["phone_status"] for r in table_rows(warehouse, name)[:30]] == ["not_in_service"] * 30

    # The next night another 30 rows go bad. The failed run is no baseline: the jump is measured
    # against the last successful DAG run, so it is seen again (a warning, with a higher limit).
    set_phones(warehouse, name, {i: f"1390001{i:03d}0" for i in range(30, 60)})
    set_variable(monkeypatch, "dead_share_fail", 0.95)
    third = run_dag(dags_folder, REVALIDATION)
    assert str(third.state) == "success"
    verdict = xcom(REVALIDATION, third.run_id, check)
    assert verdict["verdict"] == "warn" and verdict["baseline_run_id"] == first.run_id
    assert verdict["share"] == 1.0 and verdict["jump"] > 0.5
    assert asset_events(status_asset, third.run_id) == 1
    assert [r["state"] for r in run_log(warehouse, name)] == ["success"] * 3


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_parallel_nightly_maps_the_tables_on_the_shared_limit_and_emits_each_tables_asset(
    warehouse: Warehouse, vendor: SandboxServer, dags_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PHONESTATUS_PARALLEL_TABLES=true``: one mapped task group over the tables, no pool; it
    refuses to spend the key without the shared limit, and with it refreshes every table and
    emits each table's status asset through the alias."""
    phones = {seed: list(messy_phones(60, 40, seed=seed)) for seed in (61, 62)}
    names = [customers(warehouse, p) for p in phones.values()]
    configure(monkeypatch, warehouse, names[0])
    allow_list = {name: {"key_column": "id", "phone_column": "phone"} for name in names}
    monkeypatch.setenv("PHONESTATUS_TABLES", json.dumps(allow_list))
    monkeypatch.setenv("PHONESTATUS_PARALLEL_TABLES", "true")
    vendor.configure(api_key="parallel-" + os.urandom(4).hex())
    bag = dagbag(dags_folder)
    assert bag.import_errors == {}
    nightly = bag.dags[REVALIDATION]
    refresh, check = nightly.get_task("tables.refresh"), nightly.get_task("tables.check_dead_share")
    assert refresh.pool == "default_pool" and check.upstream_task_ids == {"tables.refresh"}
    assert [type(o).__name__ for o in check.outlets] == ["AssetAlias"]

    # Without the shared limit the tables would each take the whole plan: nothing is sent.
    conn = {"conn_type": "phonestatus", "host": vendor.url, "password": vendor.config.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_DEFAULT", json.dumps({**conn, "extra": FAST_EXTRA}))
    refused = run_dag(dags_folder, REVALIDATION)
    assert str(refused.state) == "failed" and vendor.ledger()["requests"] == 0

    shared = {**FAST_EXTRA, "rate_limit_redis_conn_id": "phonestatus_redis"}
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_DEFAULT", json.dumps({**conn, "extra": shared}))
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_REDIS", "redis://127.0.0.1:6379")
    done = run_dag(dags_folder, REVALIDATION)
    assert str(done.state) == "success"
    for name, table_phones in zip(names, phones.values(), strict=True):
        rows = table_rows(warehouse, name)
        assert [r["phone_status"] for r in rows] == [expected_status(p) for p in table_phones]
        (extra,) = asset_event_extras(f"phonestatus://{name}/", done.run_id)
        assert extra["table"] == name and extra["paid_lookups"] == len(distinct_mobiles(table_phones))
    assert (
        vendor.ledger()["billed"]
        == vendor.ledger()["requests"]
        == len(distinct_mobiles([p for table_phones in phones.values() for p in table_phones]))
    )


@SQL_WAREHOUSES
def test_manual_check_form_dry_run_real_run_and_rejected_requests(
    warehouse: Warehouse, vendor: SandboxServer, dags_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phones = list(messy_phones(60, 40, seed=8))
    name = warehouse.table_name("customers")
    regions = ["east" if i % 2 == 0 else "west" for i in range(len(phones))]
    warehouse.create_customers(
        name,
        rows=[
            {"id": i, "phone": p, "region": r} for i, (p, r) in enumerate(zip(phones, regions, strict=True))
        ],
        extra_columns=[sa.Column("region", sa.String(200))],
    )
    configure(monkeypatch, warehouse, name)
    east = [p for p, r in zip(phones, regions, strict=True) if r == "east"]

    # Refused when triggered: the table is not in the allow-list (the Param schema's enum).
    with pytest.raises(Exception, match=r"crm\.secrets") as refused:
        run_dag(dags_folder, MANUAL, run_conf={"table": "crm.secrets", "dry_run": False})
    assert type(refused.value).__name__ == "ParamValidationError"

    # Valid for the schema, refused by the task: filtering on the phone column probes numbers.
    probe = {"table": name, "row_filter": {"phone": {"op": "like", "value": "138%"}}, "dry_run": False}
    run = run_dag(dags_folder, MANUAL, run_conf=probe)
    assert str(run.state) == "failed"
    assert task_states(MANUAL, run.run_id) == {"validate_request": "failed", "check": "upstream_failed"}
    assert vendor.ledger()["requests"] == 0

    # A dry run (the form's default). Form text is data: neither Jinja nor SQL.
    conf = {
        "table": name,
        "max_checks": 5,
        "row_filter": {"region": {"op": "in", "value": ["east", "{{ 'west' }}", "' OR 1=1 --"]}},
    }
    run = run_dag(dags_folder, MANUAL, run_conf=conf)
    assert str(run.state) == "success"
    dry = xcom(MANUAL, run.run_id, "check")
    assert dry["dry_run"] is True and dry["due_rows"] == len(east)
    assert dry["distinct_numbers"] == len(distinct_mobiles(east)) and dry["lookups_to_pay"] == 5
    assert vendor.ledger()["requests"] == 0
    with warehouse.engine.connect() as conn:
        assert "phone_status" not in {c["name"] for c in sa.inspect(conn).get_columns(name)}

    conf = {"table": name, "row_filter": {"region": "east"}, "max_checks": 1000, "dry_run": False}
    run = run_dag(dags_folder, MANUAL, run_conf=conf)
    assert str(run.state) == "success"
    rows = table_rows(warehouse, name)
    assert [r["phone_status"] for r in rows] == [
        expected_status(p) if r == "east" else None for p, r in zip(phones, regions, strict=True)
    ]
    assert vendor.ledger()["billed"] == len(distinct_mobiles(east))
    (logged,) = run_log(warehouse, name)
    assert (logged["dag_id"], logged["task_id"], logged["state"]) == (MANUAL, "check", "success")
    assert logged["due_rows"] == len(east)


@SQL_WAREHOUSES
def test_new_and_changed_rows_are_checked_after_a_load(
    warehouse: Warehouse, vendor: SandboxServer, dags_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phones = list(messy_phones(120, 80, seed=33))
    name = customers(warehouse, phones)
    configure(monkeypatch, warehouse, name)
    task_id = f"check_new_rows__{name}"

    # At first every row is new.
    first = run_dag(dags_folder, ON_NEW_ROWS)
    assert str(first.state) == "success"
    assert [r["phone_status"] for r in table_rows(warehouse, name)] == [expected_status(p) for p in phones]
    billed = vendor.ledger()["billed"]
    assert billed == len(distinct_mobiles(phones))

    # Every status is now years old (due under the default ages) and one phone changes.
    old = dt.datetime(2020, 1, 1)
    with warehouse.engine.begin() as conn:
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        conn.execute(table.update().values(phone_checked_at=old))
    set_phones(warehouse, name, {0: "13700137008"})

    # The upstream load inserts rows and emits the asset this DAG is scheduled on.
    unpause(ON_NEW_ROWS)
    new = ["13700137001", "+86 137 0013 7005", "010-12345678", None]
    load = run_dag(dags_folder, LOAD, run_conf={"phones": new})
    assert str(load.state) == "success"
    assert asset_events(f"warehouse://{name}/", load.run_id) == 1
    assert queued_for(ON_NEW_ROWS, f"warehouse://{name}/")

    second = run_dag(dags_folder, ON_NEW_ROWS)
    assert str(second.state) == "success"
    summary = xcom(ON_NEW_ROWS, second.run_id, task_id)
    assert (summary["due_rows"], summary["rows_written"]) == (len(new) + 1, len(new) + 1)
    assert vendor.ledger()["billed"] == billed + 3  # 13700137001, ...005, ...008: one request each
    rows = table_rows(warehouse, name)
    assert [r["phone_status"] for r in rows] == [
        expected_status(p) for p in ["13700137008", *phones[1:], *new]
    ]
    assert all(r["phone_checked_at"] == old for r in rows[1 : len(phones)])  # old rows left alone
    assert asset_events(f"phonestatus://{name}/", second.run_id) == 1


@SQL_WAREHOUSES
def test_the_changes_dag_lists_what_the_refreshes_that_started_it_changed(
    warehouse: Warehouse, vendor: SandboxServer, dags_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nightly check's asset event starts ``phone_status_changes`` (as the scheduler would: the
    event is the run's triggering event); it reads the rows that changed in its window and lists
    the dead and recycled ones. Between the second and the first refresh the vendor's world moves."""
    numbers = [f"1390013{third}{third}0{last}" for third in (0, 1) for last in range(10)]
    name = customers(warehouse, numbers)
    configure(monkeypatch, warehouse, name, suppressions_table=f"{name}_suppressions")
    warehouse._tables.append((None, f"{name}_suppressions"))
    status_asset, task_id = f"phonestatus://{name}/", f"suppress_changes__{name}"

    def changes_run(nightly_run_id: str) -> dict[str, Any]:
        with started_by(CHANGES, status_asset, nightly_run_id):
            run = run_dag(dags_folder, CHANGES)
        assert task_states(CHANGES, run.run_id) == {task_id: "success"}
        counts = xcom(CHANGES, run.run_id, task_id)
        with warehouse.engine.connect() as conn:
            listed = sa.Table(f"{name}_suppressions", sa.MetaData(), autoload_with=conn)
            entries = conn.execute(sa.select(listed).where(listed.c.run_id == run.run_id)).mappings()
            counts["entries"] = {
                json.loads(e["row_key"])["id"]: (e["previous_status"], e["status"], e["reason"])
                for e in entries
            }
        return dict(counts)

    first = run_dag(dags_folder, REVALIDATION)
    assert str(first.state) == "success"
    found = changes_run(first.run_id)
    assert (found["since"], found["rows_changed"], found["entries"]) == (None, 0, {})  # the first event

    vendor.configure(world=1)
    with warehouse.engine.begin() as conn:  # every status is old: all rows are due, none is stored fresh
        for table in (name, f"{name}_store"):
            old = sa.Table(table, sa.MetaData(), autoload_with=conn)
            column = "phone_checked_at" if table == name else "checked_at"
            conn.execute(old.update().values({column: dt.datetime(2020, 1, 1)}))
    second = run_dag(dags_folder, REVALIDATION)
    assert str(second.state) == "success"
    moved = {
        i: (true_status(n, 0), true_status(n, 1))
        for i, n in enumerate(numbers)
        if true_status(n, 0) != true_status(n, 1)
    }
    recycled = {i for i, (old, new) in moved.items() if old == "not_in_service"}
    dead = {
        i for i, (_, new) in moved.items() if new in ("not_in_service", "suspended", "pending_cancellation")
    }
    assert (len(moved), len(recycled), len(dead)) == (7, 1, 3)
    (extra,) = asset_event_extras(status_asset, second.run_id)
    assert (extra["status_changes"], extra["recycled_suspects"]) == (len(moved), len(recycled))
    found = changes_run(second.run_id)
    assert found["since"] is not None and found["rows_changed"] == len(moved)
    assert found["entries"] == {
        i: (*moved[i], "recycled_suspect" if i in recycled else "dead") for i in recycled | dead
    }
    assert found["suppressed_by_reason"] == {"dead": len(dead), "recycled_suspect": len(recycled)}

    third = run_dag(dags_folder, REVALIDATION)
    assert str(third.state) == "success"
    again = changes_run(third.run_id)
    assert (again["since"], again["rows_changed"], again["entries"]) == (found["until"], 0, {})
