"""``phonestatus-sandbox``: run the vendor-API sandbox as a process, e.g. in a DAG author's CI.

Every ``SandboxConfig`` field is a flag (generated from the dataclass, so they never drift apart).
The first line printed is ``phonestatus sandbox listening on <url>``; ``SandboxProcess`` (what the
pytest fixtures run by default) starts this CLI and reads its URL from that line.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence

from airflow_provider_phonestatus.sandbox.config import CLI_TYPES, SandboxConfig, cli_flag
from airflow_provider_phonestatus.sandbox.faults import KINDS
from airflow_provider_phonestatus.sandbox.server import SandboxServer

EPILOG = """\
truth (predictable answers, see airflow_provider_phonestatus.sandbox.truth):
  numbers must be JSON strings matching ^1[3-9]\\d{9}$, else code 400 (not billed)
  result by the last digit: 0->"0" 销号或未启用, 1-4,9->"1" 正常, 5->"2" 停机,
    6->"3" 在网但不可用, 7->"4" 预销号, 8->"5" 关机
  channel by the 3-digit prefix (real allocation); second-to-last digit 9 = ported
    (transferStatus "1", channel = next of 移动->联通->电信->广电->移动)
  --world W (default 0 = the above): in world W >= 1 a number whose third-to-last
    digit is < W (W=1: 10% of numbers, W>=10: all) gets the result and resultMsg of
    the next last digit, (last+1)%10: 0->"1" (recycled), 4->"2", 5->"3", 6->"4",
    7->"5", 8->"1", 9->"0", 1-3 stay "1"; channel and transferStatus unchanged

admin endpoints (JSON, no key needed):
  GET  /_sandbox/health           liveness (status, endpoint, pid)
  GET  /_sandbox/ledger           requests, throttled, faults, rejected, billed, by_number, ...
  GET  /_sandbox/orders           billed answers in order: [{"number": ..., "order_no": ...}]
  POST /_sandbox/reset            clear ledger, orders, faults, rate window, overrides (config kept)
  GET  /_sandbox/config           current config
  POST /_sandbox/config           {"rate_limit_per_minute": 600, "window_s": 1.0, "world": 1, ...}
  GET  /_sandbox/faults           pending fault rules
  POST /_sandbox/faults           {"kind": "http_503", "count": 2, "number": null} or a list
  POST /_sandbox/truth            {"number": "13800138001", "data": {...}} (data null removes)

fault kinds (rule keys: kind, count (null = until reset), number, retry_after, status):
{kinds}

example:
  phonestatus-sandbox --port 8099 --rate-limit-per-minute 600 --latency-ms 50
  curl -s -X POST localhost:8099/mobile_status/check -H 'X-API-Key: sandbox-key' \\
       -H 'Content-Type: application/json' -d '{"mobile": "13800138001"}'
"""


def build_parser() -> argparse.ArgumentParser:
    """The CLI: ``--host``, ``--port`` and one flag per ``SandboxConfig`` field."""
    parser = argparse.ArgumentParser(
        prog="phonestatus-sandbox",
        description="Local stand-in for the phone number status API (POST JSON, X-API-Key).",
        epilog=EPILOG.replace(
            "{kinds}", textwrap.fill(" ".join(KINDS), 88, initial_indent="  ", subsequent_indent="  ")
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port (default: %(default)s)")
    parser.add_argument(
        "--access-log", action="store_true", help="log request lines (never bodies, so never numbers)"
    )
    parser.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="also stop when stdin is closed (SandboxProcess uses it: the sandbox dies with its parent)",
    )
    defaults = SandboxConfig()
    for f in dataclasses.fields(SandboxConfig):
        parser.add_argument(
            cli_flag(f.name),
            dest=f.name,
            type=CLI_TYPES[f.metadata["kind"]],
            default=getattr(defaults, f.name),
            choices=f.metadata["choices"] or None,
            help=f"{f.metadata['help']} (default: %(default)s)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SandboxConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SandboxConfig)})
    except ValueError as exc:
        parser.error(str(exc))
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.stop_on_stdin_eof:
        threading.Thread(target=_stop_on_eof, args=(stop,), name="stdin-eof", daemon=True).start()
    server = SandboxServer(config, host=args.host, port=args.port, access_log=args.access_log)
    try:
        url = server.start()
    except OSError as exc:
        print(f"phonestatus-sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    limit = "unlimited" if config.rate_limit_per_minute is None else f"{config.rate_limit_per_minute}/min"
    print(
        f"phonestatus sandbox listening on {url}\n"
        f'  endpoint   POST {server.endpoint_url}  body {{"{config.number_field}": "13800138001"}}\n'
        f"  api key    {config.api_key}  (header X-API-Key)\n"
        f"  rate limit {limit}, window {config.window_s:g} s; admin {url}/_sandbox/ledger\n"
        f"  AIRFLOW_CONN_PHONESTATUS_DEFAULT='{server.connection_json()}'\n"
        "Ctrl-C or SIGTERM stops it.",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    print("phonestatus sandbox stopped", flush=True)
    return 0


def _stop_on_eof(stop: threading.Event) -> None:
    """Read stdin to its end, then stop: its writer (the parent) closed it, or died.

    Reads the file descriptor, not ``sys.stdin``: a daemon thread blocked inside the buffered
    reader would hold its lock and abort the interpreter's shutdown.
    """
    try:
        while os.read(0, 65536):
            pass
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
