"""/api/v1/ for evaluation: the same rules as the services, another tenant's rows not found,
bad input a 400 that names the field and saves nothing."""

import pytest

from apps.agents.choices import RolloutMode
from apps.evals import services
from apps.evals.models import EvalCase, EvalRun, RolloutGate, TurnReview
from apps.runtime.choices import Decision
from apps.runtime.models import Turn
from apps.runtime.services import open_conversation, submit_turn
from tests.evals.conftest import case

SUITES = "/api/v1/eval-suites/"
CASES = "/api/v1/eval-cases/"
RUNS = "/api/v1/eval-runs/"
REVIEWS = "/api/v1/turn-reviews/"


@pytest.fixture
def as_owner(api_client, owner):
    api_client.force_authenticate(owner)
    return api_client


@pytest.fixture
def filled(suite, owner, returns_source):
    case(suite, owner, name="returns", input="How many days to return an item?", must_cite=[returns_source.pk])
    return suite


def production_turn(agent, actor, text, django_capture_on_commit_callbacks) -> Turn:
    conversation = open_conversation(actor=actor, agent=agent, channel="web_chat")
    with django_capture_on_commit_callbacks(execute=True):
        turn = submit_turn(conversation=conversation, actor=actor, text=text)
    return Turn.objects.get(pk=turn.pk)


