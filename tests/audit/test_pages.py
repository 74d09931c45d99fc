"""The compliance pages under /audit/: who sees what, filters, paging, the turn story, the
reports and the export download."""

import csv
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps import audit
from apps.audit.exports import CSV_COLUMNS, verify_export_file
from apps.audit.models import PendingEvent

from ..accounts.factories import member
from .helpers import chained

pytestmark = pytest.mark.django_db

PAGES = [
    ("audit:events", ()),
    ("audit:event", (1,)),
    ("audit:turn", ("t-1",)),
    ("audit:reports", ()),
]
NO_AUDIT_ROLE = ["nobody", "support_agent", "support_lead", "knowledge_owner", "agent_owner"]


@pytest.fixture
def outsider(other_tenant):
    return member(other_tenant, "support_agent", username="gina.globex")


@pytest.fixture
def trail(tenant, other_tenant, people, agent, other_agent, outsider):
    """One governed turn at Acme (t-1), a refund at Globex (g-1), and a platform event."""
    lead, asker = people["support_lead"], people["support_agent"]
    base = {"tenant": tenant, "agent": agent, "turn_id": "t-1", "actor": asker, "actor_roles": ["support_agent"]}
    audit.record("turn.received", **base, payload={"message": "I want my money back"})
    audit.record("guardrail.verdict", **base, decision="allow", guardrail_verdict={"verdict": "allow", "rules": []})
    audit.record("knowledge.retrieved", **base, sources=[{"id": 7, "title": "Refund policy"}])
    audit.record(
        "model.called",
        **base,
        model="small-model",
        prompt_version=3,
        cost="0.0042",
        payload={"finish_reason": "tool_calls", "attempts": 1},
    )
    audit.record("approval.requested", **base, tool="refund.issue", arguments={"amount": 40, "order": "A-1"})
    audit.record(
        "approval.decided",
        **base,
        tool="refund.issue",
        approval_status="approved",
        approver=lead,
        latency_ms=180_000,
    )
    audit.record(
        "tool.executed",
        **base,
        tool="refund.issue",
        arguments={"amount": 40, "order": "A-1", "api_key": "sk-live-abcdefghijklmnopqrstuvwxyz"},
        decision="allow",
        approver=lead,
        outcome="success",
    )
    audit.record("handoff.created", **base, reason="refund_over_limit")
    audit.record("turn.completed", **base, outcome="answered", payload={"output": "Your refund of 40 is on its way."})
    audit.record("guardrail.verdict", tenant=tenant, agent=agent, turn_id="t-2", decision="kill", reason="jailbreak")
    audit.record(
        "tool.executed",
        tenant=other_tenant,
        agent=other_agent,
        actor=outsider,
        turn_id="g-1",
        tool="refund.issue",
        arguments={"amount": 999},
        outcome="success",
    )
    audit.record("handoff.created", tenant=other_tenant, agent=other_agent, turn_id="g-1", reason="globex_secret")
    audit.record("guardrail.verdict", tenant=other_tenant, decision="kill", reason="globex_rule")
    audit.record("config.changed", actor=None, reason="platform_setting")
    events = list(chained())
    return {
        "acme": [event for event in events if event.tenant_id == tenant.pk],
        "globex": [event for event in events if event.tenant_id == other_tenant.pk],
        "platform": [event for event in events if event.tenant_id is None],
    }


def shown_seqs(response) -> list[int]:
    return [event.seq for event in response.context["events"]]


def download(response) -> bytes:
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def unzip(raw: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(raw))


def export(client, **data):
    return client.post(reverse("audit:export"), data)


