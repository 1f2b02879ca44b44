"""Limits and budgets shared by several instances through a real Redis (`server.state`): two
gateways count together, a budget spent through one stops the other, a crashed instance's leases
expire, and Redis going away and coming back is handled per `server.on_state_error`."""
import concurrent.futures
import signal
import threading
import time

import httpx
import pytest

from conftest import (Gateway, anthropic_headers, base_config, chat_body, claude_body, free_port,
                      openai_headers)
from redis_server import Redis


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.remove()


def start_pair(mock, redis, tmp_path, limits=None, budget=None, on_state_error=None):
    """Two gateways on one Redis, the first key limited as given."""
    gateways = []
    for name in ("a", "b"):
        server = {"state": redis.url}
        if on_state_error:
            server["on_state_error"] = on_state_error
        config = base_config(mock, free_port(), free_port(), **server)
        if limits:
            config["keys"][0]["limits"] = limits
        if budget:
            config["keys"][0]["budget"] = budget
        d = tmp_path / name
        d.mkdir()
        gateways.append(Gateway(config, d))
    return gateways


def stop_all(gateways):
    for g in gateways:
        g.stop()


def post(g, client=None, **headers):
    c = client or httpx
    return c.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(**headers), timeout=10)


def test_a_budget_is_shared_over_tls_rediss(own_mock, tmp_path):
    """`rediss://`: the same shared budget over TLS, the server's certificate verified against the
    CA in `SSL_CERT_FILE` (managed Redis services require TLS)."""
    redis = Redis(tls=True)
    gateways = []
    try:
        for name in ("a", "b"):
            config = base_config(own_mock, free_port(), free_port(), state=redis.url)
            config["keys"][0]["budget"] = {"daily_usd": 0.01}
            d = tmp_path / name
            d.mkdir()
            gateways.append(Gateway(config, d, extra_env={"SSL_CERT_FILE": str(redis.ca_file)}))
        usage = {"x-mock-echo-usage": "1000,200,0,0"}   # $0.00325 a request: the 4th reaches $0.01
        served = 0
        while post(gateways[0], **usage).status_code == 200:
            served += 1
            assert served < 20
        assert served == 4
        assert post(gateways[1], **usage).status_code == 429
        for g in gateways:
            assert g.metric("cheapmodel_state_errors_total") == 0 and g.metric("cheapmodel_state_up") == 1
    finally:
        stop_all(gateways)
        redis.remove()


def test_rediss_with_an_untrusted_certificate_is_never_used_and_says_so(own_mock, tmp_path):
    redis = Redis(tls=True)
    config = base_config(own_mock, free_port(), free_port(), state=redis.url, on_state_error="deny")
    config["keys"][0]["limits"] = {"rpm": 100}
    g = Gateway(config, tmp_path)   # no SSL_CERT_FILE: the test CA is not trusted
    try:
        r = post(g)
        assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable"
        assert g.metric("cheapmodel_state_errors_total", op="connect") >= 1
        assert "invalid peer certificate" in g.log_path.read_text()
    finally:
        g.stop()
        redis.remove()


def test_rpm_120_through_two_instances_admits_120_not_240(own_mock, redis, tmp_path):
    gws = start_pair(own_mock, redis, tmp_path, limits={"rpm": 120})
    try:
        admitted, refused, other = [0], [0], []
        lock = threading.Lock()
        stop_at = time.time() + 3.0

        def drive(g):
            with httpx.Client(timeout=10) as c:
                while time.time() < stop_at:
                    code = post(g, c).status_code
                    with lock:
                        if code == 200:
                            admitted[0] += 1
                        elif code == 429:
                            refused[0] += 1
                        else:
                            other.append(code)

        started = time.time()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(drive, [gws[0], gws[1], gws[0], gws[1]]))
        elapsed = time.time() - started
        assert not other, other
        # GCRA: a burst of 120, then one every 0.5 s, for both instances together.
        assert 120 <= admitted[0] <= 120 + elapsed * 2 + 2, (admitted[0], elapsed)
        assert refused[0] > 50
        for g in gws:
            assert g.metric("cheapmodel_state_errors_total") == 0
    finally:
        stop_all(gws)


def spend_until_refused(g, usage):
    """Posts until the first refusal; returns how many were served."""
    served = 0
    while post(g, **usage).status_code == 200:
        served += 1
        assert served < 20
    return served


