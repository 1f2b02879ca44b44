"""Async media tasks: one task shape for every upstream style (flat, wrapped, OpenAI sync and video
jobs), ownership, signed ids, deadlines, bounded polling, restarts, metering."""
import base64
import concurrent.futures
import copy
import json
import time

import httpx
import pytest

from conftest import KEY_A, KEY_B, UPSTREAM_OPENAI_KEY, openai_headers, sha256_hex

DOCS_EXAMPLE = {"model": "gpt-image-2", "prompt": "A cinematic wide-angle shot of a futuristic city skyline",
                "size": "16:9", "resolution": "2k"}


def submit(g, path, body, key=KEY_A):
    return httpx.post(g.url + path, json=body, headers=openai_headers(key), timeout=10)


def poll(g, task_id, key=KEY_A):
    return httpx.get(f"{g.url}/v1/tasks/{task_id}", headers=openai_headers(key), timeout=10)


def poll_until_done(g, task_id, key=KEY_A, limit=20):
    seen = []
    for _ in range(limit):
        r = poll(g, task_id, key)
        assert r.status_code == 200, r.text
        t = r.json()
        seen.append(t["status"])
        assert t["status"] in ("pending", "processing", "completed", "failed"), t
        if t["status"] in ("completed", "failed"):
            return t, seen
        time.sleep(1.05)   # past the gateway's 1 s poll cache
    pytest.fail(f"task never finished: {seen}")


def test_docs_example_flat_upstream(gateway, mock):
    r = submit(gateway, "/v1/images/generations", DOCS_EXAMPLE)
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["id"].startswith("task_") and t["object"] == "image.generation.task" and t["type"] == "image"
    assert (t["status"], t["progress"], t["model"]) == ("pending", 0, "gpt-image-2")
    assert "results" not in t
    sent = mock.last()
    assert sent["path"] == "/flat/v1/images/generations"
    assert {k.lower(): v for k, v in sent["headers"]}["authorization"].startswith("Bearer sk-upstream")
    done, seen = poll_until_done(gateway, t["id"])
    assert done["status"] == "completed" and done["progress"] == 100
    assert "processing" in seen
    assert done["results"] and all(u.startswith("https://cdn.mock.invalid/") for u in done["results"])
    assert done["usage"]["cost_usd"] == pytest.approx(0.04 * len(done["results"]))
    assert done["id"] == t["id"] and done["created"] == t["created"]


@pytest.mark.parametrize("path,model,results", [
    ("/v1/images/generations", "seedream-4", 2),      # wrapped, array submit form, url arrays
    ("/v1/videos/generations", "veo3-fast", 1),       # wrapped, object submit form, url string
])
def test_wrapped_upstream(gateway, path, model, results):
    body = {"model": model, "prompt": "a cat", "n": results} if "images" in path else {"model": model, "prompt": "a cat", "duration": 8}
    t = submit(gateway, path, body).json()
    assert t["status"] == "pending"
    done, _ = poll_until_done(gateway, t["id"])
    assert done["status"] == "completed"
    assert len(done["results"]) == results and all(isinstance(u, str) for u in done["results"])
    if "videos" in path:
        assert t["object"] == "video.generation.task"
        assert done["usage"]["seconds"] == 8 and done["usage"]["cost_usd"] == pytest.approx(0.8)


