"""The vendor-API sandbox over real HTTP: truth, envelope, faults, rate limit, ledger, admin, CLI.

Every test goes through the ``phonestatus_sandbox`` fixture (so the pytest plugin is tested too)
and asserts counts and ledgers, never elapsed time. Tests marked ``@EACH`` run twice, on a
``SandboxServer`` and on a ``SandboxProcess``: both runners must behave the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_phonestatus.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxProcess,
    SandboxServer,
    SandboxStartError,
)
from airflow_provider_phonestatus.sandbox.__main__ import build_parser
from airflow_provider_phonestatus.sandbox.__main__ import main as cli_main
from airflow_provider_phonestatus.sandbox.config import cli_args
from airflow_provider_phonestatus.sandbox.ledger import SlidingWindow, retry_after_header
from airflow_provider_phonestatus.sandbox.truth import changes_in_world, expected, mask

KEY = {"X-API-Key": "sandbox-key"}


UNTHROTTLED = SandboxConfig(rate_limit_per_minute=None)
RUNNERS = {"thread": SandboxServer, "process": SandboxProcess}


@pytest.fixture(scope="module")
def runners() -> Iterator[dict[str, Sandbox]]:
    """One sandbox of each kind, whatever the session's mode."""
    with SandboxServer(UNTHROTTLED) as thread, SandboxProcess(UNTHROTTLED) as process:
        yield {"thread": thread, "process": process}


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """The fixture under test, unthrottled unless a test configures a limit; with ``@EACH``, the
    runner of that kind, reset the same way."""
    kind = getattr(request, "param", None)
    if kind is None:
        box: Sandbox = request.getfixturevalue("phonestatus_sandbox")
        box.configure(rate_limit_per_minute=None)
        return box
    return fresh(request.getfixturevalue("runners")[kind])


def fresh(box: Sandbox) -> Sandbox:
    box.configure(**dataclasses.asdict(UNTHROTTLED))
    box.reset()
    return box


EACH = pytest.mark.parametrize("sandbox", list(RUNNERS), indirect=True)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def check(client: httpx.Client, sandbox: Sandbox, number: Any, **kw: Any) -> httpx.Response:
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


def test_truth_table_and_exact_envelope(sandbox: Sandbox, client: httpx.Client) -> None:
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
    sandbox: Sandbox, client: httpx.Client, value_types: str, number: str, as_int: bool
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
def test_bad_number_is_400_and_free(sandbox: Sandbox, client: httpx.Client, number: Any) -> None:
    response = check(client, sandbox, number)
    assert response.status_code == 200
    assert response.json() == {"code": 400, "message": "手机号格式错误"}
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["rejected"], ledger["billed"]) == (1, 1, 0)


def test_body_must_be_json_object_and_post(sandbox: Sandbox, client: httpx.Client) -> None:
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


@EACH
def test_number_field_and_endpoint_are_configurable(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.configure(number_field="phone", endpoint="/v2/check")
    assert sandbox.endpoint_url.endswith("/v2/check")
    ok = client.post(sandbox.endpoint_url, json={"phone": "13800138001"}, headers=KEY)
    assert ok.json()["data"]["result"] == "1"
    old_field = client.post(sandbox.endpoint_url, json={"mobile": "13800138001"}, headers=KEY)
    assert old_field.json()["code"] == 400
    assert client.post(sandbox.url + "/mobile_status/check", json={}, headers=KEY).status_code == 404


# --- key and balance ----------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "status"), [("http", 401), ("envelope", 200)])
def test_bad_key_both_styles(sandbox: Sandbox, client: httpx.Client, style: str, status: int) -> None:
    sandbox.configure(key_style=style)
    wrong = check(client, sandbox, "13800138001", headers={"X-API-Key": "nope"})
    missing = check(client, sandbox, "13800138001", headers={})
    for response in (wrong, missing):
        assert response.status_code == status
        assert response.json()["code"] == 401
    ledger = sandbox.ledger()
    assert (ledger["rejected"], ledger["billed"]) == (2, 0)


@EACH
def test_balance_exhaustion_and_refill(sandbox: Sandbox, client: httpx.Client) -> None:
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
    sandbox: Sandbox, client: httpx.Client, kind: str, status: int, code: int | None
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


@EACH
def test_fault_rules_fifo_count_number_and_overrides(sandbox: Sandbox, client: httpx.Client) -> None:
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


def test_reset_fault_drops_the_connection(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.inject("reset")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError, httpx.WriteError)):
        check(client, sandbox, "13800138001")
    assert check(client, sandbox, "13800138001").json()["code"] == 200  # the client reconnects
    ledger = sandbox.ledger()
    assert (ledger["faults"], ledger["billed"]) == (1, 1)


