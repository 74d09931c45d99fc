"""The governance dashboard, the control panel's front page ("/"): one tenant's agents, kill
switches, answer quality and human interventions over a period of 7, 30 or 90 days.

The tenant is one where the person holds a role (a superuser: any active tenant); any
other slug, existing or not, is a 404, so the page never says whether a stranger's tenant
exists. An unknown period falls back to the default and says so. htmx swaps only the body
when the tenant or period changes; without JavaScript the same form reloads the page.
"""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.models import Tenant
from apps.accounts.permissions import tenants_visible_to
from apps.agents.selectors import kill_switches_visible_to

from . import charts
from .dashboard import PERIODS, Dashboard, governance_dashboard, parse_days

BODY_TARGET = "dashboard-body"
# Names of the panels a person's roles may not show, as the page says them.
PANEL_NAMES = {
    "accuracy": "evaluation runs",
    "turns": "turns and their decisions",
    "gap_topics": "knowledge gaps",
    "handoffs": "handoffs",
    "approval_overrides": "approval decisions",
    "review_overrides": "reviews of turns",
    "tools": "tool calls",
    "approvals": "pending approvals",
    "stale": "stale knowledge sources",
    "grants": "tool grants",
    "kills": "guardrail kills",
}


def _chosen_tenant(tenants: list[Tenant], slug: str | None) -> Tenant | None:
    if not slug:
        return tenants[0] if tenants else None
    for tenant in tenants:
        if tenant.slug == slug:
            return tenant
    raise Http404("No tenant of that name among those you hold a role in.")


@login_required
@require_GET
def dashboard(request):
    days, period_problem = parse_days(request.GET.get("days"))
    tenants = list(tenants_visible_to(request.user).order_by("name"))
    tenant = _chosen_tenant(tenants, request.GET.get("tenant"))
    board = governance_dashboard(user=request.user, tenant=tenant, days=days) if tenant else None
    context = {
        "tenants": tenants,
        "tenant": tenant,
        "days": days,
        "periods": PERIODS,
        "notices": [period_problem] if period_problem else [],
        "board": board,
        "charts": dashboard_charts(board) if board else {},
        "hidden_panels": [PANEL_NAMES[panel] for panel in board.hidden] if board else [],
        "engaged_switches": [switch for switch in kill_switches_visible_to(request.user) if switch.engaged],
    }
    if request.headers.get("HX-Request") == "true" and request.headers.get("HX-Target") == BODY_TARGET:
        return render(request, "evals/_dashboard_body.html", context)
    return render(request, "evals/dashboard.html", context)


def _short_label(label: str) -> str:
    """ "Grounding (approved answer from an approved source)" -> "Grounding"."""
    return label.split(" (", 1)[0]


def dashboard_charts(board: Dashboard) -> dict:
    """The dashboard's charts as inline SVG, for the panels the person may see."""
    tenant = board.tenant.name
    made = {}
    if board.accuracy is not None:
        made["accuracy"] = charts.bar_chart(
            chart_id="chart-accuracy",
            title=f"Pass rate by category over the latest evaluation run of each agent of {tenant}",
            bars=[
                charts.Bar(
                    _short_label(entry.label),
                    entry.rate.value,
                    f"{entry.rate.part} of {entry.rate.whole} cases",
                    f"category-{entry.category}",
                )
                for entry in board.accuracy.categories
            ],
            empty="No completed evaluation run yet.",
        )
    if board.turns is not None:
        title = f"Turns per day by decision (day received), {tenant}, last {board.period.days} days"
        series = [
            charts.Series(
                label, f"decision-{decision or 'none'}", [day.counts.get(decision, 0) for day in board.turns.by_day]
            )
            for decision, label, _turns in board.turns.decisions
        ]
        made["turns"] = charts.stacked_daily_bars(
            chart_id="chart-turns",
            title=title,
            days=board.period.dates,
            series=series,
            empty="No finished turns in this period.",
        )
        made["turns_table"] = charts.daily_table(caption=title, days=board.period.dates, series=series)
    if board.handoffs is not None:
        made["handoffs"] = charts.horizontal_bars(
            chart_id="chart-handoffs",
            title=f"Handoffs by reason, {tenant}, last {board.period.days} days",
            bars=[
                charts.Bar(entry.reason, entry.handoffs, f"{entry.rate.percent} of turns")
                for entry in board.handoffs.by_reason
            ],
            empty="No handoffs in this period.",
        )
    if board.tools is not None:
        made["tools"] = charts.horizontal_bars(
            chart_id="chart-tools",
            title=f"Tool failure rate by tool, {tenant}, last {board.period.days} days",
            bars=[
                charts.Bar(
                    entry.tool_name, entry.failed.value, f"{entry.failed.part} of {entry.failed.whole} calls", "failed"
                )
                for entry in board.tools.by_tool
            ],
            max_value=1.0,
            value_text=charts.percent,
            empty="No tool ran in this period.",
        )
    if board.stale is not None:
        made["stale"] = charts.horizontal_bars(
            chart_id="chart-stale",
            title=f"Knowledge sources overdue for review by owner, {tenant}",
            bars=[
                charts.Bar(str(entry.owner), entry.stale, f"{entry.excluded} kept from agents", "stale")
                for entry in board.stale.owners
            ],
            empty="No source is overdue for review.",
        )
    if board.kills is not None:
        title = f"Guardrail kills per day, {tenant}, last {board.period.days} days"
        series = [charts.Series("kills", "kill", [kills for _day, kills in board.kills.by_day])]
        made["kills"] = charts.stacked_daily_bars(
            chart_id="chart-kills",
            title=title,
            days=board.period.dates,
            series=series,
            empty="No guardrail kill in this period.",
        )
        made["kills_table"] = charts.daily_table(
            caption=f"{title} (days without one left out)", days=board.period.dates, series=series, skip_empty_days=True
        )
    return made
