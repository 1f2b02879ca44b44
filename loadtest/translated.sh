#!/usr/bin/env bash
# Translated routes against same-dialect routes, on this machine, in one run.
#
#   bash loadtest/translated.sh [--out FILE]      # default /tmp/cheapmodel-translated.md
#   DURATION=10 bash loadtest/translated.sh       # seconds per wrk run (default 5)
#
# The gateway (one worker, CPU 1) serves four routes: an OpenAI caller on gpt-5.5 (same dialect)
# and on claude-sonnet-4-5-20250929 (translated), an Anthropic caller on the Claude model (same)
# and on gpt-5.5 (translated); the mock upstream and wrk share CPU 0. Each route runs with a short
# chat and with a ~10 KB tool-call conversation (loadtest/chat_bodies.py). Per run: wrk -t1 -c32
# closed-loop req/s and the gateway's CPU time per request (/proc/PID/stat around the run). The
# report gives each translated route as a ratio of the same caller's same-dialect route. Then, if
# k6 is installed, p50/p99 latency of the short chat at a constant RATE (default 500) req/s, JSON
# and stream responses, with the k6 scripts of this directory (MODEL picks the route); and the
# time to the first SSE event of an OpenAI caller's stream, same-dialect vs translated.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM

OUT=/tmp/cheapmodel-translated.md
cm_parse_out_args "$@"
cm_need wrk taskset curl python3 timeout pgrep
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
(($(nproc) >= 2)) || cm_die "needs at least 2 CPUs (gateway on CPU 1, load + mock on CPU 0)"
DURATION=${DURATION:-5}
DUR=$(cm_duration_s)
CM_MAX_SECONDS=$((DUR * 40 + 300))
WORK=$(mktemp -d /tmp/cheapmodel-translated.XXXXXX)
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

python3 "$CM_LT/chat_bodies.py" "$WORK" gpt-5.5 claude-sonnet-4-5-20250929

CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$WORK/mock.log" taskset -c 0
port=$(cm_free_port)
python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$WORK/gateway.yaml" \
  --mock "$CM_MOCK_ADDR" --listen "127.0.0.1:$port" --workdir "$WORK" \
  --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0
cm_spawn "$WORK/gateway.log" taskset -c 1 "$CM_BIN" --config "$WORK/gateway.yaml"
gpid=$(cm_child "$CM_LAST_PID")
cm_wait_gateway "http://127.0.0.1:$port" 15 || cm_die "gateway did not start: $(tail -n 20 "$WORK/gateway.log")"

# run CALLER SIZE KIND: one wrk run; appends a JSON line to results.jsonl
run() {
  local caller=$1 size=$2 kind=$3 path body t0 t1 line
  path=/v1/chat/completions
  [[ $caller == anthropic ]] && path=/v1/messages
  body="$WORK/$caller-$size-$kind.json"
  # one request first: it must succeed, or the run measures errors
  code=$(curl -sS -o "$WORK/probe.out" -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
    -H 'Authorization: Bearer cm_demo_key_not_secret' -H 'anthropic-version: 2023-06-01' \
    --data-binary "@$body" "http://127.0.0.1:$port$path")
  [[ $code == 200 ]] || cm_die "$caller $size $kind: probe answered $code: $(head -c 300 "$WORK/probe.out")"
  export CM_PATH=$path CM_DIALECT=$caller CM_BODY=$body
  taskset -c 0 timeout 10 wrk -t1 -c32 -d1s -s "$CM_LT/route.lua" "http://127.0.0.1:$port" >/dev/null 2>&1 || true
  t0=$(cpu_ticks "$gpid")
  taskset -c 0 timeout $((DUR + 15)) wrk -t1 -c32 -d"${DUR}s" -s "$CM_LT/route.lua" "http://127.0.0.1:$port" >"$WORK/wrk.out" 2>&1 || true
  t1=$(cpu_ticks "$gpid")
  line=$(sed -n 's/^WRK_JSON //p' "$WORK/wrk.out")
  [[ -n $line ]] || cm_die "wrk failed: $(cat "$WORK/wrk.out")"
  printf '{"caller":"%s","size":"%s","kind":"%s","bytes":%d,"cpu_ticks":%d,"hz":%d,"wrk":%s}\n' \
    "$caller" "$size" "$kind" "$(stat -c %s "$body")" "$((t1 - t0))" "$HZ" "$line" >>"$WORK/results.jsonl"
  cm_log "$caller $size $kind: $line"
}

for size in small 10k; do
  for caller in openai anthropic; do
    run "$caller" "$size" same
    run "$caller" "$size" translated
  done
done

