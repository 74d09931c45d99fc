"""The sandbox systems answer only their own tenant's token, refund at most an order's
total, refund once per idempotency key, never echo the token, and, told which customer a
request is for, answer about that customer only."""

import json
from decimal import Decimal

import pytest
from django.db import connection, reset_queries
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.sandbox.choices import SandboxOrderStatus
from apps.sandbox.demo import seed_sandbox
from apps.sandbox.models import (
    SandboxAccount,
    SandboxCrmNote,
    SandboxCustomer,
    SandboxEmail,
    SandboxOrder,
    SandboxRefund,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(tenant):
    return seed_sandbox(tenant)


@pytest.fixture
def other_token(other_tenant):
    return seed_sandbox(other_tenant)


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _order_url(number="A-1042", slug="acme"):
    return reverse("sandbox:order", kwargs={"tenant_slug": slug, "number": number})


def _refunds_url(slug="acme"):
    return reverse("sandbox:refunds", kwargs={"tenant_slug": slug})


def _refund(client, token, key="", **body):
    body = {"order_id": "A-1042", "amount": 40, "reason": "Arrived damaged", **body}
    headers = {**_auth(token), **({"Idempotency-Key": key} if key else {})}
    return client.post(_refunds_url(), json.dumps(body), content_type="application/json", headers=headers)


# --- Tokens ---------------------------------------------------------------------------------


def test_only_the_digest_of_the_token_is_stored(tenant, token):
    account = SandboxAccount.objects.get(tenant=tenant)
    assert token not in account.token_digest
    assert len(account.token_digest) == 64


def test_without_a_token_the_answer_is_401(client, token):
    response = client.get(_order_url())
    assert response.status_code == 401
    assert response.json() == {"sandbox": True, "error": "Send the sandbox token as 'Authorization: Bearer <token>'."}
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_another_scheme_is_no_token(client, token):
    assert client.get(_order_url(), headers={"Authorization": f"Basic {token}"}).status_code == 401


def test_a_wrong_token_is_403_and_not_echoed(client, token):
    wrong = "not-the-sandbox-token-0123456789"
    response = client.get(_order_url(), headers=_auth(wrong))
    assert response.status_code == 403
    assert response.json()["sandbox"] is True
    assert wrong not in response.content.decode()


def test_another_tenants_token_is_403(client, token, other_token):
    assert client.get(_order_url(), headers=_auth(other_token)).status_code == 403
    # ... and the other tenant's own order is reachable only with its own token.
    assert client.get(_order_url("G-5001", slug="globex"), headers=_auth(token)).status_code == 403
    assert client.get(_order_url("G-5001", slug="globex"), headers=_auth(other_token)).status_code == 200


def test_an_unknown_tenant_answers_like_a_wrong_token(client, token):
    assert client.get(_order_url(slug="initech"), headers=_auth(token)).status_code == 403


def test_reseeding_rotates_the_token(client, tenant, token):
    new_token = seed_sandbox(tenant)
    assert new_token != token
    assert client.get(_order_url(), headers=_auth(token)).status_code == 403
    assert client.get(_order_url(), headers=_auth(new_token)).status_code == 200
    assert SandboxOrder.objects.filter(tenant=tenant).count() == 4  # seeding twice added nothing


# --- Orders, notes, e-mails, customers ------------------------------------------------------


def test_order_lookup(client, token):
    response = client.get(_order_url(), headers=_auth(token))
    assert response.status_code == 200
    body = response.json()
    assert body["sandbox"] is True
    assert body["order"]["order_id"] == "A-1042"
    assert body["order"]["customer_id"] == "C-1001"
    assert body["order"]["total"] == "89.00"
    assert body["order"]["refundable"] == "89.00"


def test_unknown_order_is_404_json(client, token):
    response = client.get(_order_url("A-9999"), headers=_auth(token))
    assert response.status_code == 404
    assert response.json() == {"sandbox": True, "error": "There is no order A-9999 in this sandbox."}


def test_wrong_method_is_405_json(client, token):
    response = client.post(_order_url(), headers=_auth(token))
    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert response.json()["sandbox"] is True


def test_notes_read_and_add(client, tenant, token):
    url = reverse("sandbox:customer-notes", kwargs={"tenant_slug": "acme", "customer_id": "C-1001"})
    before = client.get(url, headers=_auth(token)).json()["notes"]
    response = client.post(
        url, {"text": "Customer sent a photo."}, content_type="application/json", headers=_auth(token)
    )
    assert response.status_code == 201
    assert response.json()["note"]["text"] == "Customer sent a photo."
    after = client.get(url, headers=_auth(token)).json()["notes"]
    assert len(after) == len(before) + 1
    assert after[0]["text"] == "Customer sent a photo."  # newest first


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "Send a JSON object as the request body."),
        ("[1, 2]", "Send a JSON object as the request body."),
        ("{}", "Missing fields: text."),
        ('{"text": "hi", "secret": 1}', "Unknown fields: secret. This endpoint takes text."),
        ('{"text": "   "}', "'text' must be a non-empty string."),
    ],
)
def test_bad_note_bodies_are_400_with_a_message(client, token, body, message):
    url = reverse("sandbox:customer-notes", kwargs={"tenant_slug": "acme", "customer_id": "C-1001"})
    response = client.post(url, body, content_type="application/json", headers=_auth(token))
    assert response.status_code == 400
    assert response.json() == {"sandbox": True, "error": message}


