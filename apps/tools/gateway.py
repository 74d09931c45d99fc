"""The tool gateway: the only code path that executes a tool.

``invoke(context, tool_name, arguments)`` decides, limits, records and (when allowed) runs
one call, in this order:

1. the agent may run (active, no kill switch) and belongs to the turn's tenant;
2. the tool exists in that tenant, is active, its connection is not revoked;
3. the arguments satisfy the tool's schema, any argument naming a tenant names this one,
   any naming a customer names the turn's (when it has one), and they carry no personal
   data the guardrail policy keeps from tools (``tools.arguments``: card numbers, SSNs,
   IBANs and secrets by default);
4. the tool is on the agent's allowlist;
5. the acting user's roles in the tenant hold grants for it: among the grants whose
   conditions hold (amount, verified subject, channel, daily limit) the strictest effect
   wins; none holding means denied;
6. high and critical tools need approval whatever the grant says;
7. the agent's rollout mode can only make that stricter: shadow records the proposal and
   never executes, suggest returns it to a human, assist executes reversible tools only,
   approval needs a human for every write, autonomous executes what the grants allow;
8. rate limits (per tool and per user, minute and day, in the cache);
9. the call is recorded under its idempotency key (a repeat finds the first call and is
   never executed again) and audited as requested, with the decision and why;
10. then denied, proposed, suggested, handed to the approvals app, or executed by its
    connector; an execution is audited as executed or failed, with its latency.

Arguments and results are redacted of secrets and PII in every record; connection
secrets never leave the connector. ``execute_approved`` runs an approved call later, after
deciding again: what changed since (a revoked grant, a suspended agent, a move to shadow)
voids the approval instead.
"""

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from jsonschema import Draft202012Validator

from apps import audit
from apps.agents.choices import RolloutMode
from apps.approvals import services as approvals
from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalRequest
from apps.audit.canonical import canonical_json
from apps.audit.redaction import redact
from apps.guardrails import counters
from apps.guardrails.policy import CompiledPolicy
from apps.guardrails.services import GuardContext, effective_policy_of, tool_day_window

from . import connectors, facts
from .choices import EFFECT_ORDER, TIERS_NEEDING_APPROVAL, ConnectionStatus, Effect, Outcome
from .models import Grant, Tool, ToolCall

GRANT_USE_PRECISION = timedelta(minutes=5)  # how stale Grant.last_used_at may get before a write


@dataclass(frozen=True)
class TurnContext:
    """Who a call is for. The runtime builds one per turn: the acting user is always the
    authenticated person (or a channel integration's own user acting for a customer)."""

    tenant_id: int
    agent_id: int
    user_id: int
    channel: str = ""
    subject: str = ""  # the customer, if any
    subject_verified: bool = False
    conversation_id: str = ""
    turn_id: str = ""
    audience: str = "customer"
    region: str = ""
    segment: str = ""
    product: str = ""
    brand: str = ""
    evaluation: bool = False  # evaluation runs: decide and record, never execute

    def guard_context(self) -> GuardContext:
        return GuardContext(
            tenant_id=self.tenant_id,
            agent_id=self.agent_id,
            user_id=self.user_id,
            subject=self.subject,
            channel=self.channel,
            conversation_id=self.conversation_id or None,
            turn_id=self.turn_id or None,
            evaluation=self.evaluation,
        )

    def scope(self) -> dict:
        """What is kept with a call to rebuild this context when an approved call runs."""
        return {
            name: getattr(self, name)
            for name in ("audience", "region", "segment", "product", "brand")
            if getattr(self, name) != TurnContext.__dataclass_fields__[name].default
        }


@dataclass
class ToolResult:
    """What the gateway answers: the outcome, why, and the result when it ran."""

    call_id: uuid.UUID | None
    tool: str
    outcome: str
    reason_code: str = ""
    message: str = ""
    data: dict | None = None
    approval_request_id: int | None = None
    replayed: bool = False
    latency_ms: float | None = None

    @property
    def executed(self) -> bool:
        return self.outcome == Outcome.EXECUTED

    def for_model(self) -> dict:
        """The tool message the model sees: never a secret, never a stack trace."""
        answer = {"status": self.outcome, "message": self.message}
        if self.data is not None:
            answer["result"] = self.data
        if self.approval_request_id:
            answer["approval_request_id"] = self.approval_request_id
        return answer


@dataclass
class Decision:
    outcome: str
    reason_code: str
    reason: str
    effect: str = ""
    rule: str = ""  # for approvals: the rule that required one
    grant_ids: list[int] = field(default_factory=list)
    stale_grant_ids: list[int] = field(default_factory=list)  # last_used_at due for a refresh
    reserved: list[str] = field(default_factory=list)  # limit counters this call counted in
    roles: tuple[str, ...] = ()

    @property
    def proceeds(self) -> bool:
        return self.outcome in (Outcome.EXECUTING, Outcome.NEEDS_APPROVAL)


def _deny(code: str, reason: str, **fields) -> Decision:
    return Decision(Outcome.DENIED, code, reason, **fields)


# --- Checks ---------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Draft202012Validator:
    """One compiled validator per schema, keyed by its canonical text."""
    return Draft202012Validator(json.loads(schema_json))


