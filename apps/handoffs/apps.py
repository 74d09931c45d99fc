from django.apps import AppConfig


class HandoffsConfig(AppConfig):
    name = "apps.handoffs"
    label = "handoffs"
