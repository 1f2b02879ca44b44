"""Upstream faults become 502/504 in the caller's dialect within the timeouts; a cut stream ends with
the dialect's error event; slow or broken callers never wedge the gateway."""
import json
import re
import socket
import time

import httpx
import pytest

from conftest import (KEY_A, UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY, anthropic_headers, chat_body, claude_body,
                      openai_headers, raw_http)


def test_refused_upstream_is_502_in_dialect(gateway):
    t0 = time.time()
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body("dead-model"), headers=openai_headers(), timeout=10)
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "server_error"
    assert time.time() - t0 < 3


@pytest.mark.parametrize("fault", ["reset", "garbage"])
def test_broken_upstream_is_502(gateway, fault):
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body(),
                   headers=anthropic_headers(**{"x-mock-fault": fault}), timeout=10)
    assert r.status_code == 502, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "api_error"


# 700 ms runs on Pingora's fast timer, 1 s on Tokio's (the gateway moves timeouts of a second and
# more there): both must fire.
@pytest.mark.parametrize("model,read_timeout", [("slow-model", 0.7), ("slow-model-1s", 1.0)])
def test_silent_upstream_is_504_within_read_timeout(gateway, model, read_timeout):
    t0 = time.time()
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(model),
                   headers=openai_headers(**{"x-mock-fault": "hang"}), timeout=10)
    took = time.time() - t0
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert read_timeout - 0.2 < took < read_timeout + 2.5, took


@pytest.mark.parametrize("status", [400, 429, 500, 529])
def test_upstream_errors_pass_through_with_status_and_message(gateway, mock, status):
    mock.clear()
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body(),
                   headers=anthropic_headers(**{"x-mock-status": str(status)}), timeout=10)
    assert r.status_code == status
    assert f"mock upstream error {status}" in r.json()["error"]["message"]
    assert len(mock.requests()) == 1, "a pinned model must not be retried or failed over"


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("path,body,headers", [
    ("/v1/messages", claude_body(), anthropic_headers),
    ("/v1/chat/completions", chat_body(), openai_headers),
    ("/v1/chat/completions", chat_body("claude-sonnet-4-5-20250929"), openai_headers),  # translated
    ("/v1/messages", claude_body("gpt-5.5", stream=True), anthropic_headers),  # translated stream
])
def test_an_upstream_refusing_the_gateways_credentials_is_a_502_not_the_callers_key_error(gateway, mock, status, path,
                                                                                          body, headers):
    """The caller's key was fine: an upstream 401/403 refuses the gateway's own key (expired, wrong,
    without access). Relayed, it told every caller their key was bad, and OpenAI's 401 body names the
    key it got (masked, with its last characters)."""
    mock.clear()
    r = httpx.post(gateway.url + path, json=body, headers=headers(**{"x-mock-status": str(status)}), timeout=10)
    assert r.status_code == 502, r.text
    assert "mock upstream error" not in r.text and "Your key is fine" in r.text
    if "messages" in path:
        assert r.json()["error"]["type"] == "api_error" and r.headers["request-id"] == r.headers["x-request-id"]
    else:
        assert r.json()["error"]["code"] == "upstream_credentials_refused"
    assert len(mock.requests()) == 1
    assert gateway.metric("cheapmodel_rejected_total", reason="upstream_credentials") >= 1


OPENAI_ERROR = lambda j: j["error"]["code"] == "upstream_unavailable"  # noqa: E731
ANTHROPIC_ERROR = lambda j: j["type"] == "error" and j["error"]["type"] == "api_error"  # noqa: E731


