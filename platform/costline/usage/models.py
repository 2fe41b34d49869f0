"""The LLM call record, the trace roots that attribute calls to features, and price overrides.

`LLMCall` and `TraceRoot` are partitioned by UTC day in PostgreSQL (see the migration): raw volume is
why Costline exists, and retention must drop whole days, not delete rows. Their primary keys lead with
the tenant and include the partition column, as PostgreSQL requires, so a retried export of the same
span (same tenant, trace id, span id and start time) can never be stored twice.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from costline.tenancy.models import Organization, Project

# Identifiers (trace, span, response ids) compare byte-wise: COLLATE "C" keeps their index maintenance
# and lookups cheap on databases whose default collation is a linguistic one.

# Money: USD as numeric(20, 12), 12 decimal places (a millionth of a cent is 1e-8; a cheap embedding
# token costs 2e-8) and 8 digits before the point. Never a float.


class Status(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"


class FeatureSource(models.TextChoices):
    ATTRIBUTE = "attribute", "costline.feature attribute"
    ROOT = "root", "root span of the trace"


class LLMCall(models.Model):
    """One billable model call (chat, completion, embeddings), normalised from any emitter."""

    pk = models.CompositePrimaryKey("tenant_id", "trace_id", "span_id", "start_time")
    tenant = models.ForeignKey(
        Organization, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    trace_id = models.CharField(max_length=32, db_collation="C")
    span_id = models.CharField(max_length=16, db_collation="C")
    start_time = models.DateTimeField()
    parent_span_id = models.CharField(max_length=16, blank=True, default="", db_collation="C")
    ingested_at = models.DateTimeField(db_default=Now())  # the database's clock, at insert

    service = models.CharField(max_length=200, blank=True, default="")
    environment = models.CharField(max_length=100, blank=True, default="")
    project = models.ForeignKey(
        Project,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    feature = models.CharField(max_length=300, null=True, blank=True)
    feature_source = models.CharField(max_length=16, choices=FeatureSource.choices, null=True, blank=True)
    user_id = models.CharField(max_length=300, null=True, blank=True)
    session_id = models.CharField(max_length=300, null=True, blank=True)
    tags = models.JSONField(null=True, blank=True)

    provider = models.CharField(max_length=64)
    operation = models.CharField(max_length=32)
    request_model = models.CharField(max_length=200, null=True, blank=True)
    response_model = models.CharField(max_length=200, null=True, blank=True)
    # The model a person means: the price catalogue's id when the call was priced from it (so dated
    # snapshots such as gpt-4o-2024-08-06 group under gpt-4o), else the request or response model.
    model = models.CharField(max_length=200)

    # Token counts; NULL means the emitter did not say (unknown), never zero.
    input_tokens = models.IntegerField(null=True, blank=True)  # all input, cache reads and writes included
    output_tokens = models.IntegerField(null=True, blank=True)  # all output, reasoning included
    cache_read_tokens = models.IntegerField(null=True, blank=True)
    cache_write_tokens = models.IntegerField(null=True, blank=True)
    reasoning_tokens = models.IntegerField(null=True, blank=True)

    cost_usd = models.DecimalField(null=True, blank=True, max_digits=20, decimal_places=12)  # NULL: unpriced
    # What prompt caching saved on this call (cache reads at the input rate, less their cost); NULL: unpriced.
    cache_savings_usd = models.DecimalField(null=True, blank=True, max_digits=20, decimal_places=12)
    # Self-hosted calls: the part of cost_usd that fell in the call's prefill (arrival to first token);
    # the rest is decode (costline.usage.selfhosted). NULL for every other call.
    prefill_cost_usd = models.DecimalField(null=True, blank=True, max_digits=20, decimal_places=12)
    emitter_cost_usd = models.DecimalField(
        null=True, blank=True, max_digits=20, decimal_places=12
    )  # what the emitter claimed
    price_source = models.CharField(max_length=32, null=True, blank=True)
    price_version = models.CharField(max_length=64, null=True, blank=True)

    latency_ms = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    streaming = models.BooleanField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OK)
    error_type = models.CharField(max_length=200, null=True, blank=True)
    finish_reason = models.CharField(max_length=64, null=True, blank=True)

    response_id = models.CharField(max_length=200, null=True, blank=True, db_collation="C")
    request_id = models.CharField(max_length=200, null=True, blank=True, db_collation="C")
    emitter = models.CharField(
        max_length=200, blank=True, default="", db_collation="C"
    )  # instrumentation scope
    emitter_kind = models.CharField(max_length=16, blank=True, default="")  # convention family

    # Prompt evidence for the advisor (collector.fingerprint), NULL when the span carried no content.
    # 64-bit BLAKE2b hashes and a SimHash, never the prompt's text.
    prompt_hash = models.BigIntegerField(null=True, blank=True)  # messages, tools, answer parameters
    prefix_hash = models.BigIntegerField(null=True, blank=True)  # tools and leading system messages
    prompt_tokens = models.IntegerField(null=True, blank=True)
    prefix_tokens = models.IntegerField(null=True, blank=True)
    prompt_simhash = models.BigIntegerField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-start_time"], name="llmcall_tenant_time"),
            models.Index(
                fields=["tenant", "response_id", "emitter"],
                name="llmcall_tenant_response",
                condition=models.Q(response_id__isnull=False),
            ),
            models.Index(
                fields=["tenant", "request_id", "emitter"],
                name="llmcall_tenant_request",
                condition=models.Q(request_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} call {self.trace_id}/{self.span_id}"

    @property
    def priced(self) -> bool:
        return self.cost_usd is not None


class TraceRoot(models.Model):
    """The root span of a trace that holds (or may later hold) LLM calls.

    Calls are often exported before their root span ends; the root's route or name becomes their
    feature whichever arrives first, and its user and session fill in what the calls lacked.
    """

    pk = models.CompositePrimaryKey("tenant_id", "trace_id", "start_time")
    tenant = models.ForeignKey(
        Organization, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    trace_id = models.CharField(max_length=32, db_collation="C")
    start_time = models.DateTimeField()
    feature = models.CharField(max_length=300, null=True, blank=True)
    user_id = models.CharField(max_length=300, null=True, blank=True)
    session_id = models.CharField(max_length=300, null=True, blank=True)

    def __str__(self) -> str:
        return f"root of trace {self.trace_id}"


class TenantEmitter(models.Model):
    """Each instrumentation scope a tenant's calls came from.

    Two emitters can report the same provider request; only a tenant with more than one emitter can
    have such duplicates across exports, so the collector looks for them only then.
    """

    pk = models.CompositePrimaryKey("tenant_id", "emitter")
    tenant = models.ForeignKey(Organization, on_delete=models.CASCADE, db_index=False, related_name="+")
    emitter = models.CharField(max_length=200, db_collation="C")
    first_seen = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.emitter


class PriceOverride(models.Model):
    """A tenant's own price for models matching a pattern, from a date on.

    Either explicit prices per million tokens (each unset one falls back to the catalogue) or a
    percentage discount on the catalogue price. The override with the latest `effective_from` not after
    the call's time wins; among equal dates, the most specific pattern (longest) wins.
    """

    tenant = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="price_overrides")
    model_pattern = models.CharField(
        max_length=200, help_text="Shell-style pattern matched against the model name, e.g. gpt-4o*"
    )
    provider = models.CharField(max_length=64, blank=True, default="", help_text="Empty: any provider.")
    effective_from = models.DateTimeField()
    input_per_mtok = models.DecimalField(null=True, blank=True, max_digits=20, decimal_places=12)
    output_per_mtok = models.DecimalField(null=True, blank=True, max_digits=20, decimal_places=12)
    cache_read_per_mtok = models.DecimalField(null=True, blank=True, max_digits=20, decimal_places=12)
    cache_write_per_mtok = models.DecimalField(null=True, blank=True, max_digits=20, decimal_places=12)
    discount_percent = models.DecimalField(null=True, blank=True, max_digits=6, decimal_places=3)
    note = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "effective_from"], name="priceoverride_tenant_from")]

    def __str__(self) -> str:
        return f"{self.model_pattern} from {self.effective_from:%Y-%m-%d}"

    def clean(self) -> None:
        prices = [
            self.input_per_mtok,
            self.output_per_mtok,
            self.cache_read_per_mtok,
            self.cache_write_per_mtok,
        ]
        has_prices = any(p is not None for p in prices)
        if has_prices and self.discount_percent is not None:
            raise ValidationError("Give either prices per million tokens or a discount, not both.")
        if not has_prices and self.discount_percent is None:
            raise ValidationError("Give at least one price per million tokens, or a discount percentage.")
        if any(p is not None and p < 0 for p in prices):
            raise ValidationError("Prices cannot be negative.")
        if self.discount_percent is not None and not (Decimal(0) <= self.discount_percent <= Decimal(100)):
            raise ValidationError("A discount is a percentage between 0 and 100.")


class RepriceRequest(models.Model):
    """Calls of a tenant started at or after `since` to price again, and their rollups to rebuild.

    Written in the transaction that changes a price override (or by the worker when the price
    catalogue changed), so a request is never lost to a broker outage; the rollup worker takes it.
    """

    tenant = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    since = models.DateTimeField()
    reason = models.CharField(max_length=300)
    requested_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"reprice tenant {self.tenant_id} since {self.since:%Y-%m-%d %H:%M} ({self.reason})"


class WorkerState(models.Model):
    """Small facts the workers keep between runs: the rollups' watermark, the priced catalogue version."""

    key = models.CharField(max_length=64, primary_key=True)
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.key} = {self.value}"


