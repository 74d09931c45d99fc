"""Handoffs made before queues existed: their priority is their urgency, and they are due
after the unqueued SLA (60 minutes at normal priority) from when they were made, so the
queue page and the escalation sweep treat them like any other. Their package fields stay
empty (the conversation they came from is still in the runtime's records)."""

from datetime import timedelta

from django.db import migrations

SLA_FACTORS = {"low": 2.0, "normal": 1.0, "high": 0.5, "urgent": 0.25}
UNQUEUED_SLA_MINUTES = 60


def set_deadlines(apps, schema_editor):
    Handoff = apps.get_model("handoffs", "Handoff")
    for handoff in Handoff.objects.filter(due_at__isnull=True).iterator(chunk_size=500):
        handoff.priority = handoff.urgency
        window = timedelta(minutes=UNQUEUED_SLA_MINUTES * SLA_FACTORS.get(handoff.urgency, 1.0))
        handoff.due_at = handoff.created_at + window
        handoff.due_soon_at = handoff.due_at - window / 4
        handoff.save(update_fields=["priority", "due_at", "due_soon_at"])


class Migration(migrations.Migration):
    dependencies = [("handoffs", "0002_queues_and_package")]

    operations = [migrations.RunPython(set_deadlines, migrations.RunPython.noop)]
