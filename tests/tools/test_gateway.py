"""The tool gateway, call by call: what it refuses and why, the conditions grants carry,
approvals, rollout modes and evaluation, the agent's and the connection's state, rate
limits, idempotency, failures, the audit trail around an execution, and running an
approved call later (once, and only while it is still allowed).

Every tool here runs the counting built-in (tests/tools/conftest.py) or a fake HTTP
connector, so "nothing executed" is checked, not assumed."""

from decimal import Decimal

import pytest

from apps.agents import services as agents
from apps.agents.choices import AgentStatus, RolloutMode
from apps.approvals.models import ApprovalRequest
from apps.guardrails import services as guardrails
from apps.tools import connectors
from apps.tools import services as tools
from apps.tools.choices import Effect, Outcome, RiskTier
from apps.tools.gateway import (
    TurnContext,
    action_digest,
    approval_binding,
    execute_approved,
    invoke,
    tools_offered,
)
from apps.tools.models import AgentTool, Grant, ToolCall
from tests.accounts.factories import member
from tests.agents.factories import AgentFactory

from ..audit.helpers import chained
from .conftest import counting_tool
from .factories import allow, builtin_tool, connection, context_for, grant, http_tool

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]

EMAIL = "jane.doe@example.com"
TOKEN = "Bearer abcdefghijklmnop"


@pytest.fixture
def agent(agent):
    """The shared agent, in scoped autonomy: the grants and the tier decide, not the mode."""
    agent.rollout_mode = RolloutMode.AUTONOMOUS
    agent.save()
    return agent


@pytest.fixture
def tool(tenant, agent, executions):
    """orders.touch: a low-risk reversible write, on the agent's allowlist, allowed to
    support agents; it names an amount (for grant conditions)."""
    made = counting_tool(tenant, "orders.touch", writes=True, amount_field="amount")
    allow(agent, made)
    return made


@pytest.fixture
def allowed(tool):
    return grant(tool, "support_agent")


@pytest.fixture
def context(agent, people):
    return context_for(agent, people["support_agent"], channel="web_chat", subject="cust-42", subject_verified=True)


def high_tool(tenant, agent, name="orders.refund", tier=RiskTier.HIGH, **fields):
    made = counting_tool(tenant, name, risk_tier=tier, writes=True, reversible=False, amount_field="amount", **fields)
    allow(agent, made)
    grant(made, "support_agent")
    return made


def set_mode(agent, mode):
    agent.rollout_mode = mode
    agent.save()


def only_call() -> ToolCall:
    (call,) = ToolCall.objects.all()
    return call


def audit_bodies() -> str:
    return "\n".join(event.body for event in chained())


# --- What the gateway refuses before any grant ---------------------------------------------


def test_an_unknown_tool_is_denied_and_recorded(context, allowed, executions):
    result = invoke(context, "orders.vanish", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "unknown_tool")
    assert "orders.vanish" in result.message
    call = only_call()
    assert (call.tool_id, call.tool_name, call.outcome) == (None, "orders.vanish", Outcome.DENIED)
    (event,) = chained(event_type="tool.requested")
    assert (event.decision, event.reason) == (Outcome.DENIED, "unknown_tool")
    assert executions == []


def test_invalid_arguments_name_the_argument_never_the_value(context, allowed, executions):
    result = invoke(context, "orders.touch", {"customer_email": EMAIL, "note": "call her"})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "invalid_arguments")
    assert "customer_email" in result.message and "maxLength" in result.message
    assert EMAIL not in result.message
    assert EMAIL not in str(result.for_model())
    call = only_call()
    assert EMAIL not in call.reason
    assert EMAIL not in str(call.arguments)
    assert call.arguments["customer_email"] == "[EMAIL]"
    assert EMAIL not in audit_bodies()
    assert executions == []


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ({"amount": EMAIL}, "amount must be of type number"),
        ({"amount": -3}, "amount does not satisfy minimum 0"),
        ({"surprise": 1}, "'surprise' was unexpected"),
        ({"note": 7}, "note must be of type string"),
    ],
)
def test_each_schema_rule_is_described_in_words(context, allowed, executions, arguments, names):
    result = invoke(context, "orders.touch", arguments)

    assert result.reason_code == "invalid_arguments"
    assert names in result.message
    assert EMAIL not in result.message
    assert executions == []


def test_a_required_argument_and_a_non_object_are_refused(tenant, agent, context, executions):
    strict = counting_tool(
        tenant,
        "orders.lookup",
        argument_schema={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    )
    allow(agent, strict)
    grant(strict, "support_agent")

    missing = invoke(context, "orders.lookup", {})
    not_an_object = invoke(context, "orders.lookup", ["A-1001"])

    assert "'order_id' is a required property" in missing.message
    assert (not_an_object.reason_code, not_an_object.message) == (
        "invalid_arguments",
        "Arguments must be a JSON object.",
    )
    assert executions == []


# --- Tenants -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        lambda acme, globex: {"tenant": "globex"},
        lambda acme, globex: {"tenant_id": globex.pk},
        lambda acme, globex: {"tenant_id": str(globex.pk)},
        lambda acme, globex: {"filter": {"tenant_slug": "globex"}},
        lambda acme, globex: {"filter": {"rows": [{"tenant": "acme"}, {"tenant": "globex"}]}},
    ],
    ids=["slug", "id", "id-as-text", "nested", "in-a-list"],
)
def test_an_argument_naming_another_tenant_is_denied(tenant, other_tenant, context, allowed, executions, arguments):
    result = invoke(context, "orders.touch", arguments(tenant, other_tenant))

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "cross_tenant")
    assert executions == []


@pytest.mark.parametrize("key", ["tenantId", "Tenant", "TENANT_ID", "tenant_name"])
def test_any_spelling_of_a_tenant_argument_is_checked(tenant, agent, context, other_tenant, executions, key):
    loose = counting_tool(tenant, "orders.search", argument_schema={"type": "object"})
    allow(agent, loose)
    grant(loose, "support_agent")

    result = invoke(context, "orders.search", {key: "globex"})

    assert result.reason_code == "cross_tenant"


@pytest.mark.parametrize(
    "arguments",
    [
        lambda acme: {"tenant": "acme"},
        lambda acme: {"tenant": " ACME "},
        lambda acme: {"tenant_id": acme.pk},
        lambda acme: {"filter": {"tenant_slug": "acme"}},
    ],
    ids=["slug", "slug-any-case", "id", "nested"],
)
def test_an_argument_naming_the_turns_tenant_is_fine(tenant, other_tenant, context, allowed, executions, arguments):
    result = invoke(context, "orders.touch", arguments(tenant))

    assert result.outcome == Outcome.EXECUTED, result.message
    assert len(executions) == 1


# --- Customers ------------------------------------------------------------------------------


def loose_tool(tenant, agent, name="crm.touch"):
    """A granted tool that takes any arguments."""
    made = counting_tool(tenant, name, argument_schema={"type": "object"})
    allow(agent, made)
    grant(made, "support_agent")
    return made


