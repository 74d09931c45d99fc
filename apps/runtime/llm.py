"""The models a turn can call: any OpenAI-compatible Chat Completions endpoint through the
``openai`` SDK, or the offline model when the agent has no provider (the embedded default).

Both take the same ``ModelRequest`` and answer a ``ModelReply``; a failure after the SDK's
own retries is a ``ModelError`` the decision layer turns into a fallback, never an invented
answer. Tool names are dotted (``order.lookup``) but function names may not contain dots,
so each turn maps them both ways (``function_names``).
"""

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import openai

from apps.knowledge.text import query_terms

OFFLINE_MODEL_NAME = "offline"
OFFLINE_LABEL = "Offline model (no model provider configured): answers only by quoting approved sources."
_FUNCTION_NAME = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True)
class ToolCallRequest:
    id: str
    function: str  # the name the model used
    arguments: str  # JSON text as the model sent it: possibly malformed


@dataclass
class ModelReply:
    content: str
    tool_calls: list[ToolCallRequest]
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str = ""

    def assistant_message(self) -> dict:
        """The reply as the next request's history holds it."""
        message: dict = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.function, "arguments": call.arguments}}
                for call in self.tool_calls
            ]
        return message


@dataclass
class OfferedTool:
    name: str  # the registry's dotted name
    function: str  # the name the model sees
    description: str
    schema: dict
    risk_tier: str


@dataclass
class ModelRequest:
    messages: list[dict]
    tools: list[OfferedTool] = field(default_factory=list)
    # What the offline model works from (a real model reads the messages).
    question: str = ""
    passages: list = field(default_factory=list)  # RetrievedPassage, labelled S1.. in order

    def tool_definitions(self) -> list[dict]:
        return [
            {
                "type": "function",
                "function": {"name": tool.function, "description": tool.description, "parameters": tool.schema},
            }
            for tool in self.tools
        ]


class ModelError(Exception):
    """The model could not answer: ``kind`` is timeout, unavailable, rejected, bad_response
    or configuration."""

    def __init__(self, kind: str, message: str, *, latency_ms: float = 0.0):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.latency_ms = latency_ms


