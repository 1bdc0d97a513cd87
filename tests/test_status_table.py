"""A status table beside a source the run may only read; what the run checks before paying.

Real PostgreSQL roles with real privileges, real SQLite, MariaDB and DuckDB, real Airflow; the
vendor is the sandbox over HTTP, whose ledger says what was sent.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.operators.phonestatus import PhoneStatusCheckOperator
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.sandbox.customers import expected_status, messy_phones
from airflow_provider_phonestatus.warehouse.access import portable_path
from airflow_provider_phonestatus.warehouse.lookups import lookups_table
from tests.db import Layout, Warehouse, customers
from tests.test_operator import distinct_mobiles, run_task

pytestmark = pytest.mark.usefixtures("airflow_db")

PG = "postgres://{user}@127.0.0.1:5432/{database}"


def execute(**kwargs: Any) -> dict[str, Any]:
    """Run the operator's ``execute`` in this process: a check that fails raises here, before the
    task would have needed its context."""
    operator = PhoneStatusCheckOperator(task_id=f"check_{secrets.token_hex(3)}", **kwargs)
    result: dict[str, Any] = operator.execute(context={})  # type: ignore[arg-type]
    return result


# --- PostgreSQL roles ---------------------------------------------------------------------------


class Roles:
    """A source schema owned by ``postgres``, and a login role that may only read it."""

    def __init__(self, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.engine = engine
        token = secrets.token_hex(4)
        self.role, self.source, self.own = f"reader_{token}", f"crm_{token}", f"phonestatus_{token}"
        self.conn_id = f"reader_{token}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{self.conn_id.upper()}", PG.format(user=self.role, database="test"))
        self.sql(
            f"CREATE ROLE {self.role} LOGIN",
            f"CREATE SCHEMA {self.source}",
            f"GRANT USAGE ON SCHEMA {self.source} TO {self.role}",
        )

    def sql(self, *statements: str) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def own_schema(self) -> str:
        """A schema the role owns: its status, store and run-log tables live there."""
        self.sql(f"CREATE SCHEMA {self.own} AUTHORIZATION {self.role}")
        return self.own

    def customers(self, phones: list[Any]) -> str:
        name = f"{self.source}.customers"
        self.sql(
            f"CREATE TABLE {name} (id integer PRIMARY KEY, name text, phone varchar(64))",
            f"GRANT SELECT ON {name} TO {self.role}",
        )
        table = sa.Table("customers", sa.MetaData(), autoload_with=self.engine, schema=self.source)
        with self.engine.begin() as conn:
            conn.execute(
                table.insert(), [{"id": i, "name": f"c{i}", "phone": p} for i, p in enumerate(phones)]
            )
        return name

    def kwargs(self, source: str, **kw: Any) -> dict[str, Any]:
        return {
            "conn_id": self.conn_id,
            "table": source,
            "key_column": "id",
            "phone_column": "phone",
            "status_table": f"{self.own}.customer_status",
            "results_table": f"{self.own}.phone_status_results",
            "run_log_table": f"{self.own}.phone_status_runs",
            "lookups_table": f"{self.own}.phone_status_lookups",
            **kw,
        }

    def drop(self) -> None:
        self.sql(
            f"DROP SCHEMA IF EXISTS {self.source} CASCADE",
            f"DROP SCHEMA IF EXISTS {self.own} CASCADE",
            f"DROP OWNED BY {self.role}",
            f"DROP ROLE {self.role}",
        )


@pytest.fixture
def roles(monkeypatch: pytest.MonkeyPatch) -> Iterator[Roles]:
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    made = Roles(engine, monkeypatch)
    try:
        yield made
    finally:
        made.drop()
        engine.dispose()


def source_state(engine: sa.Engine, name: str) -> tuple[list[Any], list[Any]]:
    """The source's definition (columns, types, constraints) and rows, to compare before and after."""
    schema, table = name.split(".")
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        columns = [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table, schema)]
        shape = [columns, inspector.get_pk_constraint(table, schema), inspector.get_indexes(table, schema)]
        rows = conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY id")).all()
    return shape, [tuple(r) for r in rows]


