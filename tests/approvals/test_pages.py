"""The approval queue and request pages: what they show, who may act, the no-JavaScript and
htmx paths, and a constant query count."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalDecision, ApprovalRequest
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

QUEUE = reverse("approvals:queue")


def detail_url(request) -> str:
    return reverse("approvals:detail", args=[request.pk])


def decide_url(request) -> str:
    return reverse("approvals:decide", args=[request.pk])


def test_the_queue_lists_pending_requests_most_urgent_first(client, lead, ask, decide):
    ask(subject="cust-1")
    sooner, decided = ask(subject="cust-2"), ask(subject="cust-3")
    ApprovalRequest.objects.filter(pk=sooner.pk).update(due_at=timezone.now() - datetime.timedelta(minutes=1))
    decide(decided, lead)
    client.force_login(lead)

    html = client.get(QUEUE).content.decode()

    assert html.index("cust-2") < html.index("cust-1")
    assert "cust-3" not in html  # decided: not in the pending view
    assert "Overdue" in html and "On time" in html
    assert 'href="/approvals/"' in html  # the top bar links the queue for leads


def test_the_queue_filters_by_tool_tier_tenant_and_overdue(client, lead, ask, tenant, refund_tool):
    ask(subject="cust-1")
    client.force_login(lead)
    assert "cust-1" in client.get(QUEUE, {"tool": "refund.issue", "risk_tier": "high"}).content.decode()
    assert "cust-1" not in client.get(QUEUE, {"risk_tier": "low"}).content.decode()
    assert "cust-1" not in client.get(QUEUE, {"overdue": "on"}).content.decode()
    assert "cust-1" in client.get(QUEUE, {"tenant": tenant.slug}).content.decode()
    assert "cust-1" in client.get(QUEUE, {"status": ""}).content.decode()


def test_an_htmx_filter_gets_only_the_results(client, lead, ask):
    ask(subject="cust-1")
    client.force_login(lead)
    response = client.get(QUEUE, {"tool": "refund.issue"}, headers={"HX-Request": "true", "HX-Target": "queue-results"})
    html = response.content.decode()
    assert "cust-1" in html and "<html" not in html and "queue-count" in html


def test_the_queue_costs_the_same_number_of_queries_for_5_or_30_requests(client, lead, ask):
    client.force_login(lead)

    def queries_for_page() -> int:
        client.get(QUEUE)  # warm the session and the role cache the same way each time
        with CaptureQueriesContext(connection) as captured:
            assert client.get(QUEUE).status_code == 200
        return len(captured)

    for number in range(5):
        ask(subject=f"cust-{number}")
    few = queries_for_page()
    for number in range(5, 30):
        ask(subject=f"cust-{number}", amount=900 if number % 2 else 40)
    assert queries_for_page() == few, few
    assert few <= 12, few  # session, user, roles, filter choices, count, page, approvers


def test_people_who_may_not_see_requests_are_refused_and_other_tenants_are_not_found(client, people, ask, other_tenant):
    request = ask()
    client.force_login(people["knowledge_owner"])
    assert client.get(QUEUE).status_code == 403
    outsider = member(other_tenant, "support_lead", username="globex.lead")
    client.force_login(outsider)
    assert "cust-42" not in client.get(QUEUE).content.decode()
    assert client.get(detail_url(request)).status_code == 404
    assert client.post(decide_url(request), {"decision": "approve"}).status_code == 404
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.PENDING


def test_a_request_page_shows_what_a_careful_approver_needs(client, lead, ask, decide):
    earlier = decide(ask(amount=30, note="first"), lead, approve=False, comment="No receipt")
    request = ask(amount=40)
    client.force_login(lead)

    html = client.get(detail_url(request)).content.decode()

    for expected in (
        "refund.issue",
        "40.00",
        "high risk",
        "identity verified",
        "My blender arrived broken",  # the conversation so far
        "within the 30-day refund window",  # the agent's stated reason
        "Refund policy",  # the sources it used
        "risk_tier",  # the rule that required approval
        "No receipt",  # an earlier request for this customer, and what became of it
        "Approve",
    ):
        assert expected in html, expected
    assert f'href="{detail_url(earlier)}"' in html


def test_without_javascript_approving_posts_redirects_and_the_action_runs(
    client, lead, ask, executions, django_capture_on_commit_callbacks
):
    request = ask()
    client.force_login(lead)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(decide_url(request), {"decision": "approve", "comment": "Fine"})

    assert response.status_code == 302 and response["Location"] == detail_url(request)
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.EXECUTED
    assert len(executions) == 1
    page = client.get(response["Location"]).content.decode()
    assert "Your decision is recorded" in page and "Executed" in page


def test_with_htmx_deciding_returns_the_panel_and_errors_stay_in_it(client, lead, ask, executions):
    request = ask()
    client.force_login(lead)
    htmx = {"HX-Request": "true"}

    refused = client.post(decide_url(request), {"decision": "reject", "comment": ""}, headers=htmx).content.decode()
    assert 'id="decision-panel"' in refused and "<html" not in refused
    assert "Say why you reject it" in refused
    assert not ApprovalDecision.objects.exists()

    rejected = client.post(decide_url(request), {"decision": "reject", "comment": "Too late"}, headers=htmx)
    assert "Rejected" in rejected.content.decode() and "Too late" in rejected.content.decode()
    assert not executions


def test_the_requester_and_people_without_the_grant_see_why_they_cannot_decide(client, people, ask, tenant):
    request = ask()
    compliance = people["compliance"]
    client.force_login(compliance)
    html = client.get(detail_url(request)).content.decode()
    assert "You may not decide approval requests" in html and 'value="approve"' not in html

    response = client.post(decide_url(request), {"decision": "approve"})
    assert response.status_code == 302
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.PENDING
    assert not ApprovalDecision.objects.exists()


def test_an_approved_action_still_running_is_polled_until_done(client, lead, ask):
    request = ask()
    ApprovalRequest.objects.filter(pk=request.pk).update(status=ApprovalStatus.EXECUTING)
    client.force_login(lead)
    html = client.get(detail_url(request)).content.decode()
    assert 'hx-trigger="load delay:1s"' in html and 'http-equiv="refresh"' in html

    ApprovalRequest.objects.filter(pk=request.pk).update(status=ApprovalStatus.EXECUTED)
    panel = client.get(reverse("approvals:panel", args=[request.pk])).content.decode()
    assert "Executed" in panel and "hx-trigger" not in panel


def test_the_fatigue_page_suggests_a_lower_gate_for_a_tool_almost_always_approved(client, lead, ask, settings):
    settings.APPROVAL_FATIGUE_MIN_SAMPLE = 3
    now = timezone.now()
    for number in range(4):
        request = ask(subject=f"cust-{number}")
        ApprovalRequest.objects.filter(pk=request.pk).update(
            status=ApprovalStatus.EXECUTED, decided_at=now + datetime.timedelta(minutes=2 * number)
        )
    client.force_login(lead)
    html = client.get(reverse("approvals:signals")).content.decode()
    assert "Consider a lower gate" in html and "100%" in html


def test_the_pager_of_the_default_view_stays_on_pending_requests_by_due(client, lead, ask, decide):
    for number in range(26):
        ask(subject=f"cust-{number:02d}")
    decide(ask(subject="cust-decided"), lead)
    client.force_login(lead)

    first = client.get(QUEUE).content.decode()
    assert "26 requests pending" in first and "?page=2" in first
    second = client.get(QUEUE, {"page": 2}).content.decode()
    assert "26 requests pending" in second and "cust-decided" not in second
    assert 'value="pending" selected' in second