def _describe(error) -> str:
    """A schema error in words that name the argument and the rule, never the value
    (which may be personal data)."""
    where = ".".join(str(part) for part in error.absolute_path) or "arguments"
    rule = error.validator
    if rule in ("required", "additionalProperties"):
        return error.message
    if rule == "type":
        return f"{where} must be of type {error.validator_value}"
    if rule == "enum":
        return f"{where} must be one of {', '.join(map(str, error.validator_value))}"
    return f"{where} does not satisfy {rule} {error.validator_value}"


def schema_errors(tool: Tool, arguments: dict) -> list[str]:
    schemas = [tool.argument_schema]
    builtin_schema = connectors.builtin_schema(tool.builtin) if tool.builtin else None
    if builtin_schema is not None:
        schemas.append(builtin_schema)
    errors = []
    for schema in schemas:
        errors.extend(_describe(error) for error in _validator(canonical_json(schema)).iter_errors(arguments))
    return sorted(set(errors))


def _names_a_tenant(key) -> bool:
    """``tenant``, ``tenant_id``, ``tenantId``, ``TENANT-NAME``, ...: any key that starts
    with "tenant" once case and separators are set aside."""
    return isinstance(key, str) and "".join(filter(str.isalpha, key)).lower().startswith("tenant")


def _named(value, names_one):
    """Every plain value, at any depth, under a key for which ``names_one(key)`` holds."""
    if isinstance(value, dict):
        for key, item in value.items():
            if names_one(key) and not isinstance(item, dict | list):
                yield item
            yield from _named(item, names_one)
    elif isinstance(value, list):
        for item in value:
            yield from _named(item, names_one)


def foreign_tenant(arguments: dict, run) -> bool:
    """Whether an argument names a tenant other than the turn's (by id, slug or name)."""
    own = {str(run.tenant_id), run.tenant_slug.lower(), run.tenant_name.strip().lower()}
    return any(str(named).strip().lower() not in own for named in _named(arguments, _names_a_tenant))


# Keys naming the customer a call acts for, once case and separators are set aside:
# customer_id, customerId, customer-number, ... (a customer_email or an e-mail's subject is not one).
_CUSTOMER_KEYS = frozenset(
    {"customer", "customerid", "customerno", "customernumber", "customerref", "customerreference"}
)


def _names_a_customer(key) -> bool:
    return isinstance(key, str) and "".join(filter(str.isalpha, key)).lower() in _CUSTOMER_KEYS


def foreign_customer(arguments: dict, context: TurnContext) -> bool:
    """Whether an argument names a customer other than the turn's. A turn with no customer
    (a person using an agent for their own work) may name any: their grants decide."""
    if not context.subject:
        return False
    own = context.subject.strip().lower()
    return any(str(named).strip().lower() != own for named in _named(arguments, _names_a_customer))


PERSONAL_DATA_NAMES = {
    "card": "a payment card number",
    "ssn": "a social security number",
    "iban": "a bank account number (IBAN)",
    "email": "an e-mail address",
    "phone": "a phone number",
    "secret": "a password, key or other secret",
}


def _refused_personal_data(tool: Tool, kinds, policy: CompiledPolicy) -> Decision | None:
    refused = sorted(policy.refused_in_arguments(tool.name) & set(kinds))
    if not refused:
        return None
    what = " and ".join(PERSONAL_DATA_NAMES[kind] for kind in refused)
    return _deny(
        "personal_data_refused",
        f"The arguments carry {what}, which the guardrail policy keeps out of {tool.name}; nothing was sent.",
    )


def _amount(tool: Tool, arguments: dict) -> Decimal | None:
    value = tool.amount_in(arguments)
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


DAY_WINDOW_TTL = 26 * 3600  # a day's counter outlives its day, whatever the time zone
MINUTE_WINDOW_TTL = 120


def _day_key(grant_id: int, user_id: int) -> str:
    return f"tools:grant-day:{grant_id}:{user_id}:{timezone.now():%Y%m%d}"


def _strictest(effects) -> str:
    return max(effects, key=EFFECT_ORDER.index)


def _condition_failure(grant: dict, tool: Tool, context: TurnContext, amount: Decimal | None) -> str:
    """Why ``grant``'s conditions do not hold for this call ('' when they hold)."""
    if grant["max_amount"] is not None:
        if amount is None:
            return f"{grant['role__name']} may use {tool.name} only with an amount of at most {grant['max_amount']}"
        if amount > grant["max_amount"]:
            return f"{grant['role__name']} may use {tool.name} up to {grant['max_amount']}, not {amount}"
    if grant["requires_verified_subject"] and not context.subject_verified:
        return f"{grant['role__name']} may use {tool.name} only once the customer's identity is verified"
    if grant["allowed_channels"] and context.channel not in grant["allowed_channels"]:
        channels = ", ".join(grant["allowed_channels"])
        return f"{grant['role__name']} may use {tool.name} only on {channels}, not {context.channel or 'this channel'}"
    return ""


