"""The sandbox HTTP server: the vendor endpoint, the admin endpoints, and a background-thread runner.

Each request to the endpoint is decided synchronously (so the ledger always adds up) in the order
rate limit -> injected fault -> key -> JSON body/number format -> balance -> truth; then it waits
``latency_ms`` with ``asyncio.sleep`` (hundreds of slow requests run at once) and answers. The
in-process controls of ``SandboxServer`` and the ``/_sandbox/*`` endpoints call the same
``SandboxState`` methods. Nothing is logged: numbers are personal data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Unpack

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from airflow_provider_phonestatus.sandbox import faults, truth
from airflow_provider_phonestatus.sandbox.api import ADMIN, Listen, SandboxBase, admin_error, fault_rule
from airflow_provider_phonestatus.sandbox.config import SandboxConfig
from airflow_provider_phonestatus.sandbox.faults import FaultRule, answer
from airflow_provider_phonestatus.sandbox.ledger import Ledger, retry_after_header
from airflow_provider_phonestatus.sandbox.truth import envelope


class SandboxState:
    """Config, ledger, faults, truth overrides and balance: the controls, thread-safe."""

    def __init__(self, config: SandboxConfig) -> None:
        self._lock = threading.Lock()
        self.config = config
        self.ledger = Ledger()
        self.faults = faults.FaultQueue()
        self.truth = truth.TruthBook()
        self._balance = config.balance

    def configure(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """Apply validated changes; a new ``balance`` also refills the remaining balance."""
        with self._lock:
            self.config = self.config.replace(changes)
            if "balance" in changes:
                self._balance = self.config.balance
            return self.config

    def inject(self, rules: Iterable[Mapping[str, Any]]) -> int:
        """Queue fault rules; returns how many are pending."""
        return self.faults.add(rules)

    def set_truth(self, number: str, data: Mapping[str, Any] | None) -> None:
        """Override the answer for ``number`` (see ``TruthBook.set``); ``None`` removes the override."""
        self.truth.set(number, None if data is None else dict(data))

    def reset(self) -> None:
        """Clear ledger, faults, rate-limit window and overrides; refill the balance; keep config."""
        with self._lock:
            self.ledger.clear()
            self.faults.clear()
            self.truth.clear()
            self._balance = self.config.balance

    def snapshot(self) -> dict[str, Any]:
        """The ledger plus ``balance`` left and ``faults_pending``."""
        return {**self.ledger.snapshot(), "balance": self._balance, "faults_pending": self.faults.pending()}

    def decide(
        self, request: web.Request, now: float, body: object, number: str | None
    ) -> web.Response | FaultRule:
        """The answer (a ``web.Response``) or the ``FaultRule`` to perform; counts it in the ledger."""
        cfg, ledger = self.config, self.ledger
        wait = ledger.admit(now, cfg.window_limit, cfg.window_s, cfg.grace_s)
        if wait is not None:
            return faults.throttled(cfg.throttle_style, retry_after_header(wait))
        rule = self.faults.take(number)
        if rule is not None:
            ledger.count("faults")
            return rule
        if request.headers.get("X-API-Key") != cfg.api_key:
            ledger.count("rejected")
            return faults.bad_key(cfg.key_style)
        if request.method != "POST":
            ledger.count("rejected")
            return answer(405, envelope(405, truth.MSG_METHOD), {"Allow": "POST"})
        if request.content_type != "application/json" or not isinstance(body, dict):
            ledger.count("rejected")
            return answer(200, envelope(400, truth.MSG_BAD_BODY))
        if number is None or not truth.is_valid_number(body.get(cfg.number_field)):
            ledger.count("rejected")
            return answer(200, envelope(400, truth.MSG_BAD_NUMBER))
        return self._lookup(number, cfg)

    def _lookup(self, number: str, cfg: SandboxConfig) -> web.Response:
        with self._lock:
            if self._balance is not None and self._balance <= 0:
                self.ledger.count("rejected")
                return faults.no_balance()
            reply = self.truth.answer(number, cfg.value_types, cfg.world)
            if reply.get("code") != 200:
                self.ledger.count("rejected")
            else:
                data = reply.get("data")
                order_no = data.get("orderNo") if isinstance(data, dict) else None
                self.ledger.count("billed", number, order_no)
                if self._balance is not None:
                    self._balance -= 1
        return answer(200, reply)


STATE: web.AppKey[SandboxState] = web.AppKey("phonestatus_sandbox_state", SandboxState)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    """Every non-admin path: the configured endpoint (any method, so wrong ones are seen), or 404."""
    state = request.app[STATE]
    cfg = state.config
    if request.path != cfg.endpoint:
        return answer(404, envelope(404, "Not Found"))
    now = time.monotonic()
    body, number = truth.parse_request(await request.read(), cfg.number_field)
    state.ledger.enter(number)
    try:
        decided = state.decide(request, now, body, number)
        delay_ms = cfg.latency_ms + random.uniform(0, cfg.latency_jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if isinstance(decided, FaultRule):
            return await faults.perform(decided, request, cfg)
        return decided
    except faults.ConnectionDropped:
        return web.Response()  # the transport is gone: aiohttp drops this silently
    finally:
        state.ledger.leave()


Handler = Callable[[SandboxState, Any], object]


def _admin(action: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A control as an admin endpoint: JSON in (POST), its result out (or {"ok": true}), 400 if bad."""

    async def handle(request: web.Request) -> web.Response:
        try:
            payload = await request.json() if request.method == "POST" and request.can_read_body else None
            result = action(request.app[STATE], payload)
        except (ValueError, TypeError, KeyError) as exc:
            return answer(400, admin_error(exc))
        return answer(200, {"ok": True} if result is None else result)

    return handle


