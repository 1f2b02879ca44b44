"""Per-key and per-model limits and budgets on one instance: the real gateway in front of the real
mock, refusals in the caller's dialect with `retry-after`, the key's own rate-limit headers,
reservations under concurrency, budgets across a restart and a UTC day. Each test runs twice: with
the in-process state, and with the shared state on a real Redis (`server.state`), whose Lua scripts
must give the same answers."""
import concurrent.futures
import time

import httpx

from conftest import (KEY_A, KEY_B, anthropic_headers, chat_body, claude_body, openai_headers)
from test_ledger import ledger_rows, wait_rows

import pytest


@pytest.fixture(params=["in-process", "redis"])
def state(request):
    """`server.state` for the test: none, or a Redis of the test's own."""
    if request.param == "in-process":
        yield None
        return
    from redis_server import Redis
    r = Redis()
    yield RedisUrl(r.url, r)
    r.remove()


class RedisUrl(str):
    """The Redis's URL (what `server.state` takes), with the Redis itself as `.redis`."""
    def __new__(cls, url, redis):
        s = super().__new__(cls, url)
        s.redis = redis
        return s


def limited(config, key_index=0, limits=None, budget=None, model=None, model_limits=None):
    k = config["keys"][key_index]
    if limits:
        k["limits"] = limits
    if budget:
        k["budget"] = budget
    if model:
        config["models"][model]["limits"] = model_limits


def start(own_mock, tmp_path, state, edit, name="gw", env=None):
    from conftest import Gateway, base_config, free_port
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    config = base_config(own_mock, free_port(), free_port(), **({"state": str(state)} if state else {}))
    edit(config)
    return Gateway(config, d, extra_env=env)


def stop(g, state):
    """Stops `g`; on Redis, first checks that every admission and settlement went through Redis
    (the in-process fallback would give the same answers on one instance and hide a broken script)."""
    try:
        if state and g.proc.poll() is None:
            assert g.metric("cheapmodel_state_errors_total") == 0, g.log_path.read_text()[-3000:]
            assert g.metric("cheapmodel_state_up") == 1
    finally:
        g.stop()


def test_rpm_admits_the_limit_then_refuses_with_retry_after_in_both_dialects(own_mock, tmp_path, state):
    g = start(own_mock, tmp_path, state, lambda c: limited(c, limits={"rpm": 60}))
    try:
        with httpx.Client(timeout=10) as c:
            seen_remaining = []
            for i in range(60):
                if i % 2:
                    r = c.post(g.url + "/v1/messages", json=claude_body(), headers=anthropic_headers())
                    assert r.status_code == 200, (i, r.text)
                    assert r.headers["anthropic-ratelimit-requests-limit"] == "60"
                    seen_remaining.append(int(r.headers["anthropic-ratelimit-requests-remaining"]))
                    assert r.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
                else:
                    r = c.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers())
                    assert r.status_code == 200, (i, r.text)
                    assert r.headers["x-ratelimit-limit-requests"] == "60"
                    seen_remaining.append(int(r.headers["x-ratelimit-remaining-requests"]))
                    assert r.headers["x-ratelimit-reset-requests"]
            # Remaining counts down (a request or so may refill during the loop).
            assert seen_remaining[0] >= 58 and seen_remaining[-1] <= 1 and seen_remaining == sorted(seen_remaining, reverse=True)
            r = c.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers())
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            assert 1 <= int(r.headers["retry-after"]) <= 2
            r = c.post(g.url + "/v1/messages", json=claude_body(), headers=anthropic_headers())
            assert r.status_code == 429
            assert r.json()["type"] == "error" and r.json()["error"]["type"] == "rate_limit_error"
            assert int(r.headers["retry-after"]) >= 1
            # Another key is not limited, and gets no rate-limit headers of the gateway's.
            r = c.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(KEY_B))
            assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers
            # One second later, one more request passes (GCRA refills one per 60 s / 60).
            time.sleep(1.1)
            r = c.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers())
            assert r.status_code == 200
        assert g.metric("cheapmodel_rejected_total", reason="rate_limited") == 2
        # Refused requests never reached the upstream.
        assert httpx.get(own_mock.url + "/__mock/requests", timeout=10).json()["total"] == 62
    finally:
        stop(g, state)


