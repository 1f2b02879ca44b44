#!/usr/bin/env bash
# Memory per concurrent slow stream: HAProxy doing the gateway's routing job (haproxy_route.cfg),
# the bare Pingora floor, and the gateway (same-dialect, and translated: an OpenAI caller on the
# Anthropic-dialect model), each a fresh process per stream count, in one run.
#
#   bash loadtest/streams.sh                      # N_LIST="1000 5000", DELAY_MS=2000
#   N_LIST=1000 bash loadtest/streams.sh --out /tmp/streams.md
#   TARGETS="haproxy gateway" bash loadtest/streams.sh   # some of: haproxy pingora-bare gateway gateway-translated
#
# Per target and N: the proxy alone on CPU 1 (one worker / thread), mock-upstream and the client
# (stream_rss.py: N raw sockets, each an OpenAI stream with DELAY_MS between events, ~6 events) on
# CPU 0. RSS is read from /proc before any load (idle), with every stream open, and 3 s after the
# last one ended. KB per stream = (open - idle) / N. The bare Pingora floor runs with the gateway's
# mimalloc setting (MIMALLOC_ARENA_EAGER_COMMIT=0), so that the floor moves with it. Needs haproxy,
# and `cargo build --release --bins --example bare_pingora`.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM

OUT=/tmp/cheapmodel-streams.md
cm_parse_out_args "$@"
cm_need haproxy taskset python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN && -x $CM_BARE_BIN ]] ||
  cm_die "build first: cargo build --release --bins --example bare_pingora"
N_LIST=${N_LIST:-1000 5000}
TARGETS=${TARGETS:-haproxy pingora-bare gateway gateway-translated}
want() { [[ " $TARGETS " == *" $1 "* ]]; }
DELAY_MS=${DELAY_MS:-2000}
CM_MAX_SECONDS=3600
W=$(mktemp -d /tmp/cheapmodel-streams.XXXXXX)
RES=$W/results.jsonl
: >"$RES"
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log" taskset -c 0

# sample TARGET N PORT PID [MODEL]: one stream_rss.py run, appended to $RES.
sample() {
  local target=$1 n=$2 port=$3 pid=$4 model=${5:-gpt-5.5} line
  line=$(taskset -c 0 timeout 300 python3 "$CM_LT/stream_rss.py" "http://127.0.0.1:$port" "$pid" --n "$n" \
    --delay-ms "$DELAY_MS" --model "$model") || cm_log "$target n=$n: not every stream ended with [DONE]: $line"
  [[ -n $line ]] || cm_die "$target n=$n: stream_rss.py printed nothing"
  cm_log "$target: $line"
  python3 -c 'import json,sys; d=json.loads(sys.argv[2]); d["target"]=sys.argv[1]; print(json.dumps(d))' \
    "$target" "$line" >>"$RES"
}

for n in $N_LIST; do
  if want haproxy; then
    cm_start_haproxy_route "$W/haproxy" 65536
    sample haproxy "$n" "$CM_PORT" "$(cm_child "$CM_WRAPPER")"
    cm_stop "$CM_WRAPPER"
  fi
  if want pingora-bare; then
    # shellcheck disable=SC2086 # BARE_READ_BUFFER: the bare proxy's L4 read buffer, for an experiment
    cm_start_bare "$W/bare.log" ${BARE_READ_BUFFER:-}
    sample pingora-bare "$n" "$CM_PORT" "$(cm_child "$CM_WRAPPER")"
    cm_stop "$CM_WRAPPER"
  fi
  # The gateway: same dialect, then translated (an OpenAI caller on the Anthropic-dialect model).
  for target in gateway gateway-translated; do
    want "$target" || continue
    # shellcheck disable=SC2086 # GATEWAY_ENV: NAME=VALUE words for an experiment, e.g. MIMALLOC_PURGE_DELAY=100
    cm_start_gateway "$W/$target.$n" ${GATEWAY_ENV:-}
    model=gpt-5.5
    [[ $target == gateway-translated ]] && model=claude-sonnet-4-5-20250929
    sample "$target" "$n" "$CM_PORT" "$(cm_child "$CM_WRAPPER")" "$model"
    cm_stop "$CM_WRAPPER"
  done
done
cm_cleanup

python3 - "$RES" "$OUT" "$DELAY_MS" <<'PY'
import json, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
base = {r["n"]: r["kb_per_stream"] for r in rows if r["target"] == "haproxy"}
out = [f"**Concurrent slow streams** ({time.strftime('%Y-%m-%d %H:%M')}, `bash loadtest/streams.sh`, "
       f"{sys.argv[3]} ms between events; each proxy a fresh process on CPU 1)", "",
       "| target | streams | ended with [DONE] | RSS idle / open / after MB | KB per stream | vs HAProxy |",
       "|---|---:|---:|---:|---:|---:|"]
for r in sorted(rows, key=lambda r: (r["n"], r["target"])):
    b = base.get(r["n"])
    ratio = f"{r['kb_per_stream'] / b:.1f}x" if b else "—"
    mb = lambda kb: f"{kb / 1024:.1f}"
    out.append(f"| {r['target']} | {r['n']} | {r['ok']} | {mb(r['rss_idle_kb'])} / {mb(r['rss_open_kb'])} / "
               f"{mb(r['rss_after_kb'])} | {r['kb_per_stream']} | {ratio} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
cm_log "written to $OUT (raw data in $W)"
