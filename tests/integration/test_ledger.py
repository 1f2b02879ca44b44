"""The usage ledger: one row per billable event, exact integer money, nothing lost and nothing
counted twice. Real binaries, a real SQLite file (read back here with Python's own sqlite3), a real
Postgres cluster (initdb/pg_ctl in a temp dir), real k6 load.

Money is checked exactly: prices are turned into pico-dollars with Decimal, never floats, and the
ledger, the Prometheus counter and `cheapmodel usage` must all give the same number of
pico-dollars."""
import concurrent.futures
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from conftest import (GATEWAY_BIN, KEY_A, KEY_B, PRICE_CLAUDE, PRICE_GPT, UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY,
                      Gateway, anthropic_headers, base_config, chat_body, claude_body, free_port, openai_headers, sha256_hex)
from pg import Postgres
from test_tasks import poll, poll_until_done, submit

PICO = Decimal(10) ** 12


def per_token(price_per_mtok) -> int:
    """Pico-dollars per token for a USD-per-million-tokens price, exactly."""
    v = Decimal(str(price_per_mtok)) * PICO / Decimal(10 ** 6)
    assert v == v.to_integral_value()
    return int(v)


def per_unit(usd) -> int:
    return int(Decimal(str(usd)) * PICO)


def token_cost(price, inp, out, cr, cw) -> int:
    return (inp * per_token(price["input_per_mtok"]) + out * per_token(price["output_per_mtok"])
            + cr * per_token(price["cache_read_per_mtok"]) + cw * per_token(price["cache_write_per_mtok"]))


def as_usage(upstream_dialect, echo):
    """The mock's `x-mock-echo-usage: in,out,cache_read,cache_write` as the gateway counts it:
    OpenAI's prompt_tokens include the cached ones, and OpenAI has no cache writes."""
    inp, out, cr, cw = echo
    return (inp - cr, out, cr, 0) if upstream_dialect == "openai" else (inp, out, cr, cw)


def ledger_rows(path: Path):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY time_ms")]


