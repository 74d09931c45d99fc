"""Who may read and export which tenants' audit events.

audit imports no other app, so the app that knows people and roles (accounts) registers
an access policy here at start-up. Without one, only superusers see anything.
"""

from typing import Protocol

VIEW_PERMISSION = "audit.view_auditevent"
EXPORT_PERMISSION = "audit.export_auditevent"


class AccessPolicy(Protocol):
    def tenant_ids(self, user, permission: str) -> set[int] | None:
        """Tenant ids where ``user`` holds ``permission``; None means every tenant."""

    def tenant_names(self, tenant_ids) -> dict[int, str]:
        """Display names of these tenants."""


class SuperusersOnly:
    def tenant_ids(self, user, permission: str) -> set[int] | None:
        return None if user is not None and user.is_active and user.is_superuser else set()

    def tenant_names(self, tenant_ids) -> dict[int, str]:
        return {}


_policy: AccessPolicy = SuperusersOnly()


def register_access_policy(policy: AccessPolicy) -> None:
    global _policy
    _policy = policy


def tenant_ids(user, permission: str = VIEW_PERMISSION) -> set[int] | None:
    return _policy.tenant_ids(user, permission)


def may(user, permission: str = VIEW_PERMISSION) -> bool:
    allowed = tenant_ids(user, permission)
    return allowed is None or bool(allowed)


def tenant_names(ids) -> dict[int, str]:
    return _policy.tenant_names(ids)
