"""An agent owner signs in, starts a conversation with a customer context, sends a message
and reads the answer and its trace, in a real browser. The agent has no model provider, so
the offline model answers by quoting the approved source."""

import pytest

from apps.agents.choices import RolloutMode
from tests.accounts.factories import member
from tests.agents.factories import AgentFactory
from tests.knowledge.factories import source

from .test_suspend_agent import sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_agent_owner_tries_an_agent_and_reads_the_trace(page, live_server, tenant):
    owner = member(tenant, "agent_owner", username="olivia.owner")
    curator = member(tenant, "knowledge_owner", username="kim.knowledge")
    AgentFactory(tenant=tenant, owner=owner, name="Returns Helper", slug="returns", rollout_mode=RolloutMode.ASSIST)
    source(
        tenant,
        curator,
        title="Refund policy",
        body="Refunds are accepted within 30 days of delivery for unused items.",
        visibility="public",
    )

    sign_in(page, live_server, owner.username)
    page.click("text=Try an agent")
    page.select_option("select[name=agent]", label="Returns Helper")
    page.fill("input[name=subject]", "C-1001")
    page.check("input[name=subject_verified]")
    page.click("button:has-text('Start a conversation')")
    page.wait_for_selector("h1:has-text('Returns Helper')")
    assert "C-1001" in page.inner_text("main") and "verified" in page.inner_text("main")

    page.fill("textarea[name=text]", "Within how many days are refunds accepted?")
    page.click("button:has-text('Send')")

    turn = page.locator("section.turn").first
    turn.locator(".turn-status", has_text="Completed").wait_for()
    assert "Refunds are accepted within 30 days" in turn.locator("blockquote.output").inner_text()
    assert "Offline model" in turn.inner_text()
    assert turn.locator(".turn-decision").inner_text() == "answer"
    turn.locator("summary", has_text="Trace").click()
    assert turn.locator("li.step-retrieval").is_visible()
    assert turn.locator("li.step-decision").is_visible()
