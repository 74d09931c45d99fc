"""The HTTP connector end to end: ``gateway.invoke`` calls the sandbox systems served by a
live server, with the connection's bearer token, once per idempotency key, telling the
system which customer the turn is for; failures and timeouts come back as failed calls
(audited, not retried); a revoked connection is never called; and the token reaches no
record."""

import json
import socket
import threading
import time

import pytest

from apps.agents.choices import RolloutMode
from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalRequest
from apps.audit.models import AuditEvent
from apps.sandbox.demo import seed_sandbox
from apps.sandbox.models import SandboxRefund
from apps.tools import connectors, gateway, services
from apps.tools.choices import Outcome, RiskTier
from apps.tools.models import ToolCall
from tests.audit.helpers import chained

from .factories import AnsweringServer, allow, connection, context_for, grant, http_tool

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_cache")]

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "pattern": "^[A-Z]-[0-9]{4}$"}},
    "required": ["order_id"],
    "additionalProperties": False,
}


@pytest.fixture
def token(tenant):
    return seed_sandbox(tenant)


@pytest.fixture
def autonomous(agent):
    agent.rollout_mode = RolloutMode.AUTONOMOUS
    agent.save(update_fields=["rollout_mode"])
    return agent


@pytest.fixture
def sandbox(tenant, people, token, live_server):
    return connection(tenant, people["security"], secret=token, base_url=f"{live_server.url}/sandbox/{tenant.slug}")


def _lookup_tool(tenant, conn, agent, **fields):
    tool = http_tool(
        tenant,
        conn,
        name=fields.pop("name", "order.lookup"),
        description="Look up an order",
        http_method="GET",
        path_template="/orders/{order_id}",
        argument_schema=fields.pop("argument_schema", ORDER_SCHEMA),
        risk_tier=RiskTier.LOW,
        writes=False,
        reversible=True,
        amount_field="",
        **fields,
    )
    grant(tool, "support_agent")
    allow(agent, tool)
    return tool


def _refund_tool(tenant, conn, agent, risk_tier=RiskTier.MEDIUM):
    tool = http_tool(tenant, conn, risk_tier=risk_tier)
    grant(tool, "support_agent")
    allow(agent, tool)
    return tool


@pytest.fixture
def context(autonomous, people):
    return context_for(autonomous, people["support_agent"], subject="C-1001", subject_verified=True)


