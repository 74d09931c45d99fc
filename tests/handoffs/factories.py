"""Queues and handoffs made the way the control plane makes them: through the services."""

from apps.handoffs import services
from apps.handoffs.models import Handoff, HandoffQueue


def make_queue(tenant, by, name="Support tier 2", *, roles=None, **fields) -> HandoffQueue:
    return services.save_queue(by=by, tenant=tenant, roles=roles, name=name, **fields)


def make_handoff(tenant, *, reason_code="human_request", **fields) -> Handoff:
    """A handoff as the runtime makes one (minus a real conversation, unless one is named)."""
    values = {
        "agent_id": None,
        "requested_by_id": None,
        "reason": "The customer asked for a person: “I want to talk to someone”.",
        "summary": "Customer wants a person.",
        "subject": "C-1001",
        "channel": "web_chat",
        "customer": {"subject": "C-1001", "verified": True},
        **fields,
    }
    return services.create_handoff(tenant_id=tenant.pk, reason_code=reason_code, **values)
