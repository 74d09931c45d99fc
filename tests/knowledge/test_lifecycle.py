"""A source's life through the services: create, approve, edit, review, deprecate and purge.
Each step checks the actor's role in the source's tenant, keeps who/when/why (SourceEvent,
history row, audit event) and writes everything or nothing."""

import datetime
import json

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.accounts.choices import RoleKind
from apps.accounts.models import Membership
from apps.accounts.role_permissions import ROLE_POLICIES
from apps.accounts.services import remove_membership
from apps.knowledge import services
from apps.knowledge.choices import ConflictKind, Lifecycle, SourceAction, StalePolicy, Visibility
from apps.knowledge.models import ConflictHint, KnowledgeSource, Passage, SourceEvent
from apps.knowledge.text import fingerprint

from ..accounts.factories import member
from ..audit.helpers import chained
from .factories import source
from .helpers import make_overdue

pytestmark = pytest.mark.django_db

BODY = (
    "Unused items can be returned within 30 days of delivery for a full refund.\n\n"
    "## Damaged items\n\n"
    "Tell us within 14 days with a photo and we refund the order in full, including shipping.\n\n"
    "## Exceptions\n\n"
    "Gift cards and perishable food cannot be returned."
)
SECRET_WORDS = ("perishable", "photo", "Unused items")  # words of BODY that must never reach the audit trail

REFUSED_KINDS = ["support_lead", "security", "compliance", "support_agent", "agent_owner", "nobody"]


def create(tenant, by, **fields):
    fields = {"title": "Refund policy", "owner": by, "body": BODY, **fields}
    return services.create_source(by=by, tenant=tenant, **fields)


def fresh(made):
    return KnowledgeSource.objects.get(pk=made.pk)


def events(made):
    return list(
        SourceEvent.objects.filter(source_id=made.pk)
        .order_by("pk")
        .values_list("action", "from_status", "to_status", "version", "by__username", "reason")
    )


def knowledge_audit(**filters):
    return list(chained(event_type="config.changed", reason__startswith="knowledge.", **filters))


def assert_no_text_in(event, *words):
    recorded = json.dumps(event.data)
    for word in words:
        assert word not in recorded


# --- Creating ------------------------------------------------------------------------------------


def test_a_new_source_is_a_draft_with_its_passages(tenant, owner):
    made = create(tenant, owner, reason="Policy from legal, March")

    made = fresh(made)
    assert (made.status, made.version, made.created_by, made.owner) == (Lifecycle.DRAFT, 1, owner, owner)
    assert made.approved_by is None and made.approved_at is None
    assert made.last_reviewed_on is None and made.review_due_on is None and made.stale_since is None
    passages = list(Passage.objects.filter(source=made).order_by("position"))
    assert [(p.position, p.heading) for p in passages] == [
        (1, "Refund policy"),
        (2, "Refund policy > Damaged items"),
        (3, "Refund policy > Exceptions"),
    ]
    assert passages[2].text == "Gift cards and perishable food cannot be returned."
    assert all(p.tenant_id == tenant.pk for p in passages)
    assert [p.fingerprint for p in passages] == [fingerprint(p.text) for p in passages]
    assert all(len(p.fingerprint) == 40 for p in passages)

    assert events(made) == [("created", "", "draft", 1, owner.username, "Policy from legal, March")]
    (event,) = knowledge_audit(reason="knowledge.created")
    assert (event.tenant_id, event.actor_name, event.data["actor_roles"]) == (
        tenant.pk,
        owner.username,
        ["knowledge_owner"],
    )
    assert event.data["payload"] == {
        "source": {"id": made.pk, "title": "Refund policy", "version": 1},
        "status": ["", "draft"],
        "why": "Policy from legal, March",
    }
    assert_no_text_in(event, *SECRET_WORDS)
    (row,) = made.history.all()
    assert (row.history_user, row.history_change_reason) == (owner, "Policy from legal, March")


