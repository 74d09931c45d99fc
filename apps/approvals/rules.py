"""Who may approve which tool.

The answer lives in the tools app (a role's grant for a tool says whether its holders may
approve that tool's requests), and tools sits above approvals in the stack, so tools
registers the answer when it starts (``ToolsConfig.ready``). Until something registers,
nobody may approve anything: the rule fails closed.
"""

from collections.abc import Callable, Iterable

from apps.accounts.models import Membership
from apps.accounts.permissions import has_tenant_permission

DECIDE_PERMISSION = "approvals.change_approvalrequest"

# (tenant id, tool name) pairs -> for each pair, the ids of the roles whose grants allow approving.
ApproverRoles = Callable[[Iterable[tuple[int, str]]], dict[tuple[int, str], set[int]]]

_approver_roles: ApproverRoles | None = None


def register_approver_roles(provider: ApproverRoles) -> None:
    global _approver_roles
    _approver_roles = provider


def approver_roles(pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], set[int]]:
    pairs = set(pairs)
    if _approver_roles is None or not pairs:
        return {}
    return _approver_roles(pairs)


def role_ids_by_tenant(user, tenant_ids: Iterable[int]) -> dict[int, set[int]]:
    """The ids of the roles ``user`` holds, per tenant, in one query."""
    held: dict[int, set[int]] = {}
    rows = Membership.objects.filter(user_id=user.pk, role__tenant_id__in=set(tenant_ids)).values_list(
        "role__tenant_id", "role_id"
    )
    for tenant_id, role_id in rows:
        held.setdefault(tenant_id, set()).add(role_id)
    return held


def approvable(user, pairs: Iterable[tuple[int, str]]) -> set[tuple[int, str]]:
    """The (tenant id, tool name) pairs whose requests ``user``'s roles may approve. Two
    queries whatever the number of pairs, so a page of requests pays the same for 5 or 50."""
    pairs = set(pairs)
    if not pairs or user is None or not user.is_authenticated:
        return set()
    allowed = approver_roles(pairs)
    held = role_ids_by_tenant(user, {tenant_id for tenant_id, _ in pairs})
    return {pair for pair in pairs if allowed.get(pair, set()) & held.get(pair[0], set())}


def refusals(user, requests) -> dict[int, str]:
    """For each request, why ``user`` may not decide it, or '' when they may: they need the
    approvals permission in its tenant, it must not have been made on their own behalf, and
    a role of theirs must hold a grant that lets them approve its tool. The same rules for one
    request (``services.decide``) and for a page of them, in two queries either way."""
    allowed = approvable(user, {(request.tenant_id, request.tool_name) for request in requests})
    found = {}
    for request in requests:
        if not has_tenant_permission(user, request.tenant_id, DECIDE_PERMISSION):
            found[request.pk] = "You may not decide approval requests in this tenant."
        elif request.requested_by_id == user.pk:
            found[request.pk] = "The agent acted for you: somebody else must decide this request."
        elif (request.tenant_id, request.tool_name) not in allowed:
            found[request.pk] = f"None of your roles holds a grant that lets you approve {request.tool_name}."
        else:
            found[request.pk] = ""
    return found