def wait_rows(count_fn, n, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        got = count_fn()
        if got >= n or time.time() > deadline:
            return got
        time.sleep(0.1)


def exact_metric(g, name, **labels) -> Decimal:
    """Sum of a metric's samples, read from the exposition text as decimals (not floats)."""
    total = Decimal(0)
    for line in g.metrics_text().splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_text, value = line[len(name) + 1:].rsplit("} ", 1)
        pairs = dict(p.split("=", 1) for p in labels_text.split(","))
        if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
            total += Decimal(value)
    return total


def usage_cli(config_path, *args):
    r = subprocess.run([GATEWAY_BIN, "usage", "--config", str(config_path), *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def start_gateway(mock, directory: Path, ledger=None, **server):
    directory.mkdir(parents=True, exist_ok=True)
    config = base_config(mock, free_port(), free_port(), **server)
    if ledger is not None:
        config["ledger"] = ledger
    return Gateway(config, directory)


def test_mixed_run_ledger_metric_and_report_agree_exactly(own_mock, tmp_path):
    g = start_gateway(own_mock, tmp_path / "gw")
    try:
        expected = 0   # pico-dollars
        sent = 0
        # (path, model, upstream dialect, stream, caller headers, body)
        chats = [
            ("/v1/chat/completions", "gpt-5.5", "openai", False),
            ("/v1/chat/completions", "gpt-5.5", "openai", True),
            ("/v1/messages", "claude-sonnet-4-5-20250929", "anthropic", False),
            ("/v1/messages", "claude-sonnet-4-5-20250929", "anthropic", True),
            ("/v1/messages", "gpt-5.5", "openai", False),                       # translated
            ("/v1/messages", "gpt-5.5", "openai", True),                        # translated stream
            ("/v1/chat/completions", "claude-sonnet-4-5-20250929", "anthropic", False),  # translated
            ("/v1/chat/completions", "claude-sonnet-4-5-20250929", "anthropic", True),
        ]
        for i, (path, model, dialect, stream) in enumerate(chats):
            for key in (KEY_A, KEY_B if model == "gpt-5.5" else KEY_A):
                echo = (1000 + 37 * i, 200 + 11 * i, 300 + i, 50 + i)
                extra = {"x-mock-echo-usage": ",".join(map(str, echo))}
                if path == "/v1/messages":
                    r = httpx.post(g.url + path, json=claude_body(model, stream=stream),
                                   headers=anthropic_headers(key, **extra), timeout=10)
                else:
                    r = httpx.post(g.url + path, json=chat_body(model, stream=stream),
                                   headers=openai_headers(key, **extra), timeout=10)
                assert r.status_code == 200, r.text
                price = PRICE_GPT if model == "gpt-5.5" else PRICE_CLAUDE
                expected += token_cost(price, *as_usage(dialect, echo))
                sent += 1
        # A stream the caller cuts off: still a row, priced from what the upstream reported.
        with httpx.stream("POST", g.url + "/v1/messages", json=claude_body(stream=True), timeout=10,
                          headers=anthropic_headers(**{"x-mock-event-delay-ms": "200",
                                                       "x-mock-echo-usage": "1234,99,0,0"})) as r:
            for chunk in r.iter_bytes():
                if b"message_start" in chunk:
                    break
        sent += 1
        # Media tasks of each pricing kind: per image, per second + per request, per request.
        tasks = [
            ("/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat"}, "image", 0.04, 0, 0),
            ("/v1/videos/generations", {"model": "kling-v2", "prompt": "a dog", "duration": 5}, "video", 0, 0.05, 0.01),
            ("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat", "n": 2, "size": "1:1"}, "image",
             0.02, 0, 0),
            ("/v1/audios/generations", {"model": "tts-1", "prompt": "Hello"}, "audio", 0, 0, 0.001),
        ]
        for path, body, media, per_image, per_second, per_request in tasks:
            t = submit(g, path, body).json()
            done, _ = poll_until_done(g, t["id"])
            assert done["status"] == "completed", done
            images = len(done["results"]) if media == "image" else 0
            seconds = body.get("duration", 0)
            expected += images * per_unit(per_image) + seconds * per_unit(per_second) + per_unit(per_request)
            sent += 1
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), sent) == sent
        rows = ledger_rows(db)
        assert len({r["id"] for r in rows}) == sent
        cut = [r for r in rows if r["input_tokens"] == 1234]
        assert len(cut) == 1 and cut[0]["stream"] == 1
        expected += token_cost(PRICE_CLAUDE, 1234, cut[0]["output_tokens"], 0, 0)
        # Every row's cost is its own tokens and units at the model's price, to the pico-dollar.
        prices = {"gpt-5.5": PRICE_GPT, "claude-sonnet-4-5-20250929": PRICE_CLAUDE}
        for r in rows:
            if r["model"] in prices:
                assert r["cost_pusd"] == token_cost(prices[r["model"]], r["input_tokens"], r["output_tokens"],
                                                    r["cache_read_tokens"], r["cache_write_tokens"]), r
        assert {r["translated"] for r in rows} == {0, 1}
        assert sum(r["cost_pusd"] for r in rows) == expected
        # The Prometheus counter says the same, to the last pico-dollar.
        deadline = time.time() + 5
        while exact_metric(g, "cheapmodel_cost_usd_total") * PICO != expected and time.time() < deadline:
            time.sleep(0.1)
        assert exact_metric(g, "cheapmodel_cost_usd_total") * PICO == expected
        # And so does the report, as exact JSON numbers.
        report = json.loads(usage_cli(g.config_path, "--format", "json"), parse_float=Decimal)
        assert len(report) == 1
        assert report[0]["requests"] == sent
        assert report[0]["cost_usd"] * PICO == expected
        assert report[0]["input_tokens"] == sum(r["input_tokens"] for r in rows)
        assert report[0]["images"] == sum(r["images"] for r in rows) > 0
        assert report[0]["seconds"] == 5
        by = json.loads(usage_cli(g.config_path, "--format", "json", "--by", "key", "--by", "model"),
                        parse_float=Decimal)
        assert {(x["key"], x["model"]) for x in by} >= {("team-a", "gpt-5.5"), ("team-b", "gpt-5.5"),
                                                       ("team-a", "gpt-image-2")}
        assert sum(x["cost_usd"] for x in by) * PICO == expected
        csv = usage_cli(g.config_path, "--format", "csv", "--by", "day")
        assert csv.splitlines()[0] == ("day,requests,input_tokens,output_tokens,cache_read_tokens,"
                                       "cache_write_tokens,images,seconds,cost_usd")
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert json.loads(usage_cli(g.config_path, "--format", "json", "--from", "2000-01-01", "--to", "2000-01-02")) == []
        assert json.loads(usage_cli(g.config_path, "--format", "json", "--from", today, "--to", today))[0]["requests"] == sent
        swapped = subprocess.run([GATEWAY_BIN, "usage", "--config", str(g.config_path), "--from", today,
                                  "--to", "2000-01-01"], capture_output=True, text=True, timeout=30)
        assert swapped.returncode == 2 and "--from must not be after --to" in swapped.stderr, swapped
    finally:
        g.stop()


FOX = "The quick brown fox jumps over the lazy dog."