def test_email_goes_to_the_outbox(client, tenant, token):
    url = reverse("sandbox:emails", kwargs={"tenant_slug": "acme"})
    body = {"customer_id": "C-1001", "subject": "Your refund", "body": "We refunded order A-1042."}
    response = client.post(url, body, content_type="application/json", headers=_auth(token))
    assert response.status_code == 201
    assert "never sent" in response.json()["email"]["status"]
    email = SandboxEmail.objects.get(tenant=tenant)
    assert email.to_address == "jordan.rivera@example.com"


def test_deleting_a_customer_erases_its_notes_and_makes_it_unknown(client, tenant, token):
    url = reverse("sandbox:customer", kwargs={"tenant_slug": "acme", "customer_id": "C-1001"})
    response = client.delete(url, headers=_auth(token))
    assert response.status_code == 200
    assert response.json()["deleted"] is True
    assert SandboxCustomer.objects.get(tenant=tenant, customer_id="C-1001").deleted_at is not None
    assert not SandboxCrmNote.objects.filter(tenant=tenant, customer_id="C-1001").exists()
    notes = reverse("sandbox:customer-notes", kwargs={"tenant_slug": "acme", "customer_id": "C-1001"})
    assert client.get(notes, headers=_auth(token)).status_code == 404
    assert client.delete(url, headers=_auth(token)).status_code == 404


# --- Refunds --------------------------------------------------------------------------------


def test_refund_is_created_once_per_idempotency_key(client, tenant, token):
    first = _refund(client, token, key="call-1")
    assert first.status_code == 201
    assert first.json()["replayed"] is False
    again = _refund(client, token, key="call-1")
    assert again.status_code == 200
    assert again.json()["replayed"] is True
    assert again.json()["refund"] == first.json()["refund"]
    assert SandboxRefund.objects.filter(tenant=tenant).count() == 1
    order = SandboxOrder.objects.get(tenant=tenant, number="A-1042")
    assert order.status == SandboxOrderStatus.PARTIALLY_REFUNDED


def test_a_key_reused_for_another_refund_is_409(client, tenant, token):
    _refund(client, token, key="call-1")
    response = _refund(client, token, key="call-1", amount=41)
    assert response.status_code == 409
    assert SandboxRefund.objects.filter(tenant=tenant).count() == 1


def test_the_same_key_in_another_tenant_is_another_refund(client, tenant, other_tenant, token, other_token):
    _refund(client, token, key="call-1")
    body = {"order_id": "G-5001", "amount": 10, "reason": "Late delivery"}
    response = client.post(
        _refunds_url("globex"),
        body,
        content_type="application/json",
        headers={**_auth(other_token), "Idempotency-Key": "call-1"},
    )
    assert response.status_code == 201
    assert SandboxRefund.objects.filter(tenant=other_tenant).count() == 1


def test_a_refund_over_the_order_total_is_refused(client, tenant, token):
    response = _refund(client, token, amount=89.01)
    assert response.status_code == 400
    assert "more than what remains refundable on order A-1042 (89.00 of 89.00)" in response.json()["error"]
    assert not SandboxRefund.objects.exists()


def test_refunds_add_up_to_the_total_at_most(client, tenant, token):
    assert _refund(client, token, key="a", amount=50).status_code == 201
    refused = _refund(client, token, key="b", amount=40)
    assert refused.status_code == 400
    assert "(39.00 of 89.00)" in refused.json()["error"]
    assert _refund(client, token, key="c", amount="39.00").status_code == 201
    assert SandboxOrder.objects.get(tenant=tenant, number="A-1042").status == SandboxOrderStatus.REFUNDED
    assert "already fully refunded" in _refund(client, token, key="d", amount=1).json()["error"]
    assert sum(refund.amount for refund in SandboxRefund.objects.all()) == Decimal("89.00")


