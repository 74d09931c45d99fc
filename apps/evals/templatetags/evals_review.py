"""Evaluation pieces on other apps' pages, without those apps importing evals:

- ``{% turn_review_panel turn %}`` (a Turn, or a turn id as the handoff and approval pages
  hold it): what the agent proposed and a form to record what the person did, whether the
  suggestion was taken, or whether the agent was right. Nothing for people who may not
  review turns in the turn's tenant, for evaluation turns, or for unfinished ones.
- ``{% eval_case_link turn %}``: "Make an eval case" for people who may add cases.
"""

from django import template
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from apps.accounts.permissions import has_tenant_permission

from .. import selectors
from ..forms import ReviewForm

register = template.Library()


def _prefetched_steps(turn):
    """The turn's steps when the page already read them (the try-it trace), else None."""
    cache = getattr(turn, "_prefetched_objects_cache", {})
    return list(cache["steps"]) if "steps" in cache else None


@register.simple_tag(takes_context=True)
def turn_review_panel(context, turn):
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None:
        return ""
    turn = selectors.reviewable_turn(user, turn)
    if turn is None:
        return ""
    # One memo per request: a page of many turns reads their reviews once.
    memo = request.__dict__.setdefault("_evals_review_memo", {})
    panel = selectors.review_panel(turn, _prefetched_steps(turn), memo=memo)
    form = ReviewForm(kind=panel.kind, action_choices=panel.action_choices, auto_id=f"review-{turn.pk}-%s")
    return render_to_string(
        "evals/_review_panel.html", {"panel": panel, "form": form, "next": _page_url(request)}, request=request
    )


def _page_url(request) -> str:
    """The page the person is on, to come back to after reviewing: for a fragment htmx
    swapped in (a turn that just finished), the page around it."""
    current = request.headers.get("HX-Current-URL", "") if request.headers.get("HX-Request") == "true" else ""
    if current and url_has_allowed_host_and_scheme(
        current, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return current
    return request.get_full_path()


@register.simple_tag(takes_context=True)
def eval_case_link(context, turn):
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not turn or not getattr(turn, "finished", False):
        return ""
    if not has_tenant_permission(user, turn.tenant_id, selectors.ADD_CASES):
        return ""
    conversation = context.get("conversation")
    if conversation is None or conversation.pk != turn.conversation_id:
        conversation = turn.conversation
    if conversation.evaluation:
        return ""
    return format_html(
        '<a class="eval-case-link" href="{}">Make an eval case</a>', reverse("evals:case_from_turn", args=[turn.pk])
    )
