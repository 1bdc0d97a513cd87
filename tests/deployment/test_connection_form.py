"""The ``phonestatus`` connection form in a real browser against a real Airflow (issue #5).

A person's path through the UI: log in, add a connection of type ``phonestatus``, see the
provider's own labelled fields, save, press Test (success against the sandbox), change the key,
press Test again (a clear refusal). Screenshots of each step go to the directory it prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, Response, expect

from airflow_provider_phonestatus.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from tests.deployment.browser import chromium_page, log_in, screenshot
from tests.deployment.deployment import Deployment

pytestmark = pytest.mark.deployment

CONN_ID = "phonestatus_form"
#: What the form is filled with; not the defaults, so the saved extras prove the form was read.
RATE, TIMEOUT = 1200, 3
#: The generic labels of Airflow's standard fields that the provider hides or relabels.
GENERIC_LABELS = {"Host", "Schema", "Login", "Port", "Password"}
#: Airflow 3.3.1 and 3.3.2 refuse the Test button for every connection without a port: the UI
#: sends ``port: Number(null)`` = 0, which the API reads as "another destination" and answers 400
#: (apache/airflow#73298, fixed upstream after 3.3.2). Storing port 0 is the user's workaround.
AIRFLOW_PORTLESS_TEST_BUG = version("apache-airflow") in {"3.3.1", "3.3.2"}


@pytest.fixture
def shots(airflow_deployment: Deployment) -> Path:
    """Where this test's screenshots go: under the deployment's artifacts, kept after the run."""
    path = airflow_deployment.artifacts / "connection-form"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nconnection form screenshots: {path}")
    return path


@pytest.fixture
def page(airflow_deployment: Deployment, shots: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A logged-in page; if the test fails, its last state is kept as ``failure.png``."""
    dep = airflow_deployment
    failed_before = request.session.testsfailed
    with chromium_page() as page:
        try:
            log_in(page, dep.base_url, dep.username, dep.password)
            yield page
        finally:
            if request.session.testsfailed > failed_before:
                screenshot(page, shots, "failure")
            dep.api("DELETE", f"/api/v2/connections/{CONN_ID}")  # the deployment is shared


def test_connection_form_in_browser(airflow_deployment: Deployment, page: Page, shots: Path) -> None:
    """What a user sees and gets: the provider's form, a saved connection, Test's verdicts."""
    dep = airflow_deployment
    page.goto(f"{dep.base_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name="Add Connection")).to_be_visible()
    dialog.get_by_label("Connection ID").fill(CONN_ID)
    dialog.get_by_role("combobox", name="Connection Type").fill("phonestatus")
    page.get_by_role("option", name="Phone Number Status", exact=True).click()

    # The provider's form: relabelled standard fields, the generic ones gone, its extra fields.
    assert_provider_labels(dialog)
    base_url = dialog.get_by_label("Base URL", exact=True)
    expect(base_url).to_have_attribute("placeholder", UI_FIELD_BEHAVIOUR["placeholders"]["host"])
    base_url.fill(dep.sandbox_url)
    dialog.get_by_label("API key", exact=True).fill(dep.api_key)
    screenshot(page, shots, "01-add-form-standard-fields")

    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for spec in CONN_FIELDS.values():
        field = extra_field(dialog, spec["label"])
        expect(field).to_be_visible()
        expect(field).to_have_value(str(spec["schema"].get("default", "")))
        expect(dialog.get_by_text(spec["description"], exact=True)).to_be_visible()
    extra_field(dialog, CONN_FIELDS["rate_limit_per_minute"]["label"]).fill(str(RATE))
    extra_field(dialog, CONN_FIELDS["timeout"]["label"]).fill(str(TIMEOUT))
    screenshot(page, shots, "02-add-form-extra-fields")

    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=CONN_ID, exact=True))
    expect(row).to_contain_text("phonestatus")
    assert_saved(dep, key=dep.api_key)

    if AIRFLOW_PORTLESS_TEST_BUG:
        answer = press_test(page, row, dep)
        assert answer.status == 400, answer.text()
        assert "host or port to test differs" in answer.json()["detail"]
        expect(toast(page, "Test Connection Failed", "Bad Request")).to_be_visible()
        screenshot(page, shots, "03-test-refused-by-airflow-3.3-port-bug")
        patched = dep.api(
            "PATCH",
            f"/api/v2/connections/{CONN_ID}",
            params={"update_mask": "port"},
            json={"connection_id": CONN_ID, "conn_type": "phonestatus", "port": 0},
        )
        assert patched.status_code == 200, patched.text
        page.reload()

    answer = press_test(page, row, dep)
    ok = "Connection OK: host reachable and API key accepted (no lookup spent)"
    assert answer.status == 200 and answer.json() == {"status": True, "message": ok}, answer.text()
    expect(toast(page, "Test Connection Successful", ok)).to_be_visible()
    screenshot(page, shots, "04-test-success")

    # The same connection edited to a key the vendor refuses: Test must say so, not "OK".
    row.get_by_role("button", name="Edit Connection").click()
    expect(dialog.get_by_role("heading", name="Edit Connection")).to_be_visible()
    assert_provider_labels(dialog)
    expect(dialog.get_by_label("Base URL", exact=True)).to_have_value(dep.sandbox_url)
    dialog.get_by_label("API key", exact=True).fill(dep.bad_api_key)
    screenshot(page, shots, "05-edit-form-wrong-key")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    assert_saved(dep, key=dep.bad_api_key)

    answer = press_test(page, row, dep)
    body = answer.json()
    assert answer.status == 200 and body["status"] is False, answer.text()
    assert body["message"].startswith("API key refused (HTTP 401)"), body
    expect(toast(page, "Test Connection Failed", body["message"])).to_be_visible()
    screenshot(page, shots, "06-test-wrong-key-refused")


