"""Small filters for the /evals pages."""

from decimal import Decimal

from django import template

from .. import selectors

register = template.Library()


@register.filter
def percent(rate) -> str:
    """0.8333 -> "83.3%"; nothing -> "—"."""
    if rate is None or rate == "":
        return "—"
    return f"{Decimal(str(rate)) * 100:.1f}%"


@register.filter
def bar_width(rate) -> str:
    """A rate as a CSS width: "83.3%" (a bar beside the printed number, never instead of it)."""
    if rate is None or rate == "":
        return "0%"
    return f"{min(max(float(rate), 0.0), 1.0) * 100:.1f}%"


@register.filter
def mode_label(mode: str) -> str:
    return selectors.mode_label(mode)
