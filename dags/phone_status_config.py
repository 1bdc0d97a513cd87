"""Configuration shared by the example phone-status DAGs (not a DAG file: see ``.airflowignore``).

Two kinds of settings, read at two different times:

**The shape of the DAGs: environment variables, read when a DAG file is parsed.** They decide
which tasks, schedule, pool, assets and form fields exist, so they must be known at parse time;
they are read from ``os.environ`` only (never from the metadata database, which the DAG processor
must not query on every parse). Set them identically for every Airflow component that parses
DAG files: the DAG processor, the scheduler and the workers.

=================================  ========================================================
``PHONESTATUS_TABLES``             JSON allow-list of the tables the DAGs may touch:
                                   ``{"crm.customers": {"key_column": "id", "phone_column":
                                   "phone"}}`` (the default). Optional per table:
                                   ``"filter_columns": [...]`` (columns the manual form may
                                   filter on; default: any column but the phone column) and
                                   ``"source_asset": "<uri>"`` (the asset its loading DAG
                                   emits; default ``warehouse://crm/customers``).
``PHONESTATUS_WAREHOUSE_CONN_ID``  SQL connection of the warehouse: ``warehouse_default``
``PHONESTATUS_CONN_ID``            ``phonestatus`` connection (API key, plan rate):
                                   ``phonestatus_default``
``PHONESTATUS_SCHEDULE``           cron of the nightly revalidation: ``0 2 * * *``
``PHONESTATUS_TIMEZONE``           the cron's time zone: ``Asia/Shanghai``
``PHONESTATUS_POOL``               pool of every task that calls the API: ``phonestatus_api``
``PHONESTATUS_PARALLEL_TABLES``    ``true``: the nightly DAG refreshes every table at once (a
                                   mapped task group outside the pool); needs the connection's
                                   shared limit, ``rate_limit_redis_conn_id``: ``false``
``PHONESTATUS_MANUAL_MAX_CHECKS``  upper bound of "max checks" in the manual form: ``10000``
=================================  ========================================================

**Run-time tuning: Airflow Variables, read only inside running tasks** (or their templates), so
they can change between runs without a deploy. Like any Variable, each can also be given as an
environment variable ``AIRFLOW_VAR_<NAME>`` (e.g. ``AIRFLOW_VAR_PHONESTATUS_WINDOW_MINUTES=180``).

=======================================  ===================================================
``phonestatus_window_minutes``           the run window, from the DAG run's start: ``240``
``phonestatus_dead_share_warn``          jump of the dead share that warns: ``0.10`` (10 pp)
``phonestatus_dead_share_fail``          jump of the dead share that fails: ``0.25`` (25 pp)
``phonestatus_dead_share_min_answers``   vendor answers needed to compare a run: ``100``
``phonestatus_results_table``            shared results store: ``phone_status_results``
``phonestatus_run_log_table``            run log: ``phone_status_runs``
``phonestatus_lookups_table``            lookup ledger (one row per paid lookup):
                                         ``phone_status_lookups``
``phonestatus_suppressions_table``       suppression list of ``phone_status_changes``:
                                         ``phone_status_suppressions``
=======================================  ===================================================

No connection, key or password lives here or in a DAG file: the DAGs name connection ids only.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_phonestatus.warehouse.filters import is_identifier

if TYPE_CHECKING:
    from airflow.sdk import Asset

# -- parse time: environment variables -----------------------------------------------------------

ENV_TABLES = "PHONESTATUS_TABLES"
ENV_WAREHOUSE_CONN_ID = "PHONESTATUS_WAREHOUSE_CONN_ID"
ENV_CONN_ID = "PHONESTATUS_CONN_ID"
ENV_SCHEDULE = "PHONESTATUS_SCHEDULE"
ENV_TIMEZONE = "PHONESTATUS_TIMEZONE"
ENV_POOL = "PHONESTATUS_POOL"
ENV_MANUAL_MAX_CHECKS = "PHONESTATUS_MANUAL_MAX_CHECKS"
ENV_PARALLEL_TABLES = "PHONESTATUS_PARALLEL_TABLES"

DEFAULT_TABLES: dict[str, dict[str, Any]] = {"crm.customers": {"key_column": "id", "phone_column": "phone"}}
DEFAULT_WAREHOUSE_CONN_ID = "warehouse_default"
DEFAULT_CONN_ID = "phonestatus_default"
#: 02:00 China time: the quiet hour of the vendor, the carriers and the customers (see the
#: revalidation DAG's docstring).
DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_POOL = "phonestatus_api"
DEFAULT_MANUAL_MAX_CHECKS = 10_000
#: The alias through which the parallel nightly DAG's mapped checks emit each table's status asset
#: (a mapped task has one list of outlets; the alias names the table's asset at run time).
STATUS_ALIAS = "phonestatus_table_statuses"

# -- run time: Airflow Variables -----------------------------------------------------------------

VAR_WINDOW_MINUTES = "phonestatus_window_minutes"
VAR_DEAD_SHARE_WARN = "phonestatus_dead_share_warn"
VAR_DEAD_SHARE_FAIL = "phonestatus_dead_share_fail"
VAR_DEAD_SHARE_MIN_ANSWERS = "phonestatus_dead_share_min_answers"
VAR_RESULTS_TABLE = "phonestatus_results_table"
VAR_RUN_LOG_TABLE = "phonestatus_run_log_table"
VAR_LOOKUPS_TABLE = "phonestatus_lookups_table"
VAR_SUPPRESSIONS_TABLE = "phonestatus_suppressions_table"

DEFAULT_WINDOW_MINUTES = 240.0
DEFAULT_DEAD_SHARE_WARN = 0.10
DEFAULT_DEAD_SHARE_FAIL = 0.25
DEFAULT_DEAD_SHARE_MIN_ANSWERS = 100
DEFAULT_RESULTS_TABLE = "phone_status_results"
DEFAULT_RUN_LOG_TABLE = "phone_status_runs"
DEFAULT_LOOKUPS_TABLE = "phone_status_lookups"
DEFAULT_SUPPRESSIONS_TABLE = "phone_status_suppressions"

#: Templates for the operator's templated ``results_table`` / ``run_log_table`` /
#: ``lookups_table``: the Variable is read when the task renders its fields, never when the file
#: is parsed.
RESULTS_TABLE_TEMPLATE = f"{{{{ var.value.get('{VAR_RESULTS_TABLE}', '{DEFAULT_RESULTS_TABLE}') }}}}"
RUN_LOG_TABLE_TEMPLATE = f"{{{{ var.value.get('{VAR_RUN_LOG_TABLE}', '{DEFAULT_RUN_LOG_TABLE}') }}}}"
LOOKUPS_TABLE_TEMPLATE = f"{{{{ var.value.get('{VAR_LOOKUPS_TABLE}', '{DEFAULT_LOOKUPS_TABLE}') }}}}"
#: Templates for ``max_checks`` / ``time_budget`` of scheduled checks: the run's budget from the
#: ``phonestatus_budget`` macro (:func:`budget_macro`), computed when the task renders its fields.
MAX_CHECKS_TEMPLATE = "{{ phonestatus_budget(dag_run)['max_checks'] }}"
TIME_BUDGET_TEMPLATE = "{{ phonestatus_budget(dag_run)['time_budget'] }}"

_TABLE_KEYS = {"key_column", "phone_column", "filter_columns", "source_asset"}


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and what is wrong."""