def test_a_refund_of_an_unknown_order_is_404(client, token):
    response = _refund(client, token, order_id="A-9999")
    assert response.status_code == 404
    assert response.json()["error"] == "There is no order A-9999 in this sandbox."


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"amount": -5}, "'amount' must be more than 0."),
        ({"amount": "ten"}, "'amount' must be a number, e.g. 89.00."),
        ({"amount": True}, "'amount' must be a number, e.g. 89.00."),
        ({"amount": 1.005}, "'amount' can have at most two decimals."),
        ({"amount": "1e12"}, "'amount' must be at most 99999999.99."),
        ({"amount": "NaN"}, "'amount' must be a number, e.g. 89.00."),
        ({"reason": ""}, "'reason' must be a non-empty string."),
    ],
)
def test_bad_refund_bodies_are_400(client, token, fields, message):
    response = _refund(client, token, **fields)
    assert response.status_code == 400
    assert response.json()["error"] == message
    assert not SandboxRefund.objects.exists()


def test_the_token_is_never_in_a_response(client, token):
    responses = [
        client.get(_order_url(), headers=_auth(token)),
        client.get(_order_url("A-9999"), headers=_auth(token)),
        _refund(client, token, key="k"),
        _refund(client, token, key="k"),
        _refund(client, token, amount=1000),
        client.post(_refunds_url(), "nope", content_type="application/json", headers=_auth(token)),
        client.get(_order_url(slug="globex"), headers=_auth(token)),
    ]
    for response in responses:
        assert token not in response.content.decode()
        assert token not in str(response.headers)


# --- Scoped to the customer the request is for ----------------------------------------------


def _for(token: str, customer_id: str) -> dict:
    return {**_auth(token), "X-Controlplane-Subject": customer_id, "X-Controlplane-Subject-Verified": "true"}


def _notes_url(customer_id: str) -> str:
    return reverse("sandbox:customer-notes", kwargs={"tenant_slug": "acme", "customer_id": customer_id})


def _customer_url(customer_id: str) -> str:
    return reverse("sandbox:customer", kwargs={"tenant_slug": "acme", "customer_id": customer_id})


def _email(client, headers, customer_id="C-1002"):
    body = {"customer_id": customer_id, "subject": "Your order", "body": "About your order."}
    return client.post(
        reverse("sandbox:emails", kwargs={"tenant_slug": "acme"}),
        body,
        content_type="application/json",
        headers=headers,
    )


NO_CUSTOMER_C1002 = {"sandbox": True, "error": "There is no customer C-1002 in this sandbox."}


def test_with_a_subject_the_customers_own_order_is_found(client, token):
    response = client.get(_order_url("A-1043"), headers=_for(token, "C-1001"))
    assert response.status_code == 200
    assert response.json()["order"]["customer_id"] == "C-1001"


def test_with_a_subject_another_customers_order_answers_exactly_as_an_unknown_order(client, tenant, token):
    other = client.get(_order_url("A-1050"), headers=_for(token, "C-1001"))  # C-1002's order
    SandboxOrder.objects.filter(tenant=tenant, number="A-1050").delete()
    unknown = client.get(_order_url("A-1050"), headers=_for(token, "C-1001"))

    assert other.status_code == unknown.status_code == 404
    assert other.content == unknown.content
    assert dict(other.headers) == dict(unknown.headers)
    assert other.json() == {"sandbox": True, "error": "There is no order A-1050 in this sandbox."}
    assert "marta" not in other.content.decode().lower()


def test_with_a_subject_another_customers_order_is_not_refunded(client, tenant, token):
    headers = {**_for(token, "C-1001"), "Idempotency-Key": "call-1"}
    body = {"order_id": "A-1050", "amount": 10, "reason": "Kettle broke"}
    response = client.post(_refunds_url(), body, content_type="application/json", headers=headers)

    assert response.status_code == 404
    assert response.json() == {"sandbox": True, "error": "There is no order A-1050 in this sandbox."}
    assert not SandboxRefund.objects.exists()
    assert SandboxOrder.objects.get(tenant=tenant, number="A-1050").status == SandboxOrderStatus.DELIVERED


def test_with_a_subject_the_customers_own_order_is_refunded(client, tenant, token):
    headers = {**_for(token, "C-1001"), "Idempotency-Key": "call-1"}
    body = {"order_id": "A-1042", "amount": 10, "reason": "Arrived damaged"}
    response = client.post(_refunds_url(), body, content_type="application/json", headers=headers)
    assert response.status_code == 201
    assert SandboxRefund.objects.get(tenant=tenant).order.number == "A-1042"