@pytest.mark.parametrize("path,headers,body,content", [
    ("/v1/chat/completions", openai_headers, chat_body("gpt-5.5", stream=True), b'"content":"Hello"'),
    ("/v1/messages", anthropic_headers, claude_body("gpt-5.5", stream=True), b'"text":"Hello"'),  # translated
])
def test_a_stream_cut_before_openais_usage_is_billed_a_flagged_lower_bound(own_mock, tmp_path, path, headers, body,
                                                                          content):
    """OpenAI reports a stream's usage only in its last chunk. A caller that leaves before it (an
    interrupted agent, or one that stops reading at `finish_reason` to dodge the bill) used to be
    billed 0. Now the row is an estimate, marked as one: the input counted from the body sent
    upstream, at least one output token per content chunk relayed."""
    g = start_gateway(own_mock, tmp_path / "gw")
    try:
        body = dict(body, messages=[{"role": "user", "content": FOX}])
        # The mock would report 5000 input tokens, at the end the caller never waits for.
        extra = {"x-mock-event-delay-ms": "300", "x-mock-echo-usage": "5000,300,0,0"}
        with httpx.stream("POST", g.url + path, json=body, headers=headers(**extra), timeout=10) as r:
            assert r.status_code == 200
            seen = b""
            for chunk in r.iter_raw():
                seen += chunk
                if content in seen:
                    break
        # The same request read to its end is billed what the upstream reported, exactly.
        r = httpx.post(g.url + path, json=body, headers=headers(**extra), timeout=10)
        assert r.status_code == 200 and b"Hello" in r.content
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), 2) == 2
        whole, cut = sorted(ledger_rows(db), key=lambda row: row["estimated"])
        assert (whole["estimated"], whole["input_tokens"], whole["output_tokens"]) == (0, 5000, 300)
        assert cut["estimated"] == 1 and cut["stream"] == 1, cut
        # OpenAI's recipe over o200k: 10 tokens of text, 3 framing the message, 3 priming the reply.
        assert cut["input_tokens"] == 10 + 3 + 3, cut
        # The mock's stream has 5 content chunks; the caller saw the first before it left.
        assert 1 <= cut["output_tokens"] <= 5, cut
        assert cut["cost_pusd"] == token_cost(PRICE_GPT, cut["input_tokens"], cut["output_tokens"], 0, 0) > 0
        # Marked wherever the bill shows: the metric, and the access log line.
        assert g.eventually_metric("cheapmodel_estimated_requests_total", 1, model="gpt-5.5", key="team-a") == 1
        lines = [line for line in g.access_log() if line.get("model") == "gpt-5.5"]
        assert [line.get("estimated", False) for line in lines] == [True, False], lines
        assert lines[0]["output_tokens"] == cut["output_tokens"]
        # The report's table counts them (its JSON and CSV fields stay the documented ones).
        table = usage_cli(g.config_path, "--by", "model").splitlines()
        assert table[0].split()[-2:] == ["cost_usd", "estimated"], table
        assert table[1].split()[0] == "gpt-5.5" and table[1].split()[1] == "2" and table[1].split()[-1] == "1", table
        # The totals still agree to the pico-dollar.
        expected = whole["cost_pusd"] + cut["cost_pusd"]
        deadline = time.time() + 5
        while exact_metric(g, "cheapmodel_cost_usd_total") * PICO != expected and time.time() < deadline:
            time.sleep(0.1)
        assert exact_metric(g, "cheapmodel_cost_usd_total") * PICO == expected
    finally:
        g.stop()


@pytest.mark.parametrize("path,headers,body", [
    ("/v1/chat/completions", openai_headers, chat_body("gpt-5.5")),
    ("/v1/messages", anthropic_headers, claude_body("gpt-5.5")),  # translated
    ("/v1/chat/completions", openai_headers, chat_body("gpt-5.5", stream=True)),
])
def test_a_caller_that_leaves_before_the_answer_is_billed_its_input_as_an_estimate(own_mock, tmp_path, path, headers,
                                                                                  body):
    """The upstream had the request when the caller gave up waiting (a client timeout, a cancelled
    agent step), and providers bill what they processed. Such a request used to be billed 0; now it
    is billed its input, counted from the body sent upstream, marked as an estimate."""
    g = start_gateway(own_mock, tmp_path / "gw")
    try:
        body = dict(body, messages=[{"role": "user", "content": FOX}])
        extra = {"x-mock-delay-ms": "3000", "x-mock-echo-usage": "5000,300,0,0"}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(g.url + path, json=body, headers=headers(**extra), timeout=httpx.Timeout(10, read=0.5))
        # The same request waited for is billed what the upstream reported, exactly.
        r = httpx.post(g.url + path, json=body, headers=headers(**extra), timeout=10)
        assert r.status_code == 200
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), 2) == 2
        left, waited = ledger_rows(db)
        # 10 o200k tokens of text, 3 framing the message, 3 priming the reply (OpenAI's recipe).
        assert (left["estimated"], left["input_tokens"], left["output_tokens"]) == (1, 10 + 3 + 3, 0), left
        # The row says what the caller asked for, though no stream (no answer at all) came back.
        assert left["stream"] == waited["stream"] == int(body.get("stream", False)), (left, waited)
        assert left["cost_pusd"] == token_cost(PRICE_GPT, 16, 0, 0, 0) > 0
        assert (waited["estimated"], waited["input_tokens"], waited["output_tokens"]) == (0, 5000, 300), waited
        # The access log says the caller left; the error log has no "Fail to proxy" line for it.
        lines = [line for line in g.access_log() if line.get("model") == "gpt-5.5"]
        assert [(line["status"], line.get("error")) for line in lines] == [(0, "client_closed"), (200, None)], lines
        assert "Fail to proxy" not in g.log_path.read_text()
        assert g.eventually_metric("cheapmodel_estimated_requests_total", 1, model="gpt-5.5", key="team-a") == 1
        deadline = time.time() + 5
        expected = left["cost_pusd"] + waited["cost_pusd"]
        while exact_metric(g, "cheapmodel_cost_usd_total") * PICO != expected and time.time() < deadline:
            time.sleep(0.1)
        assert exact_metric(g, "cheapmodel_cost_usd_total") * PICO == expected
    finally:
        g.stop()


