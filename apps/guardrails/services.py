"""Guardrails: edit and activate policy versions, check input before any cost, redact
output, count kills into lockouts, and rate-limit people and tools.

``check_input`` runs first in every turn: before retrieval, the model or any tool. It is
pure CPU plus two indexed queries (active policies, lockouts), so a refused message costs
nothing else.
"""

import difflib
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from apps import audit
from apps.accounts.governance import record_change, save_with_history
from apps.accounts.models import Tenant, User
from apps.accounts.permissions import has_tenant_permission
from apps.agents.models import Agent

from . import counters, detectors
from .models import GuardrailPolicy, KillVerdict, Lockout, scope_key
from .policy import ACTIONS, CompiledPolicy, PolicyError, compile_layers, validate

GENERIC_REFUSAL = "Sorry, I can't help with that request. A member of our team can help you instead."
LOCKED_OUT_REFUSAL = "Sorry, this conversation is paused for now. Please contact support."
_SEVERITY = {action: rank for rank, action in enumerate(reversed(ACTIONS))}  # allow 0 ... kill 3


@dataclass(frozen=True)
class GuardContext:
    """Who and what a check is for. The runtime builds one per turn."""

    tenant_id: int
    agent_id: int | None = None
    user_id: int | None = None  # the acting user (or the channel integration's service user)
    subject: str = ""  # the customer the turn is for, if any
    channel: str = ""
    conversation_id: str | None = None
    turn_id: str | None = None
    evaluation: bool = False  # an evaluation run: checked like any turn, but never counted against anyone


@dataclass
class Verdict:
    action: str  # allow | flag | refuse | kill
    rules: list[str] = field(default_factory=list)  # rule ids and detector names that fired, never the text
    kinds: list[str] = field(default_factory=list)  # PII kinds found
    message: str = ""  # what to tell the person when the turn stops
    locked_out: bool = False

    @property
    def stops_turn(self) -> bool:
        return self.action in ("kill", "refuse")


@dataclass
class OutputVerdict:
    text: str
    redacted: list[str]


# --- Policy versions ---------------------------------------------------------------------------


def _require_policy_permission(by: User, tenant: Tenant | None, permission: str) -> None:
    if tenant is None:
        if not by.is_superuser:
            raise PermissionDenied("Only a platform administrator may change the global guardrail policy.")
    elif not has_tenant_permission(by, tenant.pk, permission):
        raise PermissionDenied(f"You may not change guardrail policies of {tenant}.")


@transaction.atomic
def save_policy(
    *, document: str, by: User, tenant: Tenant | None = None, agent: Agent | None = None, change_note: str = ""
) -> GuardrailPolicy:
    """Validate ``document`` and save it as the scope's next version (not active yet).
    An invalid document raises ValidationError naming the line and the reason, and nothing
    is saved: the active version stays active."""
    if agent is not None:
        tenant = agent.tenant
    _require_policy_permission(by, tenant, "guardrails.add_guardrailpolicy")
    try:
        validate(document, complete=False)
        compile_layers((("candidate", document),))  # the merged result must be valid too
    except PolicyError as error:
        raise ValidationError({"document": str(error)}) from None
    scope = scope_key(tenant.pk if tenant else None, agent.pk if agent else None)
    last = GuardrailPolicy.objects.select_for_update().filter(scope=scope).aggregate(last=Max("version"))["last"]
    policy = GuardrailPolicy(
        tenant=tenant, agent=agent, version=(last or 0) + 1, document=document, change_note=change_note, created_by=by
    )
    policy.full_clean(exclude=["version", "scope"])
    policy._history_user = by
    policy.save()
    return policy


def diff_documents(old: str, new: str, old_label: str, new_label: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=old_label, tofile=new_label
        )
    )


@transaction.atomic
def activate_policy(*, policy: GuardrailPolicy, by: User, reason: str = "") -> GuardrailPolicy:
    """Make ``policy`` its scope's active version (an earlier one: a rollback). Recorded in
    the history and, with the diff from the version it replaces, in the audit trail."""
    policy = GuardrailPolicy.objects.select_for_update(of=("self",)).select_related("tenant", "agent").get(pk=policy.pk)
    _require_policy_permission(by, policy.tenant, "guardrails.change_guardrailpolicy")
    if policy.is_active:
        raise ValidationError(f"{policy} is already active.")
    previous = GuardrailPolicy.objects.select_for_update().filter(scope=policy.scope, is_active=True).first()
    if previous is not None:
        previous.is_active = False
        save_with_history(previous, by=by, reason=f"replaced by v{policy.version}")
    policy.is_active = True
    policy.activated_by = by
    policy.activated_at = timezone.now()
    save_with_history(policy, by=by, reason=reason or f"v{policy.version} activated")
    old_label = f"{policy.scope} v{previous.version}" if previous else "shipped default"
    old_text = previous.document if previous else ""
    record_change(
        by=by,
        tenant=policy.tenant,
        agent=policy.agent,
        what="guardrails.policy_activated",
        payload={
            "changes": {"active_version": [previous.version if previous else None, policy.version]},
            "scope": policy.scope,
            "why": reason,
            "diff": diff_documents(old_text, policy.document, old_label, f"{policy.scope} v{policy.version}"),
        },
    )
    return policy


