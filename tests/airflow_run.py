"""Run a DAG file through real Airflow's ``dag.test()``, the same way on every supported version.

Airflow 3.3's ``dag.test()`` serialises DAGs from their bundle itself; 3.1's expects them in the
metadata database already (the DAG processor's job), so the file is parsed and synced first.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

BUNDLE = "dags-folder"


def sync_dag_file(path: Path) -> None:
    """Parse ``path`` and write its DAGs to the metadata database, as the DAG processor would."""
    try:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db  # Airflow 3.2+
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[attr-defined,no-redef]
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(path))  # examples are off in the tests' Airflow config
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, BUNDLE, None)


def load_dag(path: Path, dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"dagfile_{dag_id}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if getattr(value, "dag_id", None) == dag_id and hasattr(value, "test"):
            return value
    raise AssertionError(f"no DAG {dag_id} in {path}")


def test_dag_file(path: Path, dag_id: str, **kwargs: Any) -> Any:
    """Sync, then ``dag.test()``; returns the DagRun."""
    sync_dag_file(path)
    return load_dag(path, dag_id).test(**kwargs)


test_dag_file.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
