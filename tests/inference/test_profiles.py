"""Launch profiles become the vLLM server's argv and environment (no vLLM started)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from inference.vllm.launch import Machine, Tracing, build_launch, cpu_list, detect_quantization
from inference.vllm.profiles import PROFILES, get_profile

CPU = Machine(cpus=(0, 1))
HOPPER = Machine(cpus=tuple(range(16)), gpu_compute_capability=(9, 0))
AMPERE = Machine(cpus=tuple(range(16)), gpu_compute_capability=(8, 0))
MODEL = Path("/models/smollm2")


def launch(profile: str, machine: Machine = CPU, **options: object):  # type: ignore[no-untyped-def]
    return build_launch(
        get_profile(profile),
        model=MODEL,
        served_model_name="smollm2-135m-instruct",
        machine=machine,
        cache_dir=Path("/data/cache"),
        **options,  # type: ignore[arg-type]
    )


def flag(argv: tuple[str, ...], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_it_starts_the_openai_server_module_not_the_vllm_cli() -> None:
    argv = launch("cpu-interactive", port=8200).argv
    assert argv[1:3] == ("-m", "vllm.entrypoints.openai.api_server")
    assert flag(argv, "--model") == str(MODEL)
    assert flag(argv, "--served-model-name") == "smollm2-135m-instruct"
    assert flag(argv, "--port") == "8200"


def test_the_default_port_is_8200_and_the_base_url_is_the_openai_root() -> None:
    assert launch("cpu-interactive").base_url == "http://127.0.0.1:8200/v1"


def test_every_hardware_and_workload_has_a_profile() -> None:
    assert {"cpu-interactive", "cpu-batch", "gpu-interactive", "gpu-batch"} <= set(PROFILES)


def test_the_cpu_interactive_profile_sets_the_engine_knobs() -> None:
    built = launch("cpu-interactive")
    assert "--enable-prefix-caching" in built.argv
    assert "--enable-chunked-prefill" in built.argv
    assert flag(built.argv, "--max-num-seqs") == "16"
    assert flag(built.argv, "--max-num-batched-tokens") == "512"
    assert flag(built.argv, "--dtype") == "bfloat16"
    assert "--gpu-memory-utilization" not in built.argv
    assert built.env["VLLM_CPU_KVCACHE_SPACE"] == "2"


def test_batch_runs_more_sequences_in_bigger_steps_than_interactive() -> None:
    interactive, batch = launch("cpu-interactive").argv, launch("cpu-batch").argv
    assert int(flag(batch, "--max-num-seqs") or 0) > int(flag(interactive, "--max-num-seqs") or 0)
    assert int(flag(batch, "--max-num-batched-tokens") or 0) > int(
        flag(interactive, "--max-num-batched-tokens") or 0
    )


def test_on_cpu_the_worker_gets_every_core_and_the_caches_stay_in_the_project() -> None:
    env = launch("cpu-interactive", machine=Machine(cpus=(0, 1, 2, 3, 6))).env
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-3,6"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["OMP_NUM_THREADS"] == "5"
    assert env["VLLM_CACHE_ROOT"] == "/data/cache/vllm"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/data/cache/torchinductor"
    assert env["HF_HOME"] == "/data/cache/huggingface"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"


def test_a_gpu_profile_sizes_the_cache_by_memory_share_and_uses_fp8_where_the_gpu_has_it() -> None:
    hopper = launch("gpu-interactive", machine=HOPPER)
    assert flag(hopper.argv, "--gpu-memory-utilization") == "0.9"
    assert flag(hopper.argv, "--kv-cache-dtype") == "fp8"
    assert "VLLM_CPU_KVCACHE_SPACE" not in hopper.env
    assert "--kv-cache-dtype" not in launch("gpu-batch", machine=AMPERE).argv


def test_a_gpu_profile_on_a_machine_without_one_says_which_to_use() -> None:
    with pytest.raises(ValueError, match="use a cpu-\\* profile"):
        launch("gpu-batch", machine=CPU)


def test_quantised_weights_get_the_fast_kernels_on_a_gpu(tmp_path: Path) -> None:
    config = {"quantization_config": {"quant_method": "awq", "bits": 4}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    method = detect_quantization(tmp_path)
    assert method == "awq"
    gpu = launch("gpu-interactive", machine=HOPPER, weights_quantization=method)
    assert flag(gpu.argv, "--quantization") == "awq_marlin"
    assert flag(gpu.argv, "--dtype") == "float16"
    assert flag(launch("cpu-batch", weights_quantization="gptq").argv, "--quantization") == "gptq"


def test_fp8_weights_on_a_cpu_are_refused_with_advice() -> None:
    with pytest.raises(ValueError, match="GPUs only"):
        launch("cpu-interactive", weights_quantization="fp8")


def test_a_folder_without_quantisation_has_none(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    assert detect_quantization(tmp_path) is None
    assert "--quantization" not in launch("cpu-interactive").argv


def test_eager_mode_can_be_forced_over_the_profile() -> None:
    assert "--enforce-eager" not in launch("cpu-interactive").argv
    assert "--enforce-eager" in launch("cpu-interactive", enforce_eager=True).argv
    eager = dataclasses.replace(get_profile("cpu-batch"), enforce_eager=True)
    built = build_launch(eager, model=MODEL, served_model_name="m", machine=CPU, cache_dir=Path("/c"))
    assert "--enforce-eager" in built.argv


def test_tracing_goes_to_the_collector_over_http_with_the_ingest_key() -> None:
    tracing = Tracing(endpoint="http://127.0.0.1:4318/v1/traces", ingest_key="clik_abc")
    built = launch("cpu-interactive", tracing=tracing)
    assert flag(built.argv, "--otlp-traces-endpoint") == "http://127.0.0.1:4318/v1/traces"
    assert built.env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"
    assert built.env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] == "Authorization=Bearer%20clik_abc"
    assert "--otlp-traces-endpoint" not in launch("cpu-interactive").argv


def test_the_embedding_server_runs_the_pooling_runner() -> None:
    built = build_launch(
        get_profile("cpu-embeddings"),
        model=MODEL,
        served_model_name="all-minilm-l6-v2",
        machine=CPU,
        cache_dir=Path("/c"),
        port=8201,
        runner="pooling",
    )
    assert flag(built.argv, "--runner") == "pooling"
    assert "--enable-prefix-caching" not in built.argv
    # Without chunked prefill a whole input must fit in one step.
    assert int(flag(built.argv, "--max-num-batched-tokens") or 0) >= int(
        flag(built.argv, "--max-model-len") or 0
    )


def test_an_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="cpu-interactive"):
        get_profile("tpu-fast")


@pytest.mark.parametrize(("cpus", "expected"), [((0,), "0"), ((0, 1), "0-1"), ((3, 1, 2, 7, 8), "1-3,7-8")])
def test_cpu_lists_are_written_as_ranges(cpus: tuple[int, ...], expected: str) -> None:
    assert cpu_list(cpus) == expected