def test_a_select_only_role_keeps_a_status_table_fresh(roles: Roles, vendor: SandboxServer) -> None:
    phones = list(messy_phones(300, 180, seed=21))
    source = roles.customers(phones)
    roles.own_schema()
    before = source_state(roles.engine, source)

    state, summary = run_task(**roles.kwargs(source))

    assert state == "success" and summary is not None
    distinct = distinct_mobiles(phones)
    ledger = vendor.ledger()
    assert ledger["requests"] == ledger["billed"] == len(distinct)
    assert all(entry["requests"] == 1 for entry in ledger["by_number"].values())
    with roles.engine.connect() as conn:
        statuses = dict(
            conn.exec_driver_sql(f"SELECT id, phone_status FROM {roles.own}.customer_status").all()
        )
    assert [statuses.get(i) for i in range(len(phones))] == [expected_status(p) for p in phones]
    assert source_state(roles.engine, source) == before  # definition and rows untouched

    state, again = run_task(**roles.kwargs(source))
    assert state == "success" and again is not None and again["due_rows"] == 0
    assert vendor.ledger()["requests"] == len(distinct)


def test_in_place_on_a_table_it_may_only_read_names_the_grant(roles: Roles, vendor: SandboxServer) -> None:
    source = roles.customers(["13800138001", "13800138002"])
    roles.own_schema()
    roles.sql(*(f"ALTER TABLE {source} ADD COLUMN {c}" for c in _STATUS_DDL))  # the owner added them
    with pytest.raises(PhoneStatusConfigError) as info:
        execute(**roles.kwargs(source, status_table=None))
    message = str(info.value)
    assert f"cannot write {source}" in message and "permission denied" in message
    assert f"GRANT SELECT, UPDATE ON {source} TO {roles.role}" in message
    assert vendor.ledger()["requests"] == 0


def test_no_create_in_the_status_schema_names_the_grant(roles: Roles, vendor: SandboxServer) -> None:
    source = roles.customers(["13800138001"])
    roles.sql(f"CREATE SCHEMA {roles.own}", f"GRANT USAGE ON SCHEMA {roles.own} TO {roles.role}")
    with pytest.raises(PhoneStatusConfigError) as info:
        execute(**roles.kwargs(source))
    message = str(info.value)
    assert f"cannot create table '{roles.own}.customer_status'" in message
    assert f"GRANT CREATE ON SCHEMA {roles.own} TO {roles.role}" in message
    assert vendor.ledger()["requests"] == 0


def test_a_shared_store_it_may_only_read_names_the_grant(roles: Roles, vendor: SandboxServer) -> None:
    source = roles.customers(["13800138001"])
    schema = roles.own_schema()
    store = f"{schema}.shared_results"
    roles.sql(  # another team's store: the role reads it, cannot write it
        f"CREATE TABLE {store} (national varchar(11) PRIMARY KEY, status varchar(32) NOT NULL, "
        "vendor_code varchar(16), carrier varchar(32), carrier_raw varchar(64), ported boolean, "
        "order_no varchar(64), message varchar(255), checked_at timestamp NOT NULL, "
        "previous_status varchar(32), previous_checked_at timestamp, status_changed_at timestamp, "
        "recycled_suspect boolean)",
        f"GRANT SELECT ON {store} TO {roles.role}",
    )
    with pytest.raises(PhoneStatusConfigError) as info:
        execute(**roles.kwargs(source, results_table=store))
    assert f"GRANT SELECT, UPDATE, INSERT ON {store} TO {roles.role}" in str(info.value)
    assert vendor.ledger()["requests"] == 0


