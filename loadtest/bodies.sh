#!/usr/bin/env bash
# Agent-sized requests: CPU per request of HAProxy doing the gateway's routing job
# (haproxy_route.cfg: key check, body buffered, `model` read with json_query, routed on it), the
# bare Pingora floor, and the gateway, same-dialect and translated, in one run.
#
#   bash loadtest/bodies.sh [--out FILE]          # default /tmp/cheapmodel-bodies.md
#   DURATION=10 bash loadtest/bodies.sh           # seconds per wrk run (default 5)
#   ROUNDS=3 bash loadtest/bodies.sh              # every target ROUNDS times, alternated; medians
#
# Bodies (chat_bodies.py --agent): an OpenAI-dialect coding agent's request of ~85 KB (25 tool
# schemas, a long system prompt, tool-call rounds with file contents) and one of ~1 MB; "same" names
# gpt-5.5, "translated" the Anthropic-dialect model (the gateway translates it; HAProxy and the bare
# proxy only route, so their figures are for the same-dialect body). Per target and body: the proxy
# alone on CPU 1 with one worker, mock-upstream and wrk -t1 -c8 on CPU 0; CPU µs per request is the
# proxy's user+system time (/proc) over the requests wrk completed. Needs haproxy, wrk, and
# `cargo build --release --bins --example bare_pingora`.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM

OUT=/tmp/cheapmodel-bodies.md
cm_parse_out_args "$@"
cm_need haproxy wrk taskset curl python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN && -x $CM_BARE_BIN ]] ||
  cm_die "build first: cargo build --release --bins --example bare_pingora"
DURATION=${DURATION:-5}
DUR=$(cm_duration_s)
ROUNDS=${ROUNDS:-1}
CM_MAX_SECONDS=$(((DUR * 60 + 600) * ROUNDS))
W=$(mktemp -d /tmp/cheapmodel-bodies.XXXXXX)
RES=$W/results.jsonl
: >"$RES"
HZ=$(getconf CLK_TCK)
# Every target gets the mock's same short plain answer. Without this header the mock answers a
# request whose last message carries a tool result with that result's text: the translated body's
# last Anthropic message does (OpenAI's trailing `tool` and `user` messages merge into one), the
# same-dialect body's last message does not, so the translated run alone would carry (and
# translate) a 14 KB answer.
NO_TOOLS="x-mock-no-tools: 1"
python3 "$CM_LT/chat_bodies.py" --agent "$W" gpt-5.5 claude-sonnet-4-5-20250929
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log" taskset -c 0

# The targets one after the other, ROUNDS times: HAProxy's own CPU per request moves by up to a
# third between runs on this machine, so one round can flip a ratio near 1.0x; the report gives
# each target's median over the rounds, and the rounds' range.
ROUND=0

# run TARGET PORT PID BODY: one wrk run (after a probe that must answer 200), appended to $RES.
run() {
  local target=$1 port=$2 pid=$3 body=$4 code t0 t1 line
  code=$(curl -sS -o "$W/probe.out" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' -H "$NO_TOOLS" \
    -H 'Authorization: Bearer cm_demo_key_not_secret' --data-binary "@$W/$body.json" \
    "http://127.0.0.1:$port/v1/chat/completions")
  [[ $code == 200 ]] || cm_die "$target $body: probe answered $code: $(head -c 300 "$W/probe.out")"
  export CM_PATH=/v1/chat/completions CM_DIALECT=openai CM_BODY=$W/$body.json CM_HEADER=$NO_TOOLS
  taskset -c 0 timeout 20 wrk -t1 -c8 -d1s -s "$CM_LT/route.lua" "http://127.0.0.1:$port" >/dev/null 2>&1 || true
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  taskset -c 0 timeout $((DUR + 20)) wrk -t1 -c8 -d"${DUR}s" -s "$CM_LT/route.lua" "http://127.0.0.1:$port" \
    >"$W/wrk.out" 2>&1 || true
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  line=$(sed -n 's/^WRK_JSON //p' "$W/wrk.out")
  [[ -n $line ]] || cm_die "$target $body: wrk failed: $(cat "$W/wrk.out")"
  printf '{"target":"%s","body":"%s","round":%d,"bytes":%d,"cpu_ticks":%d,"hz":%d,"wrk":%s}\n' "$target" "$body" \
    "$ROUND" "$(stat -c %s "$W/$body.json")" "$((t1 - t0))" "$HZ" "$line" >>"$RES"
  cm_log "$target $body: $line"
}

for ROUND in $(seq 1 "$ROUNDS"); do for size in 85k 1m; do
  cm_start_haproxy_route "$W/haproxy" 1200000
  run haproxy "$CM_PORT" "$(cm_child "$CM_WRAPPER")" "openai-$size-same"
  cm_stop "$CM_WRAPPER"
  cm_start_bare "$W/bare.log"
  run pingora-bare "$CM_PORT" "$(cm_child "$CM_WRAPPER")" "openai-$size-same"
  cm_stop "$CM_WRAPPER"
  cm_start_gateway "$W/gateway-$size"
  gpid=$(cm_child "$CM_WRAPPER")
  run gateway "$CM_PORT" "$gpid" "openai-$size-same"
  run gateway-translated "$CM_PORT" "$gpid" "openai-$size-translated"
  cm_stop "$CM_WRAPPER"
done; done
cm_cleanup

python3 - "$RES" "$OUT" "$DUR" "$ROUNDS" <<'PY'
import json, statistics, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
rounds = int(sys.argv[4])
def cpu_us(r):
    return r["cpu_ticks"] / r["hz"] * 1e6 / max(r["wrk"]["requests"], 1)
# (target, body) -> its rows, in the order first run
runs = {}
for r in rows:
    runs.setdefault((r["target"], r["body"]), []).append(r)
size = lambda body: body.split("-")[1]
median = lambda rs: statistics.median(cpu_us(r) for r in rs)
base = {size(b): median(rs) for (t, b), rs in runs.items() if t == "haproxy"}
what = "one run" if rounds == 1 else f"{rounds} rounds alternated, medians (range)"
out = [f"**Agent-sized requests** ({time.strftime('%Y-%m-%d %H:%M')}, `bash loadtest/bodies.sh`: each proxy on CPU 1 "
       f"with one worker, wrk -t1 -c8 for {sys.argv[3]} s and the mock on CPU 0; {what})", "",
       "| target | body | req/s | CPU µs/req | vs HAProxy | non-2xx + errors |", "|---|---|---:|---:|---:|---:|"]
for (target, body), rs in runs.items():
    s = size(body)
    cpu = f"{median(rs):.1f}"
    if len(rs) > 1:
        cpu += f" ({min(map(cpu_us, rs)):.1f}-{max(map(cpu_us, rs)):.1f})"
    rps = statistics.median(r["wrk"]["rps"] for r in rs)
    bad = sum(r["wrk"]["non2xx"] + r["wrk"]["errors"] for r in rs)
    out.append(f'| {target} | {s} ({rs[0]["bytes"]:,} B) | {rps:,.0f} | {cpu} | {median(rs) / base[s]:.2f}x | {bad} |')
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
cm_log "written to $OUT (raw data in $W)"
