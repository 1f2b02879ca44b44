#!/usr/bin/env bash
# Smoke load test: a short, bounded k6 run of the four scripts against a running gateway.
#
#   bash loadtest/smoke.sh http://127.0.0.1:8080      # an already running gateway (demo key)
#   bash loadtest/smoke.sh                            # self-contained: starts mock-upstream and the
#                                                     # gateway (target/release) on free ports
#
# Env: SMOKE_RATE (default 50 req/s), SMOKE_DURATION (default 3 s per script), CM_KEY.
# Exits non-zero if any script fails its thresholds (http_req_failed<1%, checks>99%).
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM

cm_need k6 curl timeout
RATE=${SMOKE_RATE:-50}
DUR=${SMOKE_DURATION:-3}
WORK=$(mktemp -d /tmp/cheapmodel-smoke.XXXXXX)
CM_MAX_SECONDS=120

BASE_URL=${1:-}
if [[ -z $BASE_URL ]]; then
  [[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
  CM_MOCK_FLAGS="--no-record" cm_start_mock "$WORK/mock.log"
  port=$(cm_free_port)
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$WORK/gateway.yaml" \
    --mock "$CM_MOCK_ADDR" --listen "127.0.0.1:$port" --workdir "$WORK" \
    --set server.access_log=false --set server.watch_interval_seconds=0
  cm_spawn "$WORK/gateway.log" "$CM_BIN" --config "$WORK/gateway.yaml"
  BASE_URL="http://127.0.0.1:$port"
  cm_wait_gateway "$BASE_URL" 15 || cm_die "gateway did not start: $(tail -n 20 "$WORK/gateway.log")"
fi
[[ $BASE_URL == http://127.0.0.1:* ]] || cm_die "only http://127.0.0.1:PORT may be a target (got $BASE_URL)"

cm_log "smoke: $BASE_URL, ${RATE} req/s for ${DUR}s per script"
fail=0
for s in openai_json openai_stream anthropic_json anthropic_stream; do
  rc=0
  BASE_URL=$BASE_URL RATE=$RATE DURATION=$DUR VUS=${VUS:-10} \
    timeout --kill-after=5 $((DUR + 20)) k6 run --quiet --no-color --no-usage-report \
    --summary-export "$WORK/$s.json" "$CM_LT/$s.js" >"$WORK/$s.log" 2>&1 || rc=$?
  summary=$(python3 - "$WORK/$s.json" <<'PY' 2>/dev/null || echo "no summary"
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
d = m["http_req_duration"]
print(f"reqs={int(m['http_reqs']['count'])} failed={m['http_req_failed']['value']*100:.2f}% "
      f"checks={m['checks']['value']*100:.2f}% p50={d['med']:.2f}ms p99={d['p(99)']:.2f}ms")
PY
)
  if ((rc == 0)); then
    cm_log "PASS $s: $summary"
  else
    fail=1
    cm_log "FAIL $s (k6 exit $rc): $summary"
    tail -n 40 "$WORK/$s.log" >&2
  fi
done
if ((fail)); then
  cm_log "smoke FAILED (logs in $WORK)"
  exit 1
fi
rm -rf "$WORK"
cm_log "smoke passed"
