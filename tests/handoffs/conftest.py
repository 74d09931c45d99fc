"""Fixtures for handoffs: the runtime's (a scripted model server, an agent on it, a
conversation and ``talk``, imported here because a non-root conftest cannot declare
``pytest_plugins``), the people who work handoffs, and Acme's three queues."""

import pytest

from apps.accounts.models import Role
from tests.runtime.conftest import (  # noqa: F401 — fixtures
    _empty_counters,
    actor,
    chat_agent,
    conversation,
    model_server,
    provider,
    talk,
)
from tests.tools.conftest import executions, fresh_cache, register_builtin  # noqa: F401 — fixtures

from .factories import make_queue


@pytest.fixture
def admin(people):
    return people["admin"]


@pytest.fixture
def lead(people):
    return people["support_lead"]


@pytest.fixture
def worker(people):
    """A support agent: works handoffs (handoffs.change_handoff), configures no queues."""
    return people["support_agent"]


@pytest.fixture
def queues(tenant, admin):
    """Acme's queues as the demo has them: a default, one for billing disputes (escalating
    to the default), and one for legal and medical topics that only support leads work."""
    agents_and_leads = list(Role.objects.filter(tenant=tenant, kind__in=["support_agent", "support_lead"]))
    tier2 = make_queue(tenant, admin, "Support tier 2", sla_minutes=60, is_default=True, roles=agents_and_leads)
    billing = make_queue(
        tenant,
        admin,
        "Billing & refunds",
        sla_minutes=120,
        topics=["billing dispute"],
        escalate_to=tier2,
        roles=agents_and_leads,
    )
    legal = make_queue(
        tenant,
        admin,
        "Legal & compliance",
        sla_minutes=30,
        topics=["legal", "medical"],
        roles=list(Role.objects.filter(tenant=tenant, kind="support_lead")),
    )
    return {"tier2": tier2, "billing": billing, "legal": legal}
