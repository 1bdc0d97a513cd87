"""The row filter DAG authors pass, compiled to a bound SQLAlchemy condition.

Filters often arrive as JSON from Airflow Params, so the structure is small and checked strictly:
a mapping ``{"column": value, "other": {"op": ">=", "value": 3}}`` or a list of
``[column, op, value]`` triples, all ANDed. A plain value means equality, ``None`` means IS NULL.
Columns must exist in the reflected table; values are always bound parameters, converted to the
column's type first (JSON has no dates, and ``"3"`` for an integer column is common), so a bad
value fails here with a clear message instead of inside the database. ``!=``, ``<`` and friends
keep SQL's meaning: they never match NULL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.numbers import mask_number

_Condition = sa.ColumnElement[bool]
_SCALARS = (str, int, float, decimal.Decimal, dt.date, dt.time)  # bool is an int; datetime a date
_COMPARE: Mapping[str, Callable[[sa.ColumnElement[Any], Any], _Condition]] = {
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
}
_NULL_OPS = {"is null": True, "is not null": False}
_LIST_OPS = ("in", "not in", "between")
OPS = (*_COMPARE, "in", "not in", "is null", "is not null", "like", "between")


def compile_filter(table: sa.Table, spec: Any) -> sa.ColumnElement[bool] | None:
    """``spec`` (mapping or list of triples) as one ANDed condition; None when there is none."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        conditions = [_from_mapping_item(table, column, value) for column, value in spec.items()]
    elif isinstance(spec, (list, tuple)):
        conditions = [_from_triple(table, item) for item in spec]
    else:
        raise PhoneStatusConfigError(
            f"row filter must be a mapping or a list of [column, op, value], got {type(spec).__name__}"
        )
    return sa.and_(*conditions) if conditions else None


def _from_mapping_item(table: sa.Table, column: Any, value: Any) -> _Condition:
    if not isinstance(value, Mapping):
        return _condition(table, column, "=", value)
    if "op" not in value or not set(value) <= {"op", "value"}:
        raise PhoneStatusConfigError(
            f"row filter on {column!r}: an operator entry is {{'op': ..., 'value': ...}}, "
            f"got keys {sorted(map(str, value))}"
        )
    return _condition(table, column, value["op"], value.get("value"))


def _from_triple(table: sa.Table, item: Any) -> _Condition:
    if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
        raise PhoneStatusConfigError(
            f"row filter conditions are [column, op, value] lists, got {type(item).__name__}"
        )
    return _condition(table, item[0], item[1], item[2] if len(item) == 3 else None)


def _condition(table: sa.Table, name: Any, op: Any, value: Any) -> _Condition:
    if not isinstance(name, str) or name not in table.c:
        raise PhoneStatusConfigError(
            f"row filter column {name!r} is not in table {table.fullname!r}; "
            f"its columns: {', '.join(table.c.keys())}"
        )
    column = table.c[name]
    key = " ".join(op.lower().split()) if isinstance(op, str) else op
    if key not in OPS:
        raise PhoneStatusConfigError(
            f"row filter on {name!r}: unknown operator {op!r}; known: {', '.join(OPS)}"
        )
    where = f"row filter {name!r} {key}"
    if key in _NULL_OPS or (value is None and key in ("=", "!=")):
        if value is not None:
            raise PhoneStatusConfigError(f"{where}: takes no value")
        return column.is_(None) if _NULL_OPS.get(key, key == "=") else column.is_not(None)
    if key in _LIST_OPS:
        values = _values(where, value, exactly=2 if key == "between" else None)
        coerced = [_coerce(where, column, v) for v in values]
        if key == "between":
            return column.between(coerced[0], coerced[1])
        return column.in_(coerced) if key == "in" else column.not_in(coerced)
    _scalar(where, value)
    if key == "like":
        if not isinstance(value, str):
            raise PhoneStatusConfigError(f"{where}: the pattern must be text")
        text = column if isinstance(column.type, sa.String) else sa.cast(column, sa.String)
        return text.like(value)
    return _COMPARE[key](column, _coerce(where, column, value))


