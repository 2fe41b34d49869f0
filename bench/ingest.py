#!/usr/bin/env python
"""Ingest benchmark: durable spans/s, request latency and collector CPU per 1,000 spans.

Starts one collector process (`python manage.py collector`) on free ports against DATABASE_URL (or the
embedded PostgreSQL), creates a fresh tenant, then drives ../shared/tools/otlp_load.py at it for each
batch size. "Durable" counts what PostgreSQL committed for the tenant (LLM call rows plus trace-root
rows: every span the load generator sends is one or the other), not what the client sent.

    .venv/bin/python bench/ingest.py                      # batches of 100 and 1,000, 30 s each
    .venv/bin/python bench/ingest.py --batches 1000 --seconds 60 --concurrency 4

Prints one table; the target (issue 2) is at least 20,000 durable spans/s with 1,000-span batches.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD = ROOT.parent / "shared" / "tools" / "otlp_load.py"
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manage(*args: str) -> str:
    return subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def durable_rows(tenant_id: int) -> int:
    out = manage(
        "shell",
        "-c",
        "from costline.usage.models import LLMCall, TraceRoot;"
        f"print(LLMCall.objects.filter(tenant_id={tenant_id}).count()"
        f" + TraceRoot.objects.filter(tenant_id={tenant_id}).count())",
    )
    return int(out.strip().splitlines()[-1])


def wait_for(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the collector did not listen on {port} within {timeout:.0f} s")


def run_load(url: str, key: str, batch: int, seconds: float, concurrency: int) -> dict[str, object]:
    command = [
        PYTHON,
        str(LOAD),
        "--url",
        url,
        "--header",
        f"Authorization: Bearer {key}",
        "--batch",
        str(batch),
        "--duration",
        str(seconds),
        "--concurrency",
        str(concurrency),
        "--progress",
        "10",
    ]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    sys.stderr.write(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 1000], help="spans per export")
    parser.add_argument("--seconds", type=float, default=30.0, help="load duration per batch size")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel exporters")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    args = parser.parse_args()
    if not LOAD.exists():
        raise SystemExit(f"{LOAD} is missing: this benchmark needs ../shared beside the checkout")

    manage("migrate", "-v", "0")
    tenant = json.loads(manage("create_tenant", f"bench {time.strftime('%H:%M:%S')}", "--json"))
    http_port, grpc_port = free_port(), free_port()
    collector = subprocess.Popen(
        [
            PYTHON,
            str(ROOT / "manage.py"),
            "collector",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    rows = []
    try:
        wait_for(http_port)
        for batch in args.batches:
            if args.warmup:
                run_load(url, tenant["ingest_key"], batch, args.warmup, args.concurrency)
            before_rows, before_cpu = durable_rows(tenant["tenant"]["id"]), cpu_seconds(collector.pid)
            summary = run_load(url, tenant["ingest_key"], batch, args.seconds, args.concurrency)
            after_rows, after_cpu = durable_rows(tenant["tenant"]["id"]), cpu_seconds(collector.pid)
            elapsed = float(summary["elapsed_s"])  # type: ignore[arg-type]
            stored = after_rows - before_rows
            latency = summary["latency_ok_ms"]
            assert isinstance(latency, dict)
            rows.append(
                {
                    "batch": batch,
                    "durable spans/s": stored / elapsed,
                    "accepted spans/s": summary["spans_per_s_accepted"],
                    "p50 ms": latency["p50"],
                    "p99 ms": latency["p99"],
                    "CPU ms / 1k spans": 1000 * (after_cpu - before_cpu) / max(stored / 1000, 1e-9),
                    "errors": summary["errors"] or "-",
                }
            )
    finally:
        collector.terminate()
        collector.wait(timeout=30)

    print(
        f"\ncollector: 1 process; load: {args.concurrency} concurrent exporters, {args.seconds:.0f} s per row"
    )
    header = [
        "batch",
        "durable spans/s",
        "accepted spans/s",
        "p50 ms",
        "p99 ms",
        "CPU ms / 1k spans",
        "errors",
    ]
    print(" | ".join(f"{h:>16}" for h in header))
    print("-+-".join("-" * 16 for _ in header))
    for row in rows:
        cells = []
        for h in header:
            value = row[h]
            cells.append(f"{value:>16,.1f}" if isinstance(value, float) else f"{value!s:>16}")
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
