"""The baseline of the operator benchmarks: the per-row loop a DAG author writes with stock parts.

Read every row (``SELECT id, phone`` + ``fetchall()``), POST each non-empty value with spaces
removed through one keep-alive ``httpx.Client``, one UPDATE statement per row, one commit at the
end (the most favourable naive loop: no commit per row).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from airflow_provider_phonestatus.sandbox.truth import expected
from airflow_provider_phonestatus.vocabulary import VENDOR_CODES
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from bench.common import SANDBOX_KEY
from bench.operator_common import STATUS_COLUMNS, Db


@dataclass
class NaiveRun:
    rows: int = 0  #: rows read and updated
    requests: int = 0  #: POSTs sent
    seconds: float = math.nan
    complete: bool = True  #: False when stopped at the time cap


def naive_update(db: Db, table: str) -> sa.TextClause:
    sets = ", ".join(f"{c} = :{c}" for c in STATUS_COLUMNS)
    return sa.text(f"UPDATE {table} SET {sets} WHERE id = :id")


def add_status_columns(db: Db, table: str) -> None:
    """What the DAG author does once by hand: the seven status columns, as the operator types them."""
    from airflow_provider_phonestatus.warehouse.target import TargetTable

    with db.engine.connect() as conn:
        TargetTable.load(conn, table, key_columns="id", phone_column="phone", columns=StatusColumns())


def naive_loop(
    db: Db,
    table: str,
    endpoint_url: str | None,
    *,
    cap_s: float | None = None,
    answers: Callable[[str], dict[str, Any]] | None = None,
) -> NaiveRun:
    """The per-row loop (module docstring). ``answers`` replaces the POST (read+update part only);
    ``cap_s`` stops it after that many seconds (its rate is steady, so rows/s stays meaningful)."""
    update = naive_update(db, table)
    run = NaiveRun()
    started = time.perf_counter()
    headers = {"X-API-Key": SANDBOX_KEY, "Content-Type": "application/json"}
    with db.engine.connect() as conn, httpx.Client(headers=headers, timeout=60.0) as http:
        rows = conn.execute(sa.text(f"SELECT id, phone FROM {table}")).fetchall()
        for key, phone in rows:
            if cap_s is not None and time.perf_counter() - started >= cap_s:
                run.complete = False
                break
            value = "" if phone is None else str(phone).replace(" ", "")
            if not value:
                envelope: dict[str, Any] = {"code": 400}
            elif answers is not None:
                envelope = answers(value)
            else:
                assert endpoint_url is not None
                run.requests += 1
                envelope = http.post(endpoint_url, content=json.dumps({"mobile": value})).json()
            conn.execute(update, {"id": key, **_naive_values(envelope, value)})
            run.rows += 1
        conn.commit()
    run.seconds = time.perf_counter() - started
    return run


def _naive_values(envelope: dict[str, Any], value: str) -> dict[str, Any]:
    data = envelope.get("data") if envelope.get("code") == 200 else None
    if not isinstance(data, dict):
        status, code, carrier, ported, order = "invalid", str(envelope.get("code")), None, None, None
    else:
        code = str(data.get("result"))
        status = VENDOR_CODES[code].value if code in VENDOR_CODES else "unknown"
        carrier, ported, order = data.get("channel"), data.get("transferStatus") == "1", data.get("orderNo")
    return {
        "phone_status": status,
        "phone_status_code": code,
        "phone_carrier": carrier,
        "phone_ported": ported,
        "phone_checked_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "phone_order_no": order,
        "phone_checked_value": value,
    }


def truth_answers(value: str) -> dict[str, Any]:
    """What the sandbox would answer for ``value`` (for the read+update-only baseline)."""
    try:
        return {"code": 200, "data": {**expected(value), "orderNo": f"BENCH{value}"}}
    except ValueError:
        return {"code": 400}