def test_tpm_reservations_hold_under_50_concurrent_requests(own_mock, tmp_path, state):
    tpm = 20_000
    g = start(own_mock, tmp_path, state, lambda c: limited(c, limits={"tpm": tpm}))
    try:
        body = chat_body(max_tokens=1000)
        def one(_):
            return httpx.post(g.url + "/v1/chat/completions", json=body, timeout=20,
                              headers=openai_headers(**{"x-mock-delay-ms": "1500", "x-mock-echo-usage": "10,5,0,0"}))
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(50)))
        ok = [r for r in results if r.status_code == 200]
        refused = [r for r in results if r.status_code == 429]
        assert len(ok) + len(refused) == 50
        estimate = 1000 + len(httpx.Request("POST", "http://x", json=body).content) // 4 + 1
        # Admitted reservations fit the limit, give or take one request's worth.
        assert len(ok) * estimate <= tpm + estimate, (len(ok), estimate)
        assert len(ok) >= tpm // estimate - 1
        assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
        # Settled usage (15 tokens each) frees the reservations: the key can send again at once.
        r = httpx.post(g.url + "/v1/chat/completions", json=body, headers=openai_headers(), timeout=10)
        assert r.status_code == 200
        assert int(r.headers["x-ratelimit-remaining-tokens"]) >= tpm - 15 * (len(ok) + 1) - estimate
    finally:
        stop(g, state)


def test_concurrency_5_with_20_slow_streams(own_mock, tmp_path, state):
    g = start(own_mock, tmp_path, state, lambda c: limited(c, limits={"concurrency": 5}))
    try:

        def stream(_):
            with httpx.stream("POST", g.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=20,
                              headers=openai_headers(**{"x-mock-event-delay-ms": "150"})) as r:
                started = time.time()
                for _ in r.iter_bytes():
                    pass
                return r.status_code, started, time.time()

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(stream, range(20)))
        ok = [(s, e) for code, s, e in results if code == 200]
        assert len(ok) == 5, [code for code, _, _ in results]
        assert sum(1 for code, _, _ in results if code == 429) == 15
        # Once they are done, the slots are free again.
        code, _, _ = stream(0)
        assert code == 200
    finally:
        stop(g, state)


def test_daily_budget_stops_at_the_cap_survives_a_restart_and_renews_the_next_utc_day(own_mock, tmp_path, state):
    # 1000 input + 200 output tokens of gpt-5.5 cost 0.00125 + 0.002 = $0.00325 a request.
    budget = {"daily_usd": 0.01}
    usage = {"x-mock-echo-usage": "1000,200,0,0"}
    edit = lambda c: limited(c, budget=budget)
    g = start(own_mock, tmp_path, state, edit)
    served = 0
    try:
        while True:
            r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(max_tokens=10), timeout=10,
                           headers=openai_headers(**usage))
            if r.status_code != 200:
                break
            served += 1
            assert served < 20, "the budget never stopped the key"
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        assert int(r.headers["retry-after"]) <= 86_400
        # Within one request's cost of the cap: $0.01 / $0.00325 → the 4th request is the last.
        assert served == 4
        r = httpx.post(g.url + "/v1/messages", json=claude_body("gpt-5.5"), headers=anthropic_headers(), timeout=10)
        assert r.status_code == 402 and r.json()["error"]["type"] == "billing_error"
        # Another key is not affected.
        assert httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(KEY_B),
                          timeout=10).status_code == 200
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), served + 1) == served + 1
    finally:
        stop(g, state)
    # A restart: the spend comes back from the ledger, the key stays stopped.
    g = start(own_mock, tmp_path, state, edit)
    try:
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(**usage), timeout=10)
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    finally:
        stop(g, state)
    # The next UTC day (the clock shifted by one day): the key may spend again.
    g = start(own_mock, tmp_path, state, edit, env={"CHEAPMODEL_CLOCK_OFFSET_S": "86400"})
    try:
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(**usage), timeout=10)
        assert r.status_code == 200
    finally:
        stop(g, state)


