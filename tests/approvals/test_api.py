"""/api/v1/approvals/: list, read, approve and reject, under the same rules as the pages."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalDecision, ApprovalRequest
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

LIST = "/api/v1/approvals/"


def approve_url(request) -> str:
    return f"{LIST}{request.pk}/approve/"


def reject_url(request) -> str:
    return f"{LIST}{request.pk}/reject/"


def test_the_list_shows_pending_requests_by_due_with_sla_and_quorum(api_client, lead, ask):
    small, large = ask(amount=40, subject="cust-1"), ask(amount=900, subject="cust-2")
    api_client.force_authenticate(lead)

    rows = api_client.get(LIST).json()["results"]

    assert [row["id"] for row in rows] == [small.pk, large.pk]
    assert rows[1]["approvals_required"] == 2 and rows[1]["approvals_given"] == 0
    assert rows[0]["sla_status"] == "on_time" and rows[0]["tool_name"] == "refund.issue"
    assert "context" not in rows[0]  # the list stays light; the detail has it


def test_the_list_filters_and_rejects_unknown_values(api_client, lead, ask):
    ask()
    api_client.force_authenticate(lead)
    assert api_client.get(LIST, {"tool": "refund.issue"}).json()["count"] == 1
    assert api_client.get(LIST, {"risk_tier": "low"}).json()["count"] == 0
    assert api_client.get(LIST, {"status": "any"}).json()["count"] == 1
    assert api_client.get(LIST, {"status": "maybe"}).status_code == 400
    assert api_client.get(LIST, {"risk_tier": "extreme"}).status_code == 400
    assert api_client.get(LIST, {"agent": "x"}).status_code == 400


def test_the_list_query_count_does_not_grow_with_rows(api_client, lead, ask):
    api_client.force_authenticate(lead)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api_client.get(LIST).status_code == 200
        return len(captured)

    ask(subject="cust-0")
    queries()  # the first request also reads the caller's roles, cached on the user
    few = queries()
    for number in range(1, 12):
        ask(subject=f"cust-{number}")
    assert queries() == few


def test_the_detail_has_the_context_and_the_decisions(api_client, lead, ask):
    request = ask()
    api_client.force_authenticate(lead)
    body = api_client.get(f"{LIST}{request.pk}/").json()
    assert body["context"]["agent_reason"].startswith("The order arrived damaged")
    assert body["arguments"] == {"amount": 40, "note": "damaged"}
    assert body["decisions"] == []


def test_approving_through_the_api_runs_the_action_once(
    api_client, lead, ask, executions, django_capture_on_commit_callbacks
):
    request = ask()
    api_client.force_authenticate(lead)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(approve_url(request), {"comment": "From the chat tool"}, format="json")

    assert response.status_code == 200
    assert response.json()["decisions"][0]["approver"] == lead.username
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.EXECUTED
    assert len(executions) == 1
    again = api_client.post(approve_url(request), {}, format="json")
    assert again.status_code == 409 and "no longer be decided" in again.json()["detail"]


def test_rejecting_needs_a_comment(api_client, lead, ask):
    request = ask()
    api_client.force_authenticate(lead)
    missing = api_client.post(reject_url(request), {}, format="json")
    assert missing.status_code == 400 and "comment" in missing.json()
    done = api_client.post(reject_url(request), {"comment": "Duplicate of an earlier refund"}, format="json")
    assert done.status_code == 200 and done.json()["status"] == ApprovalStatus.REJECTED


def test_self_approval_and_approvers_without_the_grant_get_403(api_client, tenant, people, ask, executions):
    requester = people["support_agent"]
    member(tenant, "support_lead", username=requester.username)
    request = ask(user=requester)
    for user in (requester, people["admin"], people["compliance"]):
        api_client.force_authenticate(user)
        assert api_client.post(approve_url(request), {}, format="json").status_code == 403
    assert not ApprovalDecision.objects.exists() and not executions


def test_another_tenants_request_is_not_found(api_client, ask, other_tenant):
    request = ask()
    api_client.force_authenticate(member(other_tenant, "support_lead", username="globex.lead"))
    assert api_client.get(f"{LIST}{request.pk}/").status_code == 404
    assert api_client.post(approve_url(request), {}, format="json").status_code == 404
    assert api_client.get(LIST).json()["count"] == 0


def test_nobody_decides_in_someone_elses_name(api_client, lead, second_lead, ask):
    request = ask()
    api_client.force_authenticate(lead)
    response = api_client.post(approve_url(request), {"approver": second_lead.username}, format="json")
    assert response.status_code == 400 and "approver" in response.json()
    assert not ApprovalDecision.objects.exists()


def test_anonymous_callers_are_refused(api_client, ask):
    request = ask()
    assert api_client.get(LIST).status_code in (401, 403)
    assert api_client.post(approve_url(request), {}, format="json").status_code in (401, 403)
