"""Seed the demo tenant "Acme Support" with one user per role and a few agents.

Idempotent: running it again leaves existing rows as they are. The demo users and their
password are listed in README.md; never run this against a production database.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps import audit
from apps.accounts.choices import RoleKind
from apps.accounts.models import Role, Tenant, User
from apps.accounts.services import assign_role, create_tenant
from apps.agents.choices import Channel, Environment, RolloutMode
from apps.agents.demo import demo_seeders
from apps.agents.models import Agent
from apps.agents.services import create_agent, update_agent

DEMO_PASSWORD = "demo-pass-2026"  # noqa: S105 — documented demo credential, refused when DEBUG is off

DEMO_PEOPLE = [
    # username, display name, role kind
    ("agent.smith", "Alex Smith (support agent)", RoleKind.SUPPORT_AGENT),
    ("lead.lopez", "Lee Lopez (support lead)", RoleKind.SUPPORT_LEAD),
    ("kim.knowledge", "Kim Park (knowledge owner)", RoleKind.KNOWLEDGE_OWNER),
    ("cora.compliance", "Cora Meyer (compliance)", RoleKind.COMPLIANCE),
    ("sam.security", "Sam Okafor (security)", RoleKind.SECURITY),
    ("olivia.owner", "Olivia Chen (agent owner)", RoleKind.AGENT_OWNER),
    ("tara.admin", "Tara Novak (tenant administrator)", RoleKind.ADMIN),
]

DEMO_AGENTS = [
    {
        "name": "Acme Support Assistant",
        "slug": "support-assistant",
        "purpose": "Answers customer questions about orders, shipping and returns on the web chat.",
        "business_owner": "Customer Support",
        "environment": Environment.PRODUCTION,
        "channels": [Channel.WEB_CHAT, Channel.EMAIL],
        "connected_systems": ["Orders (sandbox)", "CRM notes (sandbox)"],
        "rollout_mode": RolloutMode.ASSIST,
        "prompt": "You are Acme's support assistant. Answer only from approved Acme sources and cite them. "
        "If you are unsure, say so and offer a human.",
    },
    {
        "name": "Refunds Agent",
        "slug": "refunds",
        "purpose": "Prepares refunds for damaged or late orders; every refund waits for a support lead.",
        "business_owner": "Finance operations",
        "environment": Environment.STAGING,
        "channels": [Channel.WEB_CHAT],
        "connected_systems": ["Orders (sandbox)", "Refunds (sandbox)"],
        "rollout_mode": RolloutMode.APPROVAL,
        "prompt": "You prepare refunds for Acme orders. Check the order first. Never promise a refund "
        "before it is approved.",
    },
    {
        "name": "Internal IT Helper",
        "slug": "it-helper",
        "purpose": "Suggests answers to employees' IT questions; runs in shadow until it earns more.",
        "business_owner": "IT service desk",
        "environment": Environment.DEVELOPMENT,
        "channels": [Channel.SLACK],
        "connected_systems": [],
        "rollout_mode": RolloutMode.SHADOW,
        "prompt": "You help Acme employees with IT questions using the internal knowledge base.",
    },
]


class Command(BaseCommand):
    help = "Seed the demo tenant 'Acme Support' (users for every role, three agents). Idempotent."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo creates users with a published password; it only runs with DEBUG on.")
        with transaction.atomic():
            self._seed()

    def _seed(self) -> None:
        tenant = Tenant.objects.filter(slug="acme").first() or create_tenant(name="Acme Support", slug="acme")
        # A second tenant, so tenant isolation is visible in the demo.
        other_tenant = Tenant.objects.filter(slug="globex").first() or create_tenant(
            name="Globex Retail", slug="globex"
        )

        platform_admin, created = User.objects.get_or_create(
            username="admin",
            defaults={
                "display_name": "Platform administrator",
                "email": "admin@example.com",
                "is_superuser": True,
                "is_staff": True,
            },
        )
        if created:
            platform_admin.set_password(DEMO_PASSWORD)
            platform_admin.save()

        people = {}
        for username, display_name, kind in DEMO_PEOPLE:
            user, created = User.objects.get_or_create(
                username=username, defaults={"display_name": display_name, "email": f"{username}@acme.example"}
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            assign_role(user=user, role=Role.objects.get(tenant=tenant, kind=kind))
            people[kind] = user

        owner = people[RoleKind.AGENT_OWNER]
        for spec in DEMO_AGENTS:
            if Agent.objects.filter(tenant=tenant, slug=spec["slug"]).exists():
                continue
            fields = {key: value for key, value in spec.items() if key not in ("prompt", "rollout_mode")}
            agent = create_agent(by=owner, tenant=tenant, owner=owner, prompt_text=spec["prompt"], **fields)
            if spec["rollout_mode"] != RolloutMode.SHADOW:
                # A new agent starts in shadow and earns more through its rollout gates. The demo
                # shows agents further along, so its platform administrator overrides the gates,
                # which the audit trail records with every number that fell short.
                update_agent(
                    agent=agent,
                    by=platform_admin,
                    rollout_mode=spec["rollout_mode"],
                    gate_override="Demo data: this agent shows the product in its rollout mode.",
                )

        self._record_sample_turn(tenant, people)
        for seeder in demo_seeders():
            seeder(tenant=tenant, other_tenant=other_tenant, people=people, stdout=self.stdout)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo tenant '{tenant.name}' ready: {len(DEMO_PEOPLE)} role users and the platform administrator "
                f"'admin', all with password '{DEMO_PASSWORD}'."
            )
        )

    def _record_sample_turn(self, tenant, people) -> None:
        """Until the runtime records real turns, one sample refund turn (labelled as a sample
        in every event) gives the audit pages a story, a report row and an approval to show."""
        turn_id = "demo-sample-turn-1"
        from apps.audit.models import AuditEvent

        if AuditEvent.objects.filter(turn_id=turn_id).exists():
            return
        agent = Agent.objects.filter(tenant=tenant).order_by("pk").first()
        customer_agent = people[RoleKind.SUPPORT_AGENT]
        lead = people[RoleKind.SUPPORT_LEAD]
        common = {
            "tenant": tenant,
            "actor": customer_agent,
            "actor_roles": [RoleKind.SUPPORT_AGENT],
            "agent": agent,
            "conversation_id": "demo-sample-conversation-1",
            "turn_id": turn_id,
        }
        sample = {"sample": "seeded by manage.py seed_demo, not a real turn"}
        steps = [
            ("turn.received", {"payload": {**sample, "input": "Order A-1042 arrived broken, please refund it."}}),
            ("guardrail.verdict", {"decision": "allow", "guardrail_verdict": {"verdict": "allow", "rules": []}}),
            (
                "knowledge.retrieved",
                {"sources": [{"id": 1, "title": "Refund policy (US)", "version": 4}], "payload": sample},
            ),
            ("model.called", {"model": "offline", "latency_ms": 8.0, "cost": "0", "payload": sample}),
            (
                "tool.requested",
                {"tool": "refund.issue", "arguments": {"order_id": "A-1042", "amount": 129}, "decision": "approve"},
            ),
            ("approval.requested", {"tool": "refund.issue", "reason": "grant.requires_approval"}),
            (
                "approval.decided",
                {"tool": "refund.issue", "approval_status": "approved", "approver": lead, "latency_ms": 240000.0},
            ),
            (
                "tool.executed",
                {
                    "tool": "refund.issue",
                    "arguments": {"order_id": "A-1042", "amount": 129},
                    "approver": lead,
                    "approval_status": "approved",
                    "outcome": "ok",
                },
            ),
            ("turn.completed", {"decision": "answer", "outcome": "ok", "payload": {**sample, "output": "Refunded."}}),
        ]
        with transaction.atomic():
            for event_type, fields in steps:
                fields.setdefault("payload", sample)
                audit.record(event_type, **common, **fields)
