from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from .choices import MembershipSource, RoleKind


class Tenant(models.Model):
    """A customer organisation or brand. Every governed row belongs to exactly one."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(
        max_length=64, unique=True, help_text="Short identifier used in IdP group names, e.g. 'acme'."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    """A named person. Agents act as a User and can do only what that User's roles grant."""

    display_name = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.display_name or self.get_full_name() or self.username


class Role(models.Model):
    """A tenant's role. Its kind decides what it may do; its IdP groups decide who holds it
    when people sign in through single sign-on."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="roles")
    kind = models.CharField(max_length=32, choices=RoleKind.choices)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    idp_groups = models.JSONField(
        default=list,
        blank=True,
        help_text="Identity-provider group names that grant this role at sign-in, e.g. ['acme:support_lead'].",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["tenant__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="role_name_unique_in_tenant"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.name} · {self.name}"

    def clean(self) -> None:
        if not isinstance(self.idp_groups, list) or not all(
            isinstance(group, str) and group.strip() for group in self.idp_groups
        ):
            raise ValidationError({"idp_groups": 'Enter a list of non-empty group names, e.g. ["acme:support_lead"].'})
        self.idp_groups = sorted({group.strip() for group in self.idp_groups})


class Membership(models.Model):
    """A user holding a role in a tenant. Memberships from the identity provider are
    re-derived at every single sign-on; locally assigned ones stay until removed."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="memberships")
    source = models.CharField(max_length=8, choices=MembershipSource.choices, default=MembershipSource.LOCAL)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["role__tenant__name", "role__name", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "role"], name="membership_unique_user_role"),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role}"

    @property
    def tenant_id(self) -> int:
        return self.role.tenant_id


class ApiToken(models.Model):
    """A bearer token for the API, acting as its user. Only a SHA-256 digest is stored:
    the token itself is shown once, when it is created."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses this token, e.g. 'Zendesk integration'.")
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise the token.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