def test_timeout_fault_holds_until_the_client_leaves(sandbox: Sandbox) -> None:
    sandbox.inject("timeout")
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as short, pytest.raises(httpx.ReadTimeout):
        check(short, sandbox, "13800138001")
    deadline = time.monotonic() + 5
    while sandbox.ledger()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    ledger = sandbox.ledger()
    assert (ledger["in_flight"], ledger["faults"], ledger["billed"]) == (0, 1, 0)


def test_timeout_fault_gives_up_after_hold(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.configure(timeout_hold_s=0.1)
    sandbox.inject("timeout")
    assert check(client, sandbox, "13800138001").status_code == 504


# --- rate limit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["http", "envelope"])
def test_burst_is_throttled(sandbox: Sandbox, client: httpx.Client, style: str) -> None:
    # 10 a minute: the 15 requests arrive within the window however slow the machine is
    sandbox.configure(rate_limit_per_minute=10, window_s=60.0, throttle_style=style)
    responses = [check(client, sandbox, f"138001380{i:02d}") for i in range(15)]
    codes = [r.json()["code"] for r in responses]
    assert codes == [200] * 10 + [429] * 5
    for r in responses[10:]:
        assert r.json() == {"code": 429, "message": "请求过于频繁"}
        if style == "http":  # whole seconds until the oldest arrival leaves the window
            assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
        else:
            assert r.status_code == 200 and "Retry-After" not in r.headers
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["billed"], ledger["throttled"], ledger["faults"]) == (15, 10, 5, 0)
    assert ledger["peak_in_window"] == 10


def test_client_paced_at_plan_rate_is_never_throttled(sandbox: Sandbox, client: httpx.Client) -> None:
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


def test_ledger_by_number_and_concurrency(sandbox: Sandbox) -> None:
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


@EACH
def test_truth_overrides(sandbox: Sandbox, client: httpx.Client) -> None:
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


# --- worlds: the truth changes ------------------------------------------------------------------

RESULTS = "0111123451"  # world 0's result by the last digit (the truth module's first table)
#: Every (third-to-last, last) digit pair, not ported, plus ported ones (second-to-last digit 9).
WORLD_NUMBERS = [f"13800138{d}0{last}" for d in range(10) for last in range(10)]
WORLD_NUMBERS += [f"13300000{d}9{last}" for d in (0, 5) for last in (0, 9)]
MSGS = {"0": "销号或未启用", "1": "正常", "2": "停机", "3": "在网但不可用", "4": "预销号", "5": "关机"}


def world_answers(client: httpx.Client, sandbox: Sandbox, world: int) -> dict[str, dict[str, Any]]:
    sandbox.configure(world=world)
    out = {}
    for number in WORLD_NUMBERS:
        body = check(client, sandbox, number).json()
        assert body["code"] == 200, (number, body)
        out[number] = {k: v for k, v in body["data"].items() if k != "orderNo"}
    return out


@EACH
def test_worlds_change_exactly_the_documented_numbers(sandbox: Sandbox, client: httpx.Client) -> None:
    assert sandbox.config.world == 0  # the default
    worlds = {w: world_answers(client, sandbox, w) for w in (0, 1, 3, 10)}
    for number, truth in worlds[0].items():
        assert truth == expected(number) and truth["result"] == RESULTS[int(number[-1])], number
    for world in (1, 3, 10):
        for number, truth in worlds[world].items():
            d, last = int(number[-3]), int(number[-1])
            result = RESULTS[(last + 1) % 10] if d < world else RESULTS[last]
            assert (truth["result"], truth["resultMsg"]) == (result, MSGS[result]), (world, number)
            before = worlds[0][number]
            assert (truth["channel"], truth["transferStatus"]) == (
                before["channel"],
                before["transferStatus"],
            )
            assert truth == expected(number, world=world)
            assert changes_in_world(number, world) == (d < world)
        changed = {n for n in WORLD_NUMBERS if worlds[world][n] != worlds[0][n]}
        assert changed == {n for n in WORLD_NUMBERS if int(n[-3]) < world and n[-1] not in "123"}
    # world 1 changes the third-to-last digit 0 only: the rule's examples, by hand
    one = worlds[1]
    assert one["13800138000"]["result"] == "1" and one["13800138000"]["resultMsg"] == "正常"  # recycled
    assert one["13800138009"]["result"] == "0" and one["13800138009"]["resultMsg"] == "销号或未启用"
    got = [one[f"1380013800{last}"]["result"] for last in range(10)]
    assert got == ["1", "1", "1", "1", "2", "3", "4", "5", "1", "0"]
    assert [one[f"1380013810{last}"]["result"] for last in range(10)] == list(RESULTS)  # digit 1: as world 0
    assert one["13300000090"] == {
        "result": "1",
        "channel": "广电",
        "resultMsg": "正常",
        "transferStatus": "1",
    }
    assert len({n for n in WORLD_NUMBERS[:100] if worlds[10][n]["result"] != RESULTS[int(n[-1])]}) == 70
    assert sandbox.ledger()["billed"] == 4 * len(WORLD_NUMBERS)