class SilentServer:
    """A TCP server that accepts connections and never answers, counting them."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self):
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self.held.append(client)

    def close(self):
        self.stopping.set()
        self.thread.join()
        for client in self.held:
            client.close()
        self.listener.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


def test_a_get_tool_returns_the_order(tenant, sandbox, autonomous, context):
    _lookup_tool(tenant, sandbox, autonomous)
    result = gateway.invoke(context, "order.lookup", {"order_id": "A-1042"})
    assert result.outcome == Outcome.EXECUTED, result.message
    assert result.data["sandbox"] is True
    assert result.data["order"]["order_id"] == "A-1042"
    assert result.data["order"]["total"] == "89.00"
    call = ToolCall.objects.get(pk=result.call_id)
    assert call.outcome == Outcome.EXECUTED
    assert call.result["order"]["order_id"] == "A-1042"
    assert [event.event_type for event in chained(tool="order.lookup")] == ["tool.requested", "tool.executed"]


def test_a_refund_runs_once_per_idempotency_key(tenant, sandbox, autonomous, context):
    _refund_tool(tenant, sandbox, autonomous)
    arguments = {"order_id": "A-1042", "amount": 25, "reason": "Arrived damaged"}
    first = gateway.invoke(context, "refund.issue", arguments, idempotency_key="turn-1:refund")
    assert first.outcome == Outcome.EXECUTED, first.message
    assert first.data["refund"]["amount"] == "25.00"
    again = gateway.invoke(context, "refund.issue", arguments, idempotency_key="turn-1:refund")
    assert again.replayed is True
    assert again.outcome == Outcome.EXECUTED
    assert again.call_id == first.call_id
    assert again.data == ToolCall.objects.get(pk=first.call_id).result
    refund = SandboxRefund.objects.get(tenant=tenant)
    assert refund.idempotency_key == "turn-1:refund"  # the gateway's key reached the system as a header
    assert ToolCall.objects.count() == 1


def test_an_approved_high_risk_refund_executes_once(tenant, sandbox, autonomous, context):
    _refund_tool(tenant, sandbox, autonomous, risk_tier=RiskTier.HIGH)
    arguments = {"order_id": "A-1042", "amount": 89, "reason": "Arrived damaged"}
    asked = gateway.invoke(context, "refund.issue", arguments, idempotency_key="turn-2:refund")
    assert asked.outcome == Outcome.NEEDS_APPROVAL
    assert not SandboxRefund.objects.exists()
    ApprovalRequest.objects.filter(pk=asked.approval_request_id).update(status=ApprovalStatus.APPROVED)
    result = gateway.execute_approved(asked.approval_request_id)
    assert result.outcome == Outcome.EXECUTED, result.message
    assert SandboxRefund.objects.get(tenant=tenant).amount == 89
    again = gateway.execute_approved(asked.approval_request_id)
    assert again.outcome != Outcome.EXECUTED
    assert SandboxRefund.objects.count() == 1
    assert ApprovalRequest.objects.get(pk=asked.approval_request_id).status == ApprovalStatus.EXECUTED


def test_a_connector_error_is_a_failed_call_with_a_readable_message(tenant, sandbox, autonomous, context):
    _lookup_tool(tenant, sandbox, autonomous)
    result = gateway.invoke(context, "order.lookup", {"order_id": "A-9999"})
    assert result.outcome == Outcome.FAILED
    assert result.message == "Orders (sandbox) answered 404: There is no order A-9999 in this sandbox."
    assert result.for_model() == {"status": "failed", "message": result.message}
    assert ToolCall.objects.get(pk=result.call_id).error == result.message
    failed = chained(event_type="tool.failed", tool="order.lookup").get()
    assert json.loads(failed.body)["payload"]["error"] == result.message


def test_a_timeout_fails_the_call_and_is_not_retried(tenant, people, token, autonomous, context, silent_server):
    slow = connection(tenant, people["security"], "slow-orders", secret=token, base_url=silent_server.url)
    _lookup_tool(tenant, slow, autonomous, timeout_seconds=0.5)
    started = time.monotonic()
    result = gateway.invoke(context, "order.lookup", {"order_id": "A-1042"})
    assert result.outcome == Outcome.FAILED
    assert result.message == "Orders (sandbox) did not answer within 0.5 s."
    assert time.monotonic() - started < 5
    time.sleep(0.3)  # room for a retry, were there one
    assert silent_server.accepted == 1
    assert chained(event_type="tool.failed", tool="order.lookup").count() == 1


def test_a_revoked_connection_is_denied_before_any_request(tenant, people, sandbox, autonomous, context, monkeypatch):
    _refund_tool(tenant, sandbox, autonomous)
    services.revoke_connection(connection=sandbox, by=people["security"], reason="Token leaked in a ticket")
    requests = []
    real_call_http = connectors.call_http
    monkeypatch.setattr(
        connectors, "call_http", lambda invocation: requests.append(invocation) or real_call_http(invocation)
    )
    result = gateway.invoke(context, "refund.issue", {"order_id": "A-1042", "amount": 10, "reason": "Damaged"})
    assert result.outcome == Outcome.DENIED
    assert result.reason_code == "connection_revoked"
    assert requests == []
    assert not SandboxRefund.objects.exists()


def test_the_token_reaches_no_record(tenant, people, sandbox, token, autonomous, context):
    _lookup_tool(tenant, sandbox, autonomous)
    _refund_tool(tenant, sandbox, autonomous, risk_tier=RiskTier.HIGH)
    results = [
        gateway.invoke(context, "order.lookup", {"order_id": "A-1042"}),
        gateway.invoke(context, "order.lookup", {"order_id": "A-9999"}),
        gateway.invoke(context, "refund.issue", {"order_id": "A-1042", "amount": 5, "reason": "Damaged"}),
    ]
    ApprovalRequest.objects.update(status=ApprovalStatus.APPROVED)
    results.append(gateway.execute_approved(results[-1].approval_request_id))
    assert results[-1].outcome == Outcome.EXECUTED
    services.save_connection(by=people["security"], connection=sandbox, secret_value=token, reason="Rotated")

    assert token not in sandbox.secret_ciphertext
    for result in results:
        assert token not in json.dumps([result.for_model(), result.message], default=str)
    assert token not in json.dumps(list(ToolCall.objects.values()), default=str)
    assert token not in json.dumps(list(ApprovalRequest.objects.values()), default=str)
    bodies = list(chained().values_list("body", flat=True))
    assert len(bodies) >= 8  # requests, executions, the failure, the approval, the connection changes
    assert all(token not in body for body in bodies)
    assert AuditEvent.objects.filter(body__contains=token).count() == 0


def test_a_dot_segment_path_argument_is_refused_before_any_request(tenant, sandbox, autonomous, context, monkeypatch):
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
        "additionalProperties": False,
    }
    _lookup_tool(tenant, sandbox, autonomous, argument_schema=schema)
    sent = []
    monkeypatch.setattr(connectors._client(), "request", lambda *args, **kwargs: sent.append(args))

    for value in ("..", ".", " "):
        result = gateway.invoke(context, "order.lookup", {"order_id": value})

        assert result.outcome == Outcome.FAILED
        assert "must name something" in result.message
    assert sent == []


class RedirectingServer:
    """An HTTP server that answers every request with a redirect."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Redirect(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_a_redirect_is_a_failed_call_not_a_result(tenant, people, token, autonomous, context):
    server = RedirectingServer()
    try:
        redirecting = connection(tenant, people["security"], name="redirecting", secret=token, base_url=server.url)
        _lookup_tool(tenant, redirecting, autonomous)

        result = gateway.invoke(context, "order.lookup", {"order_id": "A-1042"})
    finally:
        server.server.shutdown()

    assert result.outcome == Outcome.FAILED
    assert "answered 302" in result.message


