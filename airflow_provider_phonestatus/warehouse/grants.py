"""What to grant, said in the warehouse's own words, for errors about a missing privilege."""

from __future__ import annotations

import sqlalchemy as sa


def current_user(conn: sa.Connection) -> str:
    """The login the run uses, as the database names it ("the run's user" when it cannot say)."""
    if conn.dialect.name not in ("postgresql", "mysql"):
        return "the run's user"
    try:
        user = conn.execute(sa.select(sa.func.current_user())).scalar()
    except sa.exc.DBAPIError:
        conn.rollback()
        return "the run's user"
    return str(user) if user else "the run's user"


def grant_hint(conn: sa.Connection, privileges: str, on: str) -> str:
    """``; grant it with: GRANT <privileges> ON <on> TO <user>`` where the dialect has GRANT.

    ``on`` is a table (``schema.table``), ``SCHEMA s`` or ``DATABASE d`` as the GRANT takes it.
    """
    if conn.dialect.name == "sqlite":
        return "; check that the database file and its directory are writable by the worker"
    if conn.dialect.name == "duckdb":
        return "; check that the database file is writable and no other process holds it open for writing"
    user = current_user(conn)
    return f"; grant it with: GRANT {privileges} ON {on} TO {user}"


def schema_of(conn: sa.Connection, schema: str | None) -> str:
    """``schema``, or the connection's default schema (MariaDB: the database) when None."""
    if schema is not None:
        return schema
    return sa.inspect(conn).default_schema_name or "public"