@EACH
def test_world_keeps_overrides_and_value_types(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.configure(world=1, value_types="mixed")
    sandbox.set_truth("13800138000", {"result": "0", "channel": "卫星"})
    assert check(client, sandbox, "13800138000").json()["data"] == {"result": "0", "channel": "卫星"}
    odd = check(client, sandbox, "13800138009").json()["data"]  # odd last digit: JSON numbers
    assert (odd["result"], odd["transferStatus"]) == (0, 0)
    even = check(client, sandbox, "13800138004").json()["data"]
    assert (even["result"], even["resultMsg"]) == ("2", "停机")


def test_world_is_a_non_negative_integer(client: httpx.Client) -> None:
    assert SandboxConfig().world == 0 and SandboxConfig(world=12).world == 12
    wrong: list[Any] = [-1, 1.0, True]
    for value, match in zip(wrong, ["out of range: world=-1", "not a valid integer", "integer"], strict=True):
        with pytest.raises(ValueError, match=match):
            SandboxConfig(world=value)
    with pytest.raises(ValueError, match="non-negative"):
        expected("13800138000", world=-1)
    assert build_parser().parse_args(["--world", "2"]).world == 2
    assert "--world=4" in cli_args(SandboxConfig(world=4))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--world", "-1", "--port", "0"])
    assert exit_info.value.code == 2
    with SandboxServer() as box:
        bad = client.post(box.url + "/_sandbox/config", json={"world": -1})
        assert bad.status_code == 400 and "world=-1" in bad.json()["error"]
        ok = client.post(box.url + "/_sandbox/config", json={"world": 1})
        assert ok.json()["world"] == 1 and box.config.world == 1


def test_world_flag_and_configure_through_a_process(client: httpx.Client) -> None:
    with SandboxProcess(SandboxConfig(rate_limit_per_minute=None, world=1)) as box:  # --world=1
        assert box.config.world == 1
        assert check(client, box, "13800138000").json()["data"]["result"] == "1"
        assert check(client, box, "13800138100").json()["data"]["result"] == "0"
        assert box.configure(world=0).world == 0
        assert check(client, box, "13800138000").json()["data"]["result"] == "0"
        assert box.configure(world=2).world == 2
        assert check(client, box, "13800138100").json()["data"]["result"] == "1"
        box.reset()  # keeps the config
        assert box.config.world == 2


# --- order numbers ------------------------------------------------------------------------------


@EACH
def test_orders_record_billed_answers_only(sandbox: Sandbox, client: httpx.Client) -> None:
    assert sandbox.orders() == []
    sandbox.set_truth("13800138002", {"code": 500, "message": "上游通道繁忙"})  # rejected, not billed
    sandbox.set_truth("13800138003", {"result": "1", "channel": "卫星"})  # billed, no orderNo
    sandbox.inject("http_503", number="13800138001")
    sent: list[Any] = ["13800138001", "13800138001", "123", "13800138005", "13800138002"]
    sent += ["13800138003", "13800138001", 13800138001, "13900139009"]  # the int is a bad number
    bodies = []
    for number in sent:
        response = check(client, sandbox, number)
        bodies.append(response.json() if response.status_code == 200 else None)
    sandbox.configure(balance=0)
    assert check(client, sandbox, "13800138006").json()["code"] == 402  # not billed
    sandbox.configure(balance=None, rate_limit_per_minute=1)  # the window is full: throttled
    throttled = check(client, sandbox, "13800138007")
    assert throttled.status_code == 429
    billed = [(n, b) for n, b in zip(sent, bodies, strict=True) if b is not None and b["code"] == 200]
    assert [n for n, _ in billed] == [
        "13800138001",
        "13800138005",
        "13800138003",
        "13800138001",
        "13900139009",
    ]
    want = [{"number": n, "order_no": b["data"].get("orderNo")} for n, b in billed]
    orders = sandbox.orders()
    assert orders == want
    assert orders[2] == {"number": "13800138003", "order_no": None}  # the override had no orderNo
    order_nos = [o["order_no"] for o in orders if o["order_no"] is not None]
    assert len(order_nos) == len(set(order_nos)) == 4 and all(o.isdigit() for o in order_nos)
    assert client.get(sandbox.url + "/_sandbox/orders").json() == orders
    ledger = sandbox.ledger()
    assert ledger["billed"] == len(orders) and "orders" not in ledger
    assert (ledger["throttled"], ledger["faults"], ledger["rejected"]) == (1, 1, 4)
    orders.clear()  # a copy
    assert len(sandbox.orders()) == 5
    sandbox.reset()
    assert sandbox.orders() == [] and client.get(sandbox.url + "/_sandbox/orders").json() == []
    sandbox.configure(rate_limit_per_minute=None)
    data = check(client, sandbox, "13800138008").json()["data"]
    assert sandbox.orders() == [{"number": "13800138008", "order_no": data["orderNo"]}]


def test_orders_of_a_concurrent_burst_are_unique(sandbox: Sandbox) -> None:
    sandbox.configure(latency_ms=50)

    async def burst() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as c:
            calls = [
                c.post(sandbox.endpoint_url, json={"mobile": f"1380013{i:04d}"}, headers=KEY)
                for i in range(60)
            ]
            return [r.json() for r in await asyncio.gather(*calls)]

    bodies = asyncio.run(burst())
    orders = sandbox.orders()
    assert len(orders) == 60 == len({o["order_no"] for o in orders})
    by_number = {b["data"]["orderNo"]: f"1380013{i:04d}" for i, b in enumerate(bodies)}
    assert {o["order_no"]: o["number"] for o in orders} == by_number
    counters = [int(o["order_no"][-7:]) for o in orders]  # orderNo = timestamp + counter
    assert counters == sorted(counters)  # billing order


# --- admin endpoints, config, fixture, CLI ------------------------------------------------------


@EACH
def test_admin_endpoints(sandbox: Sandbox, client: httpx.Client) -> None:
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


def test_fixture_gives_a_clean_default_sandbox_a(phonestatus_sandbox: Sandbox) -> None:
    _assert_clean_then_dirty(phonestatus_sandbox)


def test_fixture_gives_a_clean_default_sandbox_b(phonestatus_sandbox: Sandbox) -> None:
    _assert_clean_then_dirty(phonestatus_sandbox)


def _assert_clean_then_dirty(sandbox: Sandbox) -> None:
    assert sandbox.config == SandboxConfig()
    assert sandbox.ledger()["requests"] == 0 and sandbox.ledger()["faults_pending"] == []
    sandbox.configure(api_key="other", balance=0)
    sandbox.inject("http_503", count=None)
    httpx.post(sandbox.endpoint_url, json={"mobile": "13800138001"}, headers={"X-API-Key": "other"})


def test_connection_json(phonestatus_sandbox: Sandbox) -> None:
    conn = json.loads(phonestatus_sandbox.connection_json())
    assert conn == {
        "conn_type": "phonestatus",
        "host": phonestatus_sandbox.url,
        "password": "sandbox-key",
        "extra": {"endpoint": "/mobile_status/check", "number_field": "mobile", "rate_limit_per_minute": 60},
    }
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", conn["host"])


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=RUNNERS.keys())
def test_server_lifecycle(runner: type[SandboxServer | SandboxProcess]) -> None:
    server = runner(SandboxConfig(api_key="k"))
    with pytest.raises(RuntimeError):
        _ = server.url
    assert server.config.api_key == "k"
    url = server.start()
    assert server.start() == url  # idempotent
    assert httpx.get(url + "/_sandbox/health").status_code == 200
    server.stop()
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/_sandbox/health")


