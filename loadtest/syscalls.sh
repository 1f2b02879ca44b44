#!/usr/bin/env bash
# System calls per request at a steady rate, for HAProxy doing the gateway's routing job
# (haproxy_route.cfg), the bare Pingora floor (loadtest/bare_pingora.rs) and the gateway (demo
# config: SQLite ledger): where a hop's moderate-rate cost goes, syscall by syscall.
#
#   RATE=300 DUR=8 bash loadtest/syscalls.sh            # all three targets
#   TARGETS="gateway" bash loadtest/syscalls.sh
#
# Each target alone on CPU 1 (one worker), the mock and k6 on CPU 0, a 2 s wrk warm-up, then
# `strace -c -f` attached to the target for the k6 run (constant arrival, DUR seconds, 50 VUs on
# keep-alive connections). strace slows every call, so only the counts are meaningful, not the
# times. Needs strace and `cargo build --release --bins --example bare_pingora`.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM
cm_need strace haproxy wrk k6 taskset python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN && -x $CM_BARE_BIN ]] ||
  cm_die "build first: cargo build --release --bins --example bare_pingora"
DUR=${DUR:-8} RATE=${RATE:-300} TARGETS=${TARGETS:-haproxy-route bare-pingora gateway}
CM_MAX_SECONDS=$(((DUR + 30) * 4))
W=$(mktemp -d /tmp/cheapmodel-syscalls.XXXXXX)
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log" taskset -c 0

# count LABEL: strace the target on CM_PORT (its `timeout` wrapper CM_WRAPPER) during a k6 run;
# prints the calls made at least once per 100 requests, per request.
count() {
  local label=$1 pid tracer n
  pid=$(cm_child "$CM_WRAPPER")
  taskset -c 0 timeout 30 wrk -t1 -c64 -d2s -s "$CM_LT/post.lua" "http://127.0.0.1:$CM_PORT" >/dev/null 2>&1 || true
  sleep 1
  timeout $((DUR + 20)) strace -c -f -p "$pid" -o "$W/$label.strace" 2>/dev/null &
  tracer=$!
  sleep 1 # strace attaches to every thread first
  BASE_URL=http://127.0.0.1:$CM_PORT RATE=$RATE DURATION=$DUR VUS=50 taskset -c 0 timeout $((DUR + 30)) \
    k6 run --quiet --no-color --no-usage-report --summary-export "$W/$label.k6.json" "$CM_LT/openai_json.js" \
    >"$W/$label.k6.log" 2>&1 || cm_die "$label: k6 failed: $(tail -n 20 "$W/$label.k6.log")"
  kill -INT "$tracer"
  wait "$tracer" || true
  n=$(python3 -c "import json; print(json.load(open('$W/$label.k6.json'))['metrics']['http_reqs']['count'])")
  echo "$label ($n requests):"
  # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall.
  awk -v n="$n" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ && $4 / n >= 0.01 {printf "  %-16s %6.2f per request\n", $NF, $4 / n}' \
    "$W/$label.strace" | sort -k2 -nr
  cm_stop "$CM_WRAPPER"
}

for target in $TARGETS; do
  case $target in
    haproxy-route) cm_start_haproxy_route "$W/haproxy-route" 65536 ;;
    bare-pingora) cm_start_bare "$W/bare.log" ;;
    gateway) cm_start_gateway "$W/gateway" ;;
    *) cm_die "unknown target $target (haproxy-route bare-pingora gateway)" ;;
  esac
  count "$target"
done
cm_log "raw strace tables in $W"
