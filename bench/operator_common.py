"""Shared pieces of the operator benchmarks (``bench/operator_*.py``): databases, tables, runs.

* :func:`database` gives a SQLite file, the local PostgreSQL or a DuckDB file through an Airflow
  connection, so the engine is the one the operator gets (``hook.get_sqlalchemy_engine()``);
  every table made through it is named ``bench_<what>_<hex>`` and dropped on exit.
* :func:`run_refresh` runs a refresh the way ``PhoneStatusCheckOperator.execute`` does:
  ``portable_path``, then one connection: ``TargetTable.load`` (adds the status columns, or
  creates the status table), ``ResultStore.ensure``, ``RunLog.ensure``, ``check_access``, a
  run-log row, ``TableRefresh(...).run()`` with the operator's default options, then the run-log
  row completed. Only Airflow's task context is absent.
* :mod:`bench.naive` holds the baseline, :mod:`bench.phases` the CPU split of a refresh.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import functools
import json
import os
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_provider_phonestatus.numbers import mask_number, parse_number
from airflow_provider_phonestatus.sandbox.customers import expected_status, messy_phones
from airflow_provider_phonestatus.sandbox.truth import expected
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from airflow_provider_phonestatus.vocabulary import PhoneStatusResult
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from bench.common import SANDBOX_KEY, Result, say

if TYPE_CHECKING:
    from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
    from airflow_provider_phonestatus.refresh import RefreshOptions
    from airflow_provider_phonestatus.summary import RunSummary

PG_URI = "postgres://postgres@127.0.0.1:5432/test"
#: The status columns' default names, in the order the baseline writes them.
#: The seven status columns a table gets without its history (the first run adds the other three).
STATUS_COLUMNS = tuple(
    StatusColumns().names()[role]
    for role in ("status", "code", "carrier", "ported", "checked_at", "order_no", "checked_value")
)
UNLIMITED_PER_MINUTE = 100_000_000  #: "hook plan unlimited": the pacer never waits
CHUNK = 50_000  #: rows per executemany / store save while building tables


#: Every database kind :func:`database` makes; :func:`kinds` is the older benchmarks' subset.
ALL_KINDS = ("sqlite", "postgres", "duckdb")


@dataclass
class Db:
    """One database for the benchmarks; tables made with :meth:`name` are dropped on exit."""

    kind: str  #: one of :data:`ALL_KINDS`
    engine: sa.Engine
    conn_id: str
    uri: str
    tables: list[str] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def name(self, what: str) -> str:
        table = f"bench_{what}_{secrets.token_hex(4)}"
        self.tables.append(table)
        return table

    def drop(self, table: str) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            conn.commit()
        if table in self.tables:
            self.tables.remove(table)


@contextmanager
def database(kind: str) -> Iterator[Db]:
    """A SQLite or DuckDB file (in a fresh temporary directory) or the local PostgreSQL, through
    the engine Airflow's own connection hook builds; drops every table named through it on exit.

    DuckDB's engine has no pool (``NullPool``, as in the tests): DuckDB lets one process at a
    time open a file, so no connection may outlive its use.
    """
    from airflow.sdk import BaseHook

    if kind not in ALL_KINDS:
        raise ValueError(f"unknown database kind {kind!r}; known: {ALL_KINDS}")
    tmp = tempfile.mkdtemp(prefix="phonestatus-bench-db-")
    uri = {
        "sqlite": f"sqlite:///{tmp}/warehouse.db",
        "postgres": PG_URI,
        "duckdb": json.dumps({"conn_type": "duckdb", "host": f"{tmp}/warehouse.duckdb"}),
    }[kind]
    conn_id = f"phonestatus_bench_{kind}_{secrets.token_hex(3)}"
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    os.environ[variable] = uri
    engine_kwargs = {"poolclass": sa.pool.NullPool} if kind == "duckdb" else {}
    hook = BaseHook.get_connection(conn_id).get_hook()  # type: ignore[no-untyped-call]
    engine: sa.Engine = hook.get_sqlalchemy_engine(engine_kwargs=engine_kwargs)
    db = Db(kind, engine, conn_id, uri)
    try:
        yield db
    finally:
        try:
            for table in list(db.tables):
                db.drop(table)
        finally:
            engine.dispose()
            os.environ.pop(variable, None)
            shutil.rmtree(tmp, ignore_errors=True)


_SHARED: dict[str, tuple[Db, Any]] = {}
_STORES: dict[tuple[str, int, int], tuple[str, float]] = {}


def shared(kind: str) -> Db:
    """:func:`database` kept open until the process exits, so benchmarks can share a prefilled
    results store (it is only read when every number is fresh); its tables are dropped at exit."""
    if kind not in _SHARED:
        manager = database(kind)
        _SHARED[kind] = (manager.__enter__(), manager)
        atexit.register(manager.__exit__, None, None, None)
    return _SHARED[kind][0]


def shared_store(db: Db, rows: int, distinct: int) -> tuple[str, float]:
    """A results store holding a fresh answer for every number of ``phones(rows, distinct)`` (and
    so of any smaller table of the same seed): its name and the seconds the prefill took (0 when
    it was made by an earlier benchmark of this run)."""
    key = (db.kind, rows, distinct)
    if key not in _STORES:
        name = db.name("store")
        seconds = prefill_store(db, name, nationals_of(rows, distinct))
        _STORES[key] = (name, seconds)
        return name, seconds
    return _STORES[key][0], 0.0


def kinds(quick: bool) -> tuple[str, ...]:
    """The databases the in-place warehouse benchmarks run on (``operator_status_table`` runs on
    :data:`ALL_KINDS`: DuckDB here would only lengthen those runs)."""
    return ("sqlite", "postgres")


def load_note() -> str:
    """The machine's load average: the figures are wall-clock, and other work shares the cores."""
    try:
        with open("/proc/loadavg") as f:
            return f"load avg {f.read().split()[0]} on {os.cpu_count()} cores"
    except OSError:
        return ""


