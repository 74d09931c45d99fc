"""Guardrail policy documents: validation names the line and the reason, layers merge, and
the version round trip (edit, rejected edit, activate, roll back) is recorded."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from apps.guardrails import services
from apps.guardrails.models import GuardrailPolicy
from apps.guardrails.policy import PolicyError, compile_layers, default_document, merge, validate

from ..accounts.factories import member
from ..audit.helpers import chained

pytestmark = pytest.mark.django_db

STRICTER_LOCKOUT = "lockout:\n  kills: 1\n"


def test_the_shipped_default_is_complete_and_valid():
    data = validate(default_document(), complete=True)
    assert data["lockout"] == {"kills": 3, "window_minutes": 10, "lockout_minutes": 30}
    assert data["input"]["injection"]["rules"], "the default policy ships injection rules"


@pytest.mark.parametrize(
    ("document", "line", "reason"),
    [
        ("input:\n  max_chars: 10\n   pii: {}\n", 3, "not valid YAML"),
        ("lockout:\n  kills: 2\n  windw_minutes: 5\n", 3, "lockout.windw_minutes: unknown key"),
        ("lockout:\n  kills: many\n", 2, "lockout.kills: must be a whole number of at least 1"),
        (
            "input:\n  injection:\n    rules:\n      - id: bad\n        pattern: '(unclosed'\n        action: kill\n",
            5,
            "does not compile",
        ),
        (
            "input:\n  injection:\n    rules:\n      - id: x\n        pattern: a\n        action: explode\n",
            6,
            "must be one of kill, refuse, flag",
        ),
        ("output:\n  redact: [card, passport]\n", 2, "must be one of card, ssn"),
        ("- just\n- a list\n", 1, "must be a mapping"),
        ("tools:\n  arguments:\n    card: flag\n", 3, "tools.arguments.card: must be one of refuse, allow"),
        ("tools:\n  allow_in_arguments:\n    payout.create: [pin]\n", 3, "must be one of card, ssn"),
        ("tools:\n  allow_in_arguments: [iban]\n", 2, "must map tool names to lists of kinds"),
        ("tools:\n  allow_in_arguments:\n    Not A Tool: [iban]\n", 3, "is not a tool name"),
    ],
)
def test_an_invalid_document_is_refused_with_its_line_and_reason(document, line, reason):
    with pytest.raises(PolicyError) as error:
        validate(document)
    assert error.value.line == line
    assert reason in str(error.value)
    assert str(error.value).startswith(f"line {line}:")


def test_which_personal_data_a_tools_arguments_may_carry():
    default = compile_layers(())
    assert default.refused_in_arguments("crm.note_add") == {"card", "ssn", "iban", "secret"}

    layered = compile_layers(
        (("tenant", "tools:\n  arguments:\n    phone: refuse\n  allow_in_arguments:\n    payout.create: [iban]\n"),)
    )

    assert layered.refused_in_arguments("payout.create") == {"card", "ssn", "secret", "phone"}
    assert layered.refused_in_arguments("crm.note_add") == {"card", "ssn", "iban", "secret", "phone"}


def test_layers_merge_mappings_and_replace_lists():
    base = {"lockout": {"kills": 3, "window_minutes": 10}, "output": {"redact": ["card", "ssn"]}}
    merged = merge(base, {"lockout": {"kills": 1}, "output": {"redact": ["email"]}})
    assert merged == {"lockout": {"kills": 1, "window_minutes": 10}, "output": {"redact": ["email"]}}


def test_round_trip_edit_reject_activate_and_roll_back(tenant, other_tenant, people):
    security = people["security"]
    assert services.effective_policy(tenant.pk).lockout["kills"] == 3

    first = services.save_policy(document=STRICTER_LOCKOUT, by=security, tenant=tenant, change_note="Stricter")
    assert (first.version, first.is_active) == (1, False)
    assert services.effective_policy(tenant.pk).lockout["kills"] == 3  # saved is not active

    services.activate_policy(policy=first, by=security, reason="Injection wave")
    assert services.effective_policy(tenant.pk).lockout["kills"] == 1
    assert services.effective_policy(other_tenant.pk).lockout["kills"] == 3  # another tenant is untouched

    with pytest.raises(ValidationError) as error:
        services.save_policy(document="lockout:\n  kills: 0\n", by=security, tenant=tenant)
    assert "line 2" in error.value.message_dict["document"][0]
    assert GuardrailPolicy.objects.filter(tenant=tenant).count() == 1
    assert services.effective_policy(tenant.pk).lockout["kills"] == 1  # the active version stays active

    second = services.save_policy(document="lockout:\n  kills: 2\n", by=security, tenant=tenant)
    services.activate_policy(policy=second, by=security)
    assert services.effective_policy(tenant.pk).lockout["kills"] == 2
    services.activate_policy(policy=first, by=security, reason="Roll back")
    assert services.effective_policy(tenant.pk).lockout["kills"] == 1
    assert list(GuardrailPolicy.objects.filter(is_active=True).values_list("version", flat=True)) == [1]

    events = list(chained(reason="guardrails.policy_activated"))
    assert [event.data["payload"]["changes"]["active_version"] for event in events] == [[None, 1], [1, 2], [2, 1]]
    assert "-  kills: 2\n+  kills: 1" in events[-1].data["payload"]["diff"]
    assert events[-1].actor_name == security.username


def test_an_agent_policy_applies_to_that_agent_only(agent, people):
    policy = services.save_policy(document=STRICTER_LOCKOUT, by=people["security"], agent=agent)
    services.activate_policy(policy=policy, by=people["security"])
    assert policy.scope == f"agent:{agent.pk}" and policy.tenant_id == agent.tenant_id
    assert services.effective_policy(agent.tenant_id, agent.pk).lockout["kills"] == 1
    assert services.effective_policy(agent.tenant_id).lockout["kills"] == 3


def test_only_a_platform_administrator_changes_the_global_policy(people, superuser):
    with pytest.raises(PermissionDenied):
        services.save_policy(document=STRICTER_LOCKOUT, by=people["security"])
    policy = services.save_policy(document=STRICTER_LOCKOUT, by=superuser)
    with pytest.raises(PermissionDenied):
        services.activate_policy(policy=policy, by=people["admin"])


def test_security_of_one_tenant_cannot_touch_anothers_policy(other_tenant, people):
    with pytest.raises(PermissionDenied):
        services.save_policy(document=STRICTER_LOCKOUT, by=people["security"], tenant=other_tenant)
    outsider_policy = services.save_policy(
        document=STRICTER_LOCKOUT, by=member(other_tenant, "security", username="globex.sec"), tenant=other_tenant
    )
    with pytest.raises(PermissionDenied):
        services.activate_policy(policy=outsider_policy, by=people["security"])


def test_support_roles_cannot_edit_policies(tenant, people):
    for kind in ("support_agent", "support_lead", "knowledge_owner", "compliance"):
        with pytest.raises(PermissionDenied):
            services.save_policy(document=STRICTER_LOCKOUT, by=people[kind], tenant=tenant)


def test_a_saved_version_never_changes(tenant, people):
    policy = services.save_policy(document=STRICTER_LOCKOUT, by=people["security"], tenant=tenant)
    policy.document = "lockout:\n  kills: 9\n"
    with pytest.raises(ValidationError):
        policy.save()