def labels(dialog: Locator) -> set[str]:
    """Every field label in the dialog, without the required-field asterisk."""
    return {text.replace("*", "").strip() for text in dialog.locator("label").all_inner_texts()}


def extra_field(dialog: Locator, label: str) -> Locator:
    """The input of an extra field, found by the label shown beside it.

    Not ``get_by_label``: Airflow 3.3 does not tie the label of a text extra field to its input.
    """
    group = dialog.get_by_role("group").filter(has=dialog.page.get_by_text(label, exact=True))
    return group.locator("input")


def assert_provider_labels(dialog: Locator) -> None:
    """The form is the provider's: exactly its labels, none of the generic ones it replaces."""
    ours = {spec["label"] for spec in CONN_FIELDS.values()}
    relabelled = {UI_FIELD_BEHAVIOUR["relabeling"][name] for name in ("host", "password")}
    expect(dialog.get_by_label("Base URL", exact=True)).to_be_visible()
    shown = labels(dialog)
    assert shown == {"Connection ID", "Connection Type", "Description"} | relabelled | ours, shown
    assert not shown & GENERIC_LABELS


def assert_saved(dep: Deployment, key: str) -> None:
    """What the form stored, read back through the REST API (typed extras) and the CLI (the key)."""
    conn = dep.get(f"/api/v2/connections/{CONN_ID}")
    assert (conn["conn_type"], conn["host"], conn["login"], conn["schema"]) == (
        "phonestatus",
        dep.sandbox_url,
        None,
        None,
    ), conn
    assert json.loads(conn["extra"]) == {
        "endpoint": "/mobile_status/check",
        "number_field": "mobile",
        "rate_limit_per_minute": RATE,
        "timeout": TIMEOUT,
        "max_concurrency": None,
        "rate_limit_redis_conn_id": None,  # the form stores an empty field as null
    }
    got = dep.cli("connections", "get", CONN_ID, "-o", "json", check=True)
    assert json.loads(got.stdout)[0]["password"] == key


def press_test(page: Page, row: Locator, dep: Deployment) -> Response:
    """Press the row's Test button; the API's answer.

    Also checks what reached the vendor: exactly one request, with the empty number (which no
    lookup is paid for), when the hook ran; none when Airflow refused before the hook. Counted
    per number, so DAG runs sharing the sandbox cannot disturb it (they never send an empty one).
    """
    before = probes(dep)
    with page.expect_response(is_test_call) as answer:
        row.get_by_role("button", name="Test Connection").click()
    reached_vendor = answer.value.status == 200
    assert probes(dep) - before == int(reached_vendor)
    return answer.value


def probes(dep: Deployment) -> int:
    """Requests the sandbox received with an empty number: Test connection's probe."""
    by_number: dict[str, dict[str, int]] = dep.sandbox.ledger()["by_number"]
    return by_number.get("", {}).get("requests", 0)


def is_test_call(response: Response) -> bool:
    """The UI's call behind the Test button."""
    return response.request.method == "POST" and response.url.endswith("/api/v2/connections/test")


def toast(page: Page, title: str, message: str) -> Locator:
    """The UI's notification with this title and message."""
    return page.get_by_role("status").filter(has_text=title).filter(has_text=message)