def test_a_budget_added_by_a_reload_counts_what_the_key_already_spent(own_mock, tmp_path, state):
    """A key without a budget is not tracked; when a reload gives it one, its counts come from the
    ledger. They started from zero: a probe spent $0.51, reloaded in a $0.01 daily budget, and
    its next requests passed until a restart."""
    import copy
    usage = {"x-mock-echo-usage": "1000,200,0,0"}   # $0.00325 a request
    g = start(own_mock, tmp_path, state, lambda c: None)
    try:
        for _ in range(4):
            r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(max_tokens=10), timeout=10,
                           headers=openai_headers(**usage))
            assert r.status_code == 200, r.text
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), 4) == 4
        config = copy.deepcopy(g.config)
        limited(config, budget={"daily_usd": 0.01})
        g.reload_with(config)
        if state:
            time.sleep(1)   # the state client writes the raised counts to Redis right after the reload
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(max_tokens=10), timeout=10,
                       headers=openai_headers(**usage))
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
        assert "daily budget is spent" in r.json()["error"]["message"]
        # The other key still has none.
        assert httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(KEY_B),
                          timeout=10).status_code == 200
    finally:
        stop(g, state)


def test_count_tokens_takes_nothing_from_the_limits_or_the_budget_and_bills_nothing(own_mock, tmp_path, state):
    """Claude Code counts tokens between messages. Anthropic neither bills `count_tokens` nor counts
    it against message limits; it used to take the key's rpm, reserve a whole output cap of its tpm
    (a 429 for a call that generates nothing) and write a ledger row counted as a request."""
    body = {"model": "claude-sonnet-4-5-20250929", "messages": [{"role": "user", "content": "Hello"}]}
    edit = lambda c: limited(c, limits={"rpm": 2, "tpm": 5000}, budget={"daily_usd": 1})
    g = start(own_mock, tmp_path, state, edit)
    try:
        for _ in range(5):
            r = httpx.post(g.url + "/v1/messages/count_tokens", json=body, headers=anthropic_headers(), timeout=10)
            assert r.status_code == 200 and "input_tokens" in r.json(), r.text
            # Nor does it pass on the upstream's rate-limit headers (the mock sends them, as
            # Anthropic does): they describe the operator's account, not this key's limits.
            assert not [h for h in r.headers if h.startswith("anthropic-ratelimit-")], r.headers
        assert len([q for q in own_mock.requests() if q["path"].startswith("/v1/messages/count_tokens")]) == 5
        # The key's first message still has its whole rpm.
        r = httpx.post(g.url + "/v1/messages", json=claude_body(), headers=anthropic_headers(), timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["anthropic-ratelimit-requests-remaining"] == "1"
        db = g.dir / "cheapmodel.ledger.sqlite"
        assert wait_rows(lambda: len(ledger_rows(db)), 1) == 1
        time.sleep(0.5)  # a count_tokens row, if any, would have landed with the message's
        assert [row["endpoint"] for row in ledger_rows(db)] == ["/v1/messages"]
    finally:
        stop(g, state)


def test_model_limit_covers_every_key(own_mock, tmp_path, state):
    g = start(own_mock, tmp_path, state, lambda c: limited(c, model="gpt-5.5", model_limits={"rpm": 3}))
    try:
        codes = [httpx.post(g.url + "/v1/chat/completions", json=chat_body(), timeout=10,
                            headers=openai_headers(KEY_A if i % 2 else KEY_B)).status_code for i in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(), timeout=10)
        assert "model" in r.json()["error"]["message"]
        # Other models are not limited by it.
        r = httpx.post(g.url + "/v1/messages", json=claude_body(), headers=anthropic_headers(), timeout=10)
        assert r.status_code == 200
    finally:
        stop(g, state)


def test_raising_a_limit_by_sighup_applies_under_load_without_failures(own_mock, tmp_path, state):
    g = start(own_mock, tmp_path, state, lambda c: limited(c, limits={"rpm": 5}))
    try:
        codes = [httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(),
                            timeout=10).status_code for _ in range(8)]
        assert codes.count(200) == 5 and codes.count(429) == 3
        config = g.config
        config["keys"][0]["limits"] = {"rpm": 600}
        g.reload_with(config)
        # The counters carry over (the key's 5 requests this minute), the new limit applies.
        codes = [httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(),
                            timeout=10) for _ in range(40)]
        assert all(r.status_code == 200 for r in codes), [r.status_code for r in codes]
        assert codes[-1].headers["x-ratelimit-limit-requests"] == "600"
    finally:
        stop(g, state)


