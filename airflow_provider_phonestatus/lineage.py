"""OpenLineage for a refresh run: the table is read and written; status columns come from the phone.

Built only when the OpenLineage provider is installed; without it :func:`table_lineage` returns
None and nothing else happens. Dataset names follow OpenLineage's naming conventions:
``postgres://host:port`` + ``database.schema.table``, ``mysql://host:port`` + ``database.table``,
``sqlite://path`` + ``table``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.table import split_name

_SCHEMES = {"postgresql": ("postgres", 5432), "mysql": ("mysql", 3306), "mariadb": ("mysql", 3306)}


def dataset_address(url: sa.URL, table: str) -> tuple[str, str]:
    """(namespace, name) of ``table`` in the database ``url`` points at."""
    schema, name = split_name(table)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"sqlite://{url.database or ':memory:'}", table
    scheme, default_port = _SCHEMES.get(backend, (backend, None))
    port = url.port or default_port
    namespace = f"{scheme}://{url.host or 'localhost'}" + (f":{port}" if port else "")
    if scheme == "postgres":
        return namespace, f"{url.database}.{schema or 'public'}.{name}"
    return namespace, f"{schema or url.database}.{name}"


def table_lineage(
    url: sa.URL,
    table: str,
    phone_column: str,
    columns: StatusColumns,
    store_table: str,
    status_table: str | None = None,
) -> Any:
    """``OperatorLineage`` for one run, or None when the OpenLineage provider is not installed.
    The status columns are output to ``table`` itself, or to ``status_table`` when given."""
    try:
        from airflow.providers.common.compat.openlineage.facet import (
            ColumnLineageDatasetFacet,
            Dataset,
            Fields,
            InputField,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    namespace, name = dataset_address(url, table)
    store_namespace, store_name = dataset_address(url, store_table)
    out_namespace, out_name = dataset_address(url, status_table or table)
    phone = [InputField(namespace=namespace, name=name, field=phone_column)]
    lookup = "phone number status lookup (normalised number -> vendor status)"
    facet = ColumnLineageDatasetFacet(
        fields={
            column: Fields(
                inputFields=phone, transformationType="TRANSFORMATION", transformationDescription=lookup
            )
            for column in columns.names().values()
        }
    )
    return OperatorLineage(
        inputs=[Dataset(namespace=namespace, name=name)],
        outputs=[
            Dataset(namespace=out_namespace, name=out_name, facets={"columnLineage": facet}),
            Dataset(namespace=store_namespace, name=store_name),
        ],
    )
