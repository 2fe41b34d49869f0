#!/usr/bin/env python
"""Gateway benchmark: the latency the gateway adds in front of a fast upstream, and cache-hit latency.

Three processes besides this one: a fast local OpenAI-compatible upstream (answers at once), the real
gateway (`manage.py gateway`, with its key lookup, budget reservation and settle in Redis, and its
spans exported to a real collector), and that collector. Per concurrency level (clients each sending
requests back to back over one keep-alive connection), it times:

- direct: the upstream called directly;
- gateway (no cache): the same request through the gateway with `Cache-Control: no-store`, so every
  call reserves, goes upstream, settles and emits its span;
- cache hit: the same request answered from the exact cache.

Each level runs twice: back to back (the gateway saturated, so at 50 and 200 clients the latency is
mostly queueing: Little's law makes it clients / throughput), then paced at `--rate` requests a second
in all (500 by default, a quarter of what one gateway process serves on two cores), which is the
latency a caller sees from a gateway that is not overloaded, with that many connections open.

"added" is gateway minus direct at the same percentile. "CPU ms/call" is the CPU time the gateway
(all its workers) and the collector used over a mode, per call: what a call costs them whatever else
the machine runs. The gateway's own time per request as it
measures it (`costline_gateway_overhead_seconds`, the request's time less the upstream's) is read from
its /metrics. Needs DATABASE_URL (migrated) and REDIS_URL, like the platform.

    .venv/bin/python bench/gateway.py                      # 1, 50 and 200 clients
    .venv/bin/python bench/gateway.py --clients 1 50 --requests 1000 --rate 0
    .venv/bin/python bench/gateway.py --workers 2          # two gateway processes on the port

Targets (issue 6): added p50 under 1 ms and p99 under 5 ms; cache-hit p99 under 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costline.settings")

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
    }
).encode()

UPSTREAM = f"""
import asyncio, sys
ANSWER = {ANSWER!r}
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: "
                         + str(len(ANSWER)).encode() + b"\\r\\n\\r\\n" + ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class Connection:
    """A minimal HTTP/1.1 keep-alive client: httpx would cost the load generator more CPU than the
    gateway spends, on the same two cores."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_level(
    port: int, path: str, clients: int, requests: int, headers: dict[str, str], rate: float | None = None
) -> list[float]:
    """Latencies of `requests` calls from `clients` connections: back to back, or paced so that all
    of them together send `rate` requests a second (each connection on its own evenly spaced
    schedule, the connections staggered)."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}]}).encode()
    latencies: list[float] = []
    per_client = max(1, requests // clients)
    begin = time.perf_counter()

    async def client(number: int) -> None:
        conn = Connection(port)
        try:
            for sent in range(per_client):
                if rate is not None:
                    due = begin + (number + sent * clients) / rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                started = time.perf_counter()
                status, answer = await conn.post(path, body, headers)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {answer[:300]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(client(number) for number in range(clients)))
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children now alive (a gateway's workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return own + sum(cpu_seconds(int(child)) for child in children)


def overhead_from_metrics(port: int) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    buckets = [
        (float(m.group(1)), float(m.group(2)))
        for m in re.finditer(
            r'costline_gateway_overhead_seconds_bucket\{le="([0-9.e+-]+)"\} ([0-9.e+]+)', text
        )
    ]
    total = float(re.search(r"costline_gateway_overhead_seconds_count ([0-9.e+]+)", text).group(1))  # type: ignore[union-attr]

    def quantile(q: float) -> float:
        for bound, count in buckets:
            if count >= q * total:
                return bound * 1000
        return float("inf")

    return {"p50": quantile(0.5), "p99": quantile(0.99), "count": total}


def setup_tenant() -> tuple[str, str]:
    import django

    django.setup()
    from costline.tenancy.actions import create_organization, issue_gateway_key, issue_ingest_key

    org = create_organization(f"Gateway bench {os.getpid()} {time.time():.0f}")
    return issue_gateway_key(org, "bench").plaintext, issue_ingest_key(org, "bench").plaintext


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--requests", type=int, default=2000, help="requests per level and mode")
    parser.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="also run every level paced at this many requests a second in all (0: back to back only)",
    )
    parser.add_argument(
        "--paced-only", action="store_true", help="skip the back-to-back runs (needs --rate above 0)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing its port (manage.py gateway --workers)",
    )
    parser.add_argument(
        "--no-spans",
        action="store_true",
        help="the gateway exports no spans (what they cost it and the collector)",
    )
    args = parser.parse_args()

    key, _ = setup_tenant()
    upstream_port, gateway_port = free_port(), free_port()
    collector_http, collector_grpc = free_port(), free_port()
    routes = {
        "upstreams": {"fast": {"kind": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1"}},
        "models": {"gpt-4o-mini": {"targets": ["fast/gpt-4o-mini"]}},
    }
    env = {
        **os.environ,
        "COSTLINE_GATEWAY_ROUTES": json.dumps(routes),
        "COSTLINE_GATEWAY_OTLP_URL": "" if args.no_spans else f"http://127.0.0.1:{collector_http}",
    }
    manage = str(ROOT / "manage.py")
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port)])
    collector = subprocess.Popen(
        [
            sys.executable,
            manage,
            "collector",
            "--http-port",
            str(collector_http),
            "--grpc-port",
            str(collector_grpc),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    gateway = subprocess.Popen(
        [sys.executable, manage, "gateway", "--port", str(gateway_port), "--workers", str(args.workers)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    children = [upstream, collector, gateway]
    rows: list[tuple[str, ...]] = []
    try:
        for port in (upstream_port, collector_http, gateway_port):
            wait_port(port)
        auth = {"authorization": f"Bearer {key}"}
        asyncio.run(run_level(gateway_port, "/v1/chat/completions", 4, 200, auth))  # warm up, fill the cache
        loads: list[float | None] = [
            *([] if args.paced_only else [None]),
            *([args.rate] if args.rate > 0 else []),
        ]
        for rate, clients in [(rate, clients) for rate in loads for clients in args.clients]:
            load = "back to back" if rate is None else f"{rate:,.0f}/s"
            modes: list[tuple[str, int, str, dict[str, str]]] = [
                ("direct", upstream_port, "/v1/chat/completions", {}),
                (
                    "gateway (no cache)",
                    gateway_port,
                    "/v1/chat/completions",
                    {**auth, "cache-control": "no-store"},
                ),
                ("cache hit", gateway_port, "/v1/chat/completions", auth),
            ]
            results: dict[str, list[float]] = {}
            for name, port, path, headers in modes:
                print(f"  {clients:>3} clients, {load}: {name} …", file=sys.stderr, flush=True)
                started = time.perf_counter()
                cpu = [cpu_seconds(p.pid) for p in (gateway, collector)]
                results[name] = asyncio.run(run_level(port, path, clients, args.requests, headers, rate))
                achieved = len(results[name]) / (time.perf_counter() - started)
                used = [
                    (cpu_seconds(p.pid) - before) * 1000 / len(results[name])
                    for p, before in zip((gateway, collector), cpu, strict=True)
                ]
                rows.append(
                    (
                        str(clients),
                        load,
                        name,
                        f"{pct(results[name], 0.5):.3f}",
                        f"{pct(results[name], 0.99):.3f}",
                        f"{achieved:,.0f}",
                        *(f"{ms:.2f}" for ms in used),
                    )
                )
            direct, through = results["direct"], results["gateway (no cache)"]
            rows.append(
                (
                    str(clients),
                    load,
                    "added by the gateway",
                    f"{pct(through, 0.5) - pct(direct, 0.5):.3f}",
                    f"{pct(through, 0.99) - pct(direct, 0.99):.3f}",
                    "",
                    "",
                    "",
                )
            )
        own = overhead_from_metrics(gateway_port)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)
    header = ("clients", "load", "mode", "p50 ms", "p99 ms", "req/s", "gateway CPU ms/call", "collector CPU")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i in (1, 2) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(
        f"gateway's own time per request (its /metrics, {own['count']:,.0f} requests): "
        f"p50 ≤ {own['p50']:.2f} ms, p99 ≤ {own['p99']:.2f} ms (histogram bucket bounds)"
    )
    print("targets: added p50 < 1 ms, p99 < 5 ms; cache-hit p99 < 5 ms")


if __name__ == "__main__":
    main()
