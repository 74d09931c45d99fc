"""Demo queues for ``manage.py seed_demo``: who works Acme's handoffs, how fast, and which
ones each queue takes. Saved through ``services.save_queue`` as the tenant's admin, so the
history and the audit trail show who set them up. Idempotent by name: existing queues are
left as they are."""

from apps.accounts.choices import RoleKind
from apps.accounts.models import Role, Tenant

from . import services
from .models import HandoffQueue

QUEUES = [
    {
        "name": "Support tier 2",
        "description": "Everything no other queue takes: requests for a person, upset customers, questions the "
        "agent could not answer, turns that hit a limit.",
        "sla_minutes": 60,
        "is_default": True,
        "roles": [RoleKind.SUPPORT_AGENT, RoleKind.SUPPORT_LEAD],
    },
    {
        "name": "Billing & refunds",
        "description": "Disputed charges, chargebacks and double charges.",
        "sla_minutes": 120,
        "topics": ["billing dispute"],
        "roles": [RoleKind.SUPPORT_AGENT, RoleKind.SUPPORT_LEAD],
        "escalate_to": "Support tier 2",
    },
    {
        "name": "Legal & compliance",
        "description": "Customers naming lawyers, lawsuits or courts, and medical questions: support leads only.",
        "sla_minutes": 30,
        "topics": ["legal", "medical"],
        "roles": [RoleKind.SUPPORT_LEAD],
    },
]


def seed_handoffs(*, tenant: Tenant, other_tenant: Tenant, people: dict, stdout=None) -> None:
    admin = people[RoleKind.ADMIN]
    created = 0
    for spec in QUEUES:
        if HandoffQueue.objects.filter(tenant=tenant, name=spec["name"]).exists():
            continue
        fields = {key: value for key, value in spec.items() if key not in ("roles", "escalate_to")}
        if "escalate_to" in spec:
            fields["escalate_to"] = HandoffQueue.objects.get(tenant=tenant, name=spec["escalate_to"])
        roles = list(Role.objects.filter(tenant=tenant, kind__in=spec["roles"]))
        services.save_queue(by=admin, tenant=tenant, roles=roles, reason="Demo queue", **fields)
        created += 1
    if stdout is not None:
        stdout.write(
            f"Handoffs: {created} new queue(s) for {tenant.name} ({', '.join(spec['name'] for spec in QUEUES)}); "
            "ask the Support Assistant on /try/ for a person to make a handoff."
        )
