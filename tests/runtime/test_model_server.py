"""The scripted model server, driven through the real openai SDK: if these pass, tests that point the
runtime at it exercise the SDK's own parsing, retries and timeouts."""

import json
import threading
import time

import openai
import pytest

from tests.model_server import (
    SCRIPT_EXHAUSTED_MESSAGE,
    ScriptedModelServer,
    call,
    delay,
    error,
    garbage,
    reply,
    tool_calls,
)

MESSAGES = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Where is order 42?"},
]


def client_for(server: ScriptedModelServer, *, max_retries: int = 0, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=max_retries, timeout=timeout)


def ask(client: openai.OpenAI, content: str = "Where is order 42?"):
    return client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": content}])


def test_reply_returns_content_and_usage_and_records_the_request(model_server):
    model_server.enqueue(reply("It ships tomorrow.", prompt_tokens=12, completion_tokens=5))

    completion = client_for(model_server).chat.completions.create(model="gpt-test", messages=MESSAGES)

    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "It ships tomorrow."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-test"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 5)
    assert completion.usage.total_tokens == 17
    assert model_server.requests == [{"model": "gpt-test", "messages": MESSAGES}]
    assert model_server.headers[0]["authorization"] == "Bearer test-key"
    assert model_server.remaining == 0


def test_token_counts_default_to_a_deterministic_estimate(model_server):
    model_server.enqueue(reply("x" * 40))

    usage = ask(client_for(model_server), "y" * 80).usage

    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (20, 10, 30)


def test_tool_call_arguments_round_trip_and_malformed_ones_arrive_verbatim(model_server):
    model_server.enqueue(
        tool_calls(call("lookup_order", {"order_id": 42}, id="call_lookup")),
        tool_calls(call("lookup_order", '{"order_id": ')),
    )
    client = client_for(model_server)

    first = ask(client).choices[0]
    assert first.finish_reason == "tool_calls"
    assert first.message.content is None
    [lookup] = first.message.tool_calls
    assert (lookup.id, lookup.type, lookup.function.name) == ("call_lookup", "function", "lookup_order")
    assert json.loads(lookup.function.arguments) == {"order_id": 42}

    malformed = ask(client).choices[0].message.tool_calls[0]
    assert malformed.id.startswith("call_")
    assert malformed.function.arguments == '{"order_id": '


def test_the_sdk_retries_a_scripted_500_and_gets_the_next_item(model_server):
    model_server.enqueue(error(500), reply("recovered"))

    completion = ask(client_for(model_server, max_retries=1))

    assert completion.choices[0].message.content == "recovered"
    assert len(model_server.requests) == 2


def test_a_scripted_500_without_retries_raises_internal_server_error(model_server):
    model_server.enqueue(error(500, "upstream fell over"), reply("never served"))

    with pytest.raises(openai.InternalServerError) as raised:
        ask(client_for(model_server, max_retries=0))

    assert raised.value.status_code == 500
    assert "upstream fell over" in str(raised.value)
    assert model_server.remaining == 1


def test_a_delay_longer_than_the_timeout_raises_and_the_server_keeps_serving(model_server):
    model_server.enqueue(delay(1.0, reply("late")), reply("next"))
    client = client_for(model_server, max_retries=0, timeout=0.2)

    with pytest.raises(openai.APITimeoutError):
        ask(client)

    # The delayed handler is still asleep on its own thread; the next request is answered meanwhile.
    assert ask(client).choices[0].message.content == "next"


def test_a_garbage_body_raises_a_json_decode_error(model_server):
    model_server.enqueue(garbage())

    # The server says Content-Type: application/json, so openai 3.51 calls response.json() directly
    # and the decoder's error escapes unwrapped: not an openai.APIError, and not retried.
    with pytest.raises(json.JSONDecodeError):
        ask(client_for(model_server, max_retries=2))

    assert len(model_server.requests) == 1


def test_the_responder_answers_when_the_script_is_empty_after_the_latency():
    latency = 0.2

    def echo_last_message(body):
        return reply(f"echo: {body['messages'][-1]['content']}")

    with ScriptedModelServer(responder=echo_last_message, latency=latency) as server:
        started = time.monotonic()
        completion = ask(client_for(server), "ping")
        elapsed = time.monotonic() - started

    assert completion.choices[0].message.content == "echo: ping"
    assert elapsed >= latency


def test_an_exhausted_script_answers_500(model_server):
    with pytest.raises(openai.InternalServerError) as raised:
        ask(client_for(model_server, max_retries=0))

    assert SCRIPT_EXHAUSTED_MESSAGE in str(raised.value)


def test_concurrent_requests_each_get_a_distinct_item(model_server):
    request_count = 8
    model_server.enqueue(*(reply(f"answer {number}") for number in range(request_count)))
    client = client_for(model_server)
    answers: list[str] = []
    answers_lock = threading.Lock()
    start_together = threading.Barrier(request_count)

    def ask_once():
        start_together.wait()
        content = ask(client).choices[0].message.content
        with answers_lock:
            answers.append(content)

    threads = [threading.Thread(target=ask_once) for _ in range(request_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(answers) == sorted(f"answer {number}" for number in range(request_count))
    assert len(model_server.requests) == request_count
    assert model_server.remaining == 0


def test_models_are_listed_and_unknown_paths_are_404_without_consuming_the_script(model_server):
    model_server.enqueue(reply("kept"))
    client = client_for(model_server)

    assert [model.id for model in client.models.list()] == ["scripted-model"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gpt-test", input="hello")

    assert model_server.remaining == 1
    assert ask(client).choices[0].message.content == "kept"
    assert [model.id for model in client.models.list()] == ["gpt-test"]