# --- Who may see what ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "args"), PAGES)
def test_anonymous_people_are_sent_to_sign_in(client, trail, name, args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    response = export(client, format="csv")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("kind", NO_AUDIT_ROLE)
def test_people_without_an_audit_role_are_refused_every_page(client, people, trail, kind):
    client.force_login(people[kind])
    seq = trail["acme"][0].seq
    for name, args in PAGES:
        response = client.get(reverse(name, args=(seq,) if name == "audit:event" else args))
        assert response.status_code == 403, name
    assert export(client, format="csv").status_code == 403


def test_compliance_lists_its_own_tenants_events_only(client, people, trail):
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:events"))
    assert response.status_code == 200
    assert shown_seqs(response) == sorted((event.seq for event in trail["acme"]), reverse=True)
    body = response.content.decode()
    assert "gina.globex" not in body
    assert "globex_secret" not in body
    assert "platform_setting" not in body  # platform-wide events: superusers only


def test_superuser_sees_every_tenant_and_platform_events(client, superuser, trail):
    client.force_login(superuser)
    response = client.get(reverse("audit:events"))
    every = [event.seq for group in trail.values() for event in group]
    assert shown_seqs(response) == sorted(every, reverse=True)
    # The tenant filter offers the tenants the trail mentions.
    assert set(response.context["form"].fields["tenant"].choices[1:]) == {
        (trail["acme"][0].tenant_id, "Acme Support"),
        (trail["globex"][0].tenant_id, "Globex Retail"),
    }


def test_event_page_shows_the_recorded_event_and_its_hashes(client, people, trail):
    refund = next(event for event in trail["acme"] if event.event_type == "tool.executed")
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:event", args=[refund.seq]))
    assert response.status_code == 200
    body = response.content.decode()
    assert refund.row_hash in body
    assert refund.prev_hash in body
    assert "refund.issue" in body
    assert "[REDACTED]" in body  # the api_key was redacted when recorded
    assert "sk-live" not in body
    assert {label: text for label, text, _block in response.context["fields"]}["outcome"] == "success"
    assert reverse("audit:turn", args=["t-1"]) in body


def test_event_and_turn_pages_of_another_tenant_are_not_found(client, people, trail):
    client.force_login(people["compliance"])
    for event in trail["globex"] + trail["platform"]:
        assert client.get(reverse("audit:event", args=[event.seq])).status_code == 404
    assert client.get(reverse("audit:event", args=[999_999])).status_code == 404
    assert client.get(reverse("audit:turn", args=["g-1"])).status_code == 404
    assert client.get(reverse("audit:turn", args=["no-such-turn"])).status_code == 404


def test_security_may_read_but_not_export(client, people, trail):
    client.force_login(people["security"])
    response = client.get(reverse("audit:events"))
    assert response.status_code == 200
    assert shown_seqs(response)
    assert not response.context["may_export"]
    assert reverse("audit:export") not in response.content.decode()
    assert export(client, format="csv").status_code == 403
    assert client.get(reverse("audit:reports")).status_code == 200


def test_compliance_and_admin_are_offered_the_export(client, people, trail):
    for kind in ("compliance", "admin"):
        client.force_login(people[kind])
        body = client.get(reverse("audit:events"), {"tool": "refund.issue"}).content.decode()
        assert reverse("audit:export") in body
        assert 'name="tool" value="refund.issue"' in body  # the export carries the current filter
        assert 'value="jsonl"' in body


def test_audit_link_in_the_navigation_only_for_people_who_may_read(client, people):
    client.force_login(people["compliance"])
    assert f'href="{reverse("audit:events")}"' in client.get(reverse("home")).content.decode()
    client.force_login(people["support_agent"])
    assert f'href="{reverse("audit:events")}"' not in client.get(reverse("home")).content.decode()


# --- Filters and paging -------------------------------------------------------------------


def test_filters_narrow_the_list(client, people, trail, tenant):
    client.force_login(people["compliance"])
    acme = trail["acme"]

    def seqs(**filters):
        response = client.get(reverse("audit:events"), filters)
        assert response.status_code == 200
        assert not response.context["form"].errors
        return set(shown_seqs(response))

    assert seqs(event_type="tool.executed") == {e.seq for e in acme if e.event_type == "tool.executed"}
    assert seqs(event_type="handoff.created") == {e.seq for e in acme if e.event_type == "handoff.created"}
    assert seqs(actor="support.agent") == {e.seq for e in acme if e.actor_name == "support.agent"}
    assert seqs(tool="refund.issue") == {e.seq for e in acme if e.tool == "refund.issue"}
    assert seqs(approver="support.lead") == {e.seq for e in acme if e.approver_name == "support.lead"}
    assert seqs(decision="kill") == {e.seq for e in acme if e.decision == "kill"}
    assert seqs(turn="t-2") == {e.seq for e in acme if e.turn_id == "t-2"}
    assert seqs(tenant=tenant.pk) == {e.seq for e in acme}
    assert seqs(agent=acme[0].agent_id, tool="refund.issue", actor="support.agent") == {
        e.seq for e in acme if e.tool == "refund.issue"
    }
    assert seqs(actor="gina.globex") == set()  # another tenant's person: nothing, not their events


def test_date_range_filter(client, people, tenant):
    long_ago = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    audit.record("turn.received", tenant=tenant, turn_id="old", occurred_at=long_ago)
    audit.record("turn.received", tenant=tenant, turn_id="older", occurred_at=long_ago - timedelta(days=30))
    audit.record("turn.received", tenant=tenant, turn_id="now")
    events = {event.turn_id: event.seq for event in chained()}
    client.force_login(people["compliance"])

    response = client.get(reverse("audit:events"), {"date_from": "2024-03-10", "date_to": "2024-03-10"})
    assert shown_seqs(response) == [events["old"]]
    response = client.get(reverse("audit:events"), {"date_to": "2024-03-31"})
    assert shown_seqs(response) == [events["older"], events["old"]]  # newest first by seq, not by time
    response = client.get(reverse("audit:events"), {"date_from": "2024-04-01"})
    assert shown_seqs(response) == [events["now"]]


def test_free_text_event_type_is_kept_in_the_select(client, people, tenant):
    audit.record("billing.adjusted", tenant=tenant)
    audit.record("turn.received", tenant=tenant)
    chained()
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:events"), {"event_type": "billing.adjusted"})
    assert len(response.context["events"]) == 1
    assert '<option value="billing.adjusted" selected>' in response.content.decode()


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"date_from": "2024-05-02", "date_to": "2024-05-01"}, "The start date is after the end date."),
        ({"date_from": "not-a-date"}, "Enter a valid date."),
        ({"agent": "abc"}, "Enter a whole number."),
        ({"tenant": "abc"}, "Select a valid choice."),
        ({"turn": "x" * 65}, "at most 64 characters"),
    ],
)
def test_invalid_filters_show_the_errors_and_no_rows(client, people, trail, filters, message):
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:events"), filters)
    assert response.status_code == 200
    assert response.context["events"] == []
    assert message in response.content.decode()
    assert not response.context["export_filters"]
    assert reverse("audit:export") not in response.content.decode()


