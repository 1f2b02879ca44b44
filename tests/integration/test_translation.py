"""Dialect translation end to end: the official SDKs of one dialect calling models served by an
upstream of the other, JSON and streaming, with a full tool-call round trip; errors, metering and
count_tokens on translated routes."""
import json
import time

import anthropic
import httpx
import openai
import pytest

from conftest import KEY_A, anthropic_headers, chat_body, claude_body, openai_headers, raw_http

WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
                     "required": ["location"]},
}
WEATHER_TOOL_OPENAI = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": WEATHER_TOOL_ANTHROPIC["input_schema"]}}


@pytest.fixture
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.url, api_key=KEY_A, timeout=10, max_retries=0)


@pytest.fixture
def oai(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY_A, timeout=10, max_retries=0)


# --- Anthropic SDK -> OpenAI-dialect upstream ---------------------------------------------------

def test_anthropic_sdk_calls_openai_model(claude, mock):
    # `user_profile_id` is the SDK's `anthropic-user-profile-id` header: it names the caller, and
    # no `anthropic-*` header means anything to OpenAI.
    m = claude.messages.create(model="gpt-5.5", max_tokens=100, system="Be brief.",
                               messages=[{"role": "user", "content": "Hello"}],
                               extra_headers={"anthropic-user-profile-id": "profile-123",
                                              "anthropic-beta": "prompt-caching-2024-07-31"})
    assert m.content[0].type == "text" and m.content[0].text == "Hello from the mock upstream!"
    assert m.stop_reason == "end_turn"
    assert m.model == "gpt-5.5"
    # OpenAI prompt_tokens 21 includes 5 cached: Anthropic input excludes them.
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (16, 5, 7)
    sent = mock.last()
    assert sent["path"] == "/v1/chat/completions"
    body = json.loads(sent["body"])
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["max_completion_tokens"] == 100
    headers = {k.lower() for k, _ in sent["headers"]}
    assert not [h for h in headers if h.startswith("anthropic-")], headers
    assert "x-api-key" not in headers


def test_anthropic_sdk_streams_from_openai_model(claude, mock):
    with claude.messages.stream(model="gpt-5.5", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello from the mock upstream!"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7
    assert json.loads(mock.last()["body"])["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("parallel", [False, True])
def test_anthropic_sdk_tool_round_trip_on_openai_model(claude, stream, parallel):
    headers = {"x-mock-parallel-tools": "1"} if parallel else {}
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kw = dict(model="gpt-5.5", max_tokens=200, tools=[WEATHER_TOOL_ANTHROPIC], extra_headers=headers)
    if stream:
        with claude.messages.stream(messages=messages, **kw) as s:
            first = s.get_final_message()
    else:
        first = claude.messages.create(messages=messages, **kw)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == (2 if parallel else 1)
    assert uses[0].name == "get_weather" and uses[0].input == {"location": "Paris", "unit": "c"}
    if parallel:
        assert uses[1].input == {"location": "Tokyo", "unit": "c"} and uses[0].id != uses[1].id
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": f"sunny {i}"}
                                              for i, u in enumerate(uses)]}]
    second = claude.messages.create(messages=messages, **kw)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text.startswith("The tool said: sunny")


# --- OpenAI SDK -> Anthropic-dialect upstream ---------------------------------------------------

