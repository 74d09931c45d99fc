"""The knowledge owner's admin pages: tenant scoping, the attention filters, freshness at a
glance, uploads, bulk lifecycle actions that ask why, tombstones, gaps and conflict hints."""

import datetime
from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps import knowledge
from apps.knowledge import services
from apps.knowledge.choices import Lifecycle, StalePolicy, Visibility
from apps.knowledge.models import ConflictHint, KnowledgeSource, Passage
from apps.knowledge.retrieval import RetrievalContext

from ..accounts.factories import member
from .factories import source

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:knowledge_knowledgesource_changelist")
ADD = reverse("admin:knowledge_knowledgesource_add")


def change_url(made) -> str:
    return reverse("admin:knowledge_knowledgesource_change", args=[made.pk])


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def listed(client, **params) -> list[str]:
    response = client.get(CHANGELIST, params)
    assert response.status_code == 200
    return sorted(row.title for row in response.context["cl"].result_list)


def form_data(tenant, owner, **overrides) -> dict:
    data = {
        "tenant": str(tenant.pk),
        "title": "Warranty claims",
        "kind": "help_article",
        "owner": str(owner.pk),
        "body": "Claims need the receipt and the serial number.",
        "origin_url": "",
        "visibility": Visibility.PUBLIC,
        "brands": "",
        "regions": "",
        "products": "",
        "segments": "",
        "review_cadence_days": "90",
        "stale_policy": StalePolicy.EXCLUDE,
        "reason": "",
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
        "events-MIN_NUM_FORMS": "0",
        "events-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def _due_in(made, days: int) -> None:
    due = timezone.localdate() + datetime.timedelta(days=days)
    KnowledgeSource.objects.filter(pk=made.pk).update(
        review_due_on=due, last_reviewed_on=due - datetime.timedelta(days=made.review_cadence_days)
    )


# --- Seeing -----------------------------------------------------------------------------------


def test_owner_sees_only_their_tenants_sources(client, tenant, other_tenant, people):
    owner = people["knowledge_owner"]
    source(tenant, owner, title="Acme returns")
    globex_owner = member(other_tenant, "knowledge_owner", username="globex.owner")
    source(other_tenant, globex_owner, title="Globex returns")
    client.force_login(owner)
    assert listed(client) == ["Acme returns"]
    response = client.get(CHANGELIST)
    assert "Globex" not in response.content.decode()  # not even in the filters


def test_changelist_query_count_does_not_grow_with_sources(client, tenant, people):
    owner = people["knowledge_owner"]
    client.force_login(owner)

    def count_queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(CHANGELIST)
        return len(response.context["cl"].result_list), len(queries)

    for number in range(3):
        source(tenant, owner, title=f"Source {number}")
    few_rows, few_queries = count_queries()
    for number in range(3, 30):
        source(tenant, owner, title=f"Source {number}", status=Lifecycle.DRAFT)
    many_rows, many_queries = count_queries()
    assert (few_rows, many_rows) == (3, 30)
    assert few_queries == many_queries


def test_attention_filters(client, tenant, people):
    owner, admin_user = people["knowledge_owner"], people["admin"]
    fresh = source(tenant, owner, title="Fresh")
    stale = source(tenant, owner, title="Stale")
    _due_in(stale, -1)
    due_soon = source(tenant, admin_user, title="Due soon")
    _due_in(due_soon, 7)
    source(tenant, owner, title="Due later")
    _due_in(fresh, 8)
    source(tenant, owner, title="Draft", status=Lifecycle.DRAFT)
    source(tenant, owner, title="Old", status=Lifecycle.DEPRECATED)
    _due_in(KnowledgeSource.objects.get(title="Old"), -30)  # deprecated: not "stale", it is out anyway
    client.force_login(owner)
    assert listed(client, attention="mine") == ["Draft", "Due later", "Fresh", "Old", "Stale"]
    assert listed(client, attention="stale") == ["Stale"]
    assert listed(client, attention="due_soon") == ["Due soon"]
    assert listed(client, attention="awaiting_approval") == ["Draft"]
    assert listed(client, attention="conflicts") == []
    source(tenant, owner, title="fresh.")  # same title once folded: a conflict hint with "Fresh"
    assert listed(client, attention="conflicts") == ["Fresh", "fresh."]


def test_freshness_is_colour_coded(client, tenant, people):
    owner = people["knowledge_owner"]
    stale = source(tenant, owner, title="Stale one")
    _due_in(stale, -3)
    soon = source(tenant, owner, title="Soon one")
    _due_in(soon, 5)
    source(tenant, owner, title="Fresh one")
    warn = source(tenant, owner, title="Warned one", stale_policy=StalePolicy.WARN)
    _due_in(warn, -1)
    client.force_login(owner)
    content = client.get(CHANGELIST).content.decode()
    assert "Stale (excluded)" in content
    assert "Stale (used with warning)" in content
    assert "Due in 5 days" in content
    assert ">Fresh<" in content


# --- Adding and editing -------------------------------------------------------------------------


def test_owner_adds_a_source_by_upload_as_a_draft(client, tenant, people):
    owner = people["knowledge_owner"]
    client.force_login(owner)
    html = (
        b"<html><head><style>p{}</style></head><body><h1>Warranty</h1><p>Claims need the receipt.</p>"
        b"<script>alert(1)</script><h2>Exclusions</h2><p>Water damage is not covered.</p></body></html>"
    )
    upload = SimpleUploadedFile("warranty.html", html, content_type="text/html")
    response = client.post(ADD, form_data(tenant, owner, body="", upload=upload, regions="US, ca"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    made = KnowledgeSource.objects.get(title="Warranty claims")
    assert made.status == Lifecycle.DRAFT and made.regions == ["us", "ca"]
    assert "alert" not in made.body and "p{}" not in made.body
    headings = list(Passage.objects.filter(source=made).values_list("heading", flat=True))
    assert headings == ["Warranty claims > Warranty", "Warranty claims > Exclusions"]
    # A draft is not retrievable until approved.
    context = RetrievalContext(tenant_id=tenant.pk, region="us")
    assert knowledge.retrieve("water damage warranty", context).is_gap


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (SimpleUploadedFile("policy.pdf", b"%PDF-1.4"), "Upload a .txt, .md or .html file"),
        (SimpleUploadedFile("policy.txt", "caf\u00e9".encode("latin-1")), "is not UTF-8 text"),
        (SimpleUploadedFile("policy.md", b"abc\x00def"), "binary file"),
    ],
)
def test_bad_upload_is_explained_and_nothing_saved(client, tenant, people, upload, message):
    owner = people["knowledge_owner"]
    client.force_login(owner)
    response = client.post(ADD, form_data(tenant, owner, upload=upload))
    assert response.status_code == 200
    assert message in str(response.context["adminform"].form.errors)
    assert not KnowledgeSource.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"body": ""}, "body", "A source needs text"),
        ({"regions": "EU West"}, "regions", "short code"),
        ({"visibility": Visibility.RESTRICTED}, "restricted_roles", "must name the roles"),
        ({"review_cadence_days": "0"}, "review_cadence_days", "at most daily"),
    ],
)
def test_invalid_source_is_explained_on_the_form(client, tenant, people, overrides, field, message):
    owner = people["knowledge_owner"]
    client.force_login(owner)
    response = client.post(ADD, form_data(tenant, owner, **overrides))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in str(errors.get(field)), errors
    assert not KnowledgeSource.objects.exists()


