#!/usr/bin/env bash
# CPU time per request of the gateway in a few configurations, alternated ROUNDS times in one
# sitting, so that the machine's drift hits every variant alike.
#
#   bash loadtest/cpu_ab.sh noledger            # baseline vs ledger.url: none (the ledger's cost)
#   bash loadtest/cpu_ab.sh limited             # baseline vs a key with in-process limits
#   ROUNDS=5 DUR=10 bash loadtest/cpu_ab.sh noledger postgres
#   PAIRED=1 ROUNDS=5 DUR=10 bash loadtest/cpu_ab.sh noledger
#
# Variants are those of lib.sh (cm_variant_sets; `baseline` is the demo config and always runs
# first in each round). The gateway runs on CPU 1 with one worker; the mock and wrk on CPU 0.
# CPU µs per request is the gateway's user+system time, every thread (/proc/PID/stat), over the
# requests wrk completed (wrk -t1 -c64, DUR seconds, default 5, after a 2 s warm-up). The last
# lines give each variant's median over the rounds and its ratio to baseline's median. Each run
# also gives the ledger threads' own share of the gateway's CPU (their /proc tasks), a
# measure of the ledger's cost that needs no second run to compare with.
#
# PAIRED=1 runs baseline and each variant at the same time instead of one after the other: both
# gateways share CPU 1, each driven by its own wrk (-c32) on CPU 0, and both are counted over the
# same seconds. A neighbour's burst or the machine's drift then slows both alike, so each round's
# ratio is a measurement on its own; the last lines give the median of the rounds' ratios (use an
# even ROUNDS: the start order alternates). `PAIRED=1 bash loadtest/cpu_ab.sh baseline` is the A/A
# run that shows the method's own spread. This is the figure to quote on a shared machine:
# sequential runs here drift by more than 10% between runs a minute apart.
#
# B_BIN runs the variants on another build (baseline keeps CM_BIN): with the `baseline` variant,
# the paired run compares two builds on one config, e.g. a build before a change against after:
#   PAIRED=1 B_BIN=/tmp/cheapmodel.after CM_BIN=/tmp/cheapmodel.before bash loadtest/cpu_ab.sh baseline
# CM_MODEL picks the model wrk asks for (post.lua), e.g. claude-sonnet-4-5-20250929 (translated).
# WRK_SCRIPT replaces post.lua, e.g. route.lua for an agent-sized body (bodies.sh's):
#   WRK_SCRIPT=loadtest/route.lua CM_PATH=/v1/chat/completions CM_DIALECT=openai CM_BODY=FILE \
#     CM_HEADER="x-mock-no-tools: 1" PAIRED=1 ... bash loadtest/cpu_ab.sh baseline
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cm_pg_stop; cm_cleanup' EXIT
trap 'exit 130' INT TERM
cm_need wrk taskset python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
WRK_SCRIPT=${WRK_SCRIPT:-$CM_LT/post.lua}
names=("$@")
((${#names[@]})) || names=(noledger)
for name in "${names[@]}"; do [[ " $CM_VARIANTS " == *" $name "* ]] || cm_die "unknown variant $name ($CM_VARIANTS)"; done
CM_MAX_SECONDS=$(((DUR + 10) * ROUNDS * (${#names[@]} + 1) + 300))
W=$(mktemp -d /tmp/cheapmodel-cpu-ab.XXXXXX)
HZ=$(getconf CLK_TCK)
# thread_ticks PID NAME...: user+system ticks of the gateway's threads with those names (0 if none).
# The ledger is two threads: `ledger-writer` (batches, spool) and `ledger-db` (the database calls).
thread_ticks() {
  local pid=$1 t n sum=0
  shift
  for t in /proc/"$pid"/task/*; do
    n=$(cat "$t/comm" 2>/dev/null) || continue
    for want in "$@"; do
      [[ $n == "$want" ]] && sum=$((sum + $(awk '{print $14 + $15}' "$t/stat")))
    done
  done
  echo "$sum"
}
[[ " ${names[*]} " == *" postgres "* ]] && cm_pg_start "$W"
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log" taskset -c 0

# start NAME DIR [BIN]: a gateway of variant NAME (build BIN, default CM_BIN) on CPU 1 with one
# worker; sets PORT, WRAPPER, PID.
start() {
  local name=$1 dir=$2 bin=${3:-$CM_BIN} sets=()
  PORT=$(cm_free_port)
  mkdir -p "$dir"
  mapfile -t sets < <(cm_variant_sets "$name")
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$dir/g.yaml" --mock "$CM_MOCK_ADDR" \
    --listen "127.0.0.1:$PORT" --workdir "$dir" \
    --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0 "${sets[@]}"
  # shellcheck disable=SC2046 # NAME=VALUE words
  cm_spawn "$dir/log" env $(cm_variant_env "$name") taskset -c 1 "$bin" --config "$dir/g.yaml"
  WRAPPER=$CM_LAST_PID
  PID=$(cm_child "$WRAPPER")
  cm_wait_port "$PORT" 15 || cm_die "gateway did not start: $(tail -n 20 "$dir/log")"
}

# cpu_ticks PID: the process's user+system ticks, every thread.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# requests NAME WRK_OUTPUT: the requests wrk completed; dies if there were none or any was not 2xx.
requests() {
  local n
  n=$(echo "$2" | awk '/requests in/{print $1}')
  [[ -n $n && $n -gt 0 ]] || cm_die "$1: wrk failed: $2"
  echo "$2" | grep -q "Non-2xx" && cm_die "$1: some answers were not 2xx: $2"
  echo "$n"
}

# us_per_request TICKS REQUESTS
us_per_request() { python3 -c "print(round($1 * 1e6 / $HZ / $2, 2))"; }

# run NAME ROUND: appends "NAME µs" to $W/results and prints the run's line.
run() {
  local name=$1 t0 t1 w0 w1 out n us
  start "$name" "$W/$1.$2" "$([[ $name == baseline ]] && echo "$CM_BIN" || echo "${B_BIN:-$CM_BIN}")"
  taskset -c 0 timeout 20 wrk -t1 -c64 -d2s -s "$WRK_SCRIPT" "http://127.0.0.1:$PORT" >/dev/null 2>&1 || true
  sleep 0.5 # the warm-up's last ledger rows are written before the count starts
  t0=$(cpu_ticks "$PID")
  w0=$(thread_ticks "$PID" ledger-writer ledger-db)
  out=$(taskset -c 0 timeout $((DUR + 20)) wrk -t1 -c64 -d"${DUR}s" -s "$WRK_SCRIPT" "http://127.0.0.1:$PORT" 2>&1)
  sleep 0.5 # and the counted requests' rows are written before it ends
  t1=$(cpu_ticks "$PID")
  w1=$(thread_ticks "$PID" ledger-writer ledger-db)
  n=$(requests "$name" "$out")
  us=$(us_per_request $((t1 - t0)) "$n")
  echo "$name $us" >>"$W/results"
  echo "round $2: $name: $n requests, $us CPU µs/request, ledger threads $(python3 -c "print(round(100 * ($w1 - $w0) / max($t1 - $t0, 1), 1))")% of it"
  cm_stop "$WRAPPER"
}

# run_paired NAME ROUND: baseline and NAME at once (PAIRED=1); appends "NAME ratio" to $W/results.
run_paired() {
  local name=$1 round=$2 bport bpid bwrapper vport vpid vwrapper p b0 b1 v0 v1 bn vn bus vus loads=()
  # The gateway started second runs ~0.7% cheaper in an A/A run (`PAIRED=1 bash loadtest/cpu_ab.sh
  # baseline`), so odd rounds start baseline first and even rounds the variant.
  if ((round % 2)); then
    start baseline "$W/baseline.$name.$round"
    bport=$PORT bpid=$PID bwrapper=$WRAPPER
    start "$name" "$W/$name.$round" "${B_BIN:-$CM_BIN}"
  else
    start "$name" "$W/$name.$round" "${B_BIN:-$CM_BIN}"
    vport=$PORT vpid=$PID vwrapper=$WRAPPER
    start baseline "$W/baseline.$name.$round"
    bport=$PORT bpid=$PID bwrapper=$WRAPPER
    PORT=$vport PID=$vpid WRAPPER=$vwrapper
  fi
  # Warm both up together, then count both over the same seconds. (`wait` on the loads' own
  # pids: a bare `wait` would also wait for the gateways.)
  for p in "$bport" "$PORT"; do
    taskset -c 0 timeout 20 wrk -t1 -c32 -d2s -s "$WRK_SCRIPT" "http://127.0.0.1:$p" >/dev/null 2>&1 &
    loads+=($!)
  done
  wait "${loads[@]}" || true
  sleep 0.5
  b0=$(cpu_ticks "$bpid") v0=$(cpu_ticks "$PID")
  taskset -c 0 timeout $((DUR + 20)) wrk -t1 -c32 -d"${DUR}s" -s "$WRK_SCRIPT" "http://127.0.0.1:$bport" >"$W/wrk.b" 2>&1 &
  loads=($!)
  taskset -c 0 timeout $((DUR + 20)) wrk -t1 -c32 -d"${DUR}s" -s "$WRK_SCRIPT" "http://127.0.0.1:$PORT" >"$W/wrk.v" 2>&1 &
  loads+=($!)
  wait "${loads[@]}" || true
  sleep 0.5 # the counted requests' ledger rows are written before the count ends
  b1=$(cpu_ticks "$bpid") v1=$(cpu_ticks "$PID")
  bn=$(requests baseline "$(cat "$W/wrk.b")") vn=$(requests "$name" "$(cat "$W/wrk.v")")
  bus=$(us_per_request $((b1 - b0)) "$bn") vus=$(us_per_request $((v1 - v0)) "$vn")
  echo "$name $(python3 -c "print($vus / $bus)")" >>"$W/results"
  echo "round $round: baseline $bn requests, $bus CPU µs/request; $name${B_BIN:+ on B_BIN} at the same time: $vn requests, $vus CPU µs/request ($(python3 -c "print(f'{$vus / $bus:.3f}')")x)"
  cm_stop "$WRAPPER"
  cm_stop "$bwrapper"
}

# Each line of $W/results is "NAME VALUE": CPU µs per request, or with PAIRED=1 the round's ratio.
for ((round = 1; round <= ROUNDS; round++)); do
  if [[ ${PAIRED:-0} == 1 ]]; then
    for name in "${names[@]}"; do run_paired "$name" "$round"; done
  else
    for name in baseline "${names[@]}"; do run "$name" "$round"; done
  fi
done
python3 - "$W/results" "${PAIRED:-0}" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, value = line.split()
    runs.setdefault(name, []).append(float(value))
listed = lambda values: ", ".join(f"{v:.3f}" for v in values)
if sys.argv[2] == "1":
    for name, ratios in runs.items():
        print(f"{name}: median {statistics.median(ratios):.3f}x baseline over {len(ratios)} paired rounds "
              f"({listed(ratios)}), range {min(ratios):.3f}-{max(ratios):.3f}")
    sys.exit(0)
base = statistics.median(runs["baseline"])
for name, values in runs.items():
    med = statistics.median(values)
    print(f"{name}: median {med:.2f} CPU µs/request over {len(values)} runs "
          f"({', '.join(f'{v:.2f}' for v in values)}), {med / base:.3f}x baseline")
PY