def _grant_decision(context: TurnContext, tool: Tool, arguments: dict, found: facts.Facts) -> Decision:
    """The strictest effect among the grants whose conditions hold, before daily limits
    (``_count_limits`` applies those, with the rate limits, in one round trip)."""
    role_kinds = tuple(sorted({kind for _id, kind, _name in found.roles}))
    if not found.grants:
        names = ", ".join(sorted({name for _id, _kind, name in found.roles}))
        return _deny("not_granted", f"None of your roles ({names}) is granted {tool.name}.", roles=role_kinds)
    amount = _amount(tool, arguments)
    holding, failures = [], []
    for grant in found.grants:
        failure = _condition_failure(grant, tool, context, amount)
        if failure:
            failures.append(failure)
        else:
            holding.append(grant)
    decision = _deny("condition_failed", "; ".join(failures) + ".", roles=role_kinds)
    decision.failures, decision.holding = failures, holding
    return decision if not holding else _effect_of(decision, tool, holding)


def _effect_of(decision: Decision, tool: Tool, holding: list[dict]) -> Decision:
    """``decision`` for the strictest effect among the ``holding`` grants."""
    effect = _strictest(grant["effect"] for grant in holding)
    applied = [grant for grant in holding if grant["effect"] == effect]
    fresh_after = timezone.now() - GRANT_USE_PRECISION
    decision.outcome, decision.reason_code, decision.effect, decision.rule = Outcome.EXECUTING, "granted", effect, ""
    decision.reason = "Granted to " + ", ".join(sorted(grant["role__name"] for grant in applied)) + "."
    decision.grant_ids = sorted(grant["pk"] for grant in applied)
    decision.stale_grant_ids = [
        grant["pk"] for grant in applied if grant["last_used_at"] is None or grant["last_used_at"] < fresh_after
    ]
    decision.holding = holding
    if effect == Effect.DENY:
        decision.outcome, decision.reason_code, decision.effect = Outcome.DENIED, "denied_by_grant", ""
        decision.reason = f"{tool.name} is denied to {applied[0]['role__name']}."
        decision.grant_ids = decision.stale_grant_ids = []
    elif effect == Effect.REQUIRE_APPROVAL:
        decision.outcome, decision.rule = Outcome.NEEDS_APPROVAL, "grant"
        decision.reason = f"The grant to {applied[0]['role__name']} requires a human's approval."
    return decision


def _apply_tier(decision: Decision, tool: Tool) -> None:
    if decision.outcome == Outcome.EXECUTING and tool.risk_tier in TIERS_NEEDING_APPROVAL:
        decision.outcome, decision.rule = Outcome.NEEDS_APPROVAL, "risk_tier"
        decision.reason = f"{tool.name} is {tool.risk_tier} risk: a human approves every call."


def _apply_mode(decision: Decision, tool: Tool, mode: str, context: TurnContext) -> None:
    """The rollout mode (and evaluation) can only make the decision stricter."""
    would = "execute" if decision.outcome == Outcome.EXECUTING else "wait for approval"
    if context.evaluation:
        # What it would have done is the result an evaluation scores: keep it in the code.
        code = "evaluation" if decision.outcome == Outcome.EXECUTING else "evaluation_approval"
        decision.outcome, decision.reason_code = Outcome.PROPOSED, code
        decision.reason = f"Evaluation run: recorded, never executed (it would {would})."
    elif mode == RolloutMode.SHADOW:
        decision.outcome, decision.reason_code = Outcome.PROPOSED, "shadow"
        decision.reason = f"Shadow mode: the proposal is recorded and never executed (it would {would})."
    elif mode == RolloutMode.SUGGEST:
        decision.outcome, decision.reason_code = Outcome.SUGGESTED, "suggest"
        decision.reason = f"Suggest mode: proposed to a human, who acts (it would {would})."
    elif mode == RolloutMode.ASSIST and not tool.reversible:
        decision.outcome, decision.reason_code = Outcome.SUGGESTED, "assist_irreversible"
        decision.reason = f"Assist mode executes only reversible tools; {tool.name} cannot be undone."
    elif mode == RolloutMode.APPROVAL and tool.writes and decision.outcome == Outcome.EXECUTING:
        decision.outcome, decision.rule = Outcome.NEEDS_APPROVAL, "rollout_mode"
        decision.reason = "Act-with-approval mode: a human approves every write."
    elif mode not in RolloutMode.values:
        decision.outcome, decision.reason_code = Outcome.DENIED, "unknown_rollout_mode"
        decision.reason = f"Unknown rollout mode {mode!r}."


def _limit_windows(tool: Tool, context: TurnContext, policy) -> list[tuple[str, int, int, str]]:
    """The rate-limit windows this call counts in: (key, ttl, limit, what it limits)."""
    minute = f"{timezone.now():%Y%m%d%H%M}"
    windows = []
    if tool.per_user_per_minute:
        key, limit = f"tools:rate:{tool.pk}:u{context.user_id}:{minute}", tool.per_user_per_minute
        windows.append((key, MINUTE_WINDOW_TTL, limit, f"{tool.name} is limited to {limit} calls a minute per person."))
    if tool.per_minute:
        key, limit = f"tools:rate:{tool.pk}:{minute}", tool.per_minute
        why = f"{tool.name} is limited to {limit} calls a minute across all agents."
        windows.append((key, MINUTE_WINDOW_TTL, limit, why))
    guarded = tool_day_window(context.guard_context(), tool.name, policy)
    if guarded is not None:
        windows.append((*guarded, f"The daily limit for {tool.name} per person (guardrail policy) is reached."))
    return windows


