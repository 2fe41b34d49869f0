#!/usr/bin/env python
"""vLLM tier benchmark: the tuned launch profile vs vLLM's defaults vs transformers `generate`.

Same model (the bundled SmolLM2-135M-Instruct, bfloat16), same prompts, two workloads:

- shared-prefix: one ~1,000-token policy document before every question (a support bot's system
  prompt), where prefix caching and chunked prefill matter;
- unique: short prompts that share nothing.

Each vLLM setup gets all N requests at once over its OpenAI API (streaming, so the time to the first
token is measured per request); transformers answers them one at a time, as a plain `generate` loop
does. Every request produces exactly --max-tokens tokens (`ignore_eos`), so tokens/s compare. The
"vLLM defaults" server passes only the model and port (and a fixed KV cache: by default vLLM on a CPU
takes 90% of the machine's memory for it, which a shared machine cannot give).

    .venv/bin/python bench/vllm_tier.py                      # ~3 minutes on 2 cores (eager servers)
    .venv/bin/python bench/vllm_tier.py --compiled           # torch.compile both servers (+40–70 s each)
    .venv/bin/python bench/vllm_tier.py --requests 32 --max-tokens 128 --hf-requests 2

Needs `make inference`. Prints progress while it runs and a table at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.vllm.launch import Launch, plan_launch
from inference.vllm.models import data_dir, require_chat_model, unavailable_reason
from inference.vllm.profiles import get_profile
from inference.vllm.server import VllmServer

QUESTIONS = [
    "How long do refunds of class {n} take?",
    "Which rule covers order class {n}?",
    "Can an order of class {n} be refunded after a month?",
    "Summarise the rule for class {n} in one sentence.",
]
TOPICS = ["volcanoes", "the Roman empire", "photosynthesis", "chess openings", "jazz", "glaciers", "bees"]


@dataclass(frozen=True)
class Result:
    setup: str
    workload: str
    requests: int
    output_tokens: int
    seconds: float
    ttft_p50_ms: float
    ready_s: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def workloads(requests: int) -> dict[str, list[list[dict[str, str]]]]:
    policy = " ".join(
        f"Rule {n}: refunds for order class {n} are granted within {n % 30 + 1} days." for n in range(60)
    )
    shared = [
        [
            {"role": "system", "content": f"You answer questions about this refund policy. {policy}"},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)].format(n=i)},
        ]
        for i in range(requests)
    ]
    unique = [
        [{"role": "user", "content": f"Request {i}: tell me three facts about {TOPICS[i % len(TOPICS)]}."}]
        for i in range(requests)
    ]
    return {"shared-prefix": shared, "unique": unique}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one_request(
    client: httpx.AsyncClient, launch: Launch, messages: list[dict[str, str]], max_tokens: int
) -> tuple[int, float]:
    """(completion tokens, seconds to the first token) of one streamed chat completion."""
    body = {
        "model": launch.served_model_name,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.monotonic()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", f"{launch.base_url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.monotonic() - started
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return tokens, first if first is not None else time.monotonic() - started


async def run_vllm_workload(launch: Launch, prompts: list[list[dict[str, str]]], max_tokens: int) -> Result:
    async with httpx.AsyncClient(timeout=600) as client:
        await one_request(client, launch, [{"role": "user", "content": "Warm up."}], 4)
        started = time.monotonic()
        done = 0

        async def tracked(messages: list[dict[str, str]]) -> tuple[int, float]:
            nonlocal done
            result = await one_request(client, launch, messages, max_tokens)
            done += 1
            if done % max(1, len(prompts) // 4) == 0:
                say(f"    {done}/{len(prompts)} answered")
            return result

        results = await asyncio.gather(*(tracked(m) for m in prompts))
        seconds = time.monotonic() - started
    return Result(
        setup="",
        workload="",
        requests=len(prompts),
        output_tokens=sum(t for t, _ in results),
        seconds=seconds,
        ttft_p50_ms=statistics.median(f for _, f in results) * 1000,
    )


def defaults_launch(tuned: Launch, port: int, eager: bool) -> Launch:
    """vLLM as its README starts it: the model, a port, nothing tuned (the KV cache fixed, see above)."""
    argv = [*tuned.argv[:5], "--served-model-name", tuned.served_model_name, "--port", str(port)]
    argv += ["--dtype", "bfloat16"] + (["--enforce-eager"] if eager else [])
    keep = ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "HF_HOME", "HF_HUB_OFFLINE", "VLLM_NO_USAGE_STATS")
    env = {name: tuned.env[name] for name in keep} | {"VLLM_CPU_KVCACHE_SPACE": "4"}
    return replace(tuned, argv=tuple(argv), env=env, base_url=f"http://127.0.0.1:{port}/v1")


def bench_vllm(
    name: str, launch: Launch, loads: dict[str, list[list[dict[str, str]]]], max_tokens: int
) -> list[Result]:
    log = data_dir() / "logs" / f"bench-vllm-{name.replace(' ', '-')}.log"
    say(f"{name}: starting vLLM (log: {log}) ...")
    server = VllmServer(launch, log=log)
    server.start()
    try:
        ready = server.wait_ready(progress=lambda line: say("  " + line))
        say(f"{name}: ready after {ready:.0f} s")
        results = []
        for workload, prompts in loads.items():
            say(f"  {workload}: {len(prompts)} requests at once × {max_tokens} tokens")
            result = asyncio.run(run_vllm_workload(launch, prompts, max_tokens))
            results.append(replace(result, setup=name, workload=workload, ready_s=ready))
        return results
    finally:
        server.stop()


def bench_transformers(
    loads: dict[str, list[list[dict[str, str]]]], max_tokens: int, requests: int, threads: int
) -> list[Result]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(threads)
    model_dir = require_chat_model()
    say(f"transformers: loading {model_dir} ({threads} threads) ...")
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16)
    model.eval()
    ready = time.monotonic() - started

    class FirstToken(BaseStreamer):
        """Notes when generate hands over its first new token (its first `put` is the prompt)."""

        def __init__(self) -> None:
            self.puts = 0
            self.at: float | None = None

        def put(self, value: object) -> None:
            self.puts += 1
            if self.puts == 2 and self.at is None:
                self.at = time.monotonic()

        def end(self) -> None:
            pass

    results = []
    for workload, prompts in loads.items():
        say(f"  transformers {workload}: {requests} requests one at a time × {max_tokens} tokens")
        ttfts, tokens, total = [], 0, 0.0
        for messages in prompts[:requests]:
            inputs = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            streamer = FirstToken()
            begun = time.monotonic()
            with torch.inference_mode():
                output = model.generate(
                    **inputs,
                    max_new_tokens=max_tokens,
                    min_new_tokens=max_tokens,
                    do_sample=False,
                    streamer=streamer,
                )
            total += time.monotonic() - begun
            ttfts.append((streamer.at or time.monotonic()) - begun)
            tokens += int(output.shape[1] - inputs["input_ids"].shape[1])
        results.append(
            Result(
                "transformers generate",
                workload,
                requests,
                tokens,
                total,
                statistics.median(ttfts) * 1000,
                ready,
            )
        )
    return results


def print_table(results: list[Result]) -> None:
    header = f"{'setup':<24} {'workload':<14} {'requests':>8} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}"
    header += f" {'TTFT p50':>9} {'ready':>7}"
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        ready = f"{r.ready_s:.0f} s" if r.ready_s is not None else "–"
        print(
            f"{r.setup:<24} {r.workload:<14} {r.requests:>8} {r.output_tokens:>7} {r.seconds:>8.1f} "
            f"{r.tokens_per_second:>9.1f} {r.ttft_p50_ms:>6.0f} ms {ready:>7}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--profile", default="cpu-interactive", help="the tuned profile (default cpu-interactive)"
    )
    parser.add_argument(
        "--requests", type=int, default=16, help="requests per workload for vLLM (default 16)"
    )
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (default 64)")
    parser.add_argument("--hf-requests", type=int, default=4, help="requests per workload for transformers")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for transformers (default 2)")
    parser.add_argument(
        "--compiled", action="store_true", help="torch.compile the vLLM servers (slower start)"
    )
    parser.add_argument("--skip", action="append", default=[], choices=["tuned", "defaults", "transformers"])
    args = parser.parse_args()

    reason = unavailable_reason()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    eager = not args.compiled
    loads = workloads(args.requests)
    results: list[Result] = []
    started = time.monotonic()
    tuned = plan_launch(get_profile(args.profile), port=free_port(), enforce_eager=eager)
    if "tuned" not in args.skip:
        results += bench_vllm(f"vLLM {args.profile}", tuned, loads, args.max_tokens)
    if "defaults" not in args.skip:
        results += bench_vllm(
            "vLLM defaults", defaults_launch(tuned, free_port(), eager), loads, args.max_tokens
        )
    if "transformers" not in args.skip:
        hf_loads = {name: prompts[: args.hf_requests] for name, prompts in loads.items()}
        results += bench_transformers(hf_loads, args.max_tokens, args.hf_requests, args.threads)
    print_table(results)
    mode = "eager (--enforce-eager)" if eager else "compiled"
    print(
        f"\nvLLM servers {mode}, bfloat16, prompts and answers identical across setups; "
        f"{time.monotonic() - started:.0f} s in all."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
