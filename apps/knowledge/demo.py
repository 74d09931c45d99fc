"""Demo knowledge for ``manage.py seed_demo``: one source for each thing an owner must see
(fresh, due soon, stale, deprecated, deleted, draft, restricted, human only, scoped to a
region or a segment, a conflict) and a few knowledge gaps. Idempotent by title."""

import datetime

from django.utils import timezone

from apps.accounts.choices import RoleKind
from apps.accounts.models import Membership, Role
from apps.accounts.services import assign_role

from . import services
from .choices import Audience, Lifecycle, SourceKind, StalePolicy, Visibility
from .models import KnowledgeSource
from .retrieval import RetrievalContext, retrieve

US_RETURNS = """# Returns and refunds

Unused items can be returned within 30 days of delivery for a full refund to the original payment method.

## Damaged or faulty items

If an item arrives damaged, tell us within 14 days with a photo and the order number. We send a replacement or
refund the order in full, including shipping. You do not need to return the damaged item.

## How long refunds take

Refunds are issued within 5 business days of approval. Card refunds can take a further 3-5 days to appear."""

EU_RETURNS = """# Returns and refunds (EU)

Under EU consumer law you may withdraw from an online purchase within 14 days of delivery without giving a reason.

## Damaged or faulty items

Faulty goods are covered by the two-year legal guarantee: we repair, replace or refund them at no cost to you."""

OLD_RETURNS = """# Returns and refunds (2025)

Items can be returned within 60 days of delivery for store credit only."""

SOURCES = [
    # title, kind, owner kind, status, fields, review offset in days (None: reviewed today)
    ("Returns and refunds (US)", SourceKind.POLICY, Lifecycle.APPROVED, {"body": US_RETURNS, "regions": ["us"]}),
    ("Returns and refunds (EU)", SourceKind.POLICY, Lifecycle.APPROVED, {"body": EU_RETURNS, "regions": ["eu"]}),
    ("Returns and refunds (2025)", SourceKind.POLICY, Lifecycle.DEPRECATED, {"body": OLD_RETURNS}),
    (
        "Shipping times",
        SourceKind.HELP_ARTICLE,
        "stale",
        {"body": "Standard shipping takes 3-5 business days. Express orders placed before 2 pm ship the same day."},
    ),
    (
        "Blender warranty",
        SourceKind.HELP_ARTICLE,
        "due_soon",
        {
            "body": "Acme blenders carry a two-year warranty covering the motor and the jar. Keep your receipt.",
            "stale_policy": StalePolicy.WARN,
        },
    ),
    (
        "Enterprise service credits",
        SourceKind.POLICY,
        Lifecycle.APPROVED,
        {
            "body": "Enterprise customers receive a 10% service credit for each hour of downtime beyond the SLA.",
            "segments": ["enterprise"],
        },
    ),
    (
        "Handling a damaged-order complaint",
        SourceKind.SOP,
        Lifecycle.APPROVED,
        {
            "body": "1. Check the order in the orders system. 2. Ask for a photo. 3. Offer a replacement first; "
            "propose a refund when the customer prefers it. Refunds over $500 need a support lead.",
            "visibility": Visibility.INTERNAL,
        },
    ),
    (
        "Fraud review playbook",
        SourceKind.SOP,
        Lifecycle.APPROVED,
        {
            "body": "Hold refunds to a new address, or more than two refunds in 30 days, for fraud review.",
            "visibility": Visibility.RESTRICTED,
            "restricted_roles": [RoleKind.SUPPORT_LEAD, RoleKind.SECURITY],
        },
    ),
    (
        "Legal hold procedure",
        SourceKind.SOP,
        Lifecycle.APPROVED,
        {
            "body": "When legal places a hold on an account, do not delete or change any of its records.",
            "visibility": Visibility.HUMAN_ONLY,
        },
    ),
    (
        "Price match (web)",
        SourceKind.POLICY,
        Lifecycle.APPROVED,
        {"body": "We match a lower advertised price from a major retailer within 14 days of your purchase."},
    ),
    (
        "Price match (stores)",
        SourceKind.POLICY,
        Lifecycle.APPROVED,
        {"body": "We match a lower advertised price from a major retailer within 7 days of your purchase."},
    ),
    (
        "Gift cards",
        SourceKind.FAQ,
        Lifecycle.DRAFT,
        {"body": "Gift cards never expire and can be used online and in stores."},
    ),
    ("Holiday promotion 2024", SourceKind.HELP_ARTICLE, Lifecycle.DELETED, {"body": "Use code HOLIDAY24 for 20% off."}),
]

GAP_QUESTIONS = [
    "Do you accept cryptocurrency?",
    "Do you accept cryptocurrency?",
    "Is there a student discount?",
    "When is the express cutoff?",  # the answer exists but is stale: the gap shows it withheld
]


def seed_knowledge(*, tenant, other_tenant, people, stdout=None) -> None:
    owner = people[RoleKind.KNOWLEDGE_OWNER]
    created = 0
    for title, kind, state, fields in SOURCES:
        if KnowledgeSource.objects.filter(tenant=tenant, title=title).exists():
            continue
        fields = {"visibility": Visibility.PUBLIC, **fields}
        source = services.create_source(by=owner, tenant=tenant, title=title, kind=kind, owner=owner, **fields)
        created += 1
        if state == Lifecycle.DRAFT:
            continue
        services.approve_source(source=source, by=owner, reason="Checked against the policy manual")
        if state == Lifecycle.DEPRECATED:
            services.deprecate_source(source=source, by=owner, reason="Replaced by the 30-day policy")
        elif state == Lifecycle.DELETED:
            services.purge_source(source=source, by=owner, reason="Promotion ended; legal asked for removal")
        elif state in ("stale", "due_soon"):
            # Pretend the last review was long ago, so the demo shows both freshness warnings.
            offset = source.review_cadence_days + (10 if state == "stale" else -5)
            reviewed = timezone.localdate() - datetime.timedelta(days=offset)
            KnowledgeSource.objects.filter(pk=source.pk).update(
                last_reviewed_on=reviewed, review_due_on=reviewed + datetime.timedelta(days=source.review_cadence_days)
            )
    if created:
        services.sweep_freshness()
        context = RetrievalContext(tenant_id=tenant.pk, audience=Audience.CUSTOMER, channel="web_chat", region="us")
        for question in GAP_QUESTIONS:
            retrieve(question, context)
    _seed_other_tenant(other_tenant)
    if stdout is not None and created:
        stdout.write(f"Knowledge: {created} demo sources for {tenant.name} (owner {owner.get_username()}).")


def _seed_other_tenant(tenant) -> None:
    if KnowledgeSource.objects.filter(tenant=tenant).exists():
        return
    from apps.accounts.models import User

    owner, created = User.objects.get_or_create(
        username="globex.knowledge", defaults={"display_name": "Globex knowledge owner"}
    )
    if created:
        owner.set_unusable_password()
        owner.save()
    role = Role.objects.get(tenant=tenant, kind=RoleKind.KNOWLEDGE_OWNER)
    if not Membership.objects.filter(user=owner, role=role).exists():
        assign_role(user=owner, role=role)
    source = services.create_source(
        by=owner,
        tenant=tenant,
        title="Globex returns",
        owner=owner,
        visibility=Visibility.PUBLIC,
        body="Globex accepts returns within 45 days with the receipt.",
    )
    services.approve_source(source=source, by=owner)