def test_usage_endpoint_shows_only_the_callers_own_usage(own_mock, tmp_path):
    g = start_gateway(own_mock, tmp_path / "gw")
    try:
        for key, n in ((KEY_A, 3), (KEY_B, 2)):
            for _ in range(n):
                r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), timeout=10,
                               headers=openai_headers(key, **{"x-mock-echo-usage": "100,10,0,0"}))
                assert r.status_code == 200
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), 5) == 5
        today = time.strftime("%Y-%m-%d", time.gmtime())
        for key, n in ((KEY_A, 3), (KEY_B, 2)):
            r = httpx.get(g.url + "/v1/usage", params={"from": today, "to": today}, headers=openai_headers(key),
                          timeout=10)
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            assert [(d["model"], d["day"], d["requests"], d["input_tokens"]) for d in data] == \
                [("gpt-5.5", today, n, 100 * n)]
            assert "key" not in data[0]
        r = httpx.get(g.url + "/v1/usage", params={"from": "2000-01-01", "to": "2000-01-01"},
                      headers=openai_headers(KEY_A), timeout=10)
        assert r.json()["data"] == []
        r = httpx.get(g.url + "/v1/usage", params={"from": "yesterday"}, headers=openai_headers(KEY_A), timeout=10)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        # A swapped range is refused, not answered with an empty total that looks like "no usage".
        r = httpx.get(g.url + "/v1/usage", params={"from": today, "to": "2000-01-01"},
                      headers=anthropic_headers(KEY_A), timeout=10)
        assert r.status_code == 400 and r.json()["error"]["message"] == "from must not be after to.", r.text
        assert httpx.get(g.url + "/v1/usage", timeout=10).status_code == 401
        r = httpx.get(g.url + "/v1/usage", headers=anthropic_headers("cm_nope"), timeout=10)
        assert r.status_code == 401
    finally:
        g.stop()


def test_usage_on_a_gateway_without_a_ledger_says_so(fresh_gateway):
    """It used to be the generic 404 "Invalid URL (GET /v1/usage)", which now lists /v1/usage
    among the endpoints served."""
    g = fresh_gateway(edit=lambda c: c.update(ledger={"url": "none"}))
    r = httpx.get(g.url + "/v1/usage", headers=openai_headers(KEY_A), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "usage_not_kept", r.text
    assert "ledger.url: none" in r.json()["error"]["message"]
    r = httpx.get(g.url + "/v1/usage", headers=anthropic_headers(KEY_A), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_a_repeated_caller_request_id_cannot_hide_a_request(own_mock, tmp_path):
    g = start_gateway(own_mock, tmp_path / "gw")
    try:
        for _ in range(3):
            r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), timeout=10,
                           headers=openai_headers(**{"x-request-id": "same-id", "x-mock-echo-usage": "10,1,0,0"}))
            assert r.status_code == 200 and r.headers["x-request-id"] == "same-id"
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), 3) == 3
        rows = ledger_rows(db)
        assert {r["request_id"] for r in rows} == {"same-id"}
        assert len({r["id"] for r in rows}) == 3
    finally:
        g.stop()


def test_a_submit_the_upstream_refused_has_its_row_and_one_the_gateway_refused_has_none(own_mock, tmp_path):
    """Every request the gateway forwarded has a row, upstream errors included: a media submit the
    upstream refused made no task, so it had none. A submit the gateway refused itself (bad input)
    reached no upstream: no row, and no `cheapmodel_requests_total` (it was counted there)."""
    g = start_gateway(own_mock, tmp_path / "gw")
    try:
        headers = openai_headers(**{"x-request-id": "refused-upstream"})
        r = httpx.post(g.url + "/v1/images/generations", json={"model": "gpt-image-2", "prompt": "mock-submit-error"},
                       headers=headers, timeout=10)
        assert r.status_code == 400, r.text
        r = httpx.post(g.url + "/v1/images/generations", json={"model": "gpt-image-2", "prompt": "x", "n": 99},
                       headers=openai_headers(**{"x-request-id": "refused-here"}), timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), 1) == 1
        time.sleep(0.5)   # a second row, if any, would land within the flush interval
        (row,) = ledger_rows(db)
        assert (row["request_id"], row["endpoint"], row["status"], row["cost_pusd"], row["model"]) == \
            ("refused-upstream", "/v1/images/generations", 400, 0, "gpt-image-2")
        assert g.metric("cheapmodel_requests_total", model="gpt-image-2", status="400") == 1
    finally:
        g.stop()


def test_a_task_nobody_polls_is_billed_once_across_restarts_and_instances(own_mock, tmp_path):
    shared = {"url": f"sqlite://{tmp_path / 'shared.sqlite'}", "spool_dir": str(tmp_path / "spool")}
    g = start_gateway(own_mock, tmp_path / "a", ledger=shared)
    t = submit(g, "/v1/videos/generations", {"model": "kling-v2", "prompt": "a dog", "duration": 5}).json()
    db = tmp_path / "shared.sqlite"
    try:
        # Nobody polls: the gateway's settler takes the task to its end and bills it.
        assert wait_rows(lambda: len(ledger_rows(db)) if db.exists() else 0, 1, timeout=30) == 1
        row = ledger_rows(db)[0]
        assert row["id"] == t["id"] and row["status"] == 200 and row["seconds"] == 5
        assert row["cost_pusd"] == 5 * per_unit(0.05) + per_unit(0.01)
        assert row["endpoint"] == "/v1/videos/generations"
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT COUNT(*) FROM pending_tasks").fetchone()[0] == 0
        polls_by_settler = httpx.get(own_mock.url + "/__mock/tasks", timeout=5).json()["tasks"]
        assert len(polls_by_settler) == 1 and list(polls_by_settler.values())[0]["polls"] == 3
    finally:
        g.stop()
    # A restart and a second instance: 100 polls spread over both, still one row.
    g1 = start_gateway(own_mock, tmp_path / "b", ledger=shared)
    g2 = start_gateway(own_mock, tmp_path / "c", ledger=shared)
    try:
        for i in range(100):
            r = poll(g1 if i % 2 else g2, t["id"])
            assert r.status_code == 200 and r.json()["status"] == "completed"
        time.sleep(1.0)   # several flush intervals
        assert len(ledger_rows(db)) == 1
        # Neither new instance counted the task again in its metrics: its insert did not win.
        for gw in (g1, g2):
            assert gw.metric("cheapmodel_cost_usd_total", model="kling-v2") == 0
            assert gw.metric("cheapmodel_tasks_total", model="kling-v2", status="completed") == 0
    finally:
        g1.stop()
        g2.stop()


