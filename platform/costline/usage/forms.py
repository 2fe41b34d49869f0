"""Forms of the usage app's settings pages."""

from __future__ import annotations

from django import forms

from costline.tenancy.forms import DateTimeLocalInput
from costline.usage.models import PriceOverride


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