@dataclass(frozen=True)
class TableConfig:
    """One allow-listed table: how to find its rows and phone numbers, and its assets."""

    name: str  #: ``table`` or ``schema.table``
    key_column: str | tuple[str, ...]
    phone_column: str
    filter_columns: tuple[str, ...] | None  #: None: any column but the phone column
    source_asset_uri: str  #: emitted by the DAG that loads the table

    @property
    def slug(self) -> str:
        """The name as a task/group id: ``crm.customers`` -> ``crm__customers``."""
        return self.name.replace(".", "__")

    @property
    def status_asset_uri(self) -> str:
        """Updated when the table's phone statuses were refreshed: ``phonestatus://crm/customers``."""
        return "phonestatus://" + self.name.replace(".", "/")

    @property
    def key_columns(self) -> tuple[str, ...]:
        return (self.key_column,) if isinstance(self.key_column, str) else self.key_column

    def status_asset(self) -> Asset:
        from airflow.sdk import Asset

        return Asset(self.status_asset_uri)

    def source_asset(self) -> Asset:
        from airflow.sdk import Asset

        return Asset(self.source_asset_uri)

    def operator_key_column(self) -> str | list[str]:
        """``key_column`` as the operator takes it (a list for a composite key)."""
        return self.key_column if isinstance(self.key_column, str) else list(self.key_column)


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def tables() -> dict[str, TableConfig]:
    """The allow-list from ``PHONESTATUS_TABLES`` (or the default), checked strictly."""
    raw = os.environ.get(ENV_TABLES, "").strip()
    try:
        data = json.loads(raw) if raw else DEFAULT_TABLES
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{ENV_TABLES} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{ENV_TABLES} must be a non-empty JSON object of table name -> settings")
    out: dict[str, TableConfig] = {}
    for name, spec in data.items():
        out[name] = _table(name, spec)
    slugs = [t.slug for t in out.values()]
    if len(set(slugs)) != len(slugs):
        raise ConfigError(f"{ENV_TABLES}: two table names map to the same task id ({', '.join(slugs)})")
    return out