def test_naming_another_tenant_in_the_filter_shows_none_of_its_events(client, people, trail, other_tenant):
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:events"), {"tenant": other_tenant.pk})
    assert response.context["events"] == []
    assert "Select a valid choice" in response.content.decode()
    assert "Globex" not in response.content.decode()


def test_older_pages_continue_without_overlap_and_keep_the_filter(client, people, tenant):
    for number in range(120):
        audit.record("tool.executed" if number % 2 else "turn.received", tenant=tenant, turn_id=f"t-{number}")
    chained()
    client.force_login(people["compliance"])

    first = client.get(reverse("audit:events"))
    assert len(first.context["events"]) == 50
    assert first.context["older"] == shown_seqs(first)[-1]

    second = client.get(reverse("audit:events"), {"before": first.context["older"]})
    assert len(second.context["events"]) == 50
    assert max(shown_seqs(second)) < min(shown_seqs(first))
    third = client.get(reverse("audit:events"), {"before": second.context["older"]})
    assert len(third.context["events"]) == 20
    assert third.context["older"] is None
    every = shown_seqs(first) + shown_seqs(second) + shown_seqs(third)
    assert every == sorted(set(every), reverse=True)
    assert len(every) == 120

    filtered = client.get(reverse("audit:events"), {"event_type": "tool.executed"})
    assert f"?event_type=tool.executed&amp;before={filtered.context['older']}" in filtered.content.decode()
    following = client.get(
        reverse("audit:events"), {"event_type": "tool.executed", "before": filtered.context["older"]}
    )
    assert len(following.context["events"]) == 10
    assert {event.event_type for event in following.context["events"]} == {"tool.executed"}


