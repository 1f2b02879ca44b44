#!/usr/bin/env bash
# Gateway vs nginx vs HAProxy vs direct, on this machine, in one run (see loadtest/README.md).
#
#   bash loadtest/compare.sh [--out FILE]        # default /tmp/cheapmodel-compare.md
#   DURATION=5 bash loadtest/compare.sh          # shorter runs (seconds; default 10)
#   bash loadtest/compare.sh --wait-quiet 300    # on a shared host: first wait (up to 300 s) until
#                                                # other processes use <10% CPU for 5 s in a row
#
# Request: the OpenAI JSON chat completion (gpt-5.5) of post.lua / openai_json.js.
# Layout on 2 cores: the proxy under test alone on CPU 1 with one worker (nginx worker_processes 1,
# haproxy nbthread 1, gateway threads: 1); mock-upstream (--threads 1 --no-record), wrk and k6 on CPU 0.
# Per target: (a) wrk -t1 -c64 closed-loop throughput, (b) proxy CPU time per request from
# /proc/PID/stat around the wrk run, and the kernel's part of it (stime), (c) k6
# constant-arrival-rate 500 req/s latency p50/p90/p99 and the proxy's CPU per request at that
# rate (idle-time cost: wake-ups, timers),
# (d) proxy RSS idle (before any load) and peak (VmHWM). Plus SSE time-to-first-event, direct vs
# gateway, with x-mock-event-delay-ms: 20 (median of 20 requests each). When
# the floor exists (CM_BARE_BIN, by default target/release/examples/bare_pingora), it is measured too, as
# the floor of a Pingora hop. Last, the ledger's cost measured paired (`cpu_ab.sh` with PAIRED=1,
# LEDGER_ROUNDS rounds, default 4; 0 skips it), appended to the report.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM

OUT=/tmp/cheapmodel-compare.md
WAIT_QUIET=0
while (($#)); do
  case $1 in
    --wait-quiet) WAIT_QUIET=${2:?--wait-quiet SECONDS}; shift 2 ;;
    --out) OUT=${2:?--out FILE}; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    -h | --help) sed -n '2,/^set -euo pipefail/{/^#/p}' "$0"; exit 0 ;;
    *) cm_die "unknown argument: $1" ;;
  esac
done

