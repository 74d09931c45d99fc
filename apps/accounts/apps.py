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


def _sync_role_groups(sender, **kwargs) -> None:
    from django.apps import apps

    # Permissions are created app by app during post_migrate; act once, after the last
    # app, when every model's permissions exist.
    if sender is not list(apps.get_app_configs())[-1]:
        return
    from .services import sync_role_permission_groups

    sync_role_permission_groups(using=kwargs.get("using", "default"))
