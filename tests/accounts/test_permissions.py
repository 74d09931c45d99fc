"""What each role may do (role_permissions) and, per tenant, what each person may do (permissions)."""

import pytest
from django.contrib.auth.models import AnonymousUser, Group, Permission

from apps.accounts.choices import RoleKind
from apps.accounts.models import Membership, Role
from apps.accounts.permissions import (
    forget_cached_roles,
    has_tenant_permission,
    permission_name,
    role_kinds_by_tenant,
    tenant_ids_with_permission,
)
from apps.accounts.role_permissions import CONTROL_PLANE_APPS, ROLE_POLICIES, group_name, role_allows
from apps.accounts.services import assign_role, remove_membership, sync_user_access
from apps.agents.models import Agent, KillSwitch, PromptVersion

from ..agents.factories import AgentFactory
from .factories import TenantFactory, member

ALL_KINDS = [kind.value for kind in RoleKind]


# --- role_allows: the policy table ----------------------------------------------------------


def test_every_role_kind_has_a_policy():
    assert set(ROLE_POLICIES) == set(ALL_KINDS)
    for policy in ROLE_POLICIES.values():
        assert isinstance(policy["staff"], bool)
        assert policy["summary"]
        assert policy["patterns"]


def test_unknown_role_kind_is_an_error():
    with pytest.raises(KeyError):
        role_allows("janitor", "agents.view_agent")


def test_knowledge_owner_curates_knowledge_only():
    assert role_allows("knowledge_owner", "knowledge.change_anything")
    assert role_allows("knowledge_owner", "knowledge.add_source")
    assert role_allows("knowledge_owner", "knowledge.view_source")
    assert role_allows("knowledge_owner", "agents.view_agent")
    assert not role_allows("knowledge_owner", "knowledge.delete_source")
    assert not role_allows("knowledge_owner", "tools.change_grant")
    assert not role_allows("knowledge_owner", "tools.view_tool")
    assert not role_allows("knowledge_owner", "guardrails.change_guardrail")
    assert not role_allows("knowledge_owner", "agents.change_agent")
    assert not role_allows("knowledge_owner", "agents.suspend_agent")


@pytest.mark.parametrize("app", CONTROL_PLANE_APPS)
def test_compliance_reads_every_app_and_changes_nothing(app):
    assert role_allows("compliance", f"{app}.view_anything")
    for action in ("add", "change", "delete"):
        assert not role_allows("compliance", f"{app}.{action}_anything"), action
    assert not role_allows("compliance", "agents.suspend_agent")


def test_compliance_reads_nothing_outside_the_control_plane():
    assert not role_allows("compliance", "auth.view_group")
    assert not role_allows("compliance", "sessions.view_session")


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("app", CONTROL_PLANE_APPS)
def test_nobody_deletes_or_edits_history(kind, app):
    for action in ("add", "change", "delete"):
        assert not role_allows(kind, f"{app}.{action}_historicalagent"), action
        assert not role_allows(kind, f"{app}.{action}_historicalmembership"), action


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_nobody_below_superuser_deletes_governance_records(kind):
    for permission in (
        "agents.delete_agent",
        "agents.delete_promptversion",
        "agents.delete_killswitch",
        "knowledge.delete_source",
        "tools.delete_grant",
        "accounts.delete_role",
        "accounts.delete_tenant",
        "audit.delete_event",
    ):
        assert not role_allows(kind, permission), permission


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_nobody_below_superuser_creates_or_renames_tenants(kind):
    for action in ("add", "change", "delete"):
        assert not role_allows(kind, f"accounts.{action}_tenant")


def test_admin_manages_people_of_the_tenant():
    for permission in (
        "accounts.add_membership",
        "accounts.delete_membership",
        "accounts.change_role",
        "accounts.view_tenant",
        "agents.change_agent",
        "tools.change_grant",
    ):
        assert role_allows("admin", permission), permission


def test_security_owns_tools_guardrails_and_kill_switches():
    for permission in (
        "tools.change_grant",
        "guardrails.add_guardrail",
        "agents.suspend_agent",
        "agents.add_killswitch",
        "agents.change_killswitch",
    ):
        assert role_allows("security", permission), permission
    for permission in ("agents.change_agent", "agents.add_agent", "knowledge.change_source", "tools.delete_tool"):
        assert not role_allows("security", permission), permission


def test_agent_owner_owns_the_inventory_but_not_kill_switches():
    for permission in ("agents.add_agent", "agents.change_agent", "agents.add_promptversion", "evals.change_run"):
        assert role_allows("agent_owner", permission), permission
    for permission in ("agents.change_killswitch", "tools.change_grant", "accounts.add_membership"):
        assert not role_allows("agent_owner", permission), permission