# The in-process server logs to aiohttp's logger; a process's stderr is relayed to its module's logger.
ACCESS_LOGGERS = {"thread": "aiohttp.access", "process": "airflow_provider_phonestatus.sandbox.process"}


@pytest.mark.parametrize("kind", RUNNERS)
def test_access_log_masks_numbers(caplog: pytest.LogCaptureFixture, kind: str) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGERS[kind])
    with RUNNERS[kind](access_log=True) as server:
        httpx.post(server.endpoint_url + "?mobile=13800138001", json={"mobile": "13912345678"}, headers=KEY)
    logged = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGERS[kind]]
    lines = [line for line in logged if "/_sandbox/" not in line]  # a process is driven over HTTP
    assert len(lines) == 1, logged
    assert re.search(r"(^| )POST /mobile_status/check\?mobile=138\*{4}8001 -> 200 in [\d.]+ ms$", lines[0])
    assert "13800138001" not in caplog.text and "13912345678" not in caplog.text
    assert mask("call 13800138000 or 8613912345678, not 12345678901") == (
        "call 138****8000 or 86139****5678, not 12345678901"
    )


def test_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, airflow_provider_phonestatus.sandbox.pytest_plugin\n"
        "print('aiohttp' in sys.modules)\n"
        "import airflow_provider_phonestatus.sandbox.process\n"
        "print('aiohttp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]  # nor does SandboxProcess need aiohttp here


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    needles = ["--rate-limit-per-minute", "--window-s", "/_sandbox/ledger", "second-to-last", "reset"]
    for needle in [*needles, "--world", "third-to-last", "/_sandbox/orders"]:
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


