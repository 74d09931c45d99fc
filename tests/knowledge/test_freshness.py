"""The freshness sweep: overdue approved sources are flagged stale once, and each owner gets
one e-mail listing theirs. A mail failure leaves that owner's sources for the next sweep."""

import datetime
import logging
from smtplib import SMTPException

import pytest
from django.conf import settings
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.urls import reverse
from django.utils import timezone

from apps.knowledge import services, tasks
from apps.knowledge.choices import Lifecycle, StalePolicy
from apps.knowledge.models import KnowledgeSource, SourceEvent
from controlplane.celery import app as celery_app

from ..accounts.factories import member
from ..audit.helpers import chained
from .factories import source
from .helpers import make_overdue

pytestmark = pytest.mark.django_db

NOTHING = {"marked_stale": 0, "owners_notified": 0, "owners_without_email": 0, "failed": 0}
UNDELIVERABLE = "admin@example.com"


class RefusesOneRecipient(LocmemBackend):
    """Delivers to the test outbox, except to UNDELIVERABLE: that mail server is down."""

    def send_messages(self, messages):
        if any(UNDELIVERABLE in message.to for message in messages):
            raise SMTPException("451 mailbox unavailable")
        return super().send_messages(messages)


def stale_since(made):
    return KnowledgeSource.objects.get(pk=made.pk).stale_since


def stale_events(made):
    return list(
        SourceEvent.objects.filter(source_id=made.pk, action="marked_stale").values_list(
            "by", "from_status", "to_status", "reason"
        )
    )


def link(made):
    return settings.CONTROLPLANE_BASE_URL + reverse("admin:knowledge_knowledgesource_change", args=[made.pk])


def line_about(mail, title):
    """The line of ``mail`` that lists ``title`` (each source has one line, then its link)."""
    (found,) = [line for line in mail.body.splitlines() if line.startswith(f"- {title} (")]
    return found


@pytest.fixture
def admin(people):
    return people["admin"]


def test_overdue_sources_are_marked_stale_and_each_owner_mailed_once(tenant, owner, admin, mailoutbox):
    excluded = make_overdue(source(tenant, owner, title="Blender returns"), days=3)
    warned = make_overdue(source(tenant, owner, title="Toaster warranty", stale_policy=StalePolicy.WARN), days=1)
    admins = make_overdue(source(tenant, admin, title="Kettle recall"), days=10)
    fresh = source(tenant, owner, title="Shipping times")

    summary = services.sweep_freshness()

    assert summary == {"marked_stale": 3, "owners_notified": 2, "owners_without_email": 0, "failed": 0}
    for made in (excluded, warned, admins):
        assert stale_since(made) is not None
        assert KnowledgeSource.objects.get(pk=made.pk).status == Lifecycle.APPROVED
        assert stale_events(made) == [(None, "approved", "approved", f"Review was due on {made.review_due_on}")]
    assert stale_since(fresh) is None and stale_events(fresh) == []

    assert len(mailoutbox) == 2
    (to_owner,) = [mail for mail in mailoutbox if mail.to == [owner.email]]
    (to_admin,) = [mail for mail in mailoutbox if mail.to == [admin.email]]
    assert to_owner.subject == "2 knowledge sources overdue for review"
    assert to_admin.subject == "1 knowledge source overdue for review"
    assert line_about(to_owner, "Blender returns") == (
        f"- Blender returns (Acme Support): review was due {excluded.review_due_on}; agents no longer use it."
    )
    assert line_about(to_owner, "Toaster warranty") == (
        f"- Toaster warranty (Acme Support): review was due {warned.review_due_on}; "
        "agents still use it, with a stale warning in every trace."
    )
    assert link(excluded) in to_owner.body and link(warned) in to_owner.body
    assert link(excluded).startswith("http://") and f"/{excluded.pk}/change/" in link(excluded)
    assert "Kettle recall" not in to_owner.body and "Shipping times" not in to_owner.body
    assert "Kettle recall" in to_admin.body and link(admins) in to_admin.body
    assert "Blender returns" not in to_admin.body
    assert "Refunds are accepted" not in to_owner.body  # titles and links, never the text

    recorded = chained(event_type="config.changed", reason="knowledge.marked_stale")
    assert sorted(event.data["payload"]["source"]["id"] for event in recorded) == sorted(
        [excluded.pk, warned.pk, admins.pk]
    )
    assert all(event.actor_name is None for event in recorded)


def test_an_owner_gets_one_mail_for_sources_in_several_tenants(tenant, other_tenant, owner, mailoutbox):
    member(other_tenant, "knowledge_owner", username=owner.username)  # the same person, owner in both
    acme = make_overdue(source(tenant, owner, title="Acme returns"))
    globex = make_overdue(source(other_tenant, owner, title="Globex returns"))

    assert services.sweep_freshness()["owners_notified"] == 1

    (mail,) = mailoutbox
    assert mail.subject == "2 knowledge sources overdue for review"
    assert line_about(mail, "Acme returns").startswith("- Acme returns (Acme Support)")
    assert line_about(mail, "Globex returns").startswith("- Globex returns (Globex Retail)")
    assert link(acme) in mail.body and link(globex) in mail.body


def test_the_sweep_is_idempotent(tenant, owner, mailoutbox):
    made = make_overdue(source(tenant, owner))
    assert services.sweep_freshness()["marked_stale"] == 1
    flagged_at = stale_since(made)

    assert services.sweep_freshness() == NOTHING
    assert len(mailoutbox) == 1
    assert stale_since(made) == flagged_at
    assert len(stale_events(made)) == 1


