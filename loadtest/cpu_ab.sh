#!/usr/bin/env bash
# CPU time per request of the gateway in a few configurations, alternated ROUNDS times in one
# sitting, so that the machine's drift hits every variant alike.
#
#   bash loadtest/cpu_ab.sh noledger            # baseline vs ledger.url: none (the ledger's cost)
#   bash loadtest/cpu_ab.sh limited             # baseline vs a key with in-process limits
#   ROUNDS=5 DUR=10 bash loadtest/cpu_ab.sh noledger postgres
#
# Variants are those of lib.sh (cm_variant_sets; `baseline` is the demo config and always runs
# first in each round). The gateway runs on CPU 1 with one worker; the mock and wrk on CPU 0.
# CPU µs per request is the gateway's user+system time, every thread (/proc/PID/stat), over the
# requests wrk completed (wrk -t1 -c64, DUR seconds, default 5, after a 2 s warm-up). The last
# lines give each variant's median over the rounds and its ratio to baseline's median. Each run
# also gives the ledger threads' own share of the gateway's CPU (their /proc tasks), a
# measure of the ledger's cost that needs no second run to compare with.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cm_pg_stop; cm_cleanup' EXIT
trap 'exit 130' INT TERM
cm_need wrk taskset python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
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

# run NAME ROUND: appends "NAME µs" to $W/results and prints the run's line.
run() {
  local name=$1 dir="$W/$1.$2" port wrapper pid t0 t1 w0 w1 out n us sets=()
  port=$(cm_free_port)
  mkdir -p "$dir"
  mapfile -t sets < <(cm_variant_sets "$name")
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$dir/g.yaml" --mock "$CM_MOCK_ADDR" \
    --listen "127.0.0.1:$port" --workdir "$dir" \
    --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0 "${sets[@]}"
  # shellcheck disable=SC2046 # NAME=VALUE words
  cm_spawn "$dir/log" env $(cm_variant_env "$name") taskset -c 1 "$CM_BIN" --config "$dir/g.yaml"
  wrapper=$CM_LAST_PID
  pid=$(cm_child "$wrapper")
  cm_wait_port "$port" 15 || cm_die "gateway did not start: $(tail -n 20 "$dir/log")"
  taskset -c 0 timeout 20 wrk -t1 -c64 -d2s -s "$CM_LT/post.lua" "http://127.0.0.1:$port" >/dev/null 2>&1 || true
  sleep 0.5 # the warm-up's last ledger rows are written before the count starts
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  w0=$(thread_ticks "$pid" ledger-writer ledger-db)
  out=$(taskset -c 0 timeout $((DUR + 20)) wrk -t1 -c64 -d"${DUR}s" -s "$CM_LT/post.lua" "http://127.0.0.1:$port" 2>&1)
  sleep 0.5 # and the counted requests' rows are written before it ends
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  w1=$(thread_ticks "$pid" ledger-writer ledger-db)
  n=$(echo "$out" | awk '/requests in/{print $1}')
  [[ -n $n && $n -gt 0 ]] || cm_die "wrk failed: $out"
  echo "$out" | grep -q "Non-2xx" && cm_die "$name: some answers were not 2xx: $out"
  us=$(python3 -c "print(round(($t1 - $t0) * 1e6 / $HZ / $n, 2))")
  echo "$name $us" >>"$W/results"
  echo "round $2: $name: $n requests, $us CPU µs/request, ledger threads $(python3 -c "print(round(100 * ($w1 - $w0) / max($t1 - $t0, 1), 1))")% of it"
  cm_stop "$wrapper"
}

for ((round = 1; round <= ROUNDS; round++)); do
  for name in baseline "${names[@]}"; do run "$name" "$round"; done
done
python3 - "$W/results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, us = line.split()
    runs.setdefault(name, []).append(float(us))
base = statistics.median(runs["baseline"])
for name, values in runs.items():
    med = statistics.median(values)
    print(f"{name}: median {med:.2f} CPU µs/request over {len(values)} runs "
          f"({', '.join(f'{v:.2f}' for v in values)}), {med / base:.3f}x baseline")
PY
