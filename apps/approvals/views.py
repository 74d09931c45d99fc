"""The approval queue (/approvals/) support leads work from, one request with what a careful
approver needs, the decision, and the approval-fatigue signals.

htmx swaps the queue's results when a filter changes, the decision panel when someone
decides, and polls an approved action until it has run; without JavaScript every form posts
and redirects, and a page waiting on an action refreshes itself.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.permissions import tenant_ids_with_permission

from . import selectors, services
from .choices import IN_FLIGHT_STATUSES
from .forms import DecisionForm, QueueFilterForm
from .models import ApprovalRequest

PAGE_SIZE = 25


def _htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


@login_required
@require_GET
def queue(request):
    _require_visible(request.user)
    form = QueueFilterForm(request.GET, choices=selectors.filter_choices(request.user))
    filters = form.filters()
    page = Paginator(selectors.queue(request.user, filters), PAGE_SIZE).get_page(request.GET.get("page"))
    rows = selectors.queue_rows(request.user, list(page.object_list))
    context = {"form": form, "page": page, "rows": rows, "filters": filters}
    if _htmx(request) and request.headers.get("HX-Target") == "queue-results":
        return render(request, "approvals/_queue_results.html", context)
    return render(request, "approvals/queue.html", context)


def _require_visible(user) -> None:
    allowed = tenant_ids_with_permission(user, "approvals.view_approvalrequest")
    if allowed is not None and not allowed:
        raise PermissionDenied("You have no role that may see approval requests.")


def _request_or_404(user, request_id: int) -> ApprovalRequest:
    try:
        return selectors.request_for_page(user, request_id)
    except ApprovalRequest.DoesNotExist:
        raise Http404("No such approval request.") from None


def _panel_context(user, approval: ApprovalRequest, form: DecisionForm | None = None) -> dict:
    refusal = services.may_decide(user, approval) if approval.is_pending else ""
    sla = selectors.sla_status(approval.status, approval.due_at, approval.expires_at)
    return {
        "approval": approval,
        "decisions": list(approval.decisions.all()),
        "approvals_given": sum(1 for decision in approval.decisions.all() if decision.approve),
        "form": form or DecisionForm(),
        "may_decide": approval.is_pending and not refusal,
        "refusal": refusal,
        "in_flight": approval.status in IN_FLIGHT_STATUSES,
        "sla": sla,
        "sla_label": selectors.SlaStatus.LABELS[sla],
    }


@login_required
@require_GET
def detail(request, request_id: int):
    approval = _request_or_404(request.user, request_id)
    context = {
        **_panel_context(request.user, approval),
        "earlier": selectors.earlier_for_customer(approval),
        "now": timezone.now(),
    }
    return render(request, "approvals/detail.html", context)


@login_required
@require_GET
def panel(request, request_id: int):
    """The decision panel alone: htmx polls it while an approved action runs."""
    approval = _request_or_404(request.user, request_id)
    return render(request, "approvals/_panel.html", _panel_context(request.user, approval))


@login_required
@require_POST
def decide(request, request_id: int):
    approval = _request_or_404(request.user, request_id)
    form = DecisionForm(request.POST)
    problem = ""
    if form.is_valid():
        try:
            services.decide(
                approval.pk,
                by=request.user,
                approve=form.cleaned_data["decision"] == "approve",
                comment=form.cleaned_data["comment"],
            )
        except PermissionDenied as refusal:
            problem = str(refusal)
        except ValidationError as error:
            problem = " ".join(error.messages)
    else:
        problem = "Choose to approve or reject."
    if problem:
        form.add_error(None, problem)
    elif not _htmx(request):
        messages.success(request, "Your decision is recorded.")
    if _htmx(request):
        approval = _request_or_404(request.user, request_id)
        fresh = form if problem else None
        return render(request, "approvals/_panel.html", _panel_context(request.user, approval, fresh))
    if problem:
        messages.error(request, problem)
    return redirect("approvals:detail", approval.pk)


@login_required
@require_GET
def signals(request):
    """Approval fatigue: per tool, how often people approve and how long they take."""
    _require_visible(request.user)
    context = {
        "signals": selectors.fatigue_signals(request.user),
        "days": settings.APPROVAL_FATIGUE_DAYS,
        "rate_percent": round(settings.APPROVAL_FATIGUE_RATE * 100),
        "min_sample": settings.APPROVAL_FATIGUE_MIN_SAMPLE,
    }
    return render(request, "approvals/signals.html", context)
