"""A local OpenAI-compatible Chat Completions server that replays scripted responses.

Tests and benchmarks drive the real ``openai`` SDK against it, so retries, timeouts and response
parsing are the SDK's own rather than a mock's idea of them. Standard library only, and no Django,
so a benchmark script can import it with just the repository root on ``sys.path``.

    with ScriptedModelServer([reply("hello"), tool_calls(call("lookup", {"id": 7}))]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test-key")
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_MODEL = "scripted-model"
SCRIPT_EXHAUSTED_MESSAGE = "scripted model server: script exhausted"


# Script items: what the server answers one chat-completions request with.


@dataclass(frozen=True)
class Reply:
    content: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # already JSON text, or whatever verbatim text a test wants the client to receive
    id: str


@dataclass(frozen=True)
class ToolCallsReply:
    calls: tuple[ToolCall, ...]
    content: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True)
class ErrorReply:
    status: int
    message: str


@dataclass(frozen=True)
class DelayedReply:
    seconds: float
    then: ScriptItem


@dataclass(frozen=True)
class GarbageReply:
    body: str


ScriptItem = Reply | ToolCallsReply | ErrorReply | DelayedReply | GarbageReply
Responder = Callable[[dict], "ScriptItem | str | None"]


def reply(
    content: str,
    *,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    finish_reason: str = "stop",
) -> Reply:
    """An assistant message; token counts left as None are estimated from the request and content."""
    return Reply(content, prompt_tokens, completion_tokens, finish_reason)


def call(name: str, arguments: dict | str, *, id: str | None = None) -> ToolCall:
    """One tool call. A str is sent verbatim, so a test can hand the client malformed JSON."""
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(name, encoded, id or f"call_{uuid.uuid4().hex[:12]}")


def tool_calls(
    *calls: ToolCall,
    content: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> ToolCallsReply:
    """An assistant message asking for these tool calls (finish_reason "tool_calls")."""
    if not calls or not all(isinstance(each, ToolCall) for each in calls):
        raise TypeError("tool_calls() takes one or more call(...) items")
    return ToolCallsReply(tuple(calls), content, prompt_tokens, completion_tokens)


def error(status: int = 500, message: str = "scripted failure") -> ErrorReply:
    """An HTTP error with an OpenAI-style body; the SDK retries 408, 409, 429 and 5xx on its own."""
    return ErrorReply(status, message)


def delay(seconds: float, then: ScriptItem) -> DelayedReply:
    """Answer with ``then`` only after ``seconds``, so a client with a shorter timeout gives up first."""
    return DelayedReply(seconds, _checked(then))


def garbage(body: str = "not json") -> GarbageReply:
    """A 200 whose body is not JSON, to see how callers survive a broken upstream."""
    return GarbageReply(body)


def _checked(item: object) -> ScriptItem:
    """Refuse unknown items where they are scripted, not later inside a request thread."""
    if not isinstance(item, Reply | ToolCallsReply | ErrorReply | DelayedReply | GarbageReply):
        raise TypeError(f"not a script item: {item!r} (use reply, tool_calls, error, delay or garbage)")
    return item


# Rendering items into HTTP responses.


def _estimate_tokens(characters: int) -> int:
    """Roughly four characters a token, and never zero, so usage totals stay deterministic."""
    return max(1, characters // 4)


def _prompt_characters(body: dict) -> int:
    total = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            total += sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return total


def _completion(body: dict, message: dict, finish_reason: str, prompt: int | None, completion: int | None) -> dict:
    completion_characters = len(message.get("content") or "") + sum(
        len(each["function"]["name"]) + len(each["function"]["arguments"]) for each in message.get("tool_calls", ())
    )
    prompt_tokens = prompt if prompt is not None else _estimate_tokens(_prompt_characters(body))
    completion_tokens = completion if completion is not None else _estimate_tokens(completion_characters)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or DEFAULT_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error_body(status: int, message: str) -> dict:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "code": str(status), "param": None}}


def _render(item: ScriptItem, body: dict) -> tuple[int, bytes]:
    """The status and body for ``item``; a DelayedReply's sleep is done by the caller."""
    if isinstance(item, Reply):
        message = {"role": "assistant", "content": item.content}
        document = _completion(body, message, item.finish_reason, item.prompt_tokens, item.completion_tokens)
        return 200, json.dumps(document).encode()
    if isinstance(item, ToolCallsReply):
        message = {
            "role": "assistant",
            "content": item.content,
            "tool_calls": [
                {"id": each.id, "type": "function", "function": {"name": each.name, "arguments": each.arguments}}
                for each in item.calls
            ],
        }
        document = _completion(body, message, "tool_calls", item.prompt_tokens, item.completion_tokens)
        return 200, json.dumps(document).encode()
    if isinstance(item, ErrorReply):
        return item.status, json.dumps(_error_body(item.status, item.message)).encode()
    if isinstance(item, GarbageReply):
        return 200, item.body.encode()
    raise TypeError(f"cannot render {item!r}")


# The HTTP server.


