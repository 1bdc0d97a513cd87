"""Connection values become settings; typos and unusable values fail loudly, not silently."""

from __future__ import annotations

import pytest

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
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
