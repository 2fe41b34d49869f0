"""The advisor's public surface: what a recommendation says, and the policy a what-if replay applies.

`costline.advisor.recommend.recommend` returns `Finding`s; the daily task stores them as
`Recommendation` rows (deduplicated on `key`); `costline.advisor.replay.whatif` re-costs a tenant's
real calls under a `Policy` and returns a `ReplayResult`. The UI and the API use the same two calls.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


class Kind(enum.StrEnum):
    RESPONSE_CACHE = "response_cache"
    SEMANTIC_CACHE = "semantic_cache"
    PREFIX_CACHE = "prefix_cache"
    RIGHT_SIZE = "right_size"
    OUTPUT_LIMIT = "output_limit"
    BATCH_API = "batch_api"
    SELF_HOST = "self_host"
    WASTE = "waste"


@dataclass(frozen=True)
class ModelSwap:
    """Send the calls of `from_model` (only those of `feature`, when set) to `to_model`; with
    `cascade`, the cheap model answers first and `escalation_rate` of the calls are retried on the
    original model, paying for both."""

    from_model: str
    to_model: str
    feature: str | None = None
    cascade: bool = False
    escalation_rate: float = 0.0


@dataclass(frozen=True)
class Policy:
    """What a replay changes. Everything off is the baseline: the calls' recorded costs."""

    response_cache_window_s: int | None = None  # exact repeats within the window cost nothing
    semantic_cache_threshold: float | None = None  # near-duplicates at this similarity cost nothing
    prefix_cache: bool = False  # shared leading prefixes billed at the model's cache-read price
    swaps: tuple[ModelSwap, ...] = ()
    max_output_tokens: dict[str, int] = field(default_factory=dict)  # feature → cap on output tokens
    batch_non_interactive: bool = False  # non-interactive calls at the provider's batch price
    features: tuple[str, ...] = ()  # only these features' calls (empty: all)
    models: tuple[str, ...] = ()  # only these models' calls (empty: all)
    drop_failed: bool = False  # failed calls cost nothing (retries with backoff, a circuit breaker)
    history_cap_tokens: int | None = None  # a session's calls bill at most this many input tokens


@dataclass(frozen=True)
class DailyCost:
    day: date
    baseline_usd: Decimal
    replayed_usd: Decimal


@dataclass(frozen=True)
class ReplayResult:
    start: datetime
    end: datetime
    calls: int
    baseline_usd: Decimal
    replayed_usd: Decimal
    days: tuple[DailyCost, ...]
    by_model: dict[str, tuple[Decimal, Decimal]]  # model → (baseline, replayed)

    @property
    def saving_usd(self) -> Decimal:
        return self.baseline_usd - self.replayed_usd


@dataclass(frozen=True)
class Finding:
    """One recommendation as the advisor computed it, before it is stored."""

    kind: Kind
    key: str  # stable across days for the same opportunity, e.g. "response_cache:model=gpt-4o"
    title: str  # "Cache exact repeats of feature summarize on gpt-4o"
    summary: str  # one or two sentences with the evidence's numbers
    monthly_saving_usd: Decimal  # from the replay, scaled to 30 days
    confidence: float  # 0..1
    how_to: str  # what to change, concretely
    policy: Policy  # the what-if that produced the estimate (replay it to check, or to measure later)
    window_days: int
    evidence: dict[str, Any]  # JSON-serialisable numbers behind the summary
    scope: dict[str, str] = field(default_factory=dict)  # e.g. {"model": "gpt-4o", "feature": "summarize"}
