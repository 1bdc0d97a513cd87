"""Connection values become settings; typos and unusable values fail loudly, not silently."""

from __future__ import annotations

import json

import pytest

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.settings import PhoneStatusSettings


def test_defaults_follow_the_contract() -> None:
    s = PhoneStatusSettings.from_connection(None, "key", {})
    assert s.url == "https://openapi.toolkk.com/mobile_status/check"
    assert (s.number_field, s.rate_limit_per_minute, s.timeout) == ("mobile", 60, 5.0)
    assert s.interval == 1.0
    assert "key" not in repr(s)


def test_extras_typed_in_a_form_are_coerced() -> None:
    s = PhoneStatusSettings.from_connection(
        "http://127.0.0.1:8099/",
        "key",
        {
            "rate_limit_per_minute": "18000",
            "timeout": "1.5",
            "max_concurrency": "32",
            "number_field": "phone",
            "extra__phonestatus__endpoint": "/v2/check",
            "verify_ssl": "false",
        },
    )
    assert s.url == "http://127.0.0.1:8099/v2/check"
    assert (s.rate_limit_per_minute, s.timeout, s.concurrency, s.number_field, s.verify_ssl) == (
        18000.0,
        1.5,
        32,
        "phone",
        False,
    )


def test_concurrency_is_derived_from_rate_and_timeout() -> None:
    assert PhoneStatusSettings(api_key="k").concurrency == 6  # 1 req/s x 5 s + 1
    assert PhoneStatusSettings(api_key="k", rate_limit_per_minute=18000).concurrency == 128


@pytest.mark.parametrize(
    ("host", "password", "extra", "words"),
    [
        ("openapi.toolkk.com", "key", {}, "http"),
        (None, "", {}, "API key"),
        (None, "key", {"rate_limit": 100}, "unknown phonestatus connection extras: rate_limit"),
        (None, "key", {"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        (None, "key", {"timeout": "soon"}, "timeout"),
        (None, "key", {"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_unusable_connections_say_why(
    host: str | None, password: str, extra: dict[str, object], words: str
) -> None:
    with pytest.raises(PhoneStatusConfigError, match=words):
        PhoneStatusSettings.from_connection(host, password, extra)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("verify_ssl", "flase"),
        ("verify_ssl", "ture"),
        ("verify_ssl", 2),
        ("rate_limit_per_minute", "60/min"),
        ("rate_limit_per_minute", "nan"),
        ("rate_limit_per_minute", True),
        ("timeout", "5s"),
        ("timeout", "inf"),
        ("backoff_base", "fast"),
        ("backoff_max", [30]),
        ("max_retry_after", "five minutes"),
        ("max_concurrency", "32.5"),
        ("max_concurrency", 4.5),
        ("max_retries", "three"),
        ("max_retries", False),
        ("max_consecutive_failures", "10x"),
        ("number_field", 7),
        ("proxy", {"http": "x"}),
    ],
)
def test_a_typo_in_any_typed_extra_fails_naming_it(name: str, value: object) -> None:
    """No typo becomes a silent default: "flase" must not turn TLS verification off."""
    extra = {name: value}
    with pytest.raises(PhoneStatusConfigError, match=name):
        PhoneStatusSettings.from_connection("http://127.0.0.1:1", "key", extra)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("False", False), (" yes ", True), ("no", False), ("1", True), (0, False), (True, True)],
)
def test_clear_booleans_are_read(value: object, expected: bool) -> None:
    s = PhoneStatusSettings.from_connection("http://127.0.0.1:1", "key", {"verify_ssl": value})
    assert s.verify_ssl is expected


def test_empty_form_fields_keep_the_defaults() -> None:
    s = PhoneStatusSettings.from_connection("http://127.0.0.1:1", "key", {"verify_ssl": "", "timeout": None})
    assert (s.verify_ssl, s.timeout) == (True, 5.0)


def test_whole_numbers_given_as_floats_are_accepted() -> None:
    s = PhoneStatusSettings.from_connection("http://127.0.0.1:1", "key", {"max_retries": 3.0})
    assert s.max_retries == 3 and isinstance(s.max_retries, int)


def test_a_typo_in_the_connection_fails_before_any_request(
    phonestatus_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {
        "conn_type": "phonestatus",
        "host": phonestatus_sandbox.url,
        "password": phonestatus_sandbox.config.api_key,
        "extra": {"verify_ssl": "flase"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_DEFAULT", json.dumps(conn))
    hook = PhoneStatusHook()
    with pytest.raises(PhoneStatusConfigError, match="verify_ssl"):
        list(hook.check_many(["13800138001"]))
    ok, message = hook.test_connection()
    assert not ok and "verify_ssl" in message
    assert phonestatus_sandbox.ledger()["requests"] == 0
