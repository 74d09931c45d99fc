"""A support agent asks an agent for a person on /try/, then works the handoff on
/handoffs/ in a real browser: with htmx the actions panel swaps in place (no page load);
without JavaScript the same forms post and redirect back."""

import pytest

from apps.accounts.models import Role
from apps.agents.choices import RolloutMode
from apps.handoffs.models import Handoff
from tests.accounts.factories import member
from tests.agents.factories import AgentFactory
from tests.handoffs.factories import make_handoff, make_queue

from .test_suspend_agent import sign_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tier2(tenant):
    admin = member(tenant, "admin", username="tara.admin")
    roles = list(Role.objects.filter(tenant=tenant, kind__in=["support_agent", "support_lead"]))
    return make_queue(tenant, admin, "Support tier 2", is_default=True, roles=roles)


def test_a_support_agent_claims_and_resolves_a_handoff_with_htmx(page, live_server, tenant, tier2):
    agent_smith = member(tenant, "support_agent", username="agent.smith")
    owner = member(tenant, "agent_owner", username="olivia.owner")
    AgentFactory(tenant=tenant, owner=owner, name="Support Assistant", slug="support", rollout_mode=RolloutMode.ASSIST)

    sign_in(page, live_server, agent_smith.username)
    page.click("text=Try an agent")
    page.select_option("select[name=agent]", label="Support Assistant")
    page.fill("input[name=subject]", "C-1001")
    page.click("button:has-text('Start a conversation')")
    page.fill("textarea[name=text]", "I want to speak to a human about order A-1042")
    page.click("button:has-text('Send')")
    page.locator("section.turn .turn-status", has_text="Completed").wait_for()

    page.click("nav >> text=Handoffs")
    row = page.locator("table.handoffs tbody tr").first
    assert "C-1001" in row.inner_text() and "Support tier 2" in row.inner_text()
    row.locator("a").first.click()
    assert "I want to speak to a human about order A-1042" in page.inner_text("main")

    page.evaluate("window.notReloaded = true")
    page.click("button:has-text('Claim')")
    panel = page.locator("#handoff-actions")
    panel.locator(".alert.ok", has_text="You claimed this handoff").wait_for()
    page.click("button:has-text('Resolve')")  # nothing typed: the error comes back in the panel
    panel.locator(".field-error", has_text="Say how it was resolved").wait_for()
    page.fill("textarea[name=resolution]", "Called the customer; refund for A-1042 issued by hand.")
    page.click("button:has-text('Resolve')")
    panel.locator(".badge.status-resolved").wait_for()

    assert page.evaluate("window.notReloaded") is True  # every step swapped the panel in place
    handoff = Handoff.objects.get()
    assert (handoff.status, handoff.resolved_by_id) == ("resolved", agent_smith.pk)


def test_without_javascript_the_same_forms_work(browser, live_server, tenant, tier2):
    lead = member(tenant, "support_lead", username="lead.lopez")
    handoff = make_handoff(tenant)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in(page, live_server, lead.username)
        page.goto(f"{live_server.url}/handoffs/{handoff.pk}/")
        page.click("button:has-text('Claim')")
        page.wait_for_url(f"{live_server.url}/handoffs/{handoff.pk}/")
        assert "You claimed this handoff" in page.inner_text("ul.messages")
        page.fill("textarea[name=note]", "The agent can answer opening hours.")
        page.click("button:has-text('Return to the agent')")
        page.locator("ul.messages", has_text="Returned to the agent").wait_for()
    finally:
        context.close()
    assert Handoff.objects.get().status == "returned"
