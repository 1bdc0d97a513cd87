"""The clients the hook is measured against: none paces, all POST the hook's exact JSON bodies.

* :func:`httpx_async`: one ``httpx.AsyncClient`` (httpx's default limits, but
  ``max_connections=128``), N requests in flight: what an asyncio implementation would do.
* :func:`raw_sockets`: ``asyncio.open_connection`` and hand-written HTTP/1.1 keep-alive POSTs,
  one request in flight per connection: the ceiling of this machine and this sandbox.
* :func:`sync_loop`: one ``httpx.Client``, one request after the other.

Each stops taking new work at ``deadline_s`` after its start and returns a :class:`~bench.common.Run`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import httpx

from bench.common import Run

#: What httpx itself uses for keep-alive connections; only ``max_connections`` is raised.
HTTPX_DEFAULT_KEEPALIVE = httpx.Limits().max_keepalive_connections


def _headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key, "Content-Type": "application/json"}


def httpx_async(
    url: str, api_key: str, bodies: Sequence[bytes], concurrency: int = 128, deadline_s: float = 10.0
) -> Run:
    """``concurrency`` worker tasks sharing one ``AsyncClient``."""
    return asyncio.run(_httpx_async(url, api_key, bodies, concurrency, deadline_s))


async def _httpx_async(
    url: str, api_key: str, bodies: Sequence[bytes], concurrency: int, deadline_s: float
) -> Run:
    run = Run()
    stop_at = run.began + deadline_s
    todo = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=HTTPX_DEFAULT_KEEPALIVE)
    async with httpx.AsyncClient(limits=limits, headers=_headers(api_key), timeout=60.0) as client:

        async def worker() -> None:
            for body in todo:
                if time.perf_counter() >= stop_at:
                    break
                run.starts.append(time.perf_counter())
                response = await client.post(url, content=body)
                run.answer(response.status_code == 200)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return run


def raw_sockets(
    url: str, api_key: str, bodies: Sequence[bytes], concurrency: int = 128, deadline_s: float = 10.0
) -> Run:
    """``concurrency`` keep-alive connections on the standard asyncio loop, one request each at a time."""
    return asyncio.run(_raw_sockets(url, api_key, bodies, concurrency, deadline_s))


async def _raw_sockets(
    url: str, api_key: str, bodies: Sequence[bytes], concurrency: int, deadline_s: float
) -> Run:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {api_key}\r\n"
        "Content-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: "
    ).encode()
    run = Run()
    stop_at = run.began + deadline_s
    todo = iter(bodies)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for body in todo:
                if time.perf_counter() >= stop_at:
                    break
                run.starts.append(time.perf_counter())
                writer.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
                status, length = _read_head(await reader.readuntil(b"\r\n\r\n"))
                await reader.readexactly(length)
                run.answer(status == 200)
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return run


def _read_head(head: bytes) -> tuple[int, int]:
    """Status code and Content-Length of a response head; bodies without a length are refused."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value)
    raise RuntimeError(f"response without Content-Length: {lines[0]!r}")


def sync_loop(url: str, api_key: str, bodies: Sequence[bytes], deadline_s: float = 60.0) -> Run:
    """One ``httpx.Client``, one request at a time; ``cpu_s`` is the process CPU spent."""
    cpu = time.process_time()
    run = Run()
    stop_at = run.began + deadline_s
    with httpx.Client(headers=_headers(api_key), timeout=60.0) as client:
        for body in _until(bodies, stop_at):
            run.starts.append(time.perf_counter())
            response = client.post(url, content=body)
            run.answer(response.status_code == 200)
    run.cpu_s = time.process_time() - cpu
    return run


def _until(items: Sequence[bytes], stop_at: float) -> Iterator[bytes]:
    for item in items:
        if time.perf_counter() >= stop_at:
            return
        yield item
