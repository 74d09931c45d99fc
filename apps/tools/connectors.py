"""Connectors: what actually runs when the gateway lets a call through.

Two kinds. Built-in tools are Python functions registered by name (``register_builtin``;
this app's own are in builtins.py). The HTTP connector calls a connected system: method
and path from the tool, arguments as path parameters and a JSON body (or query string),
the credential from the tool's connection, the call's idempotency key as the
``Idempotency-Key`` header so the system can drop a repeat. When the turn is for a
customer, ``X-Controlplane-Subject`` names them and ``X-Controlplane-Subject-Verified``
says ("true" or "false") whether their identity was checked, so the system can answer
with that customer's data only; a turn with no customer sends neither header.

Only the gateway calls ``run``. The credential is revealed here, used for the one request
and scrubbed from anything that comes back, so it cannot reach the model or a record.
"""

import base64
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from . import secrets
from .choices import AuthKind, ConnectorKind
from .models import PATH_FIELD

SCRUBBED = "[connection secret]"
_MAX_ERROR_TEXT = 300


class ConnectorError(Exception):
    """The connector could not complete the call. ``message`` is safe to show the model
    and record; ``timed_out`` and ``sent`` say whether the system may have acted."""

    def __init__(self, message: str, *, timed_out: bool = False, sent: bool = False):
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out
        self.sent = sent


@dataclass(frozen=True)
class Invocation:
    """One call a connector runs: the tool, validated arguments, who it runs for."""

    tool: object  # a Tool, with its connection loaded
    arguments: dict
    context: object  # the gateway's TurnContext
    roles: frozenset[str]
    idempotency_key: str


@dataclass(frozen=True)
class Builtin:
    function: Callable[[Invocation], dict]
    schema: dict  # what the function needs; calls are checked against it as well as the tool's


_builtins: dict[str, Builtin] = {}


def register_builtin(name: str, function: Callable[[Invocation], dict], schema: dict) -> None:
    """Make ``function`` available as the built-in tool ``name`` (call from AppConfig.ready)."""
    _builtins[name] = Builtin(function, schema)


def builtin_names() -> list[str]:
    return sorted(_builtins)


def builtin_schema(name: str) -> dict | None:
    builtin = _builtins.get(name)
    return builtin.schema if builtin else None


def run(invocation: Invocation) -> dict:
    """Execute the call; returns the result as a JSON-able dict or raises ConnectorError."""
    tool = invocation.tool
    if tool.connector == ConnectorKind.BUILTIN:
        builtin = _builtins.get(tool.builtin)
        if builtin is None:
            raise ConnectorError(f"The built-in tool {tool.builtin!r} is not installed.")
        return builtin.function(invocation)
    return call_http(invocation)


# --- HTTP ---------------------------------------------------------------------------------

