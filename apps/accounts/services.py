"""Operations on tenants, people, roles and API tokens."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from .choices import MembershipSource, RoleKind
from .governance import record_change
from .models import ApiToken, Membership, Role, Tenant, User
from .permissions import forget_cached_roles, has_tenant_permission
from .role_permissions import ROLE_POLICIES, group_name, role_allows

API_TOKEN_PREFIX = "cpt_"  # noqa: S105 — a public marker that makes leaked tokens greppable


# --- Tenants and roles ------------------------------------------------------------------


@transaction.atomic
def create_tenant(*, name: str, slug: str) -> Tenant:
    """A tenant with one role of every default kind, each accepting ``<slug>:<kind>``."""
    tenant = Tenant(name=name, slug=slug)
    tenant.full_clean()
    tenant.save()
    for kind in RoleKind:
        role = Role(
            tenant=tenant,
            kind=kind.value,
            name=kind.label,
            description=ROLE_POLICIES[kind]["summary"],
            idp_groups=[f"{slug}:{kind.value}"],
        )
        role.full_clean()
        role.save()
    return tenant


def sync_role_permission_groups(*, using: str = "default") -> None:
    """Give each role kind a Django group holding exactly the permissions its policy allows.

    Runs after every migrate, so models added by later apps join the right roles.
    """
    permissions = list(Permission.objects.using(using).select_related("content_type"))
    for kind in RoleKind:
        group, _ = Group.objects.using(using).get_or_create(name=group_name(kind))
        wanted = [
            permission
            for permission in permissions
            if role_allows(kind, f"{permission.content_type.app_label}.{permission.codename}")
        ]
        group.permissions.set(wanted)


def sync_user_access(*, user: User) -> None:
    """Derive a user's Django groups and admin access from the roles they hold."""
    forget_cached_roles(user)
    kinds = set(Membership.objects.filter(user=user, role__tenant__is_active=True).values_list("role__kind", flat=True))
    user.groups.set(Group.objects.filter(name__in=[group_name(kind) for kind in kinds]))
    is_staff = user.is_superuser or any(ROLE_POLICIES[kind]["staff"] for kind in kinds)
    if user.is_staff != is_staff:
        user.is_staff = is_staff
        user.save(update_fields=["is_staff"])


# --- Memberships --------------------------------------------------------------------------


@transaction.atomic
def assign_role(*, user: User, role: Role, by: User | None = None, source: str = MembershipSource.LOCAL) -> Membership:
    if by is not None and not has_tenant_permission(by, role.tenant_id, "accounts.add_membership"):
        raise PermissionDenied(f"You may not assign roles in {role.tenant}.")
    membership, created = Membership.objects.get_or_create(user=user, role=role, defaults={"source": source})
    if created:
        sync_user_access(user=user)
        _record_access_change(by=by, user=user, role=role, change="granted", source=source)
    return membership


@transaction.atomic
def remove_membership(*, membership: Membership, by: User | None = None) -> None:
    if by is not None and not has_tenant_permission(by, membership.role.tenant_id, "accounts.delete_membership"):
        raise PermissionDenied(f"You may not remove roles in {membership.role.tenant}.")
    user, role, source = membership.user, membership.role, membership.source
    membership.delete()
    sync_user_access(user=user)
    _record_access_change(by=by, user=user, role=role, change="removed", source=source)


def _record_access_change(*, by: User | None, user: User, role: Role, change: str, source: str) -> None:
    """Who may act for whom is governance: role grants and removals land in the audit chain.
    ``by`` None means the identity provider's groups claim (at sign-in) or the system."""
    record_change(
        by=by,
        tenant=role.tenant,
        what=f"access.role_{change}",
        payload={
            "changes": {"role": [None, role.kind] if change == "granted" else [role.kind, None]},
            "user": {"id": user.pk, "name": user.get_username()},
            "source": source,
        },
    )


@dataclass(frozen=True)
class MembershipSync:
    added: list[Role]
    removed: list[Role]


@transaction.atomic
def sync_memberships_from_idp_groups(*, user: User, groups: list[str]) -> MembershipSync:
    """Make the user's identity-provider memberships match the groups claimed at sign-in.

    Roles whose IdP group names intersect ``groups`` are granted; memberships that came
    from the identity provider earlier and are no longer backed by a claim are removed.
    Locally assigned memberships are left alone: they were granted here, on purpose.
    """
    claimed = {group.strip() for group in groups if isinstance(group, str) and group.strip()}
    # Roles are few (a handful per tenant): match in Python so the rule is identical on
    # SQLite and PostgreSQL (SQLite has no JSON containment lookup).
    backed_roles = {
        role.pk: role
        for role in Role.objects.filter(tenant__is_active=True).exclude(idp_groups=[]).select_related("tenant")
        if claimed.intersection(role.idp_groups)
    }
    existing = {
        membership.role_id: membership for membership in Membership.objects.select_for_update().filter(user=user)
    }

    added = []
    for role_id, role in backed_roles.items():
        if role_id not in existing:
            Membership.objects.create(user=user, role=role, source=MembershipSource.IDENTITY_PROVIDER)
            added.append(role)
            _record_access_change(
                by=None, user=user, role=role, change="granted", source=MembershipSource.IDENTITY_PROVIDER
            )

    removed = []
    for role_id, membership in existing.items():
        if membership.source == MembershipSource.IDENTITY_PROVIDER and role_id not in backed_roles:
            removed.append(membership.role)
            membership.delete()
            _record_access_change(
                by=None, user=user, role=membership.role, change="removed", source=MembershipSource.IDENTITY_PROVIDER
            )

    sync_user_access(user=user)
    return MembershipSync(added=added, removed=removed)


# --- API tokens ------------------------------------------------------------------------------


def _digest(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode()).hexdigest()


@transaction.atomic
def create_api_token(*, user: User, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Create a token and return it with its secret, which is never stored or shown again."""
    raw_token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user=user, name=name, prefix=raw_token[:10], digest=_digest(raw_token), expires_at=expires_at)
    token.full_clean()
    token.save()
    return token, raw_token


def revoke_api_token(*, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def user_for_api_token(raw_token: str) -> User | None:
    """The active user a live token acts as, or None; records when it was last used."""
    token = ApiToken.objects.select_related("user").filter(digest=_digest(raw_token)).first()
    now = timezone.now()
    if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
        return None
    if not token.user.is_active:
        return None
    # Write at most once a minute per token so a busy integration does not write per request.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
