from django.utils.functional import SimpleLazyObject

from .permissions import tenant_ids_with_permission


def _may_anywhere(request, permission: str) -> bool:
    allowed = tenant_ids_with_permission(getattr(request, "user", None), permission)
    return allowed is None or bool(allowed)


def work_navigation(request) -> dict:
    """Whether to show the approval queue, the handoff queues and the evaluations in the top
    bar: the person holds the permission to read them in some tenant. Lazy, like the audit link."""
    return {
        "show_approvals_link": SimpleLazyObject(lambda: _may_anywhere(request, "approvals.view_approvalrequest")),
        "show_handoffs_link": SimpleLazyObject(lambda: _may_anywhere(request, "handoffs.view_handoff")),
        "show_evals_link": SimpleLazyObject(lambda: _may_anywhere(request, "evals.view_evalrun")),
    }
