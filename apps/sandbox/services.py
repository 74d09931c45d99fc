"""What the sandbox systems do: look up orders, keep CRM notes, issue refunds, queue
e-mails, forget customers. Each operation belongs to one tenant, found from the bearer
token by ``authenticate``; a bad request raises a ``SandboxError`` whose message is safe to
send back (it never repeats the token).

A request may name the customer it is for (the control plane's ``X-Controlplane-Subject``
header, passed in as ``for_customer``). Then every operation on a customer's data is scoped
to that customer: another customer's order or record is refused exactly as an unknown one
is, so the answer does not reveal that it exists. The header present but empty matches no
customer (it fails closed). Without it (staff tooling, an internal channel with no
customer) nothing is scoped."""

import hashlib
import hmac
import secrets
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from apps.accounts.models import Tenant

from .choices import SandboxOrderStatus
from .models import SandboxAccount, SandboxCrmNote, SandboxCustomer, SandboxEmail, SandboxOrder, SandboxRefund

MAX_AMOUNT = Decimal("99999999.99")
DEFAULT_NOTE_AUTHOR = "Agent via the control plane"
# Compared against when the tenant has no sandbox account, so a wrong slug and a wrong token
# take the same path and get the same answer.
_NO_ACCOUNT_DIGEST = "0" * 64


class SandboxError(Exception):
    """A request the sandbox refuses; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(SandboxError):
    status = 400


class Unauthenticated(SandboxError):
    status = 401


class Forbidden(SandboxError):
    status = 403


class NotFound(SandboxError):
    status = 404


class Conflict(SandboxError):
    status = 409


# --- Tokens ---------------------------------------------------------------------------------


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def issue_token(*, tenant: Tenant) -> str:
    """A new bearer token for the tenant's sandbox; any earlier token stops working. Only
    its digest is kept, so the caller must store the token (encrypted) where it is used."""
    token = secrets.token_urlsafe(32)
    SandboxAccount.objects.update_or_create(tenant=tenant, defaults={"token_digest": token_digest(token)})
    return token


def authenticate(*, tenant_slug: str, authorization: str) -> Tenant:
    """The tenant whose sandbox ``authorization`` ("Bearer <token>") opens."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("Send the sandbox token as 'Authorization: Bearer <token>'.")
    account = (
        SandboxAccount.objects.select_related("tenant").filter(tenant__slug=tenant_slug, tenant__is_active=True).first()
    )
    expected = account.token_digest if account else _NO_ACCOUNT_DIGEST
    if not hmac.compare_digest(token_digest(token), expected) or account is None:
        raise Forbidden("This token does not open this sandbox.")
    return account.tenant


# --- Checking input -------------------------------------------------------------------------