# -- data --------------------------------------------------------------------------------------


@functools.cache
def phones(rows: int, distinct: int) -> list[str | None]:
    """``messy_phones(rows, distinct)`` as a list, made once per process."""
    return list(messy_phones(rows, distinct))


@functools.cache
def nationals_of(rows: int, distinct: int) -> list[str]:
    """The distinct valid mobile numbers among :func:`phones` (what a correct run may pay for)."""
    found: dict[str, None] = {}
    for value in phones(rows, distinct):
        national = parse_number(value).national
        if national is not None:
            found[national] = None
    return list(found)


def vendor_result(national: str, checked_at: dt.datetime) -> PhoneStatusResult:
    """What the sandbox answers for ``national``, as the hook would have read it."""
    data = {**expected(national), "orderNo": f"BENCH{national}"}
    return dataclasses.replace(PhoneStatusResult.from_vendor_data(data), checked_at=checked_at)


def create_customers(
    db: Db,
    table: str,
    values: Sequence[str | None],
    *,
    status: Callable[[int, str | None], tuple[Any, ...]] | None = None,
) -> None:
    """``table`` (id INTEGER PRIMARY KEY, phone VARCHAR(64)) holding ``values`` as ids 1..n.

    With ``status``, the seven status columns exist already and hold ``status(id, phone)``.
    Inserted fast: SQLite executemany in big chunks, PostgreSQL ``COPY``, DuckDB one ``INSERT ...
    SELECT unnest(from_json(?))`` per chunk (it binds list items one by one, as slowly as it runs
    an executemany).
    """
    columns = ["id", "phone"]
    ddl = ["id INTEGER NOT NULL PRIMARY KEY", "phone VARCHAR(64)"]
    if status is not None:
        columns += STATUS_COLUMNS
        timestamp = "TIMESTAMP WITHOUT TIME ZONE" if db.dialect in ("postgresql", "duckdb") else "DATETIME"
        types = ("VARCHAR(32)", "VARCHAR(16)", "VARCHAR(32)", "BOOLEAN", timestamp, "VARCHAR(64)")
        ddl += [f"{c} {t}" for c, t in zip(STATUS_COLUMNS, (*types, "VARCHAR(64)"), strict=True)]

    def rows() -> Iterator[tuple[Any, ...]]:
        for i, value in enumerate(values, start=1):
            yield (i, value) if status is None else (i, value, *status(i, value))

    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"CREATE TABLE {table} ({', '.join(ddl)})")
        if db.dialect == "postgresql":
            copy_from: Any = cursor.copy  # psycopg 3
            with copy_from(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows():
                    copy.write_row(row)
        elif db.dialect == "duckdb":
            insert = _duckdb_insert(table, columns, ddl)
            iterator = rows()
            while chunk := [r for _, r in zip(range(CHUNK), iterator, strict=False)]:
                texts = [json.dumps(list(map(_json_text, c))) for c in zip(*chunk, strict=True)]
                cursor.execute(insert, texts)
        else:
            marks = ", ".join("?" * len(columns))
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            iterator = rows()
            while chunk := [r for _, r in zip(range(CHUNK), iterator, strict=False)]:
                cursor.executemany(insert, [_sqlite_row(r) for r in chunk])
        raw.commit()
        if db.dialect == "postgresql":
            cursor.execute(f"ANALYZE {table}")
            raw.commit()
    finally:
        raw.close()


def _duckdb_insert(table: str, columns: Sequence[str], ddl: Sequence[str]) -> str:
    """``INSERT ... SELECT`` of one JSON text parameter per column, each cast to its column's type."""
    types = [definition.split(" ", 1)[1].removesuffix(" NOT NULL PRIMARY KEY") for definition in ddl]
    selected = ", ".join(f"CAST(unnest(from_json(?, '[\"VARCHAR\"]')) AS {t})" for t in types)
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selected}"


