"""Forms of the usage app's settings pages."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from costline.tenancy.forms import DateTimeLocalInput
from costline.usage.models import Deployment, PriceOverride


class PriceOverrideForm(forms.ModelForm):
    """Validated by PriceOverride.clean() too (prices or a discount, not both; no negatives)."""

    class Meta:
        model = PriceOverride
        fields = [
            "model_pattern",
            "provider",
            "effective_from",
            "input_per_mtok",
            "output_per_mtok",
            "cache_read_per_mtok",
            "cache_write_per_mtok",
            "discount_percent",
            "note",
        ]
        labels = {
            "effective_from": "Effective from",
            "input_per_mtok": "Input $ / 1M tokens",
            "output_per_mtok": "Output $ / 1M tokens",
            "cache_read_per_mtok": "Cache read $ / 1M tokens",
            "cache_write_per_mtok": "Cache write $ / 1M tokens",
            "discount_percent": "Discount %",
        }
        widgets = {"effective_from": DateTimeLocalInput()}


class DeploymentForm(forms.ModelForm):
    class Meta:
        model = Deployment
        fields = ["name", "provider", "model_pattern", "hourly_usd", "hardware"]
        labels = {"hourly_usd": "Price per hour (USD)", "model_pattern": "Models"}
        help_texts = {
            "provider": "The provider its calls name: vllm for the bundled tier.",
            "hourly_usd": "What the instance costs an hour, busy or idle (e.g. 2.49 for one H100).",
        }

    def clean_hourly_usd(self) -> Decimal:
        value: Decimal = self.cleaned_data["hourly_usd"]
        if value <= 0:
            raise forms.ValidationError("The price per hour must be more than $0.")
        return value