@pytest.mark.parametrize(
    "arguments",
    [
        {"customer_id": "cust-43"},
        {"customerId": "CUST-1"},
        {"Customer-Number": 42},
        {"filter": {"customer": "cust-43"}},
        {"rows": [{"customer_id": "cust-42"}, {"customer_id": "cust-43"}]},
    ],
    ids=["id", "camel-case", "number", "nested", "in-a-list"],
)
def test_an_argument_naming_another_customer_is_denied(tenant, agent, context, executions, arguments):
    loose_tool(tenant, agent)

    result = invoke(context, "crm.touch", arguments)

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "cross_customer")
    assert "another customer" in result.message
    assert executions == []
    assert only_call().outcome == Outcome.DENIED


@pytest.mark.parametrize(
    "arguments",
    [{"customer_id": "cust-42"}, {"customer_id": " CUST-42 "}, {"customer_email": "x@example.com", "subject": "Hi"}],
    ids=["same", "same-any-case", "not-a-customer-key"],
)
def test_an_argument_naming_the_turns_customer_is_fine(tenant, agent, context, executions, arguments):
    loose_tool(tenant, agent)

    result = invoke(context, "crm.touch", arguments)

    assert result.outcome == Outcome.EXECUTED, result.message
    assert len(executions) == 1


def test_a_turn_without_a_customer_may_name_any(tenant, agent, people, executions):
    """A person using an agent for their own work (no customer in the turn): grants decide."""
    loose_tool(tenant, agent)
    context = context_for(agent, people["support_agent"], channel="web_chat")

    assert invoke(context, "crm.touch", {"customer_id": "cust-43"}).executed


# --- Personal data in arguments --------------------------------------------------------------

CARD = "4111 1111 1111 1111"


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"note": f"my card is {CARD}"}, "a payment card number"),
        ({"note": "card", "amount": 4111111111111111}, "a payment card number"),
        ({"note": "ssn 123-45-6789"}, "a social security number"),
        ({"note": "to DE89 3704 0044 0532 0130 00"}, "a bank account number (IBAN)"),
        ({"note": TOKEN}, "a password, key or other secret"),
        ({"filter": {"password": "hunter2"}}, "a password, key or other secret"),
    ],
    ids=["card", "card-as-a-number", "ssn", "iban", "token", "secret-key"],
)
def test_personal_data_the_policy_refuses_never_reaches_the_tool(context, allowed, executions, arguments, named):
    result = invoke(context, "orders.touch", arguments)

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "personal_data_refused")
    assert named in result.message and "nothing was sent" in result.message
    assert executions == []
    call = only_call()
    assert CARD not in str(call.arguments) and "hunter2" not in str(call.arguments)
    assert "4111111111111111" not in audit_bodies() and "hunter2" not in audit_bodies()
    assert chained(event_type="tool.requested", reason="personal_data_refused").count() == 1


def test_email_and_phone_reach_tools_by_default(context, allowed, executions):
    note = f"call {EMAIL} or +1 415 555 0100"

    result = invoke(context, "orders.touch", {"note": note})

    assert result.executed
    assert executions[0].arguments["note"] == note
    assert EMAIL not in str(only_call().arguments)


def test_a_policy_decides_which_kinds_a_tool_may_carry(tenant, agent, people, context, allowed, executions):
    other = counting_tool(tenant, "orders.other")
    allow(agent, other)
    grant(other, "support_agent")
    document = "tools:\n  arguments:\n    email: refuse\n  allow_in_arguments:\n    orders.touch: [card]\n"
    policy = guardrails.save_policy(document=document, by=people["security"], tenant=tenant)
    guardrails.activate_policy(policy=policy, by=people["security"])

    card_to_exception = invoke(context, "orders.touch", {"note": CARD})
    card_elsewhere = invoke(context, "orders.other", {"note": CARD})
    email_anywhere = invoke(context, "orders.touch", {"note": EMAIL})

    assert card_to_exception.executed
    assert card_elsewhere.reason_code == "personal_data_refused"
    assert email_anywhere.reason_code == "personal_data_refused"
    assert "an e-mail address" in email_anywhere.message
    assert [execution.arguments["note"] for execution in executions] == [CARD]


def test_an_agent_of_another_tenant_is_denied(tenant, other_agent, people, allowed, executions):
    context = TurnContext(tenant_id=tenant.pk, agent_id=other_agent.pk, user_id=people["support_agent"].pk)

    result = invoke(context, "orders.touch", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "cross_tenant")
    call = only_call()
    assert (call.tenant_id, call.agent_id, call.tool_id) == (tenant.pk, None, None)
    assert executions == []


def test_a_turn_of_another_tenant_cannot_use_this_agent(agent, other_tenant, people, allowed, executions):
    context = TurnContext(tenant_id=other_tenant.pk, agent_id=agent.pk, user_id=people["support_agent"].pk)

    result = invoke(context, "orders.touch", {})

    assert result.reason_code == "cross_tenant"
    assert executions == []


def test_a_tool_of_another_tenant_is_unknown_here(other_tenant, context, allowed, executions):
    foreign = counting_tool(other_tenant, "globex.orders")
    grant(foreign, "support_agent")

    result = invoke(context, "globex.orders", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "unknown_tool")
    assert executions == []


def test_a_same_named_tool_resolves_to_the_turns_tenant(other_tenant, context, allowed, executions):
    twin = counting_tool(other_tenant, "orders.touch", risk_tier=RiskTier.CRITICAL, writes=True, reversible=False)
    grant(twin, "support_agent", Effect.DENY)

    result = invoke(context, "orders.touch", {})

    assert result.outcome == Outcome.EXECUTED
    assert only_call().tool.tenant_id == context.tenant_id


# --- Who acts -------------------------------------------------------------------------------


def test_a_person_without_a_role_in_the_tenant_is_denied(agent, people, allowed, executions):
    result = invoke(context_for(agent, people["nobody"]), "orders.touch", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "no_role")
    assert executions == []


def test_a_role_in_another_tenant_does_not_count(agent, other_tenant, allowed, executions):
    outsider = member(other_tenant, "support_agent", username="globex.agent")

    result = invoke(context_for(agent, outsider), "orders.touch", {})

    assert result.reason_code == "no_role"
    assert executions == []


def test_a_deactivated_person_is_denied(agent, people, allowed, executions):
    person = people["support_agent"]
    person.is_active = False
    person.save()

    result = invoke(context_for(agent, person, channel="web_chat"), "orders.touch", {})

    assert result.reason_code == "no_role"
    assert executions == []


def test_a_tool_off_the_allowlist_is_denied_even_when_granted(agent, context, tool, allowed, executions):
    AgentTool.objects.filter(agent=agent, tool=tool).delete()

    result = invoke(context, "orders.touch", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "not_on_allowlist")
    assert executions == []


def test_a_role_without_a_grant_is_denied(agent, people, tool, allowed, executions):
    result = invoke(context_for(agent, people["compliance"]), "orders.touch", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "not_granted")
    assert "Compliance" in result.message or "compliance" in result.message.lower()
    assert executions == []


# --- Grant conditions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "outcome"),
    [
        ({"amount": 150}, Outcome.DENIED),
        ({"amount": 100.01}, Outcome.DENIED),
        ({"amount": 100}, Outcome.EXECUTED),
        ({"amount": 0}, Outcome.EXECUTED),
        ({}, Outcome.DENIED),
    ],
    ids=["over", "just-over", "at-the-limit", "zero", "missing"],
)
def test_max_amount(tool, context, executions, arguments, outcome):
    grant(tool, "support_agent", max_amount=Decimal("100"))

    result = invoke(context, "orders.touch", arguments)

    assert result.outcome == outcome, result.message
    if outcome == Outcome.DENIED:
        assert result.reason_code == "condition_failed"
        assert "100" in result.message
    assert len(executions) == (1 if outcome == Outcome.EXECUTED else 0)


