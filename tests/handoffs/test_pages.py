"""/handoffs/: the queue (who sees what, filters, SLA at a glance, a constant number of
queries), one handoff's page, and claim/resolve/return as plain POSTs and with htmx."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.handoffs import services
from apps.handoffs.choices import HandoffStatus
from apps.handoffs.models import Handoff
from tests.accounts.factories import member

from .factories import make_handoff

pytestmark = pytest.mark.django_db

QUEUE = reverse("handoffs:queue")
HTMX = {"HTTP_HX_REQUEST": "true"}


def url(name, handoff) -> str:
    return reverse(f"handoffs:{name}", args=[handoff.pk])


def rows(response) -> list[int]:
    return [handoff.pk for handoff in response.context["page"].object_list]


@pytest.fixture
def as_lead(client, lead):
    client.force_login(lead)
    return client


@pytest.fixture
def as_worker(client, worker):
    client.force_login(worker)
    return client


def test_anonymous_people_are_sent_to_sign_in(client, tenant):
    handoff = make_handoff(tenant)

    for address in (QUEUE, url("detail", handoff)):
        response = client.get(address)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    response = client.post(url("claim", handoff))
    assert response.status_code == 302
    assert Handoff.objects.get().status == HandoffStatus.OPEN


def test_people_without_a_role_that_reads_handoffs_are_refused(client, people):
    client.force_login(people["nobody"])
    assert client.get(QUEUE).status_code == 403
    client.force_login(people["knowledge_owner"])
    assert client.get(QUEUE).status_code == 403


def test_the_queue_lists_waiting_handoffs_of_my_tenants_soonest_due_first(as_lead, tenant, other_tenant, queues, lead):
    normal = make_handoff(tenant)
    urgent = make_handoff(tenant, urgency="urgent")
    done = make_handoff(tenant)
    services.claim(handoff_id=done.pk, by=lead)
    services.resolve(handoff_id=done.pk, by=lead, resolution="Done")
    make_handoff(other_tenant, reason="Globex secret reason for a handoff.")

    response = as_lead.get(QUEUE)

    assert response.status_code == 200
    assert rows(response) == [urgent.pk, normal.pk]
    assert b"Globex secret" not in response.content
    assert response.context["counts"] == {"overdue": 0, "due_soon": 0, "on_time": 2}
    assert b'href="/static/css/handoffs.css"' in response.content


def test_overdue_and_due_soon_show_at_a_glance(as_lead, tenant, queues):
    overdue = make_handoff(tenant)
    soon = make_handoff(tenant)
    on_time = make_handoff(tenant)
    now = timezone.now()
    Handoff.objects.filter(pk=overdue.pk).update(
        due_at=now - timedelta(minutes=5), due_soon_at=now - timedelta(hours=1)
    )
    Handoff.objects.filter(pk=soon.pk).update(due_at=now + timedelta(minutes=5), due_soon_at=now - timedelta(minutes=1))

    response = as_lead.get(QUEUE)

    assert rows(response) == [overdue.pk, soon.pk, on_time.pk]
    assert response.context["counts"] == {"overdue": 1, "due_soon": 1, "on_time": 1}
    html = response.content.decode()
    assert html.count('class="badge sla-overdue">Overdue') == 1
    assert html.count('class="badge sla-due_soon">Due soon') == 1
    assert rows(as_lead.get(QUEUE, {"sla": "overdue"})) == [overdue.pk]
    assert rows(as_lead.get(QUEUE, {"sla": "due_soon"})) == [soon.pk]
    assert rows(as_lead.get(QUEUE, {"sla": "on_time"})) == [on_time.pk]


def test_the_filters(as_lead, tenant, queues, lead, worker):
    legal = make_handoff(tenant, reason_code="topic", topic="legal")
    mine = make_handoff(tenant, urgency="high")
    theirs = make_handoff(tenant)
    services.claim(handoff_id=mine.pk, by=lead)
    services.claim(handoff_id=theirs.pk, by=worker)
    services.resolve(handoff_id=theirs.pk, by=worker, resolution="Done")

    assert rows(as_lead.get(QUEUE, {"queue": queues["legal"].pk})) == [legal.pk]
    assert rows(as_lead.get(QUEUE, {"mine": "on"})) == [mine.pk]
    assert rows(as_lead.get(QUEUE, {"priority": "high"})) == [mine.pk]
    assert rows(as_lead.get(QUEUE, {"status": "resolved"})) == [theirs.pk]
    assert set(rows(as_lead.get(QUEUE, {"status": "all"}))) == {legal.pk, mine.pk, theirs.pk}
    unqueued = make_handoff(tenant)
    Handoff.objects.filter(pk=unqueued.pk).update(queue=None)
    assert rows(as_lead.get(QUEUE, {"queue": 0})) == [unqueued.pk]


def test_a_queue_of_another_tenant_is_not_a_choice(as_lead, other_tenant, superuser, queues):
    globex = services.save_queue(by=superuser, tenant=other_tenant, name="Globex tier 2")

    response = as_lead.get(QUEUE, {"queue": globex.pk})

    assert response.status_code == 200
    assert response.context["page"] is None
    assert "Select a valid choice" in response.content.decode()
    assert b"Globex tier 2" not in response.content


def test_the_queue_pages_and_keeps_the_filter(as_lead, tenant, queues):
    for _ in range(30):
        make_handoff(tenant)

    first = as_lead.get(QUEUE, {"priority": "normal"})
    second = as_lead.get(QUEUE, {"priority": "normal", "page": 2})

    assert len(rows(first)) == 25 and len(rows(second)) == 5
    assert "?priority=normal&amp;page=2" in first.content.decode()


def _handoffs(tenant, count, people):
    claimers = [people["support_agent"], people["support_lead"], people["admin"]]
    for number in range(count):
        handoff = make_handoff(
            tenant,
            reason_code="topic" if number % 3 == 0 else "human_request",
            topic="legal" if number % 3 == 0 else "",
            agent_id=None,
        )
        if number % 2:
            Handoff.objects.filter(pk=handoff.pk).update(
                status=HandoffStatus.CLAIMED, claimed_by=claimers[number % 3], claimed_at=timezone.now()
            )


def test_the_queue_page_makes_the_same_number_of_queries_for_5_or_50_handoffs(client, tenant, queues, people, agent):
    client.force_login(people["support_lead"])
    _handoffs(tenant, 5, people)
    Handoff.objects.update(agent=agent)
    with CaptureQueriesContext(connection) as five:
        assert client.get(QUEUE, {"status": "all"}).status_code == 200

    _handoffs(tenant, 45, people)
    Handoff.objects.update(agent=agent)
    with CaptureQueriesContext(connection) as fifty:
        response = client.get(QUEUE, {"status": "all"})
    assert len(rows(response)) == 25

    assert len(fifty) == len(five), [query["sql"] for query in fifty]


def test_a_handoff_page_shows_the_whole_package(as_lead, queues, conversation, talk):
    turn = talk(conversation, "I want to speak to a human about my refund for A-1042")
    handoff = Handoff.objects.get(turn_id=str(turn.pk))

    response = as_lead.get(url("detail", handoff))

    html = response.content.decode()
    assert response.status_code == 200
    assert (
        handoff.reason in html.replace("&ldquo;", "“").replace("&rdquo;", "”") or "I want to speak to a human" in html
    )
    assert "C-1001" in html and "verified" in html
    assert "Conversation so far" in html and "about my refund for A-1042" in html
    assert "I&#x27;m handing this to a colleague" in html  # what the agent told the customer
    assert "Support tier 2" in html and "Account context" in html and "Sentiment" in html
    assert 'hx-post="' + url("claim", handoff) in html
    assert "htmx.min.js" in html


def test_a_handoff_of_another_tenant_is_not_found(client, tenant, other_tenant):
    handoff = make_handoff(tenant)
    outsider = member(other_tenant, "support_lead", username="globex.lead")
    client.force_login(outsider)

    assert client.get(url("detail", handoff)).status_code == 404
    assert client.post(url("claim", handoff)).status_code == 404
    assert client.post(url("resolve", handoff), {"resolution": "x"}).status_code == 404
    assert Handoff.objects.get().status == HandoffStatus.OPEN


def test_claim_without_javascript_redirects_back_with_a_message(as_worker, tenant, queues, worker):
    handoff = make_handoff(tenant)

    response = as_worker.post(url("claim", handoff), follow=True)

    assert response.redirect_chain == [(url("detail", handoff), 302)]
    assert "You claimed this handoff" in response.content.decode()
    assert Handoff.objects.get().claimed_by == worker


def test_resolve_without_javascript_keeps_what_was_typed_when_refused(client, tenant, queues, worker, lead):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=worker)
    client.force_login(lead)

    response = client.post(url("resolve", handoff), {"resolution": "Called the customer back"})

    assert response.status_code == 403
    assert "who claimed this handoff, may resolve it" in response.content.decode()
    assert Handoff.objects.get().status == HandoffStatus.CLAIMED


def test_a_blank_resolution_is_an_error_on_the_field(as_worker, tenant, queues, worker):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=worker)

    response = as_worker.post(url("resolve", handoff), {"resolution": "  "})

    assert response.status_code == 400
    assert "Say how it was resolved" in response.content.decode()
    assert Handoff.objects.get().status == HandoffStatus.CLAIMED


def test_a_refused_resolution_is_shown_again_with_its_text(as_worker, tenant, queues, worker):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=worker)
    long = "Called back. " * 400  # over the limit

    response = as_worker.post(url("resolve", handoff), {"resolution": long})

    assert response.status_code == 400
    assert "Keep it to 4000 characters" in response.content.decode()
    assert "Called back. Called back." in response.content.decode()  # nothing typed is lost


def test_claiming_a_claimed_handoff_is_a_conflict_with_the_claimer_named(client, tenant, queues, worker, lead):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=worker)
    client.force_login(lead)

    response = client.post(url("claim", handoff))

    assert response.status_code == 409
    assert f"{worker} claimed this handoff" in response.content.decode()


def test_people_who_only_read_handoffs_see_why_they_cannot_work_them(client, tenant, queues, people):
    handoff = make_handoff(tenant)
    client.force_login(people["compliance"])

    page = client.get(url("detail", handoff))
    assert page.status_code == 200
    assert "may read this handoff but not work" in page.content.decode()
    assert url("claim", handoff) not in page.content.decode()
    assert client.post(url("claim", handoff)).status_code == 403


def test_claim_with_htmx_swaps_the_actions_panel(as_worker, tenant, queues, worker):
    handoff = make_handoff(tenant)

    response = as_worker.post(url("claim", handoff), **HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    names = [template.name for template in response.templates]
    assert names[0] == "handoffs/_actions.html" and "base.html" not in names
    assert html.lstrip().startswith('<section class="panel handoff-actions" id="handoff-actions"')
    assert "You claimed this handoff" in html and "Claimed" in html
    assert url("resolve", handoff) in html  # the claimer may now resolve
    assert Handoff.objects.get().claimed_by == worker


def test_an_htmx_error_comes_back_in_the_panel(as_worker, tenant, queues, worker):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=worker)

    response = as_worker.post(url("resolve", handoff), {"resolution": ""}, **HTMX)

    assert response.status_code == 200  # htmx swaps 2xx answers only
    names = [template.name for template in response.templates]
    assert names[0] == "handoffs/_actions.html" and "base.html" not in names
    assert "Say how it was resolved" in response.content.decode()


def test_resolve_and_return_with_htmx(client, tenant, queues, worker, django_capture_on_commit_callbacks):
    resolved, returned = make_handoff(tenant), make_handoff(tenant)
    services.claim(handoff_id=resolved.pk, by=worker)
    client.force_login(worker)

    client.post(url("resolve", resolved), {"resolution": "Refunded by hand"}, **HTMX)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("return", returned), {"note": "Agent can answer this"}, **HTMX)

    assert Handoff.objects.get(pk=resolved.pk).status == HandoffStatus.RESOLVED
    assert Handoff.objects.get(pk=returned.pk).status == HandoffStatus.RETURNED
    assert "Returned to the agent" in response.content.decode()


def test_get_is_not_an_action(as_worker, tenant, queues):
    handoff = make_handoff(tenant)

    assert as_worker.get(url("claim", handoff)).status_code == 405
    assert Handoff.objects.get().status == HandoffStatus.OPEN


def test_the_nav_shows_handoffs_to_people_who_read_them(client, people):
    client.force_login(people["support_agent"])
    assert f'href="{QUEUE}"' in client.get(QUEUE).content.decode()
