"""The advisor's recommendations: where the tenant's own traffic allows a lever, and what it would save.

Every estimate is a what-if replay (`costline.advisor.replay`) of the last `days` days of real calls,
scaled to 30 days; a lever the evidence does not support (no repeats, no long shared prefixes, no
batch price for the model, ...) yields no finding. The calls are read once and every policy replayed
over the same arrays.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings

from costline.advisor.findings import Finding, Kind, ModelSwap, Policy, ReplayResult
from costline.advisor.replay import (
    MIN_CACHEABLE_PREFIX,
    Calls,
    Replayed,
    replay_calls,
    similarity_bits,
    summarise,
)
from costline.usage.selfhosted import DecodeThroughput, decode_throughputs

MONTH_DAYS = 30
HOURS_PER_MONTH = Decimal(730)
# Below this a finding is noise next to the effort of acting on it.
MIN_MONTHLY_SAVING = Decimal("1.00")
MIN_EVIDENCE_CALLS = 10  # repeats, near-duplicates, cacheable reads, batchable calls...
RESPONSE_CACHE_WINDOW_S = 3600  # the gateway's default cache TTL (COSTLINE_GATEWAY_CACHE_TTL_SECONDS)
SEMANTIC_THRESHOLD = 0.95  # the gateway's default (COSTLINE_GATEWAY_SEMANTIC_THRESHOLD)
# A cheaper model of the same maker for each expensive family: the right-sizing candidates.
CHEAPER = (
    (re.compile(r"^gpt-4o(-\d{4}-\d\d-\d\d)?$"), "gpt-4o-mini"),
    (re.compile(r"^gpt-4\.1(-\d{4}-\d\d-\d\d)?$"), "gpt-4.1-mini"),
    (re.compile(r"^gpt-4-turbo"), "gpt-4o-mini"),
    (re.compile(r"^gpt-5(-\d{4}-\d\d-\d\d)?$"), "gpt-5-mini"),
    (re.compile(r"^o[13](-\d{4}-\d\d-\d\d)?$"), "o4-mini"),
    (re.compile(r"^claude-(3-5-|3-7-)?sonnet"), "claude-3-5-haiku"),
    (re.compile(r"^claude-sonnet-4"), "claude-haiku-4-5"),
    (re.compile(r"^claude-opus-4"), "claude-sonnet-4"),
    (re.compile(r"^gemini-(1\.5|2\.0|2\.5)-pro"), "gemini-2.5-flash"),
)
# Shapes a smaller model handles: short prompts and short answers, or a classification-like feature.
SMALL_INPUT_P50 = 2000
SMALL_OUTPUT_P90 = 300
SIMPLE_FEATURE = re.compile(r"classif|extract|label|tag|route|detect|sentiment|intent|moderat|categor", re.I)
# A cascade's retried share, assumed until the tenant measures it (the gateway records escalations as
# `costline.cascade`); shown beside the straight swap, never used as the headline figure.
CASCADE_ESCALATION_RATE = 0.2
OUTPUT_CAP_MULTIPLE = 2  # cap at twice the feature's median output
MIN_SHARE_OVER_CAP = 0.05
RETRY_WINDOW_S = 60
HISTORY_CAP_TOKENS = 4000
GROWING_SESSION_CALLS = 6
GROWING_RATIO = 3.0
# Throughput of quantised weights relative to 16-bit on vLLM (its quantisation docs' typical figures
# for memory-bound decoding); the break-even is computed for each.
QUANTISATION_SPEEDUP = {"bf16": 1.0, "fp8": 1.6, "int8": 1.5, "int4": 2.0}


class _Advisor:
    def __init__(self, calls: Calls, days: int) -> None:
        self.calls = calls
        self.days = days
        self.scale = Decimal(MONTH_DAYS) / Decimal(days)
        self.findings: list[Finding] = []

    def run(self, policy: Policy) -> tuple[ReplayResult, Replayed]:
        detail = replay_calls(self.calls, policy)
        return summarise(self.calls, policy, detail), detail

    def monthly(self, amount: Decimal) -> Decimal:
        return (amount * self.scale).quantize(Decimal("0.01"))

    def add(
        self,
        kind: Kind,
        key: str,
        title: str,
        summary: str,
        saving: Decimal,
        confidence: float,
        how_to: str,
        policy: Policy,
        evidence: dict[str, Any],
        scope: dict[str, str],
    ) -> None:
        monthly = self.monthly(saving)
        if monthly < MIN_MONTHLY_SAVING:
            return
        self.findings.append(
            Finding(
                kind=kind,
                key=key,
                title=title,
                summary=summary,
                monthly_saving_usd=monthly,
                confidence=round(max(0.0, min(1.0, confidence)), 2),
                how_to=how_to,
                policy=policy,
                window_days=self.days,
                evidence=evidence,
                scope=scope,
            )
        )

    # --- the kinds -------------------------------------------------------------------------------------

    def model_codes(self) -> list[tuple[int, str, np.ndarray]]:
        out = []
        for code, name in enumerate(list(self.calls.models)):
            mask = self.calls.model_code == code
            if mask.any():
                out.append((code, name, mask))
        return out

    def response_cache(self) -> None:
        for _, name, mask in self.model_codes():
            with_hash = int(self.calls.col["has_ph"][mask].sum())
            if with_hash < MIN_EVIDENCE_CALLS:
                continue
            policy = Policy(response_cache_window_s=RESPONSE_CACHE_WINDOW_S, models=(name,))
            result, detail = self.run(policy)
            repeats = int(detail.free.sum())
            if repeats < MIN_EVIDENCE_CALLS:
                continue
            total = int(mask.sum())
            self.add(
                Kind.RESPONSE_CACHE,
                f"response_cache:model={name}",
                f"Cache exact repeats of {name} requests",
                f"{repeats:,} of {total:,} {name} calls in the last {self.days} days repeated an identical "
                f"request (same prompt and parameters) within an hour; answering them from a cache saves "
                f"${self.monthly(result.saving_usd):,} a month.",
                result.saving_usd,
                0.5 + 0.45 * with_hash / total,
                "Send these calls through the Costline gateway with its response cache on "
                f"(COSTLINE_GATEWAY_CACHE_TTL_SECONDS={RESPONSE_CACHE_WINDOW_S}), or cache answers in the "
                "application keyed on model, messages and parameters.",
                policy,
                {
                    "calls": total,
                    "calls_with_prompt_hash": with_hash,
                    "repeats": repeats,
                    "repeat_rate": round(repeats / total, 4),
                    "baseline_usd": str(result.baseline_usd),
                    "replayed_usd": str(result.replayed_usd),
                },
                {"model": name},
            )

    def semantic_cache(self) -> None:
        for _, name, mask in self.model_codes():
            with_hash = int(self.calls.col["has_ph"][mask].sum())
            if with_hash < MIN_EVIDENCE_CALLS:
                continue
            exact_policy = Policy(response_cache_window_s=RESPONSE_CACHE_WINDOW_S, models=(name,))
            policy = Policy(
                response_cache_window_s=RESPONSE_CACHE_WINDOW_S,
                semantic_cache_threshold=SEMANTIC_THRESHOLD,
                models=(name,),
            )
            exact, exact_detail = self.run(exact_policy)
            result, detail = self.run(policy)
            near = int(detail.free.sum()) - int(exact_detail.free.sum())
            if near < MIN_EVIDENCE_CALLS:
                continue
            extra = result.saving_usd - exact.saving_usd
            total = int(mask.sum())
            self.add(
                Kind.SEMANTIC_CACHE,
                f"semantic_cache:model={name}",
                f"Answer near-duplicate {name} prompts from a semantic cache",
                f"{near:,} {name} calls ({near / total:.1%}) were near-duplicates (similarity ≥ "
                f"{SEMANTIC_THRESHOLD}) of a call in the hour before, beyond exact repeats; a semantic cache "
                f"would save ${self.monthly(extra):,} a month more than an exact one.",
                extra,
                0.35 + 0.3 * with_hash / total,  # similar prompts may still need different answers
                "Turn on the gateway's semantic cache (COSTLINE_GATEWAY_SEMANTIC_CACHE=1, threshold "
                f"{SEMANTIC_THRESHOLD}) for this model, and review a sample of hits before trusting it.",
                policy,
                {
                    "calls": total,
                    "near_duplicates": near,
                    "expected_hit_rate": round(int(detail.free.sum()) / total, 4),
                    "threshold": SEMANTIC_THRESHOLD,
                    "max_hamming_bits": similarity_bits(SEMANTIC_THRESHOLD),
                    "exact_saving_usd": str(exact.saving_usd),
                },
                {"model": name},
            )

    def prefix_cache(self) -> None:
        for _, name, mask in self.model_codes():
            rates = self.calls.rates(name)
            if rates is None or rates.cache_read >= rates.input:
                continue
            cacheable = int(((self.calls.col["pft"] >= MIN_CACHEABLE_PREFIX) & mask).sum())
            if cacheable < MIN_EVIDENCE_CALLS:
                continue
            policy = Policy(prefix_cache=True, models=(name,))
            result, _ = self.run(policy)
            pft = self.calls.col["pft"][mask]
            self.add(
                Kind.PREFIX_CACHE,
                f"prefix_cache:model={name}",
                f"Put the shared prompt prefix of {name} calls first and cache it",
                f"{cacheable:,} {name} calls start with a shared prefix (system prompt and tools) of "
                f"{MIN_CACHEABLE_PREFIX:,}+ tokens that the provider's prompt cache bills at "
                f"${Decimal(rates.cache_read) / 10**6:.4f} instead of "
                f"${Decimal(rates.input) / 10**6:.4f} per million tokens: "
                f"${self.monthly(result.saving_usd):,} a month.",
                result.saving_usd,
                0.7,
                "Keep the system prompt and tool definitions byte-identical and first in every request "
                "(no timestamps or user data in them); on Anthropic mark them with cache_control; on vLLM "
                "keep --enable-prefix-caching on (the bundled profiles do).",
                policy,
                {
                    "calls": int(mask.sum()),
                    "cacheable_calls": cacheable,
                    "prefix_tokens_p50": int(np.median(pft[pft > 0])) if (pft > 0).any() else 0,
                    "baseline_usd": str(result.baseline_usd),
                    "replayed_usd": str(result.replayed_usd),
                },
                {"model": name},
            )

    def right_size(self) -> None:
        c = self.calls.col
        for _, name, mask in self.model_codes():
            target = next((cheap for pattern, cheap in CHEAPER if pattern.match(name)), None)
            if (
                target is None
                or target == name
                or self.calls.rates(target, self.calls.provider_of.get(name)) is None
            ):
                continue
            for fcode, feature in enumerate(self.calls.features):
                fmask = mask & (self.calls.feature_code == fcode) & (c["failed"] == 0)
                count = int(fmask.sum())
                if count < MIN_EVIDENCE_CALLS:
                    continue
                p50_in = float(np.median(c["inp"][fmask]))
                p90_out = float(np.percentile(c["out"][fmask], 90))
                simple_name = bool(SIMPLE_FEATURE.search(feature))
                if not (simple_name or (p50_in <= SMALL_INPUT_P50 and p90_out <= SMALL_OUTPUT_P90)):
                    continue
                label = feature or None
                policy = Policy(
                    swaps=(ModelSwap(name, target, feature=label),), features=(feature,), models=(name,)
                )
                result, _ = self.run(policy)
                cascade = Policy(
                    swaps=(
                        ModelSwap(
                            name, target, feature=label, cascade=True, escalation_rate=CASCADE_ESCALATION_RATE
                        ),
                    ),
                    features=(feature,),
                    models=(name,),
                )
                cascaded, _ = self.run(cascade)
                where = f"feature {feature}" if feature else "calls without a feature"
                self.add(
                    Kind.RIGHT_SIZE,
                    f"right_size:model={name}:feature={feature}",
                    f"Try {target} instead of {name} for {where}",
                    f"{count:,} {name} calls of {where} have short prompts (p50 {p50_in:,.0f} tokens) and "
                    f"short answers (p90 {p90_out:,.0f} tokens); on {target} they would have cost "
                    f"${self.monthly(result.saving_usd):,} a month less (a cascade escalating "
                    f"{CASCADE_ESCALATION_RATE:.0%} of them: ${self.monthly(cascaded.saving_usd):,}).",
                    result.saving_usd,
                    0.35 + (0.2 if simple_name else 0.0),  # quality on the smaller model is unverified
                    f"Send {where} to {target} (a gateway route, or the cascade: {target} first, {name} when "
                    "its answer fails your validation); compare a sample of answers before switching.",
                    policy,
                    {
                        "calls": count,
                        "input_tokens_p50": p50_in,
                        "output_tokens_p90": p90_out,
                        "classification_like": simple_name,
                        "swap_saving_usd": str(result.saving_usd),
                        "cascade_saving_usd": str(cascaded.saving_usd),
                        "cascade_escalation_rate": CASCADE_ESCALATION_RATE,
                    },
                    {"model": name, "feature": feature},
                )

    def output_limit(self) -> None:
        c = self.calls.col
        reasons = list(self.calls.frame["finish"].cat.categories)
        length_code = reasons.index("length") if "length" in reasons else -1
        finish = self.calls.frame["finish"].cat.codes.to_numpy()
        for fcode, feature in enumerate(self.calls.features):
            fmask = (self.calls.feature_code == fcode) & (c["failed"] == 0) & (c["out"] > 0)
            count = int(fmask.sum())
            if count < MIN_EVIDENCE_CALLS:
                continue
            out = c["out"][fmask]
            p50 = float(np.median(out))
            cap = max(16, math.ceil(p50 * OUTPUT_CAP_MULTIPLE / 16.0) * 16)
            over = int((out > cap).sum())
            truncated = float((finish[fmask] == length_code).mean()) if length_code >= 0 else 0.0
            if over < MIN_EVIDENCE_CALLS or over / count < MIN_SHARE_OVER_CAP or truncated > 0.2:
                continue
            policy = Policy(max_output_tokens={feature: cap}, features=(feature,))
            result, _ = self.run(policy)
            where = f"feature {feature}" if feature else "calls without a feature"
            self.add(
                Kind.OUTPUT_LIMIT,
                f"output_limit:feature={feature}",
                f"Limit the answers of {where} to {cap:,} tokens",
                f"The median answer of {where} is {p50:,.0f} tokens, yet {over:,} of {count:,} answers were "
                f"longer than {cap:,}; a max_tokens of {cap:,} (or a structured output) saves "
                f"${self.monthly(result.saving_usd):,} a month.",
                result.saving_usd,
                0.5,  # some long answers may be needed: check the longest before capping
                f"Set max_tokens={cap} (or max_completion_tokens) on these requests, or ask for a JSON "
                "schema / a length in the prompt; watch the finish reason 'length' afterwards.",
                policy,
                {
                    "calls": count,
                    "output_tokens_p50": p50,
                    "output_tokens_p99": float(np.percentile(out, 99)),
                    "calls_over_cap": over,
                    "cap": cap,
                    "truncated_share": round(truncated, 4),
                },
                {"feature": feature},
            )

    def batch_api(self) -> None:
        c = self.calls.col
        for _, name, mask in self.model_codes():
            rates = self.calls.rates(name)
            if rates is None or rates.batch_factor >= 1:
                continue
            offline = mask & (c["streaming"] == 0) & ((c["has_user"] == 0) | (c["batch_tag"] == 1))
            count = int(offline.sum())
            if count < MIN_EVIDENCE_CALLS:
                continue
            tagged = int((mask & (c["batch_tag"] == 1)).sum())
            policy = Policy(batch_non_interactive=True, models=(name,))
            result, _ = self.run(policy)
            self.add(
                Kind.BATCH_API,
                f"batch_api:model={name}",
                f"Send non-interactive {name} calls through the Batch API",
                f"{count:,} of {int(mask.sum()):,} {name} calls were not streamed and served no user "
                f"(or were tagged batch); at the batch price ({1 - rates.batch_factor:.0%} off) they save "
                f"${self.monthly(result.saving_usd):,} a month.",
                result.saving_usd,
                0.4 + 0.4 * tagged / count,  # without a batch tag, "no user" is only a hint
                "Collect these requests and submit them as a batch job (OpenAI /v1/batches, Anthropic "
                "Message Batches, Gemini batch mode): answers arrive within 24 hours.",
                policy,
                {
                    "calls": int(mask.sum()),
                    "non_interactive_calls": count,
                    "tagged_batch_calls": tagged,
                    "batch_factor": str(rates.batch_factor),
                },
                {"model": name},
            )

    def self_host(self, measured: list[DecodeThroughput]) -> None:
        c = self.calls.col
        gpu_hour = Decimal(str(settings.ADVISOR_GPU_HOUR_USD))
        # The tenant's own vLLM deployments over the same window: the fastest one on a GPU, since the
        # break-even prices GPUs. A CPU deployment's speed says nothing of a GPU's: the setting then.
        best_gpu_measured = max((m for m in measured if m.on_gpu), key=lambda m: m.tokens_per_s, default=None)
        measured_on: dict[str, Any] | None = None
        if best_gpu_measured is not None:
            tokens_per_s = best_gpu_measured.tokens_per_s
            source = f"measured on deployment {best_gpu_measured.deployment}"
            measured_on = {
                "deployment": best_gpu_measured.deployment,
                "hardware": best_gpu_measured.hardware,
                "output_tokens": best_gpu_measured.output_tokens,
                "decode_seconds": round(best_gpu_measured.decode_seconds, 3),
            }
            throughput_note = f"{tokens_per_s:,.2f} output tokens/s {source} ({best_gpu_measured.hardware})"
        else:
            tokens_per_s = float(settings.ADVISOR_GPU_TOKENS_PER_S)
            source = "setting COSTLINE_ADVISOR_GPU_TOKENS_PER_S"
            throughput_note = (
                f"{tokens_per_s:,g} output tokens/s per GPU from the {source} (none of your vLLM "
                "deployments on a GPU decoded in the window)"
            )
        for _, name, mask in self.model_codes():
            if self.calls.provider_of.get(name) in ("vllm",) or self.calls.rates(name) is None:
                continue
            policy = Policy(models=(name,))
            result, _ = self.run(policy)
            api_monthly = self.monthly(result.baseline_usd)
            out_tokens = int(c["out"][mask].sum())  # decode is what a GPU's tokens/s measures
            hours = (c["t"][mask] // 3600).astype(np.int64)
            _, per_hour_idx = np.unique(hours, return_inverse=True)
            per_hour = np.bincount(per_hour_idx, weights=c["out"][mask].astype(np.float64))
            peak_tps = float(per_hour.max()) / 3600 if len(per_hour) else 0.0
            options: dict[str, dict[str, Any]] = {}
            for quant, speedup in QUANTISATION_SPEEDUP.items():
                gpus = max(1, math.ceil(peak_tps / (tokens_per_s * speedup)))
                gpu_monthly = (gpu_hour * gpus * HOURS_PER_MONTH).quantize(Decimal("0.01"))
                options[quant] = {
                    "gpus": gpus,
                    "gpu_monthly_usd": str(gpu_monthly),
                    "saving_usd": str(api_monthly - gpu_monthly),
                }
            best = max(options, key=lambda q: Decimal(str(options[q]["saving_usd"])))
            best_gpu = Decimal(str(options[best]["gpu_monthly_usd"]))
            saving_monthly = api_monthly - best_gpu
            if saving_monthly < MIN_MONTHLY_SAVING:
                continue
            monthly_tokens = Decimal(out_tokens) * self.scale
            per_token = api_monthly / monthly_tokens if monthly_tokens else Decimal(0)
            break_even = int(best_gpu / per_token) if per_token else 0
            self.add(
                Kind.SELF_HOST,
                f"self_host:model={name}",
                f"Serve {name}-class traffic on the vLLM tier",
                f"{name} costs ${api_monthly:,} a month via the API; {options[best]['gpus']} GPU(s) at "
                f"${gpu_hour}/h ({best} weights) cost ${best_gpu:,}: break-even at "
                f"{break_even:,} tokens a month, you send {int(monthly_tokens):,}.",
                saving_monthly / self.scale,
                0.3,  # an open model's quality on this traffic is unverified
                "Deploy an open-weight model of similar quality on the bundled vLLM tier (gpu-batch "
                "profile), route a share of traffic to it through the gateway, and compare answers and "
                f"tokens/s (bench/vllm_tier.py) before moving the rest. GPUs are sized at {throughput_note}.",
                policy,
                {
                    "api_monthly_usd": str(api_monthly),
                    "peak_output_tokens_per_s": round(peak_tps, 2),
                    "gpu_hour_usd": str(gpu_hour),
                    "gpu_tokens_per_s": round(tokens_per_s, 2),
                    "gpu_tokens_per_s_source": source,
                    "gpu_tokens_per_s_measured_on": measured_on,
                    "options": options,
                    "break_even_tokens_per_month": break_even,
                    "tokens_per_month": int(monthly_tokens),
                },
                {"model": name},
            )

    def waste(self) -> None:
        c = self.calls.col
        failed = c["failed"] == 1
        paid_failures = int((failed & (c["cost"] > 0)).sum())
        if paid_failures >= MIN_EVIDENCE_CALLS:
            policy = Policy(drop_failed=True)
            result, _ = self.run(policy)
            retries = _retries(self.calls)
            self.add(
                Kind.WASTE,
                "waste:failed_calls",
                "Stop paying for failed calls and retry storms",
                f"{paid_failures:,} failed calls were billed (${self.monthly(result.saving_usd):,} a month); "
                f"{retries:,} calls retried a failed request within {RETRY_WINDOW_S} s.",
                result.saving_usd,
                0.6,
                "Retry only retryable errors (429, 5xx) with exponential backoff and jitter, put a circuit "
                "breaker per upstream, and validate requests (context length) before sending them.",
                policy,
                {"billed_failed_calls": paid_failures, "retries_within_window": retries},
                {},
            )
        growing = _growing_sessions(self.calls)
        if growing >= MIN_EVIDENCE_CALLS // 2:
            policy = Policy(history_cap_tokens=HISTORY_CAP_TOKENS)
            result, _ = self.run(policy)
            self.add(
                Kind.WASTE,
                "waste:conversation_history",
                "Summarise long conversations instead of resending the whole history",
                f"{growing:,} sessions grew to {GROWING_SESSION_CALLS}+ calls with prompts "
                f"{GROWING_RATIO:.0f}× their first; capping history at {HISTORY_CAP_TOKENS:,} input tokens "
                f"saves ${self.monthly(result.saving_usd):,} a month.",
                result.saving_usd,
                0.45,
                f"Keep the last turns verbatim and replace older ones by a summary once a conversation "
                f"passes {HISTORY_CAP_TOKENS:,} tokens (or rely on prefix caching for the unchanged part).",
                policy,
                {"growing_sessions": growing, "history_cap_tokens": HISTORY_CAP_TOKENS},
                {},
            )


def _retries(calls: Calls) -> int:
    """Calls that repeat a failed call's prompt (same model and hash) within RETRY_WINDOW_S."""
    c = calls.col
    idx = np.flatnonzero(c["has_ph"] == 1)
    if len(idx) < 2:
        return 0
    order = idx[np.lexsort([c["t"][idx], c["ph"][idx], calls.model_code[idx]])]
    a, b = order[:-1], order[1:]
    same = (c["ph"][a] == c["ph"][b]) & (calls.model_code[a] == calls.model_code[b])
    return int((same & (c["failed"][a] == 1) & ((c["t"][b] - c["t"][a]) <= RETRY_WINDOW_S)).sum())


