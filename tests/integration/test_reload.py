"""Hot reload: SIGHUP and file changes swap the registry; a bad file keeps the old one; no request
fails because of a reload."""
import concurrent.futures
import copy
import signal
import threading
import time

import httpx

from conftest import KEY_A, chat_body, claude_body, anthropic_headers, openai_headers


def model_ids(g, key=KEY_A):
    r = httpx.get(g.url + "/v1/models", headers=openai_headers(key), timeout=10)
    return {m["id"] for m in r.json()["data"]}


def wait_for(pred, timeout=10):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_sighup_adds_a_model_and_bad_file_is_rejected(fresh_gateway):
    g = fresh_gateway(watch_interval_seconds=0)
    cfg = copy.deepcopy(g.config)
    cfg["models"]["gpt-5.5-new"] = {"upstream": "openai"}
    g.write_config(cfg)
    assert "gpt-5.5-new" not in model_ids(g)  # not watched: only SIGHUP reloads
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "gpt-5.5-new" in model_ids(g))
    r = httpx.post(g.url + "/v1/chat/completions", json=chat_body("gpt-5.5-new"), headers=openai_headers(), timeout=10)
    assert r.status_code == 200
    assert g.metric("cheapmodel_config_reloads_total", result="ok") == 1

    bad = copy.deepcopy(cfg)
    bad["models"]["broken"] = {"upstream": "no-such-upstream"}
    g.write_config(bad)
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: g.metric("cheapmodel_config_reloads_total", result="error") == 1)
    assert g.proc.poll() is None
    assert "gpt-5.5-new" in model_ids(g)
    assert "models.broken.upstream" in g.log_path.read_text()


def test_an_upstream_key_file_rotates_without_a_restart(fresh_gateway, mock, tmp_path):
    """`api_key_file` is read at every reload, and the file is watched with the config: a rotated
    upstream key used to need a restart (`api_key_env` is read once, from the process's
    environment)."""
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-rotated-ONE\n")

    def edit(c):
        del c["upstreams"]["openai"]["api_key_env"]
        c["upstreams"]["openai"]["api_key_file"] = "openai.key"   # the config's directory's
    g = fresh_gateway(edit=edit, watch_interval_seconds=1)

    def upstream_auth():
        r = httpx.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers(), timeout=10)
        assert r.status_code == 200, r.text
        return {k.lower(): v for k, v in mock.last()["headers"]}["authorization"]
    assert upstream_auth() == "Bearer sk-rotated-ONE"
    tmp = tmp_path / "openai.key.tmp"
    tmp.write_text("sk-rotated-TWO-longer\n")
    tmp.replace(key_file)   # as a secret manager writes it
    wait_for(lambda: g.metric("cheapmodel_config_reloads_total", result="ok") == 1)
    assert upstream_auth() == "Bearer sk-rotated-TWO-longer"
    # Rewritten in place with the same length and modification time (`cp -p`, `rsync -t`): the
    # content is what is watched.
    import os
    stat = key_file.stat()
    key_file.write_text("sk-rotated-TRE-longer\n")
    os.utime(key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    wait_for(lambda: g.metric("cheapmodel_config_reloads_total", result="ok") == 2)
    assert upstream_auth() == "Bearer sk-rotated-TRE-longer"
    # An emptied file is refused like any bad config; the last good key keeps serving.
    key_file.write_text("")
    wait_for(lambda: g.metric("cheapmodel_config_reloads_total", result="error") == 1)
    assert "upstreams.openai.api_key_file: the key is empty" in g.log_path.read_text()
    assert upstream_auth() == "Bearer sk-rotated-TRE-longer"
    assert "sk-rotated" not in g.log_path.read_text()


def test_a_reload_names_the_changed_settings_it_leaves_for_a_restart(fresh_gateway):
    """`server:` and `ledger:` apply at start only. A reload used to log "config reloaded" and say
    nothing of an edited listen address that did not apply."""
    g = fresh_gateway(watch_interval_seconds=0)
    cfg = copy.deepcopy(g.config)
    cfg["server"]["threads"] = cfg["server"].get("threads", 2) + 1
    cfg["ledger"] = {"url": "none"}
    cfg["models"]["gpt-5.5-new"] = {"upstream": "openai"}
    g.write_config(cfg)
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "gpt-5.5-new" in model_ids(g))
    wait_for(lambda: "left these changed settings as they were" in g.log_path.read_text())
    line = next(l for l in g.log_path.read_text().splitlines() if "left these changed settings" in l)
    assert line.endswith(": server.threads, ledger.url"), line


def test_file_change_is_picked_up_without_a_signal(fresh_gateway):
    g = fresh_gateway(watch_interval_seconds=1)
    cfg = copy.deepcopy(g.config)
    cfg["keys"].append({"name": "team-c", "sha256": __import__("hashlib").sha256(b"cm_team_c").hexdigest()})
    g.write_config(cfg)
    wait_for(lambda: httpx.get(g.url + "/v1/models", headers=openai_headers("cm_team_c"), timeout=5).status_code == 200)


def test_no_request_fails_during_reloads(fresh_gateway):
    g = fresh_gateway(watch_interval_seconds=0)
    stop = threading.Event()
    statuses = []

    def traffic(i):
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                if i % 2:
                    r = c.post(g.url + "/v1/chat/completions", json=chat_body(stream=True), headers=openai_headers())
                else:
                    r = c.post(g.url + "/v1/messages", json=claude_body(), headers=anthropic_headers())
                statuses.append(r.status_code)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(traffic, i) for i in range(4)]
        for n in range(20):
            cfg = copy.deepcopy(g.config)
            cfg["models"][f"extra-{n}"] = {"upstream": "openai"}
            g.write_config(cfg)
            g.proc.send_signal(signal.SIGHUP)
            time.sleep(0.1)
        stop.set()
        for f in futures:
            f.result(timeout=30)
    assert len(statuses) > 50
    assert set(statuses) == {200}
    assert g.metric("cheapmodel_config_reloads_total", result="ok") >= 1


def test_an_answer_written_during_a_graceful_stop_closes_its_connection(fresh_gateway):
    """Pingora drops keep-alive connections once a stop or upgrade begins. An answer that said
    `keep-alive` would let the caller send its next request into a connection about to be reset;
    so an answer written during the stop says `Connection: close`, and the caller reconnects."""
    g = fresh_gateway(grace_period_seconds=3, graceful_shutdown_timeout_seconds=5)
    with httpx.Client(timeout=10) as c:
        before = c.post(g.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers())
        assert before.status_code == 200 and before.headers["connection"] == "keep-alive"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(c.post, g.url + "/v1/chat/completions", json=chat_body(),
                               headers=openai_headers(**{"x-mock-delay-ms": "1500"}))
            time.sleep(0.5)
            g.proc.send_signal(signal.SIGTERM)
            during = slow.result(timeout=15)
        assert during.status_code == 200 and during.headers["connection"] == "close"
    g.proc.wait(timeout=20)


def test_failure_counters_exist_at_zero_from_the_start(fresh_gateway):
    """An alert on `increase(...[5m]) > 0` misses the first failure of a series that only appears
    with it: the failed-reload and ledger-error series are there at 0 from the start."""
    text = fresh_gateway().metrics_text()
    assert 'cheapmodel_config_reloads_total{result="error"} 0' in text
    for kind in ("database", "spool", "queue_full", "stopped"):
        assert f'cheapmodel_ledger_errors_total{{kind="{kind}"}} 0' in text, kind