@pytest.mark.parametrize("path,body,headers,is_error", [
    ("/v1/chat/completions", chat_body(), openai_headers(), OPENAI_ERROR),
    ("/v1/chat/completions", chat_body("claude-sonnet-4-5-20250929"), openai_headers(), OPENAI_ERROR),
    ("/v1/messages", claude_body(), anthropic_headers(), ANTHROPIC_ERROR),
    ("/v1/messages", claude_body("gpt-5.5"), anthropic_headers(), ANTHROPIC_ERROR),
])
def test_an_upstream_that_dies_mid_answer_is_a_502_in_the_callers_dialect(gateway, mock, path, body, headers,
                                                                           is_error):
    """A JSON answer is sent only once it is whole (`proxy::whole`), same dialect or translated: an
    upstream that closes halfway through it is a clean 502 the caller can read and retry. Through
    Pingora's proxy path the 200 head had already gone out, and the caller got a body cut short."""
    r = httpx.post(gateway.url + path, json=body, headers=dict(headers, **{"x-mock-fault": "cut-stream"}), timeout=10)
    assert r.status_code == 502 and is_error(r.json()), r.text
    assert r.headers["content-length"] == str(len(r.content))
    r = httpx.post(gateway.url + path, json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path,body,headers,tail", [
    ("/v1/messages", claude_body(stream=True), anthropic_headers(), b"event: error\ndata: {\"type\":\"error\""),
    ("/v1/chat/completions", chat_body(stream=True), openai_headers(), b"data: {\"error\""),
])
def test_cut_stream_ends_with_error_event_and_is_metered(fresh_gateway, path, body, headers, tail):
    g = fresh_gateway()
    headers = dict(headers, **{"x-mock-fault": "cut-stream", "x-mock-echo-usage": "77,5,0,0"})
    with httpx.Client(timeout=10) as c:
        try:
            r = c.post(g.url + path, json=body, headers=headers)
            content = r.content
        except httpx.RemoteProtocolError as e:  # the caller may also just see the cut
            pytest.fail(f"the gateway cut the stream without an error event: {e}")
    assert tail in content, content[-300:]
    assert b"message_stop" not in content and b"[DONE]" not in content
    if "messages" in path:
        deadline = time.time() + 5
        while g.metric("cheapmodel_tokens_total", type="input", model="claude-sonnet-4-5-20250929") != 77:
            assert time.time() < deadline
            time.sleep(0.1)


def test_stream_that_stalls_gets_error_event_after_read_timeout(gateway):
    r = httpx.post(gateway.url + "/v1/messages", json=claude_body("slow-claude", stream=True),
                   headers=anthropic_headers(**{"x-mock-event-delay-ms": "2000"}), timeout=10)
    assert r.status_code == 200
    assert b"event: error" in r.content


def test_slow_caller_is_dropped_and_gateway_keeps_serving(gateway, mock):
    mock.clear()
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY_A.encode() +
              b"\r\nContent-Length: 1000\r\n\r\n{\"model\":")
    t0 = time.time()
    data = s.recv(65536)   # the gateway gives up on the body (client_read_timeout_ms = 2000)
    assert time.time() - t0 < 6
    s.close()
    # The caller's fault, answered as such in its dialect: 408, not the gateway's own 500.
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data
    assert b"connection: close" in head.lower(), head
    assert json.loads(body)["error"]["code"] == "request_timeout", body
    assert mock.requests() == []
    r = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(), timeout=10)
    assert r.status_code == 200


def test_slow_caller_gets_408_in_the_anthropic_dialect_too(gateway, mock):
    mock.clear()
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + KEY_A.encode() +
              b"\r\nContent-Length: 100\r\n\r\n{\"model\":\"claude-sonnet-4-5-20250929\"")
    data = s.recv(65536)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data
    request_id = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                  if line.lower().startswith(b"request-id:")]
    assert json.loads(body) == {"type": "error", "error": {"type": "invalid_request_error", "message": (
        "The request body did not arrive in time: the connection went quiet before the whole body came in.")},
        "request_id": request_id[0]}
    assert mock.requests() == []


def test_half_closed_caller(gateway, mock):
    mock.clear()
    from conftest import raw_http
    resp = raw_http(gateway.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                    KEY_A.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"model\":\"gpt-5.5\"", timeout=5, half_close=True)
    assert not resp.startswith(b"HTTP/1.1 200")
    assert mock.requests() == []
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200