def test_create_without_a_reason_says_so(tenant, owner):
    made = create(tenant, owner)
    assert events(made)[0][-1] == "Source created"


@pytest.mark.parametrize("kind", REFUSED_KINDS)
def test_only_knowledge_roles_add_sources(tenant, people, kind):
    with pytest.raises(PermissionDenied):
        create(tenant, people[kind], owner=people["knowledge_owner"])
    assert not KnowledgeSource.objects.exists()


def test_admin_may_add_sources(tenant, people):
    assert create(tenant, people["admin"]).status == Lifecycle.DRAFT


def test_no_adding_sources_to_another_tenant(tenant, other_tenant, owner):
    other_owner = member(other_tenant, "knowledge_owner", username="globex.owner")
    with pytest.raises(PermissionDenied):
        create(other_tenant, owner, owner=other_owner)
    assert not KnowledgeSource.objects.exists()


def test_owner_must_hold_a_role_in_the_tenant(tenant, other_tenant, owner, people):
    stranger = member(other_tenant, "knowledge_owner", username="globex.owner")
    for outsider in (stranger, people["nobody"]):
        with pytest.raises(ValidationError) as refused:
            create(tenant, owner, owner=outsider)
        assert "owner" in refused.value.message_dict
    # Any role in the tenant will do: the owner keeps it true, they need not edit it here.
    assert create(tenant, owner, owner=people["support_agent"]).owner == people["support_agent"]


def test_owner_is_required(tenant, owner):
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, owner=None)
    assert "owner" in refused.value.message_dict


def test_a_refused_create_leaves_nothing_behind(tenant, other_tenant, owner):
    stranger = member(other_tenant, "knowledge_owner", username="globex.owner")
    with pytest.raises(ValidationError):
        create(tenant, owner, owner=stranger)
    assert KnowledgeSource.objects.count() == 0
    assert KnowledgeSource.history.count() == 0
    assert Passage.objects.count() == 0
    assert SourceEvent.objects.count() == 0
    assert knowledge_audit() == []


def test_a_create_that_fails_late_is_rolled_back_whole(tenant, owner, monkeypatch):
    """The source row and its passages are written before the event is; when that fails,
    none of them may stay."""

    def broken_record(*args, **kwargs):
        assert KnowledgeSource.objects.count() == 1 and Passage.objects.count() == 3  # really written by now
        raise RuntimeError("audit trail unavailable")

    monkeypatch.setattr(services, "_record", broken_record)
    with pytest.raises(RuntimeError):
        create(tenant, owner)
    assert KnowledgeSource.objects.count() == 0
    assert KnowledgeSource.history.count() == 0
    assert Passage.objects.count() == 0
    assert knowledge_audit() == []


def test_restricted_source_must_name_roles(tenant, owner):
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, visibility=Visibility.RESTRICTED)
    assert "restricted_roles" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, visibility=Visibility.INTERNAL, restricted_roles=["security"])
    assert "restricted_roles" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, visibility=Visibility.RESTRICTED, restricted_roles=["wizard"])
    assert "restricted_roles" in refused.value.message_dict
    made = create(tenant, owner, visibility=Visibility.RESTRICTED, restricted_roles=["security"])
    assert made.restricted_roles == ["security"]
    assert KnowledgeSource.objects.count() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("regions", ["EU West"]),
        ("regions", ["EU"]),
        ("regions", ["eu", "eu"]),
        ("regions", [""]),
        ("regions", "eu"),  # a string, not a list
        ("brands", ["-acme"]),
        ("products", ["a" * 41]),
        ("segments", [1]),
        ("channels", ["Web_Chat"]),
    ],
)
def test_bad_scope_codes_are_refused(tenant, owner, field, value):
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, **{field: value})
    assert list(refused.value.message_dict) == [field]
    assert not KnowledgeSource.objects.exists()