def _json_text(value: Any) -> str | None:
    """A value as a JSON text DuckDB casts back to its column's type (datetimes in ISO form)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Values as SQLAlchemy's SQLite dialect stores them (DATETIME as ISO text, BOOLEAN as 0/1)."""
    return tuple(
        v.strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(v, dt.datetime)
        else int(v)
        if isinstance(v, bool)
        else v
        for v in row
    )


def prefill_store(db: Db, store_name: str, nationals: Sequence[str]) -> float:
    """Save a fresh sandbox-true answer for each of ``nationals`` with ``ResultStore.save``; seconds."""
    from airflow_provider_phonestatus.warehouse.store import ResultStore

    if store_name not in db.tables:
        db.tables.append(store_name)
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    with db.engine.connect() as conn:
        store = ResultStore.ensure(conn, store_name)
        for i in range(0, len(nationals), CHUNK):
            store.save(conn, [(n, vendor_result(n, now)) for n in nationals[i : i + CHUNK]])
            conn.commit()
    return time.perf_counter() - started


# -- our refresh -------------------------------------------------------------------------------


def new_hook(url: str | None, *, per_minute: float = UNLIMITED_PER_MINUTE, **extra: Any) -> PhoneStatusHook:
    """A hook on ready-made settings (no Airflow connection): the sandbox at ``url``, or nowhere
    (``http://127.0.0.1:9``, a closed port) for runs that must not send anything."""
    from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook

    settings = PhoneStatusSettings(
        api_key=SANDBOX_KEY,
        base_url=url or "http://127.0.0.1:9",
        rate_limit_per_minute=per_minute,
        timeout=5.0,
        **extra,
    )
    return PhoneStatusHook(settings=settings)


@dataclass
class Refresh:
    summary: RunSummary
    seconds: float
    cpu_s: float


