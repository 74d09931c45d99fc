"""The gateway's authorization matrix: every person (by role) x tool (risk tier x read /
reversible write / irreversible write) x rollout mode, against an expectation written
from the rules, not from the gateway's code:

- no role in the tenant, or no grant among the person's roles: denied;
- among the grants of the person's roles, the strictest effect wins (deny > approval > allow);
- high and critical tools need a human's approval whatever the grant says;
- the rollout mode only makes it stricter: shadow records a proposal, suggest hands the
  action to a human, assist runs reversible tools only, approval needs a human for every
  write, autonomous runs what the grants allow.

Each case also checks the record: one ToolCall with that outcome, an ApprovalRequest only
when one is needed, and the tool's connector run only when the outcome is "executed".
"""

from dataclasses import dataclass

import pytest
from django.core.exceptions import ValidationError

from apps.accounts.models import Role
from apps.agents.choices import RolloutMode
from apps.approvals.models import ApprovalRequest
from apps.tools.choices import ConnectorKind, Effect, Outcome, RiskTier
from apps.tools.gateway import invoke
from apps.tools.models import AgentTool, Grant, Tool, ToolCall
from tests.accounts.factories import UserFactory, member
from tests.agents.factories import AgentFactory

from .conftest import COUNTING, NOTE_SCHEMA
from .factories import context_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]

ALLOW, APPROVE, DENY = Effect.ALLOW, Effect.REQUIRE_APPROVAL, Effect.DENY
HUMAN_TIERS = (RiskTier.HIGH, RiskTier.CRITICAL)


@dataclass(frozen=True)
class MatrixTool:
    tier: str
    kind: str  # read | write (reversible) | irreversible (write)

    @property
    def name(self) -> str:
        return f"matrix.{self.tier}_{self.kind}"

    @property
    def writes(self) -> bool:
        return self.kind != "read"

    @property
    def reversible(self) -> bool:
        return self.kind != "irreversible"


# A low-risk tool that writes and cannot be undone is refused by Tool.clean: not in the matrix.
TOOLS = [
    MatrixTool(tier, kind)
    for tier in RiskTier.values
    for kind in ("read", "write", "irreversible")
    if not (tier == RiskTier.LOW and kind == "irreversible")
]


def grant_effect(role_kind: str, tool: MatrixTool) -> str | None:
    """What each role's grant for ``tool`` says (None: the role holds no grant for it)."""
    return {
        "support_agent": ALLOW,
        "support_lead": APPROVE if tool.writes else ALLOW,
        "knowledge_owner": DENY if tool.tier == RiskTier.CRITICAL else ALLOW,
        "compliance": None,
        "security": APPROVE,
        "agent_owner": None if tool.writes else ALLOW,
        "admin": DENY,
    }[role_kind]


# Who acts: each role alone, two people holding two roles, and someone with none.
PERSONAS = {
    "support_agent": ("support_agent",),
    "support_lead": ("support_lead",),
    "knowledge_owner": ("knowledge_owner",),
    "compliance": ("compliance",),
    "security": ("security",),
    "agent_owner": ("agent_owner",),
    "admin": ("admin",),
    "support_agent+support_lead": ("support_agent", "support_lead"),
    "support_agent+knowledge_owner": ("support_agent", "knowledge_owner"),
    "nobody": (),
}


@dataclass(frozen=True)
class Expected:
    outcome: str
    reason_code: str = ""  # for denials
    rule: str = ""  # for approvals: what required one


def expected(persona: str, tool: MatrixTool, mode: str) -> Expected:
    roles = PERSONAS[persona]
    if not roles:
        return Expected(Outcome.DENIED, "no_role")
    effects = {grant_effect(role, tool) for role in roles} - {None}
    if not effects:
        return Expected(Outcome.DENIED, "not_granted")
    if DENY in effects:
        return Expected(Outcome.DENIED, "denied_by_grant")
    # What the grants and the tier say, before the rollout mode.
    rule = "grant" if APPROVE in effects else "risk_tier" if tool.tier in HUMAN_TIERS else ""
    if mode == RolloutMode.SHADOW:
        return Expected(Outcome.PROPOSED)
    if mode == RolloutMode.SUGGEST:
        return Expected(Outcome.SUGGESTED)
    if mode == RolloutMode.ASSIST and not tool.reversible:
        return Expected(Outcome.SUGGESTED)
    if not rule and mode == RolloutMode.APPROVAL and tool.writes:
        rule = "rollout_mode"
    if rule:
        return Expected(Outcome.NEEDS_APPROVAL, rule=rule)
    return Expected(Outcome.EXECUTED)