def test_good_scope_codes_are_kept(tenant, owner):
    made = create(tenant, owner, regions=["eu", "us-east"], products=["a" * 40], segments=["smb_2"], channels=["email"])
    assert fresh(made).regions == ["eu", "us-east"]
    assert "|region:eu|region:us-east|" in fresh(made).scope_tokens


def test_unknown_channel_is_refused(tenant, owner):
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, channels=["web_chat", "fax"])
    assert "fax" in refused.value.message_dict["channels"][0]
    assert "web_chat" not in refused.value.message_dict["channels"][0].split(":")[0]


@pytest.mark.parametrize("body", ["", "   \n\n\t "])
def test_a_source_needs_text(tenant, owner, body):
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, body=body)
    assert "body" in refused.value.message_dict


def test_over_long_text_is_refused_with_the_sizes(tenant, owner):
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, body="x" * (services.MAX_BODY_CHARS + 1))
    assert refused.value.message_dict["body"] == ["The text is 2,000,001 characters; the limit is 2,000,000."]
    assert not KnowledgeSource.objects.exists()


def test_text_of_exactly_the_limit_is_accepted(tenant, owner, monkeypatch):
    monkeypatch.setattr(services, "MAX_BODY_CHARS", 50)
    assert create(tenant, owner, body="y" * 50).body == "y" * 50
    with pytest.raises(ValidationError):
        create(tenant, owner, body="y" * 51)


@pytest.mark.parametrize("days", [0, 3651])
def test_review_cadence_is_bounded(tenant, owner, days):
    with pytest.raises(ValidationError) as refused:
        create(tenant, owner, review_cadence_days=days)
    assert "review_cadence_days" in refused.value.message_dict


@pytest.mark.parametrize("field", ["status", "version", "approved_by", "stale_since", "tenant"])
def test_fields_the_services_own_cannot_be_set(tenant, owner, field):
    """Lifecycle fields change only through their own operation: no approving by editing."""
    made = create(tenant, owner)
    with pytest.raises(ValidationError, match=f"Unknown source fields: {field}"):
        services.update_source(source=made, by=owner, **{field: "approved" if field == "status" else None})
    if field != "tenant":  # create's own argument
        with pytest.raises(ValidationError, match="Unknown source fields"):
            create(tenant, owner, title="Other", **{field: None})
    assert fresh(made).status == Lifecycle.DRAFT and KnowledgeSource.objects.count() == 1


# --- Approving ----------------------------------------------------------------------------------


def test_approval_starts_the_review_clock_and_is_recorded(tenant, owner, people):
    made = source(tenant, owner, body=BODY, status=Lifecycle.DRAFT, review_cadence_days=30)
    admin = people["admin"]

    returned = services.approve_source(source=made, by=admin, reason="Checked with legal")

    made = fresh(made)
    today = timezone.localdate()
    assert returned.status == made.status == Lifecycle.APPROVED
    assert (made.approved_by, made.last_reviewed_on) == (admin, today)
    assert made.review_due_on == today + datetime.timedelta(days=30)
    assert made.approved_at is not None and made.stale_since is None
    assert events(made)[-1] == ("approved", "draft", "approved", 1, "admin", "Checked with legal")
    (event,) = knowledge_audit(reason="knowledge.approved")
    assert (event.tenant_id, event.actor_name, event.data["actor_roles"]) == (tenant.pk, "admin", ["admin"])
    assert event.data["payload"] == {
        "source": {"id": made.pk, "title": "Refund policy", "version": 1},
        "status": ["draft", "approved"],
        "why": "Checked with legal",
    }
    assert_no_text_in(event, *SECRET_WORDS)
    latest = made.history.order_by("-history_id").first()
    assert (latest.status, latest.history_user, latest.history_change_reason) == (
        Lifecycle.APPROVED,
        admin,
        "Checked with legal",
    )


def test_approval_without_a_reason(tenant, owner):
    made = source(tenant, owner, status=Lifecycle.DRAFT)
    services.approve_source(source=made, by=owner)
    assert events(made)[-1][-1] == "Approved"


