"""The built-in tools: Python functions that run inside the control plane.

Each takes an ``Invocation`` (validated arguments, the turn's context, the acting user's
roles) and returns a JSON-able dict. They are registered by name in ToolsConfig.ready; a
Tool row picks one by that name. Built-ins run in-process: the gateway records their
latency, and their timeouts are their own (they are local database work).
"""

from apps.handoffs import services as handoffs
from apps.knowledge.retrieval import RetrievalContext, retrieve

from .connectors import Invocation, register_builtin


def noop(invocation: Invocation) -> dict:
    """Does nothing: a safe tool for trying the gateway (and for benchmarking it)."""
    return {"ok": True}


def knowledge_search(invocation: Invocation) -> dict:
    """Search approved, fresh, in-scope knowledge as the acting user, for the subject."""
    context = invocation.context
    arguments = invocation.arguments
    result = retrieve(
        arguments["query"],
        RetrievalContext(
            tenant_id=context.tenant_id,
            audience=context.audience,
            roles=invocation.roles,
            channel=context.channel,
            region=context.region,
            segment=context.segment,
            product=context.product,
            brand=context.brand,
        ),
        k=arguments.get("k", 3),
        record_gap=not context.evaluation,
    )
    return {
        "status": result.status,
        "passages": [
            {"heading": passage.heading, "text": passage.text, "citation": passage.citation()}
            for passage in result.passages
        ],
    }


def create_handoff(invocation: Invocation) -> dict:
    context = invocation.context
    arguments = invocation.arguments
    handoff = handoffs.create_handoff(
        tenant_id=context.tenant_id,
        agent_id=context.agent_id,
        requested_by_id=context.user_id,
        reason_code=arguments["reason_code"],
        reason=arguments["reason"],
        summary=arguments.get("summary", ""),
        urgency=arguments.get("urgency", "normal"),
        subject=context.subject,
        channel=context.channel,
        conversation_id=context.conversation_id,
        turn_id=context.turn_id,
    )
    return {"handoff_id": handoff.pk, "status": handoff.status}


def create_ticket(invocation: Invocation) -> dict:
    context = invocation.context
    arguments = invocation.arguments
    ticket = handoffs.create_ticket(
        tenant_id=context.tenant_id,
        agent_id=context.agent_id,
        requested_by_id=context.user_id,
        title=arguments["title"],
        body=arguments.get("body", ""),
        priority=arguments.get("priority", "normal"),
        subject=context.subject,
        conversation_id=context.conversation_id,
    )
    return {"ticket_id": ticket.pk, "status": ticket.status}


# Argument schemas the built-ins expect; the demo and the admin's "add tool" start from them.
SCHEMAS = {
    "noop": {"type": "object", "properties": {}, "additionalProperties": False},
    "knowledge.search": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 2000},
            "k": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    "handoff.create": {
        "type": "object",
        "properties": {
            "reason_code": {"type": "string", "pattern": "^[a-z][a-z0-9_]{1,63}$"},
            "reason": {"type": "string", "minLength": 10, "maxLength": 1000},
            "summary": {"type": "string", "maxLength": 4000},
            "urgency": {"enum": ["low", "normal", "high", "urgent"]},
        },
        "required": ["reason_code", "reason"],
        "additionalProperties": False,
    },
    "ticket.create": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 3, "maxLength": 200},
            "body": {"type": "string", "maxLength": 4000},
            "priority": {"enum": ["low", "normal", "high", "urgent"]},
        },
        "required": ["title"],
        "additionalProperties": False,
    },
}


def register() -> None:
    register_builtin("noop", noop, SCHEMAS["noop"])
    register_builtin("knowledge.search", knowledge_search, SCHEMAS["knowledge.search"])
    register_builtin("handoff.create", create_handoff, SCHEMAS["handoff.create"])
    register_builtin("ticket.create", create_ticket, SCHEMAS["ticket.create"])
