#!/usr/bin/env bash
# Two builds of the gateway, alternated ROUNDS times in one sitting, so that the machine's drift
# hits both alike. For a change that is a build, not a config (cpu_ab.sh compares configs).
#
#   cp target/release/cheapmodel /tmp/cheapmodel.before     # on the old commit
#   A_BIN=/tmp/cheapmodel.before B_BIN=target/release/cheapmodel bash loadtest/binary_ab.sh
#   ROUNDS=4 DUR=10 MODES="idle rate" ... bash loadtest/binary_ab.sh
#   B_SETS="ledger.url=none" ... bash loadtest/binary_ab.sh    # config overrides for one side
#
# Each round starts each build fresh (the demo config, one worker on CPU 1, the SQLite ledger; the
# mock, wrk and k6 on CPU 0) and measures, per MODES (default: all three):
#   wrk   CPU µs per request saturated: wrk -t1 -c64 for DUR seconds (default 5)
#   rate  CPU µs per request at a steady RATE req/s (default 500; k6 constant arrival, DUR s)
#   idle  CPU µs and wake-ups per second while idle: 10 s before any request, and 10 s starting
#         2 s after a 3 s wrk load
# CPU is every thread's, from /proc/PID/task/*/schedstat (nanoseconds; wake-ups are its run
# count). The last lines give each figure's median over the rounds, and B's median / A's.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cm_cleanup' EXIT
trap 'exit 130' INT TERM
cm_need wrk k6 taskset python3 timeout
[[ -x ${A_BIN:-} && -x ${B_BIN:-} ]] || cm_die "set A_BIN and B_BIN to two gateway binaries"
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-500}
MODES=${MODES:-wrk rate idle}
CM_MAX_SECONDS=$(((DUR * 2 + 40) * ROUNDS * 2 + 300))
W=$(mktemp -d /tmp/cheapmodel-binary-ab.XXXXXX)
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log" taskset -c 0
RES=$W/results.txt

# cm_cpu_ns PID / cm_runs PID (lib.sh): CPU nanoseconds / wake-ups of every thread so far.
# one LABEL BIN [KEY=VALUE...]: one fresh gateway from BIN (config overrides KEY=VALUE) through
# every mode; appends "LABEL FIGURE VALUE" lines.
one() {
  local label=$1 bin=$2 port wrapper pid c0 c1 r0 r1 out n kv sets=()
  shift 2
  for kv in "$@"; do sets+=(--set "$kv"); done
  port=$(cm_free_port)
  mkdir -p "$W/$label"
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$W/$label/g.yaml" --mock "$CM_MOCK_ADDR" \
    --listen "127.0.0.1:$port" --workdir "$W/$label" --set server.threads=1 --set server.access_log=false "${sets[@]}"
  cm_spawn "$W/$label/log" taskset -c 1 "$bin" --config "$W/$label/g.yaml"
  wrapper=$CM_LAST_PID
  pid=$(cm_child "$wrapper")
  cm_wait_port "$port" 30 || cm_die "$label did not start: $(tail -n 20 "$W/$label/log")"
  sleep 2
  if [[ " $MODES " == *" idle "* ]]; then
    c0=$(cm_cpu_ns "$pid") r0=$(cm_runs "$pid")
    sleep 10
    c1=$(cm_cpu_ns "$pid") r1=$(cm_runs "$pid")
    echo "$label idle_before_us_per_s $(((c1 - c0) / 10000))" >>"$RES"
    echo "$label idle_before_wakeups_per_s $(((r1 - r0) / 10))" >>"$RES"
  fi
  if [[ " $MODES " == *" wrk "* || " $MODES " == *" idle "* ]]; then
    c0=$(cm_cpu_ns "$pid")
    out=$(taskset -c 0 timeout $((DUR + 30)) wrk -t1 -c64 -d"${DUR}s" -s "$CM_LT/post.lua" "http://127.0.0.1:$port" 2>&1)
    c1=$(cm_cpu_ns "$pid")
    n=$(echo "$out" | awk '/requests in/{print $1}')
    [[ -n $n && $n -gt 0 ]] || cm_die "$label: wrk failed: $out"
    echo "$out" | grep -q "Non-2xx" && cm_die "$label: some answers were not 2xx: $out"
    [[ " $MODES " == *" wrk "* ]] && python3 -c "print('$label wrk_us_per_req', round(($c1 - $c0) / 1000 / $n, 2))" >>"$RES"
  fi
  if [[ " $MODES " == *" idle "* ]]; then
    sleep 2
    c0=$(cm_cpu_ns "$pid") r0=$(cm_runs "$pid")
    sleep 10
    c1=$(cm_cpu_ns "$pid") r1=$(cm_runs "$pid")
    echo "$label idle_after_us_per_s $(((c1 - c0) / 10000))" >>"$RES"
    echo "$label idle_after_wakeups_per_s $(((r1 - r0) / 10))" >>"$RES"
  fi
  if [[ " $MODES " == *" rate "* ]]; then
    c0=$(cm_cpu_ns "$pid")
    BASE_URL=http://127.0.0.1:$port RATE=$RATE DURATION=$DUR VUS=50 taskset -c 0 timeout $((DUR + 30)) \
      k6 run --quiet --no-color --no-usage-report --summary-export "$W/$label/k6.json" "$CM_LT/openai_json.js" \
      >"$W/$label/k6.log" 2>&1 || cm_die "$label: k6 failed: $(tail -n 20 "$W/$label/k6.log")"
    c1=$(cm_cpu_ns "$pid")
    python3 -c "import json; n = json.load(open('$W/$label/k6.json'))['metrics']['http_reqs']['count']; \
print('$label rate_us_per_req', round(($c1 - $c0) / 1000 / n, 2))" >>"$RES"
  fi
  kill -INT "$pid"
  cm_stop "$wrapper"
}

for r in $(seq 1 "$ROUNDS"); do
  cm_log "round $r of $ROUNDS"
  # shellcheck disable=SC2086 # KEY=VALUE words
  one "A$r" "$A_BIN" ${A_SETS:-}
  # shellcheck disable=SC2086
  one "B$r" "$B_BIN" ${B_SETS:-}
done
cat "$RES"
python3 - "$RES" <<'PY'
import statistics, sys
figures = {}
for line in open(sys.argv[1]):
    label, figure, value = line.split()
    figures.setdefault(figure, {}).setdefault(label[0], []).append(float(value))
for figure, by in figures.items():
    a, b = statistics.median(by["A"]), statistics.median(by["B"])
    print(f"{figure:28s} median A {a:9.2f}  B {b:9.2f}  B/A {b / a:.3f}" if a else f"{figure:28s} A {a} B {b}")
PY
echo "files: $W"
