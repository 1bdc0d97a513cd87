"""The warehouse's SQLAlchemy engine, from an Airflow SQL connection.

The operator reaches the warehouse only through this, and so can a DAG's own task (a load, a
check over the run log): whatever the connection type, the engine is the one its hook builds.
"""

from __future__ import annotations

import sqlalchemy as sa
from airflow.sdk import BaseHook

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError


def sqlalchemy_engine(conn_id: str) -> sa.Engine:
    """The engine of the Airflow connection ``conn_id``, built by its hook (``sqlite``,
    ``postgres``, ``mysql``, ...); dispose of it when done.

    Raises :class:`PhoneStatusConfigError` when the connection's hook gives no SQLAlchemy engine.
    """
    hook = BaseHook.get_connection(conn_id).get_hook()  # type: ignore[no-untyped-call]
    get_engine = getattr(hook, "get_sqlalchemy_engine", None)
    if get_engine is None:
        raise PhoneStatusConfigError(
            f"connection {conn_id!r} ({type(hook).__name__}) gives no SQLAlchemy engine; "
            "use a SQL connection such as sqlite, postgres or mysql"
        )
    engine: sa.Engine = get_engine()
    return engine
