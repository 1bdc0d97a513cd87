"""``phonestatus-ledger``: paid lookups per day, run or DAG, or line by line, to match a vendor bill.

Reads the lookup ledger (``warehouse/lookups.py``) through an Airflow SQL connection (``--conn-id``)
or a SQLAlchemy URL (``--url``) and prints CSV. ``--sql`` prints the statement instead of running
it, for a warehouse console. Numbers are masked (``138****8000``); the order number is the key a
vendor's bill line is matched by. Days are UTC, as the ledger's times are.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from airflow_provider_phonestatus.numbers import mask_number
from airflow_provider_phonestatus.warehouse.lookups import (
    DEFAULT_NAME,
    GROUPINGS,
    lookups_table,
    reconciliation,
)
from airflow_provider_phonestatus.warehouse.table import reflect


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phonestatus-ledger",
        description="List paid phone-status lookups from the lookup ledger, to match a vendor bill.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--conn-id", help="Airflow SQL connection of the warehouse")
    where.add_argument("--url", help="SQLAlchemy URL of the warehouse (instead of --conn-id)")
    parser.add_argument("--table", default=DEFAULT_NAME, help="the ledger (default: %(default)s)")
    parser.add_argument("--by", choices=GROUPINGS, default="day", help="grouping (default: %(default)s)")
    parser.add_argument("--from", dest="start", type=_day, help="first UTC day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--to", dest="end", type=_day, help="last UTC day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--sql", action="store_true", help="print the SQL for this warehouse, run nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    end = None if args.end is None else args.end + dt.timedelta(days=1)
    engine = _engine(args.conn_id, args.url)
    try:
        if args.sql:
            query = reconciliation(
                lookups_table(args.table), args.by, start=args.start, end=end, dialect=engine.dialect.name
            )
            print(f"{query.compile(dialect=engine.dialect, compile_kwargs={'literal_binds': True})};")
            return 0
        with engine.connect() as conn:
            table = reflect(conn, args.table)
            query = reconciliation(table, args.by, start=args.start, end=end, dialect=conn.dialect.name)
            result = conn.execute(query)
            out = csv.writer(sys.stdout, lineterminator="\n")
            out.writerow(result.keys())
            masked = list(result.keys()).index("national") if args.by == "lookup" else None
            for row in result:
                values = list(row)
                if masked is not None:
                    values[masked] = mask_number(values[masked])
                out.writerow(values)
    finally:
        engine.dispose()
    return 0


def _engine(conn_id: str | None, url: str | None) -> sa.Engine:
    if url is not None:
        return sa.create_engine(url)
    from airflow_provider_phonestatus.warehouse.engine import sqlalchemy_engine  # needs Airflow

    assert conn_id is not None
    return sqlalchemy_engine(conn_id)


def _day(text: str) -> dt.datetime:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from None


if __name__ == "__main__":
    sys.exit(main())