def test_a_budget_spent_through_one_instance_stops_the_other(own_mock, redis, tmp_path):
    # 1000 input + 200 output tokens of gpt-5.5 cost $0.00325 a request: the 4th reaches $0.01.
    gws = start_pair(own_mock, redis, tmp_path, budget={"daily_usd": 0.01})
    usage = {"x-mock-echo-usage": "1000,200,0,0"}
    try:
        assert spend_until_refused(gws[0], usage) == 4
        r = post(gws[1], **usage)
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        r = httpx.post(gws[1].url + "/v1/messages", json=claude_body("gpt-5.5"), headers=anthropic_headers(),
                       timeout=10)
        assert r.status_code == 402 and r.json()["error"]["type"] == "billing_error"
    finally:
        stop_all(gws)


def test_a_task_charged_through_one_instance_holds_the_budget_on_the_other(own_mock, redis, tmp_path):
    """A media submit counts its expected cost in Redis: the other instance sees it, and refuses a
    task that does not fit whole in what is left, naming both amounts."""
    from test_tasks import submit
    gws = start_pair(own_mock, redis, tmp_path, budget={"daily_usd": 0.5})
    video = {"model": "kling-v2", "prompt": "mock-never"}   # 5 s x $0.05 + $0.01 = $0.26
    try:
        assert submit(gws[0], "/v1/videos/generations", video).status_code == 200
        r = submit(gws[1], "/v1/videos/generations", video)
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
        assert "costs $0.26, more than the $0.24 this key's daily budget has left" in r.json()["error"]["message"]
        # A smaller task that fits passes on either.
        image = {"model": "gpt-image-2", "prompt": "mock-never", "n": 6}   # $0.24
        assert submit(gws[1], "/v1/images/generations", image).status_code == 200
        assert "budget is spent" in submit(gws[0], "/v1/images/generations", image).json()["error"]["message"]
        for g in gws:
            assert g.metric("cheapmodel_state_errors_total") == 0
    finally:
        stop_all(gws)


def test_a_budget_only_held_by_requests_in_flight_is_a_short_rate_limit_not_spent(own_mock, redis, tmp_path):
    """A request refused because requests in flight hold the rest of the budget (not spend it) was
    told the budget was spent, retry in hours: an OpenAI 429 insufficient_quota, and an Anthropic
    402 its SDKs never retry. Now it is a rate limit with retry-after 1 s, and once the one in flight
    settles (far under its reservation) the next request passes."""
    gws = start_pair(own_mock, redis, tmp_path, budget={"daily_usd": 0.01})
    try:
        # max_completion_tokens 1000 at $10/M reserves the whole $0.01 while it runs 1.5 s.
        held = concurrent.futures.ThreadPoolExecutor(1).submit(
            httpx.post, gws[0].url + "/v1/chat/completions", json=chat_body(max_completion_tokens=1000),
            headers=openai_headers(**{"x-mock-delay-ms": "1500"}), timeout=10)
        time.sleep(0.5)
        r = post(gws[1])
        assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and "in flight" in r.json()["error"]["message"]
        r = httpx.post(gws[1].url + "/v1/messages", json=claude_body("gpt-5.5"), headers=anthropic_headers(),
                       timeout=10)
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error", r.text
        assert held.result().status_code == 200
        deadline = time.time() + 5
        while (r := post(gws[1])).status_code != 200:
            assert time.time() < deadline, r.text
            time.sleep(0.2)
    finally:
        stop_all(gws)


def test_a_redis_emptied_while_the_gateways_run_gets_the_spend_back_from_the_ledger(own_mock, redis, tmp_path):
    """Redis restarted empty under running instances: they recreate the spend counters as they
    settle, so restoring only counters that do not exist (`SET NX`) would forget the day's spend
    for good. Each instance sees Redis's restore mark gone, reads the month from its ledger and
    raises the counts to it: the spent budget stays spent."""
    gws = start_pair(own_mock, redis, tmp_path, budget={"daily_usd": 0.01})
    usage = {"x-mock-echo-usage": "1000,200,0,0"}
    try:
        assert spend_until_refused(gws[0], usage) == 4
        assert redis.command("EXISTS", "cm:spend_restored") == b":1"   # written at start
        time.sleep(0.5)   # the rows are in gws[0]'s ledger (flushed every 200 ms)
        redis.stop()
        redis.start()   # back, empty
        deadline = time.time() + 30
        while redis.command("EXISTS", "cm:spend_restored") != b":1":
            assert time.time() < deadline, "the spend was not restored"
            time.sleep(0.2)
        for g in gws:
            r = post(g, **usage)
            assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
    finally:
        stop_all(gws)