@pytest.mark.parametrize(("verified", "outcome"), [(False, Outcome.DENIED), (True, Outcome.EXECUTED)])
def test_requires_a_verified_subject(agent, people, tool, executions, verified, outcome):
    grant(tool, "support_agent", requires_verified_subject=True)
    context = context_for(agent, people["support_agent"], subject="cust-42", subject_verified=verified)

    result = invoke(context, "orders.touch", {})

    assert result.outcome == outcome
    if outcome == Outcome.DENIED:
        assert result.reason_code == "condition_failed"
        assert "verified" in result.message
    assert len(executions) == (1 if verified else 0)


@pytest.mark.parametrize(
    ("channel", "outcome"),
    [("web_chat", Outcome.EXECUTED), ("email", Outcome.DENIED), ("", Outcome.DENIED)],
)
def test_allowed_channels(agent, people, tool, executions, channel, outcome):
    grant(tool, "support_agent", allowed_channels=["web_chat", "slack"])

    result = invoke(context_for(agent, people["support_agent"], channel=channel), "orders.touch", {})

    assert result.outcome == outcome
    if outcome == Outcome.DENIED:
        assert result.reason_code == "condition_failed"
        assert "web_chat, slack" in result.message


def test_the_daily_limit_per_person_is_counted_exactly(agent, tenant, people, tool, context, executions):
    grant(tool, "support_agent", daily_limit_per_user=3)

    results = [invoke(context, "orders.touch", {}) for _ in range(4)]

    assert [result.outcome for result in results] == [Outcome.EXECUTED] * 3 + [Outcome.DENIED]
    assert results[3].reason_code == "condition_failed"
    assert "3 times a day" in results[3].message
    assert len(executions) == 3
    # The limit is per person: a colleague with the same role still has all three.
    colleague = member(tenant, "support_agent", username="second.agent")
    assert invoke(context_for(agent, colleague, channel="web_chat"), "orders.touch", {}).executed


def test_a_call_that_does_not_execute_leaves_the_daily_limit_alone(agent, tool, context, executions):
    grant(tool, "support_agent", daily_limit_per_user=1)
    set_mode(agent, RolloutMode.SHADOW)
    assert invoke(context, "orders.touch", {}).outcome == Outcome.PROPOSED

    set_mode(agent, RolloutMode.AUTONOMOUS)
    assert invoke(context, "orders.touch", {}).executed
    assert invoke(context, "orders.touch", {}).reason_code == "condition_failed"
    assert len(executions) == 1


def test_the_strictest_of_the_grants_whose_conditions_hold_wins(agent, tenant, tool, executions):
    """Support agents may; support leads need approval up to 50 (a condition). Above 50 the
    leads' grant does not hold, so the allow alone decides; within it, the stricter wins."""
    both = member(tenant, "support_agent", username="agent.and.lead")
    member(tenant, "support_lead", username="agent.and.lead")
    grant(tool, "support_agent", Effect.ALLOW)
    grant(tool, "support_lead", Effect.REQUIRE_APPROVAL, max_amount=Decimal("50"))
    context = context_for(agent, both, channel="web_chat")

    above = invoke(context, "orders.touch", {"amount": 80})
    within = invoke(context, "orders.touch", {"amount": 20})

    assert above.outcome == Outcome.EXECUTED, above.message
    assert (within.outcome, within.reason_code) == (Outcome.NEEDS_APPROVAL, "grant")
    assert len(executions) == 1


def test_when_no_grants_conditions_hold_every_reason_is_given(agent, tenant, tool, executions):
    both = member(tenant, "support_agent", username="agent.and.lead")
    member(tenant, "support_lead", username="agent.and.lead")
    grant(tool, "support_agent", max_amount=Decimal("50"))
    grant(tool, "support_lead", allowed_channels=["voice"])

    result = invoke(context_for(agent, both, channel="web_chat"), "orders.touch", {"amount": 80})

    assert result.reason_code == "condition_failed"
    assert "up to 50" in result.message and "voice" in result.message
    assert executions == []


@pytest.mark.parametrize("other", [Effect.ALLOW, Effect.REQUIRE_APPROVAL])
def test_an_explicit_deny_beats_every_other_grant(agent, tenant, tool, executions, other):
    both = member(tenant, "support_agent", username="agent.and.lead")
    member(tenant, "support_lead", username="agent.and.lead")
    grant(tool, "support_agent", other)
    grant(tool, "support_lead", Effect.DENY)

    result = invoke(context_for(agent, both), "orders.touch", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "denied_by_grant")
    assert not ApprovalRequest.objects.exists()
    assert executions == []


def test_a_revoked_grant_no_longer_counts(agent, people, tool, allowed, context, executions):
    assert invoke(context, "orders.touch", {}).executed
    tools.revoke_grant(grant=allowed, by=people["security"], reason="Role no longer needs it")

    result = invoke(context, "orders.touch", {})

    assert result.reason_code == "not_granted"
    assert len(executions) == 1


def test_a_grant_notes_when_it_was_last_used(tool, allowed, context, executions):
    assert allowed.last_used_at is None
    invoke(context, "orders.touch", {"amount": -1})  # refused: not a use
    allowed.refresh_from_db()
    assert allowed.last_used_at is None

    invoke(context, "orders.touch", {})
    allowed.refresh_from_db()
    first_use = allowed.last_used_at
    assert first_use is not None

    invoke(context, "orders.touch", {})  # within minutes: no write needed
    allowed.refresh_from_db()
    assert allowed.last_used_at == first_use


# --- Risk tiers and approvals ----------------------------------------------------------------


@pytest.mark.parametrize("tier", [RiskTier.HIGH, RiskTier.CRITICAL])
def test_high_and_critical_tools_wait_for_a_human_whatever_the_grant(tenant, agent, people, tier, executions):
    high_tool(tenant, agent, tier=tier)
    context = context_for(
        agent, people["support_agent"], channel="web_chat", subject="cust-42", turn_id="turn-1", conversation_id="c-1"
    )
    arguments = {"amount": 25, "note": "damaged"}

    result = invoke(context, "orders.refund", arguments)

    assert (result.outcome, result.reason_code) == (Outcome.NEEDS_APPROVAL, "risk_tier")
    assert executions == []
    call = only_call()
    request = ApprovalRequest.objects.get()
    assert result.approval_request_id == request.pk == call.approval_request_id
    assert result.for_model()["approval_request_id"] == request.pk
    tool = call.tool
    assert call.action_digest == action_digest("orders.refund", arguments, tenant.pk, "cust-42")
    assert request.action_digest == approval_binding(call.action_digest, tool)
    changed = action_digest("orders.refund", {**arguments, "amount": 26}, tenant.pk, "cust-42")
    assert request.action_digest != approval_binding(changed, tool)
    assert (request.requested_by, request.rule, request.status) == (people["support_agent"], "risk_tier", "pending")
    assert (request.tool_call_id, request.tool_name, request.risk_tier) == (call.pk, "orders.refund", tier)
    assert (request.agent_id, request.tenant_id, request.subject, request.amount) == (
        agent.pk,
        tenant.pk,
        "cust-42",
        Decimal("25"),
    )
    assert f"{tier} risk" in request.rule_text
    assert (call.outcome, call.pending_arguments) == (Outcome.NEEDS_APPROVAL, arguments)
    requested = chained(event_type="tool.requested").get()
    assert requested.decision == Outcome.NEEDS_APPROVAL
    assert requested.data["payload"]["call_id"] == str(call.pk)
    approval = chained(event_type="approval.requested").get()
    assert approval.data["payload"]["approval_request_id"] == request.pk
    assert not chained(event_type="tool.executed").exists()


