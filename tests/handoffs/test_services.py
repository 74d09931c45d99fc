"""Routing, queues, and working a handoff: claim, resolve, return to the agent, and the
escalation of overdue handoffs — with the refusals (other tenant, no role, not the queue's
role, not the claimer, already claimed)."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.accounts.models import Role
from apps.handoffs import services, tasks
from apps.handoffs.choices import HandoffStatus
from apps.handoffs.models import Handoff, HandoffQueue
from apps.runtime.choices import ConversationStatus, Decision, TurnStatus
from apps.runtime.services import TurnRefused
from tests.accounts.factories import member
from tests.audit.helpers import chained
from tests.model_server import reply

from .factories import make_handoff, make_queue

pytestmark = pytest.mark.django_db


def fresh(handoff) -> Handoff:
    return Handoff.objects.select_related("queue", "claimed_by").get(pk=handoff.pk)


# --- Routing -----------------------------------------------------------------------------------


def test_routing_takes_the_topic_then_the_reason_code_then_the_default(tenant, admin, queues):
    sentiment = make_queue(tenant, admin, "Upset customers", reason_codes=["negative_sentiment"])

    route = services.recommend_queue
    assert route(tenant_id=tenant.pk, reason_code="topic", topic="Legal") == queues["legal"]  # any case
    assert route(tenant_id=tenant.pk, reason_code="negative_sentiment", topic="billing dispute") == queues["billing"]
    assert route(tenant_id=tenant.pk, reason_code="negative_sentiment") == sentiment
    assert route(tenant_id=tenant.pk, reason_code="step_limit") == queues["tier2"]
    assert route(tenant_id=tenant.pk, reason_code="topic", topic="astrology") == queues["tier2"]


def test_routing_skips_inactive_queues_and_never_crosses_tenants(tenant, other_tenant, admin, queues, superuser):
    services.save_queue(by=admin, queue=queues["legal"], is_active=False)
    make_queue(other_tenant, superuser, "Globex legal", topics=["legal"], is_default=True)

    assert services.recommend_queue(tenant_id=tenant.pk, reason_code="topic", topic="legal") == queues["tier2"]


def test_without_a_queue_for_it_the_handoff_is_unqueued_and_due_in_an_hour(tenant):
    before = timezone.now()
    handoff = make_handoff(tenant)

    assert handoff.queue is None
    assert before + timedelta(minutes=60) <= handoff.due_at <= timezone.now() + timedelta(minutes=60)
    assert handoff.due_soon_at == handoff.due_at - timedelta(minutes=15)


@pytest.mark.parametrize(("urgency", "minutes"), [("low", 120), ("normal", 60), ("high", 30), ("urgent", 15)])
def test_the_deadline_is_the_queue_sla_scaled_by_priority(tenant, queues, urgency, minutes):
    handoff = make_handoff(tenant, urgency=urgency)

    assert handoff.queue == queues["tier2"] and handoff.priority == urgency
    assert handoff.due_at - handoff.created_at == pytest.approx(timedelta(minutes=minutes), abs=timedelta(seconds=5))


def test_a_handoff_needs_a_reason_code_and_a_sentence(tenant):
    with pytest.raises(ValidationError, match="reason code and a sentence"):
        make_handoff(tenant, reason="  ")
    with pytest.raises(ValidationError):
        make_handoff(tenant, urgency="whenever")
    assert not Handoff.objects.exists()


def test_creating_a_handoff_is_audited_with_its_queue_and_deadline(tenant, queues):
    handoff = make_handoff(tenant, urgency="high")

    event = chained(event_type="handoff.created").get()
    assert event.data["payload"] | {"due_at": None} == {
        "handoff_id": handoff.pk,
        "urgency": "high",
        "subject": "C-1001",
        "queue": "Support tier 2",
        "priority": "high",
        "due_at": None,
    }


# --- Queues ------------------------------------------------------------------------------------


def test_a_queue_is_saved_with_history_and_an_audit_event(tenant, admin):
    roles = list(Role.objects.filter(tenant=tenant, kind="support_lead"))
    queue = make_queue(tenant, admin, "Escalations", sla_minutes=20, roles=roles, reason_codes=["step_limit"])

    assert [role.kind for role in queue.roles.all()] == ["support_lead"]
    assert {row.history_user for row in queue.history.all()} == {admin}
    event = chained(event_type="config.changed", reason="handoffs.queue_created").get()
    assert event.data["actor_name"] == admin.username
    assert event.data["payload"]["changes"]["roles"] == [None, [str(roles[0])]]

    services.save_queue(by=admin, queue=queue, sla_minutes=25, reason="Faster")
    change = chained(event_type="config.changed", reason="handoffs.queue_changed").get()
    assert change.data["payload"]["changes"] == {"sla_minutes": [20, 25]}
    assert change.data["payload"]["reason"] == "Faster"


def test_saving_an_unchanged_queue_writes_nothing(tenant, admin, queues):
    rows = queues["legal"].history.count()

    services.save_queue(by=admin, queue=queues["legal"], sla_minutes=30)

    assert queues["legal"].history.count() == rows
    assert not chained(event_type="config.changed", reason="handoffs.queue_changed").exists()


def test_making_a_queue_the_default_takes_it_from_the_previous_default(tenant, admin, queues):
    services.save_queue(by=admin, queue=queues["billing"], is_default=True)

    assert list(HandoffQueue.objects.filter(tenant=tenant, is_default=True)) == [queues["billing"]]
    assert queues["tier2"].history.first().history_change_reason == "“Billing & refunds” became the default queue"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"sla_minutes": 0}, "sla_minutes", "greater than or equal to 1"),
        ({"reason_codes": "human_request"}, "reason_codes", "Enter a list of reason codes"),
        ({"reason_codes": ["Human Request"]}, "reason_codes", "Not a reason code: Human Request"),
        ({"topics": [""]}, "topics", "Enter a list of topic names"),
        ({"name": "   "}, "name", "Name the queue"),
        ({"is_default": True, "is_active": False}, "is_default", "must be active"),
    ],
)
def test_a_bad_queue_is_refused_with_a_clear_message_and_nothing_saved(tenant, admin, fields, field, message):
    with pytest.raises(ValidationError) as refused:
        make_queue(tenant, admin, **{"name": "Bad", **fields})

    assert message in " ".join(refused.value.message_dict[field])
    assert not HandoffQueue.objects.exists()


def test_a_queue_name_is_unique_in_its_tenant(tenant, admin, queues):
    with pytest.raises(ValidationError, match="already has a queue of this name"):
        make_queue(tenant, admin, "Support tier 2")


def test_roles_and_escalation_must_stay_in_the_tenant(tenant, other_tenant, admin, superuser, queues):
    globex = make_queue(other_tenant, superuser, "Globex tier 2")
    foreign_role = Role.objects.get(tenant=other_tenant, kind="support_agent")

    with pytest.raises(ValidationError) as refused:
        services.save_queue(by=admin, queue=queues["legal"], roles=[foreign_role])
    assert "Pick roles of the queue's own tenant" in refused.value.message_dict["roles"][0]
    with pytest.raises(ValidationError, match="same tenant"):
        services.save_queue(by=superuser, queue=queues["legal"], escalate_to=globex)


def test_escalation_may_not_loop(admin, queues):
    with pytest.raises(ValidationError, match="lead back to this queue"):
        services.save_queue(by=admin, queue=queues["tier2"], escalate_to=queues["billing"])
    with pytest.raises(ValidationError, match="cannot escalate to itself"):
        services.save_queue(by=admin, queue=queues["tier2"], escalate_to=queues["tier2"])


def test_only_people_who_configure_handoffs_change_queues(tenant, other_tenant, people, queues):
    with pytest.raises(PermissionDenied, match="may not add handoff queues"):
        make_queue(tenant, people["support_agent"], "Mine")
    with pytest.raises(PermissionDenied, match="may not change handoff queues"):
        services.save_queue(by=people["support_agent"], queue=queues["legal"], sla_minutes=5)
    outsider = member(other_tenant, "admin", username="globex.admin")
    with pytest.raises(PermissionDenied):
        services.save_queue(by=outsider, queue=queues["legal"], sla_minutes=5)


# --- Claim -------------------------------------------------------------------------------------


def test_claiming_makes_it_yours_and_is_audited(tenant, queues, worker):
    handoff = make_handoff(tenant)

    services.claim(handoff_id=handoff.pk, by=worker)

    handoff = fresh(handoff)
    assert (handoff.status, handoff.claimed_by) == (HandoffStatus.CLAIMED, worker)
    event = chained(event_type="handoff.claimed").get()
    assert (event.data["actor_name"], event.data["actor_roles"]) == (worker.username, ["support_agent"])
    assert event.data["payload"]["handoff_id"] == handoff.pk and event.data["outcome"] == "claimed"


def test_a_second_person_cannot_claim_a_claimed_handoff(tenant, queues, worker, lead):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=worker)

    with pytest.raises(services.HandoffStateError, match=f"{worker} claimed this handoff"):
        services.claim(handoff_id=handoff.pk, by=lead)
    services.claim(handoff_id=handoff.pk, by=worker)  # the claimer again: nothing changes

    assert fresh(handoff).claimed_by == worker
    assert chained(event_type="handoff.claimed").count() == 1


def test_nobody_claims_a_handoff_of_another_tenant(tenant, other_tenant, queues):
    handoff = make_handoff(tenant)
    outsider = member(other_tenant, "support_lead", username="globex.lead")

    with pytest.raises(PermissionDenied, match="not work handoffs of Acme Support"):
        services.claim(handoff_id=handoff.pk, by=outsider)
    assert fresh(handoff).status == HandoffStatus.OPEN


def test_reading_handoffs_is_not_working_them(tenant, queues, people):
    handoff = make_handoff(tenant)

    for kind in ("compliance", "security", "knowledge_owner"):
        with pytest.raises(PermissionDenied):
            services.claim(handoff_id=handoff.pk, by=people[kind])
    with pytest.raises(PermissionDenied):
        services.claim(handoff_id=handoff.pk, by=people["nobody"])


def test_a_queue_that_names_roles_is_worked_only_by_them(tenant, queues, worker, lead):
    handoff = make_handoff(tenant, reason_code="topic", topic="legal")
    assert handoff.queue == queues["legal"]

    with pytest.raises(PermissionDenied, match="“Legal & compliance” is worked by people holding Support lead"):
        services.claim(handoff_id=handoff.pk, by=worker)
    services.claim(handoff_id=handoff.pk, by=lead)

    assert fresh(handoff).claimed_by == lead


def test_a_platform_administrator_may_work_any_handoff(tenant, queues, superuser):
    handoff = make_handoff(tenant, reason_code="topic", topic="legal")

    services.claim(handoff_id=handoff.pk, by=superuser)

    assert fresh(handoff).claimed_by == superuser


def test_an_unknown_handoff_is_a_clear_error(worker):
    with pytest.raises(ValidationError, match="There is no handoff 999"):
        services.claim(handoff_id=999, by=worker)


# --- Resolve -----------------------------------------------------------------------------------


def test_resolving_needs_the_claim_the_claimer_and_a_resolution(tenant, queues, worker, lead):
    handoff = make_handoff(tenant)

    with pytest.raises(services.HandoffStateError, match="Claim this handoff before resolving it"):
        services.resolve(handoff_id=handoff.pk, by=worker, resolution="Done")
    services.claim(handoff_id=handoff.pk, by=worker)
    with pytest.raises(ValidationError) as blank:
        services.resolve(handoff_id=handoff.pk, by=worker, resolution="   ")
    assert blank.value.message_dict == {"resolution": ["Say how it was resolved: it is kept with the handoff."]}
    with pytest.raises(PermissionDenied, match=f"Only {worker}, who claimed this handoff, may resolve it"):
        services.resolve(handoff_id=handoff.pk, by=lead, resolution="I did it")
    assert fresh(handoff).status == HandoffStatus.CLAIMED

    services.resolve(handoff_id=handoff.pk, by=worker, resolution=" Refunded A-1042 by hand. ")

    handoff = fresh(handoff)
    assert (handoff.status, handoff.resolved_by, handoff.resolution) == (
        HandoffStatus.RESOLVED,
        worker,
        "Refunded A-1042 by hand.",
    )
    assert chained(event_type="handoff.resolved").get().data["payload"]["resolution"] == "Refunded A-1042 by hand."
    with pytest.raises(services.HandoffStateError, match="already resolved"):
        services.resolve(handoff_id=handoff.pk, by=worker, resolution="Again")
    with pytest.raises(services.HandoffStateError, match="already resolved"):
        services.claim(handoff_id=handoff.pk, by=worker)


def test_a_resolution_has_a_length_limit(tenant, queues, worker):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=worker)

    with pytest.raises(ValidationError, match="Keep it to 4000 characters"):
        services.resolve(handoff_id=handoff.pk, by=worker, resolution="x" * 4001)


# --- Return to the agent -----------------------------------------------------------------------


def test_returning_reopens_the_conversation_so_the_agent_answers_again(
    queues, conversation, talk, model_server, worker, django_capture_on_commit_callbacks
):
    handed = talk(conversation, "I want to speak to a human")
    handoff = Handoff.objects.get(turn_id=str(handed.pk))
    with pytest.raises(TurnRefused):
        talk(conversation, "Hello?")

    with django_capture_on_commit_callbacks(execute=True):
        services.return_to_agent(handoff_id=handoff.pk, by=worker, note="Only wanted the opening hours.")

    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.OPEN
    assert fresh(handoff).status == HandoffStatus.RETURNED
    assert chained(event_type="handoff.returned").get().data["payload"]["note"] == "Only wanted the opening hours."
    model_server.enqueue(reply("We open at nine."))
    again = talk(conversation, "When do you open?")
    assert (again.number, again.status) == (2, TurnStatus.COMPLETED)
    assert again.decision != Decision.ESCALATE


def test_the_conversation_stays_with_people_while_another_handoff_of_it_waits(
    tenant, queues, conversation, talk, worker, django_capture_on_commit_callbacks
):
    handed = talk(conversation, "I want to speak to a human")
    first = Handoff.objects.get(turn_id=str(handed.pk))
    second = make_handoff(tenant, conversation_id=str(conversation.pk))

    with django_capture_on_commit_callbacks(execute=True):
        services.return_to_agent(handoff_id=first.pk, by=worker, note="The other handoff covers it.")
    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.HANDED_OFF

    with django_capture_on_commit_callbacks(execute=True):
        services.return_to_agent(handoff_id=second.pk, by=worker, note="Nothing left for a person.")
    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.OPEN


def test_returning_needs_a_note_and_the_claimer_once_claimed(tenant, queues, worker, lead):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=lead)

    with pytest.raises(ValidationError) as blank:
        services.return_to_agent(handoff_id=handoff.pk, by=lead, note="")
    assert "Say why the agent can take the conversation back" in blank.value.message_dict["note"][0]
    with pytest.raises(PermissionDenied, match="may return it to the agent"):
        services.return_to_agent(handoff_id=handoff.pk, by=worker, note="Mine now")
    services.return_to_agent(handoff_id=handoff.pk, by=lead, note="Agent can handle it")
    with pytest.raises(services.HandoffStateError, match="already returned to the agent"):
        services.return_to_agent(handoff_id=handoff.pk, by=lead, note="Again")


def test_reopening_leaves_other_conversations_alone(conversation):
    from apps.runtime.services import reopen_conversation

    assert reopen_conversation(conversation.pk) is False  # open, not handed off
    assert reopen_conversation("not-a-conversation-id") is False


# --- Escalation --------------------------------------------------------------------------------


def test_an_overdue_handoff_is_escalated_once(tenant, queues, worker):
    handoff = make_handoff(tenant, reason_code="topic", topic="billing dispute")  # billing escalates to tier 2
    services.claim(handoff_id=handoff.pk, by=worker)
    later = handoff.due_at + timedelta(minutes=1)

    assert services.escalate_overdue(now=handoff.due_at - timedelta(seconds=1)) == []
    assert services.escalate_overdue(now=later) == [handoff.pk]
    assert services.escalate_overdue(now=later) == []  # idempotent

    handoff = fresh(handoff)
    assert (handoff.queue, handoff.priority, handoff.escalation_level) == (queues["tier2"], "high", 1)
    assert (handoff.status, handoff.claimed_by) == (HandoffStatus.OPEN, None)  # tier 2 takes it over
    assert handoff.escalated_at == later
    assert handoff.due_at == later + timedelta(minutes=30)  # tier 2's 60 minutes at high priority
    event = chained(event_type="handoff.escalated").get()
    assert event.data["payload"] | {"was_due_at": None, "due_at": None} == {
        "handoff_id": handoff.pk,
        "queue": "Support tier 2",
        "priority": "high",
        "level": 1,
        "from_queue": "Billing & refunds",
        "from_priority": "normal",
        "claim_released_from": str(worker),
        "was_due_at": None,
        "due_at": None,
    }


def test_without_a_queue_to_move_to_it_stays_claimed_and_climbs_to_urgent(tenant, queues, worker):
    handoff = make_handoff(tenant)
    services.claim(handoff_id=handoff.pk, by=worker)

    moment = handoff.due_at
    for _ in range(4):
        moment = fresh(handoff).due_at + timedelta(seconds=1)
        services.escalate_overdue(now=moment)

    handoff = fresh(handoff)
    assert (handoff.queue, handoff.claimed_by, handoff.status) == (queues["tier2"], worker, HandoffStatus.CLAIMED)
    assert (handoff.priority, handoff.escalation_level) == ("urgent", 4)  # never past urgent
    assert handoff.due_at == moment + timedelta(minutes=15)


def test_resolved_and_returned_handoffs_are_never_escalated(tenant, queues, worker):
    resolved = make_handoff(tenant)
    services.claim(handoff_id=resolved.pk, by=worker)
    services.resolve(handoff_id=resolved.pk, by=worker, resolution="Done")
    returned = make_handoff(tenant)
    services.return_to_agent(handoff_id=returned.pk, by=worker, note="Agent can do it")

    assert services.escalate_overdue(now=timezone.now() + timedelta(days=1)) == []


def test_an_unqueued_handoff_is_routed_when_it_escalates(tenant, admin):
    handoff = make_handoff(tenant)
    assert handoff.queue is None
    tier2 = make_queue(tenant, admin, "Support tier 2", is_default=True)

    services.escalate_overdue(now=handoff.due_at)

    assert (fresh(handoff).queue, fresh(handoff).priority) == (tier2, "high")


def test_the_beat_task_escalates_what_is_overdue(tenant, queues):
    handoff = make_handoff(tenant)
    Handoff.objects.filter(pk=handoff.pk).update(due_at=timezone.now() - timedelta(minutes=1))

    assert tasks.escalate_overdue.apply().get() == 1
    assert tasks.escalate_overdue.apply().get() == 0
    assert fresh(handoff).escalation_level == 1
