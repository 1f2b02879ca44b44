#!/usr/bin/env bash
# Hands-on check of the two mechanisms cheapmodel.service relies on, without systemd:
#   1. SIGHUP reload (ExecReload=/bin/kill -HUP $MAINPID): add a model to the config, send SIGHUP
#      to the daemon (-d), the model appears in GET /v1/models while a request loop keeps running.
#      Also: a broken file on SIGHUP is rejected and the old config keeps serving.
#   2. Graceful binary upgrade: start a second instance with `-d -u`, `kill -QUIT` the old pid,
#      with a request loop running through the listener; count non-200s (expected 0).
# Temp config from conf/demo.yaml: free ports on 127.0.0.1, pid_file/upgrade_sock in a temp dir,
# grace_period_seconds 2, graceful_shutdown_timeout_seconds 2, watch_interval_seconds 0 (so only
# SIGHUP reloads). Everything started is killed on exit.
#
#   bash systemd/verify.sh            (needs target/release/{cheapmodel,mock-upstream})
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../loadtest/lib.sh"
cm_need curl jq python3 timeout ss
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"

WORK=$(mktemp -d /tmp/cheapmodel-verify.XXXXXX)
CFG=$WORK/cheapmodel.yaml
PIDF=$WORK/cheapmodel.pid
KEY=cm_demo_key_not_secret
CM_MAX_SECONDS=300
DAEMONS=()
FAIL=0
KEEP=1   # logs are kept unless everything passed