def test_a_require_approval_grant_opens_a_request_for_a_low_risk_tool(tool, context, executions):
    grant(tool, "support_agent", Effect.REQUIRE_APPROVAL)

    result = invoke(context, "orders.touch", {})

    assert (result.outcome, result.reason_code) == (Outcome.NEEDS_APPROVAL, "grant")
    assert ApprovalRequest.objects.get().rule == "grant"
    assert executions == []


def test_approval_mode_needs_a_human_for_writes_only(tenant, agent, tool, allowed, context, executions):
    reader = counting_tool(tenant, "orders.read")
    allow(agent, reader)
    grant(reader, "support_agent")
    set_mode(agent, RolloutMode.APPROVAL)

    write = invoke(context, "orders.touch", {})
    read = invoke(context, "orders.read", {})

    assert (write.outcome, write.reason_code) == (Outcome.NEEDS_APPROVAL, "rollout_mode")
    assert read.outcome == Outcome.EXECUTED
    assert len(executions) == 1


# --- Rollout modes and evaluation ----------------------------------------------------------


def test_shadow_never_executes_and_opens_no_approval(tenant, agent, tool, allowed, context, executions):
    high_tool(tenant, agent)
    set_mode(agent, RolloutMode.SHADOW)

    low = invoke(context, "orders.touch", {"note": "x"})
    high = invoke(context, "orders.refund", {"amount": 10})

    assert (low.outcome, low.reason_code) == (Outcome.PROPOSED, "shadow")
    assert (high.outcome, high.reason_code) == (Outcome.PROPOSED, "shadow")
    assert low.data == {"proposed_action": {"tool": "orders.touch", "arguments": {"note": "x"}}}
    assert "would execute" in low.message and "wait for approval" in high.message
    assert not ApprovalRequest.objects.exists()
    assert set(ToolCall.objects.values_list("outcome", flat=True)) == {Outcome.PROPOSED}
    assert not ToolCall.objects.filter(pending_arguments__isnull=False).exists()
    assert [event.decision for event in chained(event_type="tool.requested")] == [Outcome.PROPOSED] * 2
    assert executions == []


def test_suggest_returns_the_proposed_action(agent, tool, allowed, context, executions):
    set_mode(agent, RolloutMode.SUGGEST)

    result = invoke(context, "orders.touch", {"note": "x"})

    assert (result.outcome, result.reason_code) == (Outcome.SUGGESTED, "suggest")
    assert result.for_model()["result"] == {"proposed_action": {"tool": "orders.touch", "arguments": {"note": "x"}}}
    assert executions == []


def test_assist_executes_reversible_tools_only(tenant, agent, tool, allowed, context, executions):
    final = counting_tool(tenant, "orders.close", risk_tier=RiskTier.MEDIUM, writes=True, reversible=False)
    allow(agent, final)
    grant(final, "support_agent")
    set_mode(agent, RolloutMode.ASSIST)

    reversible = invoke(context, "orders.touch", {})
    irreversible = invoke(context, "orders.close", {})

    assert reversible.outcome == Outcome.EXECUTED
    assert (irreversible.outcome, irreversible.reason_code) == (Outcome.SUGGESTED, "assist_irreversible")
    assert len(executions) == 1


@pytest.mark.parametrize(("tier", "would"), [(RiskTier.LOW, "evaluation"), (RiskTier.HIGH, "evaluation_approval")])
def test_an_evaluation_run_decides_and_records_but_never_executes(tenant, agent, people, tier, would, executions):
    made = counting_tool(tenant, "orders.eval", risk_tier=tier, writes=True)
    allow(agent, made)
    grant(made, "support_agent")
    context = context_for(agent, people["support_agent"], evaluation=True)

    result = invoke(context, "orders.eval", {})

    assert (result.outcome, result.reason_code) == (Outcome.PROPOSED, would)  # what it would have done
    assert only_call().outcome == Outcome.PROPOSED
    assert not ApprovalRequest.objects.exists()
    assert executions == []


# --- The agent and the connection -----------------------------------------------------------


def test_a_suspended_agent_is_denied(agent, people, allowed, context, executions):
    agents.suspend_agent(agent=agent, by=people["security"], reason="Investigating refunds")

    result = invoke(context, "orders.touch", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "agent_not_running")
    assert executions == []


def test_a_retired_agent_is_denied(agent, allowed, context, executions):
    agent.status = AgentStatus.RETIRED
    agent.save()

    assert invoke(context, "orders.touch", {}).reason_code == "agent_not_running"
    assert executions == []


def test_the_tenants_kill_switch_denies_and_releasing_it_restores(tenant, people, allowed, context, executions):
    agents.set_kill_switch(engaged=True, by=people["security"], reason="Incident 42", tenant=tenant)

    stopped = invoke(context, "orders.touch", {})

    assert (stopped.outcome, stopped.reason_code) == (Outcome.DENIED, "agent_not_running")
    assert "Incident 42" in stopped.message
    agents.set_kill_switch(engaged=False, by=people["security"], reason="Resolved", tenant=tenant)
    assert invoke(context, "orders.touch", {}).executed
    assert len(executions) == 1


def test_the_global_kill_switch_denies(superuser, allowed, context, executions):
    agents.set_kill_switch(engaged=True, by=superuser, reason="Platform incident")

    assert invoke(context, "orders.touch", {}).reason_code == "agent_not_running"
    assert executions == []


def test_a_disabled_tool_is_denied(tool, allowed, context, executions):
    tool.is_active = False
    tool.save()

    result = invoke(context, "orders.touch", {})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "tool_disabled")
    assert executions == []


@pytest.fixture
def http_calls(monkeypatch):
    """The HTTP connector, replaced: each request it would send lands in the list."""
    sent = []

    def fake(invocation):
        sent.append(invocation)
        return {"refund_id": "R-1"}

    monkeypatch.setattr(connectors, "call_http", fake)
    return sent


@pytest.fixture
def refund(tenant, agent, people):
    """refund.issue over HTTP (medium risk, so it runs without a human when granted)."""
    orders = connection(tenant, people["security"])
    made = http_tool(tenant, orders, risk_tier=RiskTier.MEDIUM)
    allow(agent, made)
    grant(made, "support_agent")
    return made


def test_revoking_a_connection_denies_from_the_very_next_call(refund, people, context, http_calls):
    arguments = {"order_id": "A-1001", "amount": 12}
    assert invoke(context, "refund.issue", arguments).executed

    tools.revoke_connection(connection=refund.connection, by=people["security"], reason="Key leaked")
    result = invoke(context, "refund.issue", arguments)

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "connection_revoked")
    assert len(http_calls) == 1


# --- Rate limits ---------------------------------------------------------------------------