def test_owner_must_be_someone_in_the_tenant(client, tenant, other_tenant, people):
    owner = people["knowledge_owner"]
    stranger = member(other_tenant, "knowledge_owner", username="stranger")
    client.force_login(owner)
    response = client.post(ADD, form_data(tenant, stranger))
    assert response.status_code == 200
    assert "owner" in response.context["adminform"].form.errors
    assert not KnowledgeSource.objects.exists()


def test_editing_the_text_of_an_approved_source_makes_it_a_draft_again(client, tenant, people):
    owner = people["knowledge_owner"]
    made = source(tenant, owner, title="Warranty claims", visibility=Visibility.PUBLIC)
    client.force_login(owner)
    data = form_data(tenant, owner, body="Claims need the receipt only.", reason="Serial number dropped")
    data.pop("tenant")
    response = client.post(change_url(made), data)
    assert response.status_code == 302
    made.refresh_from_db()
    assert (made.status, made.version) == (Lifecycle.DRAFT, 2)
    assert any("draft again" in message for message in messages_of(response))
    assert made.events.first().reason.startswith("Serial number dropped")


def test_support_lead_can_read_but_not_change_or_approve(client, tenant, people):
    made = source(tenant, people["knowledge_owner"], title="Warranty claims", status=Lifecycle.DRAFT)
    client.force_login(people["support_lead"])
    assert listed(client) == ["Warranty claims"]
    response = client.post(CHANGELIST, {"action": "approve_selected", ACTION_CHECKBOX_NAME: [made.pk], "index": 0})
    made.refresh_from_db()
    assert made.status == Lifecycle.DRAFT
    assert response.status_code in (200, 302)
    data = form_data(tenant, people["support_lead"], title="Hijacked")
    data.pop("tenant")
    client.post(change_url(made), data)
    made.refresh_from_db()
    assert made.title == "Warranty claims"


# --- Lifecycle actions ---------------------------------------------------------------------------


