"""The warehouse layer against real SQLite, PostgreSQL and MariaDB (fixture ``warehouse``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.vocabulary import Carrier, PhoneStatus, PhoneStatusResult
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.due import DueList, DueRow, due_condition
from airflow_provider_phonestatus.warehouse.filters import compile_filter
from airflow_provider_phonestatus.warehouse.runlog import RunLog
from airflow_provider_phonestatus.warehouse.store import ResultStore
from airflow_provider_phonestatus.warehouse.target import TargetTable
from airflow_provider_phonestatus.warehouse.writer import RowUpdate, RowWriter
from tests.db import Warehouse

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
POLICY = RevalidationPolicy()
COLUMNS = StatusColumns()
STATUS_NAMES = list(COLUMNS.names().values())


def ago(days: float) -> dt.datetime:
    """A naive UTC timestamp ``days`` before NOW, as stored."""
    return (NOW - dt.timedelta(days=days)).replace(tzinfo=None)


def answer(status: PhoneStatus = PhoneStatus.ACTIVE, age_days: float = 0, **kw: Any) -> PhoneStatusResult:
    kw.setdefault("vendor_code", "1")
    return PhoneStatusResult(status=status, checked_at=NOW - dt.timedelta(days=age_days), **kw)


@pytest.fixture
def conn(warehouse: Warehouse) -> Iterator[sa.Connection]:
    with warehouse.engine.connect() as connection:
        yield connection


def customers(warehouse: Warehouse, n: int = 5, **kw: Any) -> str:
    name = warehouse.table_name("cust")
    rows = [{"id": i, "phone": f"138001380{i:02d}"} for i in range(1, n + 1)]
    warehouse.create_customers(name, kw.pop("rows", rows), **kw)
    return name


def load(conn: sa.Connection, name: str, **kw: Any) -> TargetTable:
    kw.setdefault("key_columns", "id")
    kw.setdefault("phone_column", "phone")
    kw.setdefault("columns", COLUMNS)
    if conn.dialect.name == "duckdb":  # snapshot isolation: see tables created since the last commit
        conn.commit()
    return TargetTable.load(conn, name, **kw)


def due(conn: sa.Connection, target: TargetTable, **kw: Any) -> list[DueRow]:
    with DueList.create(conn, target, POLICY, NOW, **kw) as listed:
        rows = [row for page in listed.pages(1000) for row in page]
        assert listed.total == len(rows)
    return rows


def select_all(conn: sa.Connection, target: TargetTable) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = conn.execute(sa.select(target.table)).all()
    return {target.key_of(r): dict(r._mapping) for r in rows}


# --- TargetTable ---------------------------------------------------------------------------------


def test_load_adds_status_columns_once_and_no_index(warehouse: Warehouse, conn: sa.Connection) -> None:
    name = customers(warehouse)
    target = load(conn, name)
    assert target.missing == ()
    assert set(STATUS_NAMES) <= set(target.table.c.keys())
    again = load(conn, name, create_missing=False)  # types reflected back are all accepted
    assert again.missing == ()
    assert sa.inspect(conn).get_indexes(name) == []
    assert target.key_of({"id": 3, "phone": "x"}) == (3,)


def test_missing_table_lists_similar_names(warehouse: Warehouse, conn: sa.Connection) -> None:
    name = customers(warehouse)
    with pytest.raises(PhoneStatusConfigError, match="does not exist") as info:
        load(conn, name[:-1] + "z")
    assert name in str(info.value)
    with pytest.raises(PhoneStatusConfigError, match="schema 'no_such_schema' does not exist"):
        load(conn, f"no_such_schema.{name}")
    with pytest.raises(PhoneStatusConfigError, match=r"must be 'table' or 'schema\.table'"):
        load(conn, f"a.b.{name}")


def test_unknown_columns_list_the_table_columns(warehouse: Warehouse, conn: sa.Connection) -> None:
    name = customers(warehouse)
    with pytest.raises(PhoneStatusConfigError, match=r"key column 'ident' .*its columns: id, phone"):
        load(conn, name, key_columns="ident")
    with pytest.raises(PhoneStatusConfigError, match=r"phone column 'mobile' .*its columns: id, phone"):
        load(conn, name, phone_column="mobile")
    with pytest.raises(PhoneStatusConfigError, match="also a key column"):
        load(conn, name, phone_column="id")
    with pytest.raises(PhoneStatusConfigError, match="also key or phone"):
        load(conn, name, columns=StatusColumns(status="phone"))
    with pytest.raises(PhoneStatusConfigError, match="share a name"):
        load(conn, name, columns=StatusColumns(code="phone_status"))


def test_key_must_identify_one_row(warehouse: Warehouse, conn: sa.Connection) -> None:
    plain = customers(warehouse, extra_columns=[sa.Column("email", sa.String(64))])
    with pytest.raises(PhoneStatusConfigError, match="do not identify one row"):
        load(conn, plain, key_columns="email")
    assert load(conn, plain, key_columns=["email", "id"]).key_columns == ("email", "id")

    constrained = customers(
        warehouse, extra_columns=[sa.Column("email", sa.String(64)), sa.UniqueConstraint("email")]
    )
    assert load(conn, constrained, key_columns="email").key_columns == ("email",)

    indexed = warehouse.table_name("indexed")
    warehouse.create_table(
        indexed,
        sa.Column("email", sa.String(64)),
        sa.Column("phone", sa.String(64)),
        sa.Index(f"ix_{indexed}", "email", unique=True),
    )
    assert load(conn, indexed, key_columns="email").key_columns == ("email",)

    if warehouse.dialect not in ("mysql", "duckdb"):  # MariaDB and DuckDB have no partial indexes
        partial = warehouse.table_name("partial")
        email = sa.Column("email", sa.String(64))
        where = {"postgresql_where": email.is_not(None), "sqlite_where": email.is_not(None)}
        warehouse.create_table(
            partial,
            email,
            sa.Column("phone", sa.String(64)),
            sa.Index(f"ix_{partial}", email, unique=True, **where),
        )
        with pytest.raises(PhoneStatusConfigError, match="do not identify one row"):
            load(conn, partial, key_columns="email")


def test_unusable_status_columns(warehouse: Warehouse, conn: sa.Connection) -> None:
    numeric = customers(warehouse, extra_columns=[sa.Column("phone_status", sa.Integer)])
    with pytest.raises(PhoneStatusConfigError, match="'phone_status' is INTEGER"):
        load(conn, numeric)
    if warehouse.dialect != "duckdb":  # DuckDB's VARCHAR(n) has no length: every status fits
        short = customers(warehouse, extra_columns=[sa.Column("phone_status", sa.String(8))])
        with pytest.raises(PhoneStatusConfigError, match="too short"):
            load(conn, short)
    stamp = customers(warehouse, extra_columns=[sa.Column("phone_checked_at", sa.String(32))])
    with pytest.raises(PhoneStatusConfigError, match="phone_checked_at"):
        load(conn, stamp)


def test_create_missing_off_shows_the_ddl(warehouse: Warehouse, conn: sa.Connection) -> None:
    name = customers(warehouse)
    with pytest.raises(PhoneStatusConfigError, match="create_columns is off") as info:
        load(conn, name, create_missing=False)
    message = str(info.value)
    assert "ALTER TABLE" in message and all(n in message for n in STATUS_NAMES)
    assert [c["name"] for c in sa.inspect(conn).get_columns(name)] == ["id", "phone"]


def test_dry_run_creates_nothing_and_everything_is_due(warehouse: Warehouse, conn: sa.Connection) -> None:
    name = customers(warehouse, n=4)
    target = load(conn, name, dry_run=True)
    assert target.missing == tuple(STATUS_NAMES)
    assert [c["name"] for c in sa.inspect(conn).get_columns(name)] == ["id", "phone"]
    rows = due(conn, target, row_filter={"id": {"op": "<=", "value": 3}})
    assert [(r.key, r.status, r.urgency) for r in rows] == [((i,), None, 0) for i in (1, 2, 3)]
    with pytest.raises(PhoneStatusConfigError, match="dry run"):
        RowWriter(target)


def test_schema_qualified_and_odd_identifiers(warehouse: Warehouse) -> None:
    """Names with spaces, quotes, % and : are quoted by SQLAlchemy everywhere, in a named schema."""
    schema = warehouse.schema("analytics")
    name = f"{schema}.{warehouse.table_name('Odd Tbl')}"
    key, phone = "ID%x", "Ph\"o'ne:x"
    rows = [{key: 1, phone: "13800138001"}, {key: 2, phone: "13800138002"}]
    warehouse.create_table(
        name,
        sa.Column(key, sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(phone, sa.String(64)),
        rows=rows,
    )
    columns = StatusColumns(status="St%atus'", checked_value="chk:val", checked_at='when "checked"')
    with warehouse.engine.connect() as conn:  # opened after the schema exists (SQLite attaches it)
        target = load(conn, name, key_columns=key, phone_column=phone, columns=columns)
        assert target.table.schema == schema
        listed = due(conn, target, row_filter=[[phone, "like", "138%"]])
        assert [r.phone_text for r in listed] == ["13800138001", "13800138002"]
        written = RowWriter(target).write(conn, [RowUpdate(r.key, r.phone_text, answer()) for r in listed])
        conn.commit()
        assert written == 2
        assert due(conn, load(conn, name, key_columns=key, phone_column=phone, columns=columns)) == []


# --- filters -------------------------------------------------------------------------------------


@pytest.fixture
def filtered(warehouse: Warehouse) -> sa.Table:
    name = warehouse.table_name("flt")
    warehouse.create_table(
        name,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("segment", sa.String(16)),
        sa.Column("score", sa.Integer),
        sa.Column("created", sa.DateTime),
        sa.Column("active", sa.Boolean),
        rows=[
            {"id": 1, "segment": "a", "score": 1, "created": dt.datetime(2024, 1, 1), "active": True},
            {"id": 2, "segment": "b", "score": 5, "created": dt.datetime(2024, 6, 1), "active": False},
            {"id": 3, "segment": None, "score": 3, "created": None, "active": None},
            {"id": 4, "segment": "a%", "score": 10, "created": dt.datetime(2025, 1, 1), "active": True},
        ],
    )
    with warehouse.engine.connect() as connection:
        return sa.Table(name, sa.MetaData(), autoload_with=connection)


def matching(conn: sa.Connection, table: sa.Table, spec: Any) -> list[int]:
    condition = compile_filter(table, spec)
    query = sa.select(table.c.id).order_by(table.c.id)
    return list(conn.execute(query if condition is None else query.where(condition)).scalars())


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        (None, [1, 2, 3, 4]),
        ({}, [1, 2, 3, 4]),
        ({"segment": "a"}, [1]),
        ({"segment": None}, [3]),
        ({"score": {"op": ">=", "value": 3}}, [2, 3, 4]),
        ({"score": {"op": ">=", "value": "3"}}, [2, 3, 4]),  # JSON text for a number
        ({"segment": "a", "score": {"op": "<", "value": 5}}, [1]),
        ([["score", "between", [2, 5]]], [2, 3]),
        ([["segment", "IN", ["a", "b"]]], [1, 2]),
        ([["segment", "not  in", ["a"]]], [2, 4]),  # SQL: NULL matches neither in nor not in
        ([["segment", "!=", "a"]], [2, 4]),
        ([["segment", "=", None]], [3]),
        ([["segment", "is null", None]], [3]),
        ([["segment", "is not null"]], [1, 2, 4]),
        ([["segment", "like", "a%"]], [1, 4]),
        ([["score", "like", "1%"]], [1, 4]),  # LIKE on a number compares its text
        ({"created": {"op": "<", "value": "2024-07-01"}}, [1, 2]),  # JSON text for a date
        ({"active": True}, [1, 4]),
        ([["score", "<", 5], ["active", "=", False]], []),
        ({"segment": "' OR 1=1 --"}, []),  # injection attempts are values: they match nothing
        ([["segment", "in", ["a", "') OR ('1'='1"]]], [1]),
    ],
)
def test_filter_semantics(conn: sa.Connection, filtered: sa.Table, spec: Any, ids: list[int]) -> None:
    assert matching(conn, filtered, spec) == ids


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"phone; DROP TABLE x": 1}, r"column 'phone; DROP TABLE x' is not in table .*id, segment, score"),
        ([['id" OR 1=1 --', "=", 1]], "is not in table"),
        ({1: "a"}, "is not in table"),
        ([["segment", "drop", 1]], "unknown operator 'drop'"),
        ([["segment", "in", []]], "non-empty list"),
        ([["segment", "in", "abc"]], "non-empty list"),
        ([["segment", "in", ["a", None]]], "use 'is null'"),
        ([["score", "between", [1]]], "exactly 2"),
        ({"segment": {"op": "=", "value": {"x": 1}}}, "values must be"),
        ({"segment": ["a", "b"]}, "values must be"),
        ({"segment": {"op": "=", "value": "a", "extra": 1}}, "got keys"),
        ({"segment": {"value": "a"}}, "got keys"),
        ([["score", "<", None]], "values must be"),
        ([["score", "=", "abc"]], "does not fit"),
        ([["score", "=", 2.5]], "does not fit"),
        ([["created", ">", "yesterday"]], "does not fit"),
        ([["segment", "like", 5]], "pattern must be text"),
        ([["segment", "is null", "x"]], "takes no value"),
        ([["segment"]], r"\[column, op, value\]"),
        ("segment = 'a'", "must be a mapping or a list"),
    ],
)
def test_filter_rejects(conn: sa.Connection, filtered: sa.Table, spec: Any, error: str) -> None:
    with pytest.raises(PhoneStatusConfigError, match=error):
        compile_filter(filtered, spec)
    assert sa.inspect(conn).has_table(filtered.name)


def test_filter_error_masks_numbers(filtered: sa.Table) -> None:
    with pytest.raises(PhoneStatusConfigError) as info:
        compile_filter(filtered, {"score": "138-0013-8000x"})
    assert "0013" not in str(info.value)


# --- due rows ------------------------------------------------------------------------------------

#: id, phone, status, checked_at age (days), checked_value, urgency (None: not due)
DUE_CASES: list[tuple[int, str | None, str | None, float | None, str | None, int | None]] = [
    (1, "13800138001", None, None, None, 0),  # never checked
    (2, "13800138002", "active", None, "13800138002", 0),  # status but no time
    (3, "13800138003", None, 1, "13800138003", 0),  # time but no status
    (4, "13800138004", "active", 1, "13900000000", 1),  # phone changed since the check
    (5, "13800138005", "active", 1, None, 1),  # checked value unknown
    (6, "13800138006", "active", 29, "13800138006", None),  # active: 30 days
    (7, "13800138007", "active", 31, "13800138007", 2),
    (8, "13800138008", "powered_off", 2, "13800138008", None),  # powered off: 3 days
    (9, "13800138009", "powered_off", 4, "13800138009", 2),
    (10, "13800138010", "hand_written", 0.5, "13800138010", None),  # other: 1 day
    (11, "13800138011", "hand_written", 2, "13800138011", 2),
    (12, None, "invalid", 1, None, None),  # NULL phone, checked as NULL: NULL-safe equal
    (13, None, "invalid", 1, "13800138013", 1),  # phone cleared since the check
    (14, None, None, None, None, 0),  # NULL phone never checked
]


def seed(warehouse: Warehouse, conn: sa.Connection, cases: Sequence[tuple[Any, ...]]) -> TargetTable:
    name = customers(warehouse, rows=[{"id": c[0], "phone": c[1]} for c in cases])
    target = load(conn, name)
    for key, _, status, age, checked_value, _ in cases:
        values = {"phone_status": status, "phone_checked_value": checked_value}
        values["phone_checked_at"] = None if age is None else ago(age)
        conn.execute(sa.update(target.table).where(target.table.c.id == key).values(values))
    conn.commit()
    return target


def test_due_semantics_and_order(warehouse: Warehouse, conn: sa.Connection) -> None:
    target = seed(warehouse, conn, DUE_CASES)
    rows = due(conn, target)
    # urgency, then never-checked first, oldest check, key
    assert [r.key[0] for r in rows] == [1, 2, 14, 3, 4, 5, 13, 7, 9, 11]
    expected = {c[0]: c[5] for c in DUE_CASES}
    assert all(r.urgency == expected[r.key[0]] for r in rows)
    by_key = {r.key[0]: r for r in rows}
    assert by_key[7].status == "active" and by_key[7].phone == by_key[7].phone_text == "13800138007"
    assert by_key[14].phone is None and by_key[14].phone_text is None
    # the same condition as a plain WHERE agrees with the materialised list
    query = sa.select(target.table.c.id).where(due_condition(target, POLICY, NOW))
    assert sorted(conn.execute(query).scalars()) == sorted(by_key)


def test_due_ignore_ages_filter_and_custom_policy(warehouse: Warehouse, conn: sa.Connection) -> None:
    target = seed(warehouse, conn, DUE_CASES)
    everything = due(conn, target, ignore_ages=True, row_filter={"id": {"op": "in", "value": [6, 8, 9]}})
    assert [(r.key[0], r.urgency) for r in everything] == [(6, 2), (9, 2), (8, 2)]  # oldest first
    strict = RevalidationPolicy.from_user({"active": 10, "other": 7})
    with DueList.create(conn, target, strict, NOW, row_filter=[["id", "in", [6, 7, 10, 11]]]) as listed:
        assert [r.key[0] for page in listed.pages() for r in page] == [7, 6]


def test_due_integer_phone_column(warehouse: Warehouse, conn: sa.Connection) -> None:
    """CAST(phone AS VARCHAR) is what gets stored, so an integer column compares consistently."""
    rows = [{"id": i, "phone": 13800138000 + i} for i in (1, 2)]
    name = customers(warehouse, rows=rows, phone_type=sa.BigInteger())
    target = load(conn, name)
    first = due(conn, target)
    assert [(r.phone, r.phone_text) for r in first] == [
        (13800138001, "13800138001"),
        (13800138002, "13800138002"),
    ]
    RowWriter(target).write(conn, [RowUpdate(r.key, r.phone_text, answer()) for r in first])
    conn.commit()
    assert due(conn, target) == []
    conn.execute(sa.update(target.table).where(target.table.c.id == 2).values(phone=13900139000))
    conn.commit()
    assert [(r.key, r.phone_text, r.urgency) for r in due(conn, target)] == [((2,), "13900139000", 1)]


@pytest.mark.parametrize(
    "phone_type", [sa.String(40), sa.Text(), sa.CHAR(20)], ids=["varchar", "text", "char"]
)
def test_due_phone_text_of_text_columns(
    warehouse: Warehouse, conn: sa.Connection, phone_type: sa.types.TypeEngine[str]
) -> None:
    """phone_text is CAST(phone AS VARCHAR) as the database spells it, whether the phone as read is
    taken for it (VARCHAR and TEXT on a server) or the cast is read (CHAR, whose padding it drops):
    what is written compares equal to it, so nothing stays due."""
    phones = [" 138 0013 8001 ", "13800138002", "+86 138-0013-8003"]
    rows = [{"id": i, "phone": p} for i, p in enumerate(phones, 1)]
    target = load(conn, customers(warehouse, rows=rows, phone_type=phone_type))
    as_text = dict(conn.execute(sa.select(target.table.c.id, sa.cast(target.phone, sa.String))).all())
    first = due(conn, target)
    assert [(r.key[0], r.phone_text) for r in first] == [(i, as_text[i]) for i in (1, 2, 3)]
    RowWriter(target).write(conn, [RowUpdate(r.key, r.phone_text, answer()) for r in first])
    conn.commit()
    assert due(conn, target) == []


def test_due_list_pages_while_writing(warehouse: Warehouse, conn: sa.Connection) -> None:
    name = customers(warehouse, n=25)
    target = load(conn, name)
    writer = RowWriter(target)
    seen, sizes = [], []
    listed = DueList.create(conn, target, POLICY, NOW)
    assert listed.total == 25
    # a TEMPORARY table: private to this connection, not among the database's tables
    assert not [t for t in sa.inspect(conn).get_table_names() if t.startswith("phonestatus_")]
    for page in listed.pages(size=10):
        sizes.append(len(page))
        seen += [r.key[0] for r in page]
        assert writer.write(conn, [RowUpdate(r.key, r.phone_text, answer()) for r in page]) == len(page)
        conn.commit()  # the temporary table survives the operator's commits
    listed.drop()
    conn.commit()
    assert sizes == [10, 10, 5] and seen == list(range(1, 26))
    assert due(conn, target) == []


# --- writer --------------------------------------------------------------------------------------


def test_writer_values_failures_and_duplicates(warehouse: Warehouse, conn: sa.Connection) -> None:
    name = customers(warehouse, n=4)
    target = load(conn, name)
    writer = RowWriter(target)
    shanghai = dt.timezone(dt.timedelta(hours=8))
    good = answer(carrier=Carrier.UNKNOWN, carrier_raw="虚拟", ported=True, order_no="ORD-1")
    good = PhoneStatusResult(
        **{
            **good.as_record(),
            "status": good.status,
            "carrier": good.carrier,
            "checked_at": dt.datetime(2025, 6, 1, 20, 0, tzinfo=shanghai),
        }
    )
    assert (
        writer.write(conn, [RowUpdate((1,), "13800138001", good), RowUpdate((2,), "x" * 100, answer())]) == 2
    )
    conn.commit()
    failed = PhoneStatusResult.failed("timeout")
    batch = [
        RowUpdate((1,), "13800138001", failed),  # never overwrites the good answer
        RowUpdate((3,), "13800138003", answer(PhoneStatus.SUSPENDED, vendor_code="2")),
        RowUpdate((3,), "13800138003", answer(PhoneStatus.POWERED_OFF, vendor_code="5")),  # last wins
        RowUpdate((4,), "13800138004", failed),
    ]
    assert writer.write(conn, batch) == 1
    assert writer.write(conn, [RowUpdate((4,), "13800138004", failed)]) == 0
    conn.commit()
    rows = select_all(conn, target)
    assert rows[(1,)]["phone_status"] == "active" and rows[(1,)]["phone_carrier"] == "unknown"
    assert bool(rows[(1,)]["phone_ported"]) is True and rows[(1,)]["phone_order_no"] == "ORD-1"
    assert rows[(1,)]["phone_checked_at"] == dt.datetime(2025, 6, 1, 12, 0)  # naive UTC
    assert rows[(1,)]["phone_status_code"] == "1" and rows[(1,)]["phone_checked_value"] == "13800138001"
    # cut to the column's length; DuckDB's VARCHAR has none
    assert rows[(2,)]["phone_checked_value"] == "x" * (100 if warehouse.dialect == "duckdb" else 64)
    assert rows[(2,)]["phone_carrier"] is None and rows[(2,)]["phone_ported"] is None
    assert rows[(3,)]["phone_status"] == "powered_off" and rows[(3,)]["phone_status_code"] == "5"
    assert rows[(4,)]["phone_status"] is None


def test_writer_composite_key_and_batches(warehouse: Warehouse, conn: sa.Connection) -> None:
    region = sa.Column("region", sa.String(8))
    rows = [{"region": r, "id": i, "phone": f"1380013800{i}"} for r in ("cn", "hk") for i in (1, 2)]
    name = customers(warehouse, rows=rows, key=[region, "id"])
    target = load(conn, name, key_columns=["region", "id"])
    writer = RowWriter(target)
    assert writer.write(conn, [RowUpdate(("cn", 1), "a", answer()), RowUpdate(("hk", 2), "b", answer())]) == 2
    conn.commit()
    # someone edits a written row between batches: the next batch must not replay the first
    conn.execute(sa.update(target.table).where(target.table.c.id == 1).values(phone_status="manual"))
    conn.commit()
    assert writer.write(conn, [RowUpdate(("hk", 1), "c", answer(PhoneStatus.SUSPENDED))]) == 1
    conn.commit()
    statuses = {k: r["phone_status"] for k, r in select_all(conn, target).items()}
    assert statuses == {("cn", 1): "manual", ("cn", 2): None, ("hk", 1): "suspended", ("hk", 2): "active"}
    with pytest.raises(ValueError, match="does not match key columns"):
        writer.write(conn, [RowUpdate((1,), "a", answer())])


def test_writer_batches_of_keys_in_any_order_touch_exactly_their_rows(
    warehouse: Warehouse, conn: sa.Connection
) -> None:
    # PostgreSQL's staged UPDATE is bounded by the batch's lowest and highest key: rows inside that
    # span but outside the batch must stay as they are, and every key of the batch is written.
    rows = [{"id": i, "phone": f"138001380{i:02d}"} for i in range(1, 51)]
    target = load(conn, customers(warehouse, rows=rows))
    writer = RowWriter(target)
    batches = [[40, 3, 27], [50], [12, 11, 10, 49]]
    for ids in batches:
        assert writer.write(conn, [RowUpdate((i,), str(i), answer()) for i in ids]) == len(ids)
        conn.commit()
    written = {k[0] for k, r in select_all(conn, target).items() if r["phone_status"] == "active"}
    assert written == {i for ids in batches for i in ids}


@pytest.mark.parametrize("third", [sa.Numeric(10, 2), sa.Time()], ids=["numeric", "time"])
def test_writer_keys_of_other_types(
    warehouse: Warehouse, conn: sa.Connection, third: sa.types.TypeEngine[Any]
) -> None:
    # PostgreSQL writes the stage by binary COPY when every column type allows it (dates,
    # numbers, text) and by text COPY otherwise (a TIME key): both must land on exactly their rows.
    values = [
        (dt.date(2025, 1, d), "cn", dt.time(9, d) if isinstance(third, sa.Time) else d * 1.25)
        for d in (1, 2, 3)
    ]
    key = [sa.Column("day", sa.Date), sa.Column("region", sa.String(8)), sa.Column("third", third)]
    rows = [{"day": a, "region": b, "third": c, "phone": "13800138001"} for a, b, c in values]
    target = load(conn, customers(warehouse, rows=rows, key=key), key_columns=["day", "region", "third"])
    keys = [target.key_of(r) for r in conn.execute(sa.select(target.table)).all()]
    # the due list gives the keys back as the database's types convert them (dates, not text)
    assert sorted(row.key for row in due(conn, target)) == sorted(keys)
    assert all(isinstance(key[0], dt.date) for key in keys)
    writer = RowWriter(target)
    assert writer.write(conn, [RowUpdate(k, "13800138001", answer(ported=True)) for k in keys[:2]]) == 2
    conn.commit()
    written = {k: (r["phone_status"], r["phone_ported"]) for k, r in select_all(conn, target).items()}
    assert written == {keys[0]: ("active", True), keys[1]: ("active", True), keys[2]: (None, None)}


# --- results store -------------------------------------------------------------------------------


def test_store_fresh_save_and_expiry(warehouse: Warehouse, conn: sa.Connection) -> None:
    store = ResultStore.ensure(conn, warehouse.table_name("results"))
    exact = NOW - dt.timedelta(days=1, microseconds=123456)
    vendor = PhoneStatusResult(
        PhoneStatus.ACTIVE, "1", Carrier.CHINA_MOBILE, "移动", True, "ORD-1", "ok" * 200, exact
    )
    items = [
        ("13800138001", vendor),
        ("13800138002", answer(PhoneStatus.POWERED_OFF, age_days=4)),  # stored, but expired
        ("13800138003", PhoneStatusResult.rejected("400", "bad number")),  # stored
        ("13800138004", PhoneStatusResult.local(PhoneStatus.INVALID, "not a phone number")),
        ("13800138005", PhoneStatusResult.local(PhoneStatus.UNSUPPORTED, "landline")),
        ("13800138006", PhoneStatusResult.failed("timeout")),
        ("13800138007", answer(carrier=Carrier.UNKNOWN, carrier_raw="虚拟")),
    ]
    assert len(store.save(conn, items)) == 4
    conn.commit()
    wanted = [f"1380013800{i}" for i in range(1, 9)]
    fresh = store.fresh(
        conn, wanted, POLICY, dt.datetime.now(dt.UTC).replace(year=2025, month=6, day=1, hour=12)
    )
    assert sorted(fresh) == ["13800138001", "13800138003", "13800138007"]
    got = fresh["13800138001"]
    assert got == PhoneStatusResult(
        PhoneStatus.ACTIVE, "1", Carrier.CHINA_MOBILE, "移动", True, "ORD-1", ("ok" * 200)[:255], exact
    )
    assert got.checked_at.tzinfo is not None and got.ported is True
    assert fresh["13800138003"].status is PhoneStatus.REJECTED
    assert fresh["13800138007"].carrier is Carrier.UNKNOWN and fresh["13800138007"].carrier_raw == "虚拟"
    assert store.fresh(conn, [], POLICY, NOW) == {}


def test_store_upsert_and_chunks(warehouse: Warehouse, conn: sa.Connection) -> None:
    store = ResultStore.ensure(conn, warehouse.table_name("results"))
    many = [(f"1380000{i:04d}", answer(order_no=f"A{i}")) for i in range(2500)]
    assert len(store.save(conn, many)) == 2500
    conn.commit()
    updates = [
        ("13800000007", answer(PhoneStatus.SUSPENDED, order_no="B")),
        ("13800000007", answer(order_no="C")),
    ]
    updates.append(("13800000008", answer(PhoneStatus.POWERED_OFF, order_no="D")))
    assert len(store.save(conn, updates)) == 2  # last one wins within a batch
    conn.commit()
    fresh = store.fresh(conn, [n for n, _ in many] + ["13999999999"], POLICY, NOW)
    assert len(fresh) == 2500
    assert (fresh["13800000007"].status, fresh["13800000007"].order_no) == (PhoneStatus.ACTIVE, "C")
    assert (fresh["13800000008"].status, fresh["13800000008"].order_no) == (PhoneStatus.POWERED_OFF, "D")
    with pytest.raises(PhoneStatusConfigError, match=r"138\*\*\*\*8000"):
        store.save(conn, [("+8613800138000", answer())])


def test_store_finds_only_national_numbers(warehouse: Warehouse, conn: sa.Connection) -> None:
    # The numbers travel to the database joined into one parameter where it allows: a value that is
    # no national number (a separator, a quote, a prefix inside) must find nothing, not its parts.
    store = ResultStore.ensure(conn, warehouse.table_name("results"))
    store.save(conn, [("13800000001", answer()), ("13800000002", answer())])
    conn.commit()
    odd = ["13800000001,13800000002", "13800000001'", "+8613800000001", "1380000000", ""]
    assert store.fresh(conn, odd, POLICY, NOW) == {}
    assert store.fresh_values(conn, odd, POLICY, NOW) == {}
    assert sorted(store.fresh_values(conn, [*odd, "13800000002"], POLICY, NOW)) == ["13800000002"]


class _PythonPolicy(RevalidationPolicy):
    """The default ages, decided by a subclass's own ``is_fresh``: the store asks it per row."""

    def is_fresh(self, status: str | None, checked_at: dt.datetime | None, now: dt.datetime) -> bool:
        return super().is_fresh(status, checked_at, now)