@pytest.mark.parametrize("cursor", ["drop table", "-5", "0", "1.5"])
def test_a_nonsense_page_cursor_shows_the_newest_page(client, people, trail, cursor):
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:events"), {"before": cursor})
    assert response.status_code == 200
    assert shown_seqs(response)[0] == max(event.seq for event in trail["acme"])


def test_out_of_range_numbers_are_never_a_server_error(client, people, trail):
    client.force_login(people["compliance"])
    huge = "9" * 30
    response = client.get(reverse("audit:events"), {"before": huge})
    assert response.status_code == 200
    assert shown_seqs(response)[0] == max(event.seq for event in trail["acme"])
    response = client.get(reverse("audit:events"), {"agent": huge})
    assert response.status_code == 200
    assert response.context["events"] == []
    assert client.get(reverse("audit:event", args=[int(huge)])).status_code == 404


def test_the_list_costs_the_same_queries_for_5_or_60_events(client, people, tenant, agent):
    client.force_login(people["compliance"])

    def queries_for(count: int) -> int:
        for number in range(count):
            audit.record(
                "tool.executed", tenant=tenant, agent=agent, actor=people["support_agent"], turn_id=f"q{number}"
            )
        chained()
        with CaptureQueriesContext(connection) as captured:
            response = client.get(reverse("audit:events"))
        assert response.status_code == 200
        return len(captured)

    few = queries_for(5)
    many = queries_for(55)  # 60 in all
    assert few == many
    # session, user, roles, tenant names, the page of events, pending count, last verification
    assert many == 7


# --- Chain status ---------------------------------------------------------------------------


def test_pending_events_and_the_last_verification_are_shown(client, people, tenant):
    audit.record("audit.verified", outcome="ok", payload={"summary": "OK"})
    chained()
    client.force_login(people["compliance"])
    body = client.get(reverse("audit:events")).content.decode()
    assert "Chain last verified:" in body
    assert ">ok<" in body
    assert "waiting to be chained" not in body

    audit.record("audit.verified", outcome="broken", payload={"summary": "BROKEN at seq 1"})
    chained()
    audit.record("turn.received", tenant=tenant)
    audit.record("turn.received", tenant=tenant)  # not chained: the test's transaction never commits
    assert PendingEvent.objects.count() == 2
    body = client.get(reverse("audit:events")).content.decode()
    assert ">broken<" in body
    assert "2 events are waiting to be chained" in body
    assert "BROKEN at seq 1" not in body  # only the outcome and time of a platform event


# --- The turn story ---------------------------------------------------------------------------


def test_turn_story_tells_the_turn_in_order(client, people, trail):
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:turn", args=["t-1"]))
    assert response.status_code == 200
    steps = response.context["steps"]
    assert [step["event"].event_type for step in steps] == [
        "turn.received",
        "guardrail.verdict",
        "knowledge.retrieved",
        "model.called",
        "approval.requested",
        "approval.decided",
        "tool.executed",
        "handoff.created",
        "turn.completed",
    ]
    details = [{label: text for label, text, _block in step["details"]} for step in steps]
    assert '"verdict": "allow"' in details[1]["Guardrail verdict"]
    assert "Refund policy" in details[2]["Sources"]
    assert details[3]["Model"] == "small-model"
    assert details[3]["Prompt version"] == "3"
    assert details[3]["Finish reason"] == "tool_calls"
    assert details[3]["Cost"] == "0.0042"
    assert details[5]["Approval"] == "approved"
    assert details[5]["Approver"] == "support.lead"
    assert '"amount": 40' in details[6]["Arguments (redacted)"]
    assert "[REDACTED]" in details[6]["Arguments (redacted)"]
    assert details[6]["Outcome"] == "success"
    assert details[7]["Reason"] == "refund_over_limit"
    assert steps[8]["output"] == "Your refund of 40 is on its way."
    body = response.content.decode()
    assert "Your refund of 40 is on its way." in body
    assert "sk-live" not in body