@pytest.mark.parametrize("kind", REFUSED_KINDS)
def test_approval_needs_the_knowledge_owner_or_admin_role(tenant, owner, people, kind):
    made = source(tenant, owner, status=Lifecycle.DRAFT)
    with pytest.raises(PermissionDenied):
        services.approve_source(source=made, by=people[kind])
    assert fresh(made).status == Lifecycle.DRAFT and fresh(made).approved_by is None
    assert [action for action, *_ in events(made)] == ["created"]
    assert knowledge_audit(reason="knowledge.approved") == []


def test_approval_by_no_one_is_refused(tenant, owner):
    made = source(tenant, owner, status=Lifecycle.DRAFT)
    with pytest.raises(PermissionDenied):
        services.approve_source(source=made, by=None)


def test_a_knowledge_owner_of_another_tenant_changes_nothing_here(tenant, other_tenant, owner):
    made = source(tenant, owner, body=BODY, status=Lifecycle.DRAFT)
    outsider = member(other_tenant, "knowledge_owner", username="globex.owner")
    attempts = [
        lambda: services.approve_source(source=made, by=outsider),
        lambda: services.update_source(source=made, by=outsider, title="Hijacked"),
        lambda: services.deprecate_source(source=made, by=outsider, reason="Mine now"),
        lambda: services.purge_source(source=made, by=outsider, reason="Mine now"),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDenied):
            attempt()
    made = fresh(made)
    assert (made.status, made.title, made.body, made.passages.count()) == (Lifecycle.DRAFT, "Refund policy", BODY, 3)
    assert len(events(made)) == 1


def test_superuser_may_approve_anywhere(tenant, owner, superuser):
    made = source(tenant, owner, status=Lifecycle.DRAFT)
    assert services.approve_source(source=made, by=superuser).approved_by == superuser


def test_approving_twice_is_refused(tenant, owner):
    made = source(tenant, owner)  # approved
    with pytest.raises(ValidationError, match="only drafts are approved"):
        services.approve_source(source=made, by=owner)
    assert [action for action, *_ in events(made)] == ["created", "approved"]


def test_a_deleted_source_cannot_be_approved(tenant, owner):
    made = source(tenant, owner, status=Lifecycle.DELETED)
    with pytest.raises(ValidationError):
        services.approve_source(source=made, by=owner)
    assert fresh(made).status == Lifecycle.DELETED


def test_a_deprecated_source_is_reinstated_by_approval(tenant, owner, people):
    made = source(tenant, owner, status=Lifecycle.DEPRECATED, review_cadence_days=10)
    make_overdue(made, days=50)  # long past its review: reinstating counts as a review

    services.approve_source(source=made, by=people["admin"], reason="Back in force")

    made = fresh(made)
    assert made.status == Lifecycle.APPROVED and made.approved_by == people["admin"]
    assert made.review_due_on == timezone.localdate() + datetime.timedelta(days=10)
    assert events(made)[-1] == ("approved", "deprecated", "approved", 1, "admin", "Back in force")


def test_approval_is_refused_when_the_owner_has_left_the_tenant(tenant, owner, people):
    leaver = member(tenant, "support_agent", username="leaver")
    made = source(tenant, owner, status=Lifecycle.DRAFT)
    services.update_source(source=made, by=owner, owner=leaver)
    remove_membership(membership=Membership.objects.get(user=leaver), by=people["admin"])

    with pytest.raises(ValidationError) as refused:
        services.approve_source(source=made, by=owner)
    assert "owner" in refused.value.message_dict
    assert fresh(made).status == Lifecycle.DRAFT
    assert knowledge_audit(reason="knowledge.approved") == []