def function_names(tool_names) -> dict[str, str]:
    """Dotted tool name -> a function name the Chat Completions API accepts, unique per turn."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for name in tool_names:
        function = _FUNCTION_NAME.sub("_", name.replace(".", "__"))[:60]
        candidate, suffix = function, 2
        while candidate in taken:
            candidate, suffix = f"{function}_{suffix}", suffix + 1
        names[name] = candidate
        taken.add(candidate)
    return names


# --- OpenAI-compatible providers -------------------------------------------------------------

_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(base_url: str, api_key: str, timeout: float, max_retries: int) -> openai.OpenAI:
    """One client per endpoint and settings per process, so its connection pool is reused."""
    key = (base_url, api_key, timeout, max_retries)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = openai.OpenAI(
                base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
            )
        return client


class ChatCompletionsModel:
    """A model behind an OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama,
    LiteLLM). The API key is read from the provider's environment variable here, at call
    time, and goes nowhere else."""

    offline = False

    def __init__(self, provider, model_name: str):
        self.provider = provider
        self.model_name = model_name
        self.label = f"{provider.name} / {model_name}"

    def _api_key(self) -> str:
        variable = self.provider.api_key_env_var
        if not variable:
            return "none"  # local servers (vLLM, Ollama) take any key
        value = os.environ.get(variable, "")
        if not value:
            raise ModelError("configuration", f"The API key variable {variable} is not set on this worker.")
        return value

    def complete(self, request: ModelRequest) -> ModelReply:
        client = _client(
            self.provider.base_url, self._api_key(), float(self.provider.timeout_seconds), self.provider.max_retries
        )
        arguments: dict = {"model": self.model_name, "messages": request.messages}
        if request.tools:
            arguments["tools"] = request.tool_definitions()
        started = time.perf_counter()
        try:
            completion = client.chat.completions.create(**arguments)
        except (openai.OpenAIError, ValueError) as error:
            raise self._error(error, _ms(started)) from None
        latency = _ms(started)
        if not getattr(completion, "choices", None):
            raise ModelError("bad_response", "The model's answer held no choices.", latency_ms=latency)
        choice = completion.choices[0]
        message = choice.message
        calls = [
            ToolCallRequest(call.id, call.function.name, call.function.arguments or "")
            for call in (message.tool_calls or [])
            if getattr(call, "function", None) is not None
        ]
        usage = completion.usage
        return ModelReply(
            content=message.content or "",
            tool_calls=calls,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency,
            finish_reason=choice.finish_reason or "",
        )

    def _error(self, error: Exception, latency_ms: float) -> ModelError:
        """What went wrong, in words for the trace (never the key, never the raw body)."""
        if isinstance(error, openai.APITimeoutError):
            why = f"The model did not answer within {self.provider.timeout_seconds} s."
            return ModelError("timeout", why, latency_ms=latency_ms)
        if isinstance(error, openai.APIStatusError):
            kind = "unavailable" if error.status_code >= 500 or error.status_code == 429 else "rejected"
            return ModelError(kind, f"The model endpoint answered {error.status_code}.", latency_ms=latency_ms)
        if isinstance(error, openai.APIConnectionError):
            return ModelError("unavailable", "The model endpoint could not be reached.", latency_ms=latency_ms)
        why = f"The model's answer could not be read ({type(error).__name__})."
        return ModelError("bad_response", why, latency_ms=latency_ms)

    def cost(self, reply: ModelReply) -> Decimal:
        million = Decimal(1_000_000)
        return (
            Decimal(reply.input_tokens) * self.provider.input_price_per_million
            + Decimal(reply.output_tokens) * self.provider.output_price_per_million
        ) / million


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# --- The offline model -----------------------------------------------------------------------

_IDENTIFIER = re.compile(r"\b[A-Z]{1,3}-\d{3,6}\b")
_NUMBER = re.compile(r"(?<![\w-])\d+(?:[.,]\d{1,2})?(?![\w-])")
MIN_TOOL_MATCH = 2  # description words the message must share with a tool before it is proposed


class OfflineModel:
    """What answers when no provider is configured. It does not generate text: it quotes
    the best eligible passage with its source, proposes a tool when the message clearly
    matches the tool's description and supplies its required arguments, reports a tool's
    result, and otherwise says it has no answer. Every reply says it is the offline model."""

    offline = True
    model_name = OFFLINE_MODEL_NAME
    label = "offline model"

    def complete(self, request: ModelRequest) -> ModelReply:
        started = time.perf_counter()
        last = request.messages[-1] if request.messages else {}
        if last.get("role") == "tool":
            reply = ModelReply(self._report_tool_results(request.messages), [])
        else:
            call = self._proposed_call(request)
            if call is not None:
                name = next(tool.name for tool in request.tools if tool.function == call.function)
                why = f"{OFFLINE_LABEL}\nThe message asks for what {name} does and gives its arguments."
                reply = ModelReply(why, [call], finish_reason="tool_calls")
            elif request.passages:
                best = request.passages[0]
                reply = ModelReply(f"{OFFLINE_LABEL}\nFrom “{best.source_title}” [S1]: {best.text}", [])
            else:
                reply = ModelReply(f"{OFFLINE_LABEL}\nI have no approved source that answers this.", [])
        reply.latency_ms = _ms(started)
        reply.finish_reason = reply.finish_reason or "stop"
        return reply

    def cost(self, reply: ModelReply) -> Decimal:
        return Decimal(0)

    def _proposed_call(self, request: ModelRequest) -> ToolCallRequest | None:
        words = set(query_terms(request.question))
        best, best_score = None, 0
        for tool in request.tools:
            described = set(query_terms(f"{tool.name.replace('.', ' ')} {tool.description}"))
            score = len(words & described)
            if score >= MIN_TOOL_MATCH and score > best_score:
                arguments = _arguments_from(request.question, tool.schema)
                if arguments is not None:
                    best, best_score = (tool, arguments), score
        if best is None:
            return None
        tool, arguments = best
        return ToolCallRequest(f"offline_{tool.function}", tool.function, json.dumps(arguments))

    @staticmethod
    def _report_tool_results(messages: list[dict]) -> str:
        results = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            try:
                answer = json.loads(message.get("content") or "{}")
            except ValueError:
                answer = {"status": "unknown", "message": message.get("content", "")}
            line = f"{answer.get('status', 'unknown')}: {answer.get('message') or ''}".strip()
            if answer.get("result") is not None:
                line += f" Result: {json.dumps(answer['result'], sort_keys=True)[:600]}"
            results.append(line)
        return f"{OFFLINE_LABEL}\n" + "\n".join(reversed(results))


def _arguments_from(text: str, schema: dict) -> dict | None:
    """The tool's required arguments, taken from the message where each is unambiguous
    (an identifier shaped like the schema's pattern, a number for a numeric field, the
    message itself for free text); None when any required one cannot be filled."""
    properties = schema.get("properties", {})
    identifiers = _IDENTIFIER.findall(text)
    numbers = [value for value in _NUMBER.findall(text) if not any(value in ident for ident in identifiers)]
    arguments: dict = {}
    for name in schema.get("required", []):
        spec = properties.get(name, {})
        kind = spec.get("type")
        if kind in ("number", "integer"):
            if len(numbers) != 1:
                return None
            value = numbers[0].replace(",", ".")
            arguments[name] = int(float(value)) if kind == "integer" else float(value)
        elif kind == "string" and spec.get("pattern"):
            pattern = re.compile(spec["pattern"])
            matching = [ident for ident in identifiers if pattern.fullmatch(ident)]
            if len(matching) != 1:
                return None
            arguments[name] = matching[0]
        elif kind == "string":
            arguments[name] = text.strip()[: spec.get("maxLength", 500)]
        else:
            return None
    return arguments
