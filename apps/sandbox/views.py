"""The sandbox systems' JSON endpoints under /sandbox/<tenant>/, and the overview page at
/sandbox/ that shows a demo viewer what the agents did there.

The endpoints authenticate with the tenant's bearer token only (no session, no CSRF: they
stand in for another company's API). Every answer carries ``"sandbox": true``; errors are
JSON with a message, and no answer ever repeats the token. A request carrying
``X-Controlplane-Subject`` is scoped to that customer (see services.py).
"""

import json
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from . import selectors, services
from .models import SandboxCrmNote, SandboxEmail, SandboxOrder, SandboxRefund


def _answer(payload: dict, status: int = 200) -> JsonResponse:
    return JsonResponse({"sandbox": True, **payload}, status=status)


def _refusal(error: services.SandboxError) -> JsonResponse:
    response = _answer({"error": error.message}, status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="sandbox"'
    return response


def sandbox_endpoint(*methods: str):
    """Allow ``methods``, authenticate the bearer token for the URL's tenant, and turn a
    SandboxError into its JSON answer. The view gets the tenant instead of the slug."""

    def decorate(view):
        @csrf_exempt
        @wraps(view)
        def endpoint(request, tenant_slug: str, **kwargs):
            if request.method not in methods:
                response = _answer({"error": f"Use {' or '.join(methods)} here."}, status=405)
                response["Allow"] = ", ".join(methods)
                return response
            try:
                tenant = services.authenticate(
                    tenant_slug=tenant_slug, authorization=request.headers.get("Authorization", "")
                )
                return view(request, tenant, **kwargs)
            except services.SandboxError as error:
                return _refusal(error)

        return endpoint

    return decorate


def _for_customer(request) -> str | None:
    """The customer the control plane says this request is for (None: not for a customer)."""
    return request.headers.get("X-Controlplane-Subject")


def _body(request, *, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """The request's JSON object, with exactly the fields this endpoint takes."""
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise services.BadRequest("Send a JSON object as the request body.")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise services.BadRequest(f"Unknown fields: {', '.join(unknown)}. This endpoint takes {', '.join(required)}.")
    missing = [field for field in required if field not in body]
    if missing:
        raise services.BadRequest(f"Missing fields: {', '.join(missing)}.")
    return body


# --- Representations ------------------------------------------------------------------------


def _order(order: SandboxOrder) -> dict:
    refunded = services.refunded_total(order)
    return {
        "order_id": order.number,
        "customer_id": order.customer_id,
        "customer_email": order.customer_email,
        "items": order.items,
        "total": str(order.total),
        "refunded": str(refunded),
        "refundable": str(order.total - refunded),
        "status": order.status,
        "created": order.created.isoformat(),
    }


def _note(note: SandboxCrmNote) -> dict:
    return {"note_id": note.pk, "text": note.text, "author": note.author, "created": note.created.isoformat()}


def _refund(refund: SandboxRefund) -> dict:
    return {
        "refund_id": refund.pk,
        "order_id": refund.order.number,
        "amount": str(refund.amount),
        "reason": refund.reason,
        "created": refund.created.isoformat(),
    }


def _email(email: SandboxEmail) -> dict:
    return {
        "email_id": email.pk,
        "customer_id": email.customer_id,
        "subject": email.subject,
        "status": "queued in the sandbox outbox (never sent)",
        "created": email.created.isoformat(),
    }


# --- Endpoints ------------------------------------------------------------------------------


@sandbox_endpoint("GET")
def order(request, tenant, number: str):
    found = services.find_order(tenant=tenant, number=number, for_customer=_for_customer(request))
    return _answer({"order": _order(found)})


@sandbox_endpoint("GET", "POST")
def customer_notes(request, tenant, customer_id: str):
    if request.method == "GET":
        notes = services.customer_notes(tenant=tenant, customer_id=customer_id, for_customer=_for_customer(request))
        return _answer({"customer_id": customer_id, "notes": [_note(note) for note in notes]})
    body = _body(request, required=("text",), optional=("author",))
    note = services.add_note(
        tenant=tenant,
        customer_id=customer_id,
        text=body["text"],
        author=body.get("author"),
        for_customer=_for_customer(request),
    )
    return _answer({"customer_id": customer_id, "note": _note(note)}, status=201)


@sandbox_endpoint("POST")
def refunds(request, tenant):
    body = _body(request, required=("order_id", "amount", "reason"))
    refund, created = services.create_refund(
        tenant=tenant,
        order_number=body["order_id"],
        amount=body["amount"],
        reason=body["reason"],
        idempotency_key=request.headers.get("Idempotency-Key", ""),
        for_customer=_for_customer(request),
    )
    return _answer({"refund": _refund(refund), "replayed": not created}, status=201 if created else 200)


@sandbox_endpoint("POST")
def emails(request, tenant):
    body = _body(request, required=("customer_id", "subject", "body"))
    email = services.queue_email(
        tenant=tenant,
        customer_id=body["customer_id"],
        subject=body["subject"],
        body=body["body"],
        for_customer=_for_customer(request),
    )
    return _answer({"email": _email(email)}, status=201)


@sandbox_endpoint("DELETE")
def customer(request, tenant, customer_id: str):
    deleted, notes_deleted = services.delete_customer(
        tenant=tenant, customer_id=customer_id, for_customer=_for_customer(request)
    )
    return _answer({"customer_id": deleted.customer_id, "deleted": True, "notes_deleted": notes_deleted})


# --- Page -----------------------------------------------------------------------------------


@require_safe
@login_required
def overview(request):
    if not request.user.is_staff:
        raise PermissionDenied("The sandbox overview is for control-plane staff.")
    activity = [selectors.recent_activity(tenant) for tenant in selectors.visible_tenants(request.user)]
    return render(request, "sandbox/overview.html", {"activity": activity})
