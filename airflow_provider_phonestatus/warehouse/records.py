"""The values a batch of answers writes: one record per key, cut and converted once per answer.

A record holds the status columns' values in :data:`ROLES` order, then the key's. A run writes a
million of them, most from few answers (every row of one number shares its answer), so the part
that comes from an answer is made once per answer object, and values read from the results store
are converted only where the written column would bind them differently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.history import VENDOR_STATUSES, recycled_suspect
from airflow_provider_phonestatus.revalidation import to_naive_utc
from airflow_provider_phonestatus.vocabulary import Carrier, PhoneStatus, PhoneStatusResult
from airflow_provider_phonestatus.warehouse.binding import passes_through
from airflow_provider_phonestatus.warehouse.store import STORED_COLUMNS, StoredValues, results_table
from airflow_provider_phonestatus.warehouse.table import text_lengths

#: The status columns written, in the order of a record's values.
ROLES = (
    "status",
    "code",
    "carrier",
    "ported",
    "checked_at",
    "order_no",
    "previous_status",
    "status_changed_at",
    "recycled_suspect",
    "checked_value",
)
TEXT = len(ROLES) - 1  #: position of the checked value in a record; the key follows it
_MISSING: Any = object()
#: A row handed to :meth:`RowWriter.write_groups`: (key, phone_text, anything else...).
Row = tuple[Any, ...]
#: What a group of rows is written with: a result, or a stored answer's values as
#: ``ResultStore.fresh_values`` gives them.
Answer = PhoneStatusResult | StoredValues
#: The text written for each vocabulary member (``member.value``, without the enum descriptor per row).
_TEXTS: dict[Any, str] = {m: m.value for vocabulary in (PhoneStatus, Carrier) for m in vocabulary}
#: The results store's columns, for the types and lengths of the values read from it.
_STORE = results_table()
#: The longest text a vocabulary role can hold.
_LONGEST = {
    "status": max(map(len, map(str, PhoneStatus))),
    "carrier": max(map(len, map(str, Carrier))),
    "previous_status": max(map(len, map(str, PhoneStatus))),
}


class Records:
    """Makes the records of the status columns ``names`` (in :data:`ROLES` order) of ``table``."""

    def __init__(self, table: sa.Table, names: Sequence[str], key_columns: Sequence[str]) -> None:
        self._key_columns = tuple(key_columns)
        lengths = text_lengths(table.columns)
        positions = [(i, lengths[n]) for i, n in enumerate(names) if n in lengths]
        self._text_length = next((n for i, n in positions if i == TEXT), None)
        #: lengths to enforce on values from a result; vocabulary values that always fit are not checked
        self._part_lengths = [(i, n) for i, n in positions if i < TEXT and n < _LONGEST.get(ROLES[i], n + 1)]

    def make(
        self,
        groups: Sequence[tuple[Answer, Sequence[Row]]],
        processors: Sequence[tuple[int, Any]],
        dialect: sa.Dialect,
    ) -> list[tuple[Any, ...]]:
        """The records of the rows with an answer, one per key (last one wins), text cut to its
        column's length, then converted by ``processors`` ((position, bind processor) pairs; none:
        SQLAlchemy converts them when it binds).

        The part of a record that comes from the answer is made once per answer object; stored
        values become it through :meth:`_stored_part` on ``dialect``, or as they are.
        """
        stored = self._stored_part(dialect, processors)
        key_count = len(self._key_columns)
        text_length = self._text_length
        row_processors = [(i - TEXT, p) for i, p in processors if i >= TEXT]
        plain = not row_processors  # the common case: no work per row, long texts cut afterwards
        parts: dict[int, tuple[Any, ...] | None] = {}
        records: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        part: tuple[Any, ...] | None
        for answer, rows in groups:
            if isinstance(answer, tuple):
                part = answer if stored is None else stored(answer)
            elif (part := parts.get(id(answer), _MISSING)) is _MISSING:
                part = parts[id(answer)] = self._result_part(answer, processors)
            if part is None:
                continue
            if plain:
                for row in rows:
                    key = row[0]
                    records[key] = (*part, row[1], *key)
                continue
            for row in rows:
                key, phone_text = row[0], row[1]
                if text_length is not None and isinstance(phone_text, str) and len(phone_text) > text_length:
                    phone_text = phone_text[:text_length]
                rest = [phone_text, *key]
                for i, proc in row_processors:
                    rest[i] = proc(rest[i])
                records[key] = (*part, *rest)
        if plain and text_length is not None:
            for key, record in records.items():
                if isinstance(text := record[TEXT], str) and len(text) > text_length:
                    records[key] = (*record[:TEXT], text[:text_length], *record[TEXT + 1 :])
        if any(size != key_count for size in set(map(len, records))):
            wrong = next(key for key in records if len(key) != key_count)
            raise ValueError(f"key {wrong!r} does not match key columns {self._key_columns}")
        return list(records.values())

    def _result_part(
        self, result: PhoneStatusResult, processors: Sequence[tuple[int, Any]]
    ) -> tuple[Any, ...] | None:
        """The record's values that come from ``result``: all but the phone text and the key.
        None for a result that is no answer (a failure is never written). Its history is written
        only with a vendor status: a label or a rejection is neither a previous status nor a change."""
        if not result.is_answer:
            return None
        checked_at = result.checked_at
        if checked_at.tzinfo is dt.UTC:  # to_naive_utc's result, in one step
            checked_at = checked_at.replace(tzinfo=None)
        elif checked_at.tzinfo is not None:
            checked_at = to_naive_utc(checked_at)
        carrier = result.carrier
        status = _TEXTS[result.status]
        vendor = status in VENDOR_STATUSES
        previous = result.previous_status if vendor else None
        values = [
            status,
            result.vendor_code,
            None if carrier is None else _TEXTS[carrier],
            result.ported,
            checked_at,
            result.order_no,
            previous,
            result.status_changed_at if vendor else None,
            recycled_suspect(previous, status),
        ]
        return self._finish_part(values, self._part_lengths, processors)

    @staticmethod
    def _finish_part(
        values: list[Any], lengths: Sequence[tuple[int, int]], processors: Sequence[tuple[int, Any]]
    ) -> tuple[Any, ...]:
        """Cut texts to ``lengths`` and convert by ``processors``, both (record position, ...)."""
        for i, length in lengths:
            if isinstance(text := values[i], str) and len(text) > length:
                values[i] = text[:length]
        for i, proc in processors:
            if i < TEXT:
                values[i] = proc(values[i])
        return tuple(values)

    def _stored_part(
        self, dialect: sa.Dialect, processors: Sequence[tuple[int, Any]]
    ) -> Callable[[StoredValues], tuple[Any, ...]] | None:
        """How ``ResultStore.fresh_values`` values, read as the driver gives them, become a
        record's part: None when they already are it. That is the common case (SQLite keeps the
        ISO text and the 0/1 a DATETIME and BOOLEAN column of the target would bind, PostgreSQL
        reads what psycopg binds): a million rows answered from the store cost no conversion.

        Otherwise each differing value is converted by the store column's result processor (to
        Python), then the target's bind processor, and texts are cut to the target's lengths.
        """
        store = _STORE
        bind = {i: proc for i, proc in processors if i < TEXT}
        steps: list[tuple[int, Any, Any]] = []
        for i, name in enumerate(STORED_COLUMNS):
            column_type = store.c[name].type.dialect_impl(dialect)
            read = column_type.result_processor(dialect, None)
            if (read or bind.get(i)) and not passes_through(column_type, dialect, read, bind.get(i)):
                steps.append((i, read, bind.get(i)))
        store_lengths = text_lengths(store.c)
        lengths = [(i, n) for i, n in self._part_lengths if n < store_lengths.get(STORED_COLUMNS[i], n + 1)]
        if not steps and not lengths:
            return None

        def convert(values: StoredValues) -> tuple[Any, ...]:
            converted = list(values)
            for i, read, write in steps:
                value = converted[i] if read is None else read(converted[i])
                converted[i] = value if write is None else write(value)
            return Records._finish_part(converted, lengths, ())

        return convert
