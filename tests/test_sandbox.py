"""The vendor-API sandbox over real HTTP: truth, envelope, faults, rate limit, ledger, admin, CLI.

Every test goes through the ``phonestatus_sandbox`` fixture (so the pytest plugin is tested too)
and asserts counts and ledgers, never elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_phonestatus.sandbox import SandboxConfig, SandboxServer
from airflow_provider_phonestatus.sandbox.__main__ import main as cli_main
from airflow_provider_phonestatus.sandbox.ledger import SlidingWindow, retry_after_header
from airflow_provider_phonestatus.sandbox.truth import expected, mask

KEY = {"X-API-Key": "sandbox-key"}


@pytest.fixture
def sandbox(phonestatus_sandbox: SandboxServer) -> SandboxServer:
    """The fixture under test, unthrottled unless a test configures a limit."""
    phonestatus_sandbox.configure(rate_limit_per_minute=None)
    return phonestatus_sandbox


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def check(client: httpx.Client, sandbox: SandboxServer, number: Any, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", KEY)
    return client.post(sandbox.endpoint_url, json={"mobile": number}, headers=headers, **kw)


# --- truth and envelope -------------------------------------------------------------------------

TRUTH = [
    # number, result, resultMsg, channel, transferStatus
    ("13800138000", "0", "销号或未启用", "移动", "0"),
    ("13800138001", "1", "正常", "移动", "0"),
    ("13800138004", "1", "正常", "移动", "0"),
    ("13800138005", "2", "停机", "移动", "0"),
    ("13800138006", "3", "在网但不可用", "移动", "0"),
    ("13800138007", "4", "预销号", "移动", "0"),
    ("13800138008", "5", "关机", "移动", "0"),
    ("13800138009", "1", "正常", "移动", "0"),
    ("13000000001", "1", "正常", "联通", "0"),
    ("16600000001", "1", "正常", "联通", "0"),
    ("13300000001", "1", "正常", "电信", "0"),
    ("19900000001", "1", "正常", "电信", "0"),
    ("19200000001", "1", "正常", "广电", "0"),
    ("14000000001", "1", "正常", "移动", "0"),  # unallocated prefix: 移动
    ("13800000091", "1", "正常", "联通", "1"),  # ported: next carrier in the cycle
    ("13000000095", "2", "停机", "电信", "1"),
    ("13300000090", "0", "销号或未启用", "广电", "1"),
    ("13800138095", "2", "停机", "联通", "1"),  # the docstring's example
    ("19200000098", "5", "关机", "移动", "1"),
]


def test_truth_table_and_exact_envelope(sandbox: SandboxServer, client: httpx.Client) -> None:
    order_numbers = set()
    for number, result, msg, channel, ported in TRUTH:
        response = check(client, sandbox, number)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert set(body) == {"code", "message", "data"}
        assert (body["code"], body["message"]) == (200, "success")
        data = body["data"]
        assert set(data) == {"result", "channel", "orderNo", "resultMsg", "transferStatus"}
        got = (data["result"], data["resultMsg"], data["channel"], data["transferStatus"])
        assert got == (result, msg, channel, ported), number
        assert {k: v for k, v in data.items() if k != "orderNo"} == expected(number)
        assert isinstance(data["orderNo"], str) and data["orderNo"].isdigit()
        order_numbers.add(data["orderNo"])
    assert len(order_numbers) == len(TRUTH)
    ledger = sandbox.ledger()
    assert ledger["billed"] == ledger["requests"] == len(TRUTH)


@pytest.mark.parametrize(
    ("value_types", "number", "as_int"),
    [
        ("string", "13800138001", False),
        ("number", "13800138001", True),
        ("number", "13800138000", True),
        ("mixed", "13800138001", True),  # odd last digit: JSON numbers
        ("mixed", "13800138000", False),  # even: strings
    ],
)
def test_value_types(
    sandbox: SandboxServer, client: httpx.Client, value_types: str, number: str, as_int: bool
) -> None:
    sandbox.configure(value_types=value_types)
    data = check(client, sandbox, number).json()["data"]
    kind = int if as_int else str
    assert type(data["result"]) is kind and type(data["transferStatus"]) is kind
    assert str(data["result"]) == expected(number)["result"]
    assert isinstance(data["orderNo"], str)


@pytest.mark.parametrize(
    "number",
    [
        *["1380013800", "138001380001", "+8613800138000", "12800138000", "138 0013 8000", "abc", ""],
        *["13800138000\n", "１３８００１３８０００", 13800138001, None],
    ],
)
def test_bad_number_is_400_and_free(sandbox: SandboxServer, client: httpx.Client, number: Any) -> None:
    response = check(client, sandbox, number)
    assert response.status_code == 200
    assert response.json() == {"code": 400, "message": "手机号格式错误"}
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["rejected"], ledger["billed"]) == (1, 1, 0)


def test_body_must_be_json_object_and_post(sandbox: SandboxServer, client: httpx.Client) -> None:
    url = sandbox.endpoint_url
    not_json = client.post(url, content=b"mobile=13800138001", headers={**KEY, "Content-Type": "text/plain"})
    assert not_json.status_code == 200 and not_json.json()["code"] == 400
    a_list = client.post(url, json=["13800138001"], headers=KEY)
    assert a_list.json()["code"] == 400
    get = client.get(url, headers=KEY)
    assert get.status_code == 405 and get.json()["code"] == 405 and get.headers["Allow"] == "POST"
    assert client.post(sandbox.url + "/elsewhere", json={}, headers=KEY).status_code == 404
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["rejected"], ledger["billed"]) == (3, 3, 0)


def test_number_field_and_endpoint_are_configurable(sandbox: SandboxServer, client: httpx.Client) -> None:
    sandbox.configure(number_field="phone", endpoint="/v2/check")
    assert sandbox.endpoint_url.endswith("/v2/check")
    ok = client.post(sandbox.endpoint_url, json={"phone": "13800138001"}, headers=KEY)
    assert ok.json()["data"]["result"] == "1"
    old_field = client.post(sandbox.endpoint_url, json={"mobile": "13800138001"}, headers=KEY)
    assert old_field.json()["code"] == 400
    assert client.post(sandbox.url + "/mobile_status/check", json={}, headers=KEY).status_code == 404


# --- key and balance ----------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "status"), [("http", 401), ("envelope", 200)])
def test_bad_key_both_styles(sandbox: SandboxServer, client: httpx.Client, style: str, status: int) -> None:
    sandbox.configure(key_style=style)
    wrong = check(client, sandbox, "13800138001", headers={"X-API-Key": "nope"})
    missing = check(client, sandbox, "13800138001", headers={})
    for response in (wrong, missing):
        assert response.status_code == status
        assert response.json()["code"] == 401
    ledger = sandbox.ledger()
    assert (ledger["rejected"], ledger["billed"]) == (2, 0)


def test_balance_exhaustion_and_refill(sandbox: SandboxServer, client: httpx.Client) -> None:
    sandbox.configure(balance=2)
    codes = [check(client, sandbox, "13800138001").json()["code"] for _ in range(4)]
    assert codes == [200, 200, 402, 402]
    assert check(client, sandbox, "13800138001").json() == {"code": 402, "message": "余额不足"}
    ledger = sandbox.ledger()
    assert (ledger["billed"], ledger["rejected"], ledger["balance"]) == (2, 3, 0)
    sandbox.reset()  # refills from config
    assert check(client, sandbox, "13800138001").json()["code"] == 200
    assert sandbox.ledger()["balance"] == 1


# --- faults -------------------------------------------------------------------------------------

FAULTS = [
    # kind, HTTP status, envelope code (None: body is not an envelope), extra check
    ("http_500", 500, 500),
    ("http_502", 502, None),
    ("http_503", 503, 503),
    ("http_504", 504, None),
    ("http_429", 429, 429),
    ("envelope_429", 200, 429),
    ("envelope_500", 200, 500),
    ("bad_key", 401, 401),
    ("balance_exhausted", 200, 402),
    ("html", 200, None),
    ("bad_json", 200, None),
    ("empty_body", 200, None),
]


@pytest.mark.parametrize(("kind", "status", "code"), FAULTS)
def test_answering_faults(
    sandbox: SandboxServer, client: httpx.Client, kind: str, status: int, code: int | None
) -> None:
    sandbox.inject(kind)
    response = check(client, sandbox, "13800138001")
    assert response.status_code == status
    if code is not None:
        assert response.json()["code"] == code
    elif kind == "bad_json":
        assert response.text == '{"code": 200, "data": '
        with pytest.raises(json.JSONDecodeError):
            response.json()
    elif kind == "empty_body":
        assert response.content == b""
    else:
        assert response.headers["content-type"].startswith("text/html") and "<html>" in response.text
    assert ("Retry-After" in response.headers) == (kind == "http_429")
    assert check(client, sandbox, "13800138001").json()["code"] == 200  # consumed: next one is fine
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["faults"], ledger["billed"]) == (2, 1, 1)


def test_fault_rules_fifo_count_number_and_overrides(sandbox: SandboxServer, client: httpx.Client) -> None:
    sandbox.inject("http_429", retry_after=7)
    sandbox.inject("http_503", count=2, number="13800138005")
    sandbox.inject("html", status=503)
    first = check(client, sandbox, "13800138001")
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    assert check(client, sandbox, "13800138001").status_code == 503  # the html rule, status replaced
    assert check(client, sandbox, "13800138001").status_code == 200  # the 503s are for another number
    assert [check(client, sandbox, "13800138005").status_code for _ in range(3)] == [503, 503, 200]
    sandbox.inject("envelope_500", count=None)  # until reset
    assert [check(client, sandbox, "13800138001").json()["code"] for _ in range(3)] == [500, 500, 500]
    ledger = sandbox.ledger()
    assert (ledger["faults"], ledger["billed"]) == (7, 2)
    assert ledger["by_number"]["13800138005"] == {"requests": 3, "billed": 1}
    assert len(ledger["faults_pending"]) == 1
    with pytest.raises(ValueError, match="unknown fault kind"):
        sandbox.inject("meteor")


def test_reset_fault_drops_the_connection(sandbox: SandboxServer, client: httpx.Client) -> None:
    sandbox.inject("reset")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError, httpx.WriteError)):
        check(client, sandbox, "13800138001")
    assert check(client, sandbox, "13800138001").json()["code"] == 200  # the client reconnects
    ledger = sandbox.ledger()
    assert (ledger["faults"], ledger["billed"]) == (1, 1)


def test_timeout_fault_holds_until_the_client_leaves(sandbox: SandboxServer) -> None:
    sandbox.inject("timeout")
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as short, pytest.raises(httpx.ReadTimeout):
        check(short, sandbox, "13800138001")
    deadline = time.monotonic() + 5
    while sandbox.ledger()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    ledger = sandbox.ledger()
    assert (ledger["in_flight"], ledger["faults"], ledger["billed"]) == (0, 1, 0)


def test_timeout_fault_gives_up_after_hold(sandbox: SandboxServer, client: httpx.Client) -> None:
    sandbox.configure(timeout_hold_s=0.1)
    sandbox.inject("timeout")
    assert check(client, sandbox, "13800138001").status_code == 504


# --- rate limit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["http", "envelope"])
def test_burst_is_throttled(sandbox: SandboxServer, client: httpx.Client, style: str) -> None:
    sandbox.configure(rate_limit_per_minute=600, window_s=1.0, throttle_style=style)
    responses = [check(client, sandbox, f"138001380{i:02d}") for i in range(15)]
    codes = [r.json()["code"] for r in responses]
    assert codes == [200] * 10 + [429] * 5
    for r in responses[10:]:
        assert r.json() == {"code": 429, "message": "请求过于频繁"}
        if style == "http":
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        else:
            assert r.status_code == 200 and "Retry-After" not in r.headers
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["billed"], ledger["throttled"], ledger["faults"]) == (15, 10, 5, 0)
    assert ledger["peak_in_window"] == 10


def test_client_paced_at_plan_rate_is_never_throttled(sandbox: SandboxServer, client: httpx.Client) -> None:
    sandbox.configure(rate_limit_per_minute=1200, window_s=0.5)  # 10 per half second
    for i in range(25):
        check(client, sandbox, f"138001381{i:02d}")
        time.sleep(0.05)  # the plan's spacing, measured from the answer: never faster
    ledger = sandbox.ledger()
    assert (ledger["billed"], ledger["throttled"]) == (25, 0)
    assert ledger["peak_in_window"] <= 10


def test_sliding_window_arithmetic() -> None:
    window = SlidingWindow()
    admitted = [window.admit(t / 100, 10, 1.0, 0.05) is None for t in range(15)]  # 15 in 0.15 s
    assert admitted == [True] * 10 + [False] * 5
    wait = window.admit(0.2, 10, 1.0, 0.05)
    assert wait is not None and wait == pytest.approx(0.75)  # the first arrival (t=0) leaves at 0.95
    assert retry_after_header(wait) == "1" and retry_after_header(2.01) == "3"
    assert window.admit(0.95, 10, 1.0, 0.05) is None  # t=0 left the window (t - 0.95, t]
    assert window.admit(0.95, 10, 1.0, 0.05) is not None
    assert window.peak == 10
    assert SandboxConfig(rate_limit_per_minute=600, window_s=1.0).window_limit == 10
    assert SandboxConfig(rate_limit_per_minute=30, window_s=1.0).window_limit == 1
    assert SandboxConfig(rate_limit_per_minute=None).window_limit is None


# --- ledger, overrides, concurrency -------------------------------------------------------------


def test_ledger_by_number_and_concurrency(sandbox: SandboxServer) -> None:
    sandbox.configure(latency_ms=400)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as c:
            calls = [
                c.post(sandbox.endpoint_url, json={"mobile": n}, headers=KEY)
                for n in ["13800138001"] * 3 + ["13900139005"] * 2 + ["123"]
            ]
            return [r.json()["code"] for r in await asyncio.gather(*calls)]

    assert sorted(asyncio.run(burst())) == [200] * 5 + [400]
    ledger = sandbox.ledger()
    assert ledger["by_number"] == {
        "13800138001": {"requests": 3, "billed": 3},
        "13900139005": {"requests": 2, "billed": 2},
        "123": {"requests": 1, "billed": 0},
    }
    assert (ledger["requests"], ledger["billed"], ledger["rejected"]) == (6, 5, 1)
    assert ledger["max_concurrency"] == 6 and ledger["in_flight"] == 0


def test_truth_overrides(sandbox: SandboxServer, client: httpx.Client) -> None:
    odd = {"result": "9", "channel": "卫星", "orderNo": "X1", "resultMsg": "?", "transferStatus": "2"}
    sandbox.set_truth("13800138001", odd)
    busy = {"code": 500, "message": "上游通道繁忙", "data": None}
    sandbox.set_truth("13800138002", busy)
    assert check(client, sandbox, "13800138001").json() == {"code": 200, "message": "success", "data": odd}
    assert check(client, sandbox, "13800138002").json() == busy
    sandbox.set_truth("13800138001", None)
    assert check(client, sandbox, "13800138001").json()["data"]["channel"] == "移动"
    ledger = sandbox.ledger()
    assert (ledger["billed"], ledger["rejected"]) == (2, 1)
    with pytest.raises(ValueError):
        sandbox.set_truth("12345", odd)


# --- admin endpoints, config, fixture, CLI ------------------------------------------------------


def test_admin_endpoints(sandbox: SandboxServer, client: httpx.Client) -> None:
    admin = sandbox.url + "/_sandbox"
    assert client.get(admin + "/health").json()["status"] == "ok"
    config = client.post(admin + "/config", json={"balance": 1, "value_types": "number"}).json()
    assert config["balance"] == 1 and sandbox.config.value_types == "number"
    assert client.get(admin + "/config").json() == sandbox.config.as_dict()
    bad = client.post(admin + "/config", json={"throttle_style": "smoke"})
    assert bad.status_code == 400 and "throttle_style" in bad.json()["error"]
    assert client.post(admin + "/config", json={"no_such": 1}).status_code == 400
    rules = [{"kind": "http_502"}, {"kind": "envelope_429", "number": "13800138009"}]
    assert client.post(admin + "/faults", json=rules).json() == {"faults_pending": 2}
    assert client.post(admin + "/faults", json={"kind": "html", "count": 0}).status_code == 400
    assert [r["kind"] for r in client.get(admin + "/faults").json()] == ["http_502", "envelope_429"]
    truth = {"number": "13800138001", "data": {"result": "1", "channel": "卫星"}}
    assert client.post(admin + "/truth", json=truth).json() == {"ok": True}
    assert check(client, sandbox, "13800138009").status_code == 502
    assert check(client, sandbox, "13800138009").json()["code"] == 429
    assert check(client, sandbox, "13800138001").json()["data"] == truth["data"]
    assert check(client, sandbox, "13800138001").json()["code"] == 402  # balance 1 spent
    ledger = client.get(admin + "/ledger").json()
    assert ledger == sandbox.ledger()
    assert (ledger["requests"], ledger["faults"], ledger["billed"], ledger["rejected"]) == (4, 2, 1, 1)
    assert client.post(admin + "/reset").json() == {"ok": True}
    assert sandbox.ledger()["requests"] == 0 and sandbox.config.value_types == "number"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="throttle_style"):
        SandboxConfig(throttle_style="smoke")
    with pytest.raises(ValueError, match="grace_s"):
        SandboxConfig(window_s=1.0, grace_s=1.0)
    with pytest.raises(ValueError, match="endpoint"):
        SandboxConfig(endpoint="/_sandbox/x")
    with pytest.raises(ValueError, match="unknown"):
        SandboxConfig().replace({"rate": 1})
    assert SandboxConfig(window_s=2).window_s == 2.0


def test_fixture_gives_a_clean_default_sandbox_a(phonestatus_sandbox: SandboxServer) -> None:
    _assert_clean_then_dirty(phonestatus_sandbox)


def test_fixture_gives_a_clean_default_sandbox_b(phonestatus_sandbox: SandboxServer) -> None:
    _assert_clean_then_dirty(phonestatus_sandbox)


def _assert_clean_then_dirty(sandbox: SandboxServer) -> None:
    assert sandbox.config == SandboxConfig()
    assert sandbox.ledger()["requests"] == 0 and sandbox.ledger()["faults_pending"] == []
    sandbox.configure(api_key="other", balance=0)
    sandbox.inject("http_503", count=None)
    httpx.post(sandbox.endpoint_url, json={"mobile": "13800138001"}, headers={"X-API-Key": "other"})


def test_connection_json(phonestatus_sandbox: SandboxServer) -> None:
    conn = json.loads(phonestatus_sandbox.connection_json())
    assert conn == {
        "conn_type": "phonestatus",
        "host": phonestatus_sandbox.url,
        "password": "sandbox-key",
        "extra": {"endpoint": "/mobile_status/check", "number_field": "mobile", "rate_limit_per_minute": 60},
    }
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", conn["host"])


def test_server_lifecycle() -> None:
    server = SandboxServer(SandboxConfig(api_key="k"))
    with pytest.raises(RuntimeError):
        _ = server.url
    url = server.start()
    assert server.start() == url  # idempotent
    assert httpx.get(url + "/_sandbox/health").status_code == 200
    server.stop()
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/_sandbox/health")


def test_access_log_masks_numbers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    with SandboxServer(access_log=True) as server:
        httpx.post(server.endpoint_url + "?mobile=13800138001", json={"mobile": "13912345678"}, headers=KEY)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert lines == ["POST /mobile_status/check?mobile=138****8001 -> 200 in " + lines[0].rsplit(" in ")[1]]
    assert "13800138001" not in caplog.text and "13912345678" not in caplog.text
    assert mask("call 13800138000 or 8613912345678, not 12345678901") == (
        "call 138****8000 or 86139****5678, not 12345678901"
    )


def test_plugin_imports_nothing_heavy() -> None:
    code = "import sys, airflow_provider_phonestatus.sandbox.pytest_plugin; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ["--rate-limit-per-minute", "--window-s", "/_sandbox/ledger", "second-to-last", "reset"]:
        assert needle in text


def test_cli_serves_and_stops_on_sigterm() -> None:
    cmd = [sys.executable, "-m", "airflow_provider_phonestatus.sandbox", "--port", "0", "--api-key", "ci-key"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(3)]
        url = re.search(r"http://[\d.]+:\d+", banner[0])
        assert url is not None, banner
        assert "ci-key" in "".join(banner)
        endpoint = url.group(0) + "/mobile_status/check"
        response = httpx.post(endpoint, json={"mobile": "13800138005"}, headers={"X-API-Key": "ci-key"})
        assert response.json()["data"]["resultMsg"] == "停机"
        assert httpx.get(url.group(0) + "/_sandbox/ledger").json()["billed"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