class Deployment(models.Model):
    """A self-hosted model server (the vLLM tier, or any other) and what it costs to run per hour.

    Calls of `provider` whose model matches `model_pattern` are its calls. Its hourly price is the
    instance's (GPU or CPU): each minute's price is split among the calls running in it by the time each
    occupied the server, and the minute's unoccupied part is its idle cost (DeploymentMinute).
    """

    tenant = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=200)
    provider = models.CharField(max_length=64, default="vllm")
    model_pattern = models.CharField(max_length=200, default="*", help_text="Shell-style, e.g. smollm2-*")
    hourly_usd = models.DecimalField(
        max_digits=12, decimal_places=6, help_text="The instance's price per hour."
    )
    hardware = models.CharField(
        max_length=200, blank=True, default="", help_text="e.g. 1× NVIDIA H100, 2 vCPU"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} (${self.hourly_usd}/h)"


class DeploymentMinute(models.Model):
    """One minute of a deployment: how busy it was, what its calls were charged, what stood idle."""

    pk = models.CompositePrimaryKey("deployment_id", "minute")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, db_index=False, related_name="+")
    tenant = models.ForeignKey(Organization, on_delete=models.CASCADE, db_index=False, related_name="+")
    minute = models.DateTimeField()
    calls = models.IntegerField()
    busy_seconds = models.FloatField()  # the union of its calls' intervals within the minute
    busy_usd = models.DecimalField(max_digits=20, decimal_places=12)
    prefill_usd = models.DecimalField(max_digits=20, decimal_places=12, default=0)  # of busy_usd
    idle_usd = models.DecimalField(max_digits=20, decimal_places=12)

    class Meta:
        indexes = [models.Index(fields=["tenant", "minute"], name="deploymentminute_tenant")]

    def __str__(self) -> str:
        return f"{self.deployment_id} at {self.minute:%Y-%m-%d %H:%M}"