@pytest.mark.usefixtures("frozen_now")
def test_per_person_per_minute(tenant, agent, tool, allowed, context, executions):
    tool.per_user_per_minute = 2
    tool.save()

    results = [invoke(context, "orders.touch", {}) for _ in range(3)]
    colleague = member(tenant, "support_agent", username="second.agent")
    theirs = invoke(context_for(agent, colleague, channel="web_chat"), "orders.touch", {})

    assert [result.outcome for result in results] == [Outcome.EXECUTED, Outcome.EXECUTED, Outcome.DENIED]
    assert results[2].reason_code == "rate_limited"
    assert "2 calls a minute per person" in results[2].message
    assert theirs.executed
    assert len(executions) == 3


@pytest.mark.usefixtures("frozen_now")
def test_per_minute_across_everyone(tenant, agent, tool, allowed, executions):
    tool.per_minute = 2
    tool.save()
    callers = [member(tenant, "support_agent", username=f"agent.{n}") for n in range(3)]

    results = [invoke(context_for(agent, caller), "orders.touch", {}) for caller in callers]

    assert [result.outcome for result in results] == [Outcome.EXECUTED, Outcome.EXECUTED, Outcome.DENIED]
    assert results[2].reason_code == "rate_limited"
    assert len(executions) == 2


def limit_per_day_by_policy(tenant, security, calls: int) -> None:
    """A tenant guardrail policy allowing one person ``calls`` calls of orders.touch a day."""
    policy = guardrails.save_policy(
        document=f"rate_limits:\n  per_tool_per_user_per_day:\n    default: 200\n    orders.touch: {calls}\n",
        by=security,
        tenant=tenant,
    )
    guardrails.activate_policy(policy=policy, by=security)


def test_the_guardrail_policys_daily_limit_per_tool(tenant, people, tool, allowed, context, executions):
    limit_per_day_by_policy(tenant, people["security"], 2)

    results = [invoke(context, "orders.touch", {}) for _ in range(3)]

    assert [result.outcome for result in results] == [Outcome.EXECUTED, Outcome.EXECUTED, Outcome.DENIED]
    assert results[2].reason_code == "rate_limited"
    assert "guardrail policy" in results[2].message
    assert len(executions) == 2


@pytest.mark.usefixtures("frozen_now")
def test_a_rate_limited_call_leaves_the_daily_limit_alone(tool, context, executions):
    grant(tool, "support_agent", daily_limit_per_user=2)
    tool.per_user_per_minute = 1
    tool.save()

    assert invoke(context, "orders.touch", {}).executed
    assert invoke(context, "orders.touch", {}).reason_code == "rate_limited"
    tool.per_user_per_minute = 0
    tool.save()
    assert invoke(context, "orders.touch", {}).executed  # the second of two, not a third
    assert invoke(context, "orders.touch", {}).reason_code == "condition_failed"
    assert len(executions) == 2


@pytest.mark.usefixtures("frozen_now")
def test_a_rate_limited_call_gives_back_its_guardrail_day_count(tenant, people, tool, allowed, context, executions):
    limit_per_day_by_policy(tenant, people["security"], 2)
    tool.per_user_per_minute = 1
    tool.save()

    assert invoke(context, "orders.touch", {}).executed
    assert invoke(context, "orders.touch", {}).reason_code == "rate_limited"  # the minute's limit
    tool.per_user_per_minute = 0
    tool.save()

    assert invoke(context, "orders.touch", {}).executed  # the second of the day's two
    refused = invoke(context, "orders.touch", {})
    assert (refused.reason_code, "guardrail policy" in refused.message) == ("rate_limited", True)
    assert len(executions) == 2


def test_a_grant_over_its_daily_limit_stops_holding_and_the_others_decide(tenant, agent, tool, executions):
    both = member(tenant, "support_agent", username="agent.and.lead")
    member(tenant, "support_lead", username="agent.and.lead")
    allow(agent, tool)
    grant(tool, "support_agent", Effect.ALLOW, daily_limit_per_user=1)
    grant(tool, "support_lead", Effect.REQUIRE_APPROVAL, max_amount=Decimal("500"))
    context = context_for(agent, both, channel="web_chat")

    # Both hold: the stricter (approval) wins, and the allow grant's count is given back...
    first = invoke(context, "orders.touch", {"amount": 20})
    # ...so once the approval grant's condition fails, the allow grant still has its one call.
    second = invoke(context, "orders.touch", {"amount": 900})
    third = invoke(context, "orders.touch", {"amount": 900})

    assert (first.outcome, first.reason_code) == (Outcome.NEEDS_APPROVAL, "grant")
    assert second.executed, second.message
    assert third.reason_code == "condition_failed"
    assert "1 times a day" in third.message and "up to 500" in third.message
    assert len(executions) == 1


@pytest.mark.usefixtures("frozen_now")
def test_a_replay_does_not_use_up_the_rate_limit(tool, allowed, context, executions):
    tool.per_user_per_minute = 2
    tool.save()

    first = invoke(context, "orders.touch", {}, idempotency_key="model-call-1")
    again = invoke(context, "orders.touch", {}, idempotency_key="model-call-1")
    second = invoke(context, "orders.touch", {}, idempotency_key="model-call-2")

    assert first.executed and again.replayed
    assert second.executed, second.message  # the second real call of two allowed


# --- Idempotency -----------------------------------------------------------------------------


@pytest.mark.usefixtures("frozen_now")
def test_no_execution_and_no_call_without_the_requests_record(tool, allowed, context, executions, monkeypatch):
    """The call's row and its tool.requested event are written together: if the event
    cannot be written, neither is the row, nothing runs, and the limits are not used up."""
    from apps.audit import services as audit_services

    tool.per_user_per_minute = 1
    tool.save()
    build_body = audit_services.build_body

    def refusing(event_type, **fields):
        if event_type == "tool.requested":
            raise ValueError("the audit trail refuses this event")
        return build_body(event_type, **fields)

    monkeypatch.setattr(audit_services, "build_body", refusing)
    with pytest.raises(ValueError, match="refuses"):
        invoke(context, "orders.touch", {})
    monkeypatch.setattr(audit_services, "build_body", build_body)

    assert executions == [] and not ToolCall.objects.exists()
    assert invoke(context, "orders.touch", {}).executed  # the minute's one call is still there


def test_the_same_key_twice_runs_once_and_replays(allowed, context, executions):
    first = invoke(context, "orders.touch", {"note": "x"}, idempotency_key="model-call-1")
    second = invoke(context, "orders.touch", {"note": "x"}, idempotency_key="model-call-1")

    assert first.executed and not first.replayed
    assert (second.outcome, second.replayed, second.call_id) == (Outcome.EXECUTED, True, first.call_id)
    assert second.data == first.data == {"ran": 1}
    assert len(executions) == 1
    assert executions[0].idempotency_key == "model-call-1"
    assert ToolCall.objects.count() == 1
    assert chained(event_type="tool.executed").count() == 1


def test_the_same_key_for_other_arguments_is_refused(allowed, context, executions):
    invoke(context, "orders.touch", {"note": "x"}, idempotency_key="model-call-1")

    result = invoke(context, "orders.touch", {"note": "y"}, idempotency_key="model-call-1")

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "idempotency_key_reused")
    assert result.call_id is None
    assert len(executions) == 1
    assert ToolCall.objects.count() == 1


