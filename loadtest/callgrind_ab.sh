#!/usr/bin/env bash
# Instructions per request of the gateway in a few configurations, counted by callgrind: exact and
# repeatable where CPU time on this shared machine moves by ±5% from run to run.
#
#   bash loadtest/callgrind_ab.sh                 # every variant, SECONDS_PER_RUN=15 of wrk -t1 -c4 each
#   bash loadtest/callgrind_ab.sh limited         # one variant (baseline is always run first)
#
# Variants (each against `baseline`, the demo config with an unlimited key and the SQLite ledger):
#   noledger   ledger.url: none             (the ledger's cost: baseline / noledger)
#   limited    the key has rpm/tpm/concurrency limits high enough never to refuse
#   budget     the key has a daily and a monthly budget (never reached)
#   postgres   ledger.url: a throwaway Postgres cluster this script starts (initdb/pg_ctl, as the
#              `postgres` user when run as root) and removes; only the gateway's own process is
#              counted, as for SQLite, but the database's work is then in Postgres's processes
#   bare       not the gateway: the bare Pingora floor (loadtest/bare_pingora.rs, built with
#              `cargo build --release --example bare_pingora`) under the same load
#
# Counting starts after a warm-up (--instr-atstart=no, then callgrind_control -i on) and stops before the gateway exits,
# so start-up and shutdown are left out; every thread counts (the ledger writer included). Variants
# and the Postgres helper are in lib.sh (shared with cpu_ab.sh).
# Needs valgrind (apt) and wrk; run after `cargo build --release --bins`.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cm_pg_stop; cm_cleanup' EXIT
trap 'exit 130' INT TERM
cm_need valgrind callgrind_control wrk python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
SECS=${SECONDS_PER_RUN:-15}
CM_MAX_SECONDS=$((SECS * 10 + 300))
W=$(mktemp -d /tmp/cheapmodel-callgrind.XXXXXX)
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log"

# run NAME: prints the instructions per request of variant NAME.
run() {
  local name=$1 port wrapper pid out n ir sets=()
  port=$(cm_free_port)
  mkdir -p "$W/$name"
  if [[ $name == bare ]]; then
    # The bare Pingora floor (loadtest/bare_pingora.rs) under the same load: what the hop costs
    # with nothing of the gateway's.
    cm_spawn "$W/$name/log" valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$W/$name/callgrind.out" "$CM_BARE_BIN" "127.0.0.1:$port" "$CM_MOCK_ADDR" 1
  else
    mapfile -t sets < <(cm_variant_sets "$name")
    python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$W/$name/g.yaml" --mock "$CM_MOCK_ADDR" \
      --listen "127.0.0.1:$port" --workdir "$W/$name" \
      --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0 "${sets[@]}"
    # shellcheck disable=SC2046 # NAME=VALUE words
    cm_spawn "$W/$name/log" env $(cm_variant_env "$name") valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$W/$name/callgrind.out" "$CM_BIN" --config "$W/$name/g.yaml"
  fi
  wrapper=$CM_LAST_PID
  pid=$(cm_child "$wrapper")
  cm_wait_port "$port" 60 || cm_die "gateway did not start: $(tail -n 20 "$W/$name/log")"
  timeout 60 wrk -t1 -c4 -d3s -s "$CM_LT/post.lua" "http://127.0.0.1:$port" >/dev/null 2>&1 || true
  # The o200k tables (~300M instructions to load, once per process) load at the first local token
  # count: a caller that leaves before its answer, which wrk's last requests of a run are. Loaded
  # here, in every variant, so that no variant counts them (one did: 1.15x in the wrong direction).
  curl -s -m 60 -o /dev/null "http://127.0.0.1:$port/v1/messages/count_tokens" \
    -H "x-api-key: cm_demo_key_not_secret" -H "content-type: application/json" \
    -d '{"model":"gpt-5.5","messages":[{"role":"user","content":"warm up"}]}' || true
  # The ledger writes a request's row up to flush_interval (200 ms) after it ends: wait that out on
  # both sides, so that the rows counted are those of the requests counted.
  sleep 1
  callgrind_control -i on "$pid" 2>/dev/null | grep -q OK || cm_die "callgrind_control could not reach pid $pid"
  out=$(timeout $((SECS + 60)) wrk -t1 -c4 -d"${SECS}s" -s "$CM_LT/post.lua" "http://127.0.0.1:$port" 2>&1)
  sleep 1
  callgrind_control -i off "$pid" 2>/dev/null | grep -q OK || cm_die "callgrind_control could not reach pid $pid"
  n=$(echo "$out" | awk '/requests in/{print $1}')
  [[ -n $n && $n -gt 0 ]] || cm_die "wrk failed: $out"
  echo "$out" | grep -q "Non-2xx" && cm_die "$name: some answers were not 2xx: $out"
  kill -INT "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  cm_stop "$wrapper"
  ir=$(awk '/^totals:/{print $2}' "$W/$name/callgrind.out")
  [[ -n $ir ]] || cm_die "$name: no callgrind summary in $W/$name"
  python3 -c "print(round($ir / $n))"
}

names=("$@")
((${#names[@]})) || names=(noledger limited budget)
for name in "${names[@]}"; do [[ " $CM_VARIANTS bare " == *" $name "* ]] || cm_die "unknown variant $name ($CM_VARIANTS)"; done
[[ " ${names[*]} " == *" postgres "* ]] && cm_pg_start "$W"
base=$(run baseline)
echo "baseline: $base instructions/request"
for name in "${names[@]}"; do
  ir=$(run "$name")
  echo "$name: $ir instructions/request, $(python3 -c "print(f'{$ir / $base:.3f}')")x baseline"
done
echo "callgrind files: $W (callgrind_annotate --inclusive=yes FILE)"