# latency CALLER KIND MODE: k6 at a constant RATE with the short chat (json or stream response);
# appends a JSON line to latency.jsonl
RATE=${RATE:-500}
latency() {
  local caller=$1 kind=$2 mode=$3 model rc=0
  local own=gpt-5.5 other=claude-sonnet-4-5-20250929
  [[ $caller == anthropic ]] && own=claude-sonnet-4-5-20250929 other=gpt-5.5
  model=$own
  [[ $kind == translated ]] && model=$other
  BASE_URL="http://127.0.0.1:$port" MODEL=$model RATE=$RATE DURATION=$DUR VUS=50 taskset -c 0 timeout $((DUR + 30)) \
    k6 run --quiet --no-color --no-usage-report --summary-export "$WORK/k6.json" \
    "$CM_LT/${caller}_${mode}.js" >"$WORK/k6.log" 2>&1 || rc=$?
  ((rc == 0)) || cm_die "k6 $caller $kind $mode failed ($rc): $(tail -n 5 "$WORK/k6.log")"
  python3 - "$WORK/k6.json" "$caller" "$kind" "$mode" "$model" >>"$WORK/latency.jsonl" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]["http_req_duration"]
print(json.dumps({"caller": sys.argv[2], "kind": sys.argv[3], "mode": sys.argv[4], "model": sys.argv[5],
                  "p50_ms": m["med"], "p99_ms": m["p(99)"]}))
PY
  cm_log "k6 $caller $kind $mode: $(tail -n 1 "$WORK/latency.jsonl")"
}
if command -v k6 >/dev/null 2>&1; then
  for mode in json stream; do
    for caller in openai anthropic; do
      latency "$caller" same "$mode"
      latency "$caller" translated "$mode"
    done
  done
else
  cm_log "no k6: skipping the latency runs"
  : >"$WORK/latency.jsonl"
fi

# Time to the first SSE event, OpenAI caller, same-dialect vs translated stream (20 ms between
# upstream events, fresh connection per request, medians of 20)
for model in gpt-5.5 claude-sonnet-4-5-20250929; do
  python3 "$CM_LT/sse_ttfb.py" "http://127.0.0.1:$port" --n 20 --event-delay-ms 20 --model "$model" >>"$WORK/ttfb.jsonl" ||
    cm_die "stream check failed for $model: $(tail -n 1 "$WORK/ttfb.jsonl")"
  cm_log "first SSE event, $model: $(tail -n 1 "$WORK/ttfb.jsonl")"
done

python3 - "$WORK/results.jsonl" "$OUT" "$DUR" "$WORK/latency.jsonl" "$RATE" "$WORK/ttfb.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, dur = sys.argv[2], sys.argv[3]
lat = [json.loads(l) for l in open(sys.argv[4])]
def cpu_us(r):
    return r["cpu_ticks"] / r["hz"] * 1e6 / max(r["wrk"]["requests"], 1)
idx = {(r["caller"], r["size"], r["kind"]): r for r in rows}
lines = [f"Gateway on CPU 1 (one worker), mock and wrk (-t1 -c32, {dur} s) on CPU 0; one run.", "",
         "| caller | body | route | req/s | gateway CPU µs/req | p99 ms | non-2xx + errors | translated / same |",
         "|---|---|---|---:|---:|---:|---:|---|"]
for r in rows:
    w = r["wrk"]
    ratio = ""
    if r["kind"] == "translated":
        same = idx[(r["caller"], r["size"], "same")]
        ratio = f'{w["rps"] / same["wrk"]["rps"]:.2f}x req/s, +{cpu_us(r) - cpu_us(same):.1f} µs CPU'
    model = {"openai": {"same": "gpt-5.5", "translated": "claude"}, "anthropic": {"same": "claude", "translated": "gpt-5.5"}}[r["caller"]][r["kind"]]
    lines.append(f'| {r["caller"]} | {r["size"]} ({r["bytes"]} B) | {model} ({r["kind"]}) | {w["rps"]:,.0f} | {cpu_us(r):.1f} | '
                 f'{w["p99_us"] / 1000:.3f} | {w["non2xx"] + w["errors"]} | {ratio} |')
if lat:
    lines += ["", f"Latency, short chat, k6 constant {sys.argv[5]} req/s for {dur} s (k6 on CPU 0):", "",
              "| caller | response | route | p50 ms | p99 ms |", "|---|---|---|---:|---:|"]
    for r in lat:
        lines.append(f'| {r["caller"]} | {r["mode"]} | {r["model"]} ({r["kind"]}) | {r["p50_ms"]:.3f} | {r["p99_ms"]:.3f} |')
ttfb = [json.loads(l) for l in open(sys.argv[6])]
lines += ["", "Time to the first SSE event, OpenAI caller, 20 ms between upstream events, medians of 20:", "",
          "| route | first event ms | whole stream ms |", "|---|---:|---:|"]
for name, t in zip(["gpt-5.5 (same)", "claude (translated)"], ttfb):
    lines.append(f'| {name} | {t["first_event_ms"]["p50"]} | {t["total_ms"]["p50"]} |')
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
cm_log "written to $OUT (raw data in $WORK)"