# --- SandboxProcess and SandboxServer: one API ---------------------------------------------------


def _script(box: Sandbox) -> list[Any]:
    """Every control, then requests that show their effects; orderNo and the URL are masked."""
    out: list[Any] = [box.configure(balance=3, value_types="number")]
    out.append(box.inject("http_503", count=2, number="13800138005"))
    out.append(box.inject("html", status=503))
    out.append(box.inject("http_429", retry_after=7))
    box.set_truth("13800138002", {"code": 500, "message": "上游通道繁忙"})
    box.set_truth("13800138003", {"result": "9", "channel": "卫星"})
    box.set_truth("13800138003", None)
    sent = [
        "13800138001",
        *["13800138005"] * 3,
        "13800138002",
        "13800138003",
        "13800138009",
        "138",
        "13800138001",
    ]
    with httpx.Client(timeout=10) as client:
        for number in sent:
            r = check(client, box, number)
            out.append((r.status_code, r.headers.get("Retry-After"), re.sub(r'"orderNo":"\d+"', "", r.text)))
    out += [
        box.ledger(),
        box.connection_json().replace(box.url, "URL"),
        box.endpoint_url.replace(box.url, ""),
    ]
    box.reset()
    return [*out, box.ledger(), box.config]


def test_both_runners_answer_the_same(runners: dict[str, Sandbox]) -> None:
    thread, process = (_script(fresh(runners[kind])) for kind in ("thread", "process"))
    assert thread == process
    assert process[0] == SandboxConfig(rate_limit_per_minute=None, balance=3, value_types="number")
    assert process[1:4] == [1, 2, 3]
    assert [status for status, _, _ in process[4:13]] == [503, 503, 503, 429, 200, 200, 200, 200, 200]
    ledger = process[13]
    assert (ledger["requests"], ledger["faults"], ledger["billed"], ledger["rejected"]) == (9, 4, 3, 2)
    assert process[-2]["requests"] == 0 and process[-1].balance == 3


BAD_CALLS: dict[str, tuple[Any, str]] = {
    "choice": (lambda b: b.configure(throttle_style="smoke"), "throttle_style: 'smoke' is not one of"),
    "range": (lambda b: b.configure(window_s=1.0, grace_s=2.0), "out of range: grace_s=2.0"),
    "type": (lambda b: b.configure(rate_limit_per_minute="fast"), "not a valid integer or null"),
    "field": (lambda b: b.configure(no_such=1), "unknown config field"),
    "kind": (lambda b: b.inject("meteor"), "unknown fault kind 'meteor'"),
    "count": (lambda b: b.inject("html", count=0), "count must be a positive integer"),
    "rule key": (lambda b: b.inject("html", colour="red"), "bad fault rule: .*colour"),
    "truth": (lambda b: b.set_truth("12345", {}), "overrides need a valid 11-digit number"),
    "world": (lambda b: b.configure(world=-1), r"out of range: world=-1"),
    "world type": (lambda b: b.configure(world=1.5), "world: 1.5 is not a valid integer"),
}


