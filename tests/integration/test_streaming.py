"""Streams pass chunk by chunk; same-dialect responses are byte-transparent; an OpenAI stream gets
exactly what the caller asked for even though the gateway asks the upstream for usage."""
import json
import time

import httpx

from conftest import anthropic_headers, chat_body, claude_body, openai_headers


def direct_and_via(gateway, mock, path, body, headers):
    direct = httpx.post(mock.url + path, content=body, headers=headers, timeout=10)
    via = httpx.post(gateway.url + path, content=body, headers=headers, timeout=10)
    return direct, via


def test_json_and_streams_are_byte_transparent(gateway, mock):
    cases = [
        ("/v1/chat/completions", chat_body(), openai_headers()),
        ("/v1/chat/completions", chat_body(stream=True, stream_options={"include_usage": True}), openai_headers()),
        ("/v1/messages", claude_body(), anthropic_headers()),
        ("/v1/messages", claude_body(stream=True), anthropic_headers()),
    ]
    for path, body, headers in cases:
        direct, via = direct_and_via(gateway, mock, path, json.dumps(body), headers)
        assert via.status_code == direct.status_code == 200
        assert via.content == direct.content, path
        assert via.headers["content-type"] == direct.headers["content-type"]


def test_openai_stream_without_usage_option_looks_untouched(gateway, mock):
    body = json.dumps(chat_body(stream=True))
    via = httpx.post(gateway.url + "/v1/chat/completions", content=body, headers=openai_headers(), timeout=10)
    # The upstream was asked for usage ...
    sent = json.loads(mock.last()["body"])
    assert sent["stream_options"] == {"include_usage": True}
    # ... and the caller gets exactly what the upstream sends to a caller that did not ask.
    direct = httpx.post(mock.url + "/v1/chat/completions", content=body, headers=openai_headers(), timeout=10)
    assert via.content == direct.content
    assert b'"usage"' not in via.content
    assert via.content.endswith(b"data: [DONE]\n\n")


def test_include_usage_false_is_overridden_upstream_and_hidden(gateway, mock):
    body = json.dumps(chat_body(stream=True, stream_options={"include_usage": False}))
    via = httpx.post(gateway.url + "/v1/chat/completions", content=body, headers=openai_headers(), timeout=10)
    assert json.loads(mock.last()["body"])["stream_options"]["include_usage"] is True
    assert b'"usage"' not in via.content


def test_events_arrive_as_they_are_produced(gateway):
    """With 300 ms between upstream events, the first event must reach the caller long before the end."""
    body = claude_body(stream=True)
    with httpx.Client(timeout=20) as c:
        t0 = time.time()
        with c.stream("POST", gateway.url + "/v1/messages", json=body,
                      headers=anthropic_headers(**{"x-mock-event-delay-ms": "300"})) as r:
            first = None
            for chunk in r.iter_raw():
                if first is None and b"message_start" in chunk:
                    first = time.time() - t0
            total = time.time() - t0
    assert first is not None
    assert total > 1.5, total
    assert first < 0.6, (first, total)


def test_h2c_stream(gateway):
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        r = c.post(gateway.url + "/v1/chat/completions", json=chat_body(stream=True), headers=openai_headers())
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    assert r.content.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in r.content
