"""The body-forwarding mechanism (src/proxy/body.rs): bodies of every size reach the upstream
byte-exact, over HTTP/1.1 and h2c callers; what cannot be replayed is refused, never left hanging."""
import gzip
import hashlib
import json
import subprocess
import zlib

import httpx
import pytest

from conftest import KEY_A, anthropic_headers, openai_headers, raw_http

SIZES = [1000, 65535, 65536, 65537, 100_000, 5_000_000, 32 * 1024 * 1024]


def body_of_size(n: int, model="gpt-5.5") -> bytes:
    """A JSON chat body of exactly n bytes with `model` as the last key."""
    # An Anthropic body carries max_tokens, as the (strict) mock and the real provider require.
    head = b'{"max_tokens":16,"messages":[{"role":"user","content":"' if model.startswith("claude") else b'{"messages":[{"role":"user","content":"'
    tail = b'"}],"model":"' + model.encode() + b'"}'
    fill = n - len(head) - len(tail)
    assert fill > 0
    # Escapes and quotes inside the content, as real prompts have.
    unit = b'lorem \\"ipsum\\" {[x]} \\n '
    filler = (unit * (fill // len(unit) + 1))[:fill]
    if filler.endswith(b"\\"):
        filler = filler[:-1] + b" "
    body = head + filler + tail
    assert len(body) == n
    json.loads(body)
    return body


@pytest.mark.parametrize("size", SIZES)
def test_http1_body_is_forwarded_byte_exact(gateway, mock, size):
    body = body_of_size(size)
    r = httpx.post(gateway.url + "/v1/chat/completions", content=body, headers=openai_headers(), timeout=60)
    assert r.status_code == 200, r.text
    got = mock.last()
    assert got["body_len"] == size
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
    headers = {k.lower(): v for k, v in got["headers"]}
    assert headers["content-length"] == str(size)
    assert "transfer-encoding" not in headers


@pytest.mark.parametrize("size", SIZES)
def test_h2c_body_is_forwarded_byte_exact(gateway, mock, size):
    body = body_of_size(size, model="claude-sonnet-4-5-20250929")
    with httpx.Client(http1=False, http2=True, timeout=60) as c:
        r = c.post(gateway.url + "/v1/messages", content=body, headers=anthropic_headers())
        assert r.http_version == "HTTP/2"
    assert r.status_code == 200, r.text
    got = mock.last()
    assert got["body_len"] == size
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_body_over_the_limit_is_413_in_caller_dialect(gateway, mock):
    mock.clear()
    body = body_of_size(32 * 1024 * 1024 + 1)
    r = httpx.post(gateway.url + "/v1/messages", content=body, headers=anthropic_headers(), timeout=60)
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "request_too_large"
    assert mock.requests() == []


def test_chunked_small_body_is_forwarded_with_content_length(gateway, mock):
    body = body_of_size(1000)
    r = httpx.post(gateway.url + "/v1/chat/completions", content=iter([body[:300], body[300:]]),
                   headers=openai_headers(), timeout=30)
    assert r.status_code == 200, r.text
    got = mock.last()
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert got["chunked"] is False


def test_chunked_large_body_gets_411_not_a_hang(gateway, mock):
    mock.clear()
    body = body_of_size(100_000)
    r = httpx.post(gateway.url + "/v1/chat/completions", content=iter([body[:50_000], body[50_000:]]),
                   headers=openai_headers(), timeout=30)
    assert r.status_code == 411
    assert r.json()["error"]["code"] == "length_required"
    assert mock.requests() == []


def _header(record, name):
    return [v for n, v in record["headers"] if n.lower() == name]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("size", [1000, 200_000])
def test_compressed_body_is_routed_and_forwarded_decoded(gateway, mock, coding, size):
    """A compressed body is decoded to read `model`, and the upstream gets the JSON itself
    (no Content-Encoding, its own Content-Length): every upstream takes an identity body."""
    body = body_of_size(size, model="claude-sonnet-4-5-20250929")
    compressed = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    assert len(compressed) < size
    r = httpx.post(gateway.url + "/v1/messages", content=compressed,
                   headers={**anthropic_headers(), "content-encoding": coding}, timeout=30)
    assert r.status_code == 200, r.text
    got = mock.last()
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert _header(got, "content-encoding") == []
    assert _header(got, "content-length") == [str(size)]


def test_compressed_body_translated_and_in_the_ledger_like_any_other(gateway, mock):
    """An OpenAI caller's gzip body to a Claude model is decoded, then translated."""
    body = json.dumps({"model": "claude-sonnet-4-5-20250929", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    r = httpx.post(gateway.url + "/v1/chat/completions", content=gzip.compress(body),
                   headers={**openai_headers(), "content-encoding": "gzip"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"
    sent = json.loads(mock.last()["body"])
    assert sent["messages"] == [{"role": "user", "content": "hello"}] and sent["max_tokens"] == 20


@pytest.mark.parametrize("path,body,headers,check", [
    # A media task: the submit reads the decoded body (the task answers with its id).
    ("/v1/images/generations", {"model": "gpt-image-2", "prompt": "a city"}, openai_headers(),
     lambda r: r.json()["id"].startswith("task_")),
    # A local token estimate counts the decoded body's text, not the compressed bytes.
    ("/v1/messages/count_tokens", {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hello " * 100}]},
     anthropic_headers(), lambda r: 100 <= r.json()["input_tokens"] <= 120),
])
def test_compressed_body_on_the_other_body_routes(gateway, path, body, headers, check):
    raw = json.dumps(body).encode()
    r = httpx.post(gateway.url + path, content=gzip.compress(raw), headers={**headers, "content-encoding": "gzip"},
                   timeout=30)
    assert r.status_code == 200, r.text
    assert check(r), r.text


def test_compressed_body_refusals_in_each_dialect_and_the_connection_keeps_serving(gateway, mock):
    """A coding the gateway cannot undo gets 415 before the body is read; a body that is not what
    its coding says gets 400; a bomb stops at max_request_body (413); nothing reaches the upstream,
    and the same connection serves the next request."""
    mock.clear()
    cases = [
        ("/v1/chat/completions", body_of_size(1000), openai_headers()),
        ("/v1/messages", body_of_size(1000, model="claude-sonnet-4-5-20250929"), anthropic_headers()),
    ]
    bomb = gzip.compress(b" " * (33 * 1024 * 1024))  # over the suite's 32 MiB max_request_body
    with httpx.Client(timeout=60) as c:
        for path, body, headers in cases:
            anthropic = path == "/v1/messages"
            r = c.post(gateway.url + path, content=body, headers={**headers, "content-encoding": "compress"})
            assert r.status_code == 415, r.text
            message = ("Content-Encoding `compress` is not supported: send the request body uncompressed, "
                       "or as gzip, deflate, br or zstd.")
            if anthropic:
                assert r.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": message},
                                    "request_id": r.headers["request-id"]}
            else:
                assert r.json()["error"]["code"] == "unsupported_content_encoding"
                assert r.json()["error"]["message"] == message
            r = c.post(gateway.url + path, content=body, headers={**headers, "content-encoding": "gzip"})
            assert r.status_code == 400, r.text
            if not anthropic:
                assert r.json()["error"]["code"] == "invalid_content_encoding"
            r = c.post(gateway.url + path, content=bomb, headers={**headers, "content-encoding": "gzip"})
            assert r.status_code == 413, r.text
            # `identity` is no coding: the same body as it is, on the same client.
            r = c.post(gateway.url + path, content=body, headers={**headers, "content-encoding": "identity"})
            assert r.status_code == 200, r.text
    assert len(mock.requests()) == 2


def test_h2_large_body_without_length_gets_411_not_a_hang(gateway, mock):
    mock.clear()
    body = body_of_size(100_000, model="claude-sonnet-4-5-20250929")
    with httpx.Client(http1=False, http2=True, timeout=30) as c:
        r = c.post(gateway.url + "/v1/messages", content=iter([body[:60_000], body[60_000:]]),
                   headers=anthropic_headers())
    assert r.status_code == 411
    assert r.json()["type"] == "error"
    assert mock.requests() == []


def test_expect_100_continue_is_answered_without_stall(gateway, mock, tmp_path):
    body = body_of_size(2_000_000)
    f = tmp_path / "body.json"
    f.write_bytes(body)
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "--max-time", "20",
         "-H", f"Authorization: Bearer {KEY_A}", "-H", "content-type: application/json",
         "-H", "Expect: 100-continue", "--data-binary", f"@{f}", gateway.url + "/v1/chat/completions"],
        capture_output=True, text=True, timeout=30).stdout.split()
    assert out[0] == "200"
    # curl waits 1 s for a 100 Continue that never comes; the gateway must answer it at once.
    assert float(out[1]) < 0.9, out
    got = mock.last()
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert "expect" not in {k.lower() for k, _ in got["headers"]}


def test_keepalive_connection_carries_many_bodies(gateway, mock):
    """Replay state must not leak between requests on one connection."""
    with httpx.Client(timeout=30) as c:
        for size in [100_000, 1000, 70_000, 65536, 10]:
            body = body_of_size(max(size, 100))
            r = c.post(gateway.url + "/v1/chat/completions", content=body, headers=openai_headers())
            assert r.status_code == 200
            assert mock.last()["body_sha256"] == hashlib.sha256(body).hexdigest()