def test_openai_sdk_calls_claude(oai, mock):
    r = oai.chat.completions.create(model="claude-sonnet-4-5-20250929",
                                    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content == "Hello from the mock upstream!"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "claude-sonnet-4-5-20250929"
    # Anthropic input 12 + cache write 3 + cache read 4 = OpenAI prompt 19, cached 4.
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.prompt_tokens_details.cached_tokens) == (19, 9, 4)
    sent = mock.last()
    assert sent["path"] == "/v1/messages"
    body = json.loads(sent["body"])
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert body["max_tokens"] == 64000     # the registry's max_output_tokens (the caller sent none)
    h = {k.lower(): v for k, v in sent["headers"]}
    assert h["anthropic-version"] == "2023-06-01" and "authorization" not in h


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_sdk_streams_from_claude(oai, include_usage):
    kw = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(oai.chat.completions.create(model="claude-sonnet-4-5-20250929", stream=True,
                                              messages=[{"role": "user", "content": "Hello"}], **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock upstream!"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage_chunks = [c for c in chunks if c.usage]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0].usage.prompt_tokens == 19
    else:
        assert usage_chunks == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("parallel", [False, True])
def test_openai_sdk_tool_round_trip_on_claude(oai, stream, parallel):
    headers = {"x-mock-parallel-tools": "1"} if parallel else {}
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kw = dict(model="claude-sonnet-4-5-20250929", tools=[WEATHER_TOOL_OPENAI], extra_headers=headers)
    if stream:
        calls = {}
        finish = None
        for c in oai.chat.completions.create(messages=messages, stream=True, **kw):
            if not c.choices:
                continue
            for tc in c.choices[0].delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] = (tc.function.name if tc.function and tc.function.name else slot["name"])
                slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = c.choices[0].finish_reason or finish
        tool_calls = [{"id": v["id"], "type": "function", "function": {"name": v["name"], "arguments": v["arguments"]}}
                      for _, v in sorted(calls.items())]
    else:
        r = oai.chat.completions.create(messages=messages, **kw)
        finish = r.choices[0].finish_reason
        tool_calls = [tc.model_dump() for tc in r.choices[0].message.tool_calls]
    assert finish == "tool_calls"
    assert len(tool_calls) == (2 if parallel else 1)
    assert tool_calls[0]["function"]["name"] == "get_weather"
    assert json.loads(tool_calls[0]["function"]["arguments"]) == {"location": "Paris", "unit": "c"}
    messages += [{"role": "assistant", "content": None, "tool_calls": tool_calls}]
    messages += [{"role": "tool", "tool_call_id": tc["id"], "content": f"sunny {i}"} for i, tc in enumerate(tool_calls)]
    second = oai.chat.completions.create(messages=messages, **kw)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content.startswith("The tool said: sunny")


# --- errors, metering, count_tokens -------------------------------------------------------------

def test_upstream_errors_come_back_in_the_callers_shape(gateway):
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body("gpt-5.5"),
                   headers=anthropic_headers(**{"x-mock-status": "429"}), timeout=10)
    assert r.status_code == 429
    assert r.json()["type"] == "error" and "mock upstream error 429" in r.json()["error"]["message"]
    # Anthropic's errors name the request in the body too: the gateway's id, as in its header.
    assert r.json()["request_id"] == r.headers["request-id"] == r.headers["x-request-id"]
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body("claude-sonnet-4-5-20250929"),
                   headers=openai_headers(**{"x-mock-status": "529"}), timeout=10)
    assert r.status_code == 529
    assert "mock upstream error 529" in r.json()["error"]["message"]


def test_untranslatable_parameter_is_a_400_naming_it(gateway, mock):
    mock.clear()
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body("claude-sonnet-4-5-20250929", n=3),
                   headers=openai_headers(), timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "n"
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body("gpt-5.5", top_k=5), headers=anthropic_headers(), timeout=10)
    assert r.status_code == 400 and "top_k" in r.json()["error"]["message"]
    assert mock.requests() == []


def test_an_answer_that_cannot_be_translated_is_a_502_and_the_access_log_says_so(fresh_gateway):
    """A translated answer is read whole before anything is sent (`proxy::whole`), so a 2xx body
    that cannot be translated is the gateway's 502 in the caller's dialect. Through Pingora's
    proxy path its 200 head had gone out first, and the error body came under it. The access log
    names the failure (and a refused request's model)."""
    g = fresh_gateway()
    r = httpx.post(g.url + "/v1/chat/completions", json=chat_body("claude-sonnet-4-5-20250929"),
                   headers={**openai_headers(), "x-mock-fault": "not-an-answer"}, timeout=10)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable", r.text
    r = httpx.post(g.url + "/v1/messages", json=claude_body("gpt-5.5"),
                   headers={**anthropic_headers(), "x-mock-fault": "not-an-answer"}, timeout=10)
    assert r.status_code == 502 and r.json()["type"] == "error", r.text
    assert r.json()["request_id"] == r.headers["request-id"], r.text
    r = httpx.post(g.url + "/v1/messages", json=claude_body("gpt-5.5", top_k=5), headers=anthropic_headers(), timeout=10)
    assert r.status_code == 400
    deadline = time.time() + 10
    while len(lines := [l for l in g.access_log() if l.get("path") in ("/v1/messages", "/v1/chat/completions")]) < 3:
        assert time.time() < deadline, lines
        time.sleep(0.05)
    assert [(l["status"], l["model"], l["error"]) for l in lines] == [
        (502, "claude-sonnet-4-5-20250929", "untranslatable_response"),
        (502, "gpt-5.5", "untranslatable_response"),
        (400, "gpt-5.5", "untranslatable"),
    ]