@pytest.mark.parametrize(("call", "match"), BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_values_raise_the_same_value_error(runners: dict[str, Sandbox], call: Any, match: str) -> None:
    messages = []
    for box in runners.values():
        before = fresh(box).config
        with pytest.raises(ValueError, match=match) as info:
            call(box)
        messages.append(str(info.value))
        assert box.config == before and box.ledger()["faults_pending"] == []  # nothing applied
    assert messages[0] == messages[1]


def health_pid(url: str) -> int:
    pid: int = httpx.get(url + "/_sandbox/health").json()["pid"]
    return pid


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an orphan's zombie is init's to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def test_process_stop_reaps_the_child() -> None:
    box = SandboxProcess()
    pid = health_pid(box.start())
    assert pid != os.getpid()
    box.stop()
    with pytest.raises(ProcessLookupError):  # gone and reaped: even a zombie would accept signal 0
        os.kill(pid, 0)
    box.stop()
    with pytest.raises(RuntimeError, match="not running"):
        box.ledger()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")
def test_process_stop_kills_a_child_that_ignores_sigterm() -> None:
    box = SandboxProcess(stop_timeout=0.2)
    pid = health_pid(box.start())
    os.kill(pid, signal.SIGSTOP)  # SIGTERM stays pending: only SIGKILL ends it
    box.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_process_that_dies_is_reported_by_the_next_control() -> None:
    with SandboxProcess() as box:
        os.kill(health_pid(box.url), signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"sandbox process exited \(-9\)"):
            box.ledger()


def test_process_dies_with_its_parent() -> None:
    code = (
        "import os, httpx\n"
        "from airflow_provider_phonestatus.sandbox import SandboxProcess\n"
        "url = SandboxProcess().start()\n"
        "print(httpx.get(url + '/_sandbox/health').json()['pid'], flush=True)\n"
        "os._exit(0)  # no stop(), no atexit: as if the test run were killed\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    pid = int(out.stdout)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=RUNNERS.keys())
def test_start_on_a_taken_port_fails_clearly(runner: type[SandboxServer | SandboxProcess]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        box = runner(port=port)
        with pytest.raises(OSError, match=r"(?i)address already in use") as info:
            box.start()
    with pytest.raises(RuntimeError):
        _ = box.url
    if runner is SandboxProcess:
        assert isinstance(info.value, SandboxStartError)
        message = str(info.value)
        assert "did not start: it exited with status 1" in message
        assert f"--port={port}" in message and f"cannot listen on 127.0.0.1:{port}" in message


def test_process_start_timeout_is_reported() -> None:
    box = SandboxProcess(start_timeout=0.001)
    with pytest.raises(SandboxStartError, match=r"did not start: no URL printed within 0\.001 s"):
        box.start()
    with pytest.raises(RuntimeError):
        _ = box.url


def test_cli_args_reproduce_the_config() -> None:
    config = SandboxConfig(
        api_key="-k 密钥",
        rate_limit_per_minute=None,
        window_s=0.1,
        grace_s=0.05,
        throttle_style="envelope",
        balance=0,
        latency_ms=1e-3,
        number_field="phone",
        endpoint="/v2/check",
        value_types="mixed",
        world=3,
    )
    args = build_parser().parse_args(cli_args(config))
    assert SandboxConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config)}) == config
    with SandboxProcess(config) as box:
        assert box.config == config


def test_session_sandbox_follows_the_mode(
    phonestatus_sandbox_server: Sandbox, phonestatus_sandbox_mode: str
) -> None:
    assert phonestatus_sandbox_mode == (os.environ.get("PHONESTATUS_SANDBOX_MODE") or "process")
    assert type(phonestatus_sandbox_server) is RUNNERS[phonestatus_sandbox_mode]


def test_a_conftest_chooses_the_mode(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.fixture(scope='session')\n"
        "def phonestatus_sandbox_mode():\n    return 'thread'\n"
    )
    (tmp_path / "test_mode.py").write_text(
        "def test_mode(phonestatus_sandbox):\n"
        "    assert type(phonestatus_sandbox).__name__ == 'SandboxServer'\n"
    )
    env = {**os.environ, "PHONESTATUS_SANDBOX_MODE": "process"}  # the fixture override wins
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