def _may_proceed(tool: Tool, mode: str, context: TurnContext) -> bool:
    """Whether the rollout mode lets a granted call execute or go to a human at all."""
    if context.evaluation:
        return False
    return mode in (RolloutMode.APPROVAL, RolloutMode.AUTONOMOUS) or (mode == RolloutMode.ASSIST and tool.reversible)


def _count_limits(decision: Decision, tool: Tool, context: TurnContext, policy: CompiledPolicy, mode: str) -> Decision:
    """Count the call in the daily windows of its holding grants and, when it may proceed,
    in the rate-limit windows, all in one round trip; a grant over its daily limit stops
    holding (another may still hold). A call that is then refused, or does not proceed,
    gives back every count it took."""
    daily = [
        (grant, _day_key(grant["pk"], context.user_id))
        for grant in decision.holding
        if grant["daily_limit_per_user"] and grant["effect"] != Effect.DENY
    ]
    windows = []
    if _may_proceed(tool, mode, context):
        windows = _limit_windows(tool, context, policy)
    if not daily and not windows:
        return decision
    counted = [key for _grant, key in daily] + [key for key, *_ in windows]
    values = counters.increment(
        [(key, DAY_WINDOW_TTL) for _grant, key in daily] + [(key, ttl) for key, ttl, *_ in windows]
    )
    over = [grant for (grant, _key), value in zip(daily, values, strict=False) if value > grant["daily_limit_per_user"]]
    if over:
        failures = list(decision.failures) + [
            f"{grant['role__name']} may use {tool.name} {grant['daily_limit_per_user']} times a day" for grant in over
        ]
        holding = [grant for grant in decision.holding if grant not in over]
        if not holding:
            counters.decrement(counted)
            return _deny("condition_failed", "; ".join(failures) + ".", roles=decision.roles)
        decision = _effect_of(decision, tool, holding)
        decision.failures = failures
    # Only the grants that decide use up a call of their day: the others give theirs back.
    unused = [key for grant, key in daily if grant["pk"] not in decision.grant_ids]
    if unused:
        counters.decrement(unused)
    decision.reserved = [key for key in counted if key not in unused]
    window_values = zip(windows, values[len(daily) :], strict=True)
    decision.exceeded = next((why for (_key, _ttl, limit, why), value in window_values if value > limit), "")
    return decision


def authorize(
    context: TurnContext, found: facts.Facts, tool_name: str, arguments, *, approved=False, argument_kinds=None
) -> Decision:
    """Steps 1-8 of the module docstring, on what ``facts.read`` found. ``approved``: a
    human approved the call, so "needs approval" now means "executes", and the limits were
    counted when it was asked. ``argument_kinds``: the personal data the arguments' redaction
    found, when the caller has redacted them already (found here otherwise)."""
    run, tool = found.run, found.tool
    if not run.allowed:
        return _deny("agent_not_running", run.reason)
    if run.tenant_id != context.tenant_id:
        return _deny("cross_tenant", "The agent does not belong to this turn's tenant.")
    if tool is None:
        return _deny("unknown_tool", f"There is no tool called {tool_name} in this tenant.")
    if not tool.is_active:
        return _deny("tool_disabled", f"{tool.name} is disabled.")
    if tool.connection_id and tool.connection.status != ConnectionStatus.ACTIVE:
        return _deny("connection_revoked", f"The connection to {tool.connection.system} is revoked.")
    if not isinstance(arguments, dict):
        return _deny("invalid_arguments", "Arguments must be a JSON object.")
    problems = schema_errors(tool, arguments)
    if problems:  # paths can hold keys the model made up: redacted like any argument
        return _deny("invalid_arguments", redact("Invalid arguments: " + "; ".join(problems) + ".")[0])
    if audit.storable(arguments) != arguments:
        return _deny(
            "invalid_arguments",
            "The arguments hold what cannot be recorded (a NUL, an unpaired surrogate or NaN); nothing was sent.",
        )
    if foreign_tenant(arguments, run):
        return _deny("cross_tenant", "An argument names another tenant; calls stay inside the turn's tenant.")
    if foreign_customer(arguments, context):
        return _deny(
            "cross_customer", "An argument names another customer; calls act for the conversation's customer only."
        )
    policy = effective_policy_of(found.policy_documents)  # the guardrail policy of this agent, as of now
    refusal = _refused_personal_data(tool, redact(arguments)[1] if argument_kinds is None else argument_kinds, policy)
    if refusal is not None:
        return refusal
    if not tool.on_allowlist:
        return _deny("not_on_allowlist", f"{tool.name} is not on this agent's tool allowlist.")
    if not found.roles:
        return _deny("no_role", "The acting user holds no role in this tenant.")
    decision = _grant_decision(context, tool, arguments, found)
    if decision.outcome == Outcome.DENIED:
        return decision
    if not approved:
        decision = _count_limits(decision, tool, context, policy, run.rollout_mode)
        if decision.outcome == Outcome.DENIED:
            return decision
    _apply_tier(decision, tool)
    _apply_mode(decision, tool, run.rollout_mode, context)
    if approved:
        if decision.outcome == Outcome.NEEDS_APPROVAL:
            decision.outcome = Outcome.EXECUTING
        return decision
    if not decision.proceeds:
        counters.decrement(decision.reserved)
        decision.reserved = []
        return decision
    if decision.exceeded:
        counters.decrement(decision.reserved)
        return _deny("rate_limited", decision.exceeded, effect=decision.effect, roles=decision.roles)
    return decision


