"""A support lead signs in, opens a pending refund from the approval queue, reads what the
agent saw and said, approves it and watches it run; and a rejection needs a reason. In a real
browser, with htmx swapping the decision panel (tasks run in process: the approved refund
executes right after the decision commits, in the live server's thread)."""

import pytest

from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalDecision, ApprovalRequest
from tests.approvals.conftest import CONVERSATION, ask, lead, refund_tool  # noqa: F401 — fixtures
from tests.tools.conftest import executions, fresh_cache, register_builtin  # noqa: F401 — fixtures

from .test_suspend_agent import sign_in

# The live server runs in another thread: rows must be committed for it to see them. The
# counting built-in's ``executions`` list lives in this process, so it sees the run too.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_cache")]


def open_from_the_queue(page, live_server, username: str, subject: str) -> None:
    """Sign in, follow the top bar's Approvals link and open the request for ``subject``."""
    sign_in(page, live_server, username)
    page.locator("header.topbar nav a", has_text="Approvals").click()
    page.wait_for_selector("h1:has-text('Approval queue')")
    row = page.locator("table.approval-queue tbody tr", has_text=subject)
    assert row.count() == 1
    assert "refund.issue" in row.inner_text() and "40.00" in row.inner_text()
    row.locator("a", has_text="refund.issue").click()
    page.wait_for_selector("#decision-panel")
    # The panel's forms post through htmx (the no-JavaScript path is tested elsewhere).
    assert page.evaluate("typeof window.htmx") == "object"


def test_a_support_lead_approves_a_pending_refund_and_sees_it_executed(page, live_server, ask, lead, executions):  # noqa: F811
    request = ask(amount=40, subject="C-1001", verified=True, context=CONVERSATION)
    assert executions == []

    open_from_the_queue(page, live_server, lead.username, "C-1001")

    main = page.inner_text("main")
    assert "identity verified" in main
    assert page.locator("dt:has-text('Amount') + dd").inner_text() == "40.00"
    assert "My blender arrived broken, order A-1001." in page.inner_text("ol.transcript")
    assert "I can ask for a refund of 40.00." in page.inner_text("ol.transcript")
    assert page.inner_text("blockquote.agent-reason") == CONVERSATION["agent_reason"]
    panel = page.locator("#decision-panel")
    assert panel.locator(".badge[data-status]").inner_text() == "Waiting for a decision"

    page.fill("#decision-panel textarea[name=comment]", "Damaged on arrival; within the refund window.")
    page.evaluate("window.notReloaded = true")
    panel.locator("button", has_text="Approve").click()

    panel.locator(".badge[data-status=executed]", has_text="Executed").wait_for()
    assert page.evaluate("window.notReloaded") is True  # htmx swapped the panel in place
    assert "Damaged on arrival; within the refund window." in panel.inner_text()
    assert not panel.locator("button", has_text="Approve").count()
    request.refresh_from_db()
    assert request.status == ApprovalStatus.EXECUTED
    assert request.result == {"ran": 1}
    assert len(executions) == 1
    assert executions[0].arguments == {"amount": 40, "note": "damaged"}
    decision = ApprovalDecision.objects.get(request=request)
    assert (decision.approver, decision.approve) == (lead, True)


def test_a_rejection_without_a_reason_is_refused_then_rejected_with_one(page, live_server, ask, lead, executions):  # noqa: F811
    request = ask(amount=40, subject="C-1002", verified=False, context=CONVERSATION)

    open_from_the_queue(page, live_server, lead.username, "C-1002")
    assert "identity not verified" in page.inner_text("main")
    panel = page.locator("#decision-panel")

    page.evaluate("window.notReloaded = true")
    panel.locator("button", has_text="Reject").click()
    panel.locator(".alert.danger", has_text="Say why you reject it").wait_for()
    assert page.evaluate("window.notReloaded") is True
    assert panel.locator(".badge[data-status]").inner_text() == "Waiting for a decision"
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    assert not ApprovalDecision.objects.filter(request=request).exists()

    page.fill("#decision-panel textarea[name=comment]", "The customer's identity is not verified.")
    panel.locator("button", has_text="Reject").click()

    panel.locator(".badge[data-status=rejected]", has_text="Rejected").wait_for()
    assert not panel.locator(".alert.danger").count()
    request = ApprovalRequest.objects.get(pk=request.pk)
    assert request.status == ApprovalStatus.REJECTED
    assert request.outcome_note == "The customer's identity is not verified."
    assert executions == []
