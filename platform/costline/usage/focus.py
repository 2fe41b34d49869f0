"""FOCUS 1.2 (the FinOps Open Cost and Usage Specification) rows of a tenant's LLM costs.

One row per day × service × model × project (× provider, which the model implies), read from the
rollups through the query layer (`costline.usage.metrics.usage`), never from raw calls: days are the
organisation's midnight to midnight, written as UTC instants ('2025-03-14T04:00:00Z'), as the spec's
Date/Time Format requires. Columns follow the spec's names and order (FOCUS columns alphabetically,
then the `x_` custom columns alphabetically); a null is an empty CSV field; numbers are exact
decimals, never floats or exponents.

How the cost columns differ:

- BilledCost: what Costline priced the calls at: the price catalogue (genai-prices), or the tenant's
  price override where one applies (their negotiated rate). EffectiveCost and ContractedCost equal it:
  Costline knows of no commitment purchases to amortise, and an override is the contracted price.
- ListCost: the same tokens at the catalogue's list price. Equal to BilledCost wherever no override
  could have applied (the usual case). Where an override matched the day's model, it is recomputed
  from the row's token sums at the catalogue's rates of that day (so BilledCost / ListCost shows the
  negotiated discount); long-context tiers are taken at their base rate, since the rollups hold sums,
  not each call's size. A model the catalogue has no price for (self-hosted) lists at its billed cost.

ServiceName is the emitting service (`service.name`), as Costline's users slice costs by it;
ProviderName / InvoiceIssuerName the model provider (who sells the tokens), PublisherName the maker of
the model. The account columns name the Costline organisation (BillingAccount*) and project
(SubAccount*).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from costline.usage.metrics import UsageQuery, UsageResult, Value
from costline.usage.pricing import Override, catalogue_lookup, choose_override

FOCUS_VERSION = "1.2"

FOCUS_COLUMNS = (
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
)
CUSTOM_COLUMNS = (
    "x_CacheReadTokens",
    "x_CacheWriteTokens",
    "x_InputTokens",
    "x_OutputTokens",
    "x_ReasoningTokens",
    "x_Requests",
    "x_UnpricedRequests",
)
COLUMNS = FOCUS_COLUMNS + CUSTOM_COLUMNS

GROUP_BY = ("service", "model", "project", "provider")
ORDER = ("service", "provider", "model", "project")  # of the rows within a day
METRICS = (
    "cost_usd",
    "requests",
    "unpriced_requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
PLACES = Decimal("0.000000000001")  # stored money's 12 places
CURRENCY = "USD"
TOKENS = "Tokens"  # the spec's recommended count-based unit name
# OpenTelemetry's own name for a service that set no service.name.
UNKNOWN_SERVICE = "unknown_service"

# gen_ai.provider.name → the company's name, as a FinOps tool lists vendors.
PROVIDER_NAMES = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "gcp.gemini": "Google",
    "gcp.vertex_ai": "Google Cloud",
    "gcp.gen_ai": "Google",
    "aws.bedrock": "Amazon Web Services",
    "azure.ai.openai": "Microsoft Azure",
    "azure.ai.inference": "Microsoft Azure",
    "mistral_ai": "Mistral AI",
    "x_ai": "xAI",
    "deepseek": "DeepSeek",
    "groq": "Groq",
    "cohere": "Cohere",
    "perplexity": "Perplexity",
    "moonshot_ai": "Moonshot AI",
    "together_ai": "Together AI",
    "fireworks": "Fireworks AI",
    "openrouter": "OpenRouter",
    "cerebras": "Cerebras",
    "ibm.watsonx.ai": "IBM",
    "vllm": "vLLM (self-hosted)",
    "ollama": "Ollama (self-hosted)",
    "tgi": "Text Generation Inference (self-hosted)",
    "llama.cpp": "llama.cpp (self-hosted)",
    "hugging_face": "Hugging Face",
}
# Who made a model, by the start of a part of its name ("gpt-4o", "meta-llama/Llama-3.1-8B",
# "us.anthropic.claude-3-5-sonnet" on Bedrock): the publisher. Else the provider is.
PUBLISHERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        (
            "gpt-",
            "o1",
            "o3",
            "o4",
            "chatgpt",
            "text-embedding",
            "davinci",
            "whisper",
            "tts-",
            "dall-e",
            "openai",
        ),
        "OpenAI",
    ),
    (("claude", "anthropic"), "Anthropic"),
    (("gemini", "gemma", "google"), "Google"),
    (("llama", "meta"), "Meta"),
    (("mistral", "mixtral", "codestral", "ministral", "pixtral", "magistral", "devstral"), "Mistral AI"),
    (("grok", "x-ai"), "xAI"),
    (("deepseek",), "DeepSeek"),
    (("qwen", "qwq"), "Alibaba Cloud"),
    (("command", "embed-", "rerank-", "cohere"), "Cohere"),
    (("phi-", "microsoft"), "Microsoft"),
    (("kimi", "moonshot"), "Moonshot AI"),
    (("nova", "titan", "amazon"), "Amazon"),
)
_NAME_PARTS = re.compile(r"[./:]")


@dataclass(frozen=True)
class BillingAccount:
    """The organisation the export is for, as FOCUS's billing account, and its projects (sub accounts)."""

    id: str  # the organisation's slug: unique across Costline
    name: str
    time_zone: str
    projects: Mapping[str, str]  # slug → name


