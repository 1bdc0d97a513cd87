"""`make demo`: the revalidation DAG on a messy SQLite warehouse, through real Airflow.

Starts the sandbox (the stand-in of the vendor API) on a free loopback port, (re)loads a table of
messy customer rows into ``.demo/warehouse.db`` as a nightly CRM export would, runs the
``phone_status_revalidation`` DAG with ``airflow dags test``, and prints what it did. The results
store lives in the same SQLite file and survives between runs, so a second ``make demo`` finds
every number in it: the table is reloaded, but nothing is paid for twice.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import sqlalchemy as sa

from airflow_provider_phonestatus.sandbox.customers import messy_phones

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
PLAN_PER_MINUTE = 12_000  # the demo's plan: 200 lookups/s, so a few thousand rows take seconds
TABLE = "customers"


def start_sandbox() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_phonestatus.sandbox", "--port", "0",
         "--rate-limit-per-minute", str(PLAN_PER_MINUTE), "--window-s", "5", "--latency-ms", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if "listening on" not in first:
        proc.kill()
        raise SystemExit(f"the sandbox did not start: {first}{proc.stdout.read()}")
    return proc, first.split("listening on", 1)[1].split()[0]


def load_customers(engine: sa.Engine, rows: int, distinct: int) -> None:
    """Replace the table with a fresh export: the same people, phone values as the CRM holds them."""
    with engine.begin() as conn:
        table = sa.Table(
            TABLE,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(64)),
            sa.Column("phone", sa.String(64)),
        )
        table.drop(conn, checkfirst=True)
        table.create(conn)
        phones = messy_phones(rows, distinct, seed=2024)
        conn.execute(
            table.insert(), [{"id": i, "name": f"customer {i}", "phone": p} for i, p in enumerate(phones)]
        )


def airflow_env(sandbox_url: str, warehouse: Path) -> dict[str, str]:
    conn = {"conn_type": "phonestatus", "host": sandbox_url, "password": "sandbox-key",
            "extra": {"rate_limit_per_minute": PLAN_PER_MINUTE}}  # fmt: skip
    return {
        **os.environ,
        "AIRFLOW_HOME": str(DEMO / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": f"sqlite:///{warehouse}",
        "AIRFLOW_CONN_PHONESTATUS_DEFAULT": json.dumps(conn),
        "PHONESTATUS_TABLES": json.dumps({TABLE: {"key_column": "id", "phone_column": "phone"}}),
    }


def airflow(env: dict[str, str], *args: str, log: Path) -> None:
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    with log.open("a") as out:
        out.write(f"\n$ airflow {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-40:]
        raise SystemExit(f"airflow {' '.join(args)} failed; last lines of {log}:\n" + "\n".join(tail))


def report(engine: sa.Engine, ledger: dict[str, object], elapsed: float) -> str:
    with engine.connect() as conn:
        grouped = conn.execute(sa.text(f"SELECT phone_status, COUNT(*) FROM {TABLE} GROUP BY 1")).all()
        counts: Counter[str | None] = Counter({status: int(n) for status, n in grouped})
        run = conn.execute(
            sa.text(
                "SELECT state, due_rows, distinct_numbers, requests_sent, paid_lookups, from_store,"
                " local_labels FROM phone_status_runs ORDER BY started_at DESC LIMIT 1"
            )
        ).one()
    total = sum(counts.values())
    lines = [f"status distribution of {total:,} rows in {TABLE}:"]
    lines += [
        f"  {status or '(not checked)':<22} {n:>7,}  {n / total:6.1%}" for status, n in counts.most_common()
    ]
    lines += [
        f"this run ({run.state}): {run.due_rows:,} due rows, {run.distinct_numbers:,} distinct numbers",
        f"  requests sent          {run.requests_sent:>7,}",
        f"  paid lookups           {run.paid_lookups:>7,}",
        f"  answered from store    {run.from_store:>7,}",
        f"  labelled locally       {run.local_labels:>7,}  (invalid / unsupported: never sent)",
        f"sandbox ledger: {ledger['requests']:,} requests, {ledger['billed']:,} billed, "
        f"{ledger['throttled']:,} throttled",
        f"elapsed {elapsed:.1f} s",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--distinct", type=int, default=2000)
    args = parser.parse_args()
    started = time.monotonic()
    DEMO.mkdir(exist_ok=True)
    warehouse = DEMO / "warehouse.db"
    log = DEMO / "airflow.log"
    second = warehouse.exists()
    engine = sa.create_engine(f"sqlite:///{warehouse}")
    sandbox, url = start_sandbox()
    try:
        print(f"sandbox (vendor stand-in) at {url}; plan {PLAN_PER_MINUTE:,}/min")
        load_customers(engine, args.rows, args.distinct)
        which = "again" if second else "first run"
        print(f"loaded {args.rows:,} messy customer rows into {warehouse} ({which})")
        env = airflow_env(url, warehouse)
        airflow(env, "db", "migrate", log=log)
        airflow(env, "pools", "set", "phonestatus_api", "1", "one API key: one run at a time", log=log)
        print("running phone_status_revalidation with `airflow dags test` (log: .demo/airflow.log) ...")
        airflow(env, "dags", "test", "phone_status_revalidation", log=log)
        ledger = httpx.get(f"{url}/_sandbox/ledger", timeout=5).json()
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    print(report(engine, ledger, time.monotonic() - started))
    if not second:
        print("run `make demo` again: the table is reloaded, and the results store answers every number.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