def _text(value, field: str, *, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{field}' must be a non-empty string.")
    if len(value) > max_length:
        raise BadRequest(f"'{field}' is too long (at most {max_length} characters).")
    return value.strip()


def _amount(value) -> Decimal:
    """A positive amount with at most two decimals, given as a number or a string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest("'amount' must be a number, e.g. 89.00.")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadRequest("'amount' must be a number, e.g. 89.00.") from None
    if not amount.is_finite():
        raise BadRequest("'amount' must be a number, e.g. 89.00.")
    if amount <= 0:
        raise BadRequest("'amount' must be more than 0.")
    if amount > MAX_AMOUNT:
        raise BadRequest(f"'amount' must be at most {MAX_AMOUNT}.")
    if amount != amount.quantize(Decimal("0.01")):
        raise BadRequest("'amount' can have at most two decimals.")
    return amount.quantize(Decimal("0.01"))


# --- Orders and customers -------------------------------------------------------------------


def _orders(tenant: Tenant, for_customer: str | None):
    orders = SandboxOrder.objects.filter(tenant=tenant)
    return orders if for_customer is None else orders.filter(customer_id=for_customer)


def _no_order(number: str) -> NotFound:
    return NotFound(f"There is no order {number} in this sandbox.")


def find_order(*, tenant: Tenant, number: str, for_customer: str | None = None) -> SandboxOrder:
    """The order ``number``; with ``for_customer``, only if it is that customer's (another
    customer's order is "no order", word for word)."""
    order = _orders(tenant, for_customer).filter(number=number).first()
    if order is None:
        raise _no_order(number)
    return order


def refunded_total(order: SandboxOrder) -> Decimal:
    return order.refunds.aggregate(total=Sum("amount"))["total"] or Decimal("0.00")


def find_customer(
    *, tenant: Tenant, customer_id: str, for_customer: str | None = None, for_update: bool = False
) -> SandboxCustomer:
    """A customer who has not been deleted (a deleted one is unknown from then on); with
    ``for_customer``, only that customer (anyone else is unknown, word for word)."""
    if for_customer is not None and customer_id != for_customer:
        raise NotFound(f"There is no customer {customer_id} in this sandbox.")
    customers = SandboxCustomer.objects.filter(tenant=tenant, customer_id=customer_id, deleted_at__isnull=True)
    customer = (customers.select_for_update() if for_update else customers).first()
    if customer is None:
        raise NotFound(f"There is no customer {customer_id} in this sandbox.")
    return customer


def customer_notes(*, tenant: Tenant, customer_id: str, for_customer: str | None = None) -> list[SandboxCrmNote]:
    find_customer(tenant=tenant, customer_id=customer_id, for_customer=for_customer)
    return list(SandboxCrmNote.objects.filter(tenant=tenant, customer_id=customer_id))


@transaction.atomic
def add_note(*, tenant: Tenant, customer_id: str, text, author=None, for_customer: str | None = None) -> SandboxCrmNote:
    find_customer(tenant=tenant, customer_id=customer_id, for_customer=for_customer)
    return SandboxCrmNote.objects.create(
        tenant=tenant,
        customer_id=customer_id,
        text=_text(text, "text", max_length=2000),
        author=DEFAULT_NOTE_AUTHOR if author is None else _text(author, "author", max_length=200),
    )


@transaction.atomic
def queue_email(*, tenant: Tenant, customer_id, subject, body, for_customer: str | None = None) -> SandboxEmail:
    """Put an e-mail to the customer in the outbox. The sandbox never sends it."""
    customer = find_customer(
        tenant=tenant, customer_id=_text(customer_id, "customer_id", max_length=20), for_customer=for_customer
    )
    return SandboxEmail.objects.create(
        tenant=tenant,
        customer_id=customer.customer_id,
        to_address=customer.email,
        subject=_text(subject, "subject", max_length=200),
        body=_text(body, "body", max_length=10000),
    )


@transaction.atomic
def delete_customer(
    *, tenant: Tenant, customer_id: str, for_customer: str | None = None
) -> tuple[SandboxCustomer, int]:
    """Forget a customer: mark it deleted and erase its CRM notes. Returns the customer
    and how many notes went. Orders stay (a shop keeps its books)."""
    customer = find_customer(tenant=tenant, customer_id=customer_id, for_customer=for_customer, for_update=True)
    customer.deleted_at = timezone.now()
    customer.save(update_fields=["deleted_at"])
    notes_deleted, _ = SandboxCrmNote.objects.filter(tenant=tenant, customer_id=customer_id).delete()
    return customer, notes_deleted


# --- Refunds --------------------------------------------------------------------------------


def _same_refund(earlier: SandboxRefund, order_number: str, amount: Decimal) -> SandboxRefund:
    if earlier.order.number != order_number or earlier.amount != amount:
        raise Conflict("This Idempotency-Key was already used for a different refund; nothing was refunded.")
    return earlier


@transaction.atomic
def create_refund(
    *, tenant: Tenant, order_number, amount, reason, idempotency_key: str = "", for_customer: str | None = None
) -> tuple[SandboxRefund, bool]:
    """Refund part or all of an order; (refund, created). A repeated ``idempotency_key``
    returns the first refund and creates nothing; never more than the order's total is
    refunded, over all its refunds. With ``for_customer``, only that customer's orders
    can be refunded (another's is "no order")."""
    order_number = _text(order_number, "order_id", max_length=20)
    amount = _amount(amount)
    reason = _text(reason, "reason", max_length=500)
    key = (idempotency_key or "").strip()
    if len(key) > 200:
        raise BadRequest("The Idempotency-Key header is too long (at most 200 characters).")
    # The order row is the lock: refunds of one order run one at a time, so two concurrent
    # requests cannot both see the same amount left, nor both miss the other's key.
    order = _orders(tenant, for_customer).select_for_update().filter(number=order_number).first()
    if order is None:
        raise _no_order(order_number)
    if key:
        earlier = SandboxRefund.objects.select_related("order").filter(tenant=tenant, idempotency_key=key).first()
        if earlier is not None:
            return _same_refund(earlier, order_number, amount), False
    remaining = order.total - refunded_total(order)
    if remaining <= 0:
        raise BadRequest(f"Order {order.number} is already fully refunded.")
    if amount > remaining:
        raise BadRequest(
            f"A refund of {amount} is more than what remains refundable on order {order.number} "
            f"({remaining} of {order.total})."
        )
    try:
        with transaction.atomic():
            refund = SandboxRefund.objects.create(
                tenant=tenant, order=order, amount=amount, reason=reason, idempotency_key=key
            )
    except IntegrityError:
        # The same key on another order, refunded meanwhile: that refund is the answer.
        earlier = SandboxRefund.objects.select_related("order").filter(tenant=tenant, idempotency_key=key).first()
        if earlier is None:
            raise
        return _same_refund(earlier, order_number, amount), False
    order.status = SandboxOrderStatus.REFUNDED if amount == remaining else SandboxOrderStatus.PARTIALLY_REFUNDED
    order.save(update_fields=["status"])
    return refund, True
