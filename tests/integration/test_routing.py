"""Pinned routing, exact model names, the minimal rewrite, and errors in the caller's dialect."""
import json

import httpx
import pytest

from conftest import KEY_A, KEY_B, anthropic_headers, chat_body, claude_body, openai_headers, raw_http


def post_openai(gateway, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(gateway.url + "/v1/chat/completions", content=data, headers=openai_headers(**kw), timeout=10)


def post_anthropic(gateway, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(gateway.url + "/v1/messages", content=data, headers=anthropic_headers(**kw), timeout=10)


@pytest.mark.parametrize("name", ["gpt", "gpt-5", "GPT-5.5", "gpt-5.5 ", "claude", "claude-sonnet-4-5", "gemini"])
def test_only_registered_names_route(gateway, mock, name):
    mock.clear()
    r = post_openai(gateway, chat_body(name))
    assert r.status_code == 404
    e = r.json()["error"]
    assert e["code"] == "model_not_found" and name in e["message"]
    r = post_anthropic(gateway, claude_body(name))
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"
    assert mock.requests() == []


@pytest.mark.parametrize("body,param", [
    (b'{"messages":[]}', "model"),
    (b'{"model":42}', "model"),
    (b'{"model":"gpt-5.5","model":"claude-sonnet-4-5-20250929"}', "model"),
    (b'{"model":"gpt-5.5","stream":"yes"}', "stream"),
    (b'{"model":"gpt-5.5",', None),
    (b'not json', None),
    (b'["gpt-5.5"]', None),
    (b'{"model":"gpt-5.5"}{"model":"x"}', None),
    (b'', None),
    (b'{"model":"gpt-5.5","x":' + b"[" * 100000 + b"]" * 100000 + b"}", None),
])
def test_bad_bodies_are_400_and_never_forwarded(gateway, mock, body, param):
    mock.clear()
    r = post_openai(gateway, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    if param:
        assert r.json()["error"]["param"] == param
    r = post_anthropic(gateway, body)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert mock.requests() == []
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200


def test_wrong_kind_is_a_clear_400(gateway, mock):
    mock.clear()
    r = post_openai(gateway, chat_body("gpt-image-2"))
    assert r.status_code == 400 and "image" in r.json()["error"]["message"]
    r = post_anthropic(gateway, claude_body("gpt-image-2"))
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert mock.requests() == []


def test_unknown_path_and_wrong_method(gateway):
    r = httpx.post(gateway.url + "/v1/responses", json=chat_body(), headers=openai_headers(), timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    # It says what the gateway serves, not only that the URL is invalid.
    m = r.json()["error"]["message"]
    assert m.startswith("Invalid URL (POST /v1/responses)") and "/v1/chat/completions" in m, m
    r = httpx.get(gateway.url + "/v1/nothing", headers=anthropic_headers(), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(gateway.url + "/v1/chat/completions", headers=openai_headers(), timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST"  # RFC 9110 §15.5.6: a 405 says what is
    r = httpx.delete(gateway.url + "/v1/messages", headers=anthropic_headers(), timeout=10)
    assert r.status_code == 405 and r.json()["type"] == "error" and r.headers["allow"] == "POST"
    r = httpx.post(gateway.url + "/v1/models", headers=openai_headers(), timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_head_answers_what_get_answers_without_the_body(gateway):
    """RFC 9110 §9.1: a general-purpose server supports HEAD wherever it supports GET."""
    for path in ("/v1/models", "/v1/models/gpt-5.5", "/v1/usage", "/healthz"):
        get = httpx.get(gateway.url + path, headers=openai_headers(), timeout=10)
        head = httpx.head(gateway.url + path, headers=openai_headers(), timeout=10)
        assert get.status_code == head.status_code == 200, (path, get.text)
        assert head.content == b"" and head.headers["content-length"] == str(len(get.content)), path
        assert head.headers["content-type"] == get.headers["content-type"]
    assert httpx.head(gateway.url + "/v1/models", timeout=10).status_code == 401


def test_absolute_form_uri_is_rejected(gateway, mock):
    mock.clear()
    body = json.dumps(chat_body()).encode()
    req = (b"POST http://evil.example/v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\n"
           b"Authorization: Bearer " + KEY_A.encode() + b"\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    resp = raw_http(gateway.port, req)
    assert resp.startswith(b"HTTP/1.1 400"), resp[:200]
    assert mock.requests() == []


def test_models_lists_what_the_key_may_use(gateway):
    r = httpx.get(gateway.url + "/v1/models", headers=openai_headers(KEY_B), timeout=10)
    assert r.json() == {"object": "list", "data": [{"id": "gpt-5.5", "object": "model", "created": 0, "owned_by": "cheapmodel"}]}
    r = httpx.get(gateway.url + "/v1/models", headers=anthropic_headers(KEY_A), timeout=10)
    ids = [m["id"] for m in r.json()["data"]]
    assert "claude-sonnet-4-5-20250929" in ids and "gpt-5.5" in ids
    assert r.json()["data"][0]["type"] == "model" and r.json()["has_more"] is False


def test_upstream_model_is_spliced_and_every_other_byte_kept(gateway, mock):
    body = b'{ "model" :  "gpt-5.5-pinned", "messages":[{"role":"user","content":"keep \\u00e9 me"}], "temperature": 0.50 }'
    r = post_openai(gateway, body)
    assert r.status_code == 200
    got = mock.last()
    assert got["body"] == '{ "model" :  "gpt-5.5-2026-01-01", "messages":[{"role":"user","content":"keep \\u00e9 me"}], "temperature": 0.50 }'
    headers = {k.lower(): v for k, v in got["headers"]}
    assert headers["content-length"] == str(len(got["body"]))


def test_passthrough_body_is_untouched_when_nothing_needs_rewriting(gateway, mock):
    body = b'{"messages":[{"role":"user","content":"x"}],   "model":"gpt-5.5","n":1}'
    post_openai(gateway, body)
    assert mock.last()["body"] == body.decode()


def test_headers_pass_unchanged_except_the_documented_ones(gateway, mock):
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body(),
                   headers={"x-api-key": KEY_A, "x-custom-thing": "Keep Me", "user-agent": "test-agent/1.0",
                            "anthropic-beta": "prompt-caching-2024-07-31", "x-request-id": "caller-id-123"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "caller-id-123"
    h = {k.lower(): v for k, v in mock.last()["headers"]}
    assert h["x-custom-thing"] == "Keep Me"
    assert h["user-agent"] == "test-agent/1.0"
    assert h["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert h["anthropic-version"] == "2023-06-01"   # added: the caller sent none
    assert h["x-request-id"] == "caller-id-123"
    assert h["host"] == mock.addr
    assert mock.last()["path"] == "/v1/messages"


def test_caller_anthropic_version_is_kept(gateway, mock):
    post_anthropic(gateway, claude_body(), **{"anthropic-version": "2099-01-01"})
    h = {k.lower(): v for k, v in mock.last()["headers"]}
    assert h["anthropic-version"] == "2099-01-01"


def test_request_id_is_generated_when_missing(gateway, mock):
    r = post_openai(gateway, chat_body())
    rid = r.headers["x-request-id"]
    assert rid.startswith("req_") and len(rid) > 20
    h = {k.lower(): v for k, v in mock.last()["headers"]}
    assert h["x-request-id"] == rid


def test_path_goes_under_the_upstream_base_path_with_query(gateway, mock):
    r = httpx.post(gateway.url + "/v1/messages/count_tokens?beta=true", json=claude_body(), headers=anthropic_headers(), timeout=10)
    assert r.status_code == 200
    assert mock.last()["path"] == "/v1/messages/count_tokens?beta=true"
    r = post_openai(gateway, chat_body("gemini-3.1-pro-preview"))
    assert r.status_code == 200
    assert mock.last()["path"] == "/v1/chat/completions"


@pytest.mark.parametrize("model", ["gpt-5.5", "claude-sonnet-4-5-20250929"])  # same dialect, translated
def test_hop_by_hop_headers_and_those_connection_names_stay_with_the_gateway(gateway, mock, model):
    """They describe the caller's connection to the gateway. Pingora's proxy strips them; a
    translated answer is fetched by the gateway itself (`proxy::whole`), which must strip the same."""
    mock.clear()
    body = json.dumps(chat_body(model)).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY_A.encode() +
           b"\r\nContent-Type: application/json\r\nConnection: close, X-Hop-Secret\r\nX-Hop-Secret: s3cret"
           b"\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic dXNlcjpwYXNz"
           b"\r\nX-Kept: yes\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    resp = raw_http(gateway.port, req)
    assert resp.startswith(b"HTTP/1.1 200"), resp[:300]
    sent = {k.lower(): v for k, v in mock.last()["headers"]}
    for name in ("x-hop-secret", "keep-alive", "te", "proxy-authorization"):
        assert name not in sent, (name, sent)
    assert "close" not in sent.get("connection", "").lower() and sent["x-kept"] == "yes", sent


def test_http10_caller_gets_an_unchunked_response(gateway):
    body = json.dumps(chat_body(stream=True)).encode()
    req = (b"POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer " + KEY_A.encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    resp = raw_http(gateway.port, req)
    head, _, payload = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"), head
    assert b"transfer-encoding: chunked" not in head.lower()
    assert payload.rstrip().endswith(b"data: [DONE]")


def test_conflicting_content_lengths_are_refused(gateway, mock):
    mock.clear()
    body = json.dumps(chat_body()).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY_A.encode() +
           b"\r\nContent-Length: 5\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    resp = raw_http(gateway.port, req, timeout=5)
    assert not resp.startswith(b"HTTP/1.1 200"), resp[:200]
    assert mock.requests() == []
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("size", [b"zz", b"ffffffffffffffffffffffff", b"-5"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_invalid_chunk_size_is_a_400_in_the_callers_dialect(gateway, mock, size, path):
    mock.clear()
    req = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY_A.encode() +
           b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
           size + b"\r\n{}\r\n0\r\n\r\n")
    resp = raw_http(gateway.port, req, timeout=5)
    head, _, payload = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), resp[:200]
    err = json.loads(payload)
    if path == "/v1/messages":
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    else:
        assert err["error"]["type"] == "invalid_request_error"
    assert mock.requests() == []
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200


def test_body_shorter_than_content_length_is_a_400(gateway, mock):
    mock.clear()
    body = b'{"model":"gpt-5.5"}'
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY_A.encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + body)
    resp = raw_http(gateway.port, req, timeout=5, half_close=True)
    assert resp.startswith(b"HTTP/1.1 400"), resp[:200]
    assert mock.requests() == []


@pytest.mark.parametrize("path,dialect", [("/v1/chat/completions/", "openai"), ("/v1/messages/", "anthropic"),
                                          ("/v1/messages/count_tokens/?beta=true", "anthropic")])
def test_trailing_slash_goes_to_the_canonical_path(gateway, mock, path, dialect):
    mock.clear()
    if dialect == "openai":
        r = httpx.post(gateway.url + path, json=chat_body(), headers=openai_headers(), timeout=10)
    else:
        r = httpx.post(gateway.url + path, json=claude_body(), headers=anthropic_headers(), timeout=10)
    assert r.status_code == 200, r.text
    canonical = path.replace("/?", "?").rstrip("/")
    assert mock.last()["path"] == canonical
