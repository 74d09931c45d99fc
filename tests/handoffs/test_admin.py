"""The queue admin: tenant admins and support leads configure their tenants' queues; every
save goes through ``services.save_queue`` (history with who, the audit event); roles and
escalation targets of another tenant are never offered nor accepted. Handoffs are read-only
in the admin: they are worked on /handoffs/."""

import pytest
from django.urls import reverse

from apps.accounts.models import Role
from apps.handoffs.models import HandoffQueue
from tests.accounts.factories import member
from tests.audit.helpers import chained

from .factories import make_handoff

pytestmark = pytest.mark.django_db


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:handoffs_{model}_{view}", args=args)


def form_data(tenant, **fields) -> dict:
    data = {
        "tenant": tenant.pk,
        "name": "Escalations",
        "description": "",
        "sla_minutes": 20,
        "reason_codes": '["step_limit", "cost_limit"]',
        "topics": "[]",
        "is_active": "on",
    }
    data.update(fields)
    return {key: value for key, value in data.items() if value is not None}


def test_a_tenant_admin_adds_a_queue_through_the_service(client, tenant, admin):
    lead_role = Role.objects.get(tenant=tenant, kind="support_lead")
    client.force_login(admin)

    response = client.post(url("handoffqueue", "add"), form_data(tenant, roles=[lead_role.pk]))

    assert response.status_code == 302, response.context["adminform"].form.errors
    queue = HandoffQueue.objects.get(name="Escalations")
    assert list(queue.roles.all()) == [lead_role]
    assert queue.reason_codes == ["step_limit", "cost_limit"]
    assert {row.history_user for row in queue.history.all()} == {admin}
    assert chained(event_type="config.changed", reason="handoffs.queue_created").count() == 1


def test_making_a_queue_the_default_in_the_admin_moves_the_default(client, tenant, admin, queues):
    client.force_login(admin)

    response = client.post(url("handoffqueue", "add"), form_data(tenant, is_default="on"))

    assert response.status_code == 302
    assert list(HandoffQueue.objects.filter(is_default=True).values_list("name", flat=True)) == ["Escalations"]


def test_roles_of_another_tenant_are_neither_offered_nor_accepted(client, tenant, other_tenant, admin):
    foreign = Role.objects.get(tenant=other_tenant, kind="support_lead")
    client.force_login(admin)

    page = client.get(url("handoffqueue", "add"))
    assert foreign.pk not in [role.pk for role in page.context["adminform"].form.fields["roles"].queryset]
    response = client.post(url("handoffqueue", "add"), form_data(tenant, roles=[foreign.pk]))

    assert response.status_code == 200
    assert "roles" in response.context["adminform"].form.errors
    assert not HandoffQueue.objects.exists()


def test_a_bad_list_is_a_form_error(client, tenant, admin):
    client.force_login(admin)

    response = client.post(url("handoffqueue", "add"), form_data(tenant, reason_codes='["Not A Code"]'))

    assert response.status_code == 200
    assert "Not a reason code" in str(response.context["adminform"].form.errors["reason_codes"])


def test_people_see_only_their_tenants_queues(client, other_tenant, superuser, queues, lead):
    from apps.handoffs import services

    services.save_queue(by=superuser, tenant=other_tenant, name="Globex tier 2")
    client.force_login(lead)

    response = client.get(url("handoffqueue", "changelist"))

    assert response.status_code == 200
    names = [queue.name for queue in response.context["cl"].result_list]
    assert sorted(names) == ["Billing & refunds", "Legal & compliance", "Support tier 2"]
    globex_admin = member(other_tenant, "admin", username="globex.admin")
    client.force_login(globex_admin)
    assert client.get(url("handoffqueue", "change", queues["legal"].pk)).status_code == 302  # not theirs


def test_handoffs_are_read_only_in_the_admin(client, tenant, lead, queues):
    handoff = make_handoff(tenant)
    client.force_login(lead)

    assert client.get(url("handoff", "changelist")).status_code == 200
    page = client.get(url("handoff", "change", handoff.pk))
    assert page.status_code == 200
    assert reverse("handoffs:detail", args=[handoff.pk]) in page.content.decode()
    assert client.get(url("handoff", "add")).status_code == 403
