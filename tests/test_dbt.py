"""A dbt project that rebuilds the customer table at every run, and the operator's status table beside it.

dbt drops and recreates ``customers`` at each run, so statuses written into it would vanish; with
``status_table`` the operator keeps them in a table of its own, keyed like the customers, and the
example's ``customers_with_status`` model joins the two. The example project
(``examples/dbt_customers``) is copied per test, as a DAG author would copy it; the test rewrites
its seed to change phone values between runs. dbt runs from its own venv (``tests/dbt_env.py``);
the operator runs through real Airflow against the sandbox vendor, whose ledger counts requests.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.numbers import parse_number
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.sandbox.customers import expected_status, messy_phones
from tests.dbt_env import PROJECT, ensure_dbt_venv, run_dbt
from tests.test_operator import distinct_mobiles, run_task

pytestmark = pytest.mark.usefixtures("airflow_db")

PG_URI = "postgres://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
STATUS_TABLE = "customer_phone_status"


@pytest.fixture(scope="session")
def dbt_venv() -> Path:
    """``dbt`` of the dbt venv, built on first use (some 20 s here)."""
    return ensure_dbt_venv()


@dataclass
class DbtWarehouse:
    """One database, a copy of the example dbt project pointed at it, and an Airflow connection."""

    target: str  #: dbt target: postgres or duckdb
    conn_id: str  #: Airflow connection id of the same database
    url: str  #: SQLAlchemy URL the test reads results through
    project: Path
    schema: str  #: where dbt builds customers and customers_with_status
    status_schema: str  #: where the operator keeps its status, results and run-log tables
    env: dict[str, str] = field(default_factory=dict)

    def dbt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_dbt(*args, "--target", self.target, project_dir=self.project, env=self.env)

    def write_seed(self, phones: Sequence[str | None]) -> None:
        """The seed dbt loads into raw_customers: ids 1.., one phone per row (None: empty, NULL)."""
        with (self.project / "seeds" / "raw_customers.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "name", "phone"])
            writer.writerows([i, f"Customer {i}", p or ""] for i, p in enumerate(phones, start=1))

    def rows(self, relation: str) -> list[dict[str, Any]]:
        """Every row of ``schema.relation`` by id, through a fresh engine disposed before returning
        (DuckDB admits one writer process per file: dbt must find it free)."""
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                table = sa.Table(relation, sa.MetaData(), schema=self.schema, autoload_with=conn)
                return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]
        finally:
            engine.dispose()

    def check_kwargs(self) -> dict[str, Any]:
        s = self.status_schema
        return {
            "conn_id": self.conn_id,
            "table": f"{self.schema}.customers",
            "key_column": "id",
            "phone_column": "phone",
            "status_table": f"{s}.{STATUS_TABLE}",
            "results_table": f"{s}.phone_status_results",
            "run_log_table": f"{s}.phone_status_runs",
        }


def _execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(params=["postgres", "duckdb"])
def dbt_warehouse(
    request: pytest.FixtureRequest, dbt_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DbtWarehouse]:
    """PostgreSQL (schemas of this test's own, dropped at teardown) or a DuckDB file of its own."""
    target: str = request.param
    token = secrets.token_hex(4)
    schema, status_schema = f"dbt_{token}", f"phonestatus_{token}"
    project = tmp_path / "dbt_customers"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    env = {"PHONESTATUS_DBT_SCHEMA": schema, "PHONESTATUS_DBT_STATUS_SCHEMA": status_schema}
    conn_id = f"phonestatus_dbt_{target}"
    if target == "postgres":
        url, uri = PG_URL, PG_URI
        try:
            _execute(url, f'CREATE SCHEMA "{schema}"', f'CREATE SCHEMA "{status_schema}"')
        except sa.exc.OperationalError as exc:
            down = f"postgres is not reachable at {PG_URI}: {exc.orig}\nStart it with: .ci/services"
            pytest.fail(down, pytrace=False)
    else:
        if importlib.util.find_spec("duckdb") is None:  # a skip would hide an untested target
            pytest.fail("duckdb is not installed here: pip install -e '.[test]'", pytrace=False)
        path = tmp_path / "warehouse.duckdb"
        url, uri = f"duckdb:///{path}", json.dumps({"conn_type": "duckdb", "host": str(path)})
        env["PHONESTATUS_DBT_DUCKDB_PATH"] = str(path)
        _execute(url, f'CREATE SCHEMA "{status_schema}"')
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
    try:
        yield DbtWarehouse(target, conn_id, url, project, schema, status_schema, env)
    finally:
        if target == "postgres":
            _execute(
                url,
                "SET lock_timeout = '10s'",
                f'DROP SCHEMA IF EXISTS "{schema}" CASCADE',
                f'DROP SCHEMA IF EXISTS "{status_schema}" CASCADE',
            )


def blank(phone: str | None) -> str | None:
    """None for NULL and blank values: seed loaders differ (dbt-postgres's agate reads a
    whitespace-only field as NULL, dbt-duckdb keeps it), and both mean "no phone"."""
    return phone if phone and phone.strip() else None


def assert_statuses_current(rows: list[dict[str, Any]]) -> None:
    """Each row carries the status the sandbox's truth gives its phone, checked for that phone.
    Messages name ids, never phone numbers."""
    wrong = [r["id"] for r in rows if r["phone_status"] != expected_status(r["phone"])]
    assert not wrong, f"rows whose status is not the truth table's: ids {wrong}"
    stale = [r["id"] for r in rows if r["phone_status_is_current"] is not True]
    assert not stale, f"rows whose status is not for their current phone: ids {stale}"
    assert all(r["phone_checked_at"] is not None for r in rows)
    mobile = [r for r in rows if r["phone_status"] not in ("invalid", "unsupported")]
    assert mobile and all(r["phone_carrier"] for r in mobile)


def test_dbt_rebuilt_customers_keep_their_statuses_in_the_status_table(
    dbt_warehouse: DbtWarehouse, vendor: SandboxServer
) -> None:
    wh = dbt_warehouse
    phones = list(messy_phones(80, 40, seed=23))
    wh.write_seed(phones)
    wh.dbt("seed")
    wh.dbt("run", "--select", "customers")  # the status source does not exist before the operator
    loaded = [r["phone"] for r in wh.rows("customers")]
    pairs = enumerate(zip(loaded, phones, strict=True), start=1)
    altered = [i for i, (got, put) in pairs if blank(got) != blank(put)]
    assert not altered, f"phones dbt did not load as written (zeros or '+' lost?): ids {altered}"
    distinct = distinct_mobiles(phones)

    state, _ = run_task(**wh.check_kwargs())
    assert state == "success"
    wh.dbt("run")  # customers rebuilt, customers_with_status joined to the fresh status table
    rows = wh.rows("customers_with_status")
    assert [r["id"] for r in rows] == list(range(1, len(phones) + 1))
    assert_statuses_current(rows)
    assert vendor.ledger()["requests"] == len(distinct)  # one request per distinct number

    # dbt rebuilds the source with the same data: the statuses survive, the operator pays nothing.
    wh.dbt("run", "--select", "customers")
    state, _ = run_task(**wh.check_kwargs())
    assert state == "success"
    assert vendor.ledger()["requests"] == len(distinct)

    # k phones change in the CRM: after the rebuild those rows show a status that is not current...
    changed = {3: "13900001231", 17: "13900001235", 42: "13900001238"}
    assert all(parse_number(p).is_mobile for p in changed.values())
    assert not {parse_number(p).national for p in changed.values()} & distinct
    phones = [changed.get(i, p) for i, p in enumerate(phones, start=1)]
    wh.write_seed(phones)
    wh.dbt("seed")
    wh.dbt("run")
    stale = {r["id"] for r in wh.rows("customers_with_status") if not r["phone_status_is_current"]}
    assert stale == set(changed)

    # ...the operator rechecks exactly those k numbers, and the next dbt run shows their statuses.
    state, _ = run_task(**wh.check_kwargs())
    assert state == "success"
    assert vendor.ledger()["requests"] == len(distinct) + len(changed)
    wh.dbt("run", "--select", "customers_with_status")
    rows = wh.rows("customers_with_status")
    assert_statuses_current(rows)
    assert [rows[i - 1]["phone_status"] for i in changed] == [expected_status(p) for p in changed.values()]
    wh.dbt("test")  # the example's own data tests hold on the result