def test_limit_settings_are_validated(tmp_path):
    import subprocess
    import yaml
    from conftest import GATEWAY_BIN, base_config, free_port

    class M:
        url = "http://127.0.0.1:9"
    config = base_config(M, free_port(), free_port())
    config["keys"][0]["limits"] = {"rpm": 0}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(config))
    env = {"TEST_UPSTREAM_OPENAI_KEY": "x", "TEST_UPSTREAM_ANTHROPIC_KEY": "y", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([GATEWAY_BIN, "check", "--config", str(p)], capture_output=True, text=True, env=env, timeout=10)
    assert r.returncode == 1 and r.stdout.startswith("keys[0].limits.rpm"), r.stdout
    config["keys"][0]["limits"] = {"rpm": 10}
    config["keys"][0]["budget"] = {"daily_usd": -1}
    p.write_text(yaml.safe_dump(config))
    r = subprocess.run([GATEWAY_BIN, "check", "--config", str(p)], capture_output=True, text=True, env=env, timeout=10)
    assert r.returncode == 1 and r.stdout.startswith("keys[0].budget.daily_usd"), r.stdout


def test_media_task_costs_count_against_the_budget(own_mock, tmp_path, state):
    from test_tasks import poll_until_done, submit
    g = start(own_mock, tmp_path, state, lambda c: limited(c, budget={"daily_usd": 0.05}))
    try:
        # A chat request ($0.00325 with this usage) and a $0.04 image fit; the next image does not
        # fit whole in what is left, though chat still passes until the budget is spent.
        usage = {"x-mock-echo-usage": "1000,200,0,0"}
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(max_tokens=10), headers=openai_headers(**usage),
                       timeout=10)
        assert r.status_code == 200, r.text
        t = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat"}).json()
        done, _ = poll_until_done(g, t["id"])
        assert done["usage"]["cost_usd"] == pytest.approx(0.04)
        r = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
        assert "costs $0.04, more than the $0.00675 this key's daily budget has left" in r.json()["error"]["message"]
        for _ in range(3):   # $0.05 - $0.04325 = $0.00675 left: three more chat requests pass
            r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(max_tokens=10),
                           headers=openai_headers(**usage), timeout=10)
            assert r.status_code == 200, r.text
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(max_tokens=10), headers=openai_headers(),
                       timeout=10)
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        r = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat"})
        assert r.status_code == 429 and "budget is spent" in r.json()["error"]["message"]
    finally:
        stop(g, state)


def test_a_media_submit_must_fit_whole_in_what_the_budget_has_left(own_mock, tmp_path, state):
    """A task's cost is known at submit, and can be dollars: it is admitted only if it fits. Ten
    images ($0.40) used to pass on a $0.20 cap, and a $0.80 video took a $1 cap to $1.78."""
    from test_tasks import submit
    g = start(own_mock, tmp_path, state, lambda c: limited(c, budget={"daily_usd": 0.2}))
    try:
        # More than the whole cap: no day will admit it, so no retry-after (it used to name the
        # period's end, and a client that honours it would wait a day to be refused again).
        r = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat", "n": 10})
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
        assert "costs $0.4, more than this key's whole daily budget of $0.2" in r.json()["error"]["message"]
        assert "retry-after" not in r.headers
        assert submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat", "n": 3}).status_code == 200
        # More than what is left, within the cap: tomorrow it fits.
        r = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat", "n": 3})
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
        assert "costs $0.12, more than the $0.08 this key's daily budget has left" in r.json()["error"]["message"]
        assert 0 < int(r.headers["retry-after"]) <= 86_400
        # Exactly what is left passes.
        assert submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat", "n": 2}).status_code == 200
        r = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat"})
        assert r.status_code == 429 and "budget is spent" in r.json()["error"]["message"], r.text
    finally:
        stop(g, state)