def test_a_call_still_executing_is_not_run_again(allowed, context, executions):
    first = invoke(context, "orders.touch", {}, idempotency_key="model-call-1")
    # As if the first attempt were still running, or its worker died mid-call.
    ToolCall.objects.filter(pk=first.call_id).update(outcome=Outcome.EXECUTING)

    result = invoke(context, "orders.touch", {}, idempotency_key="model-call-1")

    assert (result.outcome, result.reason_code, result.replayed) == (
        Outcome.FAILED,
        "in_progress_or_interrupted",
        True,
    )
    assert len(executions) == 1


def test_a_repeat_of_a_call_waiting_for_approval_opens_no_second_request(tenant, agent, context, executions):
    high_tool(tenant, agent)

    first = invoke(context, "orders.refund", {"amount": 5}, idempotency_key="model-call-1")
    again = invoke(context, "orders.refund", {"amount": 5}, idempotency_key="model-call-1")

    assert (again.outcome, again.replayed) == (Outcome.NEEDS_APPROVAL, True)
    assert again.approval_request_id == first.approval_request_id
    assert ApprovalRequest.objects.count() == 1


def test_within_a_turn_the_same_call_is_the_same_action(agent, people, allowed, executions):
    in_turn = context_for(agent, people["support_agent"], turn_id="turn-7")
    no_turn = context_for(agent, people["support_agent"])

    invoke(in_turn, "orders.touch", {"note": "x"})
    repeat = invoke(in_turn, "orders.touch", {"note": "x"})
    invoke(no_turn, "orders.touch", {"note": "x"})
    invoke(no_turn, "orders.touch", {"note": "x"})

    assert repeat.replayed
    assert len(executions) == 3


def test_idempotency_keys_belong_to_their_tenant(context, allowed, other_tenant, executions, people):
    globex_agent = AgentFactory(tenant=other_tenant, owner=member(other_tenant, "agent_owner", username="g.owner"))
    globex_agent.rollout_mode = RolloutMode.AUTONOMOUS
    globex_agent.save()
    globex_tool = counting_tool(other_tenant, "orders.touch")
    allow(globex_agent, globex_tool)
    grant(globex_tool, "support_agent")
    globex_person = member(other_tenant, "support_agent", username="globex.agent")

    acme = invoke(context, "orders.touch", {}, idempotency_key="call_0")
    globex = invoke(context_for(globex_agent, globex_person), "orders.touch", {}, idempotency_key="call_0")

    assert acme.executed
    assert globex.executed, globex.message
    assert len(executions) == 2


def test_a_replay_is_only_for_the_person_who_made_the_call(agent, people, tool, executions):
    grant(tool, "support_agent")
    first = invoke(context_for(agent, people["support_agent"]), "orders.touch", {}, idempotency_key="call_0")

    theirs = invoke(context_for(agent, people["compliance"]), "orders.touch", {}, idempotency_key="call_0")

    assert first.executed
    assert theirs.data is None and not theirs.executed, "compliance holds no grant for orders.touch"


# --- Failures ----------------------------------------------------------------------------------


@pytest.fixture
def breaking(tenant, agent, register_builtin):
    """orders.break: its built-in raises, with internals in the exception."""
    attempts = []

    def explode(invocation):
        attempts.append(invocation)
        raise RuntimeError("password=hunter2 at /srv/app/orders.py line 12")

    register_builtin("tests.exploding", explode, {"type": "object"})
    made = counting_tool(tenant, "orders.break", builtin="tests.exploding", writes=True)
    allow(agent, made)
    grant(made, "support_agent")
    return attempts


def test_a_connector_that_raises_fails_the_call_once_and_quietly(breaking, context):
    result = invoke(context, "orders.break", {}, idempotency_key="model-call-1")

    assert (result.outcome, result.reason_code) == (Outcome.FAILED, "tool_failed")
    answer = result.for_model()
    assert answer == {"status": "failed", "message": "orders.break failed unexpectedly (RuntimeError)."}
    assert "hunter2" not in str(answer) and "Traceback" not in str(answer)
    call = only_call()
    assert (call.outcome, call.error) == (Outcome.FAILED, answer["message"])
    assert call.latency_ms is not None and call.finished_at is not None
    failed = chained(event_type="tool.failed").get()
    assert failed.outcome == Outcome.FAILED
    assert failed.data["latency_ms"] == call.latency_ms
    assert failed.data["payload"] == {"call_id": str(call.pk), "error": answer["message"]}
    assert "hunter2" not in audit_bodies()
    assert not chained(event_type="tool.executed").exists()
    # Never retried, not even when the same call comes again.
    again = invoke(context, "orders.break", {}, idempotency_key="model-call-1")
    assert (again.outcome, again.replayed) == (Outcome.FAILED, True)
    assert len(breaking) == 1


def test_a_timeout_is_reported_to_the_model_and_not_retried(refund, context, monkeypatch):
    attempts = []

    def timing_out(invocation):
        attempts.append(invocation)
        raise connectors.ConnectorError("Orders (sandbox) did not answer within 10 s.", timed_out=True, sent=True)

    monkeypatch.setattr(connectors, "call_http", timing_out)

    result = invoke(context, "refund.issue", {"order_id": "A-1001", "amount": 12})

    assert (result.outcome, result.message) == (Outcome.FAILED, "Orders (sandbox) did not answer within 10 s.")
    assert len(attempts) == 1
    assert chained(event_type="tool.failed").count() == 1


# --- What the database cannot hold (PostgreSQL refuses NUL in text and JSON) ----------------


@pytest.mark.parametrize("note", ["a\x00b", "half a pair \ud800"], ids=["nul", "surrogate"])
def test_arguments_that_cannot_be_recorded_are_refused_and_recorded(context, allowed, executions, note):
    result = invoke(context, "orders.touch", {"note": note})

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "invalid_arguments")
    assert "cannot be recorded" in result.message
    assert executions == []
    assert only_call().outcome == Outcome.DENIED  # the refusal itself is on record


def test_a_context_and_a_result_the_database_cannot_hold_are_stored_replaced(tenant, agent, people, register_builtin):
    register_builtin("tests.nul", lambda invocation: {"text": "x\x00y"}, {"type": "object"})
    made = counting_tool(tenant, "orders.nul", builtin="tests.nul")
    allow(agent, made)
    grant(made, "support_agent")
    context = context_for(agent, people["support_agent"], channel="web_chat", subject="C-1\x00", turn_id="t\x00")

    result = invoke(context, "orders.nul", {}, idempotency_key="key\x00")

    assert result.executed and result.data == {"text": "x\x00y"}  # the model gets what the tool said
    call = only_call()
    assert (call.subject, call.turn_id, call.idempotency_key) == ("C-1\ufffd", "t\ufffd", "key\ufffd")
    assert call.result == {"text": "x\ufffdy"}
    again = invoke(context, "orders.nul", {}, idempotency_key="key\x00")
    assert again.replayed and ToolCall.objects.count() == 1


def test_a_result_that_is_not_an_object_fails(tenant, agent, context, register_builtin):
    register_builtin("tests.listing", lambda invocation: ["not", "an", "object"], {"type": "object"})
    made = counting_tool(tenant, "orders.list", builtin="tests.listing")
    allow(agent, made)
    grant(made, "support_agent")

    result = invoke(context, "orders.list", {})

    assert result.outcome == Outcome.FAILED
    assert "other than an object" in result.message


