"""Operations on the agent inventory: create and edit agents, publish prompts, suspend and
resume, and the kill switches. Every write checks the actor's role in the agent's tenant
inside its own transaction, so admin, API and CLI get the same rules."""

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps import audit
from apps.accounts.governance import diff as _diff
from apps.accounts.governance import record_change, require_tenant_permission, save_with_history
from apps.accounts.governance import snapshot as _snapshot
from apps.accounts.models import Tenant, User

from .choices import ROLLOUT_ORDER, AgentStatus, RolloutMode
from .models import Agent, KillSwitch, PromptVersion

# Limits on each turn and the business rules that hand a conversation to a person.
TURN_RULE_FIELDS = (
    "max_steps_per_turn",
    "max_cost_per_turn",
    "confidence_threshold",
    "escalation_topics",
    "escalate_on_request",
    "escalate_on_negative_sentiment",
    "escalate_after_fallbacks",
)

# Fields an agent owner edits directly. Status has its own operations (suspend, resume,
# retire) so that every change of it carries who and why.
EDITABLE_AGENT_FIELDS = (
    "name",
    "slug",
    "purpose",
    "owner",
    "business_owner",
    "environment",
    "connected_systems",
    "channels",
    "rollout_mode",
    "model_provider",
    "model_name",
    "routine_model_name",
    *TURN_RULE_FIELDS,
)


def _record_change(
    *, by: User | None, tenant: Tenant | None, what: str, changes: dict, why: str, agent=None, event_type=None
) -> None:
    record_change(
        by=by, tenant=tenant, what=what, payload={"changes": changes, "why": why}, agent=agent, event_type=event_type
    )


# --- Inventory ------------------------------------------------------------------------------