cm_need wrk k6 nginx haproxy taskset curl python3 timeout pgrep
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
(($(nproc) >= 2)) || cm_die "needs at least 2 CPUs (proxy on CPU 1, load + mock on CPU 0)"
DUR=$(cm_duration_s)
RATE=${RATE:-500}
STREAM_N=${STREAM_N:-20}
CM_MAX_SECONDS=$((DUR * 30 + 300))         # hard bound on every process we start (the mock lives through all targets)
WORK=$(mktemp -d /tmp/cheapmodel-compare.XXXXXX)
RES=$WORK/results.jsonl
: >"$RES"
HZ=$(getconf CLK_TCK)
T_START=$(date +%s)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }      # utime + stime, all threads
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }             # stime alone: the kernel's share
# us_per_request WRK_JSON_LINE TICKS0 TICKS1: the ticks between, in µs per request wrk completed.
us_per_request() {
  python3 -c 'import json,sys; r=json.loads(sys.argv[1])["requests"]; print(round((int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4])*1e6/max(r,1),2))' \
    "$1" "$2" "$3" "$HZ"
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# "busy0 total0 busy1 total1 proc0 proc1" in ticks for CPU 0 and CPU 1
# (busy = user+nice+system+irq+softirq+steal; proc = user+nice+system, i.e. time charged to processes)
cpu_stat() {
  awk '/^cpu0 /{b0=$2+$3+$4+$7+$8+$9; t0=b0+$5+$6; p0=$2+$3+$4}
       /^cpu1 /{b1=$2+$3+$4+$7+$8+$9; t1=b1+$5+$6; p1=$2+$3+$4}
       END{print b0, t0, b1, t1, p0, p1}' /proc/stat
}

# busy_pct STAT_BEFORE STAT_AFTER OUR_TICKS TIMES_FILE -> "busy0 busy1 other" (percent)
# OUR_TICKS: mock + proxy CPU ticks over the span; TIMES_FILE: bash `times` output of the
# subshell that ran the load generator (its children line = the load generator's CPU).
busy_pct() {
  python3 - "$1" "$2" "$3" "$4" "$HZ" <<'PY'
import re, sys
a = list(map(int, sys.argv[1].split())); b = list(map(int, sys.argv[2].split()))
ours = int(sys.argv[3]); hz = int(sys.argv[5])
line = open(sys.argv[4]).read().strip().splitlines()[-1]          # children: "0m1.2s 0m3.4s"
gen = sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", line)) * hz
span = max(1, b[1] - a[1])
busy0 = round(100 * (b[0] - a[0]) / span); busy1 = round(100 * (b[2] - a[2]) / max(1, b[3] - a[3]))
other = round(100 * max(0, (b[4] - a[4]) + (b[5] - a[5]) - ours - gen) / span)
print(busy0, busy1, other)
PY
}

# Post once through URL and check the answer is a chat completion with usage.
probe() {
  curl -sS --max-time 5 -H 'Content-Type: application/json' -H 'Authorization: Bearer cm_demo_key_not_secret' \
    -d '{"model":"gpt-5.5","messages":[{"role":"user","content":"hi"}]}' "$1/v1/chat/completions" | grep -q '"usage"'
}

# measure NAME URL PROXY_PID(or -)
measure() {
  local name=$1 url=$2 pid=$3 rss_idle=null hwm=null cpu_us=null sys_us=null t0 t1 k0 k1 wrk_line k6rc=0 s0 s1 n0=0 n1=0
  cm_log "[$name] $url"
  [[ $pid != - ]] && rss_idle=$(status_kb "$pid" VmRSS)      # idle: before any request
  probe "$url" || cm_die "[$name] probe request failed"
  # warm-up (connections, allocator, caches), not measured
  taskset -c 0 timeout 10 wrk -t1 -c64 -d2s -s "$CM_LT/post.lua" "$url" >/dev/null 2>&1 || true
  sleep 0.5
  t0=0 t1=0
  [[ $pid != - ]] && t0=$(cpu_ticks "$pid") && k0=$(sys_ticks "$pid")
  m0=$(cpu_ticks "$MOCK_REAL_PID")
  s0=$(cpu_stat)
  # `times` in the subshell reports the CPU time of its children, i.e. of wrk
  (
    taskset -c 0 timeout $((DUR + 15)) wrk -t1 -c64 -d"${DUR}s" -s "$CM_LT/post.lua" "$url" >"$WORK/$name.wrk" 2>&1 || true
    times >"$WORK/$name.wrk-times"
  )
  s1=$(cpu_stat)
  m1=$(cpu_ticks "$MOCK_REAL_PID")
  [[ $pid != - ]] && t1=$(cpu_ticks "$pid") && k1=$(sys_ticks "$pid")
  # CPU 0 / CPU 1 busy % during the wrk run (CPU 0 at 100 % = the load side, not the proxy, limits)
  # and "other": process CPU time on both CPUs not used by wrk, the mock or the proxy (other
  # tenants of the machine), in % of one CPU; high values mean a noisy run.
  busy=$(busy_pct "$s0" "$s1" "$((m1 - m0 + t1 - t0))" "$WORK/$name.wrk-times")
  wrk_line=$(sed -n 's/^WRK_JSON //p' "$WORK/$name.wrk")
  [[ -n $wrk_line ]] || cm_die "[$name] wrk failed: $(cat "$WORK/$name.wrk")"
  if [[ $pid != - ]]; then
    cpu_us=$(us_per_request "$wrk_line" "$t0" "$t1")
    # The kernel's part of it: the same calls and packets cost more kernel time behind a proxy
    # whose own code and data crowd the caches (README "Performance").
    sys_us=$(us_per_request "$wrk_line" "$k0" "$k1")
  fi
  cm_log "[$name] wrk: $wrk_line cpu_us_per_req=$cpu_us (kernel $sys_us) cpu0/cpu1/other busy%=$busy"
  sleep 1
  # The k6 phase's CPU from schedstat (cm_cpu_ns): a few thousand requests are too few for the
  # 10 ms ticks of /proc/PID/stat to resolve.
  [[ $pid != - ]] && t0=$(cpu_ticks "$pid") && n0=$(cm_cpu_ns "$pid")
  m0=$(cpu_ticks "$MOCK_REAL_PID")
  s0=$(cpu_stat)
  k6rc=$(
    rc=0
    BASE_URL=$url RATE=$RATE DURATION=$DUR VUS=${VUS:-50} taskset -c 0 timeout $((DUR + 30)) \
      k6 run --quiet --no-color --no-usage-report --summary-export "$WORK/$name.k6.json" \
      "$CM_LT/openai_json.js" >"$WORK/$name.k6.log" 2>&1 || rc=$?
    times >"$WORK/$name.k6-times"
    echo "$rc"
  )
  s1=$(cpu_stat)
  m1=$(cpu_ticks "$MOCK_REAL_PID")
  [[ $pid != - ]] && t1=$(cpu_ticks "$pid") && n1=$(cm_cpu_ns "$pid")
  k6other=$(busy_pct "$s0" "$s1" "$((m1 - m0 + t1 - t0))" "$WORK/$name.k6-times" | awk '{print $3}')
  [[ -s $WORK/$name.k6.json ]] || cm_die "[$name] k6 failed: $(tail -n 20 "$WORK/$name.k6.log")"
  [[ $pid != - ]] && hwm=$(status_kb "$pid" VmHWM)
  python3 - "$name" "$wrk_line" "$WORK/$name.k6.json" "$cpu_us" "$rss_idle" "$hwm" "$k6rc" "$busy" "$k6other" \
    "$((n1 - n0))" "$sys_us" >>"$RES" <<'PY'
import json, sys
name, wrk, k6f, cpu, idle, hwm, k6rc, busy, k6other, rate_ns, sys_us = sys.argv[1:]
m = json.load(open(k6f))["metrics"]
d = m["http_req_duration"]
j = lambda v: None if v == "null" else float(v)
print(json.dumps({"name": name, "wrk": json.loads(wrk), "cpu_us": j(cpu), "cpu_kernel_us": j(sys_us),
                  "rss_idle_kb": j(idle),
                  "busy": [int(x) for x in busy.split()],
                  "rss_peak_kb": j(hwm), "k6": {"p50": d["med"], "p90": d["p(90)"], "p99": d["p(99)"],
                  "reqs": m["http_reqs"]["count"], "rate": m["http_reqs"]["rate"],
                  "failed": m["http_req_failed"]["value"], "checks": m["checks"]["value"], "rc": int(k6rc),
                  "other": int(k6other),
                  # the proxy's CPU per request at the constant rate (None for `direct`: no proxy)
                  "cpu_us": int(rate_ns) / 1000 / m["http_reqs"]["count"] if int(rate_ns) > 0 else None}}))
PY
  cm_log "[$name] k6 ${RATE}/s: $(tail -n1 "$RES" | python3 -c 'import json,sys; k=json.load(sys.stdin)["k6"]; print("p50=%.3fms p90=%.3fms p99=%.3fms failed=%.2f%% other=%d%%" % (k["p50"], k["p90"], k["p99"], k["failed"]*100, k["other"]))')"
}

# --- is the machine quiet? (nothing of ours runs yet: all busy time is someone else's) --------
other_busy() { # % of one CPU used by other processes over the next second
  local q0 q1
  q0=$(cpu_stat); sleep 1; q1=$(cpu_stat)
  python3 -c 'import sys; a=list(map(int,sys.argv[1].split())); b=list(map(int,sys.argv[2].split())); print(round(100*((b[0]-a[0])+(b[2]-a[2]))/max(1,b[1]-a[1])))' "$q0" "$q1"
}
if ((WAIT_QUIET > 0)); then
  cm_log "waiting up to ${WAIT_QUIET}s for a quiet machine"
  quiet=0
  for ((w = 0; w < WAIT_QUIET && quiet < 5; w++)); do
    ob=$(other_busy) || ob=100
    if ((${ob:-100} < 10)); then quiet=$((quiet + 1)); else quiet=0; fi
  done
  ((quiet >= 5)) || cm_log "machine still busy after ${WAIT_QUIET}s; measuring anyway"
  T_START=$(date +%s)
fi
IDLE_BUSY=$(other_busy)
if ((IDLE_BUSY > 10)); then
  cm_log "WARNING: other processes already use ${IDLE_BUSY}% of a CPU; results will be noisy (watch the 'other' column)"
fi

# --- mock upstream on CPU 0 ------------------------------------------------------------------
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$WORK/mock.log" taskset -c 0
MOCK_PORT=${CM_MOCK_ADDR#127.0.0.1:}
MOCK_REAL_PID=$(cm_child "$CM_MOCK_PID")
cm_log "mock-upstream on $CM_MOCK_ADDR (CPU 0); load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- direct ----------------------------------------------------------------------------------
measure direct "http://$CM_MOCK_ADDR" -
python3 "$CM_LT/sse_ttfb.py" "http://$CM_MOCK_ADDR" --n "$STREAM_N" --event-delay-ms 20 --include-usage >"$WORK/stream-direct.json" ||
  cm_log "direct stream check had failures: $(cat "$WORK/stream-direct.json")"

# --- nginx -----------------------------------------------------------------------------------
port=$(cm_free_port)
mkdir -p "$WORK/nginx"
sed -e "s|@WORKDIR@|$WORK/nginx|g" -e "s|@LISTEN_PORT@|$port|g" -e "s|@MOCK_PORT@|$MOCK_PORT|g" \
  "$CM_LT/nginx.conf" >"$WORK/nginx/nginx.conf"
cm_spawn "$WORK/nginx/stderr.log" taskset -c 1 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/nginx-error.log"
wrapper=$CM_LAST_PID
cm_wait_port "$port" 10 || cm_die "nginx did not start: $(cat "$WORK/nginx/"*.log)"
measure nginx "http://127.0.0.1:$port" "$(cm_child "$wrapper")"
cm_stop "$wrapper"

# --- haproxy ---------------------------------------------------------------------------------
cm_start_haproxy "$WORK/haproxy"
measure haproxy "http://127.0.0.1:$CM_PORT" "$(cm_child "$CM_WRAPPER")"
cm_stop "$CM_WRAPPER"

# --- bare Pingora (optional) -----------------------------------------------------------------
# loadtest/bare_pingora.rs: a ProxyHttp that only picks the peer, i.e. the floor of a Pingora
# hop; the gateway minus this is the gateway's own cost. Measured when it has been built
# (cargo build --release --example bare_pingora).
BARE_BIN=$CM_BARE_BIN
if [[ -x $BARE_BIN ]]; then
  port=$(cm_free_port)
  cm_spawn "$WORK/bare_pingora.log" taskset -c 1 "$BARE_BIN" "127.0.0.1:$port" "$CM_MOCK_ADDR" 1
  wrapper=$CM_LAST_PID
  bpid=$(cm_child "$wrapper")
  cm_wait_port "$port" 15 || cm_die "bare_pingora did not start: $(tail -n 20 "$WORK/bare_pingora.log")"
  measure pingora-bare "http://127.0.0.1:$port" "$bpid"
  cm_stop "$wrapper"
else
  cm_log "no $BARE_BIN: skipping the bare Pingora target (cargo build --release --example bare_pingora)"
fi

# --- gateway ---------------------------------------------------------------------------------
# gateway_target NAME [--set KEY=VALUE ...]: the demo config on CPU 1, measured as NAME. "gateway"
# runs with its default ledger (SQLite beside the config, as the demo does); "gateway-noledger" with
# `ledger.url: none`, to show what the ledger costs per request in the same run.
gateway_target() {
  local name=$1
  shift
  port=$(cm_free_port)
  mkdir -p "$WORK/$name"
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$WORK/$name/gateway.yaml" \
    --mock "$CM_MOCK_ADDR" --listen "127.0.0.1:$port" --workdir "$WORK/$name" \
    --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0 "$@"
  "$CM_BIN" check --config "$WORK/$name/gateway.yaml" >/dev/null ||
    cm_die "gateway config invalid: $("$CM_BIN" check --config "$WORK/$name/gateway.yaml")"
  cm_spawn "$WORK/$name/gateway.log" taskset -c 1 "$CM_BIN" --config "$WORK/$name/gateway.yaml"
  wrapper=$CM_LAST_PID
  gpid=$(cm_child "$wrapper")
  # wait on the listener only: /v1/models would count as load before the idle RSS reading
  cm_wait_port "$port" 15 || cm_die "gateway did not start: $(tail -n 20 "$WORK/$name/gateway.log")"
  measure "$name" "http://127.0.0.1:$port" "$gpid"
}
gateway_target gateway
python3 "$CM_LT/sse_ttfb.py" "http://127.0.0.1:$port" --n "$STREAM_N" --event-delay-ms 20 >"$WORK/stream-gateway.json" ||
  cm_log "gateway stream check had failures: $(cat "$WORK/stream-gateway.json")"
cm_stop "$wrapper"
gateway_target gateway-noledger --set ledger.url=none
cm_stop "$wrapper"
# The demo key with limits far above the load: every request goes through the limiter's checks,
# reservations and headers, none is refused.
gateway_target gateway-limited --set 'keys.0.limits={rpm: 10000000, tpm: 100000000000, concurrency: 100000}'
cm_stop "$wrapper"
cm_cleanup

# --- report ----------------------------------------------------------------------------------
ELAPSED=$(($(date +%s) - T_START))
python3 "$CM_LT/compare_report.py" "$RES" "$WORK/stream-direct.json" "$WORK/stream-gateway.json" "$OUT" "$DUR" "$RATE" "$ELAPSED" "$IDLE_BUSY"

# --- the ledger's cost, paired ------------------------------------------------------------------
# The gateway and gateway-noledger rows above ran one after the other, and this machine drifts by
# more than the ledger's cost between them. cpu_ab.sh's paired mode runs both at once on CPU 1 and
# counts both over the same seconds (LEDGER_ROUNDS rounds, start order alternated; 0 skips it).
if ((${LEDGER_ROUNDS:-4} > 0)); then
  paired=$(PAIRED=1 ROUNDS=${LEDGER_ROUNDS:-4} DUR=$DUR bash "$CM_LT/cpu_ab.sh" noledger 2>/dev/null | tail -n 1) ||
    cm_die "cpu_ab.sh PAIRED=1 failed"
  ledger_ratio=$(awk '{print $3}' <<<"$paired")
  {
    echo
    echo "The ledger's cost, paired (\`PAIRED=1 ROUNDS=${LEDGER_ROUNDS:-4} DUR=$DUR bash loadtest/cpu_ab.sh noledger\`: the"
    echo "demo config and \`ledger.url: none\` at the same time on CPU 1, counted over the same seconds):"
    echo "CPU per request without the ledger, against with it: $paired. The ledger adds"
    echo "$(python3 -c "print(round((1 / ${ledger_ratio%x} - 1) * 100, 1))")% CPU per request."
  } >>"$OUT"
  tail -n 4 "$OUT"
fi
cm_log "written to $OUT (raw data in $WORK)"