def test_an_approval_that_fails_late_is_rolled_back_whole(tenant, owner, monkeypatch):
    made = source(tenant, owner, status=Lifecycle.DRAFT)

    def broken_flag_conflicts(approved):
        assert fresh(approved).status == Lifecycle.APPROVED  # the approval was written by now
        raise RuntimeError("conflict check crashed")

    monkeypatch.setattr(services, "flag_conflicts", broken_flag_conflicts)
    with pytest.raises(RuntimeError):
        services.approve_source(source=made, by=owner)
    made = fresh(made)
    assert (made.status, made.approved_by, made.last_reviewed_on) == (Lifecycle.DRAFT, None, None)
    assert [action for action, *_ in events(made)] == ["created"]
    assert made.history.count() == 1
    assert knowledge_audit(reason="knowledge.approved") == []


# --- Editing -------------------------------------------------------------------------------------


def test_title_only_edit_keeps_the_approval_and_renames_the_passages(tenant, owner, people):
    made = source(tenant, owner, body=BODY)
    approved_at = made.approved_at

    services.update_source(source=made, by=owner, title="Returns and refunds", reason="Clearer name")

    made = fresh(made)
    assert (made.status, made.version, made.approved_by, made.approved_at) == (
        Lifecycle.APPROVED,
        1,
        owner,
        approved_at,
    )
    assert list(made.passages.values_list("heading", flat=True)) == [
        "Returns and refunds",
        "Returns and refunds > Damaged items",
        "Returns and refunds > Exceptions",
    ]
    assert events(made)[-1] == ("edited", "approved", "approved", 1, owner.username, "Clearer name")
    (event,) = knowledge_audit(reason="knowledge.edited")
    assert event.data["payload"]["changes"] == {"title": ["Refund policy", "Returns and refunds"]}


def test_new_text_raises_the_version_and_needs_approval_again(tenant, owner):
    made = source(tenant, owner, body=BODY)
    new_body = "Unused items can be returned within 60 days of delivery.\n\n## Exceptions\n\nNone: confidential."

    services.update_source(source=made, by=owner, body=new_body, reason="Longer window")

    made = fresh(made)
    assert (made.status, made.version, made.approved_by, made.approved_at) == (Lifecycle.DRAFT, 2, None, None)
    assert list(made.passages.values_list("position", "heading", "text")) == [
        (1, "Refund policy", "Unused items can be returned within 60 days of delivery."),
        (2, "Refund policy > Exceptions", "None: confidential."),
    ]
    action, from_status, to_status, version, by, reason = events(made)[-1]
    assert (action, from_status, to_status, version, by) == (
        "returned_to_draft",
        "approved",
        "draft",
        2,
        owner.username,
    )
    assert reason == "Longer window (changed body: needs approval again)"
    (event,) = knowledge_audit(reason="knowledge.returned_to_draft")
    assert event.data["payload"]["changes"] == {"body": "text changed"}
    assert event.data["payload"]["source"]["version"] == 2
    assert_no_text_in(event, "60 days", "confidential", *SECRET_WORDS)
    # Approving the new text makes it current again.
    services.approve_source(source=made, by=owner)
    assert fresh(made).status == Lifecycle.APPROVED and fresh(made).version == 2


def test_new_text_on_a_draft_stays_a_draft(tenant, owner):
    made = source(tenant, owner, status=Lifecycle.DRAFT)
    services.update_source(source=made, by=owner, body="Completely new text about refunds.")
    made = fresh(made)
    assert (made.status, made.version) == (Lifecycle.DRAFT, 2)
    assert events(made)[-1][:4] == ("edited", "draft", "draft", 2)
    assert list(made.passages.values_list("text", flat=True)) == ["Completely new text about refunds."]


