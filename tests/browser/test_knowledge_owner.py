"""A knowledge owner works their sources in a real browser: finds what is stale, reviews it,
approves a draft, and deletes a source, which leaves only a tombstone."""

import datetime

import pytest
from django.utils import timezone

from apps import knowledge
from apps.knowledge.choices import Lifecycle, Visibility
from apps.knowledge.models import KnowledgeSource
from apps.knowledge.retrieval import RetrievalContext

from ..accounts.factories import member
from ..knowledge.factories import source
from .test_suspend_agent import sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_owner_reviews_a_stale_source_approves_a_draft_and_deletes_one(page, live_server, tenant):
    owner = member(tenant, "knowledge_owner", username="kim.knowledge")
    stale = source(tenant, owner, title="Shipping times", body="Orders ship within two days.", visibility="public")
    reviewed = timezone.localdate() - datetime.timedelta(days=stale.review_cadence_days + 3)
    KnowledgeSource.objects.filter(pk=stale.pk).update(
        last_reviewed_on=reviewed, review_due_on=reviewed + datetime.timedelta(days=stale.review_cadence_days)
    )
    draft = source(
        tenant, owner, title="Gift cards", body="Gift cards never expire.", visibility="public", status="draft"
    )
    promo = source(tenant, owner, title="Holiday promo", body="Use code HOLIDAY24 at checkout.", visibility="public")
    customer = RetrievalContext(tenant_id=tenant.pk)
    assert knowledge.retrieve("When do orders ship?", customer).is_gap  # stale: excluded

    sign_in(page, live_server, owner.username)
    base = f"{live_server.url}/admin/knowledge/knowledgesource/"

    # Stale first: the filter, the red badge, the page, the button.
    page.goto(f"{base}?attention=stale")
    row = page.locator("#result_list tbody tr")
    assert row.count() == 1 and "Stale (excluded)" in row.inner_text()
    page.click("#result_list a:has-text('Shipping times')")
    page.click("a:has-text('Mark reviewed')")
    page.click("input[type=submit][value='Mark reviewed']")
    page.wait_for_selector("text=Mark reviewed: Shipping times.")
    assert knowledge.retrieve("When do orders ship?", customer).passages[0].source_title == "Shipping times"

    # The draft awaiting approval, approved from the list.
    page.goto(f"{base}?attention=awaiting_approval")
    page.check(f"input[name=_selected_action][value='{draft.pk}']")
    page.select_option("select[name=action]", "approve_selected")
    page.click("button[name=index]")
    page.wait_for_selector("text=Approved: Gift cards.")
    draft.refresh_from_db()
    assert draft.status == Lifecycle.APPROVED and draft.approved_by == owner

    # Delete asks why, then leaves a tombstone without the text.
    page.goto(f"{base}{promo.pk}/change/")
    page.click("a:has-text('Delete')")
    page.fill("textarea[name=reason]", "Promotion ended")
    page.click("input[type=submit][value='Delete']")
    page.wait_for_selector("text=Tombstone: the text was purged")
    assert "HOLIDAY24" not in page.content()
    promo.refresh_from_db()
    assert promo.status == Lifecycle.DELETED and promo.deletion_reason == "Promotion ended"
    assert knowledge.retrieve("holiday promo code", customer).is_gap
    assert promo.visibility == Visibility.PUBLIC  # the tombstone keeps what it was, not what it said
