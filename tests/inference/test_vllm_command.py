"""`manage.py vllm` and `make run`'s vLLM processes: the answers that need no engine start."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from costline.management.commands.run import vllm_banner, vllm_processes
from inference.vllm.models import unavailable_reason


def test_a_gpu_profile_on_this_cpu_machine_is_refused_with_advice() -> None:
    if unavailable_reason() is not None:
        pytest.skip(f"vLLM tests skipped: {unavailable_reason()}")
    with pytest.raises(CommandError, match="needs a GPU"):
        call_command("vllm", "--profile", "gpu-batch")


def test_a_busy_port_is_reported_before_vllm_loads() -> None:
    if unavailable_reason() is not None:
        pytest.skip(f"vLLM tests skipped: {unavailable_reason()}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(CommandError, match="already in use"):
            call_command("vllm", "--port", str(busy.getsockname()[1]))


def test_make_run_leaves_vllm_out_when_it_is_turned_off(settings: Any) -> None:
    settings.VLLM_ENABLED = False
    assert vllm_processes("python", "manage.py") == []
    assert "off (COSTLINE_VLLM=0)" in vllm_banner()


def test_make_run_starts_the_chat_and_embedding_servers_when_installed(settings: Any) -> None:
    if unavailable_reason() is not None:
        pytest.skip(f"vLLM tests skipped: {unavailable_reason()}")
    settings.VLLM_ENABLED = settings.VLLM_EMBEDDINGS_ENABLED = True
    settings.VLLM_PORT = 8200
    processes = vllm_processes("python", "manage.py")
    assert [(p.name, list(p.argv[2:])) for p in processes] == [
        ("vllm", ["vllm"]),
        ("vllm-embed", ["vllm", "--embeddings"]),
    ]
    assert all(not p.ports for p in processes)  # Costline is ready before vLLM has loaded
    assert ":8200/v1" in vllm_banner()