def test_garbage_and_oversized_headers_do_not_wedge(gateway):
    from conftest import raw_http
    for junk in [b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"]:
        raw_http(gateway.port, junk, timeout=5)
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200


def test_connections_on_which_no_request_starts_are_closed(fresh_gateway):
    """With h2c on, Pingora waits for a connection's first bytes with no timeout, on a new
    connection and between the requests of a kept-alive one: a caller could hold file descriptors
    for ever. `client_idle_timeout_ms` bounds that wait; a request that starts in time is served."""
    g = fresh_gateway(client_idle_timeout_ms=1500)

    def closed_within(s, seconds):
        s.settimeout(seconds)
        t0 = time.time()
        try:
            rest = s.recv(65536)
        except socket.timeout:
            return None
        return rest, time.time() - t0

    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY_A.encode() +
               b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n")
    body = json.dumps(chat_body()).encode()
    # Nothing sent at all; a few bytes, then silence (fewer than the 24 Pingora looks at).
    for first in (b"", b"POST /v1/c"):
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
            s.sendall(first)
            got = closed_within(s, 8)
            assert got is not None and got[0] == b"", f"still open after 8 s with {first!r} sent"
            assert 1.0 < got[1] < 6, got
    # Kept alive after an answer: closed once idle, not before; a request in time is served.
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        for pause in (0, 0.5):
            time.sleep(pause)
            s.sendall(request % len(body) + body)
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            rest = head.partition(b"\r\n\r\n")[2]
            while len(rest) < length:
                rest += s.recv(65536)
        got = closed_within(s, 8)
        assert got is not None and got[0] == b"", "a kept-alive connection stayed open after 8 s idle"
    # HTTP/2 (h2c, prior knowledge): a connection with no stream open is closed the same way.
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # + SETTINGS
        s.settimeout(8)
        t0 = time.time()
        try:
            while s.recv(65536):   # the server's SETTINGS, its ack, then GOAWAY and the close
                pass
        except socket.timeout:
            pytest.fail("an idle h2c connection stayed open after 8 s")
        assert time.time() - t0 < 6
    assert httpx.get(g.url + "/healthz", timeout=5).status_code == 200


def test_pipelined_requests_are_all_answered_in_order(gateway, mock):
    """Requests sent back to back on one connection, before any answer was read: each is served,
    in order, each body going upstream whole (Pingora's default dropped all but the first)."""
    mock.clear()
    chat = json.dumps(chat_body()).encode()
    claude = json.dumps(claude_body()).encode()

    def post(path, auth, body):
        return (b"POST %s HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Type: application/json\r\n"
                b"anthropic-version: 2023-06-01\r\nContent-Length: %d\r\n\r\n" % (path, auth, len(body))) + body

    pipeline = (post(b"/v1/chat/completions", b"Authorization: Bearer " + KEY_A.encode(), chat)
                + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY_A.encode() + b"\r\n\r\n"
                + post(b"/v1/messages", b"x-api-key: " + KEY_A.encode(), claude))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(pipeline)
        data = b""
        deadline = time.time() + 10
        while data.count(b"HTTP/1.1 ") < 3 or not data.rstrip().endswith(b"}"):
            assert time.time() < deadline, data
            chunk = s.recv(65536)
            assert chunk, f"closed after {data.count(b'HTTP/1.1 ')} answers: {data[-300:]!r}"
            data += chunk
    heads = re.findall(rb"HTTP/1\.1 (\d+) ", data)
    assert heads == [b"200", b"200", b"200"], data
    assert data.index(b"chat.completion") < data.index(b'"object":"list"') < data.index(b'"type":"message"')
    received = mock.requests()
    assert [r["path"] for r in received] == ["/v1/chat/completions", "/v1/messages"], received
    assert [r["body"] for r in received] == [chat.decode(), claude.decode()], "each body went upstream whole"


# --- h2 callers and broken framing (found by probing the gateway with raw h2 and HTTP/1.1) -------

def h2_open(port):
    import h2.config
    import h2.connection
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def h2_headers(path, request_id, **extra):
    return [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", path),
            ("authorization", f"Bearer {KEY_A}"), ("content-type", "application/json"),
            ("x-request-id", request_id)] + list(extra.items())


def h2_answer(s, c, stream_id, timeout):
    """(status, body) of one stream, or None if nothing ended it within `timeout` seconds."""
    import h2.events
    status, body, deadline = None, b"", time.time() + timeout
    while time.time() < deadline:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == stream_id:
                status = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == stream_id:
                body += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == stream_id:
                s.sendall(c.data_to_send())
                return status, body
        s.sendall(c.data_to_send())
    return None


def test_h2_caller_whose_body_never_ends_gets_408(gateway, mock):
    """Pingora times out HTTP/1 body reads only: an h2 stream whose body never ended was held open
    for good (200 s and counting in the probe). Now it gets the same 408 after
    client_read_timeout_ms (2 s here), in its dialect."""
    mock.clear()
    s, c = h2_open(gateway.port)
    with s:
        c.send_headers(1, h2_headers("/v1/chat/completions", "h2-stalled-body"))
        c.send_data(1, b'{"model":"gpt-5.5","messages":[')     # and never END_STREAM
        s.sendall(c.data_to_send())
        t0 = time.time()
        answer = h2_answer(s, c, 1, timeout=8)
    assert answer is not None, "no answer within 8 s"
    status, body = answer
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout", (status, body)
    assert time.time() - t0 < 6
    assert mock.requests() == []


@pytest.mark.parametrize("model", ["gpt-5.5", "claude-sonnet-4-5-20250929"])  # same dialect, translated
def test_h2_caller_that_resets_its_stream_is_billed_like_one_that_hangs_up(fresh_gateway, mock, model):
    """An HTTP/1.1 caller that leaves before the answer is billed its input (the upstream had the
    request); an h2 caller that reset its stream was billed nothing, so long prompts could be sent
    and reset for free. The translated answer is read whole by the gateway itself (`proxy::whole`),
    which watches the caller as Pingora's proxy does."""
    g = fresh_gateway()
    mock.clear()
    s, c = h2_open(g.port)
    with s:
        c.send_headers(1, h2_headers("/v1/chat/completions", "h2-reset-early", **{"x-mock-delay-ms": "1500"}))
        c.send_data(1, json.dumps(chat_body(model, messages=[{"role": "user", "content": "word " * 400}])).encode(),
                    end_stream=True)
        s.sendall(c.data_to_send())
        deadline = time.time() + 5
        while not [r for r in mock.requests() if r["path"] in ("/v1/chat/completions", "/v1/messages")]:
            assert time.time() < deadline, "the request never reached the upstream"
            time.sleep(0.05)
        c.reset_stream(1)
        s.sendall(c.data_to_send())
        deadline = time.time() + 10
        while not (line := [l for l in g.access_log() if l.get("request_id") == "h2-reset-early"]):
            assert time.time() < deadline, "no access-log line"
            time.sleep(0.1)
    (line,) = line
    assert line["error"] == "client_closed", line
    assert line["input_tokens"] > 400 and line["cost_usd"] > 0, line


def test_broken_chunked_framing_is_400_and_closes_the_connection(gateway, mock):
    """After a body whose framing cannot be read, nothing later on the connection can be trusted
    to be a request (a request smuggled behind a front proxy): the 400 closes it."""
    mock.clear()
    data = raw_http(gateway.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    + KEY_A.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY_A.encode() + b"\r\n\r\n",
                    timeout=5)
    head = data.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 400 ") and b"connection: close" in head, data
    assert data.count(b"HTTP/1.1 ") == 1, data      # the bytes after it were not served as a request
    assert mock.requests() == []


@pytest.mark.parametrize("path,model", [
    ("/v1/chat/completions", "gpt-5.5"),                        # same dialect: the body as sent
    ("/v1/messages", "claude-sonnet-4-5-20250929"),
    ("/v1/chat/completions", "claude-sonnet-4-5-20250929"),     # translated: the message
    ("/v1/messages", "gpt-5.5"),
])
def test_an_upstream_error_that_quotes_the_gateways_key_reaches_the_caller_masked(gateway, path, model):
    """An upstream key never reaches a caller, also when the upstream's error echoes the
    credentials it got (some debug-style messages do): masked, same length, status and message
    kept. Only 401 and 403 answers were dropped before; a 500 that quoted the key passed it on."""
    body = chat_body(model) if path.endswith("completions") else claude_body(model)
    headers = (openai_headers if path.endswith("completions") else anthropic_headers)(**{"x-mock-fault": "echo-key"})
    r = httpx.post(gateway.url + path, json=body, headers=headers, timeout=10)
    assert r.status_code == 500, r.text
    secret = UPSTREAM_OPENAI_KEY if model == "gpt-5.5" else UPSTREAM_ANTHROPIC_KEY
    message = r.json()["error"]["message"]
    assert secret not in r.text and message.startswith("debug: the request carried "), r.text
    assert "*" * len(secret) in message, message