def test_a_result_that_is_not_json_fails_the_call_and_is_recorded(tenant, agent, context, register_builtin):
    register_builtin("tests.money", lambda invocation: {"refunded": Decimal("12.50")}, {"type": "object"})
    made = counting_tool(tenant, "orders.money", builtin="tests.money", writes=True)
    allow(agent, made)
    grant(made, "support_agent")

    result = invoke(context, "orders.money", {})  # must not raise

    assert result.outcome in (Outcome.EXECUTED, Outcome.FAILED)
    assert only_call().outcome == result.outcome
    assert chained(event_type__in=["tool.executed", "tool.failed"]).count() == 1


# --- The audit trail ---------------------------------------------------------------------------


def let_tools_carry_secrets(tenant, security, *tool_names) -> None:
    """A tenant guardrail policy letting ``tool_names`` receive secrets (refused by default)."""
    lines = "".join(f"    {name}: [secret]\n" for name in tool_names)
    policy = guardrails.save_policy(document=f"tools:\n  allow_in_arguments:\n{lines}", by=security, tenant=tenant)
    guardrails.activate_policy(policy=policy, by=security)


def test_requested_is_recorded_before_executed_and_arguments_are_redacted(tenant, agent, people, allowed, executions):
    let_tools_carry_secrets(tenant, people["security"], "orders.touch")
    context = context_for(agent, people["support_agent"], channel="web_chat", turn_id="turn-9", conversation_id="c-9")
    note = f"Customer {EMAIL} pasted {TOKEN} into the chat"

    result = invoke(context, "orders.touch", {"note": note, "amount": 3})

    assert result.executed
    assert executions[0].arguments["note"] == note  # the connector gets what it needs...
    call = only_call()
    assert EMAIL not in str(call.arguments) and "abcdefghijklmnop" not in str(call.arguments)  # ...records do not
    events = [event for event in chained() if event.data.get("payload", {}).get("call_id") == str(call.pk)]
    assert [event.event_type for event in events] == ["tool.requested", "tool.executed"]
    requested, executed = events
    assert (requested.decision, requested.reason, requested.tool) == ("execute", "granted", "orders.touch")
    assert (requested.agent_id, requested.actor_id, requested.turn_id) == (
        agent.pk,
        people["support_agent"].pk,
        "turn-9",
    )
    assert requested.data["payload"]["grant_ids"] == call.grant_ids
    assert (executed.outcome, executed.data["latency_ms"]) == (Outcome.EXECUTED, call.latency_ms)
    bodies = audit_bodies()
    assert EMAIL not in bodies and "abcdefghijklmnop" not in bodies
    assert "[EMAIL]" in bodies


def test_an_approval_request_and_its_events_hold_redacted_arguments(tenant, agent, people, context, executions):
    high_tool(tenant, agent)
    let_tools_carry_secrets(tenant, people["security"], "orders.refund")
    arguments = {"amount": 5, "note": f"refund {EMAIL}, {TOKEN}"}

    invoke(context, "orders.refund", arguments)

    request = ApprovalRequest.objects.get()
    assert EMAIL not in str(request.arguments) and "abcdefghijklmnop" not in str(request.arguments)
    assert only_call().pending_arguments == arguments  # kept, unredacted, only to run it once approved
    bodies = audit_bodies()
    assert EMAIL not in bodies and "abcdefghijklmnop" not in bodies


# --- Running an approved call ----------------------------------------------------------------


@pytest.fixture
def waiting(tenant, agent, context, executions):
    """A high-risk refund waiting for approval: (its ToolCall, its ApprovalRequest)."""
    high_tool(tenant, agent)
    result = invoke(context, "orders.refund", {"amount": 40, "note": "damaged"})
    assert result.outcome == Outcome.NEEDS_APPROVAL
    return ToolCall.objects.get(pk=result.call_id), ApprovalRequest.objects.get(pk=result.approval_request_id)


def approve(request):
    request.status = "approved"
    request.save()


def test_an_approved_call_runs_exactly_once(waiting, executions):
    call, request = waiting
    approve(request)

    result = execute_approved(request.pk)
    again = execute_approved(request.pk)

    assert (result.outcome, result.call_id) == (Outcome.EXECUTED, call.pk)
    assert (again.outcome, again.reason_code) == (Outcome.FAILED, "not_executable")
    assert len(executions) == 1
    assert executions[0].arguments == {"amount": 40, "note": "damaged"}
    request.refresh_from_db()
    call.refresh_from_db()
    assert (request.status, request.executed_at is not None) == ("executed", True)
    assert (call.outcome, call.pending_arguments) == (Outcome.EXECUTED, None)
    assert chained(event_type="tool.executed").count() == 1


@pytest.mark.parametrize("status", ["pending", "rejected", "expired"])
def test_a_request_not_approved_does_not_run(waiting, executions, status):
    _call, request = waiting
    request.status = status
    request.save()

    result = execute_approved(request.pk)

    assert (result.outcome, result.reason_code) == (Outcome.FAILED, "not_executable")
    assert executions == []
    request.refresh_from_db()
    assert request.status == status


def test_a_pending_request_can_still_run_once_approved(waiting, executions):
    _call, request = waiting
    assert execute_approved(request.pk).reason_code == "not_executable"

    approve(request)

    assert execute_approved(request.pk).executed
    assert len(executions) == 1


def test_an_unknown_request_does_not_run(executions):
    assert execute_approved(987654).reason_code == "not_executable"


def assert_voided(result, call, request, executions, reason_code):
    assert (result.outcome, result.reason_code) == (Outcome.DENIED, reason_code), result.message
    assert executions == []
    request.refresh_from_db()
    call.refresh_from_db()
    assert request.status == "voided"
    assert request.outcome_note == result.message
    assert (call.outcome, call.reason_code, call.pending_arguments) == (Outcome.DENIED, reason_code, None)
    denied = chained(event_type="tool.requested", decision=Outcome.DENIED).get()
    assert denied.data["payload"]["approval_request_id"] == request.pk
    # Voided is final: approving again does not bring it back.
    approve(request)
    assert execute_approved(request.pk).reason_code == "not_executable"
    assert executions == []


def test_a_policy_refusing_what_an_approved_call_carries_voids_it(tenant, agent, people, context, executions):
    high_tool(tenant, agent)
    waiting = invoke(context, "orders.refund", {"amount": 40, "note": f"reach me at {EMAIL}"})
    call, request = ToolCall.objects.get(pk=waiting.call_id), ApprovalRequest.objects.get()
    document = "tools:\n  arguments:\n    email: refuse\n"
    policy = guardrails.save_policy(document=document, by=people["security"], tenant=tenant)
    guardrails.activate_policy(policy=policy, by=people["security"])
    approve(request)

    result = execute_approved(request.pk)

    assert_voided(result, call, request, executions, "personal_data_refused")


@pytest.mark.parametrize("mode", [RolloutMode.SHADOW, RolloutMode.SUGGEST])
def test_moving_the_agent_to_shadow_or_suggest_voids_an_approval(agent, waiting, executions, mode):
    call, request = waiting
    approve(request)
    set_mode(agent, mode)

    assert_voided(execute_approved(request.pk), call, request, executions, mode)


def test_moving_the_agent_to_assist_voids_an_irreversible_approved_call(agent, waiting, executions):
    call, request = waiting
    approve(request)
    set_mode(agent, RolloutMode.ASSIST)

    assert_voided(execute_approved(request.pk), call, request, executions, "assist_irreversible")


