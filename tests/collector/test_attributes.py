"""The decoder keeps every attribute the normaliser reads (and drops output content)."""

from __future__ import annotations

import re
from pathlib import Path

from collector.attributes import wanted

NORMALISE = Path(__file__).resolve().parents[2] / "collector" / "normalise.py"

# Dotted names in the normaliser that are values, not attribute keys (hosts, scopes, suffixes).
NOT_ATTRIBUTES = re.compile(
    r"(\.com|\.ai|googleapis|openai\.azure|api\.|^com\.|\.sdk$|^\.|^ai\.stream\.firstChunk$|"
    r"^(aws|az|azure|gcp|ibm)\.|^exception\.type$|"
    # event names (content events) and the suffixes of flattened message attributes
    r"^gen_ai\.(system|user|assistant|tool)\.message$|^gen_ai\.client\.inference\.operation\.details$|^message\.)"
)


def test_every_attribute_the_normaliser_reads_survives_decoding() -> None:
    source = NORMALISE.read_text()  # the source, even when a compiled build is what runs
    names = set(re.findall(r'"([a-z_]+(?:\.[A-Za-z0-9_]+)+\.?)"', source))
    attribute_names = {n for n in names if not NOT_ATTRIBUTES.search(n)}

    missing = sorted(n for n in attribute_names if not wanted(n) and not wanted(n + "x"))

    assert len(attribute_names) > 100
    assert missing == []


def test_output_content_is_not_kept() -> None:
    # Input messages are kept so the normaliser can hash them (prompt evidence for the advisor); what
    # the model answered is never read.
    for key in ("gen_ai.output.messages", "langfuse.observation.output", "output.value", "input.value"):
        assert not wanted(key)