def focus_query(start: datetime, end: datetime, time_zone: str) -> UsageQuery:
    """The query a FOCUS export answers: daily sums per service, model, project and provider."""
    return UsageQuery(
        start=start, end=end, interval="day", group_by=GROUP_BY, metrics=METRICS, time_zone=time_zone
    )


def focus_rows(
    result: UsageResult, account: BillingAccount, overrides: Sequence[Override] = ()
) -> Iterator[dict[str, Any]]:
    """FOCUS rows (column → value: Decimal, int, str, dict or None) of a `focus_query` answer.

    Rows come day by day, then by service, provider, model and project; days without calls have none.
    `overrides` are the tenant's price overrides (to tell where ListCost differs from BilledCost).
    """
    zone = ZoneInfo(account.time_zone)
    if not result.series:
        return
    starts = [bucket for bucket, _ in result.series[0].points]
    ends = [*starts[1:], result.end]
    cells = [
        (i, series.group, values)
        for series in result.series
        for i, (_, values) in enumerate(series.points)
        if values.get("requests")
    ]
    cells.sort(key=lambda cell: (cell[0], *(cell[1].get(d) or "" for d in ORDER)))
    override_list = list(overrides)
    for slot, group, values in cells:
        yield _row(starts[slot], ends[slot], group, values, account, zone, override_list)