# --- Who the call is for --------------------------------------------------------------------


@pytest.fixture
def recording(tenant, people, token, autonomous):
    server = AnsweringServer()
    recorded = connection(tenant, people["security"], name="recorded", secret=token, base_url=server.url)
    _lookup_tool(tenant, recorded, autonomous)
    yield server
    server.server.shutdown()


@pytest.mark.parametrize(("verified", "header"), [(True, "true"), (False, "false")])
def test_the_turns_customer_is_sent_with_the_call(autonomous, people, recording, verified, header):
    context = context_for(autonomous, people["support_agent"], subject="C-1001", subject_verified=verified)

    result = gateway.invoke(context, "order.lookup", {"order_id": "A-1042"})

    assert result.outcome == Outcome.EXECUTED, result.message
    [headers] = recording.headers
    assert headers["X-Controlplane-Subject"] == "C-1001"
    assert headers["X-Controlplane-Subject-Verified"] == header


def test_a_turn_without_a_customer_sends_no_subject_headers(autonomous, people, recording):
    context = context_for(autonomous, people["support_agent"], channel="internal")

    result = gateway.invoke(context, "order.lookup", {"order_id": "A-1042"})

    assert result.outcome == Outcome.EXECUTED, result.message
    [headers] = recording.headers
    assert not {name.lower() for name in headers} & {"x-controlplane-subject", "x-controlplane-subject-verified"}


# Left to httpx, CR, LF, NUL and surrounding whitespace fail in h11 as a LocalProtocolError
# (so "could not be reached"), and anything outside ASCII, latin-1 included, as a
# UnicodeEncodeError (not an httpx error at all); each must be one clear refusal instead,
# before anything is sent.
@pytest.mark.parametrize(
    "subject",
    [
        "C-1001\r\nX-Controlplane-Subject: C-1002",
        "C-1001\nX-Evil: 1",
        "C-1001\x00",
        " C-1001",
        "C-1001\t",
        "Zoë",
        "顧客-1",
    ],
)
def test_a_subject_that_cannot_be_a_header_is_refused_before_any_request(autonomous, people, recording, subject):
    context = context_for(autonomous, people["support_agent"], subject=subject, subject_verified=True)

    result = gateway.invoke(context, "order.lookup", {"order_id": "A-1042"})

    assert result.outcome == Outcome.FAILED
    assert result.message == (
        "The customer reference of this turn cannot be sent to Orders (sandbox): "
        "it may hold only printable ASCII characters, with no space at either end. Nothing was sent."
    )
    assert subject.strip() not in result.message
    assert recording.headers == []
    assert ToolCall.objects.get(pk=result.call_id).error == result.message


def test_the_sandbox_refunds_no_order_of_another_customer(tenant, sandbox, autonomous, context):
    _refund_tool(tenant, sandbox, autonomous)

    result = gateway.invoke(context, "refund.issue", {"order_id": "A-1050", "amount": 10, "reason": "Broke"})

    assert result.outcome == Outcome.FAILED
    assert result.message == "Orders (sandbox) answered 404: There is no order A-1050 in this sandbox."
    assert not SandboxRefund.objects.exists()
