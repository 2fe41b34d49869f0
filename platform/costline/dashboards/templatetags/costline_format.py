"""Number formatting for the pages: money, counts, milliseconds, percentages.

`{% load costline_format %}` then `{{ value|money }}`, `{{ value|count }}`, `{{ value|compact }}`,
`{{ value|ms }}`, `{{ value|percent }}`, `{{ value|change }}`, and `{{ value|metric_value:"latency_p95" }}`
for any metric of the query layer. Every filter shows a missing value (None) as an en dash.
Money stays Decimal here: a table shows the exact stored sum, rounded for the eye only at the end.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django import template

from costline.usage.metrics import METRICS

register = template.Library()

MISSING = "–"
# Under $1 a cost shows this many significant digits (a call of $0.000135 is not "$0.00").
SMALL_MONEY_DIGITS = 3
MAX_MONEY_PLACES = 10


def format_money(value: Decimal | int | float | None) -> str:
    """$1,234.57 from $1 up; below that enough places for 3 significant digits ($0.0042, $0.000135)."""
    if value is None:
        return MISSING
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount >= 1 or amount == 0:
        return f"{sign}${amount.quantize(Decimal('0.01'), ROUND_HALF_EVEN):,.2f}"
    # The first significant digit sits `-adjusted()` places after the point (0.0042 → 3).
    places = min(max(2, -amount.adjusted() + SMALL_MONEY_DIGITS - 1), MAX_MONEY_PLACES)
    rounded = amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
    if rounded == 0:
        return f"<${Decimal(1).scaleb(-MAX_MONEY_PLACES):f}"
    text = f"{rounded:f}"
    # Trailing zeros beyond the cents say nothing ($0.5000 → $0.50).
    whole, _, decimals = text.partition(".")
    decimals = decimals.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{decimals}"


def format_count(value: int | float | Decimal | None) -> str:
    """12,345 (thousands separators; a float is rounded to a whole number)."""
    if value is None:
        return MISSING
    return f"{round(value):,}"


def format_compact(value: int | float | Decimal | None) -> str:
    """A large count in three digits for a tile: 3.76B, 745M, 12.3k; below 10,000 in full."""
    if value is None:
        return MISSING
    number = float(value)
    if abs(number) < 10_000:
        return format_count(value)
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            scaled = number / size
            return f"{scaled:.3g}{suffix}" if abs(scaled) < 1000 else f"{scaled:,.0f}{suffix}"
    return format_count(value)  # pragma: no cover - every number >= 10,000 has a suffix above


def format_ms(value: float | int | None) -> str:
    """812 ms, 45.3 ms, 1,234 ms, 0.42 ms."""
    if value is None:
        return MISSING
    if value >= 100:
        return f"{value:,.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def format_percent(value: float | Decimal | None) -> str:
    """A ratio as a percentage: 0.0253 → 2.5%, 0.00042 → 0.042%, 0 → 0%."""
    if value is None:
        return MISSING
    percent = float(value) * 100
    if percent == 0:
        return "0%"
    if abs(percent) >= 10:
        return f"{percent:,.1f}%".replace(".0%", "%")
    if abs(percent) >= 0.1:
        return f"{percent:.1f}%"
    return f"{percent:.2g}%"


def format_change(value: float | Decimal | None) -> str:
    """A relative change with its sign: 0.123 → +12.3%, -0.04 → −4.0%."""
    if value is None:
        return MISSING
    percent = float(value) * 100
    sign = "+" if percent > 0 else "−" if percent < 0 else "±"
    return f"{sign}{abs(percent):,.1f}%"


def format_metric(value: Any, metric: str) -> str:
    """A value of a query-layer metric, formatted for its unit ($, ms, %, a count)."""
    unit = METRICS.get(metric)
    if unit == "USD":
        return format_money(value)
    if unit == "ms":
        return format_ms(value)
    if unit == "ratio":
        return format_percent(value)
    return format_count(value)


register.filter("money", format_money)
register.filter("metric_value", format_metric)
register.filter("count", format_count)
register.filter("compact", format_compact)
register.filter("ms", format_ms)
register.filter("percent", format_percent)
register.filter("change", format_change)
