"""The handoff pages under /handoffs/: the queue (what waits for a person, soonest due
first, with its SLA state at a glance) and one handoff with its whole package.

Claim, resolve and return are plain POST forms: without JavaScript they redirect back to
the handoff with a message (or show the page again with the error and what was typed); with
htmx they swap the handoff's actions panel. Who may see what is decided by
``selectors.visible_handoffs``; who may act by the services, inside their transaction.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from . import selectors, services
from .choices import HandoffStatus
from .forms import HandoffFilterForm, ResolveForm, ReturnForm
from .models import Handoff

PAGE_SIZE = 25


def _tenants_allowed(user) -> set[int] | None:
    allowed = selectors.tenants_allowed(user)
    if allowed is not None and not allowed:
        raise PermissionDenied("You hold no role that lets you read handoffs.")
    return allowed


@require_safe
@login_required
def queue(request):
    allowed = _tenants_allowed(request.user)
    form = HandoffFilterForm(
        request.GET,
        tenant_choices=selectors.tenant_choices(allowed),
        queue_choices=selectors.queue_choices(allowed),
    )
    now = timezone.now()
    page, counts = None, {}
    if form.is_valid():
        handoffs = selectors.filter_handoffs(
            selectors.visible_handoffs(request.user), form.filters(), user=request.user, now=now
        )
        counts = selectors.sla_counts(handoffs, now)
        page = Paginator(selectors.in_due_order(handoffs), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "handoffs/queue.html", {"form": form, "page": page, "counts": counts})


def _visible(request, handoff_id) -> Handoff:
    """A handoff of another tenant (or one the person may not read) is not found."""
    queryset = selectors.visible_handoffs(request.user).select_related(
        "requested_by", "resolved_by", "returned_by", "queue__escalate_to"
    )
    return get_object_or_404(queryset, pk=handoff_id)


def _panel(request, handoff: Handoff, *, resolve_form=None, return_form=None, error: str = "") -> dict:
    """What the actions panel shows: the status, and the actions this person may take now."""
    refusal = services.work_refusal(request.user, handoff)
    is_open = handoff.status == HandoffStatus.OPEN
    mine = handoff.status == HandoffStatus.CLAIMED and handoff.claimed_by_id == request.user.pk
    return {
        "handoff": handoff,
        "refusal": refusal,
        "may_claim": not refusal and is_open,
        "may_resolve": not refusal and mine,
        "may_return": not refusal and (is_open or mine),
        "resolve_form": resolve_form or ResolveForm(),
        "return_form": return_form or ReturnForm(),
        "error": error,
    }


@require_safe
@login_required
def detail(request, handoff_id: int):
    handoff = _visible(request, handoff_id)
    return render(request, "handoffs/detail.html", _panel(request, handoff))


def _act(request, handoff_id: int, action: str):
    handoff = _visible(request, handoff_id)
    forms = {"resolve": ResolveForm(request.POST), "return": ReturnForm(request.POST)}
    status, error, done = 200, "", ""
    try:
        done = _perform(request, handoff, action, forms)
    except PermissionDenied as refused:
        status, error = 403, str(refused)
    except services.HandoffStateError as conflict:
        status, error = 409, " ".join(conflict.messages)
    except ValidationError as invalid:
        status, error = 400, _place_errors(invalid, forms.get(action))
    handoff = _visible(request, handoff_id)  # as it is now, also when another person changed it
    failed = status != 200
    context = _panel(
        request,
        handoff,
        resolve_form=forms["resolve"] if failed else None,  # what was typed is shown again, not lost
        return_form=forms["return"] if failed else None,
        error=error,
    )
    if request.headers.get("HX-Request") == "true":
        # htmx swaps only 2xx answers by default, so the panel answers 200 and carries the error.
        return render(request, "handoffs/_actions.html", {**context, "done": done})
    if not failed:
        messages.success(request, done)
        return redirect("handoffs:detail", handoff.pk)
    return render(request, "handoffs/detail.html", context, status=status)


def _perform(request, handoff: Handoff, action: str, forms: dict) -> str:
    """Call the service for ``action``; what to tell the person when it succeeded."""
    if action == "claim":
        services.claim(handoff_id=handoff.pk, by=request.user)
        return "You claimed this handoff: it is yours to answer."
    form = forms[action]
    form.is_valid()
    if action == "resolve":
        services.resolve(handoff_id=handoff.pk, by=request.user, resolution=form.cleaned_data.get("resolution", ""))
        return "Resolved. The conversation stays with people; the agent takes no more turns in it."
    services.return_to_agent(handoff_id=handoff.pk, by=request.user, note=form.cleaned_data.get("note", ""))
    return "Returned to the agent: it may answer in the conversation again (once no other handoff of it waits)."


def _place_errors(invalid: ValidationError, form) -> str:
    """A service's field errors onto the form's fields; the rest as one message."""
    if not hasattr(invalid, "error_dict"):
        return " ".join(invalid.messages)
    rest = []
    for field, problems in invalid.message_dict.items():
        if form is not None and field in form.fields:
            form.add_error(field, problems)
        else:
            rest.extend(problems)
    return " ".join(rest)


@require_POST
@login_required
def claim(request, handoff_id: int):
    return _act(request, handoff_id, "claim")


@require_POST
@login_required
def resolve(request, handoff_id: int):
    return _act(request, handoff_id, "resolve")


@require_POST
@login_required
def return_to_agent(request, handoff_id: int):
    return _act(request, handoff_id, "return")
