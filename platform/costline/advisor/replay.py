"""What-if replays: a tenant's real calls in a window, re-costed under a `Policy`.

The calls are read once (only the columns a replay needs, streamed with COPY into numpy arrays), so
that the advisor can replay many policies over the same month. Each call's cost stays an integer of
picodollars (the stored numeric(20, 12) is exactly that); prices per token are picodollars too, so a
replayed call's cost is integer arithmetic, vectorised, and the totals are exact `Decimal`s. Price
changes that are not integral (the batch discount, a cascade's escalation share) apply per group of
calls (day × model × batched), in `Decimal`.

How each lever replays:

- response cache: a call whose (model, prompt hash) was seen within the window before it costs
  nothing (the prompt hash covers messages, tools and the parameters that change an answer; a hit
  refreshes the entry, as a sliding TTL would);
- semantic cache: as above for a call whose SimHash lies within `floor((1 - threshold) × 64)` bits of
  an earlier call's of the same model; candidates are neighbours in time among calls sharing one of
  the fingerprint's bands (the pigeonhole principle: two fingerprints within k bits agree on one of
  k + 1 bands), so the hit count is a lower bound;
- prefix cache: a call whose (model, prefix hash) was seen in the provider's cache lifetime
  (`PREFIX_CACHE_TTL_S`) bills its prefix tokens (less what the provider already cached) at the
  cache-read price; the call that writes the prefix pays the cache-write premium where one is listed;
- swaps: the calls' tokens priced on the other model; a cascade pays the cheap model for every call
  and `escalation_rate` of the original cost on top;
- output caps: output tokens billed at `min(output, cap)` on the call's model;
- batch: non-interactive calls (not streamed, and without a user or tagged `batch`) at the batch
  price genai-prices lists for the model (its `processing: batch` variant);
- failed calls and history caps (waste): a failed call costs nothing; a session's call bills at
  most `history_cap_tokens` input tokens.

Prices come from `costline.usage.pricing.price_call` (the catalogue and the tenant's overrides) at the
window's end, at the model's base tier. Calls without a stored cost (unpriced) are left out.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection

from costline.advisor.findings import DailyCost, Policy, ReplayResult
from costline.usage.pricing import SELF_HOSTED_PROVIDERS, TokenUsage, catalogue_lookup, price_call
from costline.usage.reprice import load_overrides

PICO = Decimal(10) ** 12
# Anthropic's prompt cache lives 5 minutes after its last use, OpenAI's 5–10: the shorter one.
PREFIX_CACHE_TTL_S = 300
# OpenAI and Anthropic cache prompts from 1,024 tokens on; shorter prefixes never hit.
MIN_CACHEABLE_PREFIX = 1024
DEFAULT_SEMANTIC_WINDOW_S = 86_400
EPOCH_DAY = date(1970, 1, 1)
_COPY_CHUNK = 64 * 1024 * 1024  # ~1 M rows of COPY text per pandas parse

_COLUMNS = (
    ("t", "extract(epoch from start_time)::bigint", "int64"),
    ("model", "model", "category"),
    ("provider", "provider", "category"),
    ("feature", "coalesce(feature, '')", "category"),
    ("has_user", "(user_id is not null)::int", "int8"),
    ("streaming", "coalesce(streaming, false)::int", "int8"),
    ("batch_tag", "coalesce(tags::jsonb ? 'batch', false)::int", "int8"),
    ("failed", "(status = 'error')::int", "int8"),
    ("finish", "coalesce(finish_reason, '')", "category"),
    ("inp", "coalesce(input_tokens, 0)", "int64"),
    ("out", "coalesce(output_tokens, 0)", "int64"),
    ("cr", "coalesce(cache_read_tokens, 0)", "int64"),
    ("cw", "coalesce(cache_write_tokens, 0)", "int64"),
    ("cost", "(cost_usd * 1000000000000)::bigint", "int64"),
    ("ph", "coalesce(prompt_hash, 0)", "int64"),
    ("has_ph", "(prompt_hash is not null)::int", "int8"),
    ("has_sim", "(prompt_simhash is not null)::int", "int8"),
    ("pfh", "coalesce(prefix_hash, 0)", "int64"),
    ("pft", "coalesce(prefix_tokens, 0)", "int64"),
    ("sim", "coalesce(prompt_simhash, 0)", "int64"),
    ("sess", "coalesce(hashtext(session_id), 0)", "int64"),
    ("has_sess", "(session_id is not null)::int", "int8"),
)


@dataclass(frozen=True)
class Rates:
    """Picodollars per token of one model: input, output, cache read, cache write."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    batch_factor: Decimal  # batch price ÷ standard price (1 where no batch price is listed)