@pytest.mark.parametrize(
    ("changes", "expected_diff"),
    [
        ({"visibility": Visibility.PUBLIC}, {"visibility": ["internal", "public"]}),
        (
            {"visibility": Visibility.RESTRICTED, "restricted_roles": ["support_lead"]},
            {"visibility": ["internal", "restricted"], "restricted_roles": [[], ["support_lead"]]},
        ),
        ({"regions": ["eu"]}, {"regions": [[], ["eu"]]}),
        ({"channels": ["email"]}, {"channels": [[], ["email"]]}),
    ],
)
def test_changing_who_may_see_it_needs_approval_again(tenant, owner, changes, expected_diff):
    made = source(tenant, owner, body=BODY)
    passage_ids = list(made.passages.values_list("pk", flat=True))

    services.update_source(source=made, by=owner, **changes)

    made = fresh(made)
    assert (made.status, made.version, made.approved_by) == (Lifecycle.DRAFT, 1, None)
    assert list(made.passages.values_list("pk", flat=True)) == passage_ids  # same text: passages kept
    assert events(made)[-1][:3] == ("returned_to_draft", "approved", "draft")
    (event,) = knowledge_audit(reason="knowledge.returned_to_draft")
    assert event.data["payload"]["changes"] == expected_diff


def test_settings_that_do_not_govern_answers_keep_the_approval(tenant, owner, people):
    made = source(tenant, owner, review_cadence_days=90)
    services.update_source(
        source=made,
        by=owner,
        review_cadence_days=7,
        stale_policy=StalePolicy.WARN,
        owner=people["admin"],
        origin_url="https://help.example.com/refunds",
    )
    made = fresh(made)
    assert (made.status, made.owner, made.approved_by) == (Lifecycle.APPROVED, people["admin"], owner)
    assert made.review_due_on == timezone.localdate() + datetime.timedelta(days=7)  # due date follows the cadence
    (event,) = knowledge_audit(reason="knowledge.edited")
    assert event.data["payload"]["changes"] == {
        "review_cadence_days": [90, 7],
        "stale_policy": ["exclude", "warn"],
        "owner": [owner.username, "admin"],
        "origin_url": ["", "https://help.example.com/refunds"],
    }


def test_an_edit_that_changes_nothing_records_nothing(tenant, owner):
    made = source(tenant, owner, body=BODY, regions=["eu"])
    before = (SourceEvent.objects.count(), made.history.count(), len(knowledge_audit()))

    services.update_source(source=made, by=owner, title="Refund policy", body=BODY, regions=["eu"], owner=owner)

    assert (SourceEvent.objects.count(), made.history.count(), len(knowledge_audit())) == before
    assert (fresh(made).status, fresh(made).version, fresh(made).updated_at) == (
        Lifecycle.APPROVED,
        1,
        made.updated_at,
    )


def test_a_refused_edit_changes_nothing(tenant, owner, people):
    made = source(tenant, owner, body=BODY)
    with pytest.raises(ValidationError):
        services.update_source(source=made, by=owner, body="New text", regions=["EU West"])
    with pytest.raises(PermissionDenied):
        services.update_source(source=made, by=people["support_lead"], title="Edited by a lead")
    made = fresh(made)
    assert (made.status, made.version, made.title, made.body, made.regions) == (
        Lifecycle.APPROVED,
        1,
        "Refund policy",
        BODY,
        [],
    )
    assert made.passages.count() == 3 and len(events(made)) == 2


def test_a_deleted_source_cannot_be_edited(tenant, owner):
    made = source(tenant, owner, status=Lifecycle.DELETED)
    with pytest.raises(ValidationError, match="deleted"):
        services.update_source(source=made, by=owner, body="Resurrected text")
    assert fresh(made).body == "" and fresh(made).passages.count() == 0


def test_editing_a_deprecated_source_keeps_it_deprecated(tenant, owner):
    made = source(tenant, owner, status=Lifecycle.DEPRECATED)
    services.update_source(source=made, by=owner, body="Updated text about the old refund rules.")
    made = fresh(made)
    assert (made.status, made.version) == (Lifecycle.DEPRECATED, 2)
    assert events(made)[-1][:3] == ("edited", "deprecated", "deprecated")


# --- Reviewing -----------------------------------------------------------------------------------