def kling_submits(g, prompt, n):
    """Status codes of `n` kling-v2 video submits (5 s by default: 5 × $0.05 + $0.01 = $0.26 each)."""
    from test_tasks import submit
    codes = []
    for _ in range(n):
        r = submit(g, "/v1/videos/generations", {"model": "kling-v2", "prompt": prompt})
        codes.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "insufficient_quota", r.text
    return codes


def test_running_tasks_hold_their_expected_cost_against_the_budget_across_a_restart(own_mock, tmp_path, state):
    """A submit counts the task's expected cost as spent once the upstream accepts it. Task costs
    used to count only when the task ended, so a key could start any number of tasks on a spent
    budget while they ran (15 video submits on a $1 cap: $12). The tasks here never end."""
    edit = lambda c: limited(c, budget={"daily_usd": 1})
    g = start(own_mock, tmp_path, state, edit)
    try:
        # $0.78 after three.
        assert kling_submits(g, "mock-never", 3) == [200] * 3
    finally:
        stop(g, state)
    # A restart: the running tasks' charges come back from the ledger's pending tasks. Redis is
    # emptied too, so that its counts come back the same way: summed per key and day (they were
    # raised to each row in turn, which left the day's count at one task's charge).
    if state:
        assert state.redis.command("FLUSHALL") == b"+OK"
    g = start(own_mock, tmp_path, state, edit)
    try:
        from test_tasks import submit
        r = submit(g, "/v1/videos/generations", {"model": "kling-v2", "prompt": "mock-never"})
        assert r.status_code == 429, r.text
        assert "costs $0.26, more than the $0.22 this key's daily budget has left" in r.json()["error"]["message"]
    finally:
        stop(g, state)


def test_a_failed_task_gives_its_expected_cost_back_to_the_budget(own_mock, tmp_path, state):
    from test_tasks import poll_until_done, submit
    g = start(own_mock, tmp_path, state, lambda c: limited(c, budget={"daily_usd": 0.5}))
    try:
        db = g.dir / "cheapmodel.ledger.sqlite"
        for i in range(4):
            r = submit(g, "/v1/videos/generations", {"model": "kling-v2", "prompt": "mock-fail"})
            assert r.status_code == 200, (i, r.text)
            done, _ = poll_until_done(g, r.json()["id"])
            assert done["status"] == "failed"
            # The refund is counted as the task's row lands.
            assert wait_rows(lambda: len(ledger_rows(db)), i + 1) == i + 1
        # One task that runs holds $0.26: the next does not fit in the $0.24 left.
        assert kling_submits(g, "mock-never", 2) == [200, 429]
    finally:
        stop(g, state)


def test_without_a_ledger_a_failed_task_nobody_polls_still_gives_its_cost_back(own_mock, tmp_path, state):
    """The settler polled only the tasks a ledger database listed: with `ledger.url: none` a task
    nobody polled never ended, and its expected cost stayed counted against the budget."""
    def edit(c):
        limited(c, budget={"daily_usd": 0.3})
        c["ledger"] = {"url": "none"}
    g = start(own_mock, tmp_path, state, edit)
    try:
        assert kling_submits(g, "mock-fail", 1) == [200]    # $0.26 held, never polled
        assert kling_submits(g, "mock-never", 1) == [429]   # $0.04 left
        deadline = time.time() + 40
        while kling_submits(g, "mock-never", 1) != [200]:   # the settler saw it fail: $0.26 back
            assert time.time() < deadline, "the failed task's cost never came back"
            time.sleep(1)
    finally:
        stop(g, state)


def test_task_submits_count_as_requests_and_a_spent_budget_refuses_them(own_mock, tmp_path, state):
    from test_tasks import submit
    g = start(own_mock, tmp_path, state, lambda c: limited(c, limits={"rpm": 2}))
    try:
        codes = [submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "x"}).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        r = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "x"})
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1
    finally:
        stop(g, state)
