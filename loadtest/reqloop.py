#!/usr/bin/env python3
"""Keep requests flowing through a gateway for a fixed time and count what came back.

    reqloop.py BASE_URL --seconds 10 [--workers 4] [--fresh-workers 2] [--key KEY] [--model gpt-5.5]

`--workers` threads each reuse one keep-alive connection (reconnecting after any error);
`--fresh-workers` threads open a new connection per request. Every request is the OpenAI JSON chat
completion and counts as ok only with status 200 and a `usage` object. Prints one JSON line:
{"total":..,"ok":..,"by_kind":{..},"non200":{status: count},"errors":{"keepalive|fresh:ErrorName": count},
"first_error":..}
Exit 0 when every request was ok.
"""
import argparse
import http.client
import json
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--fresh-workers", type=int, default=2)
    ap.add_argument("--key", default="cm_demo_key_not_secret")
    ap.add_argument("--model", default="gpt-5.5")
    ap.add_argument("--timeout", type=float, default=10)
    a = ap.parse_args()
    u = urlsplit(a.url)
    if u.hostname != "127.0.0.1":
        print("only 127.0.0.1 may be a target", file=sys.stderr)
        return 2
    body = json.dumps({"model": a.model, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {a.key}"}
    lock = threading.Lock()
    total, ok = Counter(), Counter()
    non200, errors = Counter(), Counter()
    first_error = []
    deadline = time.monotonic() + a.seconds

    def record(kind, status=None, err=None):
        with lock:
            total[kind] += 1
            if err is not None:
                errors[f"{kind}:{type(err).__name__}"] += 1
                if not first_error:
                    first_error.append(f"{time.strftime('%H:%M:%S')} {kind}: {err!r}")
            elif status == 200:
                ok[kind] += 1
            else:
                non200[str(status)] += 1
                if not first_error:
                    first_error.append(f"{time.strftime('%H:%M:%S')} {kind}: status {status}")

    def worker(fresh: bool):
        kind = "fresh" if fresh else "keepalive"
        conn = None
        while time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=a.timeout)
                conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                good = r.status == 200 and b'"usage"' in data
                record(kind, 200 if good else r.status)
                if fresh or r.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is counted
                record(kind, err=e)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(False,)) for _ in range(a.workers)]
    threads += [threading.Thread(target=worker, args=(True,)) for _ in range(a.fresh_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res = {
        "total": sum(total.values()), "ok": sum(ok.values()),
        "by_kind": {k: {"total": total[k], "ok": ok[k]} for k in total},
        "non200": dict(non200), "errors": dict(errors),
        "first_error": first_error[0] if first_error else None,
    }
    print(json.dumps(res))
    return 0 if res["total"] > 0 and res["ok"] == res["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
