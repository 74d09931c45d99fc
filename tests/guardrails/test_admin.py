"""The guardrail admin: security edits its tenant's policy in a textarea, sees errors with
line numbers, activates and rolls back; lifts lockouts; never sees another tenant's."""

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from apps.guardrails import services
from apps.guardrails.models import GuardrailPolicy, Lockout

from ..accounts.factories import member

pytestmark = pytest.mark.django_db

POLICIES = reverse("admin:guardrails_guardrailpolicy_changelist")
ADD = reverse("admin:guardrails_guardrailpolicy_add")
LOCKOUTS = reverse("admin:guardrails_lockout_changelist")


def test_the_add_form_starts_from_the_policy_in_force(client, people):
    client.force_login(people["security"])
    response = client.get(ADD)
    assert response.status_code == 200
    assert "lockout:" in response.context["adminform"].form.initial["document"]


def test_an_invalid_document_is_shown_with_its_line_and_nothing_is_saved(client, tenant, people):
    client.force_login(people["security"])
    response = client.post(ADD, {"tenant": tenant.pk, "document": "lockout:\n  kills: -1\n", "change_note": "x"})
    assert response.status_code == 200
    assert "line 2: lockout.kills: must be a whole number of at least 1" in response.content.decode()
    assert not GuardrailPolicy.objects.exists()


def test_save_then_activate_from_the_list_and_see_the_diff(client, tenant, people):
    client.force_login(people["security"])
    response = client.post(ADD, {"tenant": tenant.pk, "document": "lockout:\n  kills: 1\n", "change_note": "strict"})
    assert response.status_code == 302
    first = GuardrailPolicy.objects.get()
    assert not first.is_active

    client.post(POLICIES, {"action": "activate_selected", ACTION_CHECKBOX_NAME: [first.pk]})
    first.refresh_from_db()
    assert first.is_active
    assert services.effective_policy(tenant.pk).lockout["kills"] == 1

    second = services.save_policy(document="lockout:\n  kills: 5\n", by=people["security"], tenant=tenant)
    page = client.get(reverse("admin:guardrails_guardrailpolicy_change", args=[second.pk])).content.decode()
    assert "-  kills: 1" in page and "+  kills: 5" in page


def test_security_sees_only_its_tenants_policies_and_cannot_activate_anothers(client, other_tenant, people):
    outsider = member(other_tenant, "security", username="globex.security")
    theirs = services.save_policy(document="lockout:\n  kills: 1\n", by=outsider, tenant=other_tenant)
    client.force_login(people["security"])
    assert theirs.pk not in {row.pk for row in client.get(POLICIES).context["cl"].result_list}
    client.post(POLICIES, {"action": "activate_selected", ACTION_CHECKBOX_NAME: [theirs.pk]})
    theirs.refresh_from_db()
    assert not theirs.is_active


def test_a_tenant_admin_cannot_save_a_global_policy(client, people):
    client.force_login(people["security"])
    response = client.post(ADD, {"document": "lockout:\n  kills: 1\n"})
    assert response.status_code == 200
    assert "platform administrator" in response.content.decode()
    assert not GuardrailPolicy.objects.exists()


def test_support_agents_have_no_guardrail_pages(client, people):
    client.force_login(people["support_agent"])
    assert client.get(POLICIES).status_code in (302, 403)


def test_security_lifts_a_lockout_from_the_list(client, tenant, people):
    lockout = Lockout.objects.create(
        tenant=tenant, subject="cust-9", reason="3 kills", expires_at=timezone.now() + timedelta(minutes=30)
    )
    client.force_login(people["security"])
    assert lockout in client.get(LOCKOUTS).context["cl"].result_list
    client.post(LOCKOUTS, {"action": "lift_selected", ACTION_CHECKBOX_NAME: [lockout.pk]})
    lockout.refresh_from_db()
    assert lockout.lifted_by == people["security"] and not lockout.in_force
