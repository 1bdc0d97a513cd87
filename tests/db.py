"""Pytest plugin: the ``warehouse`` fixture, one real database per parameter.

Each test gets an Airflow connection id (``AIRFLOW_CONN_<ID>``) and the SQLAlchemy engine that
connection's own hook builds, so tests exercise what a DAG would. SQLite is a fresh file per test;
PostgreSQL and MariaDB are shared servers, so every test uses tables (and schemas) with names of
its own, dropped at teardown. A server that is down fails the test with the command to start it:
skipping would hide that two of three databases went untested.

Airflow is imported inside the fixture: this module may be loaded (``-p tests.db``) before
``conftest.py`` has pointed AIRFLOW_HOME at a throwaway directory.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

#: parameter -> (Airflow connection URI or None for a SQLite file, how to start the server)
SERVERS: dict[str, tuple[str | None, str]] = {
    "sqlite": (None, ""),
    "postgres": ("postgres://postgres@127.0.0.1:5432/test", "service postgresql start"),
    "mariadb": ("mysql://root@127.0.0.1:3306/test", "service mariadb start"),
    "duckdb": (None, ""),
}


@dataclass
class Warehouse:
    """One database for one test, with helpers that clean up after themselves."""

    name: str  #: the parameter: sqlite, postgres, mariadb or duckdb
    engine: sa.Engine
    conn_id: str
    tmp_path: Path
    _tables: list[tuple[str | None, str]] = field(default_factory=list)
    _schemas: list[str] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        """SQLAlchemy's dialect name: sqlite, postgresql or mysql (MariaDB)."""
        return self.engine.dialect.name

    def table_name(self, prefix: str = "t") -> str:
        """A name no other test uses (shared servers); the table is dropped at teardown."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        self._tables.append((None, name))
        return name

    def schema(self, prefix: str = "s") -> str:
        """A new empty schema (MariaDB: database; SQLite: attached file), dropped at teardown."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        if self.dialect == "sqlite":
            path = str(self.tmp_path / f"{name}.db")

            @sa.event.listens_for(self.engine, "connect")
            def _attach(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute(f'ATTACH DATABASE ? AS "{name}"', (path,))

            self.engine.dispose()  # pooled connections predate the listener
        else:
            with self.engine.begin() as conn:
                conn.execute(sa.schema.CreateSchema(name))
            self._schemas.append(name)
        return name

    def create_table(self, name: str, *columns: Any, rows: Sequence[Mapping[str, Any]] = ()) -> sa.Table:
        """Create ``name`` (``schema.table`` allowed) with ``columns`` and insert ``rows``."""
        schema, _, table_name = name.rpartition(".")
        table = sa.Table(table_name, sa.MetaData(), *columns, schema=schema or None)
        if (table.schema, table.name) not in self._tables:
            self._tables.append((table.schema, table.name))
        with self.engine.begin() as conn:
            table.create(conn)
            if rows:
                conn.execute(table.insert(), list(rows))
        return table

    def create_customers(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]] = (),
        key: str | Sequence[str | sa.Column[Any]] = "id",
        phone_type: sa.types.TypeEngine[Any] | None = None,
        extra_columns: Sequence[sa.Column[Any]] = (),
    ) -> sa.Table:
        """Integer key column(s) (or given Columns) as primary key, ``phone`` (default VARCHAR(64))."""
        keys = [key] if isinstance(key, str) else list(key)
        key_columns = [
            k if isinstance(k, sa.Column) else sa.Column(k, sa.Integer, autoincrement=False) for k in keys
        ]
        for column in key_columns:
            column.primary_key = True
            column.nullable = False
            column.autoincrement = False
        phone = sa.Column("phone", sa.String(64) if phone_type is None else phone_type)
        return self.create_table(name, *key_columns, phone, *extra_columns, rows=rows)

    def cleanup(self) -> None:
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":  # a test that leaked a transaction must not hang us
                conn.exec_driver_sql("SET lock_timeout = '10s'")
            elif self.dialect == "mysql":
                conn.exec_driver_sql("SET SESSION lock_wait_timeout = 10")
            for schema, table in reversed(self._tables):
                sa.Table(table, sa.MetaData(), schema=schema).drop(conn, checkfirst=True)
            for schema in self._schemas:
                conn.execute(sa.schema.DropSchema(schema, cascade=self.dialect in ("postgresql", "duckdb")))
            conn.commit()
        self.engine.dispose()


def customers(wh: Warehouse, phones: Sequence[Any], **kw: Any) -> str:
    """A new customers table (``id``, ``phone``) holding ``phones`` in order; returns its name."""
    name = wh.table_name("customers")
    wh.create_customers(name, rows=[{"id": i, "phone": p} for i, p in enumerate(phones)], **kw)
    return name