def _values(where: str, value: Any, *, exactly: int | None) -> list[Any]:
    """The list operand of in / not in / between: flat, non-empty, no NULLs."""
    if not isinstance(value, (list, tuple)) or not value:
        raise PhoneStatusConfigError(f"{where}: needs a non-empty list of values")
    if exactly is not None and len(value) != exactly:
        raise PhoneStatusConfigError(f"{where}: needs exactly {exactly} values")
    for item in value:
        if item is None:
            raise PhoneStatusConfigError(f"{where}: NULL never matches here; use 'is null'")
        _scalar(where, item)
    return list(value)


def _scalar(where: str, value: Any) -> None:
    if value is None or not isinstance(value, _SCALARS):
        raise PhoneStatusConfigError(
            f"{where}: values must be text, numbers, booleans or dates, got {type(value).__name__}"
        )


def _coerce(where: str, column: sa.ColumnElement[Any], value: Any) -> Any:
    """``value`` as the column's Python type; JSON strings for numbers and dates are converted."""
    kind = column.type
    try:
        if isinstance(kind, sa.Boolean):
            if isinstance(value, bool):
                return value
        elif isinstance(kind, sa.Integer):
            if isinstance(value, (bool, int)):
                return int(value)
            if isinstance(value, (str, float, decimal.Decimal)):
                number = decimal.Decimal(value.strip() if isinstance(value, str) else value)
                if number == number.to_integral_value():
                    return int(number)
        elif isinstance(kind, sa.Numeric):
            if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                return decimal.Decimal(value.strip())
        elif isinstance(kind, sa.DateTime):
            if isinstance(value, dt.datetime):
                return value
            if isinstance(value, dt.date):
                return dt.datetime.combine(value, dt.time())
            if isinstance(value, str):
                return dt.datetime.fromisoformat(value.strip())
        elif isinstance(kind, sa.Date):
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                return value
            if isinstance(value, str):
                return dt.date.fromisoformat(value.strip())
        elif isinstance(kind, sa.String):
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
                return str(value)
        else:
            return value  # a type without a Python counterpart here: let the database judge
    except (ValueError, ArithmeticError):
        pass
    raise PhoneStatusConfigError(
        f"{where}: {mask_number(value)} ({type(value).__name__}) does not fit column type {kind!r}"
    )


# -- filters from untrusted input ----------------------------------------------------------------
# A filter typed into a trigger form (or sent as a run's conf) is checked where it arrives, before
# any connection exists: its shape, its size, and which columns it may name. The operator checks
# it again against the reflected table when it compiles it.

#: A plain SQL identifier: letters, digits and ``_``, not starting with a digit, at most 63 long.
IDENTIFIER_PATTERN = "^[A-Za-z_][A-Za-z0-9_]{0,62}$"


def is_identifier(value: Any) -> bool:
    """``value`` is a plain SQL identifier (:data:`IDENTIFIER_PATTERN`): a name that needs no quoting."""
    return isinstance(value, str) and re.fullmatch(IDENTIFIER_PATTERN, value) is not None


def filter_json_schema(
    *, max_conditions: int = 10, max_text: int = 200, max_items: int = 1000
) -> dict[str, Any]:
    """The JSON schema of a mapping filter with JSON values, e.g. for an Airflow ``Param``: what
    :func:`check_untrusted_filter` accepts with the same limits, but for the columns it may name."""
    scalar = {"type": "string", "maxLength": max_text}
    operand = {"anyOf": [scalar, {"type": ["number", "boolean", "null"]}]}
    items = {"anyOf": [scalar, {"type": ["number", "boolean"]}]}
    entry = {
        "type": "object",
        "required": ["op"],
        "additionalProperties": False,
        "properties": {
            "op": {"enum": list(OPS)},
            "value": {
                "anyOf": [operand, {"type": "array", "minItems": 1, "maxItems": max_items, "items": items}]
            },
        },
    }
    return {
        "type": "object",
        "maxProperties": max_conditions,
        "propertyNames": {"pattern": IDENTIFIER_PATTERN},
        "additionalProperties": {"anyOf": [operand, entry]},
    }


