"""Usage is read from JSON and SSE of both dialects, priced per token class, exported to Prometheus
with the key's name, logged once per request, and kept even when the caller leaves mid-stream."""
import json
import socket
import subprocess
import time

import httpx
import pytest

from conftest import KEY_A, KEY_B, PRICE_CLAUDE, PRICE_GPT, anthropic_headers, chat_body, claude_body, openai_headers

USAGE = "1000,200,300,50"   # input, output, cache_read, cache_write (mock header)


def cost(price, inp, out, cr, cw):
    return (inp * price["input_per_mtok"] + out * price["output_per_mtok"] + cr * price["cache_read_per_mtok"]
            + cw * price["cache_write_per_mtok"]) / 1e6


@pytest.mark.parametrize("stream", [False, True])
def test_openai_usage_and_cost(fresh_gateway, stream):
    g = fresh_gateway()
    r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(stream=stream),
                   headers=openai_headers(KEY_B, **{"x-mock-echo-usage": USAGE}), timeout=10)
    assert r.status_code == 200
    # OpenAI prompt_tokens (1000) includes the 300 cached ones.
    labels = {"model": "gpt-5.5", "key": "team-b"}
    assert g.eventually_metric("cheapmodel_tokens_total", 700, type="input", **labels) == 700
    assert g.eventually_metric("cheapmodel_tokens_total", 300, type="cache_read", **labels) == 300
    assert g.eventually_metric("cheapmodel_tokens_total", 200, type="output", **labels) == 200
    assert g.eventually_metric("cheapmodel_cost_usd_total", pytest.approx(cost(PRICE_GPT, 700, 200, 300, 0)), **labels) == pytest.approx(cost(PRICE_GPT, 700, 200, 300, 0))
    assert g.metric("cheapmodel_requests_total", model="gpt-5.5", upstream="openai", status="200") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_usage_and_cost(fresh_gateway, stream):
    g = fresh_gateway()
    r = httpx.post(g.url + "/v1/messages", json=claude_body(stream=stream),
                   headers=anthropic_headers(**{"x-mock-echo-usage": USAGE}), timeout=10)
    assert r.status_code == 200
    labels = {"model": "claude-sonnet-4-5-20250929", "key": "team-a"}
    assert g.eventually_metric("cheapmodel_tokens_total", 1000, type="input", **labels) == 1000
    assert g.eventually_metric("cheapmodel_tokens_total", 300, type="cache_read", **labels) == 300
    assert g.eventually_metric("cheapmodel_tokens_total", 50, type="cache_write", **labels) == 50
    assert g.eventually_metric("cheapmodel_tokens_total", 200, type="output", **labels) == 200
    assert g.eventually_metric("cheapmodel_cost_usd_total", pytest.approx(cost(PRICE_CLAUDE, 1000, 200, 300, 50)), **labels) == pytest.approx(cost(PRICE_CLAUDE, 1000, 200, 300, 50))
    time.sleep(0.3)
    line = [l for l in g.access_log() if l["model"] == "claude-sonnet-4-5-20250929"][-1]
    assert line["key"] == "team-a" and line["status"] == 200 and line["upstream"] == "anthropic"
    assert line["input_tokens"] == 1000 and line["output_tokens"] == 200
    assert line["cost_usd"] == pytest.approx(cost(PRICE_CLAUDE, 1000, 200, 300, 50))
    assert line["request_id"] == r.headers["x-request-id"]
    for field in ("time", "latency_ms", "ttfb_ms"):
        assert line[field] > 0


def test_caller_leaving_mid_stream_is_still_metered(fresh_gateway):
    g = fresh_gateway()
    body = json.dumps(claude_body(stream=True)).encode()
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + KEY_A.encode() +
              b"\r\nx-mock-event-delay-ms: 300\r\nx-mock-echo-usage: 1234,99,0,0\r\ncontent-type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"message_start" not in got:
        got += s.recv(65536)
    s.close()
    labels = {"model": "claude-sonnet-4-5-20250929", "key": "team-a"}
    deadline = time.time() + 10
    while g.metric("cheapmodel_tokens_total", type="input", **labels) != 1234:
        assert time.time() < deadline, "the abandoned stream was not metered"
        time.sleep(0.1)


def test_metrics_pass_promtool_and_carry_only_registered_names(fresh_gateway):
    g = fresh_gateway()
    httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(), timeout=10)
    httpx.post(g.url + "/v1/chat/completions", json=chat_body("gpt-unregistered-xyz"), headers=openai_headers(), timeout=10)
    httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers("cm_bogus_key"), timeout=10)
    text = g.metrics_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "gpt-unregistered-xyz" not in text and "cm_bogus_key" not in text and KEY_A not in text
    assert g.metric("cheapmodel_rejected_total", reason="unknown_model") == 1
    assert g.metric("cheapmodel_rejected_total", reason="invalid_key") == 1
    for name in ("cheapmodel_request_duration_seconds_bucket", "cheapmodel_upstream_ttfb_seconds_bucket",
                 "cheapmodel_overhead_seconds_bucket"):
        assert g.metric(name, model="gpt-5.5") > 0, name
    # Overhead buckets tell 50 microseconds from 500.
    assert 'cheapmodel_overhead_seconds_bucket{model="gpt-5.5",le="0.00005"}' in text
    assert 'cheapmodel_overhead_seconds_bucket{model="gpt-5.5",le="0.0005"}' in text


def test_upstream_error_counts_with_its_status(fresh_gateway):
    g = fresh_gateway()
    r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(**{"x-mock-status": "429"}), timeout=10)
    assert r.status_code == 429
    assert g.metric("cheapmodel_requests_total", model="gpt-5.5", status="429") == 1