# --- Records -------------------------------------------------------------------------------


def action_digest(tool_name: str, arguments, tenant_id: int, subject: str) -> str:
    """What an approval is bound to: the exact tool, arguments, tenant and subject."""
    body = canonical_json({"tool": tool_name, "arguments": arguments, "tenant": tenant_id, "subject": subject})
    return hashlib.sha256(body.encode()).hexdigest()


def approval_binding(call_digest: str, tool: Tool) -> str:
    """What an approval request is bound to: the action, and the tool's definition as it was
    when approved (a tool edited since, e.g. pointed at another path, voids the approval)."""
    body = f"{call_digest}:{tool.pk}:{tool.updated_at.isoformat()}"
    return hashlib.sha256(body.encode()).hexdigest()


def default_idempotency_key(context: TurnContext, tool_name: str, arguments) -> str:
    """Within a turn, the same call is the same action; outside one, every call is new.
    The runtime passes the model's tool-call id instead, so two deliberate identical calls
    in one turn stay two."""
    if not context.turn_id:
        return f"call:{uuid.uuid4()}"
    return f"turn:{context.turn_id}:" + action_digest(tool_name, arguments, context.tenant_id, context.subject)


def _event(context: TurnContext, call: ToolCall, roles, **fields) -> dict:
    """The audit fields of an event about ``call``."""
    return {
        "tenant": context.tenant_id,
        "actor": context.user_id,
        "actor_roles": roles,
        "agent": context.agent_id,
        "conversation_id": context.conversation_id or None,
        "turn_id": context.turn_id or None,
        "tool": call.tool_name,
        "arguments": call.arguments,
        **fields,
    }


def _audit(event_type: str, context: TurnContext, call: ToolCall, roles, **fields) -> None:
    audit.record(event_type, **_event(context, call, roles, **fields))


@lru_cache(maxsize=4)
def _insert_statement(vendor: str) -> str:
    """INSERT of a ToolCall that does nothing when its idempotency key is taken."""
    quote = connection.ops.quote_name
    fields = ToolCall._meta.concrete_fields
    columns = ", ".join(quote(f.column) for f in fields)
    return (
        f"INSERT INTO {quote(ToolCall._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))}) "  # noqa: S608 — our names
        f"ON CONFLICT DO NOTHING RETURNING {quote(ToolCall._meta.pk.column)}"
    )


RESULT_FIELDS = ("outcome", "result", "error", "latency_ms", "finished_at", "pending_arguments")


@lru_cache(maxsize=4)
def _result_statement(vendor: str) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(f"{quote(ToolCall._meta.get_field(name).column)} = %s" for name in RESULT_FIELDS)
    pk = quote(ToolCall._meta.pk.column)
    return f"UPDATE {quote(ToolCall._meta.db_table)} SET {columns} WHERE {pk} = %s RETURNING {pk}"  # noqa: S608


def _prepared(call: ToolCall, fields) -> list:
    return [f.get_db_prep_save(f.pre_save(call, True), connection) for f in fields]


def _record_request(context: TurnContext, call: ToolCall, decision: Decision, tool: Tool | None) -> bool:
    """Insert the call and its ``tool.requested`` event together (one statement on
    PostgreSQL): no execution without its record, no record of a call never stored.
    False when the idempotency key is taken (a repeat)."""
    stored = audit.change_and_record(
        _insert_statement(connection.vendor),
        _prepared(call, ToolCall._meta.concrete_fields),
        audit.EventType.TOOL_REQUESTED,
        **_requested_event(context, call, decision, tool),
    )
    if stored:  # the instance now stands for a stored row: a later save() updates it
        call._state.adding, call._state.db = False, connection.alias
    return stored


def _requested_event(context: TurnContext, call: ToolCall, decision: Decision, tool: Tool | None) -> dict:
    return _event(
        context,
        call,
        decision.roles,
        decision="execute" if decision.outcome == Outcome.EXECUTING else decision.outcome,
        reason=decision.reason_code,
        payload={
            "call_id": str(call.pk),
            "why": decision.reason,
            "effect": decision.effect or None,
            "grant_ids": decision.grant_ids,
            "rollout_mode": call.rollout_mode,
            "risk_tier": tool.risk_tier if tool else None,
            "subject": context.subject or None,
            "subject_verified": context.subject_verified,
            "channel": context.channel or None,
        },
    )