def test_review_restarts_the_clock_and_clears_the_stale_flag(tenant, owner):
    made = source(tenant, owner, review_cadence_days=30)
    make_overdue(made, days=5)
    services.sweep_freshness()
    assert fresh(made).stale_since is not None

    services.mark_reviewed(source=made, by=owner, note="Checked against the new terms")

    made = fresh(made)
    today = timezone.localdate()
    assert (made.last_reviewed_on, made.review_due_on, made.stale_since) == (
        today,
        today + datetime.timedelta(days=30),
        None,
    )
    assert events(made)[-1] == (
        "reviewed",
        "approved",
        "approved",
        1,
        owner.username,
        "Checked against the new terms",
    )
    (event,) = knowledge_audit(reason="knowledge.reviewed")
    assert event.data["payload"]["why"] == "Checked against the new terms"


def test_review_without_a_note(tenant, owner):
    made = source(tenant, owner)
    services.mark_reviewed(source=made, by=owner)
    assert events(made)[-1][-1] == "Reviewed: still accurate"


@pytest.mark.parametrize("status", [Lifecycle.DRAFT, Lifecycle.DEPRECATED, Lifecycle.DELETED])
def test_only_approved_sources_are_reviewed(tenant, owner, status):
    made = source(tenant, owner, status=status)
    with pytest.raises(ValidationError, match="only approved sources are reviewed"):
        services.mark_reviewed(source=made, by=owner)
    assert fresh(made).last_reviewed_on == made.last_reviewed_on
    assert SourceAction.REVIEWED not in [action for action, *_ in events(made)]


@pytest.mark.parametrize("kind", ["support_lead", "compliance", "nobody"])
def test_review_needs_the_change_permission(tenant, owner, people, kind):
    made = source(tenant, owner)
    make_overdue(made)
    with pytest.raises(PermissionDenied):
        services.mark_reviewed(source=made, by=people[kind])
    assert fresh(made).review_due_on < timezone.localdate()


# --- Deprecating ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   "])
def test_deprecation_needs_a_reason(tenant, owner, reason):
    made = source(tenant, owner)
    with pytest.raises(ValidationError) as refused:
        services.deprecate_source(source=made, by=owner, reason=reason)
    assert "reason" in refused.value.message_dict
    assert fresh(made).status == Lifecycle.APPROVED


@pytest.mark.parametrize("status", [Lifecycle.APPROVED, Lifecycle.DRAFT])
def test_deprecation_is_recorded(tenant, owner, status):
    made = source(tenant, owner, status=status)
    services.deprecate_source(source=made, by=owner, reason="  Replaced by the 2025 policy  ")
    assert fresh(made).status == Lifecycle.DEPRECATED
    assert fresh(made).body  # the text is kept for the record
    assert events(made)[-1] == ("deprecated", status, "deprecated", 1, owner.username, "Replaced by the 2025 policy")
    (event,) = knowledge_audit(reason="knowledge.deprecated")
    assert event.data["payload"]["why"] == "Replaced by the 2025 policy"


def test_deprecating_twice_or_a_deleted_source_is_refused(tenant, owner):
    for status in (Lifecycle.DEPRECATED, Lifecycle.DELETED):
        made = source(tenant, owner, title=f"Source {status}", status=status)
        with pytest.raises(ValidationError, match="already"):
            services.deprecate_source(source=made, by=owner, reason="Again")
        assert fresh(made).status == status


def test_deprecation_needs_the_change_permission(tenant, owner, people):
    made = source(tenant, owner)
    with pytest.raises(PermissionDenied):
        services.deprecate_source(source=made, by=people["support_lead"], reason="Looks wrong")
    assert fresh(made).status == Lifecycle.APPROVED


# --- Purging -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["support_lead", "compliance", "security", "agent_owner", "nobody"])
def test_purge_needs_the_purge_permission(tenant, owner, people, kind):
    made = source(tenant, owner, body=BODY)
    with pytest.raises(PermissionDenied):
        services.purge_source(source=made, by=people[kind], reason="Obsolete")
    made = fresh(made)
    assert (made.status, made.body, made.passages.count()) == (Lifecycle.APPROVED, BODY, 3)


