"""The official Python SDKs, pointed at the gateway with only base URL and key changed."""
import anthropic
import openai
import pytest

from conftest import KEY_A


@pytest.fixture
def oai(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY_A, timeout=10, max_retries=0)


@pytest.fixture
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.url, api_key=KEY_A, timeout=10, max_retries=0)


def test_openai_sdk_non_stream(oai):
    r = oai.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content == "Hello from the mock upstream!"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 21 and r.usage.completion_tokens == 7
    assert r.model == "gpt-5.5"


def test_openai_sdk_stream(oai):
    chunks = list(oai.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "Hi"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock upstream!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "no usage chunk the caller did not ask for"


def test_openai_sdk_stream_with_usage(oai):
    chunks = list(oai.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "Hi"}],
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.total_tokens == 28


def test_openai_sdk_models_and_errors(oai):
    assert "gpt-5.5" in [m.id for m in oai.models.list()]
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=oai.base_url, api_key="cm_wrong", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "x"}])


def test_both_sdks_list_and_retrieve_models(oai, claude):
    # models.retrieve is GET /v1/models/{id}: the same answer per name as the chat path gives.
    listed = [m.id for m in oai.models.list()]
    one = oai.models.retrieve("gpt-5.5")
    assert (one.id, one.object) == ("gpt-5.5", "model") and one.id in listed
    with pytest.raises(openai.NotFoundError) as e:
        oai.models.retrieve("gpt")
    assert e.value.code == "model_not_found"
    assert [m.id for m in claude.models.list()] == listed
    info = claude.models.retrieve("claude-sonnet-4-5-20250929")
    assert (info.id, info.type) == ("claude-sonnet-4-5-20250929", "model")
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.models.retrieve("claude")
    assert e.value.body["error"]["type"] == "not_found_error"


def test_anthropic_sdk_non_stream(claude):
    m = claude.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=64, messages=[{"role": "user", "content": "Hello"}])
    assert m.content[0].text == "Hello from the mock upstream!"
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens, m.usage.cache_read_input_tokens) == (12, 9, 4)


def test_anthropic_sdk_stream(claude):
    with claude.messages.stream(model="claude-sonnet-4-5-20250929", max_tokens=64,
                                messages=[{"role": "user", "content": "Hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello from the mock upstream!"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 9


def test_anthropic_sdk_errors_and_count_tokens(claude, gateway):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    # The SDK finds the request id where Anthropic puts it (`request-id`): the gateway's own.
    assert e.value.request_id == e.value.response.headers["x-request-id"] and e.value.request_id.startswith("req_")
    # And in the body, as Anthropic's own errors carry it.
    assert e.value.body["request_id"] == e.value.request_id
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="cm_wrong", max_retries=0, timeout=10)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    n = claude.messages.count_tokens(model="claude-sonnet-4-5-20250929", messages=[{"role": "user", "content": "x"}])
    assert n.input_tokens == 42


def test_anthropic_sdk_gets_the_request_id_of_a_translated_answer(claude):
    m = claude.messages.with_raw_response.create(model="gpt-5.5", max_tokens=64,
                                                 messages=[{"role": "user", "content": "Hello"}])
    assert m.request_id and m.request_id == m.headers["x-request-id"], dict(m.headers)
    assert m.parse().content[0].text == "Hello from the mock upstream!"
    # And of the gateway's own answers: the local token count for a gpt model.
    n = claude.messages.with_raw_response.count_tokens(model="gpt-5.5", messages=[{"role": "user", "content": "x"}])
    assert n.request_id and n.request_id == n.headers["x-request-id"], dict(n.headers)


def test_anthropic_sdk_with_bearer_auth(gateway):
    c = anthropic.Anthropic(base_url=gateway.url, auth_token=KEY_A, timeout=10, max_retries=0)
    m = c.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=64, messages=[{"role": "user", "content": "Hello"}])
    assert m.stop_reason == "end_turn"