# --- Reports --------------------------------------------------------------------------------


def test_reports_cover_own_tenant_only(client, people, trail):
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:reports"))
    assert response.status_code == 200
    refunds = response.context["refunds"]
    assert [(row["amount"], row["requested_by"], row["approved_by"]) for row in refunds] == [
        (40, "support.agent", "support.lead")
    ]
    assert response.context["escalations"] == [("refund_over_limit", 1)]
    assert response.context["guardrail_kills"] == [("jailbreak", 1)]
    [approvals] = response.context["approval_times"]
    assert (approvals["tool"], approvals["approved"], approvals["median_minutes"]) == ("refund.issue", 1, 3.0)
    body = response.content.decode()
    assert "999" not in body
    assert "globex_secret" not in body
    assert "globex_rule" not in body


def test_reports_follow_the_date_range_and_reject_a_bad_one(client, people, trail):
    client.force_login(people["compliance"])
    response = client.get(reverse("audit:reports"), {"date_to": "2001-01-01"})
    assert response.context["refunds"] == []
    assert response.context["escalations"] == []
    response = client.get(reverse("audit:reports"), {"date_from": "2024-05-02", "date_to": "2024-05-01"})
    assert response.status_code == 200
    assert "The start date is after the end date." in response.content.decode()
    assert "refunds" not in response.context


# --- Export ---------------------------------------------------------------------------------


def test_csv_export_downloads_a_verifiable_zip_of_own_tenants_events(client, people, trail, tenant, tmp_path):
    client.force_login(people["compliance"])
    response = export(client, format="csv")
    assert response["Content-Type"] == "application/zip"
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="audit-export-')
    assert disposition.endswith('Z.zip"')
    raw = download(response)
    archive = unzip(raw)
    assert sorted(archive.namelist()) == ["audit-events.csv", "manifest.json"]

    rows = list(csv.reader(io.StringIO(archive.read("audit-events.csv").decode())))
    assert tuple(rows[0]) == CSV_COLUMNS
    [created] = chained(event_type="export.created")
    exported = [int(row[0]) for row in rows[1:]]
    # Oldest first, no Globex, no platform rows; the export's own record, chained before the
    # head was pinned, comes last.
    assert exported == [event.seq for event in trail["acme"]] + [created.seq]
    assert {row[CSV_COLUMNS.index("tenant_id")] for row in rows[1:]} == {str(tenant.pk)}
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["row_count"] == len(trail["acme"]) + 1
    assert manifest["created_by"] == "compliance"
    assert manifest["tenant_scope"] == [tenant.pk]

    path = tmp_path / "export.zip"
    path.write_bytes(raw)
    assert verify_export_file(path).startswith("OK:")

    assert created.actor_name == "compliance"
    assert created.tenant_id == tenant.pk  # visible to the tenant's compliance, not a platform event
    assert created.data["payload"] == {"filters": {}, "format": "csv", "scope": [tenant.pk]}


def test_filtered_export_holds_only_matching_rows(client, people, trail, tenant, tmp_path):
    client.force_login(people["compliance"])
    archive = unzip(download(export(client, format="csv", tool="refund.issue", tenant=tenant.pk)))
    rows = list(csv.DictReader(io.StringIO(archive.read("audit-events.csv").decode())))
    assert {row["tool"] for row in rows} == {"refund.issue"}
    assert len(rows) == 3
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["filters"] == {"tool": "refund.issue", "tenant": tenant.pk}
    [created] = chained(event_type="export.created")
    assert created.tenant_id == tenant.pk