def run_refresh(
    db: Db,
    table: str,
    hook: PhoneStatusHook,
    store_name: str,
    runlog_name: str,
    options: RefreshOptions | None = None,
    *,
    status_table: str | None = None,
    ledger: bool = True,
) -> Refresh:
    """One refresh of ``table`` as ``PhoneStatusCheckOperator.execute`` runs it (module docstring),
    with the operator's default options unless ``options`` are given (their ``portable`` is the
    operator's ``portable_sql``); ``status_table``: the statuses go there (created when missing);
    ``ledger=False``: no lookup ledger (``{store_name}_lookups``), which the operator always keeps."""
    from airflow_provider_phonestatus.refresh import RefreshOptions, TableRefresh
    from airflow_provider_phonestatus.revalidation import RevalidationPolicy
    from airflow_provider_phonestatus.summary import RunSummary
    from airflow_provider_phonestatus.warehouse.access import check_access, portable_path
    from airflow_provider_phonestatus.warehouse.lookups import LookupLedger, RunIdentity
    from airflow_provider_phonestatus.warehouse.runlog import RunLog
    from airflow_provider_phonestatus.warehouse.store import ResultStore
    from airflow_provider_phonestatus.warehouse.target import TargetTable

    ledger_name = f"{store_name}_lookups" if ledger else None
    for name in (store_name, runlog_name, status_table, ledger_name):
        if name is not None and name not in db.tables:
            db.tables.append(name)
    options = options or RefreshOptions()  # the operator's defaults: batch 500, flush 1 s
    cpu = time.process_time()
    started = time.perf_counter()
    summary = RunSummary()
    portable = portable_path(db.engine.dialect, options.portable)  # refused before connecting
    with db.engine.connect() as conn:
        target = TargetTable.load(
            conn,
            table,
            key_columns="id",
            phone_column="phone",
            columns=StatusColumns(),
            status_table=status_table,
            portable=portable,
        )
        options = dataclasses.replace(options, portable=portable)
        store = ResultStore.ensure(conn, store_name, portable=portable)
        runlog = RunLog.ensure(conn, runlog_name)
        lookups = None if ledger_name is None else LookupLedger.ensure(conn, ledger_name, portable=portable)
        appended = [] if lookups is None else [lookups.table]
        check_access(
            conn, target, [store.table, runlog.table], writes=True, deletes=portable, appended=appended
        )
        identity: dict[str, Any] = {
            "dag_id": "bench",
            "task_id": "refresh",
            "run_id": "bench",
            "map_index": -1,
            "try_number": 1,
            "table_name": table,
        }
        run_uid = runlog.start(conn, started_at=dt.datetime.now(dt.UTC), **identity)
        conn.commit()
        run = None if lookups is None else RunIdentity(run_uid=run_uid, **identity)
        refresh = TableRefresh(
            conn,
            target,
            store,
            hook,
            RevalidationPolicy.from_user(None),
            options,
            summary,
            ledger=lookups,
            run=run,
        )
        refresh.run()
        summary.state = "success"
        conn.rollback()
        runlog.finish_run(conn, run_uid, summary)
        conn.commit()
    return Refresh(summary, time.perf_counter() - started, time.process_time() - cpu)


# -- checks ------------------------------------------------------------------------------------


def wrong_statuses(
    db: Db,
    table: str,
    rows: int,
    sample: int = 10_000,
    seed: int = 11,
    *,
    status_table: str | None = None,
) -> list[str]:
    """Rows of a random sample whose status is not ``expected_status(phone)``, masked; with
    ``status_table``, the status is read from it, left-joined to ``table`` by id (no row: no status)."""
    ids = random.Random(seed).sample(range(1, rows + 1), min(sample, rows))
    wrong: list[str] = []
    if status_table is None:
        source = f"SELECT id, phone, phone_status FROM {table} WHERE id IN "
    else:
        source = (
            f"SELECT s.id, s.phone, t.phone_status FROM {table} s LEFT JOIN {status_table} t ON t.id = s.id"
            " WHERE s.id IN "
        )
    with db.engine.connect() as conn:
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            query = sa.text(f"{source}({','.join(map(str, chunk))})")
            found = conn.execute(query).all()
            if len(found) != len(chunk):
                wrong.append(f"{len(chunk) - len(found)} sampled ids missing")
            for key, phone, status in found:
                if status != (want := expected_status(phone)):
                    wrong.append(f"id {key} {mask_number(phone)}: {status!r} != {want!r}")
    return wrong


def correctness_row(label: str, wrong: list[str], sample: int) -> Result:
    """A result row that FAILs (and is printed loudly) when any sampled row is wrong."""
    from bench.common import Goal

    if wrong:
        say(f"!!! WRONG STATUSES in {label}: {len(wrong)} of {sample} sampled rows, e.g. {wrong[:3]}")
    return Result(
        f"{label}: wrong statuses in a {sample:,}-row sample",
        float(len(wrong)),
        "rows",
        goal=Goal(0, 0, on="value"),
        note="status == expected_status(phone) for every sampled row",
    )


def describe(summary: RunSummary) -> str:
    return (
        f"due {summary.due_rows:,}, written {summary.rows_written:,}, distinct {summary.distinct_numbers:,}, "
        f"sent {summary.requests_sent:,}, from store {summary.from_store:,}, "
        f"local {summary.local_labels:,}, failures {summary.failures}"
    )
