#!/usr/bin/env python3
"""Markdown report for compare.sh: reads the per-target JSON lines and the two SSE results.

    compare_report.py RESULTS.jsonl STREAM_DIRECT.json STREAM_GATEWAY.json OUT.md DURATION RATE ELAPSED [IDLE_BUSY]

Prints the report and writes it to OUT.md.
"""
import json, os, platform, subprocess, sys, datetime
res_f, sd_f, sg_f, out, dur, rate, elapsed = sys.argv[1:8]
idle_busy = sys.argv[8] if len(sys.argv) > 8 else "?"
rows = {r["name"]: r for r in map(json.loads, open(res_f))}
def load(f):
    try:
        return json.load(open(f))
    except Exception:
        return None
sd, sg = load(sd_f), load(sg_f)
def ver(cmd):
    try:
        o = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return (o.stdout + o.stderr).strip().splitlines()[0]
    except Exception:
        return "?"
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break

f1 = lambda v, d=1: "—" if v is None else f"{v:,.{d}f}"
mb = lambda kb: "—" if kb is None else f"{kb/1024:.1f}"
def ratio(a, b, d=2):
    return "—" if a is None or b in (None, 0) else f"{a/b:.{d}f}×"

L = []
L.append(f"## cheapmodel vs nginx vs HAProxy — {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")
L.append("")
L.append(f"Host: {cpu}, {os.cpu_count()} CPUs, kernel {platform.release()}, load at end {open('/proc/loadavg').read().split()[0]}, "
         f"other processes' CPU before the run {idle_busy}% of one CPU. "
         f"{ver(['nginx','-v'])}; {ver(['haproxy','-v'])}; {ver(['wrk','--version'])}; {ver(['k6','version'])}.")
L.append(f"Request: OpenAI JSON chat completion (gpt-5.5), POST /v1/chat/completions. Proxy under test on CPU 1, "
         f"one worker; mock-upstream (1 thread), wrk and k6 on CPU 0. wrk -t1 -c64 -d{dur}s; k6 constant-arrival-rate "
         f"{rate} req/s for {dur}s. Run took {elapsed}s.")
L.append("")
L.append(f"| target | wrk req/s | non-2xx+err | CPU0/CPU1/other busy % | CPU µs/req | of which kernel | CPU µs/req @{rate}/s | p50 ms @{rate}/s | p90 ms | p99 ms | added p99 ms | k6 failed / other % | RSS idle MB | RSS peak MB |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
direct_p99 = rows.get("direct", {}).get("k6", {}).get("p99")
for n in ("direct", "nginx", "haproxy", "pingora-bare", "gateway", "gateway-noledger", "gateway-limited"):
    r = rows.get(n)
    if not r:
        if n not in ("pingora-bare", "gateway-noledger", "gateway-limited"):
            L.append(f"| {n} | (not measured) ||||||||||||")
        continue
    w, k = r["wrk"], r["k6"]
    added = "—" if n == "direct" or direct_p99 is None else f"{k['p99'] - direct_p99:+.3f}"
    L.append(f"| {n} | {f1(w['rps'],0)} | {w['non2xx'] + w['errors']} | {'/'.join(map(str, r['busy']))} | {f1(r['cpu_us'])} | "
             f"{f1(r.get('cpu_kernel_us'))} | {f1(k.get('cpu_us'))} | {k['p50']:.3f} | {k['p90']:.3f} | "
             f"{k['p99']:.3f} | {added} | {k['failed']*100:.2f}% / {k.get('other', '?')} | {mb(r['rss_idle_kb'])} | {mb(r['rss_peak_kb'])} |")
L.append("")
g = rows.get("gateway")
if g:
    L.append("Gateway relative to the plain proxies (throughput and CPU: >1× means the gateway is higher):")
    L.append("")
    L.append(f"| gateway ÷ | wrk req/s | CPU µs/req | CPU µs/req @{rate}/s | added p99 (ms, gateway vs it) | RSS peak |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for n in ("haproxy", "nginx", "pingora-bare", "gateway-noledger"):
        b = rows.get(n)
        if not b:
            continue
        gp = g["k6"]["p99"] - direct_p99 if direct_p99 is not None else None
        bp = b["k6"]["p99"] - direct_p99 if direct_p99 is not None else None
        ap = "—" if gp is None else f"{gp:+.3f} vs {bp:+.3f}"
        L.append(f"| {n} | {ratio(g['wrk']['rps'], b['wrk']['rps'])} | {ratio(g['cpu_us'], b['cpu_us'])} | "
                 f"{ratio(g['k6'].get('cpu_us'), b['k6'].get('cpu_us'))} | {ap} | "
                 f"{ratio(g['rss_peak_kb'], b['rss_peak_kb'])} |")
    L.append("")
lim, nol = rows.get("gateway-limited"), rows.get("gateway-noledger")
if g and (lim or nol):
    L.append("What the ledger and the limiter cost, same run (CPU µs per request; >1× means more):")
    L.append("")
    if nol:
        L.append(f"- ledger (SQLite, default) on ÷ off, run one after the other (the paired figure below holds "
                 f"still where this one drifts): {ratio(g['cpu_us'], nol['cpu_us'])} CPU, "
                 f"{ratio(g['wrk']['rps'], nol['wrk']['rps'])} req/s")
    if lim:
        L.append(f"- limited key ÷ unlimited key (both with the ledger): {ratio(lim['cpu_us'], g['cpu_us'])} CPU, "
                 f"{ratio(lim['wrk']['rps'], g['wrk']['rps'])} req/s")
    L.append("")
L.append(f"SSE time to first event, OpenAI stream with `x-mock-event-delay-ms: 20` (fresh connection each, medians). "
         "The direct request carries `stream_options.include_usage` like the gateway's upstream request, so the "
         "mock sends the same 9 events (8 × 20 ms gaps) on both paths:")
L.append("")
L.append("| path | ok/n | first event p50 ms (min–max) | whole stream p50 ms |")
L.append("|---|---:|---:|---:|")
for label, s in (("direct (+include_usage)", sd), ("gateway", sg)):
    if not s or not s.get("first_event_ms"):
        L.append(f"| {label} | {s.get('ok') if s else 0}/{s.get('n') if s else '?'} | — | — |"); continue
    fe, t = s["first_event_ms"], s["total_ms"]
    L.append(f"| {label} | {s['ok']}/{s['n']} | {fe['p50']:.2f} ({fe['min']:.2f}–{fe['max']:.2f}) | {t['p50']:.2f} |")
if sd and sg and sd.get("first_event_ms") and sg.get("first_event_ms"):
    L.append("")
    L.append(f"Gateway adds {sg['first_event_ms']['p50'] - sd['first_event_ms']['p50']:+.2f} ms to the first event "
             f"and {sg['total_ms']['p50'] - sd['total_ms']['p50']:+.2f} ms to the whole stream (medians).")
text = "\n".join(L) + "\n"
with open(out, "w") as f:
    f.write(text)
print(text)
