"""What each default role may do, as Django permission patterns.

A pattern is ``app_label.codename`` with shell wildcards (``knowledge.*``,
``*.view_*``); a leading ``-`` removes what earlier patterns added. Patterns rather than
lists let apps that land later join the right roles without touching this file: a new
``knowledge`` model is editable by knowledge owners the moment it is migrated.

The same table answers two questions:
- which Django permission group a role kind maps to (what the admin shows at all), and
- within one tenant, whether a user's roles there allow a permission (``permissions.py``).
"""

from fnmatch import fnmatchcase

from .choices import RoleKind

CONTROL_PLANE_APPS = (
    "accounts",
    "agents",
    "knowledge",
    "tools",
    "guardrails",
    "approvals",
    "handoffs",
    "runtime",
    "audit",
    "evals",
)

# Creating, renaming or deleting tenants is a platform operation (superusers only).
_PLATFORM_ONLY = ("-accounts.add_tenant", "-accounts.change_tenant", "-accounts.delete_tenant")
# Governance records are retired, not deleted; nobody below superuser deletes them. History
# rows are the record of who changed what: readable, never edited.
_NO_DELETES = ("-*.delete_*", "-*.add_historical*", "-*.change_historical*")

ROLE_POLICIES: dict[str, dict] = {
    RoleKind.SUPPORT_AGENT: {
        "staff": False,
        "summary": "Works handoffs; reads the agents they work beside.",
        "patterns": (
            "agents.view_agent",
            "handoffs.view_*",
            "handoffs.change_handoff",
            "runtime.view_*",
            "runtime.add_conversation",
            "runtime.add_turn",
            # What they actually did beside what a shadow agent proposed, and suggestions taken.
            "evals.view_turnreview",
            "evals.add_turnreview",
        ),
    },
    RoleKind.SUPPORT_LEAD: {
        "staff": True,
        "summary": "Approves queued actions, works handoff queues, can suspend an agent.",
        "patterns": (
            "agents.view_*",
            "agents.suspend_agent",
            "approvals.*",
            "handoffs.*",
            "knowledge.view_*",
            "runtime.view_*",
            "runtime.add_conversation",
            "runtime.add_turn",
            "evals.view_turnreview",
            "evals.add_turnreview",
            *_NO_DELETES,
        ),
    },
    RoleKind.KNOWLEDGE_OWNER: {
        "staff": True,
        "summary": "Curates knowledge sources; cannot touch tools, grants or guardrails.",
        "patterns": ("knowledge.*", "agents.view_agent", *_NO_DELETES),
    },
    RoleKind.COMPLIANCE: {
        "staff": True,
        "summary": "Reads everything and exports the audit trail; changes nothing.",
        "patterns": (*(f"{app}.view_*" for app in CONTROL_PLANE_APPS), "audit.export_auditevent"),
    },
    RoleKind.SECURITY: {
        "staff": True,
        "summary": "Owns tools, grants, connections, guardrails and kill switches.",
        "patterns": (
            *(f"{app}.view_*" for app in CONTROL_PLANE_APPS),
            "tools.*",
            "guardrails.*",
            "agents.suspend_agent",
            "agents.add_killswitch",
            "agents.change_killswitch",
            *_NO_DELETES,
            # Taking a tool off an agent's allowlist is how an agent loses it.
            "tools.delete_agenttool",
        ),
    },
    RoleKind.AGENT_OWNER: {
        "staff": True,
        "summary": "Owns the agent inventory, prompts, rollout and evaluations.",
        "patterns": (
            "agents.view_*",
            "agents.add_agent",
            "agents.change_agent",
            "agents.suspend_agent",
            "agents.add_promptversion",
            "evals.*",
            "knowledge.view_*",
            "tools.view_*",
            "runtime.view_*",
            "runtime.add_conversation",
            "runtime.add_turn",
            *_NO_DELETES,
        ),
    },
    RoleKind.ADMIN: {
        "staff": True,
        "summary": "Administers the tenant: people, roles and every control-plane setting.",
        "patterns": (
            *(f"{app}.*" for app in CONTROL_PLANE_APPS),
            *_PLATFORM_ONLY,
            *_NO_DELETES,
            # Taking someone out of a role, or a tool off an agent, is how access is removed.
            "accounts.delete_membership",
            "tools.delete_agenttool",
        ),
    },
}


def role_allows(kind: str, permission: str) -> bool:
    """Whether a role of this kind grants ``permission`` ("app_label.codename")."""
    allowed = False
    for pattern in ROLE_POLICIES[kind]["patterns"]:
        if pattern.startswith("-"):
            if fnmatchcase(permission, pattern[1:]):
                allowed = False
        elif fnmatchcase(permission, pattern):
            allowed = True
    return allowed


def group_name(kind: str) -> str:
    return f"role:{kind}"
