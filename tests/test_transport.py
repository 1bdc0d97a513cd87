"""The connections lookups travel on: TLS as the real vendor serves it, keep-alive that survives
the server closing an idle connection. Real HTTP(S) over loopback against the sandbox."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme

from airflow_provider_phonestatus.protocol import build_body
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.vocabulary import PhoneStatus
from tests.test_hook import make_hook


@pytest.fixture
def tls_sandbox() -> Iterator[SandboxServer]:
    """The sandbox over HTTPS, with a certificate for 127.0.0.1 from a CA no client trusts."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    with SandboxServer(ssl_context=context) as sandbox:
        yield sandbox


def test_lookups_over_tls(tls_sandbox: SandboxServer) -> None:
    assert tls_sandbox.url.startswith("https://")
    hook = make_hook(tls_sandbox, verify_ssl=False)
    results = dict(hook.check_many(["13800138000", "13800138001"]))
    assert results["13800138000"].status is PhoneStatus.NOT_IN_SERVICE
    assert results["13800138001"].status is PhoneStatus.ACTIVE
    assert tls_sandbox.ledger()["requests"] == 2
    assert hook.test_connection()[0] is True


def test_an_untrusted_certificate_is_refused_before_any_request(tls_sandbox: SandboxServer) -> None:
    hook = make_hook(tls_sandbox, verify_ssl=True)
    ok, message = hook.test_connection()
    assert not ok and "host unreachable" in message and "ConnectError" in message
    assert tls_sandbox.ledger()["requests"] == 0  # the handshake failed: nothing reached the API


def test_a_connection_closed_by_the_server_while_idle_is_reopened_without_a_failed_request() -> None:
    with socket.socket() as probe:  # a fixed port, so the restarted sandbox is at the same URL
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sandbox = SandboxServer(port=port)
    sandbox.start()
    try:
        with contextlib.closing(make_hook(sandbox).client.new_channel()) as channel:
            first = channel.post(build_body("mobile", "13800138001"))
            sandbox.stop()  # closes every connection, ours included, while it is idle
            sandbox.start()
            second = channel.post(build_body("mobile", "13800138002"))
        # http.client alone would send on the dead socket and fail with RemoteDisconnected
        assert (first.status_code, second.status_code) == (200, 200)
        assert sandbox.ledger()["requests"] == 2  # the ledger outlives the restart: one each
    finally:
        sandbox.stop()