def check_untrusted_filter(
    spec: Any,
    *,
    table: str,
    phone_column: str,
    allowed: tuple[str, ...] | None = None,
    max_conditions: int = 10,
    max_text: int = 200,
    max_items: int = 1000,
) -> dict[str, Any]:
    """A mapping filter from untrusted JSON, checked without a connection; a copy of it.

    At most ``max_conditions`` columns, each an identifier, not ``phone_column`` (filtering on it
    would let a form user probe whether a number is in ``table``) and, unless ``allowed`` is None,
    one of ``allowed``. Values are text (at most ``max_text`` characters), numbers, booleans or
    null; lists of 1 to ``max_items`` of them (no null) for in, not in and between. Raises
    :class:`PhoneStatusConfigError` naming the column and what is wrong.
    """
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise PhoneStatusConfigError(f"row filter must be a JSON object, got {type(spec).__name__}")
    if len(spec) > max_conditions:
        raise PhoneStatusConfigError(f"row filter has {len(spec)} conditions; at most {max_conditions}")
    for column, condition in spec.items():
        where = f"row filter on {column!r}"
        if not is_identifier(column):
            raise PhoneStatusConfigError(f"{where}: not a column name")
        if column == phone_column:
            raise PhoneStatusConfigError(f"{where}: filtering on the phone column is not allowed")
        if allowed is not None and column not in allowed:
            names = ", ".join(allowed) or "none"
            raise PhoneStatusConfigError(f"{where}: not a filter column of {table} (allowed: {names})")
        _check_untrusted(where, condition, max_text=max_text, max_items=max_items)
    return dict(spec)


def _check_untrusted(where: str, condition: Any, *, max_text: int, max_items: int) -> None:
    """One column's condition: a plain value, or ``{"op": ..., "value": ...}``."""
    if not isinstance(condition, Mapping):
        _json_scalar(where, condition, max_text, nullable=True)
        return
    if "op" not in condition or not set(condition) <= {"op", "value"}:
        raise PhoneStatusConfigError(f"{where}: a condition is {{'op': ..., 'value': ...}}")
    op = condition["op"]
    key = " ".join(op.lower().split()) if isinstance(op, str) else None
    if key not in OPS:
        raise PhoneStatusConfigError(f"{where}: unknown operator {op!r}; known: {', '.join(OPS)}")
    operand = condition.get("value")
    if key in _NULL_OPS:
        if operand is not None:
            raise PhoneStatusConfigError(f"{where}: {key!r} takes no value")
    elif key in _LIST_OPS:
        if not isinstance(operand, list) or not 1 <= len(operand) <= max_items:
            raise PhoneStatusConfigError(f"{where}: {key!r} needs a list of 1 to {max_items} values")
        if key == "between" and len(operand) != 2:
            raise PhoneStatusConfigError(f"{where}: 'between' needs exactly 2 values")
        for item in operand:
            _json_scalar(where, item, max_text, nullable=False)
    else:
        _json_scalar(where, operand, max_text, nullable=key in ("=", "!="))


def _json_scalar(where: str, value: Any, max_text: int, *, nullable: bool) -> None:
    if value is None:
        if not nullable:
            raise PhoneStatusConfigError(f"{where}: null is not allowed here (use 'is null')")
    elif not isinstance(value, (str, int, float, bool)):
        raise PhoneStatusConfigError(f"{where}: values must be text, numbers, booleans or null")
    elif isinstance(value, str) and len(value) > max_text:
        raise PhoneStatusConfigError(f"{where}: text values are at most {max_text} characters")
