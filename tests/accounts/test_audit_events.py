"""Who may act for whom is governance: role grants and removals land in the audit chain,
whether an admin made them or the identity provider's groups claim did."""

import pytest
from django.core.exceptions import PermissionDenied

from apps.accounts import services
from apps.accounts.models import Membership, Role

from ..audit.helpers import chained
from .factories import UserFactory

pytestmark = pytest.mark.django_db


def test_granting_and_removing_a_role_are_recorded_with_who(tenant, people):
    newcomer = UserFactory(username="newcomer")
    role = Role.objects.get(tenant=tenant, kind="support_lead")
    membership = services.assign_role(user=newcomer, role=role, by=people["admin"])
    services.remove_membership(membership=membership, by=people["admin"])

    granted, removed = chained(reason__startswith="access.role_")
    assert (granted.reason, removed.reason) == ("access.role_granted", "access.role_removed")
    assert granted.tenant_id == tenant.pk and granted.actor_name == "admin"
    assert granted.data["actor_roles"] == ["admin"]
    assert granted.data["payload"]["user"]["name"] == "newcomer"
    assert granted.data["payload"]["changes"] == {"role": [None, "support_lead"]}
    assert removed.data["payload"]["changes"] == {"role": ["support_lead", None]}


def test_a_refused_grant_records_nothing(tenant, people):
    role = Role.objects.get(tenant=tenant, kind="admin")
    with pytest.raises(PermissionDenied):
        services.assign_role(user=people["support_agent"], role=role, by=people["support_agent"])
    assert not chained().exists()


def test_identity_provider_changes_are_recorded_without_a_human_actor(tenant):
    user = UserFactory(username="sso.person")
    services.sync_memberships_from_idp_groups(user=user, groups=["acme:compliance"])
    services.sync_memberships_from_idp_groups(user=user, groups=[])

    events = list(chained(reason__startswith="access.role_"))
    assert [event.reason for event in events] == ["access.role_granted", "access.role_removed"]
    assert all(event.actor_id is None and event.data["payload"]["source"] == "idp" for event in events)
    assert not Membership.objects.filter(user=user).exists()
