"""Check phone statuses on demand, from a form: "Trigger DAG" in the Airflow UI.

The form (Airflow Params) asks for:

* **table**: one of the allow-listed tables (``PHONESTATUS_TABLES``); its key and phone columns
  come from the allow-list, never from the form;
* **row filter**: a JSON object ANDing conditions, e.g. ``{"region": "east"}``,
  ``{"score": {"op": ">=", "value": 3}}``, ``{"region": {"op": "in", "value": ["east", "west"]}}``
  (ops: ``= != < <= > >= in, not in, between, like, is null, is not null``). Values are text,
  numbers, booleans or null (lists of them for ``in``/``not in``/``between``). Columns must exist
  in the table; the phone column itself is refused (filtering on it would let a form user probe
  whether a number is in the table), and an allow-list entry may restrict the columns further
  with ``filter_columns``;
* **max checks**: most lookups to pay for, 0 to ``PHONESTATUS_MANUAL_MAX_CHECKS`` (10,000);
* **dry run** (default on): report due rows, distinct numbers, lookups a run would pay for and
  the time at the plan rate; send and write nothing;
* **ignore revalidation ages**: every row matching the filter is due, however fresh.

Every value is checked twice: by the Param schema when the run is triggered (a table outside the
allow-list or an unknown operator is refused before a run exists), and again by the
``validate_request`` task before anything is used, so a run triggered through the API or CLI with
a conf the form would not allow, or a run queued before the allow-list changed, fails with a
clear message and sends nothing. Nothing from the form reaches SQL as text: the table name is a
key of the allow-list, filter column names are checked against the reflected table, and filter
values are bound parameters. The values travel to the check task as XCom, never through a Jinja
template, so a value such as ``{{ var.value.x }}`` stays text.

The check runs in the ``phonestatus_api`` pool, so a manual check waits for a running nightly
revalidation instead of splitting the key's rate with it. It does not update the table's asset:
a manual check is partial (a filter, a cap) and is not checked for plausibility.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pendulum
import phone_status_config as cfg
from airflow.sdk import DAG, Param, task

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.operators.phonestatus import PhoneStatusCheckOperator
from airflow_provider_phonestatus.warehouse.filters import check_untrusted_filter, filter_json_schema

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef,unused-ignore]

DAG_ID = "phone_status_manual_check"
PARAM_NAMES = ("table", "row_filter", "max_checks", "dry_run", "ignore_revalidation_ages")


class RequestError(ValueError):
    """A form value that cannot be used; the message says which and why."""


def check_request(
    params: Mapping[str, Any], tables: Mapping[str, cfg.TableConfig], max_checks_limit: int
) -> dict[str, Any]:
    """The form's values, checked again and resolved: table -> its key and phone columns."""
    if unknown := sorted(set(params) - set(PARAM_NAMES)):
        raise RequestError(f"unknown settings {unknown}; the form has {', '.join(PARAM_NAMES)}")
    name = params.get("table")
    if not isinstance(name, str) or name not in tables:
        raise RequestError(f"table {name!r} is not in the allow-list ({cfg.ENV_TABLES}): {', '.join(tables)}")
    table = tables[name]
    max_checks = params.get("max_checks")
    if isinstance(max_checks, float) and max_checks.is_integer():  # JSON's 5.0 is an integer too
        max_checks = int(max_checks)
    if (
        not isinstance(max_checks, int)
        or isinstance(max_checks, bool)
        or not 0 <= max_checks <= max_checks_limit
    ):
        raise RequestError(
            f"max_checks must be a whole number from 0 to {max_checks_limit}, got {max_checks!r}"
        )
    flags = {}
    for flag in ("dry_run", "ignore_revalidation_ages"):
        if not isinstance(params.get(flag), bool):
            raise RequestError(f"{flag} must be true or false, got {params.get(flag)!r}")
        flags[flag] = params[flag]
    try:
        row_filter = check_untrusted_filter(
            params.get("row_filter"),
            table=table.name,
            phone_column=table.phone_column,
            allowed=table.filter_columns,
        )
    except PhoneStatusConfigError as exc:
        raise RequestError(str(exc)) from None
    return {
        "table": table.name,
        "key_column": table.operator_key_column(),
        "phone_column": table.phone_column,
        "row_filter": row_filter,
        "max_checks": max_checks,
        **flags,
    }


@task(multiple_outputs=True)
def validate_request(**context: Any) -> dict[str, Any]:
    """Check the form's values again before anything uses them; fail (no retry) if unusable."""
    params = dict(context["params"])
    try:
        request = check_request(params, cfg.tables(), cfg.manual_max_checks_limit())
    except (RequestError, cfg.ConfigError) as exc:
        raise AirflowFailException(f"rejected, nothing was sent: {exc}") from None
    return request


def _params() -> dict[str, Param]:
    names = list(cfg.tables())
    limit = cfg.manual_max_checks_limit()
    return {
        "table": Param(
            names[0],
            type="string",
            enum=names,
            title="Table",
            description="An allow-listed table; its key and phone columns come from the allow-list.",
        ),
        "row_filter": Param(
            {},
            title="Row filter",
            description='JSON object, e.g. {"region": "east", "score": {"op": ">=", "value": 3}}; '
            "{} checks every due row.",
            **filter_json_schema(),
        ),
        "max_checks": Param(
            min(1000, limit),
            type="integer",
            minimum=0,
            maximum=limit,
            title="Max checks",
            description=f"Most lookups to pay for (0 to {limit}); the rest stay due.",
        ),
        "dry_run": Param(
            True,
            type="boolean",
            title="Dry run",
            description="Only report what a run would check and pay for; send and write nothing.",
        ),
        "ignore_revalidation_ages": Param(
            False,
            type="boolean",
            title="Ignore revalidation ages",
            description="Every row matching the filter is due, however recently it was checked.",
        ),
    }


with DAG(
    dag_id=DAG_ID,
    description="Check phone statuses of an allow-listed table on demand (form)",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz=cfg.timezone_name()),
    catchup=False,
    params=_params(),
    default_args=cfg.default_args(),
    tags=["phonestatus"],
    doc_md=__doc__,
) as dag:
    request: Any = validate_request()  # XCom values, resolved at run time
    PhoneStatusCheckOperator(
        task_id="check",
        conn_id=cfg.warehouse_conn_id(),
        table=request["table"],
        key_column=request["key_column"],
        phone_column=request["phone_column"],
        row_filter=request["row_filter"],
        max_checks=request["max_checks"],
        dry_run=request["dry_run"],
        ignore_revalidation_ages=request["ignore_revalidation_ages"],
        pool=cfg.pool_name(),  # waits for a running revalidation instead of sharing the key's rate
    )
