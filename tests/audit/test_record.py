"""audit.record: what lands in the hashed body and the generated search columns, what is
refused, what is redacted before hashing, and how the event follows the caller's
transaction into the chain."""

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import transaction

from apps import audit
from apps.audit import chain, tasks
from apps.audit.canonical import GENESIS_HASH, canonical_json
from apps.audit.chain import chain_pending, chain_pending_quietly, verify_chain
from apps.audit.models import AuditEvent, PendingEvent
from tests.accounts.factories import UserFactory

from .helpers import chained

pytestmark = pytest.mark.django_db

# Stand-ins for a tenant and an agent: record keeps (pk, slug) as values, not foreign keys.
TENANT = SimpleNamespace(pk=7, slug="acme")
AGENT = SimpleNamespace(pk=11, slug="support-assistant")


def nothing_written() -> bool:
    return not PendingEvent.objects.exists() and not AuditEvent.objects.exists()


def test_fields_land_in_the_body_and_the_generated_columns():
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    when = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)

    audit.record(
        "tool.executed",
        tenant=TENANT,
        actor=alice,
        actor_roles={"support_agent", "compliance"},
        agent=AGENT,
        conversation_id="c0ffee00-0000-4000-8000-000000000001",
        turn_id="turn-42",
        tool="refund_order",
        arguments={"order": "A-1001", "amount": Decimal("12.50")},
        decision="allow",
        guardrail_verdict={"verdict": "pass"},
        approval_status="approved",
        approver=bob,
        outcome="ok",
        latency_ms=12.5,
        model="gpt-test",
        prompt_version=3,
        cost=Decimal("0.0012"),
        sources=[4, 5],
        reason="within_policy",
        payload={"note": "café ✓"},
        occurred_at=when,
    )
    (event,) = chained()

    data = json.loads(event.body)
    assert data["event_type"] == "tool.executed"
    assert (data["tenant_id"], data["tenant_name"]) == (7, "acme")
    assert (data["actor_id"], data["actor_name"]) == (alice.pk, "alice")
    assert data["actor_roles"] == ["compliance", "support_agent"]
    assert (data["agent_id"], data["agent_name"]) == (11, "support-assistant")
    assert (data["approver_id"], data["approver_name"]) == (bob.pk, "bob")
    assert data["arguments"] == {"order": "A-1001", "amount": "12.50"}
    assert data["cost"] == "0.0012"
    assert data["latency_ms"] == 12.5
    assert data["prompt_version"] == 3
    assert data["sources"] == [4, 5]
    assert data["payload"] == {"note": "café ✓"}
    assert data["occurred_at"] == "2026-03-04T05:06:07.123456Z"
    assert "redacted" not in data  # empty fields are left out of the body

    # The search columns are computed by the database from that body.
    assert event.event_id == data["event_id"]
    assert event.event_type == "tool.executed"
    assert event.occurred_at == when
    assert event.tenant_id == 7
    assert (event.actor_id, event.actor_name) == (alice.pk, "alice")
    assert event.agent_id == 11
    assert event.conversation_id == "c0ffee00-0000-4000-8000-000000000001"
    assert event.turn_id == "turn-42"
    assert event.tool == "refund_order"
    assert event.decision == "allow"
    assert event.reason == "within_policy"
    assert event.outcome == "ok"
    assert (event.approver_id, event.approver_name) == (bob.pk, "bob")
    assert AuditEvent.objects.filter(tenant_id=7, tool="refund_order", turn_id="turn-42").count() == 1

    # The body is canonical JSON (sorted, compact, ASCII) and the hash covers exactly it.
    assert event.body == canonical_json(data)
    assert event.body.isascii()
    assert event.seq == 1
    assert event.prev_hash == GENESIS_HASH
    assert event.row_hash == hashlib.sha256(f"{GENESIS_HASH}\n1\n{event.body}".encode()).hexdigest()