ADMIN_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/health", lambda s, _: {"status": "ok", "endpoint": s.config.endpoint, "pid": os.getpid()}),
    ("GET", "/ledger", lambda s, _: s.snapshot()),
    ("GET", "/orders", lambda s, _: s.ledger.orders()),
    ("POST", "/reset", lambda s, _: s.reset()),
    ("GET", "/config", lambda s, _: s.config.as_dict()),
    ("POST", "/config", lambda s, p: s.configure(p).as_dict()),
    ("GET", "/faults", lambda s, _: s.faults.pending()),
    ("POST", "/faults", lambda s, p: {"faults_pending": s.inject(p if isinstance(p, list) else [p])}),
    ("POST", "/truth", lambda s, p: s.set_truth(p["number"], p.get("data"))),
]


def make_app(state: SandboxState) -> web.Application:
    """The aiohttp application: admin routes first, then everything else to ``_dispatch``."""
    app = web.Application()
    app[STATE] = state
    for method, path, action in ADMIN_ROUTES:
        app.router.add_route(method, ADMIN + path, _admin(action))
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


class MaskedAccessLogger(AbstractAccessLogger):
    """Access lines without bodies and with numbers masked (a query string might carry one)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = truth.mask(request.path_qs)
        self.logger.info("%s %s -> %s in %.1f ms", request.method, path, response.status, time * 1000)


async def start_site(
    state: SandboxState,
    host: str,
    port: int,
    access_log: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, str]:
    """Serve ``state`` on ``host:port`` (0 = any free port), over TLS with ``ssl_context``;
    returns the runner and the base URL."""
    logger = logging.getLogger("aiohttp.access") if access_log else None
    runner = web.AppRunner(
        make_app(state), access_log=logger, access_log_class=MaskedAccessLogger, shutdown_timeout=0.5
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"{'https' if ssl_context else 'http'}://{shown}:{bound_port}"


class SandboxServer(SandboxBase):
    """The sandbox on a background thread with its own event loop; controls act in-process.

    Use it as ``with SandboxServer() as sandbox: httpx.post(sandbox.endpoint_url, ...)``.
    ``access_log=True`` logs request lines, numbers masked, to the ``aiohttp.access`` logger;
    ``ssl_context`` serves HTTPS (the real vendor's scheme) with that context's certificate.
    Its event loop shares the GIL with the caller's threads: under load it timestamps arrivals late
    and in bursts, so tests of a client's pacing should use ``SandboxProcess`` (same API).
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        **listen: Unpack[Listen],
    ) -> None:
        super().__init__(**listen)
        self.state = SandboxState(config or SandboxConfig())
        self.ssl_context = ssl_context
        self._url = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> str:
        """Start serving (idempotent) and return the base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._url is not None:
            return self._url
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                site = start_site(self.state, self.host, self.port, self.access_log, self.ssl_context)
                runner, self._url = loop.run_until_complete(site)
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                loop.close()
                ready.set()
                return
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="phonestatus-sandbox", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        assert self._url is not None
        return self._url

    def stop(self) -> None:
        """Stop serving; requests still held (e.g. by a "timeout" fault) are dropped."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop = self._thread = self._url = None

    @property
    def config(self) -> SandboxConfig:
        """The config in force (the state outlives ``stop``: a restart serves it again)."""
        return self.state.config

    # controls (the /_sandbox/* endpoints call the same SandboxState methods)
    def configure(self, **changes: Any) -> SandboxConfig:
        """Change config fields; returns the new config. ``ValueError`` on unknown or invalid values."""
        return self.state.configure(changes)

    def inject(self, kind: str, count: int | None = 1, number: str | None = None, **kw: Any) -> int:
        """Queue a fault (``retry_after=``, ``status=`` in ``kw``); returns how many rules are pending."""
        return self.state.inject([fault_rule(kind, count, number, **kw)])

    def set_truth(self, number: str, data: Mapping[str, Any] | None) -> None:
        """Serve ``data`` (or a whole envelope if it has ``code``) for ``number``; ``None`` removes."""
        self.state.set_truth(number, data)

    def ledger(self) -> dict[str, Any]:
        """Snapshot of the ledger (see ``Ledger.snapshot``) plus ``balance`` and ``faults_pending``."""
        return self.state.snapshot()

    def orders(self) -> list[dict[str, Any]]:
        """Every billed answer, in billing order: ``{"number": ..., "order_no": ...}``."""
        return self.state.ledger.orders()

    def reset(self) -> None:
        """Clear ledger (and orders), faults, rate-limit window and overrides; keep config."""
        self.state.reset()
