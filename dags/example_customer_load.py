"""Example upstream DAG: loads customer rows and emits the table's asset.

It stands for your real loading DAG (an ELT job, a CDC sync, ...). What matters is the last
line of its loading task: ``outlets=[Asset("warehouse://crm/customers")]``. When that task
succeeds, Airflow records an asset event and ``phone_status_on_new_rows`` runs on it.

Here the load inserts the phone values given in the trigger form (Param ``phones``) into the
first allow-listed table (``crm.customers`` by default), with the next free integer ids. It
creates a minimal table (``id`` integer primary key, ``phone`` VARCHAR(64)) when it is missing;
the schema (``crm``) must exist. It needs a single integer key column.
"""

from __future__ import annotations

from typing import Any

import pendulum
import phone_status_config as cfg
from airflow.sdk import DAG, Param, task

from airflow_provider_phonestatus.warehouse.engine import sqlalchemy_engine

DAG_ID = "example_customer_load"
SAMPLE_PHONES = ["+86 138 0013 8001", "13900139005", "0086 137 0013 7007", "010-12345678", "n/a"]

_table = next(iter(cfg.tables().values()))


@task(task_id="load_customers", outlets=[_table.source_asset()])
def load_customers(table_name: str, **context: Any) -> dict[str, int]:
    """Insert the form's phone values as new rows; the outlet tells the scheduler."""
    import sqlalchemy as sa

    table = cfg.tables()[table_name]
    if len(table.key_columns) != 1:
        raise ValueError(
            f"the example load needs a single integer key column, {table.name} has {table.key_columns}"
        )
    phones = list(context["params"]["phones"])
    schema, _, name = table.name.rpartition(".")
    key, phone = table.key_columns[0], table.phone_column
    target = sa.Table(
        name,
        sa.MetaData(),
        sa.Column(key, sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(phone, sa.String(64)),
        schema=schema or None,
    )
    engine = sqlalchemy_engine(cfg.warehouse_conn_id())
    try:
        with engine.begin() as conn:
            target.create(conn, checkfirst=True)
            start = conn.execute(sa.select(sa.func.coalesce(sa.func.max(target.c[key]), 0))).scalar_one() + 1
            rows = [{key: start + i, phone: value} for i, value in enumerate(phones)]
            if rows:
                conn.execute(target.insert(), rows)
    finally:
        engine.dispose()
    return {"rows_inserted": len(phones), "first_id": int(start)}


with DAG(
    dag_id=DAG_ID,
    description="Example: load customer rows and emit the table's asset",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz=cfg.timezone_name()),
    catchup=False,
    params={
        "phones": Param(
            SAMPLE_PHONES,
            type="array",
            items={"type": ["string", "null"], "maxLength": 64},
            maxItems=1000,
            title="Phone values",
            description="Phone values to insert as new rows, in any spelling.",
        )
    },
    tags=["phonestatus", "example"],
    doc_md=__doc__,
) as dag:
    load_customers(table_name=_table.name)