_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client() -> httpx.Client:
    """One pooled client per process (created after a fork, never shared across one)."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        with _clients_lock:
            client = _clients.get(pid)
            if client is None:
                client = httpx.Client(follow_redirects=False, headers={"User-Agent": "controlplane-tool-gateway"})
                _clients[pid] = client
    return client


def _auth_headers(connection, secret: str) -> dict[str, str]:
    if connection.auth_kind == AuthKind.NONE or not secret:
        return {}
    if connection.auth_kind == AuthKind.BEARER:
        return {"Authorization": f"Bearer {secret}"}
    if connection.auth_kind == AuthKind.API_KEY_HEADER:
        return {connection.auth_header: secret}
    if connection.auth_kind == AuthKind.BASIC:
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    raise ConnectorError(f"Unknown authentication kind {connection.auth_kind!r}.")


# Visible ASCII, spaces allowed inside but not at either end. httpx encodes header values
# as ASCII (anything else, latin-1 included, raises UnicodeEncodeError before a byte is
# sent) and h11 refuses CR, LF, NUL and surrounding whitespace; checking first turns all of
# those into one clear refusal instead of a protocol error, and no value can ever add a
# header of its own.
_HEADER_SAFE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def _subject_headers(context, system: str) -> dict[str, str]:
    """Who the turn is for, so the system scopes the call to that customer; nothing when
    the turn has no customer. A subject that cannot be a header value refuses the call
    (unquoted: it is exactly the kind of text that must not travel further)."""
    subject = context.subject
    if not subject:
        return {}
    if not _HEADER_SAFE.fullmatch(subject):
        raise ConnectorError(
            f"The customer reference of this turn cannot be sent to {system}: "
            "it may hold only printable ASCII characters, with no space at either end. Nothing was sent."
        )
    return {
        "X-Controlplane-Subject": subject,
        "X-Controlplane-Subject-Verified": "true" if context.subject_verified else "false",
    }


def _path_segment(arguments: dict, name: str) -> str:
    """One path argument, URL-quoted. Empty, "." and ".." are refused: an HTTP client
    resolves dot segments, so they would point the call at another path of the system."""
    value = arguments.get(name)
    text = "" if value is None else str(value)
    if text.strip() in ("", ".", ".."):
        raise ConnectorError(f"The path argument {name} must name something (not empty, '.' or '..').")
    return quote(text, safe="")


def build_request(tool, arguments: dict) -> tuple[str, str, dict | None, dict | None]:
    """(method, url, query, json body) for an HTTP tool: arguments named in the path fill
    it (URL-quoted), the others go in the query for GET/DELETE or the JSON body otherwise."""
    in_path = set(PATH_FIELD.findall(tool.path_template))
    path = PATH_FIELD.sub(lambda match: _path_segment(arguments, match.group(1)), tool.path_template)
    rest = {name: value for name, value in arguments.items() if name not in in_path}
    url = tool.connection.base_url.rstrip("/") + path
    method = tool.http_method or "GET"
    if method in ("GET", "DELETE"):
        return method, url, rest or None, None
    return method, url, None, rest


def scrub(value, secret: str):
    """``value`` with every occurrence of ``secret`` (and of its base64 form, as a basic-auth
    header carries it) replaced: a system that echoes its credential must not pass it on."""
    if not secret:
        return value
    if isinstance(value, str):
        encoded = base64.b64encode(secret.encode()).decode()
        return value.replace(secret, SCRUBBED).replace(encoded, SCRUBBED)
    if isinstance(value, dict):
        return {scrub(key, secret): scrub(item, secret) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item, secret) for item in value]
    return value


def call_http(invocation: Invocation) -> dict:
    tool = invocation.tool
    connection = tool.connection
    subject_headers = _subject_headers(invocation.context, connection.system)
    try:
        secret = secrets.reveal(connection)
    except secrets.SecretUnavailable as error:
        raise ConnectorError(f"{connection.system}: {error}") from None
    method, url, query, body = build_request(tool, invocation.arguments)
    headers = {
        "Accept": "application/json",
        "Idempotency-Key": invocation.idempotency_key,
        **subject_headers,
        **_auth_headers(connection, secret),
    }
    try:
        response = _client().request(
            method, url, params=query, json=body, headers=headers, timeout=tool.timeout_seconds
        )
    except (httpx.ConnectTimeout, httpx.PoolTimeout):
        raise ConnectorError(f"{connection.system} could not be reached within {tool.timeout_seconds:g} s.") from None
    except httpx.TimeoutException:  # sent, no answer: the system may have acted
        raise ConnectorError(
            f"{connection.system} did not answer within {tool.timeout_seconds:g} s.", timed_out=True, sent=True
        ) from None
    except httpx.HTTPError as error:
        raise ConnectorError(
            scrub(f"{connection.system} could not be reached: {type(error).__name__}.", secret)
        ) from None
    try:
        payload = response.json()
    except ValueError:
        payload = {"text": response.text[:_MAX_ERROR_TEXT]}
    if not response.is_success:  # redirects are not followed: a 3xx is not a result either
        detail = (
            payload.get("error") or payload.get("detail") or payload.get("text") if isinstance(payload, dict) else ""
        )
        message = f"{connection.system} answered {response.status_code}"
        if detail:
            message += f": {str(detail)[:_MAX_ERROR_TEXT]}"
        raise ConnectorError(scrub(message, secret), sent=True)
    if not isinstance(payload, dict):
        payload = {"items": payload}
    return scrub(payload, secret)