def _table(name: Any, spec: Any) -> TableConfig:
    where = f"{ENV_TABLES}[{name!r}]"
    parts = name.split(".") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(is_identifier(p) for p in parts):
        raise ConfigError(f"{where}: a table name is 'table' or 'schema.table' of letters, digits, _")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be an object with key_column and phone_column")
    if unknown := sorted(set(spec) - _TABLE_KEYS):
        raise ConfigError(f"{where}: unknown settings {unknown}; known: {sorted(_TABLE_KEYS)}")
    key = spec.get("key_column")
    keys = [key] if isinstance(key, str) else key
    if not isinstance(keys, list) or not keys or not all(is_identifier(k) for k in keys):
        raise ConfigError(f"{where}.key_column must be a column name or a list of column names")
    phone = spec.get("phone_column")
    if not isinstance(phone, str) or not is_identifier(phone):
        raise ConfigError(f"{where}.phone_column must be a column name")
    filters = spec.get("filter_columns")
    if filters is not None and (
        not isinstance(filters, list) or not all(is_identifier(c) and c != phone for c in filters)
    ):
        raise ConfigError(f"{where}.filter_columns must be a list of column names, not the phone column")
    source = spec.get("source_asset", "warehouse://" + name.replace(".", "/"))
    if not isinstance(source, str) or "://" not in source:
        raise ConfigError(f"{where}.source_asset must be an asset URI such as warehouse://crm/customers")
    return TableConfig(
        name=name,
        key_column=key if isinstance(key, str) else tuple(keys),
        phone_column=phone,
        filter_columns=None if filters is None else tuple(filters),
        source_asset_uri=source,
    )


def warehouse_conn_id() -> str:
    return _env(ENV_WAREHOUSE_CONN_ID, DEFAULT_WAREHOUSE_CONN_ID)


def phonestatus_conn_id() -> str:
    return _env(ENV_CONN_ID, DEFAULT_CONN_ID)


def schedule_cron() -> str:
    return _env(ENV_SCHEDULE, DEFAULT_SCHEDULE)


def timezone_name() -> str:
    return _env(ENV_TIMEZONE, DEFAULT_TIMEZONE)


def pool_name() -> str:
    return _env(ENV_POOL, DEFAULT_POOL)


def manual_max_checks_limit() -> int:
    raw = _env(ENV_MANUAL_MAX_CHECKS, str(DEFAULT_MANUAL_MAX_CHECKS))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_MANUAL_MAX_CHECKS} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{ENV_MANUAL_MAX_CHECKS} must not be negative")
    return value


