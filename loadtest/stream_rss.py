#!/usr/bin/env python3
"""Memory per concurrent stream: opens N OpenAI streams through a gateway at once, each a slow
stream of the mock (`x-mock-event-delay-ms` between its events), and reports the gateway's RSS
idle, with every stream open, and after they all ended.

    stream_rss.py BASE_URL GATEWAY_PID --n 1000 [--delay-ms 2000] [--key KEY] [--model gpt-5.5]

Prints one JSON line: {"n":..,"ok":..,"rss_idle_kb":..,"rss_open_kb":..,"rss_after_kb":..,
"kb_per_stream":..}. Every connection is a raw asyncio socket (no client library in the way);
every wait has a timeout. Exit 0 when every stream ended with `[DONE]`.
"""
import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def mark_opened(opened):
    if not opened.done():
        opened.set_result(None)


async def one_stream(host, port, request, opened, deadline):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=10)
    except (asyncio.TimeoutError, OSError):
        mark_opened(opened)
        return False
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        mark_opened(opened)
        if not head.startswith(b"HTTP/1.1 200"):
            return False
        seen = b""
        while b"[DONE]" not in seen:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=max(1.0, deadline - time.time()))
            if not chunk:
                return False
            seen = seen[-16:] + chunk
        return True
    except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError):
        return False
    finally:
        mark_opened(opened)   # a stream that failed early must not hold up the sample
        writer.close()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("pid", type=int)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--delay-ms", type=int, default=2000)
    ap.add_argument("--key", default="cm_demo_key_not_secret")
    ap.add_argument("--model", default="gpt-5.5")
    a = ap.parse_args()
    u = urlsplit(a.url)
    body = json.dumps({"model": a.model, "stream": True,
                       "messages": [{"role": "user", "content": "Hello"}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {a.key}\r\n"
               f"Content-Type: application/json\r\nx-mock-event-delay-ms: {a.delay_ms}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    idle = rss_kb(a.pid)
    # The mock's stream has 5 content events plus the end: about 6 delays long.
    deadline = time.time() + 6 * a.delay_ms / 1000 + 60
    loop = asyncio.get_running_loop()
    opened = [loop.create_future() for _ in range(a.n)]
    tasks = [asyncio.create_task(one_stream(u.hostname, u.port, request, o, deadline)) for o in opened]
    await asyncio.wait_for(asyncio.gather(*opened, return_exceptions=True), timeout=120)
    # Every stream has its headers; the first events are flowing. Sample while all are open.
    await asyncio.sleep(a.delay_ms / 1000)
    open_rss = rss_kb(a.pid)
    results = await asyncio.gather(*tasks)
    await asyncio.sleep(3)
    after = rss_kb(a.pid)
    ok = sum(results)
    print(json.dumps({"n": a.n, "ok": ok, "rss_idle_kb": idle, "rss_open_kb": open_rss, "rss_after_kb": after,
                      "kb_per_stream": round((open_rss - idle) / a.n, 1)}))
    return 0 if ok == a.n else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