def test_a_revoked_grant_voids_an_approval(people, waiting, executions):
    call, request = waiting
    approve(request)
    tools.revoke_grant(grant=Grant.objects.get(tool__name="orders.refund"), by=people["security"], reason="Stop")

    assert_voided(execute_approved(request.pk), call, request, executions, "not_granted")


def test_a_grant_turned_to_deny_voids_an_approval(people, waiting, executions):
    call, request = waiting
    approve(request)
    tools.update_grant(grant=Grant.objects.get(tool__name="orders.refund"), by=people["security"], effect=Effect.DENY)

    assert_voided(execute_approved(request.pk), call, request, executions, "denied_by_grant")


def test_a_suspended_agent_voids_an_approval(agent, people, waiting, executions):
    call, request = waiting
    approve(request)
    agents.suspend_agent(agent=agent, by=people["security"], reason="Investigating")

    assert_voided(execute_approved(request.pk), call, request, executions, "agent_not_running")


def test_a_kill_switch_voids_an_approval(tenant, people, waiting, executions):
    call, request = waiting
    approve(request)
    agents.set_kill_switch(engaged=True, by=people["security"], reason="Incident", tenant=tenant)

    assert_voided(execute_approved(request.pk), call, request, executions, "agent_not_running")


def test_a_revoked_connection_voids_an_approval(tenant, agent, people, context, http_calls):
    orders = connection(tenant, people["security"])
    made = http_tool(tenant, orders, name="refund.large")  # high risk: waits for a human
    allow(agent, made)
    grant(made, "support_agent")
    result = invoke(context, "refund.large", {"order_id": "A-1001", "amount": 400})
    call, request = ToolCall.objects.get(pk=result.call_id), ApprovalRequest.objects.get()
    approve(request)
    tools.revoke_connection(connection=orders, by=people["security"], reason="Key leaked")

    assert_voided(execute_approved(request.pk), call, request, http_calls, "connection_revoked")


def test_tampered_arguments_void_the_approval_and_do_not_run(waiting, executions):
    call, request = waiting
    approve(request)
    ToolCall.objects.filter(pk=call.pk).update(pending_arguments={"amount": 4000, "note": "damaged"})

    result = execute_approved(request.pk)

    assert (result.outcome, result.reason_code) == (Outcome.FAILED, "not_executable")
    assert "differs from the one approved" in result.message
    assert executions == []
    request.refresh_from_db()
    assert request.status == "voided"
    assert execute_approved(request.pk).reason_code == "not_executable"
    assert executions == []


def test_a_tampered_subject_voids_the_approval(waiting, executions):
    call, request = waiting
    approve(request)
    ToolCall.objects.filter(pk=call.pk).update(subject="cust-99")

    result = execute_approved(request.pk)

    assert "differs from the one approved" in result.message
    assert executions == []
    request.refresh_from_db()
    assert request.status == "voided"


def test_a_tool_edited_after_approval_voids_it(waiting, people, executions):
    call, request = waiting
    approve(request)
    tools.save_tool(by=people["security"], tool=call.tool, timeout_seconds=3.0, reason="slower system")

    result = execute_approved(request.pk)

    assert "differs from the one approved" in result.message
    assert executions == []
    request.refresh_from_db()
    assert request.status == "voided"


def test_a_tampered_call_is_closed_and_audited(waiting, executions):
    call, request = waiting
    approve(request)
    ToolCall.objects.filter(pk=call.pk).update(pending_arguments={"amount": 4000, "note": "damaged"})

    execute_approved(request.pk)

    call.refresh_from_db()
    assert call.outcome != Outcome.NEEDS_APPROVAL
    assert call.pending_arguments is None
    assert chained(event_type="tool.requested", decision=Outcome.DENIED).exists()


def test_a_second_worker_cannot_void_a_call_that_is_already_running(tenant, agent, people, context, register_builtin):
    """The connector, mid-call, is where a second worker (a redelivered task) arrives after the
    agent was suspended: the running call must finish and be recorded as executed."""
    ran = []

    def meanwhile(invocation):
        ran.append(invocation)
        agents.suspend_agent(agent=agent, by=people["security"], reason="Investigating")
        ran.append(execute_approved(ApprovalRequest.objects.get().pk))
        return {"ok": True}

    register_builtin("tests.meanwhile", meanwhile, {"type": "object"})
    made = counting_tool(tenant, "orders.slow", builtin="tests.meanwhile", risk_tier=RiskTier.HIGH, writes=True)
    allow(agent, made)
    grant(made, "support_agent")
    request = ApprovalRequest.objects.get(pk=invoke(context, "orders.slow", {}).approval_request_id)
    approve(request)

    result = execute_approved(request.pk)

    request.refresh_from_db()
    call = ToolCall.objects.get(approval_request_id=request.pk)
    assert result.executed and call.outcome == Outcome.EXECUTED  # it did run...
    assert request.status == "executed", request.outcome_note  # ...so the approval must not read "voided"
    assert ran[1].outcome != Outcome.DENIED  # the second worker is refused; it does not decide again


def test_an_approved_call_that_fails_is_not_run_again(tenant, agent, context, breaking):
    made = counting_tool(
        tenant, "orders.break_hard", builtin="tests.exploding", risk_tier=RiskTier.HIGH, writes=True, reversible=False
    )
    allow(agent, made)
    grant(made, "support_agent")
    waiting = invoke(context, "orders.break_hard", {})
    request = ApprovalRequest.objects.get(pk=waiting.approval_request_id)
    approve(request)

    result = execute_approved(request.pk)
    again = execute_approved(request.pk)

    assert result.outcome == Outcome.FAILED
    assert again.reason_code == "not_executable"
    assert len(breaking) == 1
    request.refresh_from_db()
    assert request.status == "failed"
    assert ToolCall.objects.get(pk=waiting.call_id).outcome == Outcome.FAILED


# --- What the model is offered ---------------------------------------------------------------


def _offerable(tenant, agent, name, kind="support_agent", effect=Effect.ALLOW):
    made = builtin_tool(tenant, name=name)
    grant(made, kind, effect)
    allow(agent, made)
    return made


def test_tools_offered_are_allowlisted_granted_active_and_reachable(tenant, agent, people):
    security = people["security"]
    allowed = _offerable(tenant, agent, "crm.read")
    approval = _offerable(tenant, agent, "crm.note_add", effect=Effect.REQUIRE_APPROVAL)
    _offerable(tenant, agent, "customer.delete", effect=Effect.DENY)
    _offerable(tenant, agent, "ticket.close", kind="support_lead")  # another role's grant
    off_list = _offerable(tenant, agent, "order.cancel")
    AgentTool.objects.filter(tool=off_list).delete()
    disabled = _offerable(tenant, agent, "order.hold")
    tools.save_tool(by=security, tool=disabled, is_active=False)
    revoked = connection(tenant, security, name="revoked-crm")
    behind_revoked = http_tool(
        tenant, revoked, name="crm.export", risk_tier=RiskTier.LOW, writes=False, reversible=True
    )
    grant(behind_revoked, "support_agent")
    allow(agent, behind_revoked)
    tools.revoke_connection(connection=revoked, by=security, reason="rotated")

    offered = tools_offered(context_for(agent, people["support_agent"]))

    assert [tool.name for tool in offered] == [approval.name, allowed.name]
    assert tools_offered(context_for(agent, people["knowledge_owner"])) == []