def test_a_task_polled_while_pending_is_billed_once_with_its_caller_and_settler_sharing_polls(own_mock, tmp_path):
    g = start_gateway(own_mock, tmp_path / "gw")
    try:
        t = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "x"}).json()
        done, _ = poll_until_done(g, t["id"])
        assert done["status"] == "completed"
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), 1) == 1
        time.sleep(2.5)   # the settler's next turn: it must not poll a finished task
        tasks = httpx.get(own_mock.url + "/__mock/tasks", timeout=5).json()["tasks"]
        assert list(tasks.values())[0]["polls"] == 3, tasks
        assert len(ledger_rows(db)) == 1
    finally:
        g.stop()


def test_ledger_that_can_keep_nothing_rejects_or_serves_as_configured(own_mock, tmp_path):
    dead = free_port()
    broken = {"url": f"postgres://nobody@127.0.0.1:{dead}/x", "spool_dir": "/proc/cheapmodel-no-spool"}
    g = start_gateway(own_mock, tmp_path / "reject", ledger=dict(broken, on_failure="reject"))
    try:
        # The writer finds out at its start (moments after the listener opens) or at its first batch.
        deadline = time.time() + 5
        while True:
            r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(), timeout=10)
            if r.status_code != 200 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_unavailable"
        r = httpx.post(g.url + "/v1/messages", json=claude_body(), headers=anthropic_headers(), timeout=10)
        assert r.status_code == 503 and r.json()["type"] == "error"
        assert httpx.get(g.url + "/healthz", timeout=10).status_code == 200
        assert g.metric("cheapmodel_ledger_errors_total", kind="spool") >= 1
    finally:
        g.stop()
    g = start_gateway(own_mock, tmp_path / "serve", ledger=broken)
    try:
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(), timeout=10)
        assert r.status_code == 200
        assert g.metric("cheapmodel_ledger_errors_total", kind="spool") >= 1
    finally:
        g.stop()
    log = (tmp_path / "serve" / "gateway.log").read_bytes()
    # The row the database and the spool both refused is lost at exit: said with its count, and in
    # the exit status (it used to log "ledger flushed" and exit 0).
    assert b"1 rows and 0 pending tasks that neither the database nor the spool took" in log, log[-2000:]
    assert b"ledger flushed" not in log and g.proc.returncode == 1, g.proc.returncode


class Load:
    """Requests from a few threads until stopped; counts what the callers got."""

    def __init__(self, url_fn, threads=4):
        self.url_fn = url_fn
        self.ok = 0
        self.failed = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        with httpx.Client(timeout=10) as c:
            while not self.stop_flag.is_set():
                try:
                    r = c.post(self.url_fn() + "/v1/chat/completions", json=chat_body(),
                               headers=openai_headers(**{"x-mock-echo-usage": "10,1,0,0"}))
                    with self.lock:
                        if r.status_code == 200:
                            self.ok += 1
                        else:
                            self.failed.append(r.status_code)
                except httpx.HTTPError as e:
                    with self.lock:
                        self.failed.append(type(e).__name__)
                time.sleep(0.005)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=15)


def served_chats(mock) -> int:
    """Every request the mock received (this test's own mock sees only the load's chats)."""
    return httpx.get(f"{mock.url}/__mock/requests", timeout=10).json()["total"]


def test_sigterm_under_load_loses_no_row(own_mock, tmp_path):
    g = start_gateway(own_mock, tmp_path / "gw", grace_period_seconds=1, graceful_shutdown_timeout_seconds=5)
    load = Load(lambda: g.url)
    time.sleep(2)
    g.proc.send_signal(signal.SIGTERM)
    g.proc.wait(timeout=30)
    load.stop()
    g.log.close()
    served = served_chats(own_mock)
    assert served > 50
    assert b"ledger flushed" in g.log_path.read_bytes()
    assert len(ledger_rows(g.dir / "cheapmodel.ledger.sqlite")) == served


