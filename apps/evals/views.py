"""The /evals pages: every agent's evaluations and gates at a glance, a suite's cases, a
run's results, two runs compared, an agent's rollout gates (edit them, promote or demote the
agent), an incident turn made into a case, and a person's review of a real turn.

Thin: reads come from ``selectors``, every write is a service call whose refusal is shown
to the person (a PermissionDenied becomes a 403, a ValidationError lands on the form's
fields). Rows of a tenant the person may not see are not found. Every form posts and
redirects; nothing needs JavaScript (a run still running refreshes its page).
"""

from functools import partial

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from apps.accounts.permissions import has_tenant_permission
from apps.agents import services as agent_services
from apps.agents.choices import RolloutMode
from apps.agents.models import Agent
from apps.runtime.models import Turn

from . import selectors, services
from .choices import RunTrigger
from .forms import CaseFromTurnForm, GateForm, ModeForm, ReviewForm, place_errors
from .models import EvalRun, EvalSuite

RUNS_PER_PAGE = 20


def _safe_next(request, default: str) -> str:
    """Where to go back to: the ``next`` the form carried, if it is a page of this site."""
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return wanted
    return default


def _require_any(user, *permissions: str) -> None:
    if not any(selectors.may_anywhere(user, permission) for permission in permissions):
        raise PermissionDenied("You hold no role that may see evaluations.")


# --- Overview, suites, runs ----------------------------------------------------------------


@require_safe
@login_required
def index(request):
    _require_any(request.user, selectors.VIEW_RUNS, selectors.VIEW_SUITES)
    agents, suites = selectors.overview(request.user)
    return render(request, "evals/index.html", {"agents": agents, "suites": suites})


def _suite_or_404(user, suite_id: int) -> EvalSuite:
    try:
        return selectors.suite_for_page(user, suite_id)
    except EvalSuite.DoesNotExist:
        raise Http404("No such suite.") from None


@require_safe
@login_required
def suite_detail(request, suite_id: int):
    suite = _suite_or_404(request.user, suite_id)
    page = Paginator(selectors.suite_runs(request.user, suite), RUNS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "suite": suite,
        "groups": selectors.suite_cases(suite),
        "page": page,
        "run_agents": selectors.agents_to_run(request.user, suite),
    }
    return render(request, "evals/suite.html", context)


@require_POST
@login_required
def run_suite(request, suite_id: int):
    """The Run button: queue a run of the suite for one agent and open its page."""
    suite = _suite_or_404(request.user, suite_id)
    agent = selectors.visible_agents(request.user).filter(pk=_int(request.POST.get("agent"))).first()
    if agent is None:
        raise Http404("No such agent.")
    back = _safe_next(request, reverse("evals:suite", args=[suite.pk]))
    try:
        run = services.start_run(suite=suite, agent=agent, by=request.user, trigger=RunTrigger.PAGE)
    except ValidationError as error:
        messages.error(request, f"{suite} was not run for {agent}: {' '.join(error.messages)}")
        return redirect(back)
    messages.success(request, f"Run #{run.pk} of {suite} for {agent} is queued.")
    return redirect("evals:run", run.pk)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _run_or_404(user, run_id: int) -> EvalRun:
    try:
        return selectors.run_for_page(user, run_id)
    except EvalRun.DoesNotExist:
        raise Http404("No such run.") from None


@require_safe
@login_required
def run_detail(request, run_id: int):
    run = _run_or_404(request.user, run_id)
    rows = selectors.run_results(run)
    context = {
        "run": run,
        "rows": rows,
        "rates": selectors.category_rates(run, rows),
        "earlier": selectors.earlier_runs(request.user, run) if run.finished else [],
        "may_run": has_tenant_permission(request.user, run.tenant_id, selectors.RUN_SUITES),
    }
    return render(request, "evals/run.html", context)


@require_safe
@login_required
def compare_pick(request, run_id: int):
    """The "Compare with" select, without JavaScript: to the comparison it names."""
    run = _run_or_404(request.user, run_id)
    other = _int(request.GET.get("with"))
    if other is None:
        messages.error(request, "Pick a run to compare with.")
        return redirect("evals:run", run.pk)
    return redirect("evals:compare", run.pk, other)


