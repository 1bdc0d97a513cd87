"""PhoneStatusHook over real HTTP against the sandbox: answers, cost, failures, pacing.

Every assertion about cost reads the sandbox's ledger: what the vendor would have counted and
billed, not what the hook believes it sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any

import pytest

from airflow_provider_phonestatus.exceptions import (
    ApiKeyRefused,
    BalanceExhausted,
    EndpointNotFound,
    VendorUnavailable,
)
from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.sandbox.faults import KINDS as FAULT_KINDS
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from airflow_provider_phonestatus.vocabulary import Carrier, PhoneStatus

MALFORMED = [kind for kind in FAULT_KINDS if kind.startswith("malformed_")]
FAST = {"rate_limit_per_minute": 600_000, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 2.0}


def make_hook(sandbox: SandboxServer, **changes: Any) -> PhoneStatusHook:
    settings = PhoneStatusSettings(
        api_key=sandbox.config.api_key, base_url=sandbox.url, **{**FAST, **changes}
    )
    return PhoneStatusHook(settings=settings)


def numbers(n: int, start: int = 13800000001) -> list[str]:
    """n distinct valid mobiles whose last digit is 1..4 (active in the sandbox's truth)."""
    out: list[str] = []
    value = start
    while len(out) < n:
        if str(value)[-1] in "1234":
            out.append(str(value))
        value += 1
    return out


@pytest.fixture
def sandbox(phonestatus_sandbox: SandboxServer) -> SandboxServer:
    phonestatus_sandbox.configure(rate_limit_per_minute=None)
    return phonestatus_sandbox


@pytest.mark.parametrize(
    ("number", "status", "carrier", "ported"),
    [
        ("13800138000", PhoneStatus.NOT_IN_SERVICE, Carrier.CHINA_MOBILE, False),
        ("13800138001", PhoneStatus.ACTIVE, Carrier.CHINA_MOBILE, False),
        ("13000138005", PhoneStatus.SUSPENDED, Carrier.CHINA_UNICOM, False),
        ("18900138006", PhoneStatus.UNAVAILABLE, Carrier.CHINA_TELECOM, False),
        ("19200138007", PhoneStatus.PENDING_CANCELLATION, Carrier.CHINA_BROADNET, False),
        ("13800138008", PhoneStatus.POWERED_OFF, Carrier.CHINA_MOBILE, False),
        ("13800138095", PhoneStatus.SUSPENDED, Carrier.CHINA_UNICOM, True),
    ],
)
@pytest.mark.parametrize("value_types", ["string", "number"])
def test_check_reads_every_vendor_answer(
    sandbox: SandboxServer, number: str, status: PhoneStatus, carrier: Carrier, ported: bool, value_types: str
) -> None:
    sandbox.configure(value_types=value_types)
    hook = make_hook(sandbox)
    result = hook.check("+86 " + number[:3] + " " + number[3:7] + " " + number[7:])
    assert (result.status, result.carrier, result.ported) == (status, carrier, ported)
    assert result.order_no and result.is_paid
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["billed"]) == (1, 1)
    assert hook.stats.as_dict()["requests_sent"] == 1 and hook.stats.lookups_ok == 1


def test_invalid_and_unsupported_are_answered_without_a_request(sandbox: SandboxServer) -> None:
    hook = make_hook(sandbox)
    inputs = [None, "", "n/a", "12345", "010-12345678", "+1 650 253 0000", "+852 9123 4567"]
    results = dict(hook.check_many(inputs))
    assert results[None].status is PhoneStatus.INVALID
    assert results["n/a"].status is PhoneStatus.INVALID
    assert results["010-12345678"].status is PhoneStatus.UNSUPPORTED
    assert results["+1 650 253 0000"].status is PhoneStatus.UNSUPPORTED
    assert sandbox.ledger()["requests"] == 0
    assert hook.stats.answered_locally == len(inputs)


def test_spellings_of_one_number_cost_one_request(sandbox: SandboxServer) -> None:
    spellings = [
        "13800138001",
        "+86 138 0013 8001",
        "0086-138-0013-8001",
        "8613800138001",
        13800138001,
        "１３８００１３８００１",
        "(+86) 138.0013.8001",
        "13800138001",
        "13800138002",
    ]
    hook = make_hook(sandbox)
    pairs = list(hook.check_many(spellings))
    assert len(pairs) == len(spellings) - 1  # one pair per distinct input
    orders = {r.order_no for v, r in pairs if v != "13800138002"}
    assert len(orders) == 1 and None not in orders  # every spelling got the one paid answer
    ledger = sandbox.ledger()
    assert ledger["requests"] == 2
    assert ledger["by_number"]["13800138001"]["requests"] == 1