def test_with_a_subject_another_customers_notes_are_refused_like_an_unknown_customer(client, tenant, token):
    read = client.get(_notes_url("C-1002"), headers=_for(token, "C-1001"))
    added = client.post(
        _notes_url("C-1002"),
        {"text": "Wrong customer."},
        content_type="application/json",
        headers=_for(token, "C-1001"),
    )
    unknown = client.get(_notes_url("C-9999"), headers=_auth(token))

    assert read.status_code == added.status_code == unknown.status_code == 404
    assert read.json() == added.json() == NO_CUSTOMER_C1002
    assert unknown.json() == {"sandbox": True, "error": "There is no customer C-9999 in this sandbox."}
    assert not SandboxCrmNote.objects.filter(tenant=tenant, customer_id="C-1002").exists()


def test_with_a_subject_the_customers_own_notes_are_read_and_added(client, token):
    headers = _for(token, "C-1001")
    added = client.post(
        _notes_url("C-1001"), {"text": "Sent a photo."}, content_type="application/json", headers=headers
    )
    assert added.status_code == 201
    read = client.get(_notes_url("C-1001"), headers=headers)
    assert read.status_code == 200
    assert read.json()["notes"][0]["text"] == "Sent a photo."


def test_with_a_subject_no_email_goes_to_another_customer(client, tenant, token):
    response = _email(client, _for(token, "C-1001"), customer_id="C-1002")
    assert response.status_code == 404
    assert response.json() == NO_CUSTOMER_C1002
    assert not SandboxEmail.objects.exists()
    assert _email(client, _for(token, "C-1001"), customer_id="C-1001").status_code == 201


def test_with_a_subject_another_customer_is_not_deleted(client, tenant, token):
    response = client.delete(_customer_url("C-1002"), headers=_for(token, "C-1001"))
    assert response.status_code == 404
    assert response.json() == NO_CUSTOMER_C1002
    assert SandboxCustomer.objects.get(tenant=tenant, customer_id="C-1002").deleted_at is None
    assert client.delete(_customer_url("C-1001"), headers=_for(token, "C-1001")).status_code == 200


def test_an_empty_subject_header_matches_no_customer(client, token):
    headers = {**_auth(token), "X-Controlplane-Subject": ""}
    assert client.get(_order_url("A-1042"), headers=headers).status_code == 404
    assert client.get(_notes_url("C-1001"), headers=headers).status_code == 404


def test_without_a_subject_nothing_is_scoped(client, tenant, token):
    """Staff tooling and internal channels name no customer: every customer is reachable."""
    assert client.get(_order_url("A-1050"), headers=_auth(token)).json()["order"]["customer_id"] == "C-1002"
    assert client.get(_notes_url("C-1002"), headers=_auth(token)).status_code == 200
    body = {"order_id": "A-1050", "amount": 10, "reason": "Kettle broke"}
    assert client.post(_refunds_url(), body, content_type="application/json", headers=_auth(token)).status_code == 201
    assert _email(client, _auth(token), customer_id="C-1002").status_code == 201
    assert client.delete(_customer_url("C-1002"), headers=_auth(token)).status_code == 200


# --- The overview page ----------------------------------------------------------------------


def test_overview_needs_a_login(client, token):
    response = client.get(reverse("sandbox:overview"))
    assert response.status_code == 302


def test_overview_is_for_staff(client, people, token):
    client.force_login(people["nobody"])
    assert client.get(reverse("sandbox:overview")).status_code == 403


def test_overview_shows_a_refund_in_the_viewers_tenants_only(client, people, token, other_token):
    _refund(client, token, key="call-1", reason="Blender arrived damaged")
    client.force_login(people["compliance"])
    response = client.get(reverse("sandbox:overview"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Sandbox systems (demo only)" in page
    assert "Blender arrived damaged" in page
    assert "Globex" not in page
    assert token not in page


def test_overview_queries_do_not_grow_with_rows(client, people, token, django_assert_max_num_queries):
    client.force_login(people["compliance"])
    _refund(client, token, key="first", amount=1)
    reset_queries()  # every request resets the query log: count from an empty one
    with CaptureQueriesContext(connection) as one_refund:
        client.get(reverse("sandbox:overview"))
    baseline = len(one_refund.captured_queries)
    assert baseline > 5
    for number in range(5):
        _refund(client, token, key=f"more-{number}", amount=1)
    with django_assert_max_num_queries(baseline):
        client.get(reverse("sandbox:overview"))