def test_formula_cells_are_defused_in_the_csv(client, people, tenant, tmp_path):
    audit.record("tool.executed", tenant=tenant, tool="=cmd|'/C calc'!A0", decision='=HYPERLINK("http://x.test")')
    chained()
    client.force_login(people["compliance"])
    raw = download(export(client, format="csv"))
    archive = unzip(raw)
    row, export_record = list(csv.DictReader(io.StringIO(archive.read("audit-events.csv").decode())))
    assert export_record["event_type"] == "export.created"
    assert row["tool"] == "'=cmd|'/C calc'!A0"
    assert row["decision"] == '\'=HYPERLINK("http://x.test")'
    path = tmp_path / "formula.zip"
    path.write_bytes(raw)
    assert verify_export_file(path).startswith("OK: 2 rows")


def test_jsonl_export_verifies(client, people, trail, tmp_path):
    client.force_login(people["admin"])
    raw = download(export(client, format="jsonl"))
    archive = unzip(raw)
    assert sorted(archive.namelist()) == ["audit-events.jsonl", "manifest.json"]
    lines = archive.read("audit-events.jsonl").decode().splitlines()
    [created] = chained(event_type="export.created")
    assert [json.loads(line)["seq"] for line in lines] == [event.seq for event in trail["acme"]] + [created.seq]
    path = tmp_path / "export.zip"
    path.write_bytes(raw)
    assert verify_export_file(path).startswith(f"OK: {len(trail['acme']) + 1} rows")


def test_export_never_hands_over_another_tenants_events(client, people, trail, other_tenant):
    client.force_login(people["compliance"])
    response = export(client, format="csv", tenant=other_tenant.pk)
    assert response.status_code == 403
    assert export(client, format="csv", tenant=987_654).status_code == 403  # the same for no such tenant
    assert not chained(event_type="export.created").exists()


def test_export_only_covers_tenants_where_the_person_may_export(client, people, trail, other_tenant, tmp_path):
    reader = people["compliance"]
    member(other_tenant, "security", username="compliance")  # may read Globex's events, not export them
    client.force_login(reader)
    assert set(shown_seqs(client.get(reverse("audit:events")))) >= {event.seq for event in trail["globex"]}
    archive = unzip(download(export(client, format="csv")))
    rows = list(csv.DictReader(io.StringIO(archive.read("audit-events.csv").decode())))
    exported = {int(row["seq"]) for row in rows if row["event_type"] != "export.created"}
    assert exported == {event.seq for event in trail["acme"]}
    # Recorded for the tenant it covered only: Globex's trail does not claim an export of it.
    assert list(chained(event_type="export.created").values_list("tenant_id", flat=True)) == [
        trail["acme"][0].tenant_id
    ]
    assert export(client, format="csv", tenant=other_tenant.pk).status_code == 403


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"format": "xlsx"}, "Unknown export format"),
        ({}, "Unknown export format"),
        (
            {"format": "csv", "date_from": "2024-05-02", "date_to": "2024-05-01"},
            "The start date is after the end date.",
        ),
        ({"format": "jsonl", "agent": "abc"}, "Enter a whole number."),
    ],
)
def test_bad_export_requests_are_refused_with_a_reason(client, people, trail, data, message):
    client.force_login(people["compliance"])
    response = export(client, **data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not chained(event_type="export.created").exists()


def test_export_is_post_only_and_needs_the_csrf_token(people, trail):
    from django.test import Client

    checked = Client(enforce_csrf_checks=True)
    checked.force_login(people["compliance"])
    assert checked.get(reverse("audit:export"), {"format": "csv"}).status_code == 405
    assert checked.post(reverse("audit:export"), {"format": "csv"}).status_code == 403
    assert not chained(event_type="export.created").exists()