def parallel_tables() -> bool:
    """``PHONESTATUS_PARALLEL_TABLES``: true/false (yes/no, on/off, 1/0); anything else is an error."""
    raw = _env(ENV_PARALLEL_TABLES, "false").lower()
    if raw not in _TRUE | _FALSE:
        raise ConfigError(f"{ENV_PARALLEL_TABLES} must be true or false, got {raw!r}")
    return raw in _TRUE


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def table_arguments() -> list[dict[str, Any]]:
    """One mapping per allow-listed table, for a task group mapped over the tables."""
    return [
        {
            "table": t.name,
            "key_column": t.operator_key_column(),
            "phone_column": t.phone_column,
            "status_asset": t.status_asset_uri,
        }
        for t in tables().values()
    ]


def default_args(**more: Any) -> dict[str, Any]:
    """``default_args`` of the example DAGs: what every ``PhoneStatusCheckOperator`` in them shares,
    and ``more``. A ``@task`` has none of these parameters and ignores them. (The warehouse's
    ``conn_id`` is a required argument, so it stays in each call, where type checkers look.)"""
    return {
        "phonestatus_conn_id": phonestatus_conn_id(),
        "results_table": RESULTS_TABLE_TEMPLATE,
        "run_log_table": RUN_LOG_TABLE_TEMPLATE,
        "lookups_table": LOOKUPS_TABLE_TEMPLATE,
        **more,
    }


def revalidation_timetable() -> Any:
    """``CronTriggerTimetable(PHONESTATUS_SCHEDULE, timezone=PHONESTATUS_TIMEZONE)``.

    A trigger timetable: the run starts at 02:00 local time itself, not one interval later, and
    the cron follows the zone's wall clock (China has no daylight saving time; a zone that has
    one keeps "02:00 local" across the change).
    """
    import pendulum

    try:
        from airflow.sdk import CronTriggerTimetable
    except ImportError:  # Airflow 3.1: the core class
        from airflow.timetables.trigger import CronTriggerTimetable  # type: ignore[no-redef,assignment,unused-ignore]
    try:
        zone = pendulum.timezone(timezone_name())
    except Exception as exc:  # pendulum raises its own InvalidTimezone
        raise ConfigError(f"{ENV_TIMEZONE}={timezone_name()!r} is not a time zone: {exc}") from None
    return CronTriggerTimetable(schedule_cron(), timezone=zone)


# -- run time ------------------------------------------------------------------------------------


def variable(name: str, default: Any) -> Any:
    """An Airflow Variable (or ``AIRFLOW_VAR_<NAME>``); call only inside a running task."""
    from airflow.sdk import Variable

    value = Variable.get(name, default=None)
    return default if value is None or str(value).strip() == "" else value


def number_variable(name: str, default: float, *, low: float = 0.0, high: float = math.inf) -> float:
    raw = variable(name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"Variable {name} must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"Variable {name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def lookup_budget(
    rate_per_minute: float, window_minutes: float, run_started: dt.datetime, now: dt.datetime
) -> dict[str, Any]:
    """What fits in the rest of the run window at the plan rate.

    The window opens when the DAG run starts; a task that starts later (waiting for the pool,
    or after another table's task) gets what is left of it, so one run never overruns its window.
    """
    window_end = run_started + dt.timedelta(minutes=window_minutes)
    seconds = max(0.0, (window_end - now).total_seconds())
    return {"max_checks": math.floor(rate_per_minute * seconds / 60.0), "time_budget": round(seconds, 3)}


def budget_macro(phonestatus_conn_id: str) -> Any:
    """``phonestatus_budget(dag_run)`` for templates: the budget from the connection's plan rate
    (``rate_limit_per_minute``) and ``phonestatus_window_minutes``, computed when the task renders
    its fields, i.e. when it starts."""

    def phonestatus_budget(dag_run: Any) -> dict[str, Any]:
        from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook

        rate = PhoneStatusHook(phonestatus_conn_id).settings.rate_limit_per_minute
        window = number_variable(VAR_WINDOW_MINUTES, DEFAULT_WINDOW_MINUTES, high=7 * 24 * 60)
        now = dt.datetime.now(dt.UTC)
        started = getattr(dag_run, "start_date", None) or now
        return lookup_budget(rate, window, started, now)

    return phonestatus_budget