def test_a_per_second_model_is_asked_for_the_duration_it_bills(gateway, mock):
    """A task API makes some default length of its own when asked for none, which the gateway
    cannot know (such a task used to be billed 0 s): a model priced per second is asked for its
    `default_duration_seconds` and billed for it, and without one the submit is a 400."""
    mock.clear()
    t = submit(gateway, "/v1/videos/generations", {"model": "kling-v2", "prompt": "a dog"}).json()
    (sent,) = [r for r in mock.requests() if r["path"].endswith("/videos/generations")]
    assert json.loads(sent["body"])["duration"] == 5
    done, _ = poll_until_done(gateway, t["id"])
    assert done["usage"]["seconds"] == 5 and done["usage"]["cost_usd"] == pytest.approx(5 * 0.05 + 0.01)
    mock.clear()
    r = submit(gateway, "/v1/videos/generations", {"model": "veo3-fast", "prompt": "a dog"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "duration", r.text
    assert [r for r in mock.requests() if r["path"].endswith("/videos/generations")] == []


def test_wrapped_cancel_is_failed(gateway):
    t = submit(gateway, "/v1/images/generations", {"model": "seedream-4", "prompt": "mock-cancel"}).json()
    done, _ = poll_until_done(gateway, t["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "cancelled"


def test_upstream_failure_marks_the_task_failed_with_its_reason(gateway):
    t = submit(gateway, "/v1/videos/generations", {"model": "kling-v2", "prompt": "mock-fail"}).json()
    done, _ = poll_until_done(gateway, t["id"])
    assert done["status"] == "failed"
    assert done["error"] == {"code": "content_policy_violation", "message": "mock: prompt rejected"}
    assert "results" not in done and "usage" not in done


def test_submit_rejected_upstream_is_its_error(gateway):
    r = submit(gateway, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "mock-submit-error"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "mock: prompt rejected"


def test_a_task_upstream_that_quotes_the_gateways_key_reaches_the_caller_masked(gateway):
    r = submit(gateway, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "mock-submit-error mock-echo-key"})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert UPSTREAM_OPENAI_KEY not in r.text and message == "mock: prompt rejected for Bearer " + "*" * len(
        UPSTREAM_OPENAI_KEY), message


def test_submits_are_in_the_request_metric_and_name_their_model_in_the_access_log(gateway):
    """A failing media provider used to show only in the tasks metric: submits had no
    `cheapmodel_requests_total` series and their access-log lines had no model or upstream."""
    before = {s: gateway.metric("cheapmodel_requests_total", model="gpt-image-2", status=s) for s in ("200", "400")}
    for prompt in ("a cat", "mock-submit-error"):
        r = submit(gateway, "/v1/images/generations", {"model": "gpt-image-2", "prompt": prompt,
                                                      "size": "1:1"}, key=KEY_A)
        assert r.status_code in (200, 400), r.text
    assert gateway.metric("cheapmodel_requests_total", model="gpt-image-2", status="200") == before["200"] + 1
    assert gateway.metric("cheapmodel_requests_total", model="gpt-image-2", status="400") == before["400"] + 1
    deadline = time.time() + 5
    while True:
        lines = [l for l in gateway.access_log() if l.get("path") == "/v1/images/generations"][-2:]
        if len(lines) == 2 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert [(l["model"], l["status"]) for l in lines] == [("gpt-image-2", 200), ("gpt-image-2", 400)], lines
    assert all(l["upstream"] for l in lines), lines


def test_openai_sync_image_runs_in_the_gateway(gateway):
    t = submit(gateway, "/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat", "n": 2, "size": "1:1"}).json()
    assert t["status"] == "pending"
    done, _ = poll_until_done(gateway, t["id"])
    assert done["status"] == "completed" and len(done["results"]) == 2
    png = base64.b64decode(done["results"][0].split(",", 1)[1])
    assert done["results"][0].startswith("data:image/png;base64,") and png.startswith(b"\x89PNG")
    assert done["usage"]["cost_usd"] == pytest.approx(0.04)


def test_openai_speech(gateway):
    t = submit(gateway, "/v1/audios/generations", {"model": "tts-1", "prompt": "Hello there"}).json()
    done, _ = poll_until_done(gateway, t["id"])
    assert done["status"] == "completed" and done["type"] == "audio"
    assert done["results"][0].startswith("data:audio/mpeg;base64,")
    assert base64.b64decode(done["results"][0].split(",", 1)[1]).startswith(b"ID3")


def test_openai_sync_failure(gateway):
    t = submit(gateway, "/v1/images/generations", {"model": "gpt-image-1", "prompt": "mock-fail"}).json()
    done, _ = poll_until_done(gateway, t["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "content_policy_violation"


def test_openai_video_job_and_its_content(gateway, mock):
    t = submit(gateway, "/v1/videos/generations", {"model": "sora-2", "prompt": "waves", "size": "9:16", "duration": 8}).json()
    sent = mock.last()
    assert sent["path"] == "/v1/videos"
    assert '"seconds":"8"' in sent["body"] and '"size":"720x1280"' in sent["body"]
    done, seen = poll_until_done(gateway, t["id"])
    assert done["status"] == "completed"
    assert done["results"] == [f"{gateway.url}/v1/tasks/{t['id']}/content"]
    r = httpx.get(done["results"][0], headers=openai_headers(), timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4" and len(r.content) > 100
    assert httpx.get(done["results"][0], headers=openai_headers(KEY_B), timeout=10).status_code == 404
    assert done["usage"]["cost_usd"] == pytest.approx(0.8)


def test_openai_videos_own_seconds_field_is_the_length_billed(gateway, mock):
    """An OpenAI-SDK caller names the length in OpenAI's own `seconds` (a string). It used to pass
    through unread: the upstream made 12 s and the gateway billed its 4 s default."""
    t = submit(gateway, "/v1/videos/generations", {"model": "sora-2", "prompt": "waves", "seconds": "12"}).json()
    assert '"seconds":"12"' in mock.last()["body"]
    done, _ = poll_until_done(gateway, t["id"])
    assert done["status"] == "completed"
    assert done["usage"]["seconds"] == 12 and done["usage"]["cost_usd"] == pytest.approx(1.2)
    r = submit(gateway, "/v1/videos/generations", {"model": "sora-2", "prompt": "waves", "seconds": "5"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "seconds"


def test_video_content_before_it_is_ready_is_the_upstreams_error_in_the_gateways_shape(gateway):
    t = submit(gateway, "/v1/videos/generations", {"model": "sora-2", "prompt": "mock-never"}).json()
    r = httpx.get(f"{gateway.url}/v1/tasks/{t['id']}/content", headers=openai_headers(), timeout=10)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "video_not_ready" and "sk-upstream" not in r.text


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_ten_callers_downloading_a_200_mb_video_at_once_stream_it(fresh_gateway):
    """Task content goes through Pingora as the caller reads it: ten concurrent 200 MB downloads
    must not put 2 GB in the gateway's memory (they did when a download was read whole first)."""
    g = fresh_gateway()
    size = 200 * 1024 * 1024
    t = submit(g, "/v1/videos/generations", {"model": "sora-2", "prompt": f"waves mock-bytes:{size}"}).json()
    done, _ = poll_until_done(g, t["id"])
    url = done["results"][0]
    before = peak_rss_mb(g.proc.pid)

    def download(_):
        got, head = 0, b""
        with httpx.stream("GET", url, headers=openai_headers(), timeout=60) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
            assert int(r.headers["content-length"]) == size
            for chunk in r.iter_raw(1 << 20):
                if len(head) < 12:
                    head += chunk[:12]
                got += len(chunk)
        return got, head

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(download, range(10)))
    assert all(got == size and head[4:8] == b"ftyp" for got, head in results), [(g_, h) for g_, h in results]
    peak = peak_rss_mb(g.proc.pid)
    print(f"gateway peak RSS {before:.1f} MB before, {peak:.1f} MB after ten 200 MB downloads")
    assert peak < before + 100, (before, peak)
    # The downloads are in the access log, against the upstream, without a ledger row of their own.
    logged = [r for r in g.access_log() if r["path"].endswith("/content")]
    assert len(logged) == 10 and all(r["status"] == 200 and r["upstream"] for r in logged), logged


def test_ownership_and_forged_ids_all_get_the_same_404(gateway):
    t = submit(gateway, "/v1/images/generations", DOCS_EXAMPLE).json()
    tid = t["id"]
    other = poll(gateway, tid, KEY_B)
    altered = poll(gateway, tid[:-3] + ("AAA" if not tid.endswith("AAA") else "BBB"))
    payload, mac = tid[len("task_"):].split(".")
    forged = poll(gateway, "task_" + payload[:-2] + "xx." + mac)
    unknown = poll(gateway, "task-unified-1757156493-imcg5zqt")
    bodies = {r.text for r in (other, altered, forged, unknown)}
    assert {r.status_code for r in (other, altered, forged, unknown)} == {404}
    assert len(bodies) == 1, bodies
    assert poll(gateway, tid).status_code == 200


def test_ids_are_unguessable(gateway):
    ids = {submit(gateway, "/v1/images/generations", DOCS_EXAMPLE).json()["id"] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) > 60 for i in ids)


@pytest.mark.parametrize("path,body,param", [
    ("/v1/images/generations", {"model": "gpt-image-2"}, "prompt"),
    ("/v1/images/generations", {"model": "gpt-image-2", "prompt": "x", "size": "7:5"}, "size"),
    ("/v1/images/generations", {"model": "gpt-image-2", "prompt": "x", "n": 50}, "n"),
    ("/v1/images/generations", {"model": "gpt-image-2", "prompt": "x", "resolution": "16k"}, "resolution"),
    ("/v1/images/generations", {"model": "gpt-image-1", "prompt": "x", "resolution": "4k"}, "resolution"),
    ("/v1/videos/generations", {"model": "sora-2", "prompt": "x", "duration": 5}, "duration"),
    ("/v1/audios/generations", {"model": "tts-1", "prompt": "x", "size": "1:1"}, "size"),
])
def test_bad_media_requests_name_the_field(gateway, mock, path, body, param):
    mock.clear()
    r = submit(gateway, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert mock.requests() == []


def test_task_refusals_count_as_the_gateways_own_errors(fresh_gateway):
    """cheapmodel_rejected_total counts every answer that is the gateway's own error, the task
    route's included: an unknown id and a bad media parameter."""
    g = fresh_gateway()
    assert poll(g, "task_abc").status_code == 404
    assert submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "x", "n": 0}).status_code == 400
    assert g.metric("cheapmodel_rejected_total", reason="task_not_found") == 1
    assert g.metric("cheapmodel_rejected_total", reason="invalid_parameter") == 1
    # A task answered as it stands is no rejection.
    t = submit(g, "/v1/images/generations", DOCS_EXAMPLE).json()
    assert poll(g, t["id"]).status_code == 200
    assert g.metric("cheapmodel_rejected_total") == 2


def test_kind_must_match_the_endpoint_and_models_must_exist(gateway):
    r = submit(gateway, "/v1/videos/generations", {"model": "gpt-image-2", "prompt": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = submit(gateway, "/v1/images/generations", {"model": "gpt-5.5", "prompt": "x"})
    assert r.status_code == 400
    r = submit(gateway, "/v1/images/generations", {"model": "gpt-image", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(gateway.url + "/v1/images/generations", content=b"{" * 10, headers=openai_headers(), timeout=10)
    assert r.status_code == 400


def test_deadline_fails_a_task_that_never_finishes(gateway):
    t = submit(gateway, "/v1/images/generations", {"model": "never-image", "prompt": "mock-never"}).json()
    time.sleep(3.1)
    r = poll(gateway, t["id"]).json()
    assert r["status"] == "failed" and r["error"]["code"] == "deadline_exceeded"


def test_the_deadline_fails_only_a_task_the_upstream_has_not_finished(fresh_gateway):
    """The upstream is asked before the deadline fails a task, so a task that ended is answered as
    it ended: after a restart past its deadline (it used to read `deadline_exceeded` then, while
    the ledger billed it completed), or when it ended after the settler's last poll (those back
    off to a minute apart)."""
    g = fresh_gateway()
    t = submit(g, "/v1/images/generations", {"model": "never-image", "prompt": "a cat"}).json()
    done, _ = poll_until_done(g, t["id"])   # the mock ends it at its third poll, about the 2 s deadline
    assert done["status"] == "completed" and done["results"], done.get("error")
    time.sleep(max(0.0, t["created"] + 3 - time.time()))
    g.stop()
    g2 = fresh_gateway()
    g2.config_path.write_text(g.config_path.read_text())
    again, _ = poll_until_done(g2, t["id"])
    assert (again["status"], again["results"]) == ("completed", done["results"]), again.get("error")


def test_many_callers_polling_one_task_cause_no_poll_storm(gateway, mock):
    before = httpx.get(mock.url + "/__mock/tasks", timeout=5).json()["tasks"]
    t = submit(gateway, "/v1/images/generations", DOCS_EXAMPLE).json()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: poll(gateway, t["id"]).status_code, range(64)))
    assert set(statuses) == {200}
    tasks = httpx.get(mock.url + "/__mock/tasks", timeout=5).json()["tasks"]
    new = [v for k, v in tasks.items() if k not in before]
    assert len(new) == 1
    assert new[0]["polls"] <= 2, new


def test_restart_keeps_relayed_tasks(fresh_gateway):
    g = fresh_gateway()
    t = submit(g, "/v1/videos/generations", {"model": "kling-v2", "prompt": "a dog", "duration": 5}).json()
    assert poll(g, t["id"]).json()["status"] in ("pending", "processing")
    g.stop()
    g2 = fresh_gateway()
    g2.config_path.write_text(g.config_path.read_text())
    done, _ = poll_until_done(g2, t["id"])
    assert done["status"] == "completed"
    assert done["usage"]["cost_usd"] == pytest.approx(5 * 0.05 + 0.01)


def test_a_key_added_by_reload_and_kept_by_a_restart_voids_no_task_id(fresh_gateway):
    """The default task secret is derived from the config's key hashes. Adding a key used to change
    it: every id already handed out answered 404, and tasks still pending were never settled or
    billed. Now the first start pins the secret in the ledger's database and reloads keep it."""
    def with_new_key(config):
        config["keys"].append({"name": "team-new", "sha256": sha256_hex("cm_new_key_added_later_0001")})

    g = fresh_gateway(watch_interval_seconds=0)
    before = [submit(g, "/v1/videos/generations", {"model": "kling-v2", "prompt": "a dog", "duration": 5}).json(),
              submit(g, "/v1/images/generations", DOCS_EXAMPLE).json()]
    cfg = copy.deepcopy(g.config)
    with_new_key(cfg)
    g.reload_with(cfg)
    after = submit(g, "/v1/images/generations", DOCS_EXAMPLE).json()
    for t in before + [after]:
        assert poll(g, t["id"]).status_code == 200, t["id"]
    g.stop()

    # A new process with the new key set, on the same ledger: the ids of both configurations hold.
    g2 = fresh_gateway(edit=with_new_key)
    for t in before + [after]:
        done, _ = poll_until_done(g2, t["id"])
        assert done["status"] == "completed", done
        if t is before[0]:
            assert done["usage"]["cost_usd"] == pytest.approx(5 * 0.05 + 0.01)


def test_a_task_is_billed_at_the_prices_of_its_submit(fresh_gateway):
    """A model removed (or repriced) by a reload while its tasks run: they were billed 0 (or at the
    new price) when they ended. The task id carries the prices of submit time."""
    g = fresh_gateway(watch_interval_seconds=0)
    repriced = submit(g, "/v1/images/generations", {"model": "gpt-image-2", "prompt": "a cat", "n": 2}).json()
    removed = submit(g, "/v1/videos/generations", {"model": "kling-v2", "prompt": "a dog", "duration": 5}).json()
    cfg = copy.deepcopy(g.config)
    cfg["models"]["gpt-image-2"]["price"] = {"per_image": 1.0}
    del cfg["models"]["kling-v2"]
    g.reload_with(cfg)
    done, _ = poll_until_done(g, repriced["id"])
    assert len(done["results"]) == 2 and done["usage"]["cost_usd"] == pytest.approx(2 * 0.04), done["usage"]
    done, _ = poll_until_done(g, removed["id"])
    assert done["usage"]["cost_usd"] == pytest.approx(5 * 0.05 + 0.01), done["usage"]
    assert g.eventually_metric("cheapmodel_cost_usd_total", pytest.approx(2 * 0.04), model="gpt-image-2") == \
        pytest.approx(2 * 0.04)


def test_tasks_are_metered_once(fresh_gateway):
    g = fresh_gateway()
    t = submit(g, "/v1/images/generations", DOCS_EXAMPLE).json()
    done, _ = poll_until_done(g, t["id"])
    for _ in range(3):
        poll(g, t["id"])
    n = len(done["results"])
    assert g.eventually_metric("cheapmodel_cost_usd_total", pytest.approx(0.04 * n), model="gpt-image-2", key="team-a") == pytest.approx(0.04 * n)
    assert g.eventually_metric("cheapmodel_tasks_total", 1, model="gpt-image-2", status="pending") == 1
    assert g.eventually_metric("cheapmodel_tasks_total", 1, model="gpt-image-2", status="completed") == 1
