"""Tools, connections, grants and allowlists for tests, made directly (the services that
make them in production are tested on their own)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from apps.accounts.models import Role
from apps.tools import secrets
from apps.tools.builtins import SCHEMAS
from apps.tools.choices import AuthKind, ConnectorKind, Effect, RiskTier
from apps.tools.gateway import TurnContext
from apps.tools.models import AgentTool, Connection, Grant, Tool

REFUND_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^[A-Z0-9-]{3,20}$"},
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "reason": {"type": "string", "maxLength": 500},
    },
    "required": ["order_id", "amount"],
    "additionalProperties": False,
}


def connection(tenant, owner, name="sandbox-orders", *, secret="", env_var="", **fields) -> Connection:
    made = Connection(
        tenant=tenant,
        name=name,
        system=fields.pop("system", "Orders (sandbox)"),
        owner=owner,
        auth_kind=fields.pop("auth_kind", AuthKind.BEARER),
        base_url=fields.pop("base_url", "http://127.0.0.1:9/sandbox/acme"),
        secret_env_var=env_var,
        secret_ciphertext=secrets.encrypt(secret) if secret else "",
        **fields,
    )
    made.full_clean()
    made.save()
    return made


def builtin_tool(tenant, name="noop.ping", builtin="noop", **fields) -> Tool:
    fields.setdefault("argument_schema", SCHEMAS[builtin])
    tool = Tool(
        tenant=tenant,
        name=name,
        description=fields.pop("description", f"{name} for tests"),
        connector=ConnectorKind.BUILTIN,
        builtin=builtin,
        **fields,
    )
    tool.full_clean()
    tool.save()
    return tool


def http_tool(tenant, connection, name="refund.issue", **fields) -> Tool:
    tool = Tool(
        tenant=tenant,
        name=name,
        description=fields.pop("description", "Refund an order"),
        connector=ConnectorKind.HTTP,
        connection=connection,
        http_method=fields.pop("http_method", "POST"),
        path_template=fields.pop("path_template", "/refunds"),
        argument_schema=fields.pop("argument_schema", REFUND_SCHEMA),
        risk_tier=fields.pop("risk_tier", RiskTier.HIGH),
        writes=fields.pop("writes", True),
        reversible=fields.pop("reversible", False),
        amount_field=fields.pop("amount_field", "amount"),
        **fields,
    )
    tool.full_clean()
    tool.save()
    return tool


def grant(tool, kind, effect=Effect.ALLOW, **conditions) -> Grant:
    role = Role.objects.get(tenant=tool.tenant, kind=kind)
    made = Grant(tenant=tool.tenant, role=role, tool=tool, effect=effect, **conditions)
    made.full_clean()
    made.save()
    return made


def allow(agent, *tools) -> None:
    for tool in tools:
        AgentTool.objects.get_or_create(agent=agent, tool=tool)


def context_for(agent, user, **fields) -> TurnContext:
    return TurnContext(tenant_id=agent.tenant_id, agent_id=agent.pk, user_id=user.pk, **fields)


class AnsweringServer:
    """A connected system for tests: answers every request with 200 and a JSON object, and
    keeps what it received: ``received`` (method, path) and ``headers`` (one dict each)."""

    def __init__(self):
        received, headers = self.received, self.headers = [], []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                received.append((self.command, self.path))
                headers.append(dict(self.headers))
                body = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
