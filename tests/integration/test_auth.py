"""Keys: checked from header bytes, before any body is read; caller and upstream keys never cross."""
import json
import socket
import time

import httpx

from conftest import (KEY_A, KEY_B, UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY, anthropic_headers,
                      chat_body, claude_body, openai_headers)


def test_missing_key_is_401_in_each_dialect(gateway):
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10)
    assert r.status_code == 401
    e = r.json()["error"]
    assert e["type"] == "invalid_request_error" and set(e) == {"message", "type", "param", "code"}
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body(), headers={"anthropic-version": "2023-06-01"}, timeout=10)
    assert r.status_code == 401
    assert r.json() == {"type": "error", "error": {"type": "authentication_error", "message": r.json()["error"]["message"]},
                        "request_id": r.headers["request-id"]}


def test_wrong_key_is_401(gateway):
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers("cm_wrong"), timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert "cm_wrong" not in r.text


def test_bearer_and_x_api_key_both_accepted_on_both_endpoints(gateway):
    for headers in ({"Authorization": f"Bearer {KEY_A}"}, {"x-api-key": KEY_A}):
        r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        r = httpx.post(gateway.url + "/v1/messages", json=claude_body(), headers=headers, timeout=10)
        assert r.status_code == 200, r.text


def test_allow_list_is_403(gateway):
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body(), headers=anthropic_headers(KEY_B), timeout=10)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(KEY_B), timeout=10)
    assert r.status_code == 200


def test_unauthenticated_caller_gets_401_without_sending_its_body(gateway):
    """Headers announce 1 MB, no body byte is ever sent: the answer must come at once."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000\r\nAuthorization: Bearer cm_nope\r\n\r\n")
        t0 = time.time()
        data = s.recv(65536)
        assert data.startswith(b"HTTP/1.1 401"), data
        assert time.time() - t0 < 1.5


def test_caller_key_never_reaches_upstream_and_upstream_key_is_set(gateway, mock):
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(),
                   headers={"Authorization": f"Bearer {KEY_A}", "x-api-key": KEY_A}, timeout=10)
    assert r.status_code == 200
    got = mock.last()
    dump = json.dumps(got)
    assert KEY_A not in dump
    headers = {k.lower(): v for k, v in got["headers"]}
    assert headers["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"
    assert "x-api-key" not in headers

    r = httpx.post(gateway.url + "/v1/messages", json=claude_body(), headers=openai_headers(), timeout=10)
    assert r.status_code == 200
    got = mock.last()
    assert KEY_A not in json.dumps(got)
    headers = {k.lower(): v for k, v in got["headers"]}
    assert headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY
    assert "authorization" not in headers


def test_upstream_keys_never_reach_callers_logs_or_metrics(gateway):
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body(), headers=anthropic_headers(), timeout=10)
    everything = r.text + json.dumps(dict(r.headers))
    time.sleep(0.2)
    everything += gateway.log_path.read_text() + gateway.metrics_text()
    for secret in (UPSTREAM_OPENAI_KEY, UPSTREAM_ANTHROPIC_KEY, KEY_A, KEY_B):
        assert secret not in everything


def test_no_key_reaches_the_log_even_at_trace_level(fresh_gateway):
    """Pingora logs every request head at trace, each upstream body event at debug (an error body
    that quotes the upstream key included: the caller gets it masked) and a head it cannot parse,
    raw, at debug. At `RUST_LOG=trace` the callers' keys and the upstream keys were in the log.
    Other crates' debug and trace records are now never written."""
    g = fresh_gateway(env={"RUST_LOG": "trace"})
    for path, body, headers in (("/v1/chat/completions", chat_body(), openai_headers()),
                                ("/v1/messages", claude_body(), anthropic_headers()),
                                ("/v1/messages", claude_body("gpt-5.5"), anthropic_headers()),
                                ("/v1/chat/completions", chat_body("claude-sonnet-4-5-20250929"), openai_headers())):
        r = httpx.post(g.url + path, json=body, headers=headers, timeout=10)
        assert r.status_code == 200, (path, r.text)
    # An upstream error that quotes the key it got, in each upstream dialect.
    for path, body, headers in (("/v1/chat/completions", chat_body(), openai_headers),
                                ("/v1/messages", claude_body(), anthropic_headers)):
        r = httpx.post(g.url + path, json=body, headers=headers(**{"x-mock-fault": "echo-key"}), timeout=10)
        assert r.status_code == 500 and "request carried" in r.text, r.text
    # A head Pingora cannot parse (a control byte in a header name), with a key in it.
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_B}\r\n"
                  "X-B\x01ad: 1\r\nContent-Length: 2\r\n\r\n{}".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    time.sleep(0.3)
    log = g.log_path.read_text()
    for secret in (UPSTREAM_OPENAI_KEY, UPSTREAM_ANTHROPIC_KEY, KEY_A, KEY_B):
        assert secret not in log


def test_a_caller_cannot_choose_the_organization_or_project_the_upstream_key_acts_for(gateway, mock):
    """The OpenAI SDK sends `OpenAI-Organization` / `OpenAI-Project` when the caller sets them (env
    OPENAI_ORG_ID / OPENAI_PROJECT_ID). Passed on next to the gateway's key, they pointed the
    operator's key at another of the operator's organizations or projects, and its billing."""
    import openai
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY_A, organization="org-other",
                           project="proj_other", max_retries=0)
    client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "hi"}])
    sent = {k.lower(): v for k, v in mock.last()["headers"]}
    assert "openai-organization" not in sent and "openai-project" not in sent, sent
    assert sent["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"
    # Through the translated route too (an Anthropic-dialect caller's foreign headers).
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body("gpt-5.5"),
                   headers=anthropic_headers(**{"OpenAI-Organization": "org-other"}), timeout=10)
    assert r.status_code == 200
    assert "openai-organization" not in {k.lower() for k, _ in mock.last()["headers"]}


def test_every_endpoint_needs_a_key_but_healthz(gateway):
    assert httpx.get(gateway.url + "/v1/models", timeout=10).status_code == 401
    assert httpx.get(gateway.url + "/v1/nope", timeout=10).status_code == 401
    assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
