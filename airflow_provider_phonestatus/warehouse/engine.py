"""The warehouse's SQLAlchemy engine, from an Airflow SQL connection, the way common.sql gets it.

The operator reaches the warehouse only through this, and so can a DAG's own task (a load, a
check over the run log): whatever the connection type, the engine is the one its ``DbApiHook``
builds, with ``hook_params`` and a ``database`` override applied as ``BaseSQLOperator`` applies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import BaseHook

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError


def sql_hook(
    conn_id: str, *, hook_params: Mapping[str, Any] | None = None, database: str | None = None
) -> DbApiHook:
    """The ``DbApiHook`` of the Airflow connection ``conn_id`` (``sqlite``, ``postgres``,
    ``mysql``, ``duckdb``, ...), built with ``hook_params``; ``database`` overrides the
    connection's database (PostgreSQL) or schema (the others), as in ``BaseSQLOperator``."""
    connection = BaseHook.get_connection(conn_id)
    hook = connection.get_hook(hook_params=dict(hook_params or {}))  # type: ignore[no-untyped-call]
    if not isinstance(hook, DbApiHook):
        raise PhoneStatusConfigError(
            f"connection {conn_id!r} ({type(hook).__name__}) is not a SQL connection (its hook is no "
            "common.sql DbApiHook); use a SQL connection such as sqlite, postgres, mysql or duckdb"
        )
    if database:
        if hook.conn_type == "postgres":
            hook.database = database
        else:
            hook.schema = database
    return hook


def sqlalchemy_engine(
    conn_id: str, *, hook_params: Mapping[str, Any] | None = None, database: str | None = None
) -> sa.Engine:
    """The engine of :func:`sql_hook`'s hook; dispose of it when done.

    Raises :class:`PhoneStatusConfigError` when the connection is no SQL connection, or when the
    SQLAlchemy dialect it needs is not installed.
    """
    hook = sql_hook(conn_id, hook_params=hook_params, database=database)
    try:
        engine: sa.Engine = hook.get_sqlalchemy_engine()
    except (ImportError, sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
        extra = " (pip install 'airflow-provider-phonestatus[duckdb]')" if hook.conn_type == "duckdb" else ""
        raise PhoneStatusConfigError(
            f"connection {conn_id!r} gives no usable SQLAlchemy engine: {exc}{extra}"
        ) from exc
    return engine