def test_many_distinct_numbers_each_sent_once(sandbox: SandboxServer) -> None:
    sandbox.configure(latency_ms=5)
    batch = numbers(300)
    hook = make_hook(sandbox, max_concurrency=16)
    results = dict(hook.check_many(batch))
    assert len(results) == 300 and all(r.status is PhoneStatus.ACTIVE for r in results.values())
    ledger = sandbox.ledger()
    assert ledger["requests"] == 300 and ledger["billed"] == 300
    assert all(entry["requests"] == 1 for entry in ledger["by_number"].values())
    assert 1 < ledger["max_concurrency"] <= 16


@pytest.mark.parametrize(
    "kind",
    [
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "reset",
        "bad_json",
        "empty_body",
        "html",
        "envelope_500",
        "timeout",
        *MALFORMED,
    ],
)
def test_transient_failures_are_retried_then_answered(sandbox: SandboxServer, kind: str) -> None:
    sandbox.configure(timeout_hold_s=3.0)
    sandbox.inject(kind, count=2)
    hook = make_hook(sandbox, timeout=0.3)
    result = hook.check("13800138001")
    assert result.status is PhoneStatus.ACTIVE
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["billed"], ledger["faults"]) == (3, 1, 2)
    assert hook.stats.retries == 2 and hook.stats.requests_sent == 3


@pytest.mark.parametrize("style", ["http", "envelope"])
def test_throttled_answers_are_counted_and_retried(sandbox: SandboxServer, style: str) -> None:
    sandbox.configure(throttle_style=style)
    sandbox.inject("http_429" if style == "http" else "envelope_429", count=1, retry_after=0)
    hook = make_hook(sandbox)
    assert hook.check("13800138001").status is PhoneStatus.ACTIVE
    assert hook.stats.throttled == 1
    assert sandbox.ledger()["requests"] == 2


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_success_envelope_never_becomes_a_status(sandbox: SandboxServer, kind: str) -> None:
    """A success envelope without a usable data.result says nothing about the number: after the
    retries the number is ``failed`` (never ``unknown``), and nothing was billed."""
    sandbox.inject(kind, count=None)
    hook = make_hook(sandbox, max_retries=2, max_consecutive_failures=0)
    results = dict(hook.check_many(numbers(5)))
    assert {r.status for r in results.values()} == {PhoneStatus.FAILED}
    assert all(not r.is_answer and r.order_no is None for r in results.values())
    assert all("malformed" in (r.message or "") for r in results.values())
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["billed"]) == (15, 0)
    assert hook.stats.lookups_ok == 0 and hook.stats.failed == 5


def test_retries_are_capped_and_a_failure_is_labelled(sandbox: SandboxServer) -> None:
    sandbox.inject("http_503", count=10)
    hook = make_hook(sandbox, max_retries=3)
    result = hook.check("13800138001")
    assert result.status is PhoneStatus.FAILED and not result.is_answer and not result.is_paid
    assert "503" in (result.message or "")
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["billed"]) == (4, 0)


@pytest.mark.parametrize("style", ["http", "envelope"])
def test_refused_key_stops_the_batch_at_once(sandbox: SandboxServer, style: str) -> None:
    sandbox.configure(key_style=style)
    hook = PhoneStatusHook(
        settings=PhoneStatusSettings(api_key="wrong", base_url=sandbox.url, **FAST, max_concurrency=4)
    )
    with pytest.raises(ApiKeyRefused, match="API key refused"):
        list(hook.check_many(numbers(200)))
    assert sandbox.ledger()["requests"] <= 4  # at most the requests already in flight


def test_balance_exhausted_stops_after_yielding_everything_paid_for(sandbox: SandboxServer) -> None:
    sandbox.configure(balance=7)
    hook = make_hook(sandbox, max_concurrency=3)
    answered = []
    with pytest.raises(BalanceExhausted):
        for value, result in hook.check_many(numbers(100)):
            answered.append((value, result))
    ledger = sandbox.ledger()
    assert ledger["billed"] == 7
    assert len(answered) == 7 and all(r.status is PhoneStatus.ACTIVE for _, r in answered)
    assert ledger["requests"] <= 7 + 3


def test_a_number_the_vendor_rejects_is_that_numbers_result(sandbox: SandboxServer) -> None:
    sandbox.set_truth("13800138002", {"code": 400, "message": "手机号13800138002格式错误"})
    hook = make_hook(sandbox)
    results = dict(hook.check_many(["13800138001", "13800138002", "13800138003"]))
    assert results["13800138002"].status is PhoneStatus.REJECTED
    assert "13800138002" not in (results["13800138002"].message or "")  # masked, it may reach logs
    assert results["13800138001"].status is results["13800138003"].status is PhoneStatus.ACTIVE
    assert sandbox.ledger()["requests"] == 3


