from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "Identity and access"

    def ready(self) -> None:
        # Infrastructure wiring only: keep each default role's Django permission group
        # in step with the models that exist after every migrate.
        post_migrate.connect(_sync_role_groups, dispatch_uid="accounts.sync_role_groups")
        # The audit pages ask accounts (through a hook; audit imports no other app) whose
        # events each person may read and export.
        from apps.audit.access import register_access_policy

        from .permissions import AuditAccessPolicy

        register_access_policy(AuditAccessPolicy())


def _sync_role_groups(sender, **kwargs) -> None:
    from django.apps import apps

    # Permissions are created app by app during post_migrate; act once, after the last
    # app, when every model's permissions exist (apps without models get no signal).
    if sender is not [config for config in apps.get_app_configs() if config.models_module is not None][-1]:
        return
    from .services import sync_role_permission_groups

    sync_role_permission_groups(using=kwargs.get("using", "default"))