def test_a_shared_store_of_an_older_version_names_the_columns_to_add(
    roles: Roles, vendor: SandboxServer
) -> None:
    source = roles.customers(["13800138001"])
    schema = roles.own_schema()
    store = f"{schema}.older_results"
    roles.sql(  # the store as versions before the status history made it, owned by someone else
        f"CREATE TABLE {store} (national varchar(11) PRIMARY KEY, status varchar(32) NOT NULL, "
        "vendor_code varchar(16), carrier varchar(32), carrier_raw varchar(64), ported boolean, "
        "order_no varchar(64), message varchar(255), checked_at timestamp NOT NULL)",
        f"GRANT SELECT, INSERT, UPDATE ON {store} TO {roles.role}",
    )
    with pytest.raises(PhoneStatusConfigError) as info:
        execute(**roles.kwargs(source, results_table=store))
    message = str(info.value)
    assert "could not add column 'previous_status'" in message
    assert f"ALTER TABLE {store} ADD COLUMN previous_status VARCHAR(32)" in message
    assert vendor.ledger()["requests"] == 0


def test_an_append_only_ledger_is_all_the_run_needs_of_it(roles: Roles, vendor: SandboxServer) -> None:
    source = roles.customers(["13800138001", "13800138005"])
    roles.own_schema()
    ledger = f"{roles.source}.lookups"  # the finance team's ledger: the role may only append to it
    lookups_table(ledger).create(roles.engine)
    with pytest.raises(PhoneStatusConfigError) as info:
        execute(**roles.kwargs(source, lookups_table=ledger))
    assert f"GRANT INSERT ON {ledger} TO {roles.role}" in str(info.value)
    assert vendor.ledger()["requests"] == 0

    roles.sql(f"GRANT INSERT ON {ledger} TO {roles.role}")
    state, summary = run_task(**roles.kwargs(source, lookups_table=ledger))
    assert state == "success" and summary is not None and summary["paid_lookups"] == 2
    with roles.engine.connect() as conn:
        paid = conn.exec_driver_sql(f"SELECT national, order_no FROM {ledger}").all()
    assert sorted(tuple(r) for r in paid) == sorted((o["number"], o["order_no"]) for o in vendor.orders())


def test_no_temporary_tables_names_the_grant(roles: Roles, vendor: SandboxServer) -> None:
    source = roles.customers(["13800138001"])
    roles.own_schema()
    roles.sql("REVOKE TEMPORARY ON DATABASE test FROM PUBLIC")
    try:
        with pytest.raises(PhoneStatusConfigError) as info:
            execute(**roles.kwargs(source))
    finally:
        roles.sql("GRANT TEMPORARY ON DATABASE test TO PUBLIC")
    message = str(info.value)
    assert "cannot create temporary tables" in message
    assert f"GRANT TEMPORARY ON DATABASE test TO {roles.role}" in message
    assert vendor.ledger()["requests"] == 0


_STATUS_DDL = (
    "phone_status varchar(32)",
    "phone_status_code varchar(16)",
    "phone_carrier varchar(32)",
    "phone_ported boolean",
    "phone_checked_at timestamp",
    "phone_order_no varchar(64)",
    "phone_checked_value varchar(64)",
    "phone_previous_status varchar(32)",
    "phone_status_changed_at timestamp",
    "phone_recycled_suspect boolean",
)


# --- every warehouse ----------------------------------------------------------------------------


#: Status tables that do not fit, each made anew per test (a Column belongs to one Table).
WRONG_SHAPES: dict[str, tuple[Any, str]] = {
    "no key column": (
        lambda: [sa.Column("other", sa.Integer, primary_key=True)],
        "key column 'id' is missing",
    ),
    "key of another type": (lambda: [sa.Column("id", sa.String(20), primary_key=True)], "'id' is"),
    "key not unique": (
        lambda: [sa.Column("id", sa.Integer), sa.Column("phone_status", sa.String(32))],
        "not its primary key",
    ),
    "status column of another type": (
        lambda: [sa.Column("id", sa.Integer, primary_key=True), sa.Column("phone_checked_at", sa.String(32))],
        "phone_checked_at",
    ),
}