@transaction.atomic
def create_agent(*, by: User, tenant: Tenant, prompt_text: str = "", gate_override: str = "", **fields: Any) -> Agent:
    require_tenant_permission(by, tenant.pk, "agents.add_agent", f"You may not create agents in {tenant}.")
    unknown = set(fields) - set(EDITABLE_AGENT_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown agent fields: {', '.join(sorted(unknown))}.")
    agent = Agent(tenant=tenant, **fields)
    agent.full_clean()
    save_with_history(agent, by=by, reason="Agent created")
    try:  # a new agent has earned nothing yet: any mode above shadow passes the gates from there
        overridden = _check_promotion(agent, RolloutMode.SHADOW, by=by, gate_override=gate_override)
    except PromotionRefused as refused:
        raise ValidationError({"rollout_mode": refused.messages}) from None
    _record_change(
        by=by,
        tenant=tenant,
        agent=agent,
        what="agent.created",
        changes=_diff({}, _snapshot(agent, ("status", *EDITABLE_AGENT_FIELDS))),
        why="Agent created" + (f" (rollout gate overridden: {gate_override.strip()})" if overridden else ""),
    )
    if prompt_text.strip():
        publish_prompt(agent=agent, text=prompt_text, author=by, change_note="Initial prompt")
        agent.refresh_from_db()  # publish_prompt saved its own copy: pick up current_prompt
    return agent


def update_agent(*, agent: Agent, by: User, reason: str = "", gate_override: str = "", **changes: Any) -> Agent:
    """Apply inventory edits. Locks the row so two editors cannot interleave.

    A change to a more autonomous rollout mode must pass the rollout gates (see
    ``register_promotion_check``); a refusal is recorded in the audit trail with the numbers
    that fell short. ``gate_override`` (a platform administrator's reason) lets it through,
    recorded with the shortfalls it overrode.
    """
    try:
        with transaction.atomic():
            return _update_agent(agent=agent, by=by, reason=reason, gate_override=gate_override, **changes)
    except PromotionRefused as refused:
        record_change(
            by=by,
            tenant=refused.agent.tenant,
            agent=refused.agent,
            what="agent.promotion_refused",
            payload={"rollout_mode": [refused.from_mode, refused.to_mode], "shortfalls": refused.shortfalls},
            event_type=audit.EventType.PROMOTION_REFUSED,
        )
        raise ValidationError({"rollout_mode": refused.messages}) from None


def _update_agent(*, agent: Agent, by: User, reason: str, gate_override: str, **changes: Any) -> Agent:
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    require_tenant_permission(by, agent.tenant_id, "agents.change_agent", f"You may not edit agents in {agent.tenant}.")
    unknown = set(changes) - set(EDITABLE_AGENT_FIELDS)
    if unknown:
        raise ValidationError(f"These fields cannot be edited here: {', '.join(sorted(unknown))}.")
    from_mode = agent.rollout_mode
    before = _snapshot(agent, changes)
    for field, value in changes.items():
        setattr(agent, field, value)
    agent.full_clean()
    overridden = _check_promotion(agent, from_mode, by=by, gate_override=gate_override)
    save_with_history(agent, by=by, reason=reason or "Inventory edited")
    diff = _diff(before, _snapshot(agent, changes))
    if diff:
        record_change(
            by=by,
            tenant=agent.tenant,
            agent=agent,
            what="agent.rollout_mode" if "rollout_mode" in diff else "agent.inventory",
            payload={
                "changes": diff,
                "why": reason or "Inventory edited",
                **({"gate_override": gate_override.strip(), "shortfalls": overridden} if overridden else {}),
            },
        )
    return agent


# --- Rollout gates ----------------------------------------------------------------------------

# Functions (agent, from_mode, to_mode) -> [why it falls short, ...], registered by the app
# that owns the evidence (evals) in its AppConfig.ready: agents cannot import it.
_promotion_checks: list = []


def register_promotion_check(check) -> None:
    if check not in _promotion_checks:
        _promotion_checks.append(check)


class PromotionRefused(Exception):
    def __init__(self, agent: Agent, from_mode: str, to_mode: str, shortfalls: list[str]):
        super().__init__("; ".join(shortfalls))
        self.agent, self.from_mode, self.to_mode, self.shortfalls = agent, from_mode, to_mode, shortfalls

    @property
    def messages(self) -> list[str]:
        moves = f"from {mode_name(self.from_mode)} to {mode_name(self.to_mode)}"
        return [f"{self.agent.name} may not move {moves} yet.", *self.shortfalls]


def mode_name(mode: str) -> str:
    """A rollout mode as a sentence names it: "act with approval", "scoped autonomy"."""
    return RolloutMode(mode).label.split(" (")[0].lower()


def is_promotion(from_mode: str, to_mode: str) -> bool:
    return ROLLOUT_ORDER.index(to_mode) > ROLLOUT_ORDER.index(from_mode)


def promotion_shortfalls(agent: Agent, from_mode: str, to_mode: str) -> list[str]:
    """Why moving ``agent`` from ``from_mode`` to ``to_mode`` is not earned yet (empty: it
    is, or it is not a move to more autonomy)."""
    if not is_promotion(from_mode, to_mode):
        return []
    return [why for check in _promotion_checks for why in check(agent, from_mode, to_mode)]


def _check_promotion(agent: Agent, from_mode: str, *, by: User, gate_override: str) -> list[str]:
    """Raise PromotionRefused unless the move is earned or overridden; the overridden
    shortfalls (empty when nothing was overridden)."""
    shortfalls = promotion_shortfalls(agent, from_mode, agent.rollout_mode)
    if not shortfalls:
        return []
    if gate_override.strip():
        if not by.is_superuser:
            raise PermissionDenied("Only a platform administrator may override a rollout gate.")
        return shortfalls
    raise PromotionRefused(agent, from_mode, agent.rollout_mode, shortfalls)


@transaction.atomic
def publish_prompt(*, agent: Agent, text: str, author: User, change_note: str = "") -> PromptVersion:
    """Publish ``text`` as the agent's next prompt version and make it current.

    Publishing the text the agent already runs is a no-op that returns the current version.
    """
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    require_tenant_permission(
        author, agent.tenant_id, "agents.add_promptversion", f"You may not edit prompts in {agent.tenant}."
    )
    if not text.strip():
        raise ValidationError({"text": "A prompt cannot be empty."})
    current = agent.current_prompt
    if current is not None and current.text == text:
        return current
    last_number = agent.prompt_versions.aggregate(last=Max("number"))["last"] or 0
    version = PromptVersion(agent=agent, number=last_number + 1, text=text, change_note=change_note, author=author)
    version.full_clean()
    version.save()
    agent.current_prompt = version
    save_with_history(agent, by=author, reason=f"Prompt v{version.number} published")
    _record_change(
        by=author,
        tenant=agent.tenant,
        agent=agent,
        what="agent.prompt_published",
        changes={"current_prompt": [current.number if current else None, version.number]},
        why=change_note or f"Prompt v{version.number} published",
    )
    return version


@transaction.atomic
def approve_prompt(*, version: PromptVersion, approver: User) -> PromptVersion:
    version = PromptVersion.objects.select_for_update().select_related("agent").get(pk=version.pk)
    require_tenant_permission(
        approver, version.agent.tenant_id, "agents.change_agent", "You may not approve prompts in this tenant."
    )
    if version.author_id == approver.pk:
        raise PermissionDenied("A prompt version cannot be approved by its own author.")
    if version.approved_by_id is not None:
        raise ValidationError(f"Version {version.number} was already approved by {version.approved_by}.")
    version.approved_by = approver
    version.approved_at = timezone.now()
    version._history_user = approver
    version.save()
    _record_change(
        by=approver,
        tenant=version.agent.tenant,
        agent=version.agent,
        what="agent.prompt_approved",
        changes={"approved_by": [None, approver.get_username()]},
        why=f"Prompt v{version.number} approved",
    )
    return version


# --- Suspension ---------------------------------------------------------------------------


def _change_status(*, agent: Agent, by: User, reason: str, new_status: str, allowed_from: tuple[str, ...]) -> Agent:
    if not reason or not reason.strip():
        raise ValidationError({"reason": "Say why: the reason is kept with the agent's history."})
    agent = Agent.objects.select_for_update().select_related("tenant").get(pk=agent.pk)
    require_tenant_permission(
        by, agent.tenant_id, "agents.suspend_agent", f"You may not suspend or resume agents in {agent.tenant}."
    )
    if agent.status not in allowed_from:
        raise ValidationError(
            {"status": f"{agent.name} is {agent.get_status_display().lower()}; cannot become {new_status} from there."}
        )
    old_status = agent.status
    agent.status = new_status
    agent.status_reason = reason.strip()
    agent.status_changed_at = timezone.now()
    agent.status_changed_by = by
    if new_status == AgentStatus.ACTIVE:
        # Activation re-checks the whole agent (an owner who has left the tenant blocks it);
        # stopping an agent must never be held up by anything else being wrong with it.
        agent.full_clean()
    save_with_history(agent, by=by, reason=f"{new_status}: {reason.strip()}")
    _record_change(
        by=by,
        tenant=agent.tenant,
        agent=agent,
        what="agent.status",
        changes={"status": [old_status, new_status]},
        why=reason.strip(),
        event_type=audit.EventType.AGENT_SUSPENDED if new_status == AgentStatus.SUSPENDED else None,
    )
    return agent


@transaction.atomic
def suspend_agent(*, agent: Agent, by: User, reason: str) -> Agent:
    """Stop one agent from starting new turns; other agents are untouched."""
    return _change_status(
        agent=agent, by=by, reason=reason, new_status=AgentStatus.SUSPENDED, allowed_from=(AgentStatus.ACTIVE,)
    )


@transaction.atomic
def resume_agent(*, agent: Agent, by: User, reason: str) -> Agent:
    return _change_status(
        agent=agent, by=by, reason=reason, new_status=AgentStatus.ACTIVE, allowed_from=(AgentStatus.SUSPENDED,)
    )


@transaction.atomic
def retire_agent(*, agent: Agent, by: User, reason: str) -> Agent:
    """Take an agent out of service for good (it stays in the inventory for the record)."""
    agent_row = Agent.objects.get(pk=agent.pk)
    require_tenant_permission(
        by, agent_row.tenant_id, "agents.change_agent", f"You may not retire agents in {agent_row.tenant}."
    )
    return _change_status(
        agent=agent,
        by=by,
        reason=reason,
        new_status=AgentStatus.RETIRED,
        allowed_from=(AgentStatus.ACTIVE, AgentStatus.SUSPENDED),
    )


# --- Kill switches -------------------------------------------------------------------------


def _kill_switch_permission(by: User, tenant: Tenant | None) -> None:
    if tenant is None:
        # The global switch stops every tenant's agents: a platform operator's call.
        if not by.is_superuser:
            raise PermissionDenied("Only a platform administrator may operate the global kill switch.")
    else:
        require_tenant_permission(
            by, tenant.pk, "agents.change_killswitch", f"You may not operate the kill switch of {tenant}."
        )


@transaction.atomic
def set_kill_switch(*, engaged: bool, by: User, reason: str, tenant: Tenant | None = None) -> KillSwitch:
    """Engage or release the global switch (tenant=None) or one tenant's switch."""
    _kill_switch_permission(by, tenant)
    if not reason or not reason.strip():
        raise ValidationError({"reason": "Say why: the reason is kept with the switch's history."})
    scope = KillSwitch.scope_for(tenant.pk if tenant else None)
    # One row per scope, created on first use; saved once so its history starts with who and why.
    switch = KillSwitch.objects.select_for_update().filter(scope=scope).first() or KillSwitch(tenant=tenant)
    was_engaged = bool(switch.pk and switch.engaged)
    switch.engaged = engaged
    switch.reason = reason.strip()
    switch.changed_by = by
    switch.changed_at = timezone.now()
    save_with_history(switch, by=by, reason=f"{'engaged' if engaged else 'released'}: {reason.strip()}")
    _record_change(
        by=by,
        tenant=tenant,
        what="kill_switch.tenant" if tenant else "kill_switch.global",
        changes={"engaged": [was_engaged, engaged]},
        why=reason.strip(),
    )
    return switch


# --- May it run? ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPermission:
    allowed: bool
    reason: str = ""
    # What the caller needs next about the agent (empty when it does not exist).
    tenant_id: int | None = None
    tenant_slug: str = ""
    tenant_name: str = ""
    rollout_mode: str = ""


def may_start_turn(agent_id: int) -> RunPermission:
    """Whether the agent may start a new turn (or run a tool) right now.

    Read fresh from the database at every turn (no cache), so a suspension or kill switch
    takes effect for the very next turn on every worker. Two primary-key/unique lookups:
    a single query with subqueries measured slower (bench/inventory.py), the ORM spending
    more compiling it than the database answering.
    """
    agent = (
        Agent.objects.filter(pk=agent_id)
        .order_by()  # one row by primary key: the default ordering would only add a sort
        .values("status", "tenant_id", "tenant__slug", "tenant__name", "name", "rollout_mode")
        .first()
    )
    if agent is None:
        return run_permission(None)
    engaged = dict(
        KillSwitch.objects.filter(
            scope__in=[KillSwitch.GLOBAL_SCOPE, KillSwitch.scope_for(agent["tenant_id"])], engaged=True
        ).values_list("scope", "reason")
    )
    return run_permission(
        agent,
        global_kill=engaged.get(KillSwitch.GLOBAL_SCOPE),
        tenant_kill=next((reason for scope, reason in engaged.items() if scope != KillSwitch.GLOBAL_SCOPE), None),
    )


def run_permission(
    agent: dict | None, *, global_kill: str | None = None, tenant_kill: str | None = None
) -> RunPermission:
    """The rule of ``may_start_turn``, for callers that read the agent (status, tenant_id,
    tenant__slug, tenant__name, name, rollout_mode) and the engaged kill switches' reasons
    (None: not engaged) along with what else they need: the tool gateway, in one read."""
    if agent is None:
        return RunPermission(False, "This agent does not exist.")
    facts = {
        "tenant_id": agent["tenant_id"],
        "tenant_slug": agent["tenant__slug"],
        "tenant_name": agent["tenant__name"],
        "rollout_mode": agent["rollout_mode"],
    }
    if global_kill is not None:
        return RunPermission(False, f"The global kill switch is engaged: {global_kill}", **facts)
    if tenant_kill is not None:
        return RunPermission(False, f"This tenant's kill switch is engaged: {tenant_kill}", **facts)
    if agent["status"] != AgentStatus.ACTIVE:
        return RunPermission(False, f"{agent['name']} is {agent['status']}.", **facts)
    return RunPermission(True, **facts)