def table_rows(wh: Warehouse, name: str) -> list[dict[str, Any]]:
    """Every row of ``name`` as a dict, ordered by ``id``."""
    with wh.engine.connect() as conn:
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]


#: Parameters whose tests exercise a warehouse variant, not Airflow: `make test` runs them on the
#: newest Airflow only (``-m "not warehouse_variant"`` on the lowest), where the in-place layout
#: on SQLite, PostgreSQL and MariaDB already proves each Airflow version.
VARIANTS = {"warehouse": {"duckdb"}, "layout": {"status_table"}, "dbt_warehouse": {"postgres", "duckdb"}}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(params.get(name) in values for name, values in VARIANTS.items()):
            item.add_marker(pytest.mark.warehouse_variant)


def _file_connection(param: str, tmp_path: Path) -> str:
    """A fresh database file's connection: SQLite by URI, DuckDB by JSON (host = the file's path)."""
    if param == "duckdb":
        return json.dumps({"conn_type": "duckdb", "host": str(tmp_path / "warehouse.duckdb")})
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture(params=list(SERVERS))
def warehouse(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Warehouse]:
    """An empty corner of SQLite, PostgreSQL, MariaDB or DuckDB, reached through an Airflow connection."""
    from airflow.sdk import BaseHook  # here: after conftest has set AIRFLOW_HOME

    param: str = request.param
    uri, start = SERVERS[param]
    conn_id = f"phonestatus_test_{param}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri or _file_connection(param, tmp_path))
    # DuckDB: one process at a time may open the file; the tests' own connections close when
    # returned, so a task in another process (the kill tests) can open it
    engine_kwargs = {"poolclass": sa.pool.NullPool} if param == "duckdb" else {}
    hook = BaseHook.get_connection(conn_id).get_hook()
    engine: sa.Engine = hook.get_sqlalchemy_engine(engine_kwargs=engine_kwargs)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        down = None
    except sa.exc.OperationalError as exc:
        engine.dispose()
        down = f"{param} is not reachable at {uri}: {exc.orig}\nStart it with: {start}"
    if down:
        pytest.fail(down, pytrace=False)
    db = Warehouse(param, engine, conn_id, tmp_path)
    try:
        yield db
    finally:
        db.cleanup()


@dataclass
class Layout:
    """Where a scenario keeps its statuses: in the customers table itself, or in a status table
    beside it (``<name>_status``) while the customers table is only read."""

    wh: Warehouse
    beside: bool  #: a status table

    def kwargs(self, name: str, **kw: Any) -> dict[str, Any]:
        """The operator's arguments for table ``name``, its store and run log of its own."""
        base = {
            "conn_id": self.wh.conn_id,
            "table": name,
            "key_column": "id",
            "phone_column": "phone",
            "results_table": f"{name}_store",
            "run_log_table": f"{name}_runs",
            "lookups_table": f"{name}_lookups",
        }
        if self.beside:
            base["status_table"] = f"{name}_status"
        return {**base, **kw}

    def register(self, name: str) -> None:
        """Drop the store, run log, ledger and status table of ``name`` at teardown."""
        owned = ("store", "runs", "lookups", "status")
        self.wh._tables.extend((None, f"{name}_{suffix}") for suffix in owned)

    def statuses(self, conn: sa.Connection, name: str) -> sa.Table:
        """The table holding the statuses of ``name``'s rows."""
        return sa.Table(f"{name}_status" if self.beside else name, sa.MetaData(), autoload_with=conn)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """Every row of ``name`` with its status columns (None where it has none yet), by ``id``."""
        if not self.beside:
            return table_rows(self.wh, name)
        with self.wh.engine.connect() as conn:
            source = sa.Table(name, sa.MetaData(), autoload_with=conn)
            status = self.statuses(conn, name)
            extra = [c for c in status.c if c.name not in source.c]
            joined = source.outerjoin(status, source.c.id == status.c.id)
            query = sa.select(source, *extra).select_from(joined).order_by(source.c.id)
            return [dict(r._mapping) for r in conn.execute(query)]

    def has_status_columns(self, name: str) -> bool:
        with self.wh.engine.connect() as conn:
            if self.beside:
                return sa.inspect(conn).has_table(f"{name}_status")
            return "phone_status" in {c["name"] for c in sa.inspect(conn).get_columns(name)}


@pytest.fixture(params=["in_place", "status_table"])
def layout(request: pytest.FixtureRequest, warehouse: Warehouse) -> Layout:
    """The warehouse, with statuses in place or in a status table beside the customers table."""
    return Layout(warehouse, beside=request.param == "status_table")