@pytest.mark.parametrize("shape", list(WRONG_SHAPES))
def test_a_status_table_of_the_wrong_shape_fails_before_any_request(
    warehouse: Warehouse, vendor: SandboxServer, shape: str
) -> None:
    columns, error = WRONG_SHAPES[shape]
    name = customers(warehouse, ["13800138001", "13800138002"])
    layout = Layout(warehouse, beside=True)
    layout.register(name)
    warehouse.create_table(f"{name}_status", *columns())
    with pytest.raises(PhoneStatusConfigError, match=error):
        execute(**layout.kwargs(name))
    assert vendor.ledger()["requests"] == 0


def test_a_source_whose_key_repeats_fails_before_any_request(
    warehouse: Warehouse, vendor: SandboxServer
) -> None:
    """A dbt-built table declares no key: the key is accepted when no two rows share it now."""
    name = warehouse.table_name("built")
    warehouse.create_table(
        name,
        sa.Column("id", sa.Integer),
        sa.Column("phone", sa.String(64)),
        rows=[{"id": 1, "phone": "13800138001"}, {"id": 2, "phone": "13800138002"}],
    )
    layout = Layout(warehouse, beside=True)
    layout.register(name)
    state, summary = run_task(**layout.kwargs(name))
    assert state == "success" and summary is not None and summary["paid_lookups"] == 2
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.Table(name, sa.MetaData(), autoload_with=conn).insert().values(id=2, phone="13900139009")
        )
    with pytest.raises(PhoneStatusConfigError, match="some rows share a key"):
        execute(**layout.kwargs(name))
    assert vendor.ledger()["requests"] == 2


#: Statements of the dialect-specific paths, none of which the portable path may send.
SPECIFIC = ("ON CONFLICT", "ON DUPLICATE", "UNNEST", "JSON_EACH", "FROM_JSON", "STRING_TO_ARRAY", "LATERAL")


@pytest.fixture
def statements(warehouse: Warehouse) -> Iterator[list[str]]:
    """Every SQL statement sent to the warehouse while the test runs (not Airflow's own database)."""
    sent: list[str] = []
    url = warehouse.engine.url

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (conn.engine.url.get_backend_name(), conn.engine.url.database) == (
            url.get_backend_name(),
            url.database,
        ):
            sent.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


def test_portable_sql_gets_every_answer_with_portable_statements_only(
    warehouse: Warehouse, layout: Layout, vendor: SandboxServer, statements: list[str]
) -> None:
    phones = list(messy_phones(200, 120, seed=31))
    name = customers(warehouse, phones)
    layout.register(name)
    state, summary = run_task(**layout.kwargs(name, portable_sql=True, batch_size=17))
    distinct = distinct_mobiles(phones)
    assert state == "success" and summary is not None
    assert summary["paid_lookups"] == vendor.ledger()["requests"] == len(distinct)
    assert [r["phone_status"] for r in layout.rows(name)] == [expected_status(p) for p in phones]
    state, again = run_task(**layout.kwargs(name, portable_sql=True))
    assert state == "success" and again is not None and again["due_rows"] == 0
    assert vendor.ledger()["requests"] == len(distinct)
    ours = [s for s in statements if name in s or "phonestatus_" in s]  # not the dialect's reflection
    used = {word for statement in ours for word in SPECIFIC if word in statement.upper()}
    assert len(ours) > 10 and used == set()


def test_untested_dialects_are_refused_by_name_unless_portable() -> None:
    for name in ("snowflake", "bigquery"):
        dialect = sa.dialects.registry.load(name)()  # the installed dialect; no server, no credentials
        with pytest.raises(PhoneStatusConfigError, match=f"{name!r} is not tested.*portable_sql=True"):
            portable_path(dialect, portable_sql=False)
        assert portable_path(dialect, portable_sql=True) is True
    for tested in ("sqlite://", "postgresql+psycopg://u@h/d", "mysql+mysqldb://u@h/d", "duckdb:///:memory:"):
        assert portable_path(sa.create_engine(tested).dialect, portable_sql=False) is False