def test_the_expectation_reads_as_the_rules_say():
    """A few cases in words, so the table above can be trusted before it judges the gateway."""
    low_read, low_write = MatrixTool(RiskTier.LOW, "read"), MatrixTool(RiskTier.LOW, "write")
    critical = MatrixTool(RiskTier.CRITICAL, "irreversible")
    assert expected("support_agent", low_write, RolloutMode.AUTONOMOUS).outcome == Outcome.EXECUTED
    assert expected("support_agent", low_write, RolloutMode.APPROVAL).rule == "rollout_mode"
    assert expected("support_agent", low_read, RolloutMode.APPROVAL).outcome == Outcome.EXECUTED
    assert expected("support_agent", critical, RolloutMode.AUTONOMOUS).rule == "risk_tier"
    assert expected("support_agent", critical, RolloutMode.ASSIST).outcome == Outcome.SUGGESTED
    assert expected("support_agent+support_lead", low_write, RolloutMode.AUTONOMOUS).rule == "grant"
    assert expected("support_agent+knowledge_owner", critical, RolloutMode.SHADOW).reason_code == "denied_by_grant"
    assert expected("compliance", low_read, RolloutMode.AUTONOMOUS).reason_code == "not_granted"


def test_the_matrix_tools_are_valid(tenant, executions):
    """What the configuration bulk-inserts is what Tool.clean and Grant.clean accept; the one
    combination left out of the matrix is the one Tool.clean refuses."""
    roles = {role.kind: role for role in Role.objects.filter(tenant=tenant)}
    for spec in TOOLS:
        tool = matrix_tool(tenant, spec)
        tool.full_clean()
        tool.save()
        for kind, role in roles.items():
            effect = grant_effect(kind, spec)
            if effect is not None:
                Grant(tenant=tenant, role=role, tool=tool, effect=effect).full_clean()
    refused = matrix_tool(tenant, MatrixTool(RiskTier.LOW, "irreversible"))
    with pytest.raises(ValidationError, match="at least medium risk"):
        refused.full_clean()


def matrix_tool(tenant, spec: MatrixTool) -> Tool:
    return Tool(
        tenant=tenant,
        name=spec.name,
        description=f"{spec.name} for the matrix",
        connector=ConnectorKind.BUILTIN,
        builtin=COUNTING,
        argument_schema=NOTE_SCHEMA,
        risk_tier=spec.tier,
        writes=spec.writes,
        reversible=spec.reversible,
    )


@pytest.fixture
def agent(tenant):
    """Acme's agent, owned by its one agent owner (the shared fixture would also make a
    person for every role, which the matrix, at 550 cases, cannot afford)."""
    return AgentFactory(tenant=tenant, owner=member(tenant, "agent_owner", username="agent.owner"))


@pytest.fixture
def configuration(tenant, agent, executions):
    """Acme's eleven matrix tools, all on the agent's allowlist, with each role's grants.

    Written in three bulk inserts: the matrix builds it for each of its 550 cases, and
    row-by-row validated saves with history would take minutes."""
    roles = {role.kind: role for role in Role.objects.filter(tenant=tenant)}
    tools = [matrix_tool(tenant, spec) for spec in TOOLS]
    Tool.objects.bulk_create(tools)  # each one passes Tool.full_clean: test_the_matrix_tools_are_valid
    grants = [
        Grant(tenant=tenant, role=role, tool=tool, effect=effect)
        for spec, tool in zip(TOOLS, tools, strict=True)
        for kind, role in roles.items()
        if (effect := grant_effect(kind, spec)) is not None
    ]
    Grant.objects.bulk_create(grants)  # grants without conditions: see test_the_matrix_tools_are_valid
    AgentTool.objects.bulk_create(AgentTool(agent=agent, tool=tool) for tool in tools)
    return {tool.name: tool for tool in tools}


def acting_user(persona: str, tenant):
    """The person acting: holding exactly the persona's roles in acme (none for nobody)."""
    username = persona.replace("+", ".and.").replace("_", ".")
    user = UserFactory(username=username)
    for kind in PERSONAS[persona]:
        member(tenant, kind, username=username)
    return user


CASES = [
    pytest.param(persona, spec, mode, id=f"{persona}-{spec.name}-{mode}")
    for persona in PERSONAS
    for spec in TOOLS
    for mode in RolloutMode.values
]


@pytest.mark.parametrize(("persona", "spec", "mode"), CASES)
def test_matrix(persona, spec, mode, configuration, tenant, agent, executions):
    agent.rollout_mode = mode
    agent.save()
    user = acting_user(persona, tenant)
    want = expected(persona, spec, mode)

    result = invoke(context_for(agent, user, channel="web_chat"), spec.name, {"note": "matrix"})

    assert result.outcome == want.outcome, result.message
    if want.reason_code:
        assert result.reason_code == want.reason_code
    (call,) = ToolCall.objects.all()
    assert (call.outcome, call.tool_name, call.user_id, call.rollout_mode) == (want.outcome, spec.name, user.pk, mode)
    assert len(executions) == (1 if want.outcome == Outcome.EXECUTED else 0)
    if want.outcome == Outcome.NEEDS_APPROVAL:
        (request,) = ApprovalRequest.objects.all()
        assert (request.tool_call_id, request.rule, request.status) == (call.pk, want.rule, "pending")
        assert call.pending_arguments == {"note": "matrix"}
    else:
        assert not ApprovalRequest.objects.exists()
        assert call.pending_arguments is None
        assert call.finished_at is not None
    if want.outcome in (Outcome.PROPOSED, Outcome.SUGGESTED):
        assert result.data == {"proposed_action": {"tool": spec.name, "arguments": {"note": "matrix"}}}