class Calls:
    """The columns of a tenant's priced calls in [start, end), as numpy arrays."""

    def __init__(self, tenant_id: int, start: datetime, end: datetime, frame: pd.DataFrame) -> None:
        self.tenant_id = tenant_id
        self.start = start
        self.end = end
        self.frame = frame
        self.n = len(frame)
        self.models: list[str] = list(frame["model"].cat.categories)
        self.model_code = frame["model"].cat.codes.to_numpy()
        self.features: list[str] = list(frame["feature"].cat.categories)
        self.feature_code = frame["feature"].cat.codes.to_numpy()
        self.col = {name: frame[name].to_numpy() for name, _, kind in _COLUMNS if kind != "category"}
        # Each model's provider: the most frequent one among its calls.
        pairs = frame.groupby(["model", "provider"], observed=True).size()
        self.provider_of: dict[str, str] = {}
        ordered = pairs.sort_values().index
        for model, provider in zip(ordered.get_level_values(0), ordered.get_level_values(1), strict=True):
            self.provider_of[str(model)] = str(provider)
        self._rates: dict[str, Rates | None] = {}
        self._overrides = load_overrides(tenant_id)

    @classmethod
    def load(cls, tenant_id: int, start: datetime, end: datetime) -> Calls:
        select = ", ".join(expr for _, expr, _ in _COLUMNS)
        query = (
            f"COPY (SELECT {select} FROM usage_llmcall WHERE tenant_id = %s AND start_time >= %s "  # noqa: S608 - our columns
            "AND start_time < %s AND cost_usd IS NOT NULL) TO STDOUT"
        )
        names = [name for name, _, _ in _COLUMNS]
        dtypes = {name: kind for name, _, kind in _COLUMNS}
        parts: list[pd.DataFrame] = []
        blocks: list[bytes] = []  # COPY yields about a row a block: join them, never append to bytes
        size = 0
        with connection.cursor() as cursor:
            raw = cursor.connection.cursor()  # psycopg's own: COPY TO STDOUT
            with raw.copy(query, (tenant_id, start, end)) as copy:
                for block in copy:
                    blocks.append(bytes(block))
                    size += len(block)
                    if size >= _COPY_CHUNK:  # rows never span blocks: each chunk parses alone
                        parts.append(_parse(b"".join(blocks), names, dtypes))
                        blocks, size = [], 0
        if blocks or not parts:
            parts.append(_parse(b"".join(blocks), names, dtypes))
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        for name, _, kind in _COLUMNS:
            if kind == "category":
                frame[name] = frame[name].astype(str).astype("category")
        return cls(tenant_id, start, end, frame)

    def rates(self, model: str, provider: str | None = None) -> Rates | None:
        """The model's prices per token (the tenant's override, else the catalogue), None if unpriced."""
        if model in self._rates:
            return self._rates[model]
        provider = provider or self.provider_of.get(model)
        found = None
        if provider not in SELF_HOSTED_PROVIDERS:
            found = _rates(model, provider, self.end, self._overrides)
        self._rates[model] = found
        return found

    def days(self) -> float:
        return max((self.end - self.start).total_seconds() / 86_400, 1e-9)


def _parse(data: bytes, names: list[str], dtypes: dict[str, str]) -> pd.DataFrame:
    if not data:
        return pd.DataFrame(
            {n: pd.Series(dtype="object" if dtypes[n] == "category" else dtypes[n]) for n in names}
        )
    text_columns: dict[str, Any] = {n: str for n, kind in dtypes.items() if kind == "category"}
    types: dict[str, Any] = {**{n: kind for n, kind in dtypes.items() if kind != "category"}, **text_columns}
    frame = pd.read_csv(
        io.BytesIO(data),
        sep="\t",
        header=None,
        names=names,
        dtype=types,
        keep_default_na=False,
        na_filter=False,
        quoting=csv.QUOTE_NONE,  # COPY's text format escapes with backslashes, never quotes
    )
    return frame