def test_support_roles():
    assert role_allows("support_agent", "agents.view_agent")
    assert role_allows("support_agent", "handoffs.change_handoff")
    assert not role_allows("support_agent", "agents.view_killswitch")
    assert not role_allows("support_agent", "agents.suspend_agent")
    assert not role_allows("support_agent", "approvals.change_approval")
    assert role_allows("support_lead", "agents.suspend_agent")
    assert role_allows("support_lead", "approvals.change_approval")
    assert not role_allows("support_lead", "approvals.delete_approval")
    assert not role_allows("support_lead", "agents.change_agent")


def test_only_support_agents_work_outside_the_admin():
    assert {kind for kind in ALL_KINDS if not ROLE_POLICIES[kind]["staff"]} == {"support_agent"}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_roles_django_group_holds_exactly_what_its_policy_allows(kind):
    group = Group.objects.get(name=group_name(kind))
    in_group = set(group.permissions.values_list("content_type__app_label", "codename"))
    allowed = {
        (app_label, codename)
        for app_label, codename in Permission.objects.values_list("content_type__app_label", "codename")
        if role_allows(kind, f"{app_label}.{codename}")
    }
    assert in_group == allowed
    assert in_group, "every role may do something"
    # Permissions of models added after the accounts app (agents) are in the groups too.
    if kind == "security":
        assert ("agents", "change_killswitch") in in_group
        assert ("agents", "delete_killswitch") not in in_group


# --- Per-tenant permissions -------------------------------------------------------------------


@pytest.mark.django_db
def test_roles_in_two_tenants_count_separately(tenant, other_tenant):
    person = member(tenant, "knowledge_owner", username="kim")
    member(other_tenant, "support_agent", username="kim")

    assert tenant_ids_with_permission(person, "knowledge.change_x") == {tenant.pk}
    assert tenant_ids_with_permission(person, "agents.view_agent") == {tenant.pk, other_tenant.pk}
    assert tenant_ids_with_permission(person, "handoffs.change_handoff") == {other_tenant.pk}
    assert tenant_ids_with_permission(person, "tools.change_grant") == set()
    assert has_tenant_permission(person, tenant.pk, "knowledge.change_x")
    assert not has_tenant_permission(person, other_tenant.pk, "knowledge.change_x")


@pytest.mark.django_db
def test_two_roles_in_one_tenant_add_up(tenant):
    person = member(tenant, "knowledge_owner", username="kim")
    member(tenant, "security", username="kim")
    assert role_kinds_by_tenant(person) == {tenant.pk: frozenset({"knowledge_owner", "security"})}
    assert tenant_ids_with_permission(person, "knowledge.change_x") == {tenant.pk}
    assert tenant_ids_with_permission(person, "tools.change_grant") == {tenant.pk}


@pytest.mark.django_db
def test_superuser_may_do_anything_anywhere(superuser, tenant, other_tenant):
    assert tenant_ids_with_permission(superuser, "tools.change_grant") is None
    assert tenant_ids_with_permission(superuser, "accounts.delete_tenant") is None
    assert has_tenant_permission(superuser, other_tenant.pk, "agents.delete_agent")


@pytest.mark.django_db
def test_inactive_user_may_do_nothing(tenant):
    person = member(tenant, "admin", username="gone")
    assert tenant_ids_with_permission(person, "agents.view_agent") == {tenant.pk}
    person.is_active = False
    person.save(update_fields=["is_active"])
    assert tenant_ids_with_permission(person, "agents.view_agent") == set()
    assert not has_tenant_permission(person, tenant.pk, "agents.view_agent")


@pytest.mark.django_db
def test_inactive_superuser_may_do_nothing(superuser, tenant):
    superuser.is_active = False
    assert tenant_ids_with_permission(superuser, "agents.view_agent") == set()
    assert not has_tenant_permission(superuser, tenant.pk, "agents.view_agent")


@pytest.mark.django_db
def test_anonymous_and_missing_users_may_do_nothing(tenant):
    assert tenant_ids_with_permission(AnonymousUser(), "agents.view_agent") == set()
    assert tenant_ids_with_permission(None, "agents.view_agent") == set()
    assert not has_tenant_permission(AnonymousUser(), tenant.pk, "agents.view_agent")


@pytest.mark.django_db
def test_user_without_roles_may_do_nothing(people, tenant):
    assert tenant_ids_with_permission(people["nobody"], "agents.view_agent") == set()
    assert role_kinds_by_tenant(people["nobody"]) == {}


