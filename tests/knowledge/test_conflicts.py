"""Conflict hints: approving a source that looks like another version of an approved one
(same title, or a passage identical but for numbers) in overlapping scope flags the pair
and tells both owners once the approval commits."""

import logging
from smtplib import SMTPException

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from apps.knowledge import services
from apps.knowledge.choices import ConflictKind, Lifecycle, Visibility
from apps.knowledge.models import ConflictHint, KnowledgeSource

from ..accounts.factories import member
from ..audit.helpers import chained
from .factories import source

pytestmark = pytest.mark.django_db

POLICY_30 = "Unused items can be returned within 30 days of delivery for a full refund to the card."
POLICY_14 = "Unused items can be returned within 14 days of delivery for a full refund to the card."
EXCHANGES = "Exchanges for another size are free of charge at any of our shops."
WARRANTY = "Every appliance carries a two year manufacturer warranty against defects."


class NoMailServer(LocmemBackend):
    def send_messages(self, messages):
        raise SMTPException("connection refused")


@pytest.fixture
def colleague(people):
    """A second owner (an admin, who may approve their own sources)."""
    return people["admin"]


@pytest.fixture
def approve(django_capture_on_commit_callbacks):
    """Make a source as the factory does, running what waits for the commit (the mails)."""

    def make(*args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return source(*args, **kwargs)

    return make


def hints(**filters):
    return list(ConflictHint.objects.filter(**filters).values_list("kind", "source_id", "other_source_id"))


def pair(first, second):
    return tuple(sorted((first.pk, second.pk)))


@pytest.mark.parametrize(
    "second_title", ["Refund policy", "refund POLICY", "Refund policy!", "Refund-Policy", "Réfund policy"]
)
def test_same_title_is_flagged_and_both_owners_told(tenant, owner, colleague, approve, mailoutbox, second_title):
    first = approve(tenant, owner, title="Refund policy", body=EXCHANGES)
    second = approve(tenant, colleague, title=second_title, body=WARRANTY)

    assert hints() == [(ConflictKind.SAME_TITLE, *pair(first, second))]
    hint = ConflictHint.objects.get()
    assert (hint.tenant_id, hint.resolved_at, hint.resolution) == (tenant.pk, None, "")
    assert hint.detail == f"Both are titled “{second_title}”."
    (mail,) = mailoutbox
    assert mail.to == sorted([owner.email, colleague.email])
    assert mail.subject == f"Possible conflict: “{hint.source.title}” and “{hint.other_source.title}”"
    assert hint.detail in mail.body
    for made in (first, second):
        assert f"/admin/knowledge/knowledgesource/{made.pk}/change/" in mail.body


def test_different_titles_and_text_are_no_conflict(tenant, owner, colleague, approve, mailoutbox):
    approve(tenant, owner, title="Refund policy", body=EXCHANGES)
    approve(tenant, colleague, title="Refund policy for gifts", body=WARRANTY)
    assert hints() == [] and mailoutbox == []


def test_passages_identical_but_for_numbers_are_flagged(tenant, owner, colleague, approve, mailoutbox):
    first = approve(tenant, owner, title="Returns (EU)", body=f"{EXCHANGES}\n\n## Window\n\n{POLICY_30}")
    second = approve(tenant, colleague, title="Returns window", body=POLICY_14)

    assert hints() == [(ConflictKind.NEAR_IDENTICAL_PASSAGE, *pair(first, second))]
    assert ConflictHint.objects.get().detail == (
        "Passage 1 of “Returns window” and passage 2 of “Returns (EU)” are identical apart from numbers or punctuation."
    )
    assert len(mailoutbox) == 1


def test_same_title_and_same_passage_are_two_hints(tenant, owner, colleague, approve, mailoutbox):
    first = approve(tenant, owner, title="Refund policy", body=POLICY_30)
    second = approve(tenant, colleague, title="Refund policy", body=POLICY_14)
    assert sorted(hints()) == [
        (ConflictKind.NEAR_IDENTICAL_PASSAGE, *pair(first, second)),
        (ConflictKind.SAME_TITLE, *pair(first, second)),
    ]
    assert len(mailoutbox) == 2


def test_one_owner_of_both_gets_one_copy(tenant, owner, approve, mailoutbox):
    approve(tenant, owner, title="Refund policy", body=EXCHANGES)
    approve(tenant, owner, title="Refund policy", body=WARRANTY)
    (mail,) = mailoutbox
    assert mail.to == [owner.email]


def test_short_boilerplate_passages_are_no_conflict(tenant, owner, colleague, approve, mailoutbox):
    """ "Thanks for reading." closes many documents: too common to say two are one policy."""
    approve(tenant, owner, title="Exchanges", body=f"{EXCHANGES}\n\n## Closing\n\nThanks for reading.")
    approve(tenant, colleague, title="Warranty", body=f"{WARRANTY}\n\n## Closing\n\nThanks for reading!")
    assert hints() == [] and mailoutbox == []
    # The control: a closing long enough to be a real statement is compared.
    closing = "Questions about this page go to the customer care team by phone."
    approve(tenant, owner, title="Gift cards", body=f"Gift cards never expire.\n\n## Closing\n\n{closing}")
    approve(tenant, colleague, title="Repairs", body=f"Repairs take a week.\n\n## Closing\n\n{closing}")
    assert [kind for kind, *_ in hints()] == [ConflictKind.NEAR_IDENTICAL_PASSAGE]


@pytest.mark.parametrize(
    ("first_scope", "second_scope", "overlap"),
    [
        ({"regions": ["eu"]}, {"regions": ["us"]}, False),
        ({"regions": ["eu"]}, {}, True),  # unscoped: every region, the EU too
        ({"regions": ["eu", "us"]}, {"regions": ["us"]}, True),
        ({"regions": ["eu"], "segments": ["enterprise"]}, {"segments": ["consumer"]}, False),
        ({"regions": ["eu"], "segments": ["enterprise"]}, {"regions": ["eu"], "channels": ["email"]}, True),
        ({"channels": ["email"]}, {"channels": ["web_chat", "voice"]}, False),
        ({"brands": ["acme"]}, {"brands": ["acme-pro"]}, False),
    ],
)
def test_only_overlapping_scopes_conflict(
    tenant, owner, colleague, approve, mailoutbox, first_scope, second_scope, overlap
):
    first = approve(tenant, owner, title="Refund policy", body=POLICY_30, **first_scope)
    second = approve(tenant, colleague, title="Refund policy", body=POLICY_14, **second_scope)
    assert services.scopes_overlap(first, second) is overlap
    assert services.scopes_overlap(second, first) is overlap
    assert len(hints()) == (2 if overlap else 0)
    assert len(mailoutbox) == (2 if overlap else 0)


@pytest.mark.parametrize("human_only", ["first", "second"])
def test_human_only_sources_never_conflict(tenant, owner, colleague, approve, mailoutbox, human_only):
    """Agents never quote a human-only source, so it cannot contradict what they say."""
    first = {"visibility": Visibility.HUMAN_ONLY} if human_only == "first" else {}
    second = {"visibility": Visibility.HUMAN_ONLY} if human_only == "second" else {}
    approve(tenant, owner, title="Refund policy", body=POLICY_30, **first)
    approve(tenant, colleague, title="Refund policy", body=POLICY_14, **second)
    assert hints() == [] and mailoutbox == []


def test_drafts_do_not_conflict_until_approved(tenant, owner, colleague, approve, mailoutbox):
    approve(tenant, owner, title="Refund policy", body=EXCHANGES)
    draft = approve(tenant, colleague, title="Refund policy", body=WARRANTY, status=Lifecycle.DRAFT)
    assert hints() == [] and mailoutbox == []
    assert services.flag_conflicts(draft) == []

    services.approve_source(source=draft, by=colleague)
    assert [kind for kind, *_ in hints()] == [ConflictKind.SAME_TITLE]


def test_deprecated_sources_are_not_compared(tenant, owner, colleague, approve, mailoutbox):
    approve(tenant, owner, title="Refund policy", body=POLICY_30, status=Lifecycle.DEPRECATED)
    approve(tenant, colleague, title="Refund policy", body=POLICY_14)
    assert hints() == [] and mailoutbox == []


def test_other_tenants_sources_never_conflict(tenant, other_tenant, owner, approve, mailoutbox):
    globex_owner = member(other_tenant, "knowledge_owner", username="globex.owner")
    approve(other_tenant, globex_owner, title="Refund policy", body=POLICY_30)
    approve(tenant, owner, title="Refund policy", body=POLICY_14)
    assert hints() == [] and mailoutbox == []


def test_no_mail_before_the_approval_commits(tenant, owner, colleague, mailoutbox):
    """A rolled-back approval must not have told anyone about a conflict."""
    source(tenant, owner, title="Refund policy", body=EXCHANGES)
    source(tenant, colleague, title="Refund policy", body=WARRANTY)  # no commit inside the test's transaction
    assert len(hints()) == 1 and mailoutbox == []


def test_re_approving_after_an_edit_reopens_the_one_hint_and_tells_the_owners_again(
    tenant, owner, colleague, approve, mailoutbox, django_capture_on_commit_callbacks
):
    """An edit takes the source out of retrieval (draft), which closes its hints; if the
    conflict survives the edit, approval reopens the same hint and says so again."""
    first = approve(tenant, owner, title="Refund policy", body=EXCHANGES)
    second = approve(tenant, colleague, title="Refund policy", body=WARRANTY)
    assert len(mailoutbox) == 1

    with django_capture_on_commit_callbacks(execute=True):
        services.update_source(source=second, by=colleague, body=WARRANTY + " Batteries excluded.")
        assert ConflictHint.objects.open().count() == 0
        services.approve_source(source=second, by=colleague)
        # Checking the other side again finds the open hint: no duplicate, no further mail.
        assert services.flag_conflicts(KnowledgeSource.objects.get(pk=first.pk)) == []

    assert hints() == [(ConflictKind.SAME_TITLE, *pair(first, second))]
    assert ConflictHint.objects.open().count() == 1
    assert len(mailoutbox) == 2


def test_deprecating_one_side_resolves_its_open_hints(
    tenant, owner, colleague, approve, mailoutbox, django_capture_on_commit_callbacks
):
    first = approve(tenant, owner, title="Refund policy", body=POLICY_30)
    second = approve(tenant, colleague, title="Refund policy", body=POLICY_14)
    third = approve(tenant, owner, title="Warranty", body=WARRANTY)
    fourth = approve(tenant, colleague, title="Warranty", body=EXCHANGES)  # an unrelated pair stays open
    assert ConflictHint.objects.open().count() == 3

    services.deprecate_source(source=second, by=colleague, reason="The 30-day policy is the right one")

    resolved = ConflictHint.objects.filter(source_id__in=[first.pk, second.pk])
    assert [(hint.resolved_by, hint.resolution) for hint in resolved] == [
        (colleague, "“Refund policy” was deprecated"),
        (colleague, "“Refund policy” was deprecated"),
    ]
    assert all(hint.resolved_at is not None for hint in resolved)
    assert hints(resolved_at__isnull=True) == [(ConflictKind.SAME_TITLE, *pair(third, fourth))]

    # Reinstating it brings the conflict back, open again, and the owners are told again.
    with django_capture_on_commit_callbacks(execute=True):
        services.approve_source(source=second, by=colleague, reason="Reinstated")
    assert ConflictHint.objects.open().count() == 3
    reopened = ConflictHint.objects.get(source_id=min(first.pk, second.pk), kind=ConflictKind.SAME_TITLE)
    assert (reopened.resolved_by, reopened.resolution) == (None, "")
    assert len(mailoutbox) == 3 + 2


def test_resolving_needs_a_note(tenant, owner, colleague):
    source(tenant, owner, title="Refund policy", body=EXCHANGES)
    source(tenant, colleague, title="Refund policy", body=WARRANTY)
    hint = ConflictHint.objects.get()
    for note in ("", "   ", None):
        with pytest.raises(ValidationError) as refused:
            services.resolve_conflict(hint=hint, by=owner, note=note)
        assert "resolution" in refused.value.message_dict
    assert ConflictHint.objects.get().resolved_at is None


@pytest.mark.parametrize("kind", ["support_lead", "compliance", "security", "support_agent", "nobody"])
def test_resolving_needs_the_change_permission(tenant, owner, colleague, people, kind):
    source(tenant, owner, title="Refund policy", body=EXCHANGES)
    source(tenant, colleague, title="Refund policy", body=WARRANTY)
    with pytest.raises(PermissionDenied):
        services.resolve_conflict(hint=ConflictHint.objects.get(), by=people[kind], note="Both are fine")
    assert ConflictHint.objects.get().resolved_at is None


def test_a_knowledge_owner_of_another_tenant_cannot_resolve(tenant, other_tenant, owner, colleague):
    source(tenant, owner, title="Refund policy", body=EXCHANGES)
    source(tenant, colleague, title="Refund policy", body=WARRANTY)
    outsider = member(other_tenant, "knowledge_owner", username="globex.owner")
    with pytest.raises(PermissionDenied):
        services.resolve_conflict(hint=ConflictHint.objects.get(), by=outsider, note="Not my call")
    assert ConflictHint.objects.get().resolved_at is None


def test_resolving_keeps_who_and_how_once(tenant, owner, colleague):
    source(tenant, owner, title="Refund policy", body=EXCHANGES)
    source(tenant, colleague, title="Refund policy", body=WARRANTY)
    hint = ConflictHint.objects.get()

    resolved = services.resolve_conflict(hint=hint, by=owner, note="  Different topics, same name  ")
    assert (resolved.resolved_by, resolved.resolution) == (owner, "Different topics, same name")
    assert resolved.resolved_at is not None
    services.resolve_conflict(hint=hint, by=colleague, note="Second opinion")
    hint.refresh_from_db()
    assert (hint.resolved_by, hint.resolution) == (owner, "Different topics, same name")
    assert not ConflictHint.objects.open().exists()


@pytest.mark.parametrize("side", ["first", "second"])
def test_purging_either_side_deletes_its_hints(tenant, owner, colleague, side):
    first = source(tenant, owner, title="Refund policy", body=POLICY_30)
    second = source(tenant, colleague, title="Refund policy", body=POLICY_14)
    assert ConflictHint.objects.count() == 2
    services.purge_source(source=first if side == "first" else second, by=owner, reason="Withdrawn")
    assert not ConflictHint.objects.exists()


def test_a_mail_failure_does_not_undo_the_approval(tenant, owner, colleague, approve, settings, mailoutbox, caplog):
    settings.EMAIL_BACKEND = f"{__name__}.NoMailServer"
    approve(tenant, owner, title="Refund policy", body=EXCHANGES)
    with caplog.at_level(logging.ERROR, logger="apps.knowledge.services"):
        second = approve(tenant, colleague, title="Refund policy", body=WARRANTY)
    assert KnowledgeSource.objects.get(pk=second.pk).status == Lifecycle.APPROVED
    assert len(hints()) == 1 and mailoutbox == []
    assert "Could not e-mail the owners about conflict hint" in caplog.text


def test_owners_without_email_are_not_mailed_but_the_hint_stays(tenant, owner, approve, mailoutbox):
    quiet = member(tenant, "knowledge_owner", username="quiet", email="")
    approve(tenant, quiet, title="Refund policy", body=EXCHANGES)
    approve(tenant, quiet, title="Refund policy", body=WARRANTY)
    assert len(hints()) == 1 and mailoutbox == []


def test_renaming_an_approved_source_to_another_ones_title_is_flagged(
    tenant, owner, colleague, approve, mailoutbox, django_capture_on_commit_callbacks
):
    """A new title keeps the approval (agents say the same), so the conflict the rename
    creates must be flagged by the edit itself."""
    first = approve(tenant, owner, title="Refund policy", body=EXCHANGES)
    second = approve(tenant, colleague, title="Warranty", body=WARRANTY)
    draft = approve(tenant, colleague, title="Exchanges", body=POLICY_30, status=Lifecycle.DRAFT)
    assert hints() == []

    with django_capture_on_commit_callbacks(execute=True):
        services.update_source(source=second, by=colleague, title="Refund Policy")
        services.update_source(source=draft, by=colleague, title="Refund policy")  # drafts are not compared

    assert KnowledgeSource.objects.get(pk=second.pk).status == Lifecycle.APPROVED
    assert hints() == [(ConflictKind.SAME_TITLE, *pair(first, second))]
    assert len(mailoutbox) == 1


def test_resolving_a_hint_is_an_audit_event(tenant, owner, colleague, approve):
    first = approve(tenant, owner, title="Refund policy", body=EXCHANGES)
    second = approve(tenant, colleague, title="Refund policy", body=WARRANTY)
    services.resolve_conflict(hint=ConflictHint.objects.get(), by=owner, note="Different topics, same title")
    (event,) = chained(reason="knowledge.conflict_resolved")
    assert event.actor_name == owner.username and event.tenant_id == tenant.pk
    body = event.body
    assert "Different topics, same title" in body and str(first.pk) in body and str(second.pk) in body


def test_people_without_the_role_are_refused_before_being_asked_why(tenant, owner, people):
    made = source(tenant, owner, title="Refund policy")
    for operation in (services.deprecate_source, services.purge_source):
        with pytest.raises(PermissionDenied):
            operation(source=made, by=people["support_lead"], reason="")
