from django.utils.functional import SimpleLazyObject

from . import access


def audit_navigation(request) -> dict:
    """``show_audit_link``: whether the person may read any audit events. Lazy, so pages
    that never ask (the admin) pay nothing; asking costs at most the one role query, which
    the user object then caches for the rest of the request."""
    return {"show_audit_link": SimpleLazyObject(lambda: access.may(getattr(request, "user", None)))}