def _new_call(context, tool, tool_name, arguments, redacted, digest, key, decision, run) -> ToolCall:
    """The call's row. What came from outside (names, ids, the subject, the arguments) is
    stored as the database can hold it: a NUL must not make a refusal unrecordable."""
    return ToolCall(
        idempotency_key=key,
        tenant_id=context.tenant_id,
        agent_id=context.agent_id if run.tenant_id == context.tenant_id else None,
        tool=tool,
        tool_name=audit.storable(tool_name[:100]),
        user_id=context.user_id,
        conversation_id=audit.storable(context.conversation_id),
        turn_id=audit.storable(context.turn_id),
        channel=audit.storable(context.channel),
        subject=audit.storable(context.subject),
        subject_verified=context.subject_verified,
        scope=audit.storable(context.scope()),
        rollout_mode=run.rollout_mode,
        arguments=audit.storable(redacted),
        action_digest=digest,
        effect=decision.effect,
        outcome=decision.outcome,
        reason_code=decision.reason_code,
        reason=decision.reason,
        grant_ids=decision.grant_ids,
        finished_at=None if decision.proceeds else timezone.now(),
    )


def _replay(context: TurnContext, earlier: ToolCall | None, key: str, digest: str, tool_name: str) -> ToolResult:
    """The first call's outcome for a repeated key: only for the same action, by the same
    person through the same agent; anything else reusing a key is refused."""
    if earlier is None:  # the clash was not the key: a real integrity problem
        raise IntegrityError(f"The call under idempotency key {key!r} could not be recorded.")
    if earlier.action_digest != digest or earlier.user_id != context.user_id or earlier.agent_id != context.agent_id:
        return ToolResult(
            None,
            tool_name,
            Outcome.DENIED,
            "idempotency_key_reused",
            "This idempotency key was used for a different call; it is not executed.",
        )
    if earlier.outcome == Outcome.EXECUTING:
        return ToolResult(
            earlier.pk,
            tool_name,
            Outcome.FAILED,
            "in_progress_or_interrupted",
            "This call is already running, or was interrupted with an unknown result; it is not run again.",
            replayed=True,
        )
    return _recorded_result(earlier)


def _recorded_result(call: ToolCall) -> ToolResult:
    return ToolResult(
        call.pk,
        call.tool_name,
        call.outcome,
        call.reason_code,
        call.error or call.reason,
        data=call.result,
        approval_request_id=call.approval_request_id,
        replayed=True,
        latency_ms=call.latency_ms,
    )


def _earlier(context: TurnContext, key: str) -> ToolCall | None:
    return ToolCall.objects.filter(tenant_id=context.tenant_id, idempotency_key=key).first()


def recorded_result(tenant_id: int, call_id) -> ToolResult:
    """What became of a recorded call, e.g. one approved and run while its turn waited.
    Nothing is decided or run here."""
    call = ToolCall.objects.filter(tenant_id=tenant_id, pk=call_id).first()
    if call is None:
        return ToolResult(None, "", Outcome.FAILED, "unknown_call", "There is no record of this call.")
    return _recorded_result(call)


def _approvals_required(tool: Tool, amount: Decimal | None) -> int:
    """Two different people above the tool's threshold, one otherwise."""
    threshold = tool.second_approver_above
    return 2 if threshold is not None and amount is not None and amount > threshold else 1


def _open_approval(
    call: ToolCall, tool: Tool, context: TurnContext, decision: Decision, arguments: dict, approval_context: dict | None
) -> int:
    amount = _amount(tool, arguments)
    request = approvals.open_request(
        tenant_id=context.tenant_id,
        agent_id=context.agent_id,
        tool_call_id=call.pk,
        tool_name=tool.name,
        risk_tier=tool.risk_tier,
        amount=amount,
        arguments=call.arguments,
        action_digest=approval_binding(call.action_digest, tool),
        requested_by_id=context.user_id,
        subject=context.subject,
        subject_verified=context.subject_verified,
        channel=context.channel,
        conversation_id=context.conversation_id,
        turn_id=context.turn_id,
        rule=decision.rule,
        rule_text=decision.reason,
        actor_roles=decision.roles,
        approvals_required=_approvals_required(tool, amount),
        sla_minutes=tool.approval_sla_minutes,
        context=redact(approval_context)[0] if approval_context else None,
    )
    return request.pk


# --- Execution -----------------------------------------------------------------------------


def _execute(call: ToolCall, tool: Tool, context: TurnContext, arguments: dict, roles) -> ToolResult:
    """Run the connector once, then record the result; never retried here (a write could
    run twice) and a failure reaches the model as a tool failure, not an exception."""
    started = time.perf_counter()
    invocation = connectors.Invocation(tool, arguments, context, frozenset(roles), call.idempotency_key)
    try:
        data, error = _as_json(connectors.run(invocation)), None
    except connectors.ConnectorError as failure:
        data, error = None, failure.message
    except Exception as failure:  # a connector bug must not take the turn down, nor leak a trace
        data, error = None, f"{tool.name} failed unexpectedly ({type(failure).__name__})."
    latency = round((time.perf_counter() - started) * 1000, 3)
    call.outcome = Outcome.EXECUTED if error is None else Outcome.FAILED
    call.result = audit.storable(redact(data)[0]) if data is not None else None
    call.error = audit.storable(redact(error)[0]) if error else ""  # a system's error text may quote personal data
    call.latency_ms = latency
    call.finished_at = timezone.now()
    call.pending_arguments = None
    fields = [ToolCall._meta.get_field(name) for name in RESULT_FIELDS]
    audit.change_and_record(
        _result_statement(connection.vendor),
        [*_prepared(call, fields), ToolCall._meta.pk.get_db_prep_value(call.pk, connection)],
        audit.EventType.TOOL_EXECUTED if error is None else audit.EventType.TOOL_FAILED,
        **_event(
            context,
            call,
            roles,
            outcome=call.outcome,
            latency_ms=latency,
            payload={"call_id": str(call.pk), "error": error} if error else {"call_id": str(call.pk)},
        ),
    )
    if error is not None:
        return ToolResult(call.pk, tool.name, Outcome.FAILED, "tool_failed", error, latency_ms=latency)
    return ToolResult(call.pk, tool.name, Outcome.EXECUTED, "executed", "Done.", data=data, latency_ms=latency)