def test_a_crashed_instance_gives_its_concurrency_slots_back(own_mock, redis, tmp_path):
    gws = start_pair(own_mock, redis, tmp_path, limits={"concurrency": 2})
    try:
        def slow(g):
            try:
                return httpx.post(g.url + "/v1/chat/completions", json=chat_body(), timeout=60,
                                  headers=openai_headers(**{"x-mock-delay-ms": "50000"})).status_code
            except httpx.HTTPError as e:
                return type(e).__name__

        pool = concurrent.futures.ThreadPoolExecutor(2)
        held = [pool.submit(slow, gws[0]) for _ in range(2)]
        time.sleep(1.0)
        assert post(gws[1]).status_code == 429   # both slots are held by instance a
        gws[0].proc.kill()                         # a crash: nothing is released
        gws[0].proc.wait(timeout=10)
        crashed = time.time()
        while post(gws[1]).status_code != 200:
            assert time.time() - crashed < 40, "the crashed instance's leases never expired"
            time.sleep(0.5)
        assert time.time() - crashed > 5   # not released by the crash itself: by expiry
        for f in held:
            f.result(timeout=60)
        pool.shutdown()
    finally:
        stop_all(gws)


def drive_until(g, stop, codes, **headers):
    with httpx.Client(timeout=10) as c:
        while not stop.is_set():
            try:
                r = post(g, c, **headers)
                codes.append(r.status_code if r.status_code == 200 else (r.status_code, r.text[:200]))
            except httpx.HTTPError as e:
                codes.append(type(e).__name__)
            time.sleep(0.01)


def test_redis_down_with_local_keeps_serving_within_each_share_and_rejoins(own_mock, redis, tmp_path):
    gws = start_pair(own_mock, redis, tmp_path, limits={"rpm": 6000, "concurrency": 50})
    try:
        stop = threading.Event()
        codes = [[], []]
        threads = [threading.Thread(target=drive_until, args=(g, stop, codes[i])) for i, g in enumerate(gws)]
        for t in threads:
            t.start()
        time.sleep(1)
        redis.stop()
        time.sleep(2)
        during = [len(c) for c in codes]
        time.sleep(2)
        during = [len(c) - n for c, n in zip(codes, during)]
        redis.start()   # back, empty
        deadline = time.time() + 20
        while not all(g.metric("cheapmodel_state_up") == 1 for g in gws):
            assert time.time() < deadline, "an instance did not rejoin"
            time.sleep(0.2)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        everything = codes[0] + codes[1]
        assert set(everything) == {200}, [c for c in everything if c != 200][:5]
        assert all(n > 10 for n in during), during   # served while Redis was away
        for g in gws:
            assert g.metric("cheapmodel_state_errors_total") >= 1
        # Rejoined: the shared counters exist again.
        assert int(redis.command("DBSIZE")[1:]) > 0
    finally:
        stop_all(gws)


def test_spend_not_yet_in_redis_when_the_gateway_stops_is_sent_on_the_way_out(own_mock, redis, tmp_path):
    """Requests served while Redis is away queue their spend. The gateway is stopped (SIGINT: no
    grace period, its runtimes go at once) while Redis is still down, and Redis comes back a
    second later. The spend must still reach the shared budget: it is sent on a connection of its
    own after the runtimes stop, retried for a few seconds. Before, it was lost to every other
    instance (the ledger had it, Redis never did)."""
    config = base_config(own_mock, free_port(), free_port(), state=redis.url)
    config["keys"][0]["budget"] = {"daily_usd": 100}
    g = Gateway(config, tmp_path)
    day = int(time.time()) // 86400
    try:
        assert post(g).status_code == 200   # connected
        # Its settlement reaches Redis (sent at once): only the five below are left at the exit.
        deadline = time.time() + 10
        while redis.get(f"cm:{{k:team-a}}:d:{day}") is None:
            assert time.time() < deadline, "the first request's spend never reached Redis"
            time.sleep(0.05)
        redis.stop()
        usage = {"x-mock-echo-usage": "1000,200,0,0"}   # $0.00325 each on gpt-5.5
        codes = [post(g, **usage).status_code for _ in range(5)]
        assert codes == [200] * 5
        g.proc.send_signal(signal.SIGINT)
        time.sleep(1)
        redis.start()   # back, empty
        g.proc.wait(timeout=15)
    finally:
        g.stop()
    log = g.log_path.read_text()
    assert "5 settlements sent at exit" in log, log[-2000:]
    assert redis.get(f"cm:{{k:team-a}}:d:{day}") == str(5 * 3_250_000_000)


def test_redis_down_with_local_limits_each_instance_to_its_share(own_mock, redis, tmp_path):
    gws = start_pair(own_mock, redis, tmp_path, limits={"rpm": 20})
    try:
        # Each instance counts the live instances at its heartbeat (every 10 s).
        deadline = time.time() + 25
        while not all(g.metric("cheapmodel_state_instances") == 2 for g in gws):
            assert time.time() < deadline, [g.metric("cheapmodel_state_instances") for g in gws]
            time.sleep(0.2)
        redis.stop()
        # Each instance admits its share in-process: 10 of the 20 (and maybe one more that
        # GCRA refills during the loop at 10 a minute).
        codes = [post(gws[0]).status_code for _ in range(15)]
        assert 10 <= codes.count(200) <= 11 and set(codes) == {200, 429}, codes
        codes = [post(gws[1]).status_code for _ in range(15)]
        assert 10 <= codes.count(200) <= 11 and set(codes) == {200, 429}, codes
    finally:
        stop_all(gws)