@require_safe
@login_required
def compare(request, run_id: int, other_id: int):
    run, other = _run_or_404(request.user, run_id), _run_or_404(request.user, other_id)
    earlier, later = sorted((run, other), key=lambda each: (each.created_at, each.pk))
    try:
        groups = selectors.compare(earlier, later)
    except ValidationError:
        raise Http404("Those runs belong to different tenants.") from None
    context = {"run": run, "earlier": earlier, "later": later, "groups": groups}
    return render(request, "evals/compare.html", context)


# --- Rollout gates -------------------------------------------------------------------------


def _agent_or_404(user, agent_id: int) -> Agent:
    try:
        return selectors.agent_for_gates(user, agent_id)
    except Agent.DoesNotExist:
        raise Http404("No such agent.") from None


def _mode_form(agent: Agent, data=None) -> ModeForm:
    next_mode, lower = selectors.mode_choices(agent)
    modes = ([(next_mode, RolloutMode(next_mode).label)] if next_mode else []) + lower
    return ModeForm(data, modes=modes)


def _gates_page(request, agent: Agent, *, bound_gate: GateForm | None = None, mode_form=None, refusal=(), status=200):
    rows = selectors.gates(agent)
    user = request.user
    may_edit = has_tenant_permission(user, agent.tenant_id, selectors.EDIT_GATES)
    forms = {}
    if may_edit:
        for row in rows:
            if bound_gate is not None and bound_gate.prefix == row.mode:
                forms[row.mode] = bound_gate
            else:
                gate = row.gate
                initial = {
                    "metric": gate.metric,
                    "threshold": gate.threshold,
                    "min_reviews": gate.min_reviews,
                    "min_pass_rate": gate.min_pass_rate,
                }
                forms[row.mode] = GateForm(prefix=row.mode, initial=initial)
    for row in rows:
        row.form = forms.get(row.mode)
    next_mode, lower = selectors.mode_choices(agent)
    overall, per_class = services.shadow_agreement(agent)
    context = {
        "agent": agent,
        "mode_label": selectors.mode_label(agent.rollout_mode),
        "prompt_version": services.current_prompt_number(agent),
        "model": services.model_identity(agent),
        "rows": rows,
        "may_edit": may_edit,
        "history": selectors.gate_history(agent),
        "agreement": overall,
        "agreement_by_class": per_class,
        "may_change_mode": has_tenant_permission(user, agent.tenant_id, selectors.CHANGE_AGENTS),
        "next_mode": next_mode,
        "next_mode_label": selectors.mode_label(next_mode) if next_mode else "",
        "lower_modes": lower,
        "mode_form": mode_form,
        "refusal": list(refusal),
    }
    return render(request, "evals/gates.html", context, status=status)


@require_safe
@login_required
def gates(request, agent_id: int):
    return _gates_page(request, _agent_or_404(request.user, agent_id))


@require_POST
@login_required
def edit_gate(request, agent_id: int, mode: str):
    agent = _agent_or_404(request.user, agent_id)
    if mode not in RolloutMode.values or mode == RolloutMode.SHADOW:
        raise Http404("Gates lead into the modes above shadow.")
    if not has_tenant_permission(request.user, agent.tenant_id, selectors.EDIT_GATES):
        raise PermissionDenied(f"You may not edit gates in {agent.tenant}.")
    form = GateForm(request.POST, prefix=mode)
    if form.is_valid():
        try:
            services.set_gate(
                by=request.user, agent=agent, target_mode=mode, reason=form.cleaned_data["reason"], **form.changes()
            )
        except ValidationError as error:
            place_errors(form, error)
        else:
            messages.success(request, f"The gate into {selectors.mode_label(mode).lower()} is saved.")
            return redirect(f"{reverse('evals:gates', args=[agent.pk])}#gate-{mode}")
    return _gates_page(request, agent, bound_gate=form, status=400)


