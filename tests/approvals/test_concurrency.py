"""Approvers clicking at the same moment, on PostgreSQL: eight support leads (each thread
with its own database connection) decide one request released together by a barrier, and
each runs what follows its commit in its own thread, as an eager worker would. Whatever
the timing, the action runs exactly once and the quorum is counted right."""

import pytest
from django.core.exceptions import ValidationError

from apps.approvals import services
from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalDecision, ApprovalRequest
from apps.tools.gateway import execute_approved
from controlplane.celery import app as celery_app
from tests.accounts.factories import member
from tests.audit.helpers import chained
from tests.concurrency import all_at_once

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

APPROVERS = 8


@pytest.fixture
def leads(tenant):
    return [member(tenant, "support_lead", username=f"lead.{number}") for number in range(APPROVERS)]


@pytest.fixture
def in_process_tasks():
    """What follows each commit (the execution) runs in the deciding thread."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def approve_as(user, request_id):
    return lambda: services.decide(request_id, by=user, approve=True, comment=f"ok from {user.username}")


def test_eight_approvers_at_once_one_approval_one_execution(ask, leads, executions, in_process_tasks):
    request = ask(amount=40)

    results = all_at_once([approve_as(lead, request.pk) for lead in leads])

    refused = [result for result in results if isinstance(result, ValidationError)]
    assert len(refused) == APPROVERS - 1, results
    assert all("no longer be decided" in str(error) for error in refused)
    assert ApprovalDecision.objects.filter(request_id=request.pk).count() == 1
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.EXECUTED
    assert len(executions) == 1
    assert chained(event_type="tool.executed").count() == 1


def test_eight_approvers_at_once_above_the_threshold_two_approvals_one_execution(
    ask, leads, executions, in_process_tasks
):
    request = ask(amount=900)
    assert request.approvals_required == 2

    results = all_at_once([approve_as(lead, request.pk) for lead in leads])

    refused = [result for result in results if isinstance(result, Exception)]
    assert len(refused) == APPROVERS - 2, results
    assert all(isinstance(error, ValidationError) for error in refused)
    decisions = ApprovalDecision.objects.filter(request_id=request.pk)
    assert decisions.count() == 2 and len({decision.approver_id for decision in decisions}) == 2
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.EXECUTED
    assert len(executions) == 1


def test_a_redelivered_execution_racing_the_first_runs_nothing(ask, lead, executions):
    request = ask(amount=40)
    services.decide(request.pk, by=lead, approve=True)  # not eager here: nothing ran yet
    assert not executions

    results = all_at_once([lambda: execute_approved(request.pk) for _ in range(APPROVERS)])

    assert sum(1 for result in results if result.executed) == 1, results
    assert len(executions) == 1
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.EXECUTED