def test_redis_down_with_deny_answers_503_then_200_when_it_is_back(own_mock, redis, tmp_path):
    gws = start_pair(own_mock, redis, tmp_path, limits={"rpm": 600}, on_state_error="deny")
    try:
        assert post(gws[0]).status_code == 200
        redis.stop()
        r = post(gws[0])
        assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable", r.text
        assert r.headers["retry-after"] == "1"   # Redis is tried again a second after a failure
        r = httpx.post(gws[1].url + "/v1/messages", json=claude_body(), headers=anthropic_headers(), timeout=10)
        assert r.status_code == 503 and r.json()["error"]["type"] == "api_error", r.text
        # A key without limits does not need the state.
        from conftest import KEY_B
        assert httpx.post(gws[0].url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(KEY_B),
                          timeout=10).status_code == 200
        redis.start()
        deadline = time.time() + 20
        while post(gws[0]).status_code != 200:
            assert time.time() < deadline, "did not recover"
            time.sleep(0.2)
        assert post(gws[1]).status_code == 200
        log = gws[0].log_path.read_text()
        assert "on_state_error: deny" in log and "Redis answers again" in log, log[-2000:]
    finally:
        stop_all(gws)


def test_the_admit_script_compares_money_exactly_beyond_doubles(redis):
    """Budgets in pico-USD reach 9.2e18; Lua's numbers are doubles, exact only to 2^53. Amounts
    a double cannot tell apart must still compare exactly (spend + reservations against the cap)."""
    from conftest import ROOT
    lease = (ROOT / "src/limits/lease.lua").read_text()   # prepended to both, as shared.rs does
    script = lease + (ROOT / "src/limits/admit.lua").read_text()
    keys = ["cm:{k:t}", "cm:{k:t}:l", "cm:{k:t}:tok", "cm:{k:t}:d:1", "cm:{k:t}:m:1"]
    now = int(time.time() * 1e6)

    def admit(lease, cap, est_spend):
        # ARGV: now, lease, expiry, rpm, tpm, concurrency, daily, monthly, est tokens, est spend
        reply = redis.command("EVAL", script, len(keys), *keys, now, lease, now + 30_000_000, 0, 0, 0, cap, "", 0,
                              est_spend)
        assert reply in (b"*5", b"*3"), reply   # admitted: 5 items; refused: 3
        return reply == b"*5"

    cap = "9000000000000000001"
    assert redis.command("SET", keys[3], "9000000000000000000") == b"+OK"
    # 9e18 < 9e18 + 1: admitted (as doubles both are 9e18, and it would be refused).
    assert admit("l1", cap, "1")
    # Its reservation of 1 makes spend + reserved reach the cap exactly: refused.
    assert not admit("l2", cap, "0")
    # Unreserved (lease l1 settled for nothing), there is room again.
    settle = lease + (ROOT / "src/limits/settle.lua").read_text()
    seq_key = "cm:{k:t}:seq:test"
    assert redis.command("EVAL", settle, 6, *keys, seq_key, now, "l1", 0, "0", 1) == b":1"
    assert admit("l3", cap, "0")
    # The same settlement sent again is not applied twice.
    assert redis.command("EVAL", settle, 6, *keys, seq_key, now, "l1", 0, "0", 1) == b":0"


def test_a_redis_that_stops_answering_costs_no_hang(own_mock, redis, tmp_path):
    """A hung Redis (SIGSTOP: the connection stays up, nothing answers) must not hang requests:
    admissions give up after their timeout and fall back (`local`) or refuse (`deny`)."""
    local, deny = start_pair(own_mock, redis, tmp_path, limits={"rpm": 600})
    deny.stop()
    config = dict(deny.config, server=dict(deny.config["server"], on_state_error="deny"))
    d = tmp_path / "deny"
    d.mkdir()
    deny = Gateway(config, d)
    try:
        assert post(local).status_code == 200 and post(deny).status_code == 200
        redis.pause()
        for _ in range(20):
            started = time.time()
            assert post(local).status_code == 200
            r = post(deny)
            assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable"
            assert time.time() - started < 1.0
        redis.resume()
        deadline = time.time() + 20
        while post(deny).status_code != 200:
            assert time.time() < deadline, "did not rejoin after Redis answered again"
            time.sleep(0.2)
        assert local.metric("cheapmodel_state_errors_total") >= 1
    finally:
        stop_all([local, deny])