def test_requests_still_running_when_a_shutdowns_grace_period_ends_are_billed(own_mock, tmp_path):
    """Pingora drops what is still in flight when the grace period ends (its runtimes stop at
    once), without the hook that bills a request: such a stream, whose upstream had the request,
    left no row at all. Now it is billed as a caller that left is: its input counted, what it
    streamed so far, `estimated`."""
    g = start_gateway(own_mock, tmp_path / "gw", grace_period_seconds=1, graceful_shutdown_timeout_seconds=5)
    prompt = "word " * 200
    streams = concurrent.futures.ThreadPoolExecutor(2)
    for request_id, path, body in [
        ("cut-openai", "/v1/chat/completions", chat_body(stream=True, messages=[{"role": "user", "content": prompt}])),
        ("cut-translated", "/v1/messages", claude_body("gpt-5.5", stream=True,
                                                        messages=[{"role": "user", "content": prompt}])),
    ]:
        headers = (openai_headers if path.endswith("completions") else anthropic_headers)(
            **{"x-request-id": request_id, "x-mock-event-delay-ms": "1000"})
        streams.submit(lambda p=path, b=body, h=headers: httpx.post(g.url + p, json=b, headers=h, timeout=30))
    time.sleep(1.0)
    g.proc.send_signal(signal.SIGTERM)
    g.proc.wait(timeout=30)
    g.log.close()
    streams.shutdown(wait=True)
    rows = {r["request_id"]: r for r in ledger_rows(g.dir / "cheapmodel.ledger.sqlite")}
    assert set(rows) == {"cut-openai", "cut-translated"}, rows
    for r in rows.values():
        assert r["estimated"] == 1 and r["input_tokens"] >= 200 and r["cost_pusd"] > 0, r
        assert r["id"] != r["request_id"] and r["id"].startswith(r["request_id"] + ":cut:"), r
    assert b"was cut by the shutdown" in g.log_path.read_bytes()


def test_graceful_upgrade_under_load_loses_no_row(own_mock, tmp_path):
    """The new process takes the listening sockets (-u) while the old one drains: both write the
    same ledger, and every request the mock served has its row."""
    d = tmp_path / "gw"
    server = {"grace_period_seconds": 2, "graceful_shutdown_timeout_seconds": 5,
              "pid_file": str(tmp_path / "gw.pid"), "upgrade_sock": str(tmp_path / "upgrade.sock")}
    old = start_gateway(own_mock, d, **server)
    load = Load(lambda: old.url)
    time.sleep(1.5)
    env = dict(os.environ, TEST_UPSTREAM_OPENAI_KEY=UPSTREAM_OPENAI_KEY, TEST_UPSTREAM_ANTHROPIC_KEY=UPSTREAM_ANTHROPIC_KEY)
    new_log = open(d / "new.log", "wb")
    new = subprocess.Popen([GATEWAY_BIN, "--config", str(old.config_path), "-u"], stdout=new_log,
                           stderr=subprocess.STDOUT, env=env)
    try:
        time.sleep(0.5)
        old.proc.send_signal(signal.SIGQUIT)
        old.proc.wait(timeout=40)
        time.sleep(1.5)   # the new process serves alone for a while
        load.stop()
        # The only failures allowed are connection-level ones where nothing was forwarded: the
        # listener handover (ConnectError), and a request sent on a keep-alive connection at the
        # instant Pingora closes it as idle (no answer; at most once per client connection).
        # The SDKs retry both. Every answer written during the stop said `Connection: close`.
        unanswered = [f for f in load.failed if f in ("ReadError", "RemoteProtocolError")]
        assert not [f for f in load.failed if f != "ConnectError" and f not in unanswered], load.failed[:10]
        assert len(unanswered) <= len(load.threads), load.failed
    finally:
        new.send_signal(signal.SIGTERM)
        new.wait(timeout=30)
        new_log.close()
        old.log.close()
    served = served_chats(own_mock)
    assert served > 50
    assert served == load.ok, "a request reached the upstream but its answer did not reach the caller"
    assert len(ledger_rows(d / "cheapmodel.ledger.sqlite")) == served


def test_kill_9_loses_at_most_the_unflushed_window(own_mock, tmp_path):
    flush_ms = 200
    g = start_gateway(own_mock, tmp_path / "gw", ledger={"flush_interval_ms": flush_ms})
    load = Load(lambda: g.url)
    time.sleep(3)
    g.proc.kill()
    g.proc.wait(timeout=10)
    load.stop()
    g.log.close()
    served = served_chats(own_mock)
    rate = served / 3.0
    rows = len(ledger_rows(g.dir / "cheapmodel.ledger.sqlite"))
    lost = served - rows
    print(f"kill -9: served {served}, rows {rows}, lost {lost} at {rate:.0f} req/s")
    assert 0 <= lost <= rate * (2 * flush_ms / 1000) + 5


@pytest.fixture
def postgres():
    pg = Postgres()
    yield pg
    pg.remove()