@pytest.mark.parametrize("kind", ["knowledge_owner", "admin"])
def test_knowledge_owners_and_admins_may_purge(tenant, owner, people, kind):
    made = source(tenant, owner)
    services.purge_source(source=made, by=people[kind], reason="Obsolete")
    assert fresh(made).status == Lifecycle.DELETED and fresh(made).deleted_by == people[kind]


def test_approving_and_purging_need_their_own_permissions_not_just_change(tenant, owner, people, monkeypatch):
    """No default role can edit without also approving and purging, so give one that power alone."""
    lead = people["support_lead"]
    patterns = (*ROLE_POLICIES[RoleKind.SUPPORT_LEAD]["patterns"], "knowledge.change_knowledgesource")
    monkeypatch.setitem(ROLE_POLICIES[RoleKind.SUPPORT_LEAD], "patterns", patterns)
    made = source(tenant, owner, status=Lifecycle.DRAFT)

    services.update_source(source=made, by=lead, title="Edited by a lead")  # allowed now
    with pytest.raises(PermissionDenied):
        services.approve_source(source=made, by=lead)
    with pytest.raises(PermissionDenied):
        services.purge_source(source=made, by=lead, reason="Obsolete")
    made = fresh(made)
    assert (made.title, made.status, made.deleted_at) == ("Edited by a lead", Lifecycle.DRAFT, None)
    assert made.body and made.passages.exists()


@pytest.mark.parametrize("reason", ["", " \n "])
def test_purge_needs_a_reason(tenant, owner, reason):
    made = source(tenant, owner)
    with pytest.raises(ValidationError) as refused:
        services.purge_source(source=made, by=owner, reason=reason)
    assert "reason" in refused.value.message_dict
    assert fresh(made).status == Lifecycle.APPROVED and fresh(made).body


def test_purge_removes_every_copy_of_the_text_and_keeps_a_tombstone(tenant, owner, people):
    made = source(tenant, owner, body=BODY)
    services.update_source(source=made, by=owner, body=BODY + "\n\nAnd perishable flowers.")
    services.approve_source(source=made, by=owner)
    twin = source(tenant, people["admin"], title="Refund policy", body="Other text entirely, about exchanges only.")
    assert ConflictHint.objects.filter(kind=ConflictKind.SAME_TITLE).count() == 1
    assert made.history.count() >= 3

    services.purge_source(source=made, by=people["admin"], reason="Withdrawn by legal")

    made = fresh(made)
    assert (made.status, made.body, made.title, made.owner) == (Lifecycle.DELETED, "", "Refund policy", owner)
    assert (made.deleted_by, made.deletion_reason) == (people["admin"], "Withdrawn by legal")
    assert made.deleted_at is not None
    assert Passage.objects.filter(source_id=made.pk).count() == 0
    assert not ConflictHint.objects.exists()
    assert set(made.history.values_list("body", flat=True)) == {""}
    # The twin is untouched, and the record of who did what stays.
    assert fresh(twin).body and fresh(twin).passages.count() == 1
    assert [action for action, *_ in events(made)] == [
        "created",
        "approved",
        "returned_to_draft",
        "approved",
        "deleted",
    ]
    assert events(made)[-1] == ("deleted", "approved", "deleted", 2, "admin", "Withdrawn by legal")
    (event,) = knowledge_audit(reason="knowledge.deleted")
    assert event.data["payload"]["source"] == {"id": made.pk, "title": "Refund policy", "version": 2}
    for recorded in knowledge_audit():
        assert_no_text_in(recorded, *SECRET_WORDS)


def test_purging_twice_is_refused(tenant, owner):
    made = source(tenant, owner, status=Lifecycle.DELETED)
    with pytest.raises(ValidationError, match="already deleted"):
        services.purge_source(source=made, by=owner, reason="Again")
    assert [action for action, *_ in events(made)].count("deleted") == 1