def effective_policy(tenant_id: int | None, agent_id: int | None = None) -> CompiledPolicy:
    """The policy in force for a tenant (and agent): the shipped default under the active
    global, tenant and agent versions. One query; compiled policies are cached by content."""
    scopes = policy_scopes(tenant_id, agent_id)
    active = dict(GuardrailPolicy.objects.filter(scope__in=scopes, is_active=True).values_list("scope", "document"))
    return effective_policy_of((scope, active.get(scope)) for scope in scopes)


def policy_scopes(tenant_id: int | None, agent_id: int | None = None) -> list[str]:
    """The scopes whose active versions make a tenant's (and agent's) policy, in order."""
    scopes = ["global"]
    if tenant_id is not None:
        scopes.append(scope_key(tenant_id, None))
    if agent_id is not None:
        scopes.append(scope_key(tenant_id, agent_id))
    return scopes


def effective_policy_of(active_documents) -> CompiledPolicy:
    """``effective_policy`` for callers that read the active versions' documents along with
    what else they need (the tool gateway, in its one read): ``(scope, document)`` pairs in
    the order of ``policy_scopes``, the document None where a scope has no active version."""
    return compile_layers(tuple((scope, document) for scope, document in active_documents if document is not None))


# --- Checks -----------------------------------------------------------------------------------------


def _worst(actions) -> str:
    return max(actions, key=_SEVERITY.__getitem__, default="allow")


def _locked_out(context: GuardContext, now) -> Lockout | None:
    who = Q()
    if context.user_id is not None:
        who |= Q(user_id=context.user_id)
    if context.subject:
        who |= Q(subject=context.subject)
    if not who:
        return None
    return Lockout.objects.in_force(now).filter(who, tenant_id=context.tenant_id).order_by("-expires_at").first()


def _rate_limited(context: GuardContext, policy: CompiledPolicy, now) -> bool:
    limit = policy.rate_limits["per_user_per_minute"]
    if not limit or context.user_id is None:
        return False
    key = f"guardrails:rate:{context.tenant_id}:{context.user_id}:{now:%Y%m%d%H%M}"
    return counters.increment([(key, 120)])[0] > limit


def check_input(text: str, context: GuardContext) -> Verdict:
    """Decide on an incoming message before anything else runs.

    kill: the turn ends with a generic refusal, the kill counts towards the lockout rule;
    refuse: the turn ends with a generic refusal; flag: the turn goes on, marked;
    allow. Every verdict but allow is audited with the rules that fired (never the text).
    """
    now = timezone.now()
    lockout = None if context.evaluation else _locked_out(context, now)
    if lockout is not None:
        verdict = Verdict("kill", ["locked_out"], message=LOCKED_OUT_REFUSAL, locked_out=True)
        _audit_verdict(context, verdict)
        return verdict
    policy = effective_policy(context.tenant_id, context.agent_id)
    if not context.evaluation and _rate_limited(context, policy, now):
        verdict = Verdict("refuse", ["rate_limit.per_user_per_minute"], message=GENERIC_REFUSAL)
        _audit_verdict(context, verdict)
        return verdict
    if len(text) > policy.max_chars:
        verdict = Verdict("refuse", ["input.max_chars"], message=GENERIC_REFUSAL)
        _audit_verdict(context, verdict)
        return verdict
    actions, rules, kinds = [], [], []
    by_id = {rule.id: rule for rule in policy.injection_rules}
    for finding in detectors.find_injections(text, policy.injection_rules):
        rules.append(finding.rule)
        actions.append(by_id[finding.rule].action)
    pii_actions = {kind: action for kind, action in policy.pii_actions.items() if action != "allow"}
    if pii_actions:
        for finding in detectors.find_pii(text, tuple(pii_actions)):
            if finding.kind not in kinds:
                kinds.append(finding.kind)
                rules.append(f"pii.{finding.kind}")
                actions.append(pii_actions[finding.kind])
    action = _worst(actions)
    verdict = Verdict(action, rules, sorted(kinds), message=GENERIC_REFUSAL if action in ("kill", "refuse") else "")
    if action == "kill" and not context.evaluation:
        _count_kill(context, verdict, policy, now)
    if action != "allow":
        _audit_verdict(context, verdict)
    return verdict