@pytest.mark.django_db
def test_inactive_tenant_grants_nothing(tenant, other_tenant):
    person = member(tenant, "admin", username="pat")
    member(other_tenant, "admin", username="pat")
    tenant.is_active = False
    tenant.save(update_fields=["is_active"])
    forget_cached_roles(person)
    assert tenant_ids_with_permission(person, "agents.change_agent") == {other_tenant.pk}
    assert not has_tenant_permission(person, tenant.pk, "agents.view_agent")


@pytest.mark.django_db
def test_inactive_tenant_takes_away_admin_access(tenant):
    person = member(tenant, "compliance", username="pat")
    assert person.is_staff
    tenant.is_active = False
    tenant.save(update_fields=["is_active"])
    sync_user_access(user=person)
    person.refresh_from_db()
    assert person.is_staff is False
    assert not person.groups.exists()


@pytest.mark.django_db
def test_roles_are_cached_on_the_user_and_forgotten_when_they_change(tenant, people):
    person = people["nobody"]
    assert tenant_ids_with_permission(person, "agents.view_agent") == set()

    # Written behind the user's back: the cached answer stands until forgotten.
    Membership.objects.create(user=person, role=Role.objects.get(tenant=tenant, kind="compliance"))
    assert tenant_ids_with_permission(person, "agents.view_agent") == set()
    forget_cached_roles(person)
    assert tenant_ids_with_permission(person, "agents.view_agent") == {tenant.pk}


@pytest.mark.django_db
def test_assigning_and_removing_a_role_updates_the_same_user_object(tenant, people):
    person = people["nobody"]
    assert tenant_ids_with_permission(person, "knowledge.change_x") == set()
    membership = assign_role(user=person, role=Role.objects.get(tenant=tenant, kind="knowledge_owner"))
    assert tenant_ids_with_permission(person, "knowledge.change_x") == {tenant.pk}
    assert person.is_staff is True
    remove_membership(membership=membership)
    assert tenant_ids_with_permission(person, "knowledge.change_x") == set()
    person.refresh_from_db()
    assert person.is_staff is False


@pytest.mark.django_db
def test_only_tenant_admins_assign_roles_and_only_in_their_tenant(tenant, other_tenant, people):
    from django.core.exceptions import PermissionDenied

    globex_role = Role.objects.get(tenant=other_tenant, kind="admin")
    with pytest.raises(PermissionDenied):
        assign_role(user=people["nobody"], role=globex_role, by=people["admin"])
    for kind in ("security", "compliance", "agent_owner"):
        with pytest.raises(PermissionDenied):
            assign_role(user=people["nobody"], role=Role.objects.get(tenant=tenant, kind="admin"), by=people[kind])
    assert not Membership.objects.filter(user=people["nobody"]).exists()
    assign_role(user=people["nobody"], role=Role.objects.get(tenant=tenant, kind="compliance"), by=people["admin"])
    assert Membership.objects.filter(user=people["nobody"]).count() == 1


# --- Django permission names and tenant-scoped querysets ---------------------------------------


def test_permission_name():
    assert permission_name(Agent, "view") == "agents.view_agent"
    assert permission_name(KillSwitch, "change") == "agents.change_killswitch"
    assert permission_name(Agent, "agents.suspend_agent") == "agents.suspend_agent"


@pytest.mark.django_db
def test_for_user_scopes_rows_to_tenants_and_actions(agent, other_agent, people, superuser):
    assert list(Agent.objects.for_user(people["support_agent"])) == [agent]
    assert list(Agent.objects.for_user(people["agent_owner"], "change")) == [agent]
    assert list(Agent.objects.for_user(people["compliance"], "change")) == []
    assert list(Agent.objects.for_user(people["security"], "agents.suspend_agent")) == [agent]
    assert list(Agent.objects.for_user(people["nobody"])) == []
    assert set(Agent.objects.for_user(superuser)) == {agent, other_agent}


@pytest.mark.django_db
def test_for_user_follows_the_tenant_path(agent, other_agent, people):
    from apps.agents import services

    mine = services.publish_prompt(agent=agent, text="Mine", author=people["agent_owner"])
    services.publish_prompt(agent=other_agent, text="Theirs", author=other_agent.owner)
    assert list(PromptVersion.objects.for_user(people["compliance"])) == [mine]
    # Support agents read agents but not their prompt versions.
    assert list(PromptVersion.objects.for_user(people["support_agent"])) == []


@pytest.mark.django_db
def test_user_with_a_role_in_a_second_tenant_sees_its_rows_too(agent, other_agent):
    person = member(agent.tenant, "compliance", username="auditor")
    member(other_agent.tenant, "support_agent", username="auditor")
    forget_cached_roles(person)
    assert set(Agent.objects.for_user(person)) == {agent, other_agent}
    extra = AgentFactory(tenant=TenantFactory(name="Initech", slug="initech"))
    assert extra not in set(Agent.objects.for_user(person))
