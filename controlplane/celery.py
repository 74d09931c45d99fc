"""The Celery app.

Without REDIS_URL, tasks run eagerly in the calling process (the embedded default);
with REDIS_URL, Redis is the broker and result backend and workers run the tasks.
The switch itself lives in settings (CELERY_TASK_ALWAYS_EAGER).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def enqueue_on_commit(task_name: str, *args) -> None:
    """Send the task named ``task_name`` once the caller's transaction commits (at once
    outside one). By name, so a lower app can make a higher one act without importing it;
    in the embedded default (eager) the task runs in this process after the commit."""
    from django.db import transaction

    transaction.on_commit(lambda: _task(task_name).apply_async(args=args))


def _task(name: str):
    if name not in app.tasks:  # the apps' tasks modules load lazily outside a worker
        app.loader.import_default_modules()
    return app.tasks[name]
