import factory

from apps.accounts.choices import MembershipSource
from apps.accounts.models import Membership, Role, Tenant, User
from apps.accounts.services import create_tenant, sync_user_access


class TenantFactory(factory.django.DjangoModelFactory):
    """A tenant with its seven default roles, as create_tenant makes it."""

    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant{n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return create_tenant(name=kwargs["name"], slug=kwargs["slug"])


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("test-password")


def member(tenant: Tenant, kind: str, username: str | None = None, **user_fields) -> User:
    """A user holding the ``kind`` role in ``tenant``."""
    user = UserFactory(**({"username": username} if username else {}), **user_fields)
    Membership.objects.get_or_create(
        user=user, role=Role.objects.get(tenant=tenant, kind=kind), defaults={"source": MembershipSource.LOCAL}
    )
    sync_user_access(user=user)
    return user
