import pytest

from apps.agents.choices import AgentStatus

from ..accounts.factories import member
from ..agents.factories import AgentFactory

pytestmark = pytest.mark.django_db(transaction=True)


def sign_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", "test-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def test_security_signs_in_and_suspends_one_agent_from_the_admin(page, live_server, tenant):
    security = member(tenant, "security", username="sam.security")
    owner = member(tenant, "agent_owner", username="olivia.owner")
    target = AgentFactory(tenant=tenant, owner=owner, name="Refunds Agent", slug="refunds")
    bystander = AgentFactory(tenant=tenant, owner=owner, name="Support Assistant", slug="support")

    sign_in(page, live_server, security.username)
    assert page.locator("text=Refunds Agent").is_visible()

    page.goto(f"{live_server.url}/admin/agents/agent/")
    page.check(f"input[name=_selected_action][value='{target.pk}']")
    page.select_option("select[name=action]", "suspend_selected")
    page.click("button[name=index]")

    page.fill("textarea[name=reason]", "Quoting a deprecated refund policy")
    page.click("input[type=submit][value='Suspend agents']")
    page.wait_for_selector("text=Suspended: Refunds Agent.")

    target.refresh_from_db()
    bystander.refresh_from_db()
    assert target.status == AgentStatus.SUSPENDED
    assert target.status_changed_by == security
    assert target.status_reason == "Quoting a deprecated refund policy"
    assert bystander.status == AgentStatus.ACTIVE

    page.goto(f"{live_server.url}/")
    row = page.locator("tr", has_text="Refunds Agent")
    assert "Suspended" in row.inner_text()


def test_wrong_password_keeps_the_person_out(page, live_server, tenant):
    member(tenant, "security", username="sam.security")
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", "sam.security")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    assert "/accounts/login/" in page.url
    assert page.locator("text=not correct").is_visible()
    page.goto(f"{live_server.url}/admin/agents/agent/")
    assert "/login/" in page.url