@require_POST
@login_required
def change_mode(request, agent_id: int):
    """Promote the agent one mode up (the gates decide, in ``agents.services.update_agent``)
    or move it to any less autonomous mode."""
    agent = _agent_or_404(request.user, agent_id)
    if not has_tenant_permission(request.user, agent.tenant_id, selectors.CHANGE_AGENTS):
        raise PermissionDenied(f"You may not change agents in {agent.tenant}.")
    form = _mode_form(agent, request.POST)
    if not form.is_valid():
        return _gates_page(request, agent, mode_form=form, status=400)
    target = form.cleaned_data["rollout_mode"]
    reason = form.cleaned_data["reason"] or f"Rollout mode set to {target} on the gates page"
    try:
        agent_services.update_agent(agent=agent, by=request.user, reason=reason, rollout_mode=target)
    except ValidationError as error:
        refused = error.message_dict.get("rollout_mode") if hasattr(error, "error_dict") else None
        refusal = refused or error.messages
        return _gates_page(request, agent, mode_form=form, refusal=refusal, status=400)
    messages.success(request, f"{agent} is now in {selectors.mode_label(target).lower()} mode.")
    return redirect("evals:gates", agent.pk)


# --- Real turns: an incident made into a case, and reviews ----------------------------------


def _turn_or_404(user, turn_id) -> Turn:
    try:
        return selectors.turn_for_page(user, turn_id)
    except Turn.DoesNotExist:
        raise Http404("No such turn.") from None


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def case_from_turn(request, turn_id):
    """An incident made into a regression case: the draft from its trace, corrected by the
    person, saved with the turn as its source."""
    turn = _turn_or_404(request.user, turn_id)
    if not has_tenant_permission(request.user, turn.tenant_id, selectors.ADD_CASES):
        raise PermissionDenied("You may not add evaluation cases in this tenant.")
    draft = services.case_draft_from_turn(turn)
    suites = selectors.suites_for_new_case(request.user, turn)
    offered = list(suites)
    # The agent's own suite before a shared one.
    preferred = next((suite for suite in offered if suite.agent_id == turn.agent_id), offered[0] if offered else None)
    form = CaseFromTurnForm(
        request.POST if request.method == "POST" else None,
        suites=suites,
        known_sources=partial(selectors.source_titles, turn.tenant_id),
        initial={**CaseFromTurnForm.initial_from(draft), "suite": preferred.pk if preferred else None},
    )
    if request.method == "POST" and form.is_valid():
        suite = form.cleaned_data["suite"]
        try:
            case = services.create_case_from_turn(by=request.user, turn=turn, suite=suite, **form.overrides())
        except ValidationError as error:
            place_errors(form, error)
        else:
            messages.success(request, f"Case “{case.name}” is in {suite}: it runs with the suite from now on.")
            return redirect("evals:suite", suite.pk)
    context = {
        "turn": turn,
        "draft": draft,
        "form": form,
        "has_suites": bool(offered),
        "cited": [
            selectors.titled(source, selectors.source_titles(turn.tenant_id, draft["must_cite"]))
            for source in draft["must_cite"]
        ],
    }
    return render(request, "evals/case_from_turn.html", context, status=400 if form.is_bound else 200)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def review_turn(request, turn_id):
    """Record a person's review of a real turn (the panel's form posts here), then go back
    to the page the panel was on. GET shows the panel on its own."""
    turn = _turn_or_404(request.user, turn_id)
    if not has_tenant_permission(request.user, turn.tenant_id, selectors.REVIEW_TURNS):
        raise PermissionDenied("You may not review this agent's turns in this tenant.")
    here = reverse("evals:review", args=[turn.pk])
    back = _safe_next(request, here)
    panel = selectors.review_panel(turn)
    form = ReviewForm(
        request.POST if request.method == "POST" else None,
        kind=panel.kind,
        action_choices=panel.action_choices,
        auto_id=f"review-{turn.pk}-%s",
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.record_review(by=request.user, turn=turn, kind=panel.kind, **form.review_fields())
        except ValidationError as error:
            place_errors(form, error)
        else:
            messages.success(request, "Your review is recorded.")
            return redirect(back)
    context = {"panel": panel, "form": form, "next": back, "standalone": True}
    return render(request, "evals/review.html", context, status=400 if form.is_bound else 200)
