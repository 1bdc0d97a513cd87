"""A ``duckdb`` connection: a DuckDB database file, for the operator and any common.sql operator.

The provider registers this connection type itself. The older ``airflow-provider-duckdb`` (0.2.0,
2023) depends on ``duckdb-engine``, whose table reflection fails with SQLAlchemy 2.1; this hook
builds its engine on ``duckdb-sqlalchemy`` (``pip install 'airflow-provider-phonestatus[duckdb]'``).
Install one of the two, not both: both register the ``duckdb`` SQLAlchemy dialect.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.get_provider_info import DUCKDB_UI_FIELD_BEHAVIOUR


class DuckDBHook(DbApiHook):
    """A DuckDB database file, its path in the connection's host (``:memory:`` for a private one).

    DuckDB lets one process at a time open a file for writing: do not point two running tasks
    (or a task and ``dbt run``) at the same file at once.
    """

    conn_name_attr = "duckdb_conn_id"
    default_conn_name = "duckdb_default"
    conn_type = "duckdb"
    hook_name = "DuckDB"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return DUCKDB_UI_FIELD_BEHAVIOUR

    def path(self) -> str:
        """The database file's path, from the connection's host."""
        connection = self.get_connection(getattr(self, self.conn_name_attr))
        if not connection.host:
            raise PhoneStatusConfigError(
                f"connection {connection.conn_id!r} has no DuckDB file: set its host to the file's path"
            )
        return str(connection.host)

    def get_conn(self) -> Any:
        import duckdb

        return duckdb.connect(self.path())

    @property
    def sqlalchemy_url(self) -> sa.URL:
        return sa.URL.create("duckdb", database=self.path())

    def get_uri(self) -> str:
        return self.sqlalchemy_url.render_as_string(hide_password=False)
