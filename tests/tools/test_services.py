"""The registry's services: permission checks in the tenant, reasons, audit events that say
where a secret lives but never what it is, and no half-done changes."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from apps.accounts.models import Role
from apps.tools import secrets, services
from apps.tools.choices import ConnectionStatus, Effect
from apps.tools.models import AgentTool
from tests.audit.helpers import chained

from .factories import builtin_tool, connection, grant, http_tool

SECRET = "sk-live-services-test-0123456789abcdef"

pytestmark = pytest.mark.django_db


def _changes(what):
    return [event.data["payload"] for event in chained(event_type="config.changed", reason=what)]


def test_a_stored_secret_is_encrypted_and_its_audit_event_names_only_where_it_lives(tenant, people):
    made = services.save_connection(
        by=people["security"],
        tenant=tenant,
        secret_value=SECRET,
        name="payments",
        system="Payments",
        owner=people["security"],
        base_url="https://payments.example.com/api",
    )

    assert made.secret_ciphertext and SECRET not in made.secret_ciphertext
    assert secrets.reveal(made) == SECRET
    [payload] = _changes("tools.connection_created")
    assert payload["secret_location"] == "encrypted value (stored)"
    assert SECRET not in str(list(chained().values_list("body", flat=True)))


def test_naming_an_environment_variable_replaces_a_stored_secret_and_clearing_removes_both(tenant, people):
    made = connection(tenant, people["security"], secret=SECRET)

    services.save_connection(by=people["security"], connection=made, secret_env_var="PAYMENTS_TOKEN")
    made.refresh_from_db()
    assert (made.secret_env_var, made.secret_ciphertext) == ("PAYMENTS_TOKEN", "")
    assert _changes("tools.connection_changed")[-1]["secret_location"] == "environment variable PAYMENTS_TOKEN"

    services.save_connection(by=people["security"], connection=made, clear_secret=True, auth_kind="none")
    made.refresh_from_db()
    assert not made.has_secret


def test_saving_a_connection_unchanged_writes_no_history_and_no_event(tenant, people):
    made = connection(tenant, people["security"])
    history_rows = made.history.count()

    services.save_connection(by=people["security"], connection=made, system=made.system)

    assert made.history.count() == history_rows
    assert _changes("tools.connection_changed") == []


def test_only_security_or_admin_of_the_tenant_may_change_the_registry(tenant, other_tenant, people):
    tool = builtin_tool(tenant)
    globex_security = people["nobody"]
    Role.objects.get(tenant=other_tenant, kind="security").memberships.create(user=globex_security)

    for by in (people["knowledge_owner"], people["support_lead"], globex_security):
        with pytest.raises(PermissionDenied):
            services.create_grant(by=by, role=Role.objects.get(tenant=tenant, kind="support_agent"), tool=tool)
        with pytest.raises(PermissionDenied):
            services.save_tool(by=by, tool=tool, risk_tier="high")
    assert tool.grants.count() == 0


def test_a_second_active_grant_for_the_same_role_and_tool_is_refused(tenant, people):
    tool = builtin_tool(tenant)
    role = Role.objects.get(tenant=tenant, kind="support_agent")
    services.create_grant(by=people["security"], role=role, tool=tool, effect=Effect.ALLOW)

    with pytest.raises(ValidationError, match="already holds a grant"):
        services.create_grant(by=people["security"], role=role, tool=tool, effect=Effect.DENY)


def test_revoking_needs_a_reason_keeps_the_row_and_records_who_and_why(tenant, people):
    made = grant(builtin_tool(tenant), "support_agent")

    with pytest.raises(ValidationError, match="Say why"):
        services.revoke_grant(grant=made, by=people["security"], reason="  ")
    services.revoke_grant(grant=made, by=people["security"], reason="Unused for 30 days")

    made.refresh_from_db()
    assert made.revoked_at and made.revoked_by == people["security"] and not made.is_active
    [payload] = _changes("tools.grant_revoked")
    assert payload["grant"]["tool"] == "noop.ping" and payload["why"] == "Unused for 30 days"
    with pytest.raises(ValidationError, match="already revoked"):
        services.revoke_grant(grant=made, by=people["security"], reason="again")


def test_revoking_a_connection_records_the_tools_it_blocks(tenant, people):
    made = connection(tenant, people["security"])
    http_tool(tenant, made)
    services.revoke_connection(connection=made, by=people["security"], reason="credential leaked")

    made.refresh_from_db()
    assert made.status == ConnectionStatus.REVOKED
    [payload] = _changes("tools.connection_revoked")
    assert payload["tools_affected"] == ["refund.issue"] and payload["why"] == "credential leaked"
    with pytest.raises(ValidationError, match="already revoked"):
        services.revoke_connection(connection=made, by=people["security"], reason="again")


def test_taking_a_tool_off_an_allowlist_twice_is_a_clear_error(tenant, people, agent):
    allowance = services.allow_tool(agent=agent, tool=builtin_tool(tenant), by=people["security"])

    services.disallow_tool(allowance=allowance, by=people["security"], reason="not needed")
    with pytest.raises(ValidationError, match="no longer on the agent's allowlist"):
        services.disallow_tool(allowance=allowance, by=people["security"], reason="not needed")
    assert not AgentTool.objects.exists()
    assert [payload["why"] for payload in _changes("tools.agent_tool_removed")] == ["not needed"]