def _pico(rate: Decimal) -> int:
    # Catalogue prices per million tokens have at most 6 decimals: a whole number of picodollars per
    # token. An override with more decimals is rounded to the picodollar.
    return int((rate * PICO).to_integral_value())


def _rates(model: str, provider: str | None, when: datetime, overrides: list[Any]) -> Rates | None:
    def cost(**tokens: int) -> Decimal | None:
        usage = TokenUsage(
            tokens.get("input", 0), tokens.get("output", 0), tokens.get("cr", 0), tokens.get("cw", 0), 0
        )
        price = price_call(
            provider=provider,
            request_model=model,
            response_model=model,
            operation="chat",
            usage=usage,
            when=when,
            failed=False,
            overrides=overrides,
        )
        return price.cost_usd

    unit = 1_000_000  # a million tokens: the listed prices come out exact
    base_in = cost(input=unit)
    base_out = cost(output=unit)
    if base_in is None or base_out is None:
        return None
    cache_read = cost(input=unit, cr=unit)
    cache_write = cost(input=unit, cw=unit)
    entry = catalogue_lookup(provider, model)
    batch_factor = Decimal(1)
    if entry is not None:
        standard = entry.info.get_prices(when)
        batch = entry.info.get_prices(when, {"processing": "batch"})
        if batch is not standard and batch.input_mtok and standard.input_mtok:
            batch_factor = Decimal(batch.input_mtok) / Decimal(standard.input_mtok)
    return Rates(
        input=_pico(base_in / unit),
        output=_pico(base_out / unit),
        cache_read=_pico(cache_read / unit) if cache_read is not None else _pico(base_in / unit),
        cache_write=_pico(cache_write / unit) if cache_write is not None else _pico(base_in / unit),
        batch_factor=batch_factor,
    )