def test_empty_fields_are_null_columns_and_the_time_defaults_to_now():
    before = datetime.now(UTC)
    audit.record("turn.received")
    (event,) = chained()
    assert event.tenant_id is None
    assert event.actor_name is None
    assert event.tool is None
    assert event.turn_id is None
    assert before - timedelta(seconds=1) <= event.occurred_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_an_aware_time_in_another_zone_is_stored_as_the_same_instant_in_utc():
    when = datetime(2026, 6, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    audit.record("turn.received", occurred_at=when)
    (event,) = chained()
    assert event.occurred_at == when
    assert event.data["occurred_at"] == "2026-06-01T07:30:00Z"


def test_non_ascii_text_is_escaped_in_the_body_and_readable_in_the_column():
    audit.record("tool.executed", tool="café")
    (event,) = chained()
    assert event.body.isascii()
    assert "caf\\u00e9" in event.body
    assert event.tool == "café"


@pytest.mark.parametrize(
    "event_type",
    [
        "",
        None,
        "toolexecuted",
        "Tool.Executed",
        "tool.executed ",
        "tool.executed\n",  # "$" alone would let a trailing newline through
        "tool..executed",
        ".tool",
        "tool.",
        "tool.executed;drop",
        "a." + "b" * 63,  # longer than the event_type column (64)
    ],
)
def test_bad_event_types_are_refused_and_nothing_is_written(event_type):
    with pytest.raises(ValueError, match="event type"):
        audit.record(event_type)
    assert nothing_written()


def test_the_longest_event_type_the_column_holds_is_accepted():
    event_type = "a." + "b" * 62
    audit.record(event_type)
    assert chained().get().event_type == event_type


@pytest.mark.parametrize(
    ("field", "limit"),
    [("tool", 100), ("decision", 32), ("reason", 100), ("outcome", 32), ("conversation_id", 64), ("turn_id", 64)],
)
def test_over_long_fields_are_refused_and_nothing_is_written(field, limit):
    with pytest.raises(ValueError, match=field):
        audit.record("tool.executed", **{field: "x" * (limit + 1)})
    assert nothing_written()
    audit.record("tool.executed", **{field: "x" * limit})
    assert getattr(chained().get(), field) == "x" * limit


def test_a_naive_time_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        audit.record("turn.received", occurred_at=datetime(2026, 1, 1, 12, 0))
    assert nothing_written()


@pytest.mark.parametrize("payload", [["a", "list"], "text", 42])
def test_a_payload_that_is_not_a_dict_is_refused(payload):
    with pytest.raises(ValueError, match="payload"):
        audit.record("turn.received", payload=payload)
    assert nothing_written()


@pytest.mark.parametrize(
    "reference",
    [True, 2**63, -(2**63) - 1, SimpleNamespace(pk="abc", slug="x"), SimpleNamespace(pk=uuid.uuid4(), slug="x")],
    ids=["bool", "too-big", "too-small", "text-pk", "uuid-pk"],
)
@pytest.mark.parametrize("field", ["tenant", "actor", "agent", "approver"])
def test_a_reference_the_id_columns_cannot_hold_is_refused(field, reference):
    """On PostgreSQL such a body would fail the chainer's INSERT (bigint column) on every
    pass and block the whole chain behind it."""
    with pytest.raises(ValueError, match="integer ids"):
        audit.record("tool.executed", **{field: reference})
    assert nothing_written()


def test_a_value_that_is_not_plain_data_is_refused_before_anything_is_written():
    with pytest.raises(ValueError, match="cannot be written to the audit trail"):
        audit.record("turn.received", payload={"user": object()})
    assert nothing_written()


@pytest.mark.parametrize(
    ("text", "stored"),
    [("a\x00b", "a\ufffdb"), ("a\ud800b", "a\ufffdb")],
    ids=["nul", "lone-surrogate"],
)
def test_text_the_database_cannot_parse_is_replaced_and_does_not_block_the_chain(text, stored):
    """PostgreSQL's jsonb refuses \\u0000 and lone surrogates: such a body would fail the
    chainer's INSERT on every pass and block the whole chain behind it."""
    audit.record("turn.received", tool=text, payload={"message": text, text: "key"})
    audit.record("turn.completed")
    events = list(chained())
    assert [event.event_type for event in events] == ["turn.received", "turn.completed"]
    assert events[0].tool == stored
    assert events[0].data["payload"] == {"message": stored, stored: "key"}
    assert verify_chain().ok


def test_non_finite_numbers_are_written_as_text_and_do_not_block_the_chain():
    audit.record("model.called", latency_ms=float("nan"), payload={"score": float("inf"), "low": float("-inf")})
    (event,) = chained()
    assert event.data["latency_ms"] == "nan"
    assert event.data["payload"] == {"score": "inf", "low": "-inf"}
    assert verify_chain().ok


# --- Redaction before hashing -------------------------------------------------------------


def test_secrets_and_pii_are_redacted_before_hashing():
    audit.record(
        "tool.requested",
        tool="lookup_customer",
        arguments={
            "password": "hunter2-secret",
            "api_token": "tok-123456",
            "Authorization": "anything at all",
            "header": "Bearer abcdefghijklmnop.qrstuv",
            "key": "use sk-abcdefghijklmnopqrstuvwx please",
            "card": "card 4111 1111 1111 1111 exp 12/29",
            "ssn": "SSN 123-45-6789",
            "email": "write to jane.doe@example.com",
            "phone": "call +1 415 555 0100 today",
            "nested": [{"contact": "bob@example.org"}],
        },
        payload={"message": "my card is 4242424242424242"},
        guardrail_verdict={"matched": "ssn 078-05-1120"},
    )
    (event,) = chained()
    data = event.data
    arguments = data["arguments"]
    assert arguments["password"] == "[REDACTED]"
    assert arguments["api_token"] == "[REDACTED]"
    assert arguments["Authorization"] == "[REDACTED]"
    assert arguments["header"] == "[SECRET]"
    assert arguments["key"] == "use [SECRET] please"
    assert arguments["card"] == "card [CARD] exp 12/29"
    assert arguments["ssn"] == "SSN [SSN]"
    assert arguments["email"] == "write to [EMAIL]"
    assert arguments["phone"] == "call [PHONE] today"
    assert arguments["nested"] == [{"contact": "[EMAIL]"}]
    assert data["payload"] == {"message": "my card is [CARD]"}
    assert data["guardrail_verdict"] == {"matched": "ssn [SSN]"}
    assert data["redacted"] == ["card", "email", "phone", "secret", "ssn"]

    # Nothing of the originals is in the stored (hashed) bytes, and the hash is over them.
    for original in (
        "hunter2",
        "tok-123456",
        "abcdefghijklmnop",
        "sk-abc",
        "4111 1111 1111 1111",
        "4242424242424242",
        "123-45-6789",
        "jane.doe",
        "bob@example",
        "555 0100",
        "078-05",
    ):
        assert original not in event.body
    assert event.row_hash == hashlib.sha256(f"{event.prev_hash}\n{event.seq}\n{event.body}".encode()).hexdigest()
    assert verify_chain().ok


def test_numbers_that_are_not_pii_are_kept():
    audit.record(
        "tool.executed",
        arguments={
            "order": "order 4111111111111112",  # 16 digits, fails the Luhn check: not a card
            "ticket": "ticket 1234567890123",  # a plain 13-digit order number: not a phone
            "amount": 1234567890123,
            "password": "",  # an empty credential field has nothing to hide
        },
    )
    data = chained().get().data
    assert data["arguments"] == {
        "order": "order 4111111111111112",
        "ticket": "ticket 1234567890123",
        "amount": 1234567890123,
        "password": "",
    }
    assert "redacted" not in data


# --- The caller's transaction -----------------------------------------------------------


def test_an_event_recorded_in_a_rolled_back_transaction_disappears():
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record("tool.executed", tool="refund_order")
        raise RuntimeError("the action failed")
    assert not PendingEvent.objects.exists()
    assert chain_pending() == 0
    assert not AuditEvent.objects.exists()


def test_an_event_waits_pending_until_its_transaction_commits(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            audit.record("tool.executed", tool="refund_order")
        assert PendingEvent.objects.count() == 1
        assert not AuditEvent.objects.exists()
    # The on-commit hook chained it; nobody called chain_pending.
    assert not PendingEvent.objects.exists()
    assert list(AuditEvent.objects.values_list("seq", "tool")) == [(1, "refund_order")]


def test_many_events_in_one_transaction_register_one_chaining_callback(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        for number in range(5):
            audit.record("tool.executed", tool=f"tool_{number}")
    assert callbacks.count(chain_pending_quietly) == 1
    assert PendingEvent.objects.count() == 5
    callbacks[0]()
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "tool")) == [
        (number + 1, f"tool_{number}") for number in range(5)
    ]


def test_a_callback_dropped_with_a_rolled_back_savepoint_is_registered_again(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            audit.record("tool.executed", tool="rolled_back")
            raise RuntimeError
        audit.record("tool.executed", tool="kept")
    assert list(AuditEvent.objects.values_list("tool", flat=True)) == ["kept"]
    assert not PendingEvent.objects.exists()


def test_a_chaining_failure_does_not_fail_the_caller_and_the_sweep_chains_later(
    django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def broken_batch():
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(chain, "_chain_batch", broken_batch)
    with django_capture_on_commit_callbacks(execute=True):
        audit.record("tool.executed", tool="refund_order")
    assert PendingEvent.objects.count() == 1
    assert not AuditEvent.objects.exists()
    assert "Chaining audit events failed" in caplog.text

    monkeypatch.undo()
    assert tasks.chain_pending() == 1  # the periodic sweep
    assert list(AuditEvent.objects.values_list("tool", flat=True)) == ["refund_order"]


@pytest.mark.django_db(transaction=True)
def test_committed_events_are_chained_when_the_transaction_commits():
    with transaction.atomic():
        audit.record("tool.executed", tool="first")
        audit.record("tool.executed", tool="second")
        assert PendingEvent.objects.count() == 2
        assert not AuditEvent.objects.exists()
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "tool")) == [(1, "first"), (2, "second")]
    assert not PendingEvent.objects.exists()

    audit.record("tool.executed", tool="autocommit")  # outside a transaction: chained on return
    assert AuditEvent.objects.order_by("-seq").values_list("tool", flat=True).first() == "autocommit"
    assert verify_chain().checked == 3


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_nothing_behind():
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record("tool.executed", tool="refund_order")
        raise RuntimeError
    assert not PendingEvent.objects.exists()
    assert not AuditEvent.objects.exists()


def test_credential_keys_are_redacted_but_counts_and_ids_named_alike_are_kept():
    audit.record(
        "model.called",
        payload={
            "access_token": "opaque-value",
            "client_secret": "x",
            "X-Api-Key": "y",
            "input_tokens": 812,
            "max_tokens": 256,
            "session_started": "2026-11-21",
        },
    )
    (event,) = chained()
    payload = event.data["payload"]
    assert payload["access_token"] == payload["client_secret"] == payload["X-Api-Key"] == "[REDACTED]"
    assert (payload["input_tokens"], payload["max_tokens"], payload["session_started"]) == (812, 256, "2026-11-21")