def test_postgres_ledger_survives_a_30s_outage_under_k6_load(own_mock, tmp_path, postgres):
    g = start_gateway(own_mock, tmp_path / "gw", ledger={"url": postgres.url, "spool_dir": str(tmp_path / "spool")})
    script = tmp_path / "load.js"
    script.write_text(f"""
import http from 'k6/http';
import {{ Counter }} from 'k6/metrics';
const serverErrors = new Counter('server_errors');
export const options = {{
  scenarios: {{ steady: {{ executor: 'constant-arrival-rate', rate: 40, timeUnit: '1s', duration: '42s',
                           preAllocatedVUs: 20, maxVUs: 50 }} }},
}};
export default function () {{
  const r = http.post('{g.url}/v1/chat/completions', JSON.stringify({{model: 'gpt-5.5', messages: [{{role: 'user', content: 'hi'}}]}}),
    {{ headers: {{ 'Authorization': 'Bearer {KEY_A}', 'content-type': 'application/json', 'x-mock-echo-usage': '10,1,0,0' }}, timeout: '10s' }});
  if (r.status >= 500 || r.status === 0) serverErrors.add(1);
}}
""")
    summary = tmp_path / "summary.json"
    try:
        k6 = subprocess.Popen(["k6", "run", "--quiet", "--no-color", "--no-usage-report", "--summary-export",
                               str(summary), str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(5)
        postgres.stop()
        time.sleep(30)
        assert g.metric("cheapmodel_ledger_spool_bytes") > 0, "rows were not spooled during the outage"
        postgres.start()
        _, err = k6.communicate(timeout=120)
        assert k6.returncode == 0, err.decode()[-2000:]
        metrics = json.loads(summary.read_text())["metrics"]
        assert metrics.get("server_errors", {}).get("count", 0) == 0
        served = served_chats(own_mock)
        assert served >= 40 * 42 * 0.9
        assert wait_rows(postgres.count, served, timeout=60) == served
        deadline = time.time() + 10
        while g.metric("cheapmodel_ledger_spool_bytes") != 0 and time.time() < deadline:
            time.sleep(0.2)
        assert g.metric("cheapmodel_ledger_spool_bytes") == 0
        assert g.metric("cheapmodel_ledger_errors_total", kind="database") >= 1
        # The outage is one error line (then one a minute), not one per retry, and its end is said.
        log = g.log_path.read_text()
        errors = [line for line in log.splitlines() if "ERROR" in line and "ledger:" in line]
        assert 1 <= len(errors) <= 2, errors
        assert "ledger: the database answers again" in log
        # The gateway's report reads Postgres too, and agrees with the metric.
        report = json.loads(usage_cli(g.config_path, "--format", "json"), parse_float=Decimal)
        assert report[0]["requests"] == served
        assert report[0]["cost_usd"] == exact_metric(g, "cheapmodel_cost_usd_total")
    finally:
        g.stop()


def test_instances_on_one_postgres_with_different_keys_share_the_pinned_task_secret(own_mock, tmp_path, postgres):
    """The first instance pins its task secret in Postgres; one started later with another key set
    (a key added since) signs and checks ids with the same secret, so either answers the other's."""
    ledger = {"url": postgres.url, "spool_dir": str(tmp_path / "spool")}
    a = start_gateway(own_mock, tmp_path / "a", ledger=ledger)
    b = None
    try:
        b_dir = tmp_path / "b"
        b_dir.mkdir()
        config = base_config(own_mock, free_port(), free_port())
        config["ledger"] = ledger
        config["keys"].append({"name": "team-new", "sha256": sha256_hex("cm_new_key_added_later_0002")})
        b = Gateway(config, b_dir)
        assert postgres.sql("SELECT COUNT(*) FROM cheapmodel_settings WHERE name = 'task_secret'") == "1"
        from_a = submit(a, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "x"}).json()
        from_b = submit(b, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "x"}).json()
        for g, t in ((b, from_a), (a, from_b)):
            done, _ = poll_until_done(g, t["id"])
            assert done["status"] == "completed", done
        assert "pinned task secret" not in a.log_path.read_text() + b.log_path.read_text()
    finally:
        a.stop()
        if b is not None:
            b.stop()


def tcp_timers_to(port):
    """(timer kind, ticks until it fires) of each established 127.0.0.1 socket whose remote port is
    `port`, from /proc/net/tcp: kind 2 is the keepalive timer, 0 none; ticks are USER_HZ."""
    timers = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "01" and int(f[2].split(":")[1], 16) == port:
            kind, ticks = f[5].split(":")
            timers.append((int(kind, 16), int(ticks, 16)))
    return timers


def test_the_postgres_connection_detects_a_dead_peer_in_seconds(own_mock, tmp_path, postgres):
    # statement_timeout bounds what the server does; a connection that goes dark (a partition, a
    # vanished host) is found by TCP keepalives, which the kernel would otherwise start after 2 h.
    g = start_gateway(own_mock, tmp_path / "gw", ledger={"url": postgres.url, "spool_dir": str(tmp_path / "spool")})
    try:
        deadline = time.time() + 15
        while not tcp_timers_to(postgres.port):
            assert time.time() < deadline, "the ledger writer never connected to Postgres"
            time.sleep(0.2)
        time.sleep(1)  # idle, so the keepalive timer is the one armed
        timers = tcp_timers_to(postgres.port)
        assert all(kind == 2 and ticks <= 5 * os.sysconf("SC_CLK_TCK") for kind, ticks in timers), timers
    finally:
        g.stop()


