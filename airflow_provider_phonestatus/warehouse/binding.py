"""How values reach a driver when the writer binds them itself, not through SQLAlchemy.

``RowWriter`` prepares a million rows per run; per-row work it can skip is decided here once per
batch, by trying the conversions SQLAlchemy would apply on sample values: whether a stored value
can be written as the driver read it, whether a datetime formatter is the C ``isoformat``, and
which PostgreSQL stage columns psycopg can COPY in the binary format.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

_ISO_SAMPLES = (
    dt.datetime(2024, 1, 2, 3, 4, 5, 6),
    dt.datetime(1, 1, 1),
    dt.datetime(999, 12, 31, 23, 59, 59, 999999),
    dt.datetime(2025, 10, 20, 11, 22, 33),
)


#: Values each stored column type is checked with by :func:`passes_through`.
_SAMPLES: dict[type[Any], tuple[Any, ...]] = {dt.datetime: _ISO_SAMPLES, bool: (True, False)}


def passes_through(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect, read: Any, write: Any) -> bool:
    """Whether what the store's ``column_type`` holds for a value (its bind processor's output)
    comes back unchanged through ``read`` (its result processor) and then ``write`` (the target's
    bind processor): then the driver's value can be written as it is."""
    try:
        samples = _SAMPLES.get(column_type.python_type)
    except NotImplementedError:
        samples = None
    if samples is None:
        return False
    stored = column_type.bind_processor(dialect)
    for sample in samples:
        raw = sample if stored is None else stored(sample)
        value = raw if read is None else read(raw)
        written = value if write is None else write(value)
        if type(written) is not type(raw) or written != raw:
            return False
    return True


def as_isoformat(proc: Any) -> Any:
    """``proc``, or an equivalent that formats a naive ``datetime`` with the C ``isoformat`` when
    ``proc`` writes exactly that text (SQLite's default DATETIME storage format) for every field."""
    try:
        same = all(proc(s) == s.isoformat(" ", "microseconds") for s in _ISO_SAMPLES)
    except Exception:
        same = False
    if not same:
        return proc
    datetime = dt.datetime

    def process(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return proc(value)

    return process


#: PostgreSQL types (by OID) whose binary COPY psycopg writes from the Python values the database
#: gives back for them or that a record holds: text, numbers, booleans, times, uuid.
BINARY_COPY_TYPES = frozenset({16, 20, 21, 23, 25, 700, 701, 1042, 1043, 1082, 1114, 1184, 1700, 2950})


def binary_copy_types(conn: sa.Connection, stage: sa.Table) -> list[int] | None:
    """The OIDs of ``stage``'s column types in order, or None (text COPY) when one of them is not
    of :data:`BINARY_COPY_TYPES`. The binary format spares psycopg formatting every value as text,
    but it takes only exactly typed values."""
    oids = conn.execute(
        sa.text(
            "SELECT atttypid FROM pg_attribute WHERE attrelid = CAST(:name AS regclass)"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ),
        {"name": conn.dialect.identifier_preparer.format_table(stage)},
    ).scalars()
    types = [int(oid) for oid in oids]
    return types if types and BINARY_COPY_TYPES.issuperset(types) else None


def int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