def _growing_sessions(calls: Calls) -> int:
    c = calls.col
    mask = c["has_sess"] == 1
    if not mask.any():
        return 0
    frame = calls.frame.loc[mask, ["sess", "t", "inp"]].sort_values(["sess", "t"])
    grouped = frame.groupby("sess")["inp"]
    stats = grouped.agg(["count", "first", "max"])
    growing = (stats["count"] >= GROWING_SESSION_CALLS) & (
        stats["max"] >= GROWING_RATIO * stats["first"].clip(lower=1)
    )
    return int(growing.sum())


def recommend(tenant_id: int, now: datetime, days: int = 30) -> list[Finding]:
    """The tenant's findings over the `days` days before `now`, largest monthly saving first."""
    if days < 1:
        raise ValueError("days must be at least 1")
    calls = Calls.load(tenant_id, now - timedelta(days=days), now)
    if calls.n == 0:
        return []
    advisor = _Advisor(calls, days)
    advisor.response_cache()
    advisor.semantic_cache()
    advisor.prefix_cache()
    advisor.right_size()
    advisor.output_limit()
    advisor.batch_api()
    advisor.self_host(decode_throughputs(tenant_id, now - timedelta(days=days), now))
    advisor.waste()
    return sorted(advisor.findings, key=lambda f: f.monthly_saving_usd, reverse=True)
