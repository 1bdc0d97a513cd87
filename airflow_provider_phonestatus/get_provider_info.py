"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_phonestatus import __version__

HOOK_CLASS = "airflow_provider_phonestatus.hooks.phonestatus.PhoneStatusHook"
#: The ``duckdb`` connection type (``pip install 'airflow-provider-phonestatus[duckdb]'``).
DUCKDB_HOOK_CLASS = "airflow_provider_phonestatus.hooks.duckdb.DuckDBHook"

#: Extra fields of the connection form; the hook reads the same names from ``Connection.extra``.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "endpoint": {
        "label": "Endpoint path",
        "schema": {"type": ["string", "null"], "default": "/mobile_status/check"},
        "description": "Path of the status check on the base URL.",
    },
    "number_field": {
        "label": "Number field",
        "schema": {"type": ["string", "null"], "default": "mobile"},
        "description": "JSON field that carries the 11-digit number (unpublished by the vendor).",
    },
    "rate_limit_per_minute": {
        "label": "Rate limit (requests per minute)",
        "schema": {"type": ["integer", "null"], "default": 60, "minimum": 1},
        "description": "Your plan's limit per API key; the hook never sends faster.",
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 5, "exclusiveMinimum": 0},
        "description": "Per-request timeout; the vendor publishes 5 s.",
    },
    "max_concurrency": {
        "label": "Max concurrent requests",
        "schema": {"type": ["integer", "null"], "minimum": 1},
        "description": "Requests in flight at once; empty derives it from the rate limit.",
    },
    "rate_limit_redis_conn_id": {
        "label": "Shared rate limit: Redis connection id",
        "schema": {"type": ["string", "null"]},
        "description": "Share the rate limit with every task and deployment using this key, "
        "through this Redis connection (pip install 'airflow-provider-phonestatus[redis]').",
    },
}

#: Which standard fields the form shows, and under which labels.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"host": "Base URL", "password": "API key", "extra": "Advanced extras (JSON)"},
    "placeholders": {
        "host": "https://openapi.toolkk.com",
        "extra": '{"max_retries": 4, "max_consecutive_failures": 10}',
    },
}


#: The ``duckdb`` connection form: the database file's path in the host field, nothing else.
DUCKDB_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "password", "port", "schema"],
    "relabeling": {"host": "Database file path"},
    "placeholders": {"host": "/data/warehouse.duckdb"},
}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider, its hook and the ``phonestatus`` connection form (Airflow 3.2+ keys)."""
    return {
        "package-name": "airflow-provider-phonestatus",
        "name": "Phone Number Status",
        "description": "Check the live network status of mainland-China mobile numbers and keep "
        "warehouse status columns fresh within a paid API's rate limit.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Phone Number Status",
                "external-doc-url": "https://openapi.toolkk.com",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "Phone Number Status",
                "python-modules": ["airflow_provider_phonestatus.operators.phonestatus"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Phone Number Status",
                "python-modules": [
                    "airflow_provider_phonestatus.hooks.phonestatus",
                    "airflow_provider_phonestatus.hooks.duckdb",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": HOOK_CLASS,
                "hook-name": "Phone Number Status",
                "connection-type": "phonestatus",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            },
            {
                "hook-class-name": DUCKDB_HOOK_CLASS,
                "hook-name": "DuckDB",
                "connection-type": "duckdb",
                "ui-field-behaviour": DUCKDB_UI_FIELD_BEHAVIOUR,
            },
        ],
    }