def test_unknown_fields_are_dropped_and_reported_or_refused_on_strict_models(fresh_gateway, mock):
    g = fresh_gateway()
    mock.clear()
    body = chat_body("claude-sonnet-4-5-20250929", frobnicate={"x": 1}, verbosity="low")
    r = httpx.post(g.url + "/v1/chat/completions", json=body, headers=openai_headers(), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["x-cheapmodel-dropped"] == "frobnicate,verbosity"
    sent = json.loads(mock.last()["body"])
    assert "frobnicate" not in sent and "verbosity" not in sent
    assert g.metric("cheapmodel_dropped_params_total", model="claude-sonnet-4-5-20250929", param="other") == 1
    assert g.metric("cheapmodel_dropped_params_total", model="claude-sonnet-4-5-20250929", param="verbosity") == 1
    # Same-dialect traffic is untouched: no header, the field reaches the upstream as sent.
    r = httpx.post(g.url + "/v1/messages", json=claude_body(frobnicate=1), headers=anthropic_headers(), timeout=10)
    assert r.status_code == 200 and "x-cheapmodel-dropped" not in r.headers
    assert json.loads(mock.last()["body"])["frobnicate"] == 1
    # params: strict refuses the unknown field in the caller's dialect; a field dropped by rule passes.
    mock.clear()
    r = httpx.post(g.url + "/v1/chat/completions", json=chat_body("claude-strict", frobnicate=1),
                   headers=openai_headers(), timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "frobnicate", r.text
    assert mock.requests() == []
    r = httpx.post(g.url + "/v1/chat/completions", json=chat_body("claude-strict", verbosity="low"),
                   headers=openai_headers(), timeout=10)
    assert r.status_code == 200 and r.headers["x-cheapmodel-dropped"] == "verbosity"
    time.sleep(0.5)  # the access log is written by a background thread
    logged = [rec.get("dropped") for rec in g.access_log() if rec.get("model") == "claude-sonnet-4-5-20250929"]
    assert "frobnicate,verbosity" in logged


def test_translated_traffic_is_metered(fresh_gateway):
    g = fresh_gateway()
    httpx.post(g.url + "/v1/messages", json=claude_body("gpt-5.5", stream=True),
               headers=anthropic_headers(**{"x-mock-echo-usage": "1000,200,300,0"}), timeout=10)
    labels = {"model": "gpt-5.5", "key": "team-a"}
    assert g.eventually_metric("cheapmodel_tokens_total", 700, type="input", **labels) == 700
    assert g.eventually_metric("cheapmodel_tokens_total", 300, type="cache_read", **labels) == 300
    assert g.eventually_metric("cheapmodel_tokens_total", 200, type="output", **labels) == 200


def test_count_tokens_for_openai_model_is_a_local_estimate(gateway, mock):
    mock.clear()
    body = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "Hello, world!"}]}
    r = httpx.post(gateway.url + "/v1/messages/count_tokens?beta=true", json=body, headers=anthropic_headers(), timeout=10)
    assert r.status_code == 200
    assert r.headers["x-cheapmodel-token-count"] == "estimate"
    assert 4 <= r.json()["input_tokens"] <= 20
    assert mock.requests() == []


def test_cut_translated_stream_ends_with_callers_error_event(gateway):
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body("gpt-5.5", stream=True),
                   headers=anthropic_headers(**{"x-mock-fault": "cut-stream"}), timeout=10)
    assert b"event: error" in r.content
    assert b"message_stop" not in r.content
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body("claude-sonnet-4-5-20250929", stream=True),
                   headers=openai_headers(**{"x-mock-fault": "cut-stream"}), timeout=10)
    assert b'"error"' in r.content and b"[DONE]" not in r.content


TRANSLATED_JSON = [
    ("/v1/chat/completions", openai_headers, chat_body("claude-sonnet-4-5-20250929")),
    ("/v1/messages", anthropic_headers, claude_body("gpt-5.5")),
]


@pytest.mark.parametrize("path,headers,body", TRANSLATED_JSON)
def test_a_translated_answer_is_sent_with_its_length_not_chunked(gateway, path, headers, body):
    """Through Pingora's proxy path a translated JSON answer could only go chunked (its head is
    written before the body is translated): head, chunk and terminator, three writes. It is read
    whole now, and sent with its exact Content-Length, to HTTP/1.1 and HTTP/2 callers alike."""
    raw = json.dumps(body).encode()
    head_lines = "".join(f"{k}: {v}\r\n" for k, v in headers().items()).encode()
    resp = raw_http(gateway.port, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + head_lines +
                    b"Content-Length: " + str(len(raw)).encode() + b"\r\nConnection: close\r\n\r\n" + raw)
    head, _, payload = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
    assert b"transfer-encoding" not in fields, head
    assert int(fields[b"content-length"]) == len(payload) > 0, head
    answer = json.loads(payload)
    assert answer["model"] == body["model"] and (answer.get("choices") or answer.get("content")), answer
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        r = c.post(gateway.url + path, json=body, headers=headers())
    assert r.http_version == "HTTP/2" and r.status_code == 200, r.text
    assert r.headers["content-length"] == str(len(r.content)) and r.json()["model"] == body["model"]