def test_unknown_code_and_carrier_are_kept_raw(sandbox: SandboxServer) -> None:
    sandbox.set_truth(
        "13800138001",
        {"result": "9", "channel": "卫星", "orderNo": "X1", "resultMsg": "?", "transferStatus": "0"},
    )
    result = make_hook(sandbox).check("13800138001")
    assert (result.status, result.vendor_code, result.carrier, result.carrier_raw) == (
        PhoneStatus.UNKNOWN,
        "9",
        Carrier.UNKNOWN,
        "卫星",
    )


def test_wrong_number_field_stops_before_spending_a_request_per_number(sandbox: SandboxServer) -> None:
    hook = make_hook(sandbox, number_field="phone", max_concurrency=2, max_consecutive_failures=5)
    with pytest.raises(VendorUnavailable, match="number_field"):
        list(hook.check_many(numbers(100)))
    assert sandbox.ledger()["requests"] <= 5 + 2


def test_wrong_endpoint_stops_the_batch(sandbox: SandboxServer) -> None:
    hook = make_hook(sandbox, endpoint="/no/such/path")
    with pytest.raises(EndpointNotFound):
        list(hook.check_many(numbers(20)))


def test_pacing_keeps_under_the_plan_rate_whatever_the_concurrency(sandbox: SandboxServer) -> None:
    """Plan: 1200/min, checked by the sandbox over 1-second windows (at most 20 a window)."""
    sandbox.configure(rate_limit_per_minute=1200, window_s=1.0)
    hook = make_hook(sandbox, rate_limit_per_minute=1200, max_concurrency=32)
    results = dict(hook.check_many(numbers(60)))
    ledger = sandbox.ledger()
    assert len(results) == 60
    assert ledger["throttled"] == 0 and hook.stats.throttled == 0
    assert ledger["requests"] == 60


def test_one_pacer_per_hook_across_threads(sandbox: SandboxServer) -> None:
    """Three threads call check_many on one hook at once; together they stay within the plan."""
    sandbox.configure(rate_limit_per_minute=1200, window_s=1.0)
    hook = make_hook(sandbox, rate_limit_per_minute=1200, max_concurrency=8)
    chunks = [numbers(20, start=13800000001 + 1000 * i) for i in range(3)]
    threads = [threading.Thread(target=lambda c=c: list(hook.check_many(c))) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["throttled"], ledger["billed"]) == (60, 0, 60)


def test_test_connection_tells_ok_refused_and_unreachable(sandbox: SandboxServer) -> None:
    ok, message = make_hook(sandbox).test_connection()
    assert ok, message
    refused = PhoneStatusHook(settings=PhoneStatusSettings(api_key="wrong", base_url=sandbox.url))
    ok, message = refused.test_connection()
    assert not ok and "refused" in message
    unreachable = PhoneStatusHook(settings=PhoneStatusSettings(api_key="k", base_url="http://127.0.0.1:9"))
    ok, message = unreachable.test_connection()
    assert not ok and "unreachable" in message
    assert sandbox.ledger()["billed"] == 0


def test_hook_reads_its_airflow_connection(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_DEFAULT", sandbox.connection_json())
    hook = PhoneStatusHook()
    assert hook.settings.base_url == sandbox.url
    assert hook.check("13800138001").status is PhoneStatus.ACTIVE
    assert "sandbox-key" not in repr(hook.settings)


def test_logs_and_errors_never_hold_a_whole_number(
    sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox.inject("http_503", count=50)
    hook = make_hook(sandbox, max_retries=1, max_consecutive_failures=3)
    batch = numbers(10)
    with pytest.raises(VendorUnavailable) as info:
        list(hook.check_many(batch))
    text = caplog.text + str(info.value)
    assert not re.search(r"1[3-9]\d{9}", text)
    assert "138****" in caplog.text


def test_async_callers_share_the_hooks_pacer(sandbox: SandboxServer) -> None:
    """Tasks on an event loop, some with acheck and one with acheck_many, stay within one plan."""
    sandbox.configure(rate_limit_per_minute=1200, window_s=1.0)
    hook = make_hook(sandbox, rate_limit_per_minute=1200, max_concurrency=8)
    singles = numbers(20)
    many = numbers(20, start=13900000001)

    async def main() -> tuple[list[PhoneStatus], list[PhoneStatus]]:
        async def collect() -> list[PhoneStatus]:
            return [result.status async for _, result in hook.acheck_many(many)]

        gathered = await asyncio.gather(collect(), *(hook.acheck(n) for n in singles))
        return gathered[0], [r.status for r in gathered[1:]]

    from_many, from_singles = asyncio.run(main())
    assert from_many == [PhoneStatus.ACTIVE] * 20 and from_singles == [PhoneStatus.ACTIVE] * 20
    ledger = sandbox.ledger()
    assert (ledger["requests"], ledger["throttled"], ledger["billed"]) == (40, 0, 40)