# --- vectorised pieces ---------------------------------------------------------------------------------


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return ((x * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.int64)


def _repeats(
    keys: list[np.ndarray], t: np.ndarray, eligible: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each call: whether an eligible call with the same keys came at most `window` s before it, and
    whether one comes at most `window` s after it (one sort answers both)."""
    before = np.zeros(len(t), dtype=bool)
    after = np.zeros(len(t), dtype=bool)
    idx = np.flatnonzero(eligible)
    if len(idx) < 2:
        return before, after
    order = idx[np.lexsort([t[idx], *[k[idx] for k in reversed(keys)]])]
    same = np.ones(len(order) - 1, dtype=bool)
    for k in keys:
        same &= k[order[1:]] == k[order[:-1]]
    close = same & ((t[order[1:]] - t[order[:-1]]) <= window)
    before[order[1:][close]] = True
    after[order[:-1][close]] = True
    return before, after


def _near_before(
    model: np.ndarray, sim: np.ndarray, t: np.ndarray, eligible: np.ndarray, k: int, window: int
) -> np.ndarray:
    out = np.zeros(len(t), dtype=bool)
    idx = np.flatnonzero(eligible)
    if len(idx) < 2:
        return out
    bands = min(k + 1, 8)
    width = 64 // bands
    usim = sim.view(np.uint64)
    for b in range(bands):
        band = ((usim >> np.uint64(b * width)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = idx[np.lexsort([t[idx], band[idx], model[idx]])]
        a, c = order[:-1], order[1:]
        candidate = (model[a] == model[c]) & (band[a] == band[c]) & ((t[c] - t[a]) <= window)
        close = _popcount(usim[a[candidate]] ^ usim[c[candidate]]) <= k
        out[c[candidate][close]] = True
    return out


def similarity_bits(threshold: float) -> int:
    """The largest Hamming distance between 64-bit SimHashes that counts as similar at `threshold`."""
    return max(0, min(63, int((1.0 - threshold) * 64 + 1e-9)))


# --- the replay ------------------------------------------------------------------------------------------


@dataclass
class Replayed:
    """Per-call outcome of one replay (arrays over the calls in scope), before it is summed."""

    scope: np.ndarray  # indexes of the calls in scope
    replayed: np.ndarray  # picodollars, the integral part
    escalated: np.ndarray  # picodollars of original cost a cascade pays again (× escalation rate)
    priced_model: np.ndarray  # model code each call is priced on
    batched: np.ndarray
    free: np.ndarray  # answered by a cache, or dropped


def check_policy(policy: Policy) -> None:
    """Raise ValueError saying what is wrong with a policy a person wrote (the what-if form, the API)."""
    if policy.response_cache_window_s is not None and policy.response_cache_window_s < 0:
        raise ValueError("response_cache_window_s cannot be negative")
    threshold = policy.semantic_cache_threshold
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError("semantic_cache_threshold is a similarity between 0 (exclusive) and 1")
    for swap in policy.swaps:
        if not 0.0 <= swap.escalation_rate <= 1.0:
            raise ValueError(
                f"escalation_rate of {swap.from_model} → {swap.to_model} must be between 0 and 1"
            )
    for feature, cap in policy.max_output_tokens.items():
        if cap < 0:
            raise ValueError(f"the output cap of feature {feature} cannot be negative")
    if policy.history_cap_tokens is not None and policy.history_cap_tokens < 0:
        raise ValueError("history_cap_tokens cannot be negative")


def replay(calls: Calls, policy: Policy) -> ReplayResult:
    check_policy(policy)
    return summarise(calls, policy, replay_calls(calls, policy))


def replay_calls(calls: Calls, policy: Policy) -> Replayed:
    c = calls.col
    n = calls.n
    mask = np.ones(n, dtype=bool)
    if policy.features:
        wanted = [calls.features.index(f) for f in policy.features if f in calls.features]
        mask &= np.isin(calls.feature_code, wanted)
    if policy.models:
        wanted = [calls.models.index(m) for m in policy.models if m in calls.models]
        mask &= np.isin(calls.model_code, wanted)
    scope = np.flatnonzero(mask)
    t = c["t"][scope]
    model = calls.model_code[scope].astype(np.int64)
    feature = calls.feature_code[scope]
    inp, out, cr, cw, cost = (c[k][scope] for k in ("inp", "out", "cr", "cw", "cost"))
    has_ph = c["has_ph"][scope].astype(bool)
    failed = c["failed"][scope].astype(bool)
    m = len(scope)

    free = np.zeros(m, dtype=bool)
    if policy.response_cache_window_s:
        free |= _repeats([model, c["ph"][scope]], t, has_ph & ~failed, policy.response_cache_window_s)[0]
    if policy.semantic_cache_threshold is not None:
        window = policy.response_cache_window_s or DEFAULT_SEMANTIC_WINDOW_S
        k = similarity_bits(policy.semantic_cache_threshold)
        has_sim = c["has_sim"][scope].astype(bool)
        free |= _near_before(model, c["sim"][scope], t, has_sim & ~failed, k, window)
        free |= _repeats([model, c["ph"][scope]], t, has_ph & ~failed, window)[0]
    if policy.drop_failed:
        free |= failed

    # The model each call is priced on, and whether it is re-priced from its tokens.
    priced = model.copy()
    repriced = np.zeros(m, dtype=bool)
    escalate = np.zeros(m, dtype=np.int64)
    for swap in policy.swaps:
        if swap.from_model not in calls.models:
            continue
        target = calls.rates(swap.to_model, calls.provider_of.get(swap.from_model))
        if target is None:
            raise ValueError(f"no price for {swap.to_model}: add a price override or pick a catalogue model")
        if swap.to_model not in calls.models:
            calls.models.append(swap.to_model)
        hit = model == calls.models.index(swap.from_model)
        if swap.feature is not None:
            hit &= feature == (calls.features.index(swap.feature) if swap.feature in calls.features else -1)
        priced[hit] = calls.models.index(swap.to_model)
        repriced |= hit
        if swap.cascade:
            escalate[hit] = cost[hit]

    # Rate arrays per priced model (0 where a model has no price: nothing to re-price there).
    table = [calls.rates(name) for name in calls.models]
    rate = {
        field: np.array([getattr(r, field) if r else 0 for r in table], dtype=np.int64)
        for field in ("input", "output", "cache_read", "cache_write")
    }
    rin, rout, rcr, rcw = (rate[f][priced] for f in ("input", "output", "cache_read", "cache_write"))
    uncached = np.maximum(inp - cr - cw, 0)
    tokens_cost = uncached * rin + cr * rcr + cw * rcw + out * rout
    replayed = np.where(repriced, tokens_cost, cost)

    if policy.max_output_tokens:
        caps = np.full(len(calls.features), np.iinfo(np.int64).max, dtype=np.int64)
        for name, cap in policy.max_output_tokens.items():
            if name in calls.features:
                caps[calls.features.index(name)] = cap
        over = np.maximum(out - caps[feature], 0)
        replayed = replayed - over * rout

    if policy.history_cap_tokens is not None:
        in_session = c["has_sess"][scope].astype(bool)
        trimmed = np.where(in_session, np.maximum(inp - np.maximum(policy.history_cap_tokens, cr), 0), 0)
        replayed = replayed - trimmed * rin

    if policy.prefix_cache:
        pft = c["pft"][scope]
        pfh = c["pfh"][scope]
        cacheable = (pft >= MIN_CACHEABLE_PREFIX) & (pfh != 0) & (rcr < rin)
        keys = [priced, pfh]
        reads, read_later = _repeats(keys, t, cacheable, PREFIX_CACHE_TTL_S)
        writes = cacheable & ~reads & read_later
        newly = np.maximum(np.minimum(pft, inp) - cr, 0)
        replayed = replayed - np.where(reads, newly * (rin - rcr), 0)
        premium = np.maximum(rcw - rin, 0)
        replayed = replayed + np.where(writes & (cw == 0), newly * premium, 0)

    replayed = np.maximum(replayed, 0)
    replayed[free] = 0
    escalate[free] = 0

    batched = np.zeros(m, dtype=bool)
    if policy.batch_non_interactive:
        batched = (c["streaming"][scope] == 0) & ((c["has_user"][scope] == 0) | (c["batch_tag"][scope] == 1))
    return Replayed(scope, replayed, escalate, priced, batched, free)


def summarise(calls: Calls, policy: Policy, r: Replayed) -> ReplayResult:
    escalation = {s.from_model: Decimal(str(s.escalation_rate)) for s in policy.swaps if s.cascade}
    original = calls.model_code[r.scope].astype(np.int64)
    day = calls.col["t"][r.scope] // 86_400  # the UTC day, counted from 1970-01-01
    frame = pd.DataFrame(
        {
            "day": day,
            "model": original,
            "priced": r.priced_model,
            "batched": r.batched,
            "baseline": calls.col["cost"][r.scope],
            "replayed": r.replayed,
            "escalated": r.escalated,
        }
    )
    groups = frame.groupby(["day", "model", "priced", "batched"], sort=True).sum()
    by_day: dict[int, list[Decimal]] = {}
    by_model: dict[str, list[Decimal]] = {}
    baseline_total = replayed_total = Decimal(0)
    flat = groups.reset_index()
    columns: list[list[Any]] = [
        flat[k].to_numpy().tolist()
        for k in ("day", "model", "priced", "batched", "baseline", "replayed", "escalated")
    ]
    for d, mo, pr, batched, baseline_p, replayed_p, escalated_p in zip(*columns, strict=True):
        name = calls.models[mo]
        base = Decimal(baseline_p) / PICO
        value = Decimal(replayed_p)
        if escalated_p:
            value += escalation.get(name, Decimal(0)) * Decimal(escalated_p)
        if batched:
            rates = calls.rates(calls.models[pr])
            value *= rates.batch_factor if rates else Decimal(1)
        value /= PICO
        by_day.setdefault(int(d), [Decimal(0), Decimal(0)])
        by_day[int(d)][0] += base
        by_day[int(d)][1] += value
        by_model.setdefault(name, [Decimal(0), Decimal(0)])
        by_model[name][0] += base
        by_model[name][1] += value
        baseline_total += base
        replayed_total += value
    days = tuple(
        DailyCost(day=_day(EPOCH_DAY, d), baseline_usd=v[0], replayed_usd=v[1])
        for d, v in sorted(by_day.items())
    )
    return ReplayResult(
        start=calls.start,
        end=calls.end,
        calls=len(r.scope),
        baseline_usd=baseline_total,
        replayed_usd=replayed_total,
        days=days,
        by_model={k: (v[0], v[1]) for k, v in sorted(by_model.items())},
    )


def _day(first: date, offset: int) -> date:
    return first + timedelta(days=offset)


def whatif(tenant_id: int, start: datetime, end: datetime, policy: Policy) -> ReplayResult:
    """Re-cost the tenant's calls started in [start, end) under `policy`; the baseline: their stored cost."""
    if end <= start:
        raise ValueError("the window's end must be after its start")
    check_policy(policy)
    return replay(Calls.load(tenant_id, start, end), policy)