def test_rows_that_leave_the_source_are_kept_unless_pruned(
    warehouse: Warehouse, vendor: SandboxServer
) -> None:
    name = customers(warehouse, ["13800138001", "13800138002", "13800138005"])
    layout = Layout(warehouse, beside=True)
    layout.register(name)
    assert run_task(**layout.kwargs(name))[0] == "success"
    with warehouse.engine.begin() as conn:
        source = sa.Table(name, sa.MetaData(), autoload_with=conn)
        conn.execute(source.delete().where(source.c.id == 1))

    def kept() -> list[int]:
        with warehouse.engine.connect() as conn:
            status = layout.statuses(conn, name)
            return sorted(conn.execute(sa.select(status.c.id)).scalars())

    state, summary = run_task(**layout.kwargs(name))
    assert state == "success" and summary is not None and summary["pruned_rows"] == 0
    assert kept() == [0, 1, 2]
    state, summary = run_task(**layout.kwargs(name, prune_status_table=True))
    assert state == "success" and summary is not None and summary["pruned_rows"] == 1
    assert kept() == [0, 2]
    assert vendor.ledger()["requests"] == 3


def test_hook_params_and_database_reach_the_hook_as_in_common_sql(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, vendor: SandboxServer
) -> None:
    """A connection to another database, overridden by ``database``; the driver by ``hook_params``."""
    conn = {"conn_type": "postgres", "host": "127.0.0.1", "login": "postgres", "schema": "postgres"}
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_DB", json.dumps(conn))
    wh = Warehouse(
        "postgres",
        sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        "other_db",
        tmp_path,
    )
    try:
        phones = ["13800138001", "13800138008"]
        name = customers(wh, phones)
        layout = Layout(wh, beside=True)
        layout.register(name)
        psycopg2 = {"sqlalchemy_scheme": "postgresql+psycopg2"}
        with pytest.raises(PhoneStatusConfigError, match="does not exist"):  # not in database postgres
            execute(**layout.kwargs(name, hook_params=psycopg2))
        with pytest.raises(PhoneStatusConfigError, match="no usable SQLAlchemy engine"):
            execute(**layout.kwargs(name, hook_params={"sqlalchemy_scheme": "postgresql+nosuchdriver"}))
        state, summary = run_task(**layout.kwargs(name, hook_params=psycopg2, database="test"))
        assert state == "success" and summary is not None and summary["paid_lookups"] == 2
        assert [r["phone_status"] for r in layout.rows(name)] == [expected_status(p) for p in phones]
    finally:
        wh.cleanup()


# SQLite's schemas are attached files, which the task's own engine would not attach
@pytest.mark.parametrize("warehouse", ["postgres", "mariadb", "duckdb"], indirect=True)
def test_status_store_and_run_log_in_a_schema_of_their_own(
    warehouse: Warehouse, vendor: SandboxServer
) -> None:
    phones = ["13800138001", "+86 138 0013 8005", "13800138001", "n/a"]
    name = customers(warehouse, phones)
    own = warehouse.schema("phonestatus")
    kwargs = {
        "conn_id": warehouse.conn_id,
        "table": name,
        "key_column": "id",
        "phone_column": "phone",
        "status_table": f"{own}.customer_status",
        "results_table": f"{own}.results",
        "run_log_table": f"{own}.runs",
    }
    state, summary = run_task(**kwargs)
    assert state == "success" and summary is not None and summary["paid_lookups"] == 2
    with warehouse.engine.connect() as conn:
        status = sa.Table("customer_status", sa.MetaData(), schema=own, autoload_with=conn)
        written = dict(conn.execute(sa.select(status.c.id, status.c.phone_status)).all())
        assert {c["name"] for c in sa.inspect(conn).get_columns(name)} == {"id", "phone"}  # source untouched
    assert [written[i] for i in range(len(phones))] == [expected_status(p) for p in phones]


def test_create_columns_off_shows_the_status_tables_ddl(warehouse: Warehouse, vendor: SandboxServer) -> None:
    name = customers(warehouse, ["13800138001"])
    layout = Layout(warehouse, beside=True)
    layout.register(name)
    with pytest.raises(PhoneStatusConfigError, match=r"create_columns is off; create it with: CREATE TABLE"):
        execute(**layout.kwargs(name, create_columns=False))
    assert not layout.has_status_columns(name) and vendor.ledger()["requests"] == 0