def test_run_a_suite_and_read_its_results(as_owner, filled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = as_owner.post(f"{SUITES}{filled.pk}/run/", {}, format="json")
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "queued"

    run = as_owner.get(f"{RUNS}{response.json()['id']}/").json()
    assert (run["status"], run["case_count"], run["passed_count"], run["trigger"]) == ("completed", 1, 1, "api")
    assert run["results"][0]["case_name"] == "returns"
    assert run["results"][0]["status"] == "passed"
    listed = as_owner.get(SUITES).json()
    assert [(row["name"], row["case_count"]) for row in listed["results"]] == [("Support regression", 1)]


def test_another_tenants_rows_are_not_found_and_runs_refused_without_permission(
    api_client, filled, people, other_tenant, run
):
    done = run(filled)
    outsider = people["nobody"]
    api_client.force_authenticate(outsider)
    assert api_client.get(f"{SUITES}{filled.pk}/").status_code == 404
    assert api_client.get(f"{RUNS}{done.pk}/").status_code == 404
    assert api_client.get(SUITES).json()["results"] == []
    api_client.force_authenticate(people["compliance"])  # may read, may not run
    assert api_client.get(f"{RUNS}{done.pk}/").status_code == 200
    response = api_client.post(f"{SUITES}{filled.pk}/run/", {}, format="json")
    assert response.status_code == 403
    assert EvalRun.objects.count() == 1


def test_a_bad_case_is_a_400_naming_the_field(as_owner, suite):
    response = as_owner.post(
        CASES,
        {"suite": suite.pk, "name": "x", "category": "grounding", "input": "Hi", "must_cite": ["Returns"]},
        format="json",
    )
    assert response.status_code == 400
    assert "must_cite" in response.json()
    response = as_owner.post(
        CASES, {"suite": suite.pk, "name": "x", "category": "grounding", "input": "Hi"}, format="json"
    )
    assert response.status_code == 400
    assert "Say what must happen" in str(response.json())
    assert not EvalCase.objects.exists()
    response = as_owner.post(
        CASES,
        {"suite": suite.pk, "name": "x", "category": "grounding", "input": "Hi", "expected_decision": "answer"},
        format="json",
    )
    assert response.status_code == 201, response.json()


def test_an_incident_becomes_a_case_through_the_api(
    as_owner, suite, agent, people, django_capture_on_commit_callbacks, api_client
):
    turn = production_turn(agent, people["support_agent"], "Talk to a real person", django_capture_on_commit_callbacks)
    response = as_owner.post(
        f"{CASES}from-turn/",
        {"turn": str(turn.pk), "suite": suite.pk, "overrides": {"name": "Person please"}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["category"], body["expected_decision"], body["source_turn"]) == (
        "Person please",
        "escalation",
        Decision.ESCALATE,
        str(turn.pk),
    )
    response = as_owner.post(
        f"{CASES}from-turn/", {"turn": str(turn.pk), "suite": suite.pk, "overrides": {"colour": "red"}}, format="json"
    )
    assert response.status_code == 400


def test_compare_two_runs(as_owner, filled, agent, owner, run):
    first = run(filled)
    case(filled, owner, name="person", category="escalation", input="A real person", expected_decision="escalate")
    second = run(filled)
    response = as_owner.get(f"{RUNS}{second.pk}/compare/", {"with": first.pk})
    assert response.status_code == 200
    assert [(row["name"], row["change"]) for row in response.json()] == [("person", "new"), ("returns", "unchanged")]
    assert as_owner.get(f"{RUNS}{second.pk}/compare/").status_code == 400


def test_record_a_review_and_the_reviewer_is_always_the_caller(
    api_client, agent, people, django_capture_on_commit_callbacks
):
    lead = people["support_lead"]
    turn = production_turn(agent, lead, "How do returns work?", django_capture_on_commit_callbacks)
    api_client.force_authenticate(lead)
    response = api_client.post(
        REVIEWS, {"turn": str(turn.pk), "kind": "shadow", "human_action": turn.decision}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["agreed"], response.json()["reviewed_by"]) == (True, "support.lead")
    response = api_client.post(REVIEWS, {"turn": str(turn.pk), "kind": "suggestion"}, format="json")
    assert response.status_code == 400
    assert "accepted" in response.json()
    api_client.force_authenticate(people["nobody"])
    response = api_client.post(REVIEWS, {"turn": str(turn.pk), "kind": "post_hoc", "correct": True}, format="json")
    assert response.status_code == 404
    assert TurnReview.objects.count() == 1


def test_read_and_edit_the_gates(as_owner, agent, api_client, people):
    response = as_owner.get(f"/api/v1/rollout-gates/{agent.pk}/")
    assert response.status_code == 200
    gates = {row["target_mode"]: row for row in response.json()}
    assert list(gates) == ["suggest", "assist", "approval", "autonomous"]
    assert (gates["suggest"]["metric"], gates["suggest"]["threshold"], gates["suggest"]["edited"]) == (
        "shadow_agreement",
        "0.9500",
        False,
    )
    assert gates["assist"]["passed"] is False
    assert "Evaluation run on" in gates["assist"]["checks"][0]["what"]

    response = as_owner.patch(
        f"/api/v1/rollout-gates/{agent.pk}/",
        {"target_mode": RolloutMode.ASSIST, "threshold": "0.85", "reason": "Higher bar for refunds"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert RolloutGate.objects.get(agent=agent, target_mode="assist").threshold == services.Decimal("0.85")
    response = as_owner.patch(
        f"/api/v1/rollout-gates/{agent.pk}/",
        {"target_mode": "assist", "threshold": "1.5", "reason": "x"},
        format="json",
    )
    assert response.status_code == 400
    api_client.force_authenticate(people["support_lead"])
    response = api_client.patch(
        f"/api/v1/rollout-gates/{agent.pk}/",
        {"target_mode": "assist", "threshold": "0.1", "reason": "x"},
        format="json",
    )
    assert response.status_code == 403
    assert RolloutGate.objects.get(agent=agent, target_mode="assist").threshold == services.Decimal("0.85")


def test_promotion_through_the_agents_api_says_what_fell_short(as_owner, agent):
    agent.rollout_mode = RolloutMode.SHADOW
    agent.save()
    response = as_owner.patch(f"/api/v1/agents/{agent.pk}/", {"rollout_mode": "suggest"}, format="json")
    assert response.status_code == 400
    messages = response.json()["rollout_mode"]
    assert messages[0] == "Support Assistant may not move from shadow to suggest yet."
    assert any("Agreement with humans on reviewed shadow traffic" in message for message in messages)