class _ConnectionTrackingServer(ThreadingHTTPServer):
    """Keeps the accepted sockets so stop() can end idle keep-alive connections too: otherwise a
    client's pooled connection would still be answered by its handler thread after stop()."""

    daemon_threads = True
    # Do not join handler threads on close: one may sit in a scripted delay or an idle keep-alive read.
    block_on_close = False

    def __init__(self, address, handler_class, model_server: ScriptedModelServer):
        self.model_server = model_server
        self._open_sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()
        super().__init__(address, handler_class)

    def process_request(self, request, client_address):
        with self._sockets_lock:
            self._open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._sockets_lock:
            self._open_sockets.discard(request)
        super().shutdown_request(request)

    def end_open_connections(self) -> None:
        with self._sockets_lock:
            sockets, self._open_sockets = self._open_sockets, set()
        for each in sockets:
            # shutdown, not close: the handler thread still owns the descriptor and closes it itself.
            with contextlib.suppress(OSError):  # already closed by the client
                each.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):
        """A client that hung up (a timeout, a stopped test) is expected, not worth a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the real API does: httpx pools connections, and a benchmark should not pay a
    # TCP handshake per request that production would not.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK (~40 ms), so a "50 ms" model would answer in ~95 ms. Real API
    # servers set TCP_NODELAY too.
    disable_nagle_algorithm = True
    server: _ConnectionTrackingServer

    def log_message(self, format, *args):
        """Silent: request lines on stderr would bury test and benchmark output."""

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._send_json(200, self.server.model_server._models_document())
        else:
            self._send_not_found()

    def do_POST(self):
        raw_body = self._read_body()
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/chat/completions":
            self._send_not_found()
            return
        try:
            body = json.loads(raw_body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send_json(400, _error_body(400, "scripted model server: request body is not a JSON object"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, payload, delay_seconds = self.server.model_server._answer(body, headers)
        if delay_seconds:
            time.sleep(delay_seconds)
        self._send(status, payload)

    def _unknown_route(self):
        self._read_body()
        self._send_not_found()

    do_PUT = do_PATCH = do_DELETE = _unknown_route

    def _read_body(self) -> bytes:
        # Read the whole body even when it is not wanted, so the next request on this keep-alive
        # connection starts where it should.
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_not_found(self):
        self._send_json(404, _error_body(404, f"scripted model server: no route for {self.command} {self.path}"))

    def _send_json(self, status: int, document: dict):
        self._send(status, json.dumps(document).encode())

    def _send(self, status: int, payload: bytes):
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout was shorter than a scripted delay): nothing to tell it.
            self.close_connection = True


class ScriptedModelServer:
    """Answers each ``POST /v1/chat/completions`` with the next scripted item, else the responder's.

    ``requests`` and ``headers`` record every chat-completions request in arrival order, so tests can
    check what the client sent (messages, tools, model, Authorization)."""

    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        responder: Responder | None = None,
        latency: float = 0.0,
    ):
        self._script: deque[ScriptItem] = deque(_checked(item) for item in script)
        self._responder = responder
        self.latency = latency
        # One lock for taking a script item and recording its request: concurrent requests each get
        # a distinct item, and requests[i] is the request that consumed the i-th answer.
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._models_seen: dict[str, None] = {}  # insertion-ordered set
        self._http_server: _ConnectionTrackingServer | None = None
        self._serving_thread: threading.Thread | None = None

    def start(self) -> ScriptedModelServer:
        if self._http_server is not None:
            raise RuntimeError("scripted model server is already started")
        self._http_server = _ConnectionTrackingServer(("127.0.0.1", 0), _Handler, self)
        self._serving_thread = threading.Thread(
            # A short poll interval so stop() returns quickly (shutdown() waits for the next poll).
            target=self._http_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scripted-model-server:{self._http_server.server_address[1]}",
            daemon=True,
        )
        self._serving_thread.start()
        return self

    def stop(self) -> None:
        http_server, self._http_server = self._http_server, None
        if http_server is None:
            return
        http_server.shutdown()
        http_server.server_close()
        http_server.end_open_connections()
        self._serving_thread.join(timeout=5)
        self._serving_thread = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._http_server is None:
            raise RuntimeError("scripted model server is not started")
        host, port = self._http_server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def enqueue(self, *items: ScriptItem) -> None:
        checked = [_checked(item) for item in items]
        with self._lock:
            self._script.extend(checked)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def _answer(self, body: dict, headers: dict) -> tuple[int, bytes, float]:
        """Status, body and seconds to wait before sending, for one chat-completions request."""
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            if isinstance(body.get("model"), str):
                self._models_seen[body["model"]] = None
            item = self._script.popleft() if self._script else None
        if item is None and self._responder is not None:
            # Outside the lock: a benchmark's responder runs for many requests at once.
            try:
                answer = self._responder(body)
                item = reply(answer) if isinstance(answer, str) else (None if answer is None else _checked(answer))
            except Exception as exc:  # a broken responder must fail the request, not kill the server
                item = error(500, f"scripted model server: responder failed: {type(exc).__name__}: {exc}")
        if item is None:
            item = error(500, SCRIPT_EXHAUSTED_MESSAGE)
        wait = self.latency
        while isinstance(item, DelayedReply):
            wait += item.seconds
            item = item.then
        status, payload = _render(item, body)
        return status, payload, wait

    def _models_document(self) -> dict:
        with self._lock:
            names = list(self._models_seen) or [DEFAULT_MODEL]
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "scripted"} for name in names],
        }
