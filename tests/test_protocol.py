"""Both failure layers of the vendor's answers, sorted into verdicts (pure: no I/O)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_phonestatus.exceptions import ApiKeyRefused, BalanceExhausted, EndpointNotFound
from airflow_provider_phonestatus.protocol import Verdict, build_body, parse_retry_after, read_response
from airflow_provider_phonestatus.vocabulary import Carrier, PhoneStatus


def envelope(code: int, message: str = "", data: object = None) -> bytes:
    return json.dumps({"code": code, "message": message, "data": data}).encode()


SUCCESS = {
    "result": "1",
    "channel": "移动",
    "orderNo": "202406282055560705659",
    "resultMsg": "正常",
    "transferStatus": "0",
}


def test_success_envelope_is_an_answer_with_every_field() -> None:
    outcome = read_response(200, {}, envelope(200, "success", SUCCESS))
    assert outcome.verdict is Verdict.ANSWER
    result = outcome.result
    assert result is not None
    assert (result.status, result.vendor_code, result.carrier, result.ported, result.order_no) == (
        PhoneStatus.ACTIVE,
        "1",
        Carrier.CHINA_MOBILE,
        False,
        "202406282055560705659",
    )
    assert result.message == "正常"
    assert result.checked_at.utcoffset() is not None and result.checked_at.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("0", PhoneStatus.NOT_IN_SERVICE),
        (1, PhoneStatus.ACTIVE),
        (2.0, PhoneStatus.SUSPENDED),
        (" 3 ", PhoneStatus.UNAVAILABLE),
        ("4", PhoneStatus.PENDING_CANCELLATION),
        (5, PhoneStatus.POWERED_OFF),
        ("9", PhoneStatus.UNKNOWN),
        ("abc", PhoneStatus.UNKNOWN),
    ],
)
def test_result_codes_as_strings_or_numbers(raw: object, status: PhoneStatus) -> None:
    outcome = read_response(200, {}, envelope(200, "success", {**SUCCESS, "result": raw}))
    assert outcome.verdict is Verdict.ANSWER and outcome.result is not None
    assert outcome.result.status is status


@pytest.mark.parametrize(
    "body",
    [
        {"code": 200, "message": "success"},
        {"code": 200, "message": "success", "data": None},
        {"code": 200, "message": "success", "data": {}},
        {"code": 200, "message": "success", "data": {**SUCCESS, "result": None}},
        {"code": 200, "message": "success", "data": {**SUCCESS, "result": ""}},
        {"code": 200, "message": "success", "data": {**SUCCESS, "result": "  "}},
        {"code": 200, "message": "success", "data": {**SUCCESS, "result": True}},
        {"code": 200, "message": "success", "data": {**SUCCESS, "result": {"code": "1"}}},
        {"code": 200, "message": "success", "data": {**SUCCESS, "result": ["1"]}},
        {"code": 200, "message": "success", "data": [SUCCESS]},
        {"code": 200, "message": "success", "data": "1"},
        {"code": "200", "message": "success", "data": {k: v for k, v in SUCCESS.items() if k != "result"}},
    ],
)
def test_a_success_envelope_without_a_usable_result_is_malformed(body: dict[str, object]) -> None:
    """Such an envelope says nothing about the number: retried like a bad body, never a status."""
    outcome = read_response(200, {}, json.dumps(body).encode())
    assert outcome.verdict is Verdict.RETRY and outcome.result is None and not outcome.throttled
    assert "malformed" in outcome.reason


def test_unknown_channel_is_kept_raw_and_labelled() -> None:
    outcome = read_response(
        200, {}, envelope(200, "success", {**SUCCESS, "channel": "卫星", "transferStatus": 1})
    )
    assert outcome.result is not None
    assert outcome.result.carrier is Carrier.UNKNOWN and outcome.result.carrier_raw == "卫星"
    assert outcome.result.ported is True


@pytest.mark.parametrize(
    ("status", "body", "verdict", "throttled"),
    [
        (429, b"", Verdict.RETRY, True),
        (200, envelope(429, "请求过于频繁"), Verdict.RETRY, True),
        (200, envelope(500, "上游通道繁忙"), Verdict.RETRY, False),
        (500, b"<html>oops</html>", Verdict.RETRY, False),
        (502, b"", Verdict.RETRY, False),
        (503, envelope(503), Verdict.RETRY, False),
        (504, b"", Verdict.RETRY, False),
        (408, b"", Verdict.RETRY, False),
        (200, b"", Verdict.RETRY, False),
        (200, b'{"code": 200, "data": ', Verdict.RETRY, False),
        (200, b"<html>maintenance</html>", Verdict.RETRY, False),
        (200, b"[]", Verdict.RETRY, False),
        (200, envelope(200, "success", None), Verdict.RETRY, False),
        (200, envelope(10086, "system busy"), Verdict.RETRY, False),
        (200, envelope(400, "手机号格式错误"), Verdict.REJECTED, False),
        (400, envelope(400, "bad parameter"), Verdict.REJECTED, False),
        (422, b"", Verdict.REJECTED, False),
        (400, envelope(429, "too many requests"), Verdict.RETRY, True),
    ],
)
def test_retryable_and_rejected(status: int, body: bytes, verdict: Verdict, throttled: bool) -> None:
    outcome = read_response(status, {}, body)
    assert (outcome.verdict, outcome.throttled) == (verdict, throttled)
    if verdict is Verdict.REJECTED:
        assert outcome.result is not None and outcome.result.status is PhoneStatus.REJECTED


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b"", ApiKeyRefused),
        (403, envelope(403, "forbidden"), ApiKeyRefused),
        (200, envelope(401, "invalid api key"), ApiKeyRefused),
        (200, envelope(4001, "API密钥无效"), ApiKeyRefused),
        (402, b"", BalanceExhausted),
        (200, envelope(402, "余额不足"), BalanceExhausted),
        (200, envelope(5001, "账户余额不足，请充值"), BalanceExhausted),
        (400, envelope(402, "insufficient balance"), BalanceExhausted),
        (404, b"not found", EndpointNotFound),
        (405, b"", EndpointNotFound),
    ],
)
def test_batch_stopping_answers(status: int, body: bytes, error: type[Exception]) -> None:
    outcome = read_response(status, {}, body)
    assert outcome.verdict is Verdict.STOP
    assert isinstance(outcome.error, error)


def test_retry_after_seconds_and_http_date() -> None:
    assert read_response(429, {"retry-after": "7"}, b"").retry_after == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


def test_body_uses_the_configured_field() -> None:
    assert json.loads(build_body("mobile", "13800138000")) == {"mobile": "13800138000"}
    assert json.loads(build_body("phone", "13800138000")) == {"phone": "13800138000"}
