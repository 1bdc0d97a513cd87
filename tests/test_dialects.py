"""Snowflake and BigQuery cannot run here: the status-table path's statements are compiled with
their own SQLAlchemy dialects (``snowflake-sqlalchemy``, ``sqlalchemy-bigquery``), no server.

What this proves: every statement a ``portable_sql=True`` run over a status table would send
compiles for the dialect, with the dialect's quoting and types. What it does not prove: that the
warehouse accepts them at run time (temporary tables, privileges, upsert-free writes), nor speed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.warehouse.access import portable_path
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.due import due_select
from airflow_provider_phonestatus.warehouse.lookups import GROUPINGS, lookups_table, reconciliation
from airflow_provider_phonestatus.warehouse.runlog import runs_table
from airflow_provider_phonestatus.warehouse.store import ResultStore, results_table
from airflow_provider_phonestatus.warehouse.target import TargetTable, status_table_definition
from airflow_provider_phonestatus.warehouse.writer import RowWriter

NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
COLUMNS = StatusColumns()


def statements(dialect: sa.Dialect) -> dict[str, Any]:
    """Every statement kind of a portable run over ``crm.customers`` with ``ps.customer_status``."""
    source = sa.Table(
        "customers",
        sa.MetaData(),
        sa.Column("customer_id", sa.String(36), primary_key=True),
        sa.Column("region", sa.String(16)),
        sa.Column("phone", sa.String(64)),
        schema="crm",
    )
    status = status_table_definition("ps.customer_status", source, ["customer_id"], COLUMNS)
    target = TargetTable(source, ("customer_id",), "phone", COLUMNS, (), status, "ps.customer_status")
    writer = RowWriter(target, portable=True)
    lookup, store_delete, store_insert = ResultStore(results_table("ps.results")).portable_statements()
    assert portable_path(dialect, portable_sql=True)
    due = due_select(target, RevalidationPolicy(), NOW, row_filter={"region": "east"})
    return {
        "create status table": sa.schema.CreateTable(status),
        "create results store": sa.schema.CreateTable(results_table("ps.results")),
        "create run log": sa.schema.CreateTable(runs_table("ps.runs")),
        "due rows": sa.select(
            sa.func.row_number().over(order_by=due.selected_columns.urgency), due.subquery()
        ),
        **{f"write {i}": s for i, s in enumerate(writer.portable_statements()[0])},
        "store lookup": lookup,
        "store delete": store_delete,
        "store insert": store_insert,
        "store history": ResultStore(results_table("ps.results")).history_statement(),
        "create ledger": sa.schema.CreateTable(lookups_table("ps.lookups")),
        "ledger insert": sa.insert(lookups_table("ps.lookups")),
        **{
            f"reconcile by {by}": reconciliation(lookups_table("ps.lookups"), by, start=NOW)
            for by in GROUPINGS
        },
        "prune": target.prune_statement(),
    }


@pytest.mark.parametrize("name", ["snowflake", "bigquery"])
def test_the_status_table_path_compiles_for_analytical_warehouses(name: str) -> None:
    dialect = sa.dialects.registry.load(name)()
    compiled = {
        kind: str(statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": False}))
        for kind, statement in statements(dialect).items()
    }
    quote = "`" if name == "bigquery" else ""
    due = compiled["due rows"]
    # the source left-joined to its status table by the key, filtered, numbered by urgency
    assert "LEFT OUTER JOIN" in due and "row_number() OVER" in due.replace("ROW_NUMBER", "row_number")
    assert f"{quote}crm{quote}.{quote}customers{quote}" in due
    assert "IS DISTINCT FROM" in due  # a changed phone, NULL-safe
    create = compiled["create status table"]
    assert f"{quote}customer_id{quote} " in create
    # BigQuery's dialect declares no keys: the status table's key is then checked by a query
    assert ("PRIMARY KEY" in create) is (name == "snowflake")
    assert compiled["write 0"].startswith("DELETE FROM") and compiled["write 1"].startswith("INSERT INTO")
    assert "NOT (EXISTS" in compiled["prune"] or "NOT EXISTS" in compiled["prune"]
    banned = ["ON CONFLICT", "ON DUPLICATE", "MERGE", "JSON"]
    if name != "bigquery":  # BigQuery's dialect writes every IN list as IN UNNEST(...)
        banned.append("UNNEST")
    for kind, sql in compiled.items():  # only portable statements: no upsert, no arrays, no JSON
        for word in banned:
            assert word not in sql.upper(), f"{kind} uses {word}"