def pg_freeze(pg, sig):
    """SIGSTOP / SIGCONT the cluster's postmaster and every backend: a database whose host still
    answers TCP (and keepalives) but which does nothing, like one stuck on a stalled disk."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(stat.parent.name))
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # a backend that ended since the listing (a report's or the settler's connection)


def chats(g, n):
    for _ in range(n):
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), timeout=10,
                       headers=openai_headers(**{"x-mock-echo-usage": "10,1,0,0"}))
        assert r.status_code == 200, r.text


def freeze_behind_traffic(g, pg):
    """10 chats that land, then the cluster frozen and 20 more chats, until rows are spooled: the
    call in flight misses its 10 s deadline, and its rows and every batch after it go to the spool
    instead of waiting in memory behind it. The caller thaws the cluster (`pg_freeze(SIGCONT)`)."""
    chats(g, 10)
    assert wait_rows(pg.count, 10) == 10
    pg_freeze(pg, signal.SIGSTOP)
    chats(g, 20)
    deadline = time.time() + 25
    while g.metric("cheapmodel_ledger_spool_bytes") == 0:
        assert time.time() < deadline, "nothing was spooled while the database was frozen"
        time.sleep(0.2)


def test_a_frozen_postgres_sends_rows_to_the_spool_and_each_lands_and_counts_once(own_mock, tmp_path, postgres):
    g = start_gateway(own_mock, tmp_path / "gw", ledger={"url": postgres.url, "spool_dir": str(tmp_path / "spool")})
    try:
        try:
            freeze_behind_traffic(g, postgres)
            # A report cannot be read meanwhile: a 503 after the same deadline, not a hang.
            t0 = time.time()
            r = httpx.get(g.url + "/v1/usage", headers=openai_headers(), timeout=30)
            assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_unavailable", r.text
            assert time.time() - t0 < 15
        finally:
            pg_freeze(postgres, signal.SIGCONT)
        chats(g, 5)
        served = served_chats(own_mock)
        assert served == 35
        assert wait_rows(postgres.count, served, timeout=60) == served
        time.sleep(1)
        assert postgres.count() == served
        deadline = time.time() + 15
        while g.metric("cheapmodel_ledger_spool_bytes") != 0 and time.time() < deadline:
            time.sleep(0.2)
        assert g.metric("cheapmodel_ledger_spool_bytes") == 0
        # The call that missed its deadline may have landed when the database woke, and the replay
        # then skipped its rows: the metrics still count each row once.
        report = json.loads(usage_cli(g.config_path, "--format", "json"), parse_float=Decimal)
        assert report[0]["requests"] == served
        assert report[0]["cost_usd"] == exact_metric(g, "cheapmodel_cost_usd_total")
        assert exact_metric(g, "cheapmodel_tokens_total", type="input") == 10 * served
        r = httpx.get(g.url + "/v1/usage", headers=openai_headers(), timeout=30)
        assert r.status_code == 200 and r.json()["data"][0]["requests"] == served, r.text
    finally:
        g.stop()


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_a_stop_while_postgres_is_frozen_loses_no_spooled_row(own_mock, tmp_path, postgres, stop):
    ledger = {"url": postgres.url, "spool_dir": str(tmp_path / "spool")}
    g = start_gateway(own_mock, tmp_path / "gw", ledger=ledger)
    try:
        try:
            freeze_behind_traffic(g, postgres)
            if stop == "kill -9":
                time.sleep(1)  # past the last flush window
                g.proc.kill()   # rows held only in memory behind the frozen call would die here
            else:
                chats(g, 5)  # still queued when the signal comes: the shutdown spools them
                g.proc.send_signal(signal.SIGTERM)
            g.proc.wait(timeout=30)  # a frozen database does not hold up the exit either
        finally:
            pg_freeze(postgres, signal.SIGCONT)
    finally:
        g.stop()
    # The next process finds the dead one's spool and replays it.
    g2 = start_gateway(own_mock, tmp_path / "gw2", ledger=ledger)
    try:
        served = served_chats(own_mock)
        assert served == (30 if stop == "kill -9" else 35)
        assert wait_rows(postgres.count, served, timeout=60) == served
        time.sleep(1)
        assert postgres.count() == served
    finally:
        g2.stop()


def test_usage_before_anything_was_billed_is_empty_and_creates_nothing(tmp_path):
    config = tmp_path / "gw.yaml"
    config.write_text('server:\n  listen: ["127.0.0.1:1"]\n')
    assert json.loads(usage_cli(config, "--format", "json")) == []
    assert not (tmp_path / "gw.ledger.sqlite").exists()
    config.write_text('server:\n  listen: ["127.0.0.1:1"]\nledger:\n  url: none\n')
    r = subprocess.run([GATEWAY_BIN, "usage", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "ledger is off" in r.stderr


def test_postgres_errors_say_why_and_a_migrated_database_takes_no_ddl(postgres, tmp_path):
    """The Postgres client's own text is only "db error" or "error connecting to server": the
    reason is in its source, and must reach the operator. And a connection that finds every
    migration applied runs no DDL: the task settler connects every 10 s, and each `CREATE TABLE IF
    NOT EXISTS` was two NOTICE lines in the log."""
    config = tmp_path / "gw.yaml"

    def usage_with(url):
        config.write_text(f'server:\n  listen: ["127.0.0.1:1"]\nledger:\n  url: "{url}"\n')
        return subprocess.run([GATEWAY_BIN, "usage", "--config", str(config)], capture_output=True, text=True,
                              timeout=30)

    r = usage_with(postgres.url.rsplit("/", 1)[0] + "/nosuchdb")
    assert r.returncode == 1 and 'database "nosuchdb" does not exist' in r.stderr, r.stderr
    r = usage_with(f"postgres://postgres@127.0.0.1:{free_port()}/postgres")
    assert r.returncode == 1 and "Connection refused" in r.stderr, r.stderr
    assert usage_with(postgres.url).returncode == 0   # creates the schema
    r = usage_with(postgres.url)
    assert r.returncode == 0 and "NOTICE" not in r.stderr, r.stderr
