"""Time travel for knowledge tests: the one place tests write a source's dates directly."""

import datetime

from django.utils import timezone

from apps.knowledge.models import KnowledgeSource


def make_overdue(made, days=1):
    """Pretend the last review was long enough ago that the review fell due ``days`` ago
    (``days=0``: due today)."""
    reviewed = timezone.localdate() - datetime.timedelta(days=made.review_cadence_days + days)
    KnowledgeSource.objects.filter(pk=made.pk).update(
        last_reviewed_on=reviewed, review_due_on=reviewed + datetime.timedelta(days=made.review_cadence_days)
    )
    return KnowledgeSource.objects.get(pk=made.pk)
