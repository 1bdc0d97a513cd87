"""The ``airflow_deployment`` fixture: one real Airflow 3 deployment for the whole session.

Its processes are stopped and its databases dropped when the session ends, whatever happened; its
logs and AIRFLOW_HOME stay under pytest's base temporary directory (``artifacts`` is printed at
the end of the run), and the components' log tails are printed when a test failed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployment.deployment import Deployment, running_deployment
from tests.deployment.warehouse import Warehouse

_ARTIFACTS: list[str] = []
_TAILS: list[str] = []


@pytest.fixture(scope="session")
def airflow_deployment(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    """API server, scheduler and DAG processor on loopback, the sandbox as the vendor."""
    workdir = tmp_path_factory.mktemp("deployment")
    _ARTIFACTS.append(str(workdir))
    with running_deployment(workdir) as deployment:
        failed_before = request.session.testsfailed
        try:
            yield deployment
        finally:
            if request.session.testsfailed > failed_before:
                _TAILS.append(deployment.tails())  # printed by pytest_terminal_summary, uncaptured


@pytest.fixture(scope="session")
def deployment_warehouse(airflow_deployment: Deployment) -> Iterator[Warehouse]:
    """The deployment's warehouse database, holding ``crm.customers``."""
    wh = Warehouse.create(airflow_deployment.warehouse_url)
    try:
        yield wh
    finally:
        wh.engine.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for tails in _TAILS:
        terminalreporter.write_sep("-", "deployment component logs (tails)")
        terminalreporter.write_line(tails)
    for path in _ARTIFACTS:
        terminalreporter.write_line(f"deployment logs: {path}/artifacts, AIRFLOW_HOME: {path}/airflow-home")