is_ours() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "--config $CFG"; }
cleanup() {
  local p i
  for p in "${DAEMONS[@]}"; do is_ours "$p" && kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    local alive=0
    for p in "${DAEMONS[@]}"; do is_ours "$p" && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${DAEMONS[@]}"; do is_ours "$p" && kill -KILL "$p" 2>/dev/null || true; done
  cm_cleanup
  ((KEEP)) || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Watchdog: the daemons are not our children, so `timeout` cannot bound them; this can.
(
  trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep 240 & sp=$!
  wait "$sp"
  for f in "$PIDF" "$PIDF.old"; do [[ -r $f ]] && kill -KILL "$(cat "$f")" 2>/dev/null; done
) &
CM_PIDS+=("$!")

models() { curl -sS --max-time 3 -H "Authorization: Bearer $KEY" "$URL/v1/models" | jq -r '[.data[].id] | sort | join(",")'; }
chat() { # chat MODEL -> http status
  curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" "$URL/v1/chat/completions" || true
}
check() { # check DESCRIPTION CONDITION...
  local what=$1
  shift
  if "$@"; then cm_log "OK   $what"; else cm_log "FAIL $what"; FAIL=1; fi
}
wait_pid_change() { # wait_pid_change OLD SECONDS -> echo new pid
  local i p
  for ((i = 0; i < $2 * 10; i++)); do
    p=$(cat "$PIDF" 2>/dev/null || true)
    [[ -n $p && $p != "$1" ]] && kill -0 "$p" 2>/dev/null && { echo "$p"; return 0; }
    sleep 0.1
  done
  return 1
}

# --- setup -----------------------------------------------------------------------------------
CM_MOCK_FLAGS="--no-record" cm_start_mock "$WORK/mock.log"
PORT=$(cm_free_port)
MPORT=$(cm_free_port)
URL=http://127.0.0.1:$PORT
python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$CFG" --mock "$CM_MOCK_ADDR" \
  --listen "127.0.0.1:$PORT" --metrics "127.0.0.1:$MPORT" --workdir "$WORK" \
  --set server.grace_period_seconds=2 --set server.graceful_shutdown_timeout_seconds=2 \
  --set server.watch_interval_seconds=0 --set server.access_log=false --set server.threads=2
check "cheapmodel check --config (ExecStartPre): $("$CM_BIN" check --config "$CFG")" "$CM_BIN" check --config "$CFG" >/dev/null

# --- start as a daemon, like ExecStart ------------------------------------------------------
timeout 20 "$CM_BIN" --config "$CFG" -d >>"$WORK/gateway-1.log" 2>&1 || cm_die "daemon start failed: $(cat "$WORK/gateway-1.log")"
OLD=$(wait_pid_change none 10) || cm_die "no pid file $PIDF"
DAEMONS+=("$OLD")
cm_wait_gateway "$URL" 10 || cm_die "gateway not answering: $(tail "$WORK/gateway-1.log")"
cm_log "daemon pid $OLD (pid file $PIDF), listening on $URL; parent exited, ppid now $(awk '{print $4}' "/proc/$OLD/stat")"

# --- 1. SIGHUP reload -------------------------------------------------------------------------
BEFORE=$(models)
cm_log "models before: $BEFORE"
python3 "$CM_LT/reqloop.py" "$URL" --seconds 8 --workers 4 --fresh-workers 2 >"$WORK/hup-loop.json" &
LOOP=$!
CM_PIDS+=("$LOOP")
sleep 2
check "new model not served before reload (404/400)" test "$(chat gpt-5.5-mini)" != 200
python3 - "$CFG" <<'PY'
import sys, yaml
p = sys.argv[1]
c = yaml.safe_load(open(p))
c["models"]["gpt-5.5-mini"] = {"upstream": "openai", "kind": "chat",
                               "price": {"input_per_mtok": 0.25, "output_per_mtok": 2.0}}
yaml.safe_dump(c, open(p + ".tmp", "w"), sort_keys=False)
PY
mv "$CFG.tmp" "$CFG"
T0=$(date +%s%N)
kill -HUP "$OLD"
for ((i = 0; i < 50; i++)); do [[ $(models) == *gpt-5.5-mini* ]] && break; sleep 0.1; done
T1=$(date +%s%N)
AFTER=$(models)
cm_log "models after SIGHUP ($(((T1 - T0) / 1000000)) ms): $AFTER"
check "gpt-5.5-mini listed after SIGHUP" grep -q gpt-5.5-mini <<<"$AFTER"
check "gpt-5.5-mini answers 200" test "$(chat gpt-5.5-mini)" = 200
check "same daemon pid after SIGHUP" test "$(cat "$PIDF")" = "$OLD"
# a broken file must be rejected and the previous snapshot keep serving
cp "$CFG" "$CFG.good"
printf 'server: {listen: [oops\n' >"$CFG"
kill -HUP "$OLD"
sleep 1
check "broken config on SIGHUP: still serving gpt-5.5-mini" test "$(chat gpt-5.5-mini)" = 200
check "broken config on SIGHUP: rejection logged" grep -q "config reload rejected" "$WORK/gateway-1.log"
mv "$CFG.good" "$CFG"
wait "$LOOP" || true
HUP_LOOP=$(cat "$WORK/hup-loop.json")
cm_log "request loop during SIGHUP reloads: $HUP_LOOP"
check "request loop during SIGHUP: all 200" jq -e '.total > 0 and .ok == .total' <<<"$HUP_LOOP" >/dev/null

# --- 2. graceful binary upgrade ---------------------------------------------------------------
python3 "$CM_LT/reqloop.py" "$URL" --seconds 16 --workers 4 --fresh-workers 2 >"$WORK/upgrade-loop.json" &
LOOP=$!
CM_PIDS+=("$LOOP")
sleep 2
# the new process receives the listening sockets in the foreground, then daemonizes
timeout 30 "$CM_BIN" --config "$CFG" -d -u >>"$WORK/gateway-2.log" 2>&1 &
STARTER=$!
CM_PIDS+=("$STARTER")
sleep 0.5
TQ=$(date +%s%N)
kill -QUIT "$OLD"
cm_log "started new instance (-d -u), sent SIGQUIT to old pid $OLD"
rc=0
wait "$STARTER" || rc=$?
check "new instance (-d -u) started (exit $rc)" test "$rc" = 0
NEW=$(wait_pid_change "$OLD" 10) || { NEW=; }
[[ -n $NEW ]] && DAEMONS+=("$NEW")
TN=$(date +%s%N)
check "pid file now names the new pid ($NEW), old one kept as .old" test -n "$NEW" -a -f "$PIDF.old"
for ((i = 0; i < 200; i++)); do kill -0 "$OLD" 2>/dev/null || break; sleep 0.1; done
TO=$(date +%s%N)
check "old pid $OLD exited" bash -c "! kill -0 $OLD 2>/dev/null"
cm_log "new pid ready $(((TN - TQ) / 1000000)) ms after SIGQUIT; old pid gone $(((TO - TQ) / 1000000)) ms after SIGQUIT"
wait "$LOOP" || true
UP_LOOP=$(cat "$WORK/upgrade-loop.json")
cm_log "request loop during upgrade: $UP_LOOP"
check "request loop during upgrade: 0 non-200 responses" jq -e '.total > 0 and (.non200 | length) == 0' <<<"$UP_LOOP" >/dev/null
check "request loop during upgrade: 0 errors on fresh connections" \
  jq -e '[.errors | to_entries[] | select(.key | startswith("fresh:")) | .value] | add // 0 | . == 0' <<<"$UP_LOOP" >/dev/null
KA_ERR=$(jq '[.errors | to_entries[] | select(.key | startswith("keepalive:")) | .value] | add // 0' <<<"$UP_LOOP")
if ((KA_ERR > 0)); then
  # Pingora drops idle keep-alive connections the moment the old process starts its graceful
  # shutdown (CLOSE_TIMEOUT 5 s after SIGQUIT); a request written on such a connection at that
  # instant fails with EPIPE/ECONNRESET before any response. Clients must retry those.
  cm_log "NOTE $KA_ERR transport error(s) on reused keep-alive connections when the old process closed them"
fi
OWNER=$(ss -ltnpH "sport = :$PORT" | grep -o 'pid=[0-9]*' | sort -u | tr '\n' ' ')
check "listener now owned by the new pid only ($OWNER)" test "$OWNER" = "pid=$NEW "
check "new instance serves gpt-5.5-mini" test "$(chat gpt-5.5-mini)" = 200

# --- stop, like systemctl stop (SIGTERM) -----------------------------------------------------
TS=$(date +%s%N)
kill -TERM "$NEW"
for ((i = 0; i < 200; i++)); do kill -0 "$NEW" 2>/dev/null || break; sleep 0.1; done
cm_log "SIGTERM to exit: $((($(date +%s%N) - TS) / 1000000)) ms (grace 2 s + shutdown timeout 2 s)"

{
  echo "## systemd/verify.sh $(date '+%Y-%m-%d %H:%M')"
  echo "- SIGHUP: models before [$BEFORE], after [$AFTER]; request loop: $HUP_LOOP"
  echo "- upgrade: old pid $OLD -> new pid $NEW; request loop: $UP_LOOP"
} >"$WORK/summary.md"
cat "$WORK/summary.md"
if ((FAIL)); then cm_log "verify FAILED (logs in $WORK)"; exit 1; fi
KEEP=0
cm_log "verify passed"
