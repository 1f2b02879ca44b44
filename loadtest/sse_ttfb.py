#!/usr/bin/env python3
"""Time to first SSE event: POST an OpenAI streaming chat request N times (one fresh connection
each) and report the medians of (a) time from sending the request to the first `data:` line and
(b) time to the end of the stream (`data: [DONE]`).

    sse_ttfb.py URL [--n 20] [--event-delay-ms 20] [--key KEY] [--include-usage] [--model M]

--model picks the route (default gpt-5.5; claude-sonnet-4-5-20250929 through the gateway measures a
translated stream: the OpenAI caller gets chunks translated from Anthropic events).

Prints one JSON line: {"n":..,"ok":..,"first_event_ms":{"p50":..,"min":..,"max":..},"total_ms":{...}}
"""
import argparse
import json
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit



def body(include_usage: bool, model: str) -> bytes:
    b = {
        "model": model,
        "stream": True,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "Say hello in five words."}],
    }
    if include_usage:
        # what the gateway sends upstream: it adds this to every OpenAI stream (and strips the
        # extra usage chunk on the way back), so the upstream emits one more event
        b["stream_options"] = {"include_usage": True}
    return json.dumps(b).encode()


def one(host: str, port: int, path: str, key: str, delay: int, timeout: float, payload: bytes):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nx-mock-event-delay-ms: {delay}\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        t0 = time.perf_counter()
        s.sendall(head + payload)
        buf = b""
        status = None
        first = None
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if status is None and b"\r\n" in buf:
                status = int(buf.split(b" ", 2)[1])
            if first is None:
                hdr_end = buf.find(b"\r\n\r\n")
                if hdr_end >= 0 and b"data:" in buf[hdr_end:]:
                    first = time.perf_counter() - t0
            if b"[DONE]" in buf:
                break
        total = time.perf_counter() - t0
        ok = status == 200 and first is not None and b"[DONE]" in buf
        return ok, first, total
    finally:
        s.close()


def stats(xs):
    if not xs:
        return None
    return {"p50": round(statistics.median(xs) * 1000, 2), "min": round(min(xs) * 1000, 2),
            "max": round(max(xs) * 1000, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url", help="base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--event-delay-ms", type=int, default=20)
    ap.add_argument("--key", default="cm_demo_key_not_secret")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--model", default="gpt-5.5")
    ap.add_argument("--include-usage", action="store_true",
                    help='send stream_options {"include_usage": true} (use for the direct baseline)')
    a = ap.parse_args()
    u = urlsplit(a.url)
    if u.hostname != "127.0.0.1":
        print("only 127.0.0.1 may be a target", file=sys.stderr)
        return 2
    path = (u.path.rstrip("/") or "") + "/v1/chat/completions"
    firsts, totals, ok = [], [], 0
    for _ in range(a.n):
        try:
            good, first, total = one(u.hostname, u.port or 80, path, a.key, a.event_delay_ms, a.timeout,
                                    body(a.include_usage, a.model))
        except OSError:
            continue
        if good:
            ok += 1
            firsts.append(first)
            totals.append(total)
    print(json.dumps({"n": a.n, "ok": ok, "first_event_ms": stats(firsts), "total_ms": stats(totals)}))
    return 0 if ok == a.n else 1


if __name__ == "__main__":
    sys.exit(main())
