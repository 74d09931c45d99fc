"""/api/v1/handoffs/: anonymous, no permission, other tenant, allowed — for reading and for
each command; 400/403/404/409 as the services decide; constant queries on the list."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import User
from apps.handoffs import services
from apps.handoffs.choices import HandoffStatus
from apps.handoffs.models import Handoff
from apps.runtime.choices import ConversationStatus
from tests.accounts.factories import member

from .factories import make_handoff

pytestmark = pytest.mark.django_db

LIST = "/api/v1/handoffs/"


def detail(handoff) -> str:
    return f"/api/v1/handoffs/{handoff.pk}/"


def ids(response) -> list[int]:
    return [row["id"] for row in response.json()["results"]]


@pytest.fixture
def as_worker(api_client, worker):
    api_client.force_authenticate(worker)
    return api_client


def test_anonymous_callers_are_refused(api_client, tenant):
    handoff = make_handoff(tenant)

    assert api_client.get(LIST).status_code in (401, 403)
    assert api_client.post(detail(handoff) + "claim/").status_code in (401, 403)
    assert Handoff.objects.get().status == HandoffStatus.OPEN


def test_the_list_shows_my_tenants_waiting_handoffs_soonest_due_first(as_worker, tenant, other_tenant, queues, people):
    later = make_handoff(tenant)
    sooner = make_handoff(tenant, urgency="urgent")
    make_handoff(other_tenant)

    response = as_worker.get(LIST)

    assert response.status_code == 200
    assert ids(response) == [sooner.pk, later.pk]
    row = response.json()["results"][0]
    assert row["tenant"] == "acme" and row["queue_name"] == "Support tier 2"
    assert (row["priority"], row["sla_state"], row["status"]) == ("urgent", "on_time", "open")
    assert "transcript" not in row  # the package is on the handoff's own endpoint


def test_people_without_a_role_that_reads_handoffs_list_nothing(api_client, tenant, people):
    make_handoff(tenant)
    api_client.force_authenticate(people["nobody"])

    assert ids(api_client.get(LIST)) == []


def test_the_list_filters_and_refuses_a_bad_filter(as_worker, tenant, other_tenant, superuser, queues, worker):
    legal = make_handoff(tenant, reason_code="topic", topic="legal")
    mine = make_handoff(tenant)
    services.claim(handoff_id=mine.pk, by=worker)

    assert ids(as_worker.get(LIST, {"queue": queues["legal"].pk})) == [legal.pk]
    assert ids(as_worker.get(LIST, {"mine": "true"})) == [mine.pk]
    assert ids(as_worker.get(LIST, {"status": "claimed"})) == [mine.pk]
    globex = services.save_queue(by=superuser, tenant=other_tenant, name="Globex tier 2")
    refused = as_worker.get(LIST, {"queue": globex.pk, "priority": "asap"})
    assert refused.status_code == 400
    assert set(refused.json()) == {"queue", "priority"}


def test_the_list_makes_the_same_number_of_queries_for_5_or_50_handoffs(as_worker, tenant, queues, lead, worker):
    def fill(count):
        for number in range(count):
            handoff = make_handoff(tenant)
            if number % 2:
                services.claim(handoff_id=handoff.pk, by=lead)

    def listed(count):
        as_worker.force_authenticate(User.objects.get(pk=worker.pk))  # no roles cached from an earlier request
        with CaptureQueriesContext(connection) as queries:
            assert len(ids(as_worker.get(LIST))) == count
        return queries

    fill(5)
    five = listed(5)
    fill(45)
    fifty = listed(50)

    assert len(fifty) == len(five)


def test_a_handoff_comes_with_its_package(as_worker, queues, conversation, talk):
    turn = talk(conversation, "I want to speak to a human please")
    handoff = Handoff.objects.get(turn_id=str(turn.pk))

    body = as_worker.get(detail(handoff)).json()

    assert body["reason"] == handoff.reason and body["reason_code"] == "human_request"
    assert body["customer"]["subject"] == "C-1001"
    assert body["transcript"][-1]["customer"] == "I want to speak to a human please"
    expected = {"account_context", "sources", "tool_calls", "sentiment", "summary", "due_at", "queue_name"}
    assert expected <= set(body)
    assert body["conversation_id"] == str(conversation.pk) and body["turn_id"] == str(turn.pk)


def test_a_handoff_of_another_tenant_is_not_found(api_client, tenant, other_tenant):
    handoff = make_handoff(tenant)
    api_client.force_authenticate(member(other_tenant, "support_lead", username="globex.lead"))

    assert api_client.get(detail(handoff)).status_code == 404
    assert api_client.post(detail(handoff) + "claim/").status_code == 404
    assert api_client.post(detail(handoff) + "resolve/", {"resolution": "x"}).status_code == 404
    assert api_client.post(detail(handoff) + "return/", {"note": "x"}).status_code == 404
    assert api_client.get("/api/v1/handoffs/not-a-number/").status_code == 404


def test_claim(as_worker, api_client, tenant, queues, worker, lead, people):
    handoff = make_handoff(tenant)

    response = as_worker.post(detail(handoff) + "claim/")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["claimed_by"]) == ("claimed", worker.username)

    api_client.force_authenticate(lead)
    conflict = api_client.post(detail(handoff) + "claim/")
    assert conflict.status_code == 409
    assert f"{worker} claimed this handoff" in conflict.json()["detail"]

    api_client.force_authenticate(people["compliance"])  # reads handoffs, works none
    assert api_client.post(detail(make_handoff(tenant)) + "claim/").status_code == 403


def test_a_queue_role_is_needed_to_claim_from_that_queue(as_worker, tenant, queues):
    handoff = make_handoff(tenant, reason_code="topic", topic="legal")

    response = as_worker.post(detail(handoff) + "claim/")

    assert response.status_code == 403
    assert "“Legal & compliance” is worked by people holding Support lead" in response.json()["detail"]


def test_resolve(as_worker, api_client, tenant, queues, worker, lead):
    handoff = make_handoff(tenant)
    as_worker.post(detail(handoff) + "claim/")

    missing = as_worker.post(detail(handoff) + "resolve/", {}, format="json")
    assert missing.status_code == 400 and "resolution" in missing.json()
    blank = as_worker.post(detail(handoff) + "resolve/", {"resolution": " "}, format="json")
    assert blank.status_code == 400
    assert blank.json() == {"resolution": ["Say how it was resolved: it is kept with the handoff."]}
    api_client.force_authenticate(lead)
    assert api_client.post(detail(handoff) + "resolve/", {"resolution": "Mine"}, format="json").status_code == 403

    api_client.force_authenticate(worker)
    done = api_client.post(detail(handoff) + "resolve/", {"resolution": "Refunded by hand"}, format="json")
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["resolution"]) == ("resolved", "Refunded by hand")
    again = api_client.post(detail(handoff) + "resolve/", {"resolution": "Again"}, format="json")
    assert again.status_code == 409


def test_return_reopens_the_conversation(as_worker, queues, conversation, talk, django_capture_on_commit_callbacks):
    turn = talk(conversation, "I want to speak to a human please")
    handoff = Handoff.objects.get(turn_id=str(turn.pk))

    assert as_worker.post(detail(handoff) + "return/", {"note": ""}, format="json").status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        response = as_worker.post(detail(handoff) + "return/", {"note": "Opening hours only"}, format="json")

    assert response.status_code == 200 and response.json()["status"] == "returned"
    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.OPEN


def test_openapi_schema_lists_the_handoff_endpoints(api_client):
    paths = api_client.get("/api/schema/", {"format": "json"}).json()["paths"]

    for path in ("/api/v1/handoffs/", "/api/v1/handoffs/{id}/", "/api/v1/handoffs/{id}/claim/"):
        assert path in paths
    assert "post" in paths["/api/v1/handoffs/{id}/resolve/"]
    assert "post" in paths["/api/v1/handoffs/{id}/return/"]
