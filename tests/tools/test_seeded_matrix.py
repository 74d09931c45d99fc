"""The authorization matrix over the demo's seeded configuration: every seeded agent x
rollout mode x role x tool, through the real gateway and the real HTTP connector, against
the rule as the issue states it. The sandbox systems are stood in for by a plain HTTP server
that answers every request (the decision is what is under test; the sandbox has its own
tests), and a call counts as executed only if that server received it."""

import io

import pytest
from django.core.management import call_command

from apps.accounts.models import Tenant, User
from apps.agents.choices import RolloutMode
from apps.agents.management.commands.seed_demo import DEMO_PEOPLE
from apps.agents.models import Agent
from apps.approvals.models import ApprovalRequest
from apps.tools.choices import Effect, Outcome, RiskTier
from apps.tools.demo import ALLOWLISTS, GRANTS, TOOLS
from apps.tools.gateway import TurnContext, invoke
from apps.tools.models import Connection, ToolCall

from .factories import AnsweringServer

ARGUMENTS = {
    "knowledge.search": {"query": "How do I return a damaged blender?"},
    "ticket.create": {"title": "Follow up on order A-1042"},
    "handoff.create": {"reason_code": "customer_request", "reason": "The customer asked to speak to a person."},
    "order.lookup": {"order_id": "A-1042"},
    "crm.read": {"customer_id": "C-1001"},
    "crm.note_add": {"customer_id": "C-1001", "text": "Reported the blender arrived cracked."},
    "refund.issue": {"order_id": "A-1042", "amount": 50, "reason": "arrived damaged"},
    "customer.email": {"customer_id": "C-1001", "subject": "Your refund", "body": "Your refund is on its way."},
    "customer.delete": {"customer_id": "C-1001"},
}
TOOL_SPECS = {spec["name"]: spec for spec in TOOLS}


def expected(kind: str, tool_name: str, agent_slug: str, mode: str) -> str:
    """The issue's rule, restated: allowlist AND a grant; deny wins; high and critical
    always need a human; the rollout mode only makes it stricter."""
    grant = GRANTS.get(kind, {}).get(tool_name)
    if tool_name not in ALLOWLISTS[agent_slug] or grant is None:
        return Outcome.DENIED
    effect = grant.get("effect", Effect.ALLOW)
    if effect == Effect.DENY:
        return Outcome.DENIED
    spec = TOOL_SPECS[tool_name]
    needs_human = effect == Effect.REQUIRE_APPROVAL or spec["risk_tier"] in (RiskTier.HIGH, RiskTier.CRITICAL)
    if mode == RolloutMode.SHADOW:
        return Outcome.PROPOSED
    if mode == RolloutMode.SUGGEST or (mode == RolloutMode.ASSIST and not spec.get("reversible", True)):
        return Outcome.SUGGESTED
    if mode == RolloutMode.APPROVAL and spec.get("writes", False):
        needs_human = True
    return Outcome.NEEDS_APPROVAL if needs_human else Outcome.EXECUTED


@pytest.fixture
def seeded_with_server(settings, mailoutbox, db, fresh_cache):
    settings.DEBUG = True
    call_command("seed_demo", stdout=io.StringIO())
    server = AnsweringServer()
    Connection.objects.filter(tenant__slug="acme").update(base_url=server.url)
    yield server
    server.server.shutdown()


def test_every_seeded_agent_mode_role_and_tool_decides_as_the_rule_says(seeded_with_server):
    server = seeded_with_server
    people = {kind: User.objects.get(username=username) for username, _name, kind in DEMO_PEOPLE}
    mismatches, cases = [], 0
    seeded = ToolCall.objects.count()  # the demo's refunds waiting for approval
    for agent_slug in ALLOWLISTS:
        agent = Agent.objects.get(tenant__slug="acme", slug=agent_slug)
        for mode in RolloutMode.values:
            Agent.objects.filter(pk=agent.pk).update(rollout_mode=mode)
            for kind, user in people.items():
                for tool_name, arguments in ARGUMENTS.items():
                    cases += 1
                    context = TurnContext(
                        tenant_id=agent.tenant_id,
                        agent_id=agent.pk,
                        user_id=user.pk,
                        channel="web_chat",
                        subject="C-1001",
                        subject_verified=True,
                    )
                    sent_before = len(server.received)
                    result = invoke(context, tool_name, arguments)
                    want = expected(kind, tool_name, agent_slug, mode)
                    reached_system = len(server.received) > sent_before
                    http_tool = "connection" in TOOL_SPECS[tool_name]
                    if result.outcome != want or (http_tool and reached_system != (want == Outcome.EXECUTED)):
                        mismatches.append((agent_slug, mode, kind, tool_name, want, result.outcome, result.message))

    assert cases == len(ALLOWLISTS) * len(RolloutMode.values) * len(people) * len(ARGUMENTS) == 945
    assert mismatches == []
    assert ToolCall.objects.count() == seeded + cases
    assert ApprovalRequest.objects.count() == ToolCall.objects.filter(outcome=Outcome.NEEDS_APPROVAL).count() > 0
    assert ToolCall.objects.filter(outcome=Outcome.EXECUTED).exists()


def test_an_acme_agent_acting_in_globex_is_denied_in_the_seeded_configuration(seeded_with_server):
    smith = User.objects.get(username="agent.smith")
    agent = Agent.objects.get(tenant__slug="acme", slug="support-assistant")
    Agent.objects.filter(pk=agent.pk).update(rollout_mode=RolloutMode.AUTONOMOUS)
    globex = Tenant.objects.get(slug="globex")

    result = invoke(
        TurnContext(tenant_id=globex.pk, agent_id=agent.pk, user_id=smith.pk), "order.lookup", ARGUMENTS["order.lookup"]
    )

    assert (result.outcome, result.reason_code) == (Outcome.DENIED, "cross_tenant")
    assert seeded_with_server.received == []