@pytest.mark.parametrize("policy", [POLICY, _PythonPolicy()], ids=["in SQL", "policy subclass"])
def test_store_freshness_at_the_cutoff(
    warehouse: Warehouse, conn: sa.Connection, policy: RevalidationPolicy
) -> None:
    # Freshness is decided in SQL: an answer exactly as old as its status's age is still fresh,
    # one microsecond older is not, exactly as RevalidationPolicy.is_fresh decides it.
    store = ResultStore.ensure(conn, warehouse.table_name("results"))
    age = POLICY.ages[PhoneStatus.POWERED_OFF]
    at_cutoff = answer(PhoneStatus.POWERED_OFF, age_days=age.days)
    older = dataclasses.replace(at_cutoff, checked_at=at_cutoff.checked_at - dt.timedelta(microseconds=1))
    store.save(conn, [("13800138001", at_cutoff), ("13800138002", older), ("13800138003", answer())])
    conn.commit()
    wanted = ["13800138001", "13800138002", "13800138003", "13800138001"]
    expected = ["13800138001", "13800138003"]
    assert sorted(store.fresh(conn, wanted, policy, NOW)) == expected
    assert sorted(store.fresh_values(conn, wanted, policy, NOW)) == expected
    assert all(
        policy.is_fresh(r.status.value, r.checked_at, NOW)
        for r in store.fresh(conn, wanted, policy, NOW).values()
    )


