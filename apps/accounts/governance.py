"""Recording governance changes in the audit trail, the same way from every app.

A change to who may do what (roles, agents, policies, kill switches, lockouts) is a
``config.changed`` event carrying who made it, the roles they held in that tenant at the
time, a short code saying what changed, and the details. Call it inside the change's own
transaction, so the change and its record commit together.
"""

from django.core.exceptions import PermissionDenied

from apps import audit

from .permissions import has_tenant_permission, roles_in_tenant


def require_tenant_permission(user, tenant_id: int, permission: str, message: str) -> None:
    """Raise PermissionDenied(message) unless ``user`` holds ``permission`` in the tenant.
    Services call it inside their transaction, after locking the row they change."""
    if user is None or not has_tenant_permission(user, tenant_id, permission):
        raise PermissionDenied(message)


def save_with_history(instance, *, by, reason: str) -> None:
    """Save and label the history row with who and why (also from workers and the CLI,
    where no request supplies the user)."""
    instance._history_user = by
    instance._change_reason = reason[:100] if reason else None
    instance.save()


def record_change(*, by, tenant, what: str, payload: dict, agent=None, event_type: str | None = None) -> None:
    """``tenant`` is a Tenant or None (platform-wide); ``what`` a code such as
    "agent.rollout_mode"; ``payload`` the diff and why."""
    audit.record(
        event_type or audit.EventType.CONFIG_CHANGED,
        tenant=tenant,
        actor=by,
        actor_roles=roles_in_tenant(by, tenant.pk) if tenant is not None else [],
        agent=agent,
        reason=what,
        payload=payload,
    )


def audit_value(instance, field: str):
    """A field's value as the audit trail keeps it: related rows by id and name."""
    related = instance._meta.get_field(field)
    if related.is_relation:
        target = getattr(instance, field)
        return None if target is None else {"id": target.pk, "name": str(target)}
    return getattr(instance, field)


def snapshot(instance, fields) -> dict:
    return {field: audit_value(instance, field) for field in fields}


def diff(before: dict, after: dict) -> dict:
    """{field: [old, new]} for the fields whose value changed."""
    return {field: [before.get(field), value] for field, value in after.items() if before.get(field) != value}