def test_bulk_approve_and_mark_reviewed(client, tenant, people):
    owner = people["knowledge_owner"]
    drafts = [source(tenant, owner, title=f"Draft {n}", status=Lifecycle.DRAFT) for n in range(2)]
    client.force_login(owner)
    response = client.post(
        CHANGELIST, {"action": "approve_selected", ACTION_CHECKBOX_NAME: [d.pk for d in drafts], "index": 0}
    )
    assert response.status_code == 302
    assert set(KnowledgeSource.objects.values_list("status", flat=True)) == {Lifecycle.APPROVED}

    _due_in(drafts[0], -2)
    response = client.post(
        CHANGELIST, {"action": "mark_reviewed_selected", ACTION_CHECKBOX_NAME: [drafts[0].pk], "index": 0}
    )
    drafts[0].refresh_from_db()
    assert drafts[0].last_reviewed_on == timezone.localdate()
    assert drafts[0].review_due_on == timezone.localdate() + datetime.timedelta(days=drafts[0].review_cadence_days)


def test_bulk_approve_reports_what_could_not_be_approved(client, tenant, people):
    owner = people["knowledge_owner"]
    approved = source(tenant, owner, title="Already approved")
    draft = source(tenant, owner, title="Draft", status=Lifecycle.DRAFT)
    client.force_login(owner)
    response = client.post(
        CHANGELIST, {"action": "approve_selected", ACTION_CHECKBOX_NAME: [approved.pk, draft.pk], "index": 0}
    )
    shown = messages_of(response)
    assert any("Approved: Draft" in message for message in shown)
    assert any("Already approved:" in message and "only drafts" in message for message in shown)


def test_deprecate_asks_why_then_deprecates(client, tenant, people):
    owner = people["knowledge_owner"]
    made = source(tenant, owner, title="Old returns")
    client.force_login(owner)
    response = client.post(CHANGELIST, {"action": "deprecate_selected", ACTION_CHECKBOX_NAME: [made.pk], "index": 0})
    assert response.status_code == 200 and "Reason (required)" in response.content.decode()
    response = client.post(
        CHANGELIST,
        {"action": "deprecate_selected", ACTION_CHECKBOX_NAME: [made.pk], "apply": "1", "reason": ""},
    )
    made.refresh_from_db()
    assert made.status == Lifecycle.APPROVED
    client.post(
        CHANGELIST,
        {"action": "deprecate_selected", ACTION_CHECKBOX_NAME: [made.pk], "apply": "1", "reason": "New policy"},
    )
    made.refresh_from_db()
    assert made.status == Lifecycle.DEPRECATED
    assert made.events.first().reason == "New policy"


def test_delete_purges_and_leaves_a_read_only_tombstone(client, tenant, people):
    owner = people["knowledge_owner"]
    made = source(tenant, owner, title="Holiday promo", body="Use code SECRETSALE for 20% off.")
    client.force_login(owner)
    response = client.post(
        CHANGELIST,
        {"action": "delete_selected_sources", ACTION_CHECKBOX_NAME: [made.pk], "apply": "1", "reason": "Ended"},
    )
    assert response.status_code == 302
    made.refresh_from_db()
    assert made.status == Lifecycle.DELETED and made.body == ""
    page = client.get(change_url(made))
    content = page.content.decode()
    assert page.status_code == 200
    assert "Tombstone" in content and "Holiday promo" in content and "Ended" in content
    assert "SECRETSALE" not in content
    history = client.get(reverse("admin:knowledge_knowledgesource_history", args=[made.pk]))
    assert history.status_code == 200 and "SECRETSALE" not in history.content.decode()
    # Nothing can be changed on a tombstone.
    data = form_data(tenant, owner, body="Back again")
    data.pop("tenant")
    client.post(change_url(made), data)
    made.refresh_from_db()
    assert made.body == ""


def test_support_lead_cannot_delete(client, tenant, people):
    made = source(tenant, people["knowledge_owner"], title="Keep me")
    client.force_login(people["support_lead"])
    client.post(
        CHANGELIST,
        {"action": "delete_selected_sources", ACTION_CHECKBOX_NAME: [made.pk], "apply": "1", "reason": "x"},
    )
    made.refresh_from_db()
    assert made.status == Lifecycle.APPROVED


# --- Gaps and conflicts -----------------------------------------------------------------------------


def test_gap_report_lists_this_tenants_gaps_most_frequent_first(client, tenant, other_tenant, people):
    context = RetrievalContext(tenant_id=tenant.pk)
    for question in ("Do you accept cryptocurrency?", "Do you accept cryptocurrency?", "Student discount?"):
        knowledge.retrieve(question, context)
    knowledge.retrieve("Globex loyalty points?", RetrievalContext(tenant_id=other_tenant.pk))
    client.force_login(people["knowledge_owner"])
    response = client.get(reverse("admin:knowledge_knowledgegap_changelist"))
    rows = [(gap.topic, gap.occurrences) for gap in response.context["cl"].result_list]
    assert rows == [("accept cryptocurrenc", 2), ("discount student", 1)]


