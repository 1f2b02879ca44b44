#!/usr/bin/env bash
# CPU per request of an unlimited key against a key with in-process rpm/tpm/concurrency limits
# (high enough never to refuse), alternated three times in one sitting.
#
#   bash loadtest/limits_ab.sh            # DUR=5 seconds of wrk -t1 -c64 per run
#
# The gateway runs on CPU 1 with one worker; the mock and wrk on CPU 0. CPU µs per request is the
# gateway's user+system time (/proc/PID/stat) over the requests wrk completed.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM
cm_need wrk taskset python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
DUR=${DUR:-5}
CM_MAX_SECONDS=$((DUR * 20 + 300))
W=$(mktemp -d /tmp/cheapmodel-limits-ab.XXXXXX)
HZ=$(getconf CLK_TCK)
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log" taskset -c 0
run() {
  local name=$1 port wrapper pid t0 t1 out n
  shift
  port=$(cm_free_port)
  mkdir -p "$W/$name"
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$W/$name/g.yaml" --mock "$CM_MOCK_ADDR" \
    --listen "127.0.0.1:$port" --workdir "$W/$name" \
    --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0 "$@"
  cm_spawn "$W/$name/log" taskset -c 1 "$CM_BIN" --config "$W/$name/g.yaml"
  wrapper=$CM_LAST_PID
  pid=$(cm_child "$wrapper")
  cm_wait_port "$port" 15 || cm_die "gateway did not start: $(tail -n 20 "$W/$name/log")"
  taskset -c 0 timeout 20 wrk -t1 -c64 -d2s -s "$CM_LT/post.lua" "http://127.0.0.1:$port" >/dev/null 2>&1 || true
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(taskset -c 0 timeout $((DUR + 20)) wrk -t1 -c64 -d"${DUR}s" -s "$CM_LT/post.lua" "http://127.0.0.1:$port" 2>&1)
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  n=$(echo "$out" | awk '/requests in/{print $1}')
  [[ -n $n ]] || cm_die "wrk failed: $out"
  echo "$name: $n requests, $(python3 -c "print(round(($t1 - $t0) * 1e6 / $HZ / $n, 2))") CPU µs/request"
  cm_stop "$wrapper"
}
for _ in 1 2 3; do
  run unlimited
  run limited --set 'keys.0.limits={rpm: 10000000, tpm: 100000000000, concurrency: 100000}'
done