def _as_json(data) -> dict:
    """A connector's result as plain JSON (dates and decimals as text); anything else is a
    failure of the tool, found before it is recorded."""
    if not isinstance(data, dict):
        raise connectors.ConnectorError("The tool returned something other than an object.", sent=True)
    try:
        return json.loads(json.dumps(data, cls=DjangoJSONEncoder, allow_nan=False))
    except (TypeError, ValueError):
        raise connectors.ConnectorError("The tool returned a result that is not JSON.", sent=True) from None


def _note_grant_use(decision: Decision) -> None:
    if decision.stale_grant_ids:
        Grant.objects.filter(pk__in=decision.stale_grant_ids).update(last_used_at=timezone.now())


def invoke(
    context: TurnContext,
    tool_name: str,
    arguments,
    *,
    idempotency_key: str | None = None,
    approval_context: dict | None = None,
) -> ToolResult:
    """Decide on one tool call and, if it may run now, run it. Never raises for a denied
    or failed call: the result says what happened and why, for the model and the trace.
    ``approval_context`` (the conversation, the agent's stated reason, the sources) goes
    with the approval request when the call needs one, redacted like the arguments."""
    as_object = arguments if isinstance(arguments, dict) else {"value": arguments}
    digest = action_digest(tool_name, as_object, context.tenant_id, context.subject)
    key = audit.storable(idempotency_key or default_idempotency_key(context, tool_name, as_object))
    if idempotency_key or context.turn_id:  # a key that may have been seen: a repeat is answered, not decided again
        earlier = ToolCall.objects.filter(tenant_id=context.tenant_id, idempotency_key=key).first()
        if earlier is not None:
            return _replay(context, earlier, key, digest, tool_name)
    found = facts.read(context.tenant_id, context.agent_id, context.user_id, tool_name)
    redacted, kinds = redact(as_object)
    decision = authorize(context, found, tool_name, arguments, argument_kinds=kinds)
    tool, arguments = found.tool, as_object
    call = _new_call(context, tool, tool_name, arguments, redacted, digest, key, decision, found.run)
    if decision.outcome == Outcome.NEEDS_APPROVAL:
        call.pending_arguments = arguments
        with transaction.atomic():
            if not _record_request(context, call, decision, tool):
                counters.decrement(decision.reserved)
                return _replay(context, _earlier(context, key), key, digest, tool_name)
            call.approval_request_id = _open_approval(call, tool, context, decision, arguments, approval_context)
            call.save(update_fields=["approval_request_id"])
        _note_grant_use(decision)
        return ToolResult(
            call.pk,
            tool.name,
            Outcome.NEEDS_APPROVAL,
            decision.rule,
            decision.reason,
            approval_request_id=call.approval_request_id,
        )
    try:
        recorded = _record_request(context, call, decision, tool)
    except Exception:
        counters.decrement(decision.reserved)  # nothing was written: the call did not happen
        raise
    if not recorded:  # a repeat racing the first call
        counters.decrement(decision.reserved)
        return _replay(context, _earlier(context, key), key, digest, tool_name)
    if decision.outcome in (Outcome.PROPOSED, Outcome.SUGGESTED):
        proposal = {"proposed_action": {"tool": tool_name, "arguments": arguments}}
        return ToolResult(call.pk, tool_name, decision.outcome, decision.reason_code, decision.reason, data=proposal)
    if decision.outcome != Outcome.EXECUTING:
        return ToolResult(call.pk, tool_name, decision.outcome, decision.reason_code, decision.reason)
    _note_grant_use(decision)
    return _execute(call, tool, context, arguments, decision.roles)


def context_of(call: ToolCall) -> TurnContext:
    return TurnContext(
        tenant_id=call.tenant_id,
        agent_id=call.agent_id,
        user_id=call.user_id,
        channel=call.channel,
        subject=call.subject,
        subject_verified=call.subject_verified,
        conversation_id=call.conversation_id,
        turn_id=call.turn_id,
        **call.scope,
    )


def _close_unexecuted(call: ToolCall, context: TurnContext, roles, code: str, why: str, request_id: int) -> None:
    call.outcome, call.reason_code, call.reason = Outcome.DENIED, code, why
    call.pending_arguments, call.finished_at = None, timezone.now()
    call.save(update_fields=["outcome", "reason_code", "reason", "pending_arguments", "finished_at"])
    _audit(
        audit.EventType.TOOL_REQUESTED,
        context,
        call,
        roles,
        decision=Outcome.DENIED,
        reason=code,
        payload={"call_id": str(call.pk), "why": why, "approval_request_id": request_id},
    )


