"""How requests reach the vendor: one keep-alive connection per worker thread.

The engine spends most of its client CPU sending requests, so the transport is chosen for that:
``python -m bench --only client_cpu`` measures the whole hook at 0.44 ms of CPU per request
against the sandbox, where a loop over one ``httpx.Client`` (httpcore + h11) spends 0.83 ms. So a
direct connection is a plain ``http.client`` connection, kept alive and reopened after any
failure; through a proxy, httpx's own ``HTTPTransport`` carries the requests (http, https and
socks proxies, as httpx supports them). The proxy is the connection's ``proxy`` extra or, without
one, the one ``httpx.Client`` would take from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``, ``NO_PROXY``, in either case), as Airflow's ``HttpHook`` does. Either way failures
come out as httpx's exceptions (``TimeoutException``, ``TransportError``), one vocabulary for the
callers.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
from collections.abc import Mapping
from typing import NamedTuple

import httpx

# httpx's own reading of the proxy variables, so ours cannot drift from it (pyproject pins httpx<1)
from httpx._utils import URLPattern, get_environment_proxies

from airflow_provider_phonestatus.settings import PhoneStatusSettings

USER_AGENT = "airflow-provider-phonestatus"


class Reply(NamedTuple):
    """What the vendor sent back: status, headers (names in lower case) and body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


def ssl_context(verify: bool) -> ssl.SSLContext:
    """One TLS context for all workers: building one costs ~40 ms of CPU, which at start-up
    would delay paced requests by as much. ``verify=False`` accepts any certificate."""
    if verify:
        return httpx.create_ssl_context()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy ``httpx.Client()`` (``trust_env``) would send ``url`` through, None for direct:
    its mounts from the environment, most specific pattern first, and the first that matches."""
    mounts = sorted((URLPattern(key), proxy) for key, proxy in get_environment_proxies().items())
    return next((proxy for pattern, proxy in mounts if pattern.matches(url)), None)


class DirectConnection:
    """One persistent HTTP/1.1 connection to the endpoint's origin, reopened after any failure."""

    def __init__(self, url: httpx.URL, timeout: float, context: ssl.SSLContext) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise httpx.UnsupportedProtocol(f"not an http(s) URL: {url}")
        self._conn: http.client.HTTPConnection
        if url.scheme == "https":
            self._conn = http.client.HTTPSConnection(url.host, url.port, timeout=timeout, context=context)
        else:
            self._conn = http.client.HTTPConnection(url.host, url.port, timeout=timeout)
        self._target = url.raw_path.decode("ascii")
        self._request = httpx.Request("POST", url)  #: named by the exceptions raised

    def post(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        conn = self._conn
        if conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
            conn.close()  # the server closed an idle connection (or sent junk): reopen, don't fail
        request = self._request
        try:
            conn.request("POST", self._target, body, headers)
            response = conn.getresponse()
            content = response.read()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except ssl.SSLError as exc:
            conn.close()
            raise httpx.ConnectError(f"TLS: {exc}", request=request) from exc
        except (ConnectionRefusedError, socket.gaierror) as exc:
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        except OSError as exc:
            conn.close()
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        except http.client.HTTPException as exc:
            conn.close()
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, content)

    def close(self) -> None:
        self._conn.close()


class Channel:
    """One worker's line to the vendor: POSTs a body to the lookup endpoint, nothing else."""

    def __init__(self, settings: PhoneStatusSettings, context: ssl.SSLContext) -> None:
        self.url = httpx.URL(settings.url)
        self.headers = {
            "X-API-Key": settings.api_key,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._direct: DirectConnection | None = None
        self._proxied: httpx.HTTPTransport | None = None
        # as with httpx's ``proxy=``, an explicit proxy ignores the environment
        proxy = settings.proxy or environment_proxy(self.url)
        #: whether requests go through a proxy (its URL may hold credentials: never logged)
        self.through_proxy = bool(proxy)
        if proxy:
            self._proxied = httpx.HTTPTransport(
                proxy=proxy, verify=context, limits=httpx.Limits(max_connections=1)
            )
        else:
            self._direct = DirectConnection(self.url, settings.timeout, context)
        #: httpx's transports read their timeouts from each request
        self._extensions = {"timeout": httpx.Timeout(settings.timeout).as_dict()}

    def post(self, body: bytes) -> Reply:
        if self._direct is not None:
            return self._direct.post(body, self.headers)
        assert self._proxied is not None
        request = httpx.Request(
            "POST", self.url, headers=self.headers, content=body, extensions=self._extensions
        )
        response = self._proxied.handle_request(request)
        return Reply(response.status_code, response.headers, response.read())

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._proxied is not None:
            self._proxied.close()
