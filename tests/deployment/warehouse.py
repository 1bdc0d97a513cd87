"""The deployment's warehouse: ``crm.customers`` in a PostgreSQL database of its own.

The example DAGs' defaults apply unchanged (``PHONESTATUS_TABLES`` unset: ``crm.customers`` with
``id`` and ``phone``; connection ``warehouse_default``). Each test adds rows under a ``region`` of
its own holding numbers no other test uses, so tests can filter on it and pay for their own rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.numbers import parse_number
from airflow_provider_phonestatus.sandbox.customers import messy_phones
from airflow_provider_phonestatus.warehouse.runlog import runs_table

#: The side tables of the example DAGs, by their defaults (the deployment sets no Variable for them).
RESULTS_TABLE = "phone_status_results"
SUPPRESSIONS_TABLE = "phone_status_suppressions"


def distinct_mobiles(phones: list[Any]) -> set[str]:
    """The national numbers a correct run pays for: one per distinct mobile number."""
    return {p.national for p in map(parse_number, phones) if p.is_mobile and p.national}


@dataclass
class Warehouse:
    engine: sa.Engine
    table: sa.Table
    numbers: set[str] = field(default_factory=set)  #: national numbers already in the table

    @classmethod
    def create(cls, airflow_uri: str, name: str = "customers") -> Warehouse:
        """Create ``crm.<name>`` in the database of the Airflow connection URI ``airflow_uri``."""
        engine = sa.create_engine(airflow_uri.replace("postgres://", "postgresql+psycopg2://", 1))
        table = sa.Table(
            name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("region", sa.String(32)),
            sa.Column("phone", sa.String(64)),
            schema="crm",
        )
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema("crm", if_not_exists=True))
            table.create(conn, checkfirst=True)
        return cls(engine, table)

    def add(self, region: str, rows: int, distinct: int, seed: int) -> list[str | None]:
        """Insert messy rows of ``distinct`` new numbers under ``region``; returns their phones."""
        return self.add_phones(region, list(messy_phones(rows, distinct, seed=seed)))

    def add_phones(self, region: str, phones: list[str | None]) -> list[str | None]:
        """Insert a row per phone value under ``region`` (numbers new to the table); returns them."""
        phones = self.claim(phones)
        with self.engine.begin() as conn:
            start = conn.execute(sa.select(sa.func.coalesce(sa.func.max(self.table.c.id), 0))).scalar_one()
            conn.execute(
                self.table.insert(),
                [{"id": start + 1 + i, "region": region, "phone": p} for i, p in enumerate(phones)],
            )
        return phones

    def claim(self, phones: list[str | None]) -> list[str | None]:
        """``phones``, once their numbers are known to be new to the table (tests stay independent)."""
        fresh = distinct_mobiles(phones)
        assert not fresh & self.numbers, "these phones repeat numbers of another test: pick another seed"
        self.numbers |= fresh
        return phones

    def rows(self, region: str | None = None) -> list[dict[str, Any]]:
        """Rows (of ``region``), ordered by id, with the status columns the operator added."""
        with self.engine.connect() as conn:
            table = sa.Table(self.table.name, sa.MetaData(), schema="crm", autoload_with=conn)
            query = sa.select(table).order_by(table.c.id)
            if region is not None:
                query = query.where(table.c.region == region)
            return [dict(r._mapping) for r in conn.execute(query)]

    def age(self, region: str, checked_at: dt.datetime) -> None:
        """Make every status of ``region`` old: its rows' ``phone_checked_at`` and its numbers'
        answers in the results store (``phone_status_results``, the default) say ``checked_at``."""
        numbers = distinct_mobiles([r["phone"] for r in self.rows(region)])
        with self.engine.begin() as conn:
            table = sa.Table("customers", sa.MetaData(), schema="crm", autoload_with=conn)
            conn.execute(table.update().where(table.c.region == region).values(phone_checked_at=checked_at))
            store = sa.Table(RESULTS_TABLE, sa.MetaData(), autoload_with=conn)
            conn.execute(store.update().where(store.c.national.in_(numbers)).values(checked_at=checked_at))

    def suppressions(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The suppression list's entries that a run of ``dag_id`` recorded (the table the
        Variable ``phonestatus_suppressions_table`` names by default)."""
        with self.engine.connect() as conn:
            table = sa.Table(SUPPRESSIONS_TABLE, sa.MetaData(), autoload_with=conn)
            query = sa.select(table).where(table.c.dag_id == dag_id, table.c.run_id == run_id)
            return [dict(r._mapping) for r in conn.execute(query)]

    def run_log(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The operator's run log rows of one DAG run."""
        runs = runs_table()
        with self.engine.connect() as conn:
            query = sa.select(runs).where(runs.c.dag_id == dag_id, runs.c.run_id == run_id)
            return [dict(r._mapping) for r in conn.execute(query)]
