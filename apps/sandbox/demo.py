"""Demo data for the sandbox systems: a few customers, orders and CRM notes per tenant,
and the bearer token the demo's connections use. Called by the tools demo seeder (which
stores the token, encrypted, in the connections); idempotent by customer id, order number
and note text."""

from decimal import Decimal

from apps.accounts.models import Tenant

from . import services
from .choices import SandboxOrderStatus
from .models import SandboxCrmNote, SandboxCustomer, SandboxOrder


def _item(sku: str, name: str, quantity: int, price: str) -> dict:
    return {"sku": sku, "name": name, "quantity": quantity, "price": price}


ACME = {
    "customers": [
        # customer id, name, e-mail, region, segment
        ("C-1001", "Jordan Rivera", "jordan.rivera@example.com", "us", "consumer"),
        ("C-1002", "Marta Kowalska", "marta.kowalska@example.eu", "eu", "consumer"),
        ("C-2001", "Northwind Traders (purchasing)", "purchasing@northwind.example", "us", "enterprise"),
    ],
    "orders": [
        # number, customer id, items, total, status
        ("A-1042", "C-1001", [_item("BL-200", "Acme blender (arrived damaged)", 1, "89.00")], "89.00", "delivered"),
        (
            "A-1043",
            "C-1001",
            [_item("JR-020", "Spare blender jar", 1, "19.50"), _item("SH-001", "Express shipping", 1, "5.00")],
            "24.50",
            "shipped",
        ),
        ("A-1050", "C-1002", [_item("KT-110", "Acme kettle", 1, "45.00")], "45.00", "delivered"),
        ("A-2001", "C-2001", [_item("BL-200", "Acme blender", 10, "125.00")], "1250.00", "delivered"),
    ],
    "notes": [
        # customer id, author, text
        ("C-1001", "Sam (support)", "Called on delivery day: the blender jar was cracked in transit. Photo received."),
        ("C-1001", "Sam (support)", "Prefers e-mail over phone."),
        ("C-2001", "Lee (support lead)", "Enterprise account: refunds over 500 go through the account manager."),
    ],
}

GLOBEX = {
    "customers": [("C-5001", "Ravi Menon", "ravi.menon@example.com", "us", "consumer")],
    "orders": [("G-5001", "C-5001", [_item("TV-55", "55-inch television", 1, "499.00")], "499.00", "delivered")],
    "notes": [("C-5001", "Globex support", "Asked about extended warranty.")],
}

DEMO_DATA = {"acme": ACME, "globex": GLOBEX}


def seed_sandbox(tenant: Tenant) -> str:
    """Create the tenant's sandbox customers, orders and notes (once) and return a fresh
    bearer token for it. The sandbox keeps only the token's digest, so every call issues a
    new token and the old one stops working: the caller must store this one."""
    data = DEMO_DATA.get(tenant.slug, ACME)
    for customer_id, name, email, region, segment in data["customers"]:
        SandboxCustomer.objects.get_or_create(
            tenant=tenant,
            customer_id=customer_id,
            defaults={"name": name, "email": email, "region": region, "segment": segment},
        )
    emails = {customer_id: email for customer_id, _name, email, _region, _segment in data["customers"]}
    for number, customer_id, items, total, status in data["orders"]:
        SandboxOrder.objects.get_or_create(
            tenant=tenant,
            number=number,
            defaults={
                "customer_id": customer_id,
                "customer_email": emails[customer_id],
                "items": items,
                "total": Decimal(total),
                "status": SandboxOrderStatus(status),
            },
        )
    for customer_id, author, text in data["notes"]:
        SandboxCrmNote.objects.get_or_create(
            tenant=tenant, customer_id=customer_id, text=text, defaults={"author": author}
        )
    return services.issue_token(tenant=tenant)
