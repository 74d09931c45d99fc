"""Reading the audit trail in tests.

Inside a test's transaction, events recorded by the code under test wait as pending until
the transaction commits (which a rolled-back test never does); ``chained`` appends them
first, as the after-commit hook would."""

from apps.audit.chain import chain_pending
from apps.audit.models import AuditEvent


def chained(**filters):
    chain_pending()
    return AuditEvent.objects.filter(**filters).order_by("seq")
