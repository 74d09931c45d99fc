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