def _count_kill(context: GuardContext, verdict: Verdict, policy: CompiledPolicy, now) -> None:
    """Record the kill; at the policy's count within its window, lock the user (and the
    subject, if any) out for the policy's minutes."""
    rule = policy.lockout
    with transaction.atomic():
        KillVerdict.objects.create(
            tenant_id=context.tenant_id,
            user_id=context.user_id,
            subject=context.subject,
            rule=verdict.rules[0],
            created_at=now,
        )
        since = now - timedelta(minutes=rule["window_minutes"])
        recent = KillVerdict.objects.filter(tenant_id=context.tenant_id, created_at__gte=since)
        for who in (
            {"user_id": context.user_id} if context.user_id else None,
            {"subject": context.subject} if context.subject else None,
        ):
            if who is None or recent.filter(**who).count() < rule["kills"]:
                continue
            if Lockout.objects.in_force(now).filter(tenant_id=context.tenant_id, **who).exists():
                continue
            lockout = Lockout(
                tenant_id=context.tenant_id,
                reason=f"{rule['kills']} kill verdicts within {rule['window_minutes']} minutes",
                created_at=now,
                expires_at=now + timedelta(minutes=rule["lockout_minutes"]),
                **who,
            )
            lockout.save()
            _audit_turn_event(
                context,
                "guardrail.lockout",
                decision="locked_out",
                reason="lockout.kills",
                payload={"lockout_id": lockout.pk, "subject": context.subject or None, "until": lockout.expires_at},
            )


def _audit_turn_event(context: GuardContext, event_type: str, **fields) -> None:
    """An audit event about the turn ``context`` describes."""
    audit.record(
        event_type,
        tenant=context.tenant_id,
        actor=context.user_id,
        agent=context.agent_id,
        conversation_id=context.conversation_id,
        turn_id=context.turn_id,
        **fields,
    )


def _audit_verdict(context: GuardContext, verdict: Verdict) -> None:
    _audit_turn_event(
        context,
        audit.EventType.GUARDRAIL_VERDICT,
        decision=verdict.action,
        reason=verdict.rules[0][:100] if verdict.rules else "",
        guardrail_verdict={"action": verdict.action, "rules": verdict.rules, "kinds": verdict.kinds},
        payload={"channel": context.channel} if context.channel else None,
    )


def check_output(text: str, context: GuardContext, *, allowed_kinds: tuple[str, ...] = ()) -> OutputVerdict:
    """Redact from ``text`` the PII kinds the policy redacts (except ``allowed_kinds``, what
    this subject may see, e.g. their own e-mail) before anything leaves the system; audit
    what kinds were redacted."""
    policy = effective_policy(context.tenant_id, context.agent_id)
    kinds = tuple(kind for kind in policy.output_redact if kind not in allowed_kinds)
    if not kinds:
        return OutputVerdict(text, [])
    redacted_text, redacted = detectors.redact(text, kinds)
    if redacted:
        _audit_turn_event(
            context,
            "guardrail.output_redacted",
            decision="redact",
            payload={"kinds": redacted},
        )
    return OutputVerdict(redacted_text, redacted)


def check_tool_scope(tool_names, allowed_tools, context: GuardContext) -> list[str]:
    """The tools a model's output asks for that are outside ``allowed_tools`` (the agent's
    allowlist for this turn), when the policy's ``output.tool_scope_check`` is on. The
    runtime drops them (the gateway would refuse them anyway) and this is audited, since a
    model asking for tools it was never offered is a sign of injected instructions."""
    policy = effective_policy(context.tenant_id, context.agent_id)
    if not policy.data["output"]["tool_scope_check"]:
        return []
    allowed = set(allowed_tools)
    outside = sorted({name for name in tool_names if name not in allowed})
    if outside:
        _audit_turn_event(
            context,
            audit.EventType.GUARDRAIL_VERDICT,
            decision="refuse",
            reason="output.tool_scope",
            guardrail_verdict={"action": "refuse", "rules": ["output.tool_scope"], "tools": outside},
        )
    return outside


def tool_day_window(context: GuardContext, tool_name: str, policy: CompiledPolicy) -> tuple[str, int, int] | None:
    """(counter key, its time to live, limit) of the acting user's calls of ``tool_name``
    today under ``policy``; None when nothing limits them. The tool gateway counts this
    window together with its own limits (``counters.increment``)."""
    if context.user_id is None:
        return None
    limits = policy.rate_limits["per_tool_per_user_per_day"]
    limit = limits.get(tool_name, limits["default"])
    if not limit:
        return None
    key = f"guardrails:tool:{context.tenant_id}:{context.user_id}:{tool_name}:{timezone.now():%Y%m%d}"
    return key, 26 * 3600, limit


# --- Lockouts ------------------------------------------------------------------------------------


@transaction.atomic
def lift_lockout(*, lockout: Lockout, by: User, reason: str) -> Lockout:
    if not reason or not reason.strip():
        raise ValidationError({"lift_reason": "Say why the lockout is lifted early."})
    lockout = Lockout.objects.select_for_update().select_related("tenant").get(pk=lockout.pk)
    if not has_tenant_permission(by, lockout.tenant_id, "guardrails.change_lockout"):
        raise PermissionDenied(f"You may not lift lockouts in {lockout.tenant}.")
    if not lockout.in_force:
        raise ValidationError("This lockout is no longer in force.")
    lockout.lifted_at = timezone.now()
    lockout.lifted_by = by
    lockout.lift_reason = reason.strip()
    lockout._history_user = by
    lockout.save()
    record_change(
        by=by,
        tenant=lockout.tenant,
        what="guardrails.lockout_lifted",
        payload={
            "lockout_id": lockout.pk,
            "subject": lockout.subject or None,
            "user_id": lockout.user_id,
            "why": reason,
        },
    )
    return lockout
