"""The admin for evaluation: suites, cases and gates are written through the services (with
history and a reason), bad input is a form error that saves nothing, runs and reviews are
records, and another tenant's rows are not shown."""

from django.urls import reverse

from apps.agents.choices import RolloutMode
from apps.evals.models import EvalCase, EvalSuite, RolloutGate
from tests.audit.helpers import chained
from tests.evals.conftest import case


def add_case(client, suite, **overrides):
    data = {
        "suite": str(suite.pk),
        "name": "Returns window",
        "category": "grounding",
        "input": "How many days to return?",
        "channel": "web_chat",
        "subject": "{}",
        "simulated_tool_results": "{}",
        "expected_decision": "answer",
        "is_active": "on",
        **dict.fromkeys(("must_cite", "must_not_cite", "must_call", "must_not_call"), "[]"),
        **dict.fromkeys(("must_execute", "must_not_execute", "must_include", "must_not_include"), "[]"),
        **overrides,
    }
    return client.post(reverse("admin:evals_evalcase_add"), data)


def test_an_owner_adds_a_case_and_the_history_names_them(client, suite, owner):
    client.force_login(owner)
    response = add_case(client, suite, must_include='["30 days"]')
    assert response.status_code == 302, response.context["adminform"].form.errors
    made = EvalCase.objects.get(name="Returns window")
    assert (made.must_include, made.created_by) == (["30 days"], owner)
    assert made.history.first().history_user == owner


def test_a_bad_case_shows_the_error_and_saves_nothing(client, suite, owner):
    client.force_login(owner)
    response = add_case(client, suite, must_cite='["Returns policy"]')
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["must_cite"] == ["Enter a list of source ids, e.g. [12, 14]."]
    response = add_case(client, suite, expected_decision="")
    assert "Say what must happen" in str(response.context["adminform"].form.errors)
    assert not EvalCase.objects.exists()


def test_a_gate_is_edited_with_a_reason_and_audited(client, agent, owner):
    client.force_login(owner)
    data = {
        "agent": str(agent.pk),
        "target_mode": RolloutMode.ASSIST,
        "metric": "suggestion_acceptance",
        "threshold": "0.9",
        "min_reviews": "50",
        "min_pass_rate": "0.95",
    }
    response = client.post(reverse("admin:evals_rolloutgate_add"), data)
    assert response.status_code == 200
    assert "reason" in response.context["adminform"].form.errors
    response = client.post(reverse("admin:evals_rolloutgate_add"), {**data, "threshold": "2"})
    assert "threshold" in response.context["adminform"].form.errors
    assert not RolloutGate.objects.exists()

    response = client.post(reverse("admin:evals_rolloutgate_add"), {**data, "reason": "Refunds need more proof"})
    assert response.status_code == 302
    gate = RolloutGate.objects.get()
    assert (gate.min_reviews, gate.history.first().history_user) == (50, owner)
    (event,) = chained(event_type="config.changed", reason="eval.gate_changed")
    assert event.data["payload"]["why"] == "Refunds need more proof"


def test_runs_and_reviews_are_records_and_other_tenants_rows_are_hidden(
    client, suite, owner, run, returns_source, other_agent, people
):
    case(suite, owner, name="returns", input="How many days to return?", must_cite=[returns_source.pk])
    done = run(suite)
    foreign = EvalSuite.objects.create(
        tenant=other_agent.tenant, name="Globex suite", agent=other_agent, run_as=other_agent.owner
    )
    client.force_login(owner)
    assert client.get(reverse("admin:evals_evalrun_add")).status_code == 403
    page = client.get(reverse("admin:evals_evalrun_change", args=[done.pk]))
    assert page.status_code == 200 and b"returns" in page.content
    listing = client.get(reverse("admin:evals_evalsuite_changelist")).content.decode()
    assert "Support regression" in listing and "Globex suite" not in listing
    assert client.get(reverse("admin:evals_evalsuite_change", args=[foreign.pk])).status_code in (302, 403, 404)
    assert client.get(reverse("admin:evals_turnreview_add")).status_code == 403
    client.force_login(people["knowledge_owner"])
    assert client.get(reverse("admin:evals_evalsuite_changelist")).status_code == 403


def test_the_run_action_queues_a_run_for_the_suites_agent(
    client, suite, owner, returns_source, people, django_capture_on_commit_callbacks
):
    case(suite, owner, name="returns", input="How many days to return?", must_cite=[returns_source.pk])
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:evals_evalsuite_changelist"),
            {"action": "run_selected", "_selected_action": [str(suite.pk)]},
            follow=True,
        )
    assert "queued" in response.content.decode()
    assert suite.runs.get().status == "completed"  # the worker (in process here) ran it after the commit
    client.force_login(people["compliance"])  # reads suites, may not run them
    response = client.post(
        reverse("admin:evals_evalsuite_changelist"),
        {"action": "run_selected", "_selected_action": [str(suite.pk)]},
        follow=True,
    )
    assert suite.runs.count() == 1


def test_a_turns_admin_page_makes_an_incident_into_a_case(client, suite, owner, people, run, returns_source):
    from apps.runtime.models import Conversation, Turn

    real = Conversation.objects.create(tenant=suite.tenant, agent=suite.agent, actor=people["support_agent"])
    turn = Turn.objects.create(
        conversation=real, tenant=suite.tenant, agent=suite.agent, actor=people["support_agent"], number=1, input="?"
    )
    case(suite, owner, name="returns", input="How many days to return?", must_cite=[returns_source.pk])
    evaluation_turn = run(suite).results.get().turn
    client.force_login(owner)

    page = client.get(reverse("admin:runtime_turn_change", args=[turn.pk])).content.decode()
    assert reverse("evals:case_from_turn", args=[turn.pk]) in page
    page = client.get(reverse("admin:runtime_turn_change", args=[evaluation_turn.pk])).content.decode()
    assert "An evaluation turn: its case is its test." in page
