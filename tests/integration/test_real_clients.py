"""Real clients end to end: the pinned Claude Code CLI (tests/clients/run_claude.sh) and the
higher-level helpers of the official SDKs (stream managers, parse(), raw responses), on the same
dialect and translated. The strict mock refuses what the real providers refuse, so a request the
gateway mangles fails here, and every assertion on the upstream side reads what the mock received.

Claude Code runs take about a second each; the SDK tests a few milliseconds."""
import json
import os
import subprocess
import time

import pytest

from conftest import KEY_A, ROOT, UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY


CLAUDE = "claude-sonnet-4-5-20250929"      # Anthropic-dialect upstream
GPT = "gpt-5.5"                            # OpenAI-dialect upstream
KEY_NAME = "team-a"                        # KEY_A's name in the config (the metrics' `key` label)
MOCK_TEXT = "Hello from the mock upstream!"

RUN_CLAUDE = ROOT / "tests/clients/run_claude.sh"
CLAUDE_BIN = os.environ.get("CLAUDE_BIN", str(ROOT / "tests/clients/node_modules/.bin/claude"))
CLAUDE_TIMEOUT = 60                        # run_claude.sh's hard timeout (claude is killed after it)

WEATHER_SCHEMA = {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
                  "required": ["location"]}
WEATHER_TOOL_OPENAI = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA}}
WEATHER_TOOL_ANTHROPIC = {"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}
MOCK_TOOL_ARGS = {"location": "Paris", "unit": "c"}   # what the mock's tool call always asks


def upstream_path(model):
    return "/v1/messages" if model == CLAUDE else "/v1/chat/completions"


def path_of(record):
    return record["path"].split("?", 1)[0]


def headers_of(record):
    return {k.lower(): v for k, v in record["headers"]}


def body_of(record):
    return json.loads(record["body"])


def chat_records(mock):
    """What the mock received on its chat routes (ignores nothing else: nothing else is expected)."""
    return [r for r in mock.requests() if path_of(r) in ("/v1/messages", "/v1/chat/completions")]


def keys_anywhere(value, names):
    """Every JSON path in `value` whose last key is one of `names`."""
    found = []

    def walk(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                p = f"{path}.{k}" if path else k
                if k in names:
                    found.append(p)
                walk(x, p)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")

    walk(value, "")
    return found


def access_log_count(gateway):
    return len(gateway.access_log())


def new_chat_log_entries(gateway, since, want, timeout=5.0):
    """The gateway's access-log lines for chat calls written after line `since` (waits until
    `want` of them are there: the line can land a moment after the caller got its answer)."""
    deadline = time.time() + timeout
    while True:
        entries = [e for e in gateway.access_log()[since:] if e.get("path") in ("/v1/messages", "/v1/chat/completions")]
        if len(entries) >= want or time.time() > deadline:
            return entries
        time.sleep(0.05)


# --- 1. Claude Code ------------------------------------------------------------------------------

def require_claude_cli():
    if not (os.path.isfile(CLAUDE_BIN) and os.access(CLAUDE_BIN, os.X_OK)):
        pytest.skip(f"Claude Code CLI not installed at {CLAUDE_BIN} "
                    f"(npm install --prefix tests/clients --no-audit --no-fund)")


def run_claude(gateway, model, key_mode, prompt, extra_env=""):
    require_claude_cli()
    env = dict(os.environ, RUN_CLAUDE_TIMEOUT=str(CLAUDE_TIMEOUT), RUN_CLAUDE_MAX_RETRIES="2",
               RUN_CLAUDE_EXTRA_ENV=extra_env, CLAUDE_BIN=CLAUDE_BIN)
    p = subprocess.run([str(RUN_CLAUDE), gateway.url, model, key_mode, KEY_A, prompt], capture_output=True,
                       text=True, env=env, timeout=CLAUDE_TIMEOUT + 20, stdin=subprocess.DEVNULL)
    assert p.returncode != 127, f"run_claude.sh did not find the CLI: {p.stderr}"
    assert p.returncode != 124, f"Claude Code hit the {CLAUDE_TIMEOUT}s timeout; stderr: {p.stderr[-2000:]}"
    try:
        result = json.loads(p.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"Claude Code printed no JSON result (rc {p.returncode}): stdout {p.stdout[-2000:]!r} "
                    f"stderr {p.stderr[-2000:]!r}")
    return p.returncode, result, p.stderr


def assert_upstream_auth(record, model):
    h = headers_of(record)
    for name, value in record["headers"]:
        assert KEY_A not in value and "cm_test" not in value, f"the caller's key reached the upstream in {name}"
    assert KEY_A not in (record["body"] or ""), "the caller's key reached the upstream in the body"
    if model == CLAUDE:
        assert h.get("x-api-key") == UPSTREAM_ANTHROPIC_KEY
        assert "authorization" not in h
    else:
        assert h.get("authorization") == f"Bearer {UPSTREAM_OPENAI_KEY}"
        assert "x-api-key" not in h


@pytest.mark.timeout(CLAUDE_TIMEOUT + 40)
@pytest.mark.parametrize("key_mode", ["api_key", "auth_token"])
@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_claude_code_plain_streamed_answer(gateway, mock, model, key_mode):
    mock.clear()
    cost0 = gateway.metric("cheapmodel_cost_usd_total", model=model, key=KEY_NAME)
    log0 = access_log_count(gateway)
    # Claude Code always declares its tools; the custom header asks the mock for plain text anyway.
    # (run_claude.sh splits RUN_CLAUDE_EXTRA_ENV on spaces; Claude Code trims around the colon.)
    rc, result, stderr = run_claude(gateway, model, key_mode, "say hello",
                                    extra_env="ANTHROPIC_CUSTOM_HEADERS=x-mock-no-tools:1")
    assert rc == 0, f"Claude Code failed: {result} / {stderr[-2000:]}"
    assert result["is_error"] is False, result
    assert MOCK_TEXT in result["result"]
    assert result["num_turns"] == 1

    reqs = chat_records(mock)
    log = new_chat_log_entries(gateway, log0, want=len(reqs))
    # One request per attempt Claude Code made, each logged by the gateway and forwarded once:
    # no retry, no non-streaming fallback.
    assert len(reqs) == 1, [(r["path"], body_of(r).get("stream")) for r in reqs]
    assert len(log) == 1, log
    assert log[0]["status"] == 200 and log[0]["stream"] is True and log[0]["model"] == model
    for r in reqs:
        assert r["method"] == "POST"
        assert path_of(r) == upstream_path(model)
        body = body_of(r)
        assert body["stream"] is True
        assert body["model"] == model
        assert headers_of(r).get("x-mock-no-tools") == "1", "ANTHROPIC_CUSTOM_HEADERS did not reach the mock"
        assert body["tools"], "Claude Code's tools were not forwarded"
        assert_upstream_auth(r, model)
    deadline = time.time() + 5
    while gateway.metric("cheapmodel_cost_usd_total", model=model, key=KEY_NAME) <= cost0:
        assert time.time() < deadline, "Claude Code's requests were not billed"
        time.sleep(0.05)


@pytest.mark.timeout(CLAUDE_TIMEOUT + 40)
@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_claude_code_tool_round_trip(gateway, mock, model):
    """The mock's first answer calls Claude Code's first declared tool (Agent) with the mock's fixed
    arguments; Claude Code refuses it (the arguments do not fit Agent's schema, and the harness
    hook blocks every tool anyway) and sends the model an error tool result; the mock answers with
    that result's text."""
    mock.clear()
    log0 = access_log_count(gateway)
    rc, result, stderr = run_claude(gateway, model, "api_key", "What is the weather in Paris?")
    assert rc == 0, f"Claude Code failed: {result} / {stderr[-2000:]}"
    assert result["is_error"] is False, result
    assert result["num_turns"] == 2

    reqs = chat_records(mock)
    assert len(reqs) == 2, [(r["path"], body_of(r).get("stream")) for r in reqs]
    assert len(new_chat_log_entries(gateway, log0, want=2)) == 2
    first, second = (body_of(r) for r in reqs)
    for r, b in zip(reqs, (first, second)):
        assert path_of(r) == upstream_path(model) and b["stream"] is True
        assert_upstream_auth(r, model)

    msgs = second["messages"]
    if model == CLAUDE:
        tool_name = first["tools"][0]["name"]
        # Same dialect: the tool_use the mock sent comes back verbatim, then its tool_result.
        assistant, user = msgs[-2], msgs[-1]
        assert assistant["role"] == "assistant"
        uses = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert uses == [{"type": "tool_use", "id": "toolu_mock_0", "name": tool_name, "input": MOCK_TOOL_ARGS}]
        assert user["role"] == "user"
        results = [b for b in user["content"] if b["type"] == "tool_result"]
        assert len(results) == 1 and results[0]["tool_use_id"] == "toolu_mock_0"
        assert results[0]["is_error"] is True
        tool_text = results[0]["content"]
        if isinstance(tool_text, list):
            tool_text = "".join(p.get("text", "") for p in tool_text)
    else:
        tool_name = first["tools"][0]["function"]["name"]
        # Translated: the assistant turn carries the OpenAI tool call (no stray members: the mock
        # would 400), and a `tool` message answers it by id.
        calls = [m for m in msgs if m["role"] == "assistant" and m.get("tool_calls")]
        assert len(calls) == 1
        (call,) = calls[0]["tool_calls"]
        assert set(call) == {"id", "type", "function"}
        assert call["id"] == "call_mock_0" and call["type"] == "function"
        assert call["function"]["name"] == tool_name
        assert json.loads(call["function"]["arguments"]) == MOCK_TOOL_ARGS
        tool_msgs = [m for m in msgs if m["role"] == "tool"]
        assert len(tool_msgs) == 1 and msgs[-1] is tool_msgs[0]
        assert tool_msgs[0]["tool_call_id"] == "call_mock_0"
        tool_text = tool_msgs[0]["content"]
        if isinstance(tool_text, list):
            tool_text = "".join(p.get("text", "") for p in tool_text)
    assert tool_text, "empty tool result"
    assert result["result"].strip() == f"The tool said: {tool_text}".strip()


def test_claude_codes_tool_search_result_reaches_gpt(gateway, mock):
    """Claude Code 2.1.332's request after its ToolSearch tool ran (recorded against a fake upstream
    that called ToolSearch, which the mock cannot make Claude Code do): the tool result holds a
    `tool_reference` block. On gpt-5.5 it used to be a 400, three times, before Claude Code turned
    tool search off for the session. Now the strict mock takes it as a tool message."""
    import httpx
    recorded = ROOT / "tests/golden/request/anthropic_to_openai/claude_code_recorded_tool_search/in.json"
    mock.clear()
    r = httpx.post(gateway.url + "/v1/messages?beta=true", content=recorded.read_bytes(), timeout=10,
                   headers={"x-api-key": KEY_A, "content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    (req,) = chat_records(mock)
    tool_msgs = [m for m in body_of(req)["messages"] if m["role"] == "tool"]
    assert tool_msgs == [{"role": "tool", "tool_call_id": "toolu_ts", "content": "Tool available: WebFetch"}]
    assert "WebFetch" in [t["function"]["name"] for t in body_of(req)["tools"]]


# --- 2. OpenAI SDK helpers on the Claude model (translated) --------------------------------------

def require_sdk(name):
    return pytest.importorskip(name, reason=f"the {name} SDK is not installed (pip install -r tests/requirements.txt)")


@pytest.fixture
def oai(gateway):
    openai = require_sdk("openai")
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY_A, timeout=10, max_retries=0)


@pytest.fixture
def claude_sdk(gateway):
    anthropic = require_sdk("anthropic")
    return anthropic.Anthropic(base_url=gateway.url, api_key=KEY_A, timeout=10, max_retries=0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("append_as", ["model_object", "model_dump"])
def test_openai_stream_helper_tool_round_trip_on_claude(oai, mock, append_as):
    mock.clear()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with oai.chat.completions.stream(model=CLAUDE, messages=messages, tools=[WEATHER_TOOL_OPENAI]) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == MOCK_TOOL_ARGS

    messages.append(choice.message if append_as == "model_object" else choice.message.model_dump())
    messages += [{"role": "tool", "tool_call_id": tc.id, "content": "sunny, 21 C"} for tc in calls]
    second = oai.chat.completions.create(model=CLAUDE, messages=messages, tools=[WEATHER_TOOL_OPENAI])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The tool said: sunny, 21 C"

    reqs = chat_records(mock)
    assert [path_of(r) for r in reqs] == ["/v1/messages", "/v1/messages"]
    assert body_of(reqs[0])["stream"] is True
    sent = body_of(reqs[1])
    assert not sent.get("stream")
    assert len(sent["messages"]) == 3
    # The mock's tool turn says "Let me check." before the call: the text comes back first.
    assert choice.message.content == "Let me check."
    assert sent["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": calls[0].id, "name": "get_weather", "input": MOCK_TOOL_ARGS}]}
    user = sent["messages"][2]
    assert user["role"] == "user"
    (res,) = user["content"]
    assert res["type"] == "tool_result" and res["tool_use_id"] == calls[0].id
    content = res["content"]
    if isinstance(content, list):
        assert [p["type"] for p in content] == ["text"]
        content = content[0]["text"]
    assert content == "sunny, 21 C"
    assert keys_anywhere(sent["messages"], {"index", "parsed", "annotations", "parsed_arguments", "refusal"}) == []


@pytest.mark.timeout(60)
def test_openai_parse_helper_sends_structured_output_to_claude(oai, mock):
    """parse() sends response_format json_schema; the Claude model (structured_outputs: true in
    the test config) gets it as output_config.format. The mock answers fixed prose, so the SDK's
    own parse of the answer fails after a 200: what is asserted is the request the upstream got."""
    pydantic = require_sdk("pydantic")

    class Weather(pydantic.BaseModel):
        location: str
        unit: str

    mock.clear()
    with pytest.raises(pydantic.ValidationError) as e:   # not an API error: the call succeeded
        oai.chat.completions.parse(model=CLAUDE, messages=[{"role": "user", "content": "Weather in Paris as JSON"}],
                                   response_format=Weather)
    assert MOCK_TEXT in str(e.value), "the SDK should have tried to parse the mock's answer"
    reqs = chat_records(mock)
    assert len(reqs) == 1 and path_of(reqs[0]) == "/v1/messages"
    sent = body_of(reqs[0])
    fmt = sent.get("output_config", {}).get("format")
    assert fmt is not None, f"no output_config.format in the upstream request: {sorted(sent)}"
    assert fmt["type"] == "json_schema"
    schema = fmt["schema"]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"location", "unit"}
    assert schema["properties"]["location"]["type"] == "string"
    assert set(schema.get("required", [])) == {"location", "unit"}
    assert schema.get("additionalProperties") is False
    assert "response_format" not in sent


@pytest.mark.timeout(60)
def test_openai_raw_response_reports_dropped_fields(oai, mock, gateway):
    """An unknown top-level field and a streamed tool call's `index` left in the history: both are
    left out of the Anthropic request (Anthropic refuses extra inputs) and reported, in the
    `x-cheapmodel-dropped` header and in cheapmodel_dropped_params_total."""
    mock.clear()
    other0 = gateway.metric("cheapmodel_dropped_params_total", model=CLAUDE, param="other")
    index0 = gateway.metric("cheapmodel_dropped_params_total", model=CLAUDE, param="index")
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        # As a streaming client that keeps the delta's `index` puts it back in the history.
        {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps(MOCK_TOOL_ARGS)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    raw = oai.chat.completions.with_raw_response.create(model=CLAUDE, messages=history, tools=[WEATHER_TOOL_OPENAI],
                                                        extra_body={"frobnicate": 1})
    assert raw.status_code == 200
    dropped = raw.headers.get("x-cheapmodel-dropped", "").split(",")
    assert "frobnicate" in dropped, dropped
    assert "messages[1].tool_calls[0].index" in dropped, dropped
    completion = raw.parse()
    assert completion.choices[0].message.content == "The tool said: sunny"
    assert gateway.metric("cheapmodel_dropped_params_total", model=CLAUDE, param="other") >= other0 + 1
    assert gateway.metric("cheapmodel_dropped_params_total", model=CLAUDE, param="index") >= index0 + 1

    (r,) = chat_records(mock)
    sent = body_of(r)
    assert "frobnicate" not in sent
    assert keys_anywhere(sent, {"index", "frobnicate"}) == []
    assert sent["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": MOCK_TOOL_ARGS}]


@pytest.mark.timeout(60)
def test_openai_sdk_cache_breakpoints_reach_claude(oai, mock):
    """`cache_control` on content parts, messages and tools, as callers written for LiteLLM or
    OpenRouter send it through the OpenAI SDK (which passes it on as written), reaches the Claude
    upstream on the same blocks and tools: without it Claude caches nothing. Nothing is reported
    dropped."""
    mock.clear()
    style = {"type": "ephemeral", "ttl": "1h"}
    raw = oai.chat.completions.with_raw_response.create(model=CLAUDE, tools=[{**WEATHER_TOOL_OPENAI, "cache_control": {"type": "ephemeral"}}], messages=[
        {"role": "system", "content": [{"type": "text", "text": "Style guide", "cache_control": style}]},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?", "cache_control": {"type": "ephemeral"}},
                                     {"type": "text", "text": "Briefly."}]},
        {"role": "assistant", "content": "It is sunny."},
        # LiteLLM also takes one on a message with string content: the block it becomes.
        {"role": "user", "content": "And in Rome?", "cache_control": {"type": "ephemeral"}}])
    assert raw.status_code == 200
    assert raw.headers.get("x-cheapmodel-dropped") is None
    (r,) = chat_records(mock)
    sent = body_of(r)
    assert sent["system"] == [{"type": "text", "text": "Style guide", "cache_control": style}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?", "cache_control": {"type": "ephemeral"}},
                                     {"type": "text", "text": "Briefly."}]},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": [{"type": "text", "text": "And in Rome?", "cache_control": {"type": "ephemeral"}}]}]
    assert [t.get("cache_control") for t in sent["tools"]] == [{"type": "ephemeral"}]