@pytest.mark.parametrize("columns", ["default", "other types"])
def test_store_values_write_what_the_answer_writes(
    warehouse: Warehouse, conn: sa.Connection, columns: str
) -> None:
    # A row answered from the store (fresh_values, the driver's values passed through or converted
    # for the target's column types) gets exactly what the original answer writes.
    store = ResultStore.ensure(conn, warehouse.table_name("results"))
    exact = NOW - dt.timedelta(hours=5, microseconds=654321)
    answers = {
        "13800138001": PhoneStatusResult(
            PhoneStatus.ACTIVE, "1", Carrier.CHINA_MOBILE, "移动", True, "ORD-1234567890", None, exact
        ),
        "13800138002": answer(PhoneStatus.POWERED_OFF, ported=False, order_no="B"),
        "13800138003": PhoneStatusResult.rejected("400", "bad number"),
        "13800138004": answer(carrier=Carrier.UNKNOWN, carrier_raw="虚拟"),
    }
    store.save(conn, list(answers.items()))
    conn.commit()

    def extra() -> list[sa.Column[Any]]:  # an INTEGER flag and a short order number: converted and cut
        if columns == "default":
            return []
        return [sa.Column("phone_ported", sa.Integer), sa.Column("phone_order_no", sa.String(8))]

    keys = {national: i for i, national in enumerate(answers, start=1)}
    rows = [{"id": i, "phone": national} for national, i in keys.items()]
    tables = []
    for _ in range(2):
        name = warehouse.table_name("cust")
        warehouse.create_customers(name, rows, extra_columns=extra())
        tables.append(load(conn, name))
    from_store = store.fresh_values(conn, list(answers), POLICY, NOW)
    assert sorted(from_store) == sorted(answers)
    RowWriter(tables[0]).write(conn, [RowUpdate((keys[n],), n, a) for n, a in answers.items()])
    groups = [(values, [((keys[n],), n)]) for n, values in from_store.items()]
    assert RowWriter(tables[1]).write_groups(conn, groups) == len(answers)
    conn.commit()
    by_answer, by_store = (select_all(conn, target) for target in tables)
    assert by_store == by_answer
    first = by_store[(1,)]
    # microseconds kept everywhere (on MariaDB the operator creates DATETIME(6))
    assert first["phone_checked_at"] == exact.replace(tzinfo=None) and first["phone_ported"]
    short = columns == "other types" and warehouse.dialect != "duckdb"  # DuckDB's VARCHAR has no length
    assert first["phone_order_no"] == ("ORD-1234" if short else "ORD-1234567890")
    assert by_store[(2,)]["phone_ported"] is not None and not by_store[(2,)]["phone_ported"]
    assert by_store[(4,)]["phone_carrier"] == "unknown"


