#!/usr/bin/env bash
# CPU µs, wake-ups and latency per request at a steady rate, for HAProxy as a plain hop (haproxy.cfg,
# as in compare.sh), HAProxy doing the gateway's job (haproxy_route.cfg: key check, buffered body,
# `model` read with json_query, route), the bare Pingora floor (loadtest/bare_pingora.rs), the
# gateway with `ledger.url: none` and the gateway as the demo runs it (SQLite ledger): where the
# moderate-rate cost goes, and how much of it is the floor's rather than the gateway's own.
#
#   ROUNDS=2 DUR=10 RATE=500 bash loadtest/rate_floor.sh
#
# Each target alone on CPU 1 (one worker), the mock and k6 on CPU 0; a 3 s wrk warm-up first, then
# k6 constant arrival for DUR seconds. Every thread's CPU and wake-ups from
# /proc/PID/task/*/schedstat. Each round also sends the same k6 load straight to the mock
# (`direct`): a target's added p99 is its p99 less direct's in the same round. The targets take
# turns within a round, and the report gives medians over the rounds: compare.sh's single 500 req/s
# run of each target moved by milliseconds of p99 from one sitting to the next on this shared
# machine. Needs `cargo build --release --bins --example bare_pingora`.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM
cm_need haproxy wrk k6 taskset python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN && -x $CM_BARE_BIN ]] ||
  cm_die "build first: cargo build --release --bins --example bare_pingora"
DUR=${DUR:-10} RATE=${RATE:-500} ROUNDS=${ROUNDS:-2}
CM_MAX_SECONDS=$(((DUR + 20) * 6 * ROUNDS + 120))
W=$(mktemp -d /tmp/cheapmodel-rate-floor.XXXXXX)
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log" taskset -c 0

# measure LABEL PORT PID: prints "LABEL CPU-us/req wake-ups/req p50-ms p99-ms"; PID - for the mock
# itself (direct: latency only).
measure() {
  local label=$1 port=$2 pid=$3 c0=0 c1=0 r0=0 r1=0 n
  sleep 1
  taskset -c 0 timeout 30 wrk -t1 -c64 -d3s -s "$CM_LT/post.lua" "http://127.0.0.1:$port" >/dev/null 2>&1 || true
  sleep 1
  [[ $pid == - ]] || { c0=$(cm_cpu_ns "$pid") r0=$(cm_runs "$pid"); }
  BASE_URL=http://127.0.0.1:$port RATE=$RATE DURATION=$DUR VUS=50 taskset -c 0 timeout $((DUR + 30)) \
    k6 run --quiet --no-color --no-usage-report --summary-export "$W/$label.k6.json" "$CM_LT/openai_json.js" \
    >"$W/$label.k6.log" 2>&1 || cm_die "$label: k6 failed: $(tail -n 20 "$W/$label.k6.log")"
  [[ $pid == - ]] || { c1=$(cm_cpu_ns "$pid") r1=$(cm_runs "$pid"); }
  python3 - "$label" "$W/$label.k6.json" "$c0" "$c1" "$r0" "$r1" <<'PY' | tee -a "$W/results.txt"
import json, sys
label, summary, c0, c1, r0, r1 = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
m = json.load(open(summary))["metrics"]
n, d = m["http_reqs"]["count"], m["http_req_duration"]
print(label, round((c1 - c0) / 1000 / n, 2), round((r1 - r0) / n, 3), round(d["med"], 3), round(d["p(99)"], 3))
PY
}

for round in $(seq 1 "$ROUNDS"); do
  cm_log "round $round of $ROUNDS"
  measure "direct" "${CM_MOCK_ADDR##*:}" -
  cm_start_haproxy "$W/haproxy$round"
  measure "haproxy" "$CM_PORT" "$(cm_child "$CM_WRAPPER")"
  cm_stop "$CM_WRAPPER"
  cm_start_haproxy_route "$W/haproxy-route$round" 65536
  measure "haproxy-route" "$CM_PORT" "$(cm_child "$CM_WRAPPER")"
  cm_stop "$CM_WRAPPER"
  cm_start_bare "$W/bare$round.log"
  measure "pingora-bare" "$CM_PORT" "$(cm_child "$CM_WRAPPER")"
  cm_stop "$CM_WRAPPER"

  for variant in noledger ledger; do
    port=$(cm_free_port)
    mkdir -p "$W/$variant$round"
    sets=()
    [[ $variant == noledger ]] && sets=(--set ledger.url=none)
    python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$W/$variant$round/g.yaml" --mock "$CM_MOCK_ADDR" \
      --listen "127.0.0.1:$port" --workdir "$W/$variant$round" --set server.threads=1 \
      --set server.access_log=false --set server.watch_interval_seconds=0 "${sets[@]}"
    cm_spawn "$W/$variant$round/log" taskset -c 1 "$CM_BIN" --config "$W/$variant$round/g.yaml"
    wrapper=$CM_LAST_PID
    pid=$(cm_child "$wrapper")
    cm_wait_port "$port" 30 || cm_die "gateway did not start: $(tail -n 20 "$W/$variant$round/log")"
    measure "gateway-$variant" "$port" "$pid"
    kill -INT "$pid"
    cm_stop "$wrapper"
  done
done

# Medians per target over the rounds, and the gateway's ratios to each baseline.
python3 - "$W/results.txt" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
direct = [float(r[4]) for r in rows if r[0] == "direct"]
by, added, i = {}, {}, -1
for label, cpu, wake, p50, p99 in rows:
    if label == "direct":
        i += 1
        continue
    by.setdefault(label, []).append((float(cpu), float(wake), float(p50), float(p99)))
    added.setdefault(label, []).append(float(p99) - direct[i])
med = lambda label, col: statistics.median(r[col] for r in by[label])
print(f"{'target':18s} {'CPU us/req':>10s} {'wake-ups/req':>12s} {'p50 ms':>8s} {'p99 ms':>8s} {'added p99':>10s}"
      f"  (medians of {len(direct)} rounds; direct p99 {statistics.median(direct):.3f} ms)")
for k in by:
    print(f"{k:18s} {med(k, 0):10.2f} {med(k, 1):12.3f} {med(k, 2):8.3f} {med(k, 3):8.3f} "
          f"{statistics.median(added[k]):+10.3f}")
for g in ("gateway-ledger", "gateway-noledger"):
    print(g, "CPU:", " ".join(f"{med(g, 0) / med(b, 0):.2f}x {b}" for b in ("haproxy", "haproxy-route", "pingora-bare")))
PY
echo "files: $W"
