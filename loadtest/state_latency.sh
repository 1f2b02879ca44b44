#!/usr/bin/env bash
# What the shared limits state (Redis) adds to a request's latency, on this machine, in one run.
#
#   bash loadtest/state_latency.sh [--out FILE]   # default /tmp/cheapmodel-state-latency.md
#   RATE=500 DURATION=20 bash loadtest/state_latency.sh
#
# One gateway (one worker, CPU 1), the mock and k6 on CPU 0, redis-server (Debian's) on CPU 0 on a
# free port. k6 sends the OpenAI short chat at a constant RATE (default 500) req/s for DURATION
# seconds (default 20) with three keys' setups, in the order unlimited, in-process limits,
# limits on Redis, twice (ABCABC, so drift shows): the rpm/tpm/concurrency limits are high enough
# never to refuse, so every request does the whole admission and settlement. Reports k6's p50 and
# p99 of each run and the added p50/p99 of each limited run against the unlimited run before it.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM

OUT=/tmp/cheapmodel-state-latency.md
cm_parse_out_args "$@"
cm_need k6 redis-server taskset curl python3 timeout
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
(($(nproc) >= 2)) || cm_die "needs at least 2 CPUs"
DURATION=${DURATION:-20}
RATE=${RATE:-500}
DUR=$(cm_duration_s)
CM_MAX_SECONDS=$((DUR * 10 + 300))
WORK=$(mktemp -d /tmp/cheapmodel-state.XXXXXX)

CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$WORK/mock.log" taskset -c 0
rport=$(cm_free_port)
cm_spawn "$WORK/redis.log" taskset -c 0 redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no \
  --dir "$WORK"
cm_wait_port "$rport" 10 || cm_die "redis-server did not start: $(tail -n 5 "$WORK/redis.log")"

LIMITS='keys.0.limits={rpm: 10000000, tpm: 100000000000, concurrency: 100000}'

# run NAME [--set ...]: one gateway with those settings, one k6 run; appends a JSON line
run() {
  local name=$1 port gpid rc=0
  shift
  port=$(cm_free_port)
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$WORK/gateway.yaml" \
    --mock "$CM_MOCK_ADDR" --listen "127.0.0.1:$port" --workdir "$WORK" \
    --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0 \
    --set ledger.url=none "$@"
  cm_spawn "$WORK/gateway-$name.log" taskset -c 1 "$CM_BIN" --config "$WORK/gateway.yaml"
  gpid=$CM_LAST_PID
  cm_wait_gateway "http://127.0.0.1:$port" 15 || cm_die "gateway did not start: $(tail -n 20 "$WORK/gateway-$name.log")"
  BASE_URL="http://127.0.0.1:$port" RATE=$RATE DURATION="${DUR}s" taskset -c 0 timeout $((DUR + 60)) \
    k6 run --quiet --no-color --no-usage-report --summary-export "$WORK/k6.json" \
    "$CM_LT/openai_json.js" >"$WORK/k6.log" 2>&1 || rc=$?
  ((rc == 0)) || cm_die "k6 $name failed ($rc): $(tail -n 5 "$WORK/k6.log")"
  # The Redis run must really have used Redis: no call may have failed or fallen back.
  if [[ $name == redis ]] && grep -q "unreachable" "$WORK/gateway-$name.log"; then
    cm_die "the Redis run fell back: $(grep unreachable "$WORK/gateway-$name.log" | head -n 2)"
  fi
  python3 - "$WORK/k6.json" "$name" >>"$WORK/runs.jsonl" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
d = m["http_req_duration"]
print(json.dumps({"name": sys.argv[2], "p50_ms": d["med"], "p99_ms": d["p(99)"],
                  "reqs": m["http_reqs"]["count"], "failed": m["http_req_failed"]["value"]}))
PY
  cm_log "$name: $(tail -n 1 "$WORK/runs.jsonl")"
  cm_stop "$gpid"
}

for _ in 1 2; do
  run unlimited
  run in-process --set "$LIMITS"
  run redis --set "$LIMITS" --set "server.state=redis://127.0.0.1:$rport/0"
done

python3 - "$WORK/runs.jsonl" "$RATE" "$DUR" >"$OUT" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
lines = [f"Limits state latency: k6 constant {sys.argv[2]} req/s for {sys.argv[3]} s per run, OpenAI short chat, "
         "gateway on one worker (CPU 1), mock, k6 and redis-server on CPU 0.", "",
         "| run | p50 ms | p99 ms | p50 added | p99 added | requests | failed |", "|---|---:|---:|---:|---:|---:|---:|"]
base = None
for r in runs:
    if r["name"] == "unlimited":
        base = r
        added = ("", "")
    else:
        added = (f"{(r['p50_ms'] - base['p50_ms']) * 1000:+.0f} µs", f"{(r['p99_ms'] - base['p99_ms']) * 1000:+.0f} µs")
    lines.append(f"| {r['name']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {added[0]} | {added[1]} | {r['reqs']} | {r['failed']:.4f} |")
print("\n".join(lines))
PY
cat "$OUT"