# --- 3. Anthropic SDK helpers on gpt-5.5 (translated) --------------------------------------------

@pytest.mark.timeout(60)
def test_anthropic_stream_helper_tool_round_trip_on_gpt(claude_sdk, mock):
    mock.clear()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kw = dict(model=GPT, max_tokens=200, tools=[WEATHER_TOOL_ANTHROPIC])
    with claude_sdk.messages.stream(messages=messages, **kw) as s:
        for _ in s:
            pass
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == MOCK_TOOL_ARGS

    messages += [{"role": "assistant", "content": final.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}]}]
    second = claude_sdk.messages.create(messages=messages, **kw)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text == "The tool said: sunny"

    reqs = chat_records(mock)
    assert [path_of(r) for r in reqs] == ["/v1/chat/completions", "/v1/chat/completions"]
    assert body_of(reqs[0])["stream"] is True
    sent = body_of(reqs[1])     # the strict mock answered it, so OpenAI would accept it too
    msgs = sent["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]
    (call,) = msgs[1]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == MOCK_TOOL_ARGS
    assert msgs[2]["tool_call_id"] == call["id"]
    content = msgs[2]["content"]
    if isinstance(content, list):
        content = "".join(p["text"] for p in content)
    assert content == "sunny"


@pytest.mark.timeout(60)
def test_anthropic_count_tokens_on_gpt_is_estimated_locally(claude_sdk, mock):
    mock.clear()
    n = claude_sdk.messages.count_tokens(model=GPT, system="Be brief.", tools=[WEATHER_TOOL_ANTHROPIC],
                                         messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert n.input_tokens > 0
    assert mock.requests() == [], "count_tokens for an OpenAI upstream should not reach it"


@pytest.mark.timeout(60)
def test_openai_sdk_reasoning_effort_leaves_claude_room_to_answer(oai, mock):
    """`reasoning_effort` with no max from the caller: the thinking budget takes at most half of
    the model's default `max_tokens`. On a model without `max_output_tokens` (4096) `high` used to
    send a 4095-token budget, which left the visible answer one token."""
    mock.clear()
    for model, effort in (("claude-strict", "high"), (CLAUDE, "high"), ("claude-strict", "minimal")):
        raw = oai.chat.completions.with_raw_response.create(
            model=model, reasoning_effort=effort, messages=[{"role": "user", "content": "Think, then answer."}])
        assert raw.status_code == 200
    sent = [body_of(r) for r in chat_records(mock)]
    assert [(s["thinking"], s["max_tokens"]) for s in sent] == [
        ({"type": "enabled", "budget_tokens": 2048}, 4096),
        ({"type": "enabled", "budget_tokens": 16384}, 64000),
        ({"type": "enabled", "budget_tokens": 1024}, 4096)]
    # The caller's own max is OpenAI's limit on reasoning and answer together: kept as asked.
    mock.clear()
    oai.chat.completions.create(model="claude-strict", reasoning_effort="high", max_completion_tokens=3000,
                                messages=[{"role": "user", "content": "Think, then answer."}])
    (r,) = chat_records(mock)
    assert (body_of(r)["thinking"]["budget_tokens"], body_of(r)["max_tokens"]) == (2999, 3000)
