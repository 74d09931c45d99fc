"""Knowledge sources made the way owners make them: through the services."""

from apps.knowledge import services
from apps.knowledge.choices import Lifecycle
from apps.knowledge.models import KnowledgeSource


def source(tenant, owner, *, title="Refund policy", body=None, status=Lifecycle.APPROVED, by=None, **fields):
    """A source in ``status``, created (and approved, deprecated or deleted) by ``by``
    (default: ``owner``, who must be a knowledge owner or admin of ``tenant``)."""
    by = by or owner
    body = body if body is not None else f"{title}. Refunds are accepted within 30 days of delivery."
    created = services.create_source(by=by, tenant=tenant, title=title, owner=owner, body=body, **fields)
    if status in (Lifecycle.APPROVED, Lifecycle.DEPRECATED):
        services.approve_source(source=created, by=by)
    if status == Lifecycle.DEPRECATED:
        services.deprecate_source(source=created, by=by, reason="Replaced")
    if status == Lifecycle.DELETED:
        services.purge_source(source=created, by=by, reason="Obsolete")
    return KnowledgeSource.objects.get(pk=created.pk)