def test_conflict_hint_is_resolved_with_a_note(client, tenant, people):
    owner = people["knowledge_owner"]
    first = source(tenant, owner, title="Price match", body="We match prices within 14 days of purchase, online.")
    second = source(tenant, owner, title="Price match!", body="Something else entirely, about other things.")
    hint = ConflictHint.objects.get()
    assert {hint.source_id, hint.other_source_id} == {first.pk, second.pk}
    client.force_login(owner)
    changelist = reverse("admin:knowledge_conflicthint_changelist")
    client.post(changelist, {"action": "resolve_selected", ACTION_CHECKBOX_NAME: [hint.pk], "apply": "1", "reason": ""})
    hint.refresh_from_db()
    assert hint.resolved_at is None
    client.post(
        changelist,
        {"action": "resolve_selected", ACTION_CHECKBOX_NAME: [hint.pk], "apply": "1", "reason": "Web one is right"},
    )
    hint.refresh_from_db()
    assert hint.resolution == "Web one is right" and hint.resolved_by == owner
    page = client.get(change_url(first)).content.decode()
    assert "Open conflict hints" in page


def test_services_reject_changes_to_a_tombstone(tenant, people):
    owner = people["knowledge_owner"]
    made = source(tenant, owner, title="Gone", status=Lifecycle.DELETED)
    with pytest.raises(services.ValidationError):
        services.update_source(source=made, by=owner, title="Back")


def test_sweep_command_reports_and_refuses_bad_dates(tenant, people, mailoutbox):
    owner = people["knowledge_owner"]
    made = source(tenant, owner, title="Shipping times")
    with pytest.raises(CommandError, match="--today must be a date"):
        call_command("knowledge_sweep", today="next tuesday")
    later = (timezone.localdate() + datetime.timedelta(days=made.review_cadence_days + 1)).isoformat()
    out = StringIO()
    call_command("knowledge_sweep", today=later, stdout=out)
    assert "Marked 1 source(s) stale; notified 1 owner(s)" in out.getvalue()
    assert [message.to for message in mailoutbox] == [[owner.email]]


# --- Buttons on a source's page ---------------------------------------------------------------------


def step_url(made, step: str) -> str:
    return reverse(f"admin:knowledge_knowledgesource_{step}", args=[made.pk])


def test_source_page_offers_the_steps_its_status_allows(client, tenant, people):
    owner = people["knowledge_owner"]
    draft = source(tenant, owner, title="Draft", status=Lifecycle.DRAFT)
    approved = source(tenant, owner, title="Approved")
    client.force_login(owner)
    draft_page = client.get(change_url(draft)).content.decode()
    assert step_url(draft, "approve") in draft_page and step_url(draft, "review") not in draft_page
    approved_page = client.get(change_url(approved)).content.decode()
    assert step_url(approved, "review") in approved_page and step_url(approved, "approve") not in approved_page


def test_mark_reviewed_button(client, tenant, people):
    owner = people["knowledge_owner"]
    made = source(tenant, owner, title="Shipping times")
    _due_in(made, -4)
    client.force_login(owner)
    assert client.get(step_url(made, "review")).status_code == 200
    response = client.post(step_url(made, "review"), {"reason": ""})
    assert response.status_code == 302 and response.url == change_url(made)
    made.refresh_from_db()
    assert made.last_reviewed_on == timezone.localdate()
    assert made.events.first().reason == "Reviewed: still accurate"


def test_deprecate_button_needs_a_reason(client, tenant, people):
    owner = people["knowledge_owner"]
    made = source(tenant, owner, title="Old returns")
    client.force_login(owner)
    response = client.post(step_url(made, "deprecate"), {"reason": ""})
    assert response.status_code == 200 and "required" in response.content.decode().lower()
    made.refresh_from_db()
    assert made.status == Lifecycle.APPROVED
    client.post(step_url(made, "deprecate"), {"reason": "Superseded"})
    made.refresh_from_db()
    assert made.status == Lifecycle.DEPRECATED


def test_buttons_refuse_people_without_the_permission(client, tenant, other_tenant, people):
    made = source(tenant, people["knowledge_owner"], title="Draft", status=Lifecycle.DRAFT)
    client.force_login(people["support_lead"])
    response = client.post(step_url(made, "approve"), {"reason": ""})
    assert any("needs the knowledge owner" in message for message in messages_of(response))
    made.refresh_from_db()
    assert made.status == Lifecycle.DRAFT
    # Another tenant's knowledge owner cannot even find it.
    client.force_login(member(other_tenant, "knowledge_owner", username="globex.owner"))
    assert client.post(step_url(made, "approve"), {"reason": ""}).status_code == 403
    made.refresh_from_db()
    assert made.status == Lifecycle.DRAFT
