import os

import pytest

from apps import audit
from apps.audit.exports import verify_export_file

from ..accounts.factories import member
from .test_suspend_agent import sign_in

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = os.environ.get("AUDIT_SCREENSHOTS")  # a directory, to look at the pages while changing them


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def test_compliance_searches_reads_a_turn_and_downloads_a_verifiable_export(page, live_server, tenant, tmp_path):
    compliance = member(tenant, "compliance", username="carla.compliance")
    asker = member(tenant, "support_agent", username="sid.support")
    lead = member(tenant, "support_lead", username="lena.lead")
    turn = {"tenant": tenant, "actor": asker, "turn_id": "turn-42"}
    audit.record("turn.received", **turn, payload={"message": "Refund order A-1 please"})
    audit.record("guardrail.verdict", **turn, decision="allow", guardrail_verdict={"verdict": "allow"})
    audit.record("approval.decided", **turn, tool="refund.issue", approval_status="approved", approver=lead)
    audit.record("tool.executed", **turn, tool="refund.issue", arguments={"amount": 40}, approver=lead, outcome="ok")
    audit.record("turn.completed", **turn, outcome="answered", payload={"output": "Your refund is on its way."})
    audit.record("turn.received", tenant=tenant, actor=asker, turn_id="turn-43")
    audit.record("audit.verified", outcome="ok", payload={"summary": "OK"})

    sign_in(page, live_server, compliance.username)
    page.click("nav >> text=Audit")
    page.wait_for_selector("text=Chain last verified:")
    assert page.locator("table.audit-events tbody tr").count() == 6
    shot(page, "events")

    page.select_option("select[name=event_type]", "tool.executed")
    page.click("button:has-text('Search')")
    page.wait_for_url("**event_type=tool.executed**")
    assert page.locator("table.audit-events tbody tr").count() == 1

    page.click("table.audit-events >> text=turn-42")
    page.wait_for_selector("h1:has-text('turn-42')")
    assert page.locator("ol.timeline > li").count() == 5
    assert page.locator("text=Your refund is on its way.").is_visible()
    shot(page, "turn")

    page.click("ol.timeline >> text=tool.executed")
    page.wait_for_selector("h1:has-text('Event #4')")
    assert page.locator("dt:has-text('row_hash')").is_visible()
    shot(page, "event")

    page.goto(f"{live_server.url}/audit/?tool=refund.issue")
    with page.expect_download() as download_info:
        page.click("button:has-text('Export CSV')")
    download = download_info.value
    assert download.suggested_filename.startswith("audit-export-")
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    assert verify_export_file(target).startswith("OK: 2 rows")

    page.goto(f"{live_server.url}/audit/reports/")
    assert page.locator("text=Refunds executed").is_visible()
    shot(page, "reports")