def test_store_ensure_checks_an_existing_table(warehouse: Warehouse, conn: sa.Connection) -> None:
    name = warehouse.table_name("results")
    ResultStore.ensure(conn, name)
    ResultStore.ensure(conn, name)  # exists and fits
    wrong = warehouse.table_name("wrong")
    warehouse.create_table(
        wrong, sa.Column("national", sa.String(11), primary_key=True), sa.Column("status", sa.Integer)
    )
    with pytest.raises(
        PhoneStatusConfigError, match=r"does not fit: .*'status' is INTEGER.*'vendor_code' is missing"
    ):
        ResultStore.ensure(conn, wrong)


# --- run log -------------------------------------------------------------------------------------


def test_run_log(warehouse: Warehouse, conn: sa.Connection) -> None:
    log = RunLog.ensure(conn, warehouse.table_name("runs"))
    ids = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1, "try_number": 1, "table_name": "c"}

    def run(hours: int, state: str, **counts: int) -> str:
        uid = log.start(conn, **ids, started_at=NOW + dt.timedelta(hours=hours))
        if state != "running":
            log.finish(
                conn,
                uid,
                state=state,
                ended_at=NOW + dt.timedelta(hours=hours, minutes=5),
                counts=counts,
                status_counts={"active": counts.get("rows_written", 0)},
                error="boom" * 100 if state == "failed" else None,
            )
        conn.commit()
        return uid

    first = run(0, "success", due_rows=10, paid_lookups=7, rows_written=9)
    run(1, "failed", due_rows=3)
    third = run(2, "running")
    assert log.previous(conn, dag_id="d", task_id="t", table_name="c", before_uid=first) is None
    previous = log.previous(conn, dag_id="d", task_id="t", table_name="c", before_uid=third)
    assert previous is not None and previous["run_uid"] == first
    assert (previous["due_rows"], previous["paid_lookups"], previous["throttled"]) == (10, 7, 0)
    assert previous["status_counts"] == {"active": 9} and previous["state"] == "success"
    assert previous["ended_at"] == NOW + dt.timedelta(minutes=5)
    assert log.previous(conn, dag_id="d", task_id="other", table_name="c") is None
    runs = log.runs(conn, limit=2)
    assert [r["state"] for r in runs] == ["running", "failed"] and len(runs[1]["error"]) == 255
    with pytest.raises(ValueError, match="unknown run log counters"):
        log.finish(
            conn, third, state="success", ended_at=NOW, counts={"bogus": 1}, status_counts={}, error=None
        )
    with pytest.raises(ValueError, match="final state"):
        log.finish(conn, third, state="running", ended_at=NOW, counts={}, status_counts={}, error=None)
