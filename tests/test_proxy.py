"""Proxies from the environment, honoured as httpx (and so Airflow's HttpHook) honours them.

A real forward proxy on loopback (a small threaded one below: it forwards absolute-URI POSTs to
their target and records each one it forwarded) sits between the hook and the sandbox.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest

from airflow_provider_phonestatus.protocol import build_body
from airflow_provider_phonestatus.sandbox import Sandbox
from airflow_provider_phonestatus.vocabulary import PhoneStatus
from tests.test_hook import make_hook, numbers

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")
#: Not forwarded either way (RFC 9110 7.6.1), plus what each side writes for itself.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "date",
    "server",
}


class ForwardProxy(ThreadingHTTPServer):
    """An HTTP forward proxy on 127.0.0.1; ``forwarded`` lists the target of each forwarded request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Forwarder)
        self.forwarded: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forwarder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ForwardProxy

    def do_POST(self) -> None:
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:  # a proxy is sent absolute URIs only
            self.send_error(400, "not an absolute http URI")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        path = target.path + (f"?{target.query}" if target.query else "")
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            upstream.request("POST", path, body, headers)
            response = upstream.getresponse()
            content = response.read()
        except OSError:
            self.send_error(502)
            return
        finally:
            upstream.close()
        with self.server.lock:
            self.server.forwarded.append(target.netloc)
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet; it would print request lines to stderr


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def closed_port() -> Iterator[str]:
    """A proxy URL nobody listens on: the port stays bound (so not reused) but refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def sandbox(phonestatus_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The sandbox without a rate limit, and an environment without proxy variables to start from."""
    phonestatus_sandbox.configure(rate_limit_per_minute=None)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return phonestatus_sandbox


def lookups(sandbox: Sandbox, count: int = 3, **changes: object) -> dict[object, PhoneStatus]:
    """Look up ``count`` numbers; a generous timeout, so a loaded machine causes no retry to count."""
    hook = make_hook(sandbox, timeout=30.0, **changes)
    return {number: result.status for number, result in hook.check_many(numbers(count))}


def answered(count: int = 3) -> dict[object, PhoneStatus]:
    """What every lookup of :func:`lookups` should read: the sandbox's truth for ``numbers``."""
    return dict.fromkeys(numbers(count), PhoneStatus.ACTIVE)


def test_http_proxy_carries_every_lookup(
    sandbox: Sandbox, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert lookups(sandbox) == answered()
    assert proxy.forwarded == [urlsplit(sandbox.url).netloc] * 3
    assert sandbox.ledger()["requests"] == 3  # and the vendor answered what the proxy forwarded


def test_no_proxy_sends_the_sandbox_host_direct(
    sandbox: Sandbox, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.com, 127.0.0.1")
    assert lookups(sandbox) == answered()
    assert proxy.forwarded == []
    assert sandbox.ledger()["requests"] == 3


@pytest.mark.parametrize("variable", ["http_proxy", "ALL_PROXY", "all_proxy"])
def test_lower_case_and_all_proxy_variables(
    sandbox: Sandbox, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    assert lookups(sandbox) == answered()
    assert len(proxy.forwarded) == 3 and sandbox.ledger()["requests"] == 3


def test_lower_case_wins_over_upper_case(
    sandbox: Sandbox, proxy: ForwardProxy, closed_port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in httpx (through urllib's ``getproxies``): ``http_proxy`` beats ``HTTP_PROXY``."""
    monkeypatch.setenv("HTTP_PROXY", closed_port)
    monkeypatch.setenv("http_proxy", proxy.url)
    assert lookups(sandbox) == answered()
    assert len(proxy.forwarded) == 3


def test_the_connection_proxy_wins_over_the_environment(
    sandbox: Sandbox, proxy: ForwardProxy, closed_port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", closed_port)
    monkeypatch.setenv("ALL_PROXY", closed_port)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # ignored too, as httpx's proxy= ignores it
    assert lookups(sandbox, proxy=proxy.url) == answered()
    assert len(proxy.forwarded) == 3 and sandbox.ledger()["requests"] == 3


def test_a_dead_proxy_in_the_environment_fails_the_lookups(
    sandbox: Sandbox, closed_port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", closed_port)
    hook = make_hook(sandbox, max_retries=1)
    results = [result for _, result in hook.check_many(numbers(2))]
    assert [r.status for r in results] == [PhoneStatus.FAILED] * 2
    assert all(r.message == "transport error: ConnectError" for r in results)
    assert sandbox.ledger()["requests"] == 0  # nothing got past the proxy that is not there
    ok, message = hook.test_connection()
    assert not ok and "ConnectError" in message and "through the proxy" in message


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"HTTPS_PROXY": "{proxy}"},  # for https URLs only: the sandbox is http
        {"HTTP_PROXY": "{proxy}", "NO_PROXY": "*"},
        {"HTTP_PROXY": "{proxy}", "NO_PROXY": "localhost"},  # a name, not the sandbox's address
        {"HTTP_PROXY": "{proxy}", "no_proxy": "127.0.0.2,127.0.0.1"},
        {"HTTP_PROXY": "{proxy}", "NO_PROXY": "http://127.0.0.1:{port}"},
        {"HTTP_PROXY": "{proxy}", "NO_PROXY": "https://127.0.0.1"},
        {"ALL_PROXY": "{proxy}", "HTTPS_PROXY": "{dead}"},
        {"HTTP_PROXY": "127.0.0.1:{proxy_port}"},  # no scheme: httpx reads it as http://
        {"HTTP_PROXY": "{proxy}", "REQUEST_METHOD": "GET"},  # CGI: urllib drops HTTP_PROXY
    ],
    ids=lambda environment: ",".join(f"{k}={v}" for k, v in environment.items()) or "none",
)
def test_the_same_route_as_an_httpx_client(
    sandbox: Sandbox,
    proxy: ForwardProxy,
    closed_port: str,
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
) -> None:
    """Whatever the variables say, a lookup goes through the proxy exactly when httpx's would."""
    values = {
        "proxy": proxy.url,
        "proxy_port": str(proxy.server_address[1]),
        "dead": closed_port,
        "port": str(urlsplit(sandbox.url).port),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value.format(**values))
    with httpx.Client(timeout=30) as client:  # trust_env, as HttpHook uses it
        response = client.post(
            sandbox.endpoint_url,
            content=build_body("mobile", numbers(1)[0]),
            headers={"X-API-Key": sandbox.config.api_key, "Content-Type": "application/json"},
        )
    assert response.status_code == 200
    by_httpx = len(proxy.forwarded)
    assert lookups(sandbox, count=1) == answered(1)
    assert len(proxy.forwarded) - by_httpx == by_httpx  # 1 through the proxy, or 0 direct
    assert sandbox.ledger()["requests"] == 2