def _row(
    start: datetime,
    end: datetime,
    group: Mapping[str, str | None],
    values: Mapping[str, Value],
    account: BillingAccount,
    zone: ZoneInfo,
    overrides: list[Override],
) -> dict[str, Any]:
    service = group.get("service") or UNKNOWN_SERVICE
    provider = group.get("provider") or "unknown"
    model = group.get("model") or "unknown"
    project = group.get("project")
    billed = _money(values["cost_usd"])
    input_tokens, output_tokens = _int(values["input_tokens"]), _int(values["output_tokens"])
    tokens = input_tokens + output_tokens
    provider_name = PROVIDER_NAMES.get(provider, provider)
    period_start, period_end = _month(start, zone)
    sku = f"{provider}/{model}"
    tags = {"costline.provider": provider, "costline.service": service}
    if project is not None:
        tags["costline.project"] = project
    project_name = account.projects.get(project, project) if project is not None else None
    description = f"{model} tokens from {provider_name} for service {service}"
    if project_name:
        description += f", project {project_name}"
    return {
        "AvailabilityZone": None,
        "BilledCost": billed,
        "BillingAccountId": account.id,
        "BillingAccountName": account.name,
        "BillingCurrency": CURRENCY,
        "BillingPeriodEnd": period_end,
        "BillingPeriodStart": period_start,
        "ChargeCategory": "Usage",
        "ChargeClass": None,  # not a correction of an invoiced period
        "ChargeDescription": description,
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": end,
        "ChargePeriodStart": start,
        "ConsumedQuantity": tokens,
        "ConsumedUnit": TOKENS,
        "ContractedCost": billed,
        "EffectiveCost": billed,
        "InvoiceIssuerName": provider_name,
        "ListCost": list_cost(provider, model, start, end, values, billed, overrides),
        "PricingCategory": "Standard",
        "PricingQuantity": tokens,
        "PricingUnit": TOKENS,
        "ProviderName": provider_name,
        "PublisherName": publisher(model, provider_name),
        "RegionId": None,
        "RegionName": None,
        "ResourceId": model,
        "ResourceName": model,
        "ResourceType": "Model",
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": service,
        "ServiceSubcategory": "Generative AI",
        "SkuId": sku,
        "SkuMeter": TOKENS,
        "SkuPriceId": sku,  # the spec allows the SKU's own id; price changes are in the catalogue's dates
        "SubAccountId": f"{account.id}/{project}" if project is not None else None,
        "SubAccountName": project_name,
        "Tags": tags,
        "x_CacheReadTokens": _int(values["cache_read_tokens"]),
        "x_CacheWriteTokens": _int(values["cache_write_tokens"]),
        "x_InputTokens": input_tokens,
        "x_OutputTokens": output_tokens,
        "x_ReasoningTokens": _int(values["reasoning_tokens"]),
        "x_Requests": _int(values["requests"]),
        "x_UnpricedRequests": _int(values["unpriced_requests"]),
    }


def list_cost(
    provider: str,
    model: str,
    start: datetime,
    end: datetime,
    values: Mapping[str, Value],
    billed: Decimal,
    overrides: list[Override],
) -> Decimal:
    """The row's tokens at the catalogue's list price (see the module's docstring)."""
    if choose_override(overrides, provider, (model,), end - timedelta(microseconds=1)) is None:
        return billed  # no override could have priced these calls: billed at list
    entry = catalogue_lookup(provider, model)
    if entry is None:
        return billed  # no list price exists; the override is the only price there is
    usage = {
        "input_tokens": _int(values["input_tokens"]),
        "output_tokens": _int(values["output_tokens"]),
        "cache_read_tokens": _int(values["cache_read_tokens"]),
        "cache_write_tokens": _int(values["cache_write_tokens"]),
        "output_reasoning_tokens": _int(values["reasoning_tokens"]),
    }
    priced_requests = _int(values["requests"]) - _int(values["unpriced_requests"])
    # CompiledPrice.cost over sums: each unit bills its usage less its more specific units' (the
    # split is linear, so it holds for sums as for one call); per-request prices once per request.
    leaves: dict[str, int] = {}
    total = Decimal(0)
    for unit in entry.compiled(start).units:
        if unit.usage_key == "requests":
            count = priced_requests
        else:
            count = max(usage.get(unit.usage_key, 0) - sum(leaves[d] for d in unit.descendants), 0)
        leaves[unit.usage_key] = count
        total += unit.rate(0) * count  # rate(0): the base tier
    return total.quantize(PLACES, ROUND_HALF_UP)


def publisher(model: str, provider_name: str) -> str:
    for part in _NAME_PARTS.split(model.lower()):
        for prefixes, maker in PUBLISHERS:
            if part.startswith(prefixes):
                return maker
    return provider_name


def _month(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The calendar month (in the organisation's zone) holding `moment`, as UTC instants."""
    local = moment.astimezone(zone)
    first = datetime(local.year, local.month, 1, tzinfo=zone)
    following = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=zone)
    return first.astimezone(UTC), following.astimezone(UTC)


def _money(value: Value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(int(value or 0))


def _int(value: Value) -> int:
    return int(value or 0)


def csv_cells(row: Mapping[str, Any]) -> list[str]:
    """A row as CSV fields in COLUMNS order: exact decimals, UTC 'Z' times, JSON tags, null as empty."""
    return [_cell(row[column]) for column in COLUMNS]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")  # str() would write 1E-12
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)
