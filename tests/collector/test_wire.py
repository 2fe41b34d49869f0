"""The direct wire-format reader agrees with the protobuf runtime, and fails cleanly on bad input."""

from __future__ import annotations

import contextlib
import gzip
import random
from pathlib import Path

import pytest

from collector.otlp import MalformedExport, decode_protobuf, decode_protobuf_message
from collector.wire import decode_protobuf_wire
from tests.conftest import SHARED
from tests.otlp_builders import chat_attrs, export, span, to_protobuf

CORPUS = SHARED / "corpus" / "otlp"


def protobuf_bodies() -> list[Path]:
    if not CORPUS.exists():
        return []
    return sorted(
        p
        for p in CORPUS.glob("*/*")
        if p.name.endswith((".bin", ".bin.gz"))
        and p.name.count(".") == p.name.count(".bin") + (p.suffix == ".gz")
    )


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus/otlp is not available beside the checkout")
@pytest.mark.parametrize("path", protobuf_bodies(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_both_readers_decode_every_captured_body_alike(path: Path) -> None:
    body = path.read_bytes()
    if path.suffix == ".gz":
        body = gzip.decompress(body)

    wire, message = decode_protobuf_wire(body), decode_protobuf_message(body)

    assert (wire.received, wire.invalid) == (message.received, message.invalid)
    assert wire.spans == message.spans


def test_both_readers_agree_on_values_of_every_type() -> None:
    values = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": -3,  # negative ints are ten-byte varints
        "gen_ai.request.stream": True,
        "gen_ai.response.time_to_first_chunk": 0.125,
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "costline.tags": ["a", "b"],
    }
    body = to_protobuf(
        export(span(attrs=values), span(attrs=chat_attrs()), resource={"costline.project": "x"})
    )

    assert decode_protobuf_wire(body).spans == decode_protobuf_message(body).spans


def test_a_truncated_or_corrupted_body_is_malformed_never_a_crash() -> None:
    body = to_protobuf(export(*[span(attrs=chat_attrs()) for _ in range(3)]))
    rng = random.Random(3)
    candidates = [body[:cut] for cut in range(0, len(body), 7)]
    for _ in range(200):
        damaged = bytearray(body)
        for _ in range(3):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        candidates.append(bytes(damaged))

    for candidate in candidates:
        with contextlib.suppress(MalformedExport):  # anything else escaping would fail the test
            decode_protobuf(candidate)