def execute_approved(approval_request_id: int) -> ToolResult:
    """Run a call a human approved, once.

    First the request is claimed for its single execution (under its row lock: only an
    approved request whose action and tool are exactly those approved gets past; a second
    worker, a redelivered task or a second approver's click stops here). Then the gateway
    decides again, as if asked now: a grant revoked, the agent suspended or moved to shadow
    or suggest mode, a connection revoked since the request void the approval and nothing
    runs. Only then does the connector run.
    """
    call = ToolCall.objects.select_related("tool__connection").filter(approval_request_id=approval_request_id).first()
    if call is None or call.pending_arguments is None or call.tool is None:
        return ToolResult(None, "", Outcome.FAILED, "not_executable", "There is no approved call waiting to run.")
    context = context_of(call)
    arguments = call.pending_arguments
    binding = approval_binding(action_digest(call.tool_name, arguments, context.tenant_id, context.subject), call.tool)
    try:
        approvals.begin_execution(approval_request_id, binding)
    except approvals.NotExecutable as refusal:
        if refusal.voided:
            _close_unexecuted(call, context, (), "approval_void", refusal.message, approval_request_id)
        return ToolResult(call.pk, call.tool_name, Outcome.FAILED, "not_executable", refusal.message)
    found = facts.read(context.tenant_id, context.agent_id, context.user_id, call.tool_name, call.tool_id)
    tool = found.tool
    decision = authorize(context, found, call.tool_name, arguments, approved=True)
    if decision.outcome != Outcome.EXECUTING:
        approvals.finish_execution(approval_request_id, outcome="voided", note=decision.reason)
        _close_unexecuted(call, context, decision.roles, decision.reason_code, decision.reason, approval_request_id)
        return ToolResult(call.pk, call.tool_name, Outcome.DENIED, decision.reason_code, decision.reason)
    call.outcome = Outcome.EXECUTING
    call.save(update_fields=["outcome"])
    result = _execute(call, tool, context, arguments, decision.roles)
    approvals.finish_execution(approval_request_id, outcome=result.outcome, note=result.message, result=call.result)
    return result


def close_declined_call(approval_request_id: int) -> bool:
    """Close the call of a request that was rejected or expired: nothing ran and nothing
    will, so its kept arguments go. Idempotent; True when it closed the call now."""
    request = ApprovalRequest.objects.filter(pk=approval_request_id).only("status", "outcome_note").first()
    if request is None or request.status not in (ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED):
        return False
    with transaction.atomic():
        call = (
            ToolCall.objects.select_for_update()
            .filter(approval_request_id=approval_request_id, outcome=Outcome.NEEDS_APPROVAL)
            .first()
        )
        if call is None:
            return False
        code = f"approval_{request.status}"
        verb = "rejected" if request.status == ApprovalStatus.REJECTED else "expired undecided"
        why = f"The approval request was {verb}; nothing ran. {request.outcome_note}".strip()
        _close_unexecuted(call, context_of(call), (), code, why, approval_request_id)
    return True


def tools_offered(context: TurnContext) -> list[Tool]:
    """The tools worth offering the model in this turn: active, on the agent's allowlist,
    connection not revoked, and granted (other than deny) to one of the acting user's roles.
    Offering is not permission: every call still goes through ``invoke``."""
    granted = Grant.objects.active().filter(
        tool_id=OuterRef("pk"),
        role__memberships__user_id=context.user_id,
        role__tenant_id=context.tenant_id,
    )
    return list(
        Tool.objects.filter(
            tenant_id=context.tenant_id,
            is_active=True,
            agent_allowances__agent_id=context.agent_id,
        )
        .exclude(connection__status=ConnectionStatus.REVOKED)
        .filter(Exists(granted.exclude(effect=Effect.DENY)))
        .exclude(Exists(granted.filter(effect=Effect.DENY)))
        .order_by("name")
    )


def close_interrupted_calls(*, older_than: timedelta = timedelta(minutes=10)) -> int:
    """Calls left "executing" (their worker died mid-call) are closed as failed: the result
    is unknown, so they are reported, never run again. Returns how many were closed."""
    cutoff = timezone.now() - older_than
    closed = 0
    for call in ToolCall.objects.filter(outcome=Outcome.EXECUTING, created_at__lt=cutoff).iterator():
        why = "Interrupted: the worker stopped during the call, so its result is unknown. It is not run again."
        updated = ToolCall.objects.filter(pk=call.pk, outcome=Outcome.EXECUTING).update(
            outcome=Outcome.FAILED, reason_code="interrupted", error=why, finished_at=timezone.now()
        )
        if not updated:
            continue
        closed += 1
        call.outcome = Outcome.FAILED
        _audit(
            audit.EventType.TOOL_FAILED,
            context_of(call),
            call,
            (),
            outcome=Outcome.FAILED,
            reason="interrupted",
            payload={"call_id": str(call.pk), "error": why},
        )
        if call.approval_request_id:
            approvals.finish_execution(call.approval_request_id, outcome=Outcome.FAILED, note=why)
    return closed