def test_a_reviewed_source_is_flagged_again_when_it_next_falls_due(tenant, owner, mailoutbox):
    made = make_overdue(source(tenant, owner))
    services.sweep_freshness()
    services.mark_reviewed(source=made, by=owner)
    assert services.sweep_freshness() == NOTHING

    make_overdue(made)
    assert services.sweep_freshness()["marked_stale"] == 1
    assert len(mailoutbox) == 2 and len(stale_events(made)) == 2


def test_only_approved_sources_past_their_due_date(tenant, owner, mailoutbox):
    due_today = make_overdue(source(tenant, owner, title="Due today"), days=0)
    draft = source(tenant, owner, title="Draft", status=Lifecycle.DRAFT)
    deprecated = make_overdue(source(tenant, owner, title="Deprecated", status=Lifecycle.DEPRECATED), days=30)
    deleted = source(tenant, owner, title="Deleted", status=Lifecycle.DELETED)
    make_overdue(deleted, days=30)
    not_due = source(tenant, owner, title="Not due")

    assert services.sweep_freshness() == NOTHING
    assert mailoutbox == []
    for made in (due_today, draft, deprecated, deleted, not_due):
        assert stale_since(made) is None
        assert stale_events(made) == []


def test_the_sweep_can_be_run_as_of_a_date(tenant, owner, mailoutbox):
    made = source(tenant, owner, review_cadence_days=30)
    due = timezone.localdate() + datetime.timedelta(days=30)
    assert made.review_due_on == due

    assert services.sweep_freshness(today=due) == NOTHING
    assert services.sweep_freshness(today=due + datetime.timedelta(days=1))["marked_stale"] == 1
    assert stale_since(made) is not None
    assert f"review was due {due}" in mailoutbox[0].body


def test_an_owner_without_an_email_address_is_counted(tenant, owner, mailoutbox, caplog):
    silent = member(tenant, "knowledge_owner", username="no.mail", email="")
    made = make_overdue(source(tenant, silent, title="Unmailed"))
    mailed = make_overdue(source(tenant, owner, title="Mailed"))

    with caplog.at_level(logging.WARNING, logger="apps.knowledge.services"):
        summary = services.sweep_freshness()

    assert summary == {"marked_stale": 2, "owners_notified": 1, "owners_without_email": 1, "failed": 0}
    assert [mail.to for mail in mailoutbox] == [[owner.email]]
    assert "Unmailed" not in mailoutbox[0].body
    # Flagged all the same: there is no mail to retry, and the source page shows it stale.
    assert stale_since(made) is not None and stale_since(mailed) is not None
    assert "no.mail has no e-mail address" in caplog.text


def test_a_mail_failure_leaves_that_owners_sources_for_the_next_sweep(tenant, owner, admin, settings, mailoutbox):
    settings.EMAIL_BACKEND = f"{__name__}.RefusesOneRecipient"
    assert admin.email == UNDELIVERABLE
    unlucky = make_overdue(source(tenant, admin, title="Kettle recall"))
    also_unlucky = make_overdue(source(tenant, admin, title="Kettle descaling"))
    lucky = make_overdue(source(tenant, owner, title="Blender returns"))

    summary = services.sweep_freshness()

    assert summary == {"marked_stale": 1, "owners_notified": 1, "owners_without_email": 0, "failed": 1}
    assert [mail.to for mail in mailoutbox] == [[owner.email]]
    assert stale_since(lucky) is not None
    for made in (unlucky, also_unlucky):
        assert stale_since(made) is None  # rolled back with the failed mail
        assert stale_events(made) == []
    stale_ids = [event.data["payload"]["source"]["id"] for event in chained(reason="knowledge.marked_stale")]
    assert stale_ids == [lucky.pk]

    # The mail server is back: the next sweep flags and tells only the one it missed.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert services.sweep_freshness() == {
        "marked_stale": 2,
        "owners_notified": 1,
        "owners_without_email": 0,
        "failed": 0,
    }
    assert [mail.to for mail in mailoutbox] == [[owner.email], [admin.email]]
    assert "Kettle recall" in mailoutbox[1].body and "Kettle descaling" in mailoutbox[1].body
    assert stale_since(unlucky) is not None and stale_since(also_unlucky) is not None


def test_a_mail_failure_is_logged(tenant, admin, settings, caplog):
    settings.EMAIL_BACKEND = f"{__name__}.RefusesOneRecipient"
    make_overdue(source(tenant, admin))
    with caplog.at_level(logging.ERROR, logger="apps.knowledge.services"):
        services.sweep_freshness()
    assert f"Freshness sweep failed for owner {admin.pk}; will retry on the next sweep" in caplog.text
    assert "451 mailbox unavailable" in caplog.text


def test_the_celery_task_runs_the_sweep_and_returns_its_summary(tenant, owner, mailoutbox):
    made = make_overdue(source(tenant, owner))
    result = tasks.sweep_freshness.apply()
    assert result.successful()
    assert result.get() == {"marked_stale": 1, "owners_notified": 1, "owners_without_email": 0, "failed": 0}
    assert stale_since(made) is not None and len(mailoutbox) == 1
    assert tasks.sweep_freshness.apply().get() == NOTHING


def test_the_task_is_registered_and_scheduled():
    assert tasks.sweep_freshness.name == "knowledge.sweep_freshness"
    assert "knowledge.sweep_freshness" in celery_app.tasks
    scheduled = [
        entry for entry in settings.CELERY_BEAT_SCHEDULE.values() if entry["task"] == "knowledge.sweep_freshness"
    ]
    assert len(scheduled) == 1
    assert scheduled[0]["schedule"] == settings.KNOWLEDGE_SWEEP_MINUTES * 60.0
