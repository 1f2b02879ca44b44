#!/usr/bin/env bash
# A profile-guided (PGO) release build of the gateway and of the bare Pingora floor: the same
# sources and Cargo profile (fat LTO), compiled a second time with the branch and call counts of a
# training load, so that LLVM lays hot code out together and cold code apart. A request's path
# spans far more code than an L1 instruction cache holds (callgrind's simulated 32 KB one, with
# --cache-sim: ~3,600 misses a request; this Xeon's is 64 KB), which is what the layout helps.
#
#   bash loadtest/pgo.sh                 # → target/pgo/cheapmodel, target/pgo/bare_pingora
#
# Steps: an instrumented build (-Cprofile-generate) in target/pgo-gen; a training load against
# it; `llvm-profdata merge`; the optimized build (-Cprofile-use) in target/pgo-use. Both builds
# have their own target dir, so the plain `target/release` build is left alone. Training, each
# through the instrumented gateway (demo config, SQLite ledger, the mock upstream): loadtest/
# smoke.sh's four k6 scripts (OpenAI and Anthropic callers, JSON and SSE, same-dialect and
# translated), wrk with post.lua on a same-dialect and a translated model, then wrk with route.lua
# on larger bodies of both callers, same-dialect and translated (chat_bodies.py's ~10 KB
# conversations and ~85 KB and ~1 MB agent requests); the bare floor gets the post.lua load.
# A process writes its profile when it exits, so each is stopped with SIGTERM and waited for.
# Needs rustup's llvm-tools component (llvm-profdata of rustc's own LLVM), wrk and k6; about 16
# minutes on 2 cores (the instrumented build is kept, so a second run takes ~8).
# Env: TRAIN_SECONDS (default 5, per training step).
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM
cm_need cargo rustc wrk k6 curl python3 timeout
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | awk '/^host:/{print $2}')/bin/llvm-profdata
[[ -x $PROFDATA ]] || cm_die "missing llvm-profdata: rustup component add llvm-tools"
SECS=${TRAIN_SECONDS:-5}
CM_MAX_SECONDS=600
W=$(mktemp -d /tmp/cheapmodel-pgo.XXXXXX)
OUT_DIR=$CM_ROOT/target/pgo

# build DIR RUSTFLAGS: the release binaries and the bare floor into DIR.
build() {
  (cd "$CM_ROOT" && RUSTFLAGS=$2 cargo build --release --bins --example bare_pingora --target-dir "$1")
}

# stop_and_wait WRAPPER_PID: SIGTERM the process and wait for it to exit (its profile is written
# then); a process still up after 30 s fails the build rather than train on a partial profile.
stop_and_wait() {
  local pid i
  pid=$(cm_child "$1")
  kill -TERM "$pid"
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  cm_die "process $pid did not exit after SIGTERM"
}

cm_log "instrumented build (target/pgo-gen)"
# A fixed profile directory: the flags are part of what cargo fingerprints, so the same path keeps
# the instrumented build from one run to the next. Emptied after the build, whose build scripts
# and proc macros are instrumented too and write their own profiles there.
RAW=$CM_ROOT/target/pgo-gen/profraw
build "$CM_ROOT/target/pgo-gen" "-Cprofile-generate=$RAW"
rm -rf "$RAW"
GEN=$CM_ROOT/target/pgo-gen/release

[[ -x $CM_MOCK_BIN ]] || (cd "$CM_ROOT" && cargo build --release --bin mock-upstream)
CM_MOCK_FLAGS="--no-record" cm_start_mock "$W/mock.log"

port=$(cm_free_port)
python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$W/g.yaml" --mock "$CM_MOCK_ADDR" \
  --listen "127.0.0.1:$port" --workdir "$W" \
  --set server.access_log=false --set server.watch_interval_seconds=0 --set server.threads=1
cm_spawn "$W/gateway.log" "$GEN/cheapmodel" --config "$W/g.yaml"
gateway=$CM_LAST_PID
cm_wait_gateway "http://127.0.0.1:$port" 30 || cm_die "gateway did not start: $(tail -n 20 "$W/gateway.log")"
cm_log "training the gateway"
SMOKE_RATE=200 SMOKE_DURATION=$SECS bash "$CM_LT/smoke.sh" "http://127.0.0.1:$port"
for model in gpt-5.5 claude-sonnet-4-5-20250929; do
  CM_MODEL=$model timeout 60 wrk -t1 -c32 -d"${SECS}s" -s "$CM_LT/post.lua" "http://127.0.0.1:$port" >"$W/wrk-$model.log" 2>&1
  grep -q '"non2xx":0,"errors":0' "$W/wrk-$model.log" || cm_die "training load failed ($model): $(tail -n 5 "$W/wrk-$model.log")"
done
# Larger bodies, both callers, same-dialect and translated: translated.sh's short and ~10 KB
# conversations and bodies.sh's ~85 KB and ~1 MB agent requests. Code a training run never reaches
# is compiled as cold: trained on short chats only, the profile-guided build translated a 1 MB
# request at 1.84x the plain build's CPU.
python3 "$CM_LT/chat_bodies.py" "$W" gpt-5.5 claude-sonnet-4-5-20250929
python3 "$CM_LT/chat_bodies.py" --agent "$W" gpt-5.5 claude-sonnet-4-5-20250929
for body in "$W"/{openai,anthropic}-{small,10k}-{same,translated}.json "$W"/openai-{85k,1m}-{same,translated}.json; do
  case $(basename "$body") in
    openai-*) export CM_DIALECT=openai CM_PATH=/v1/chat/completions ;;
    *) export CM_DIALECT=anthropic CM_PATH=/v1/messages ;;
  esac
  CM_BODY=$body timeout 60 wrk -t1 -c8 -d"${SECS}s" -s "$CM_LT/route.lua" "http://127.0.0.1:$port" >"$W/wrk-body.log" 2>&1
  grep -q '"non2xx":0,"errors":0' "$W/wrk-body.log" || cm_die "training load failed ($body): $(tail -n 5 "$W/wrk-body.log")"
done
stop_and_wait "$gateway"

port=$(cm_free_port)
cm_spawn "$W/bare.log" "$GEN/examples/bare_pingora" "127.0.0.1:$port" "$CM_MOCK_ADDR" 1
bare=$CM_LAST_PID
cm_wait_port "$port" 30 || cm_die "bare floor did not start: $(tail -n 20 "$W/bare.log")"
cm_log "training the bare floor"
timeout 60 wrk -t1 -c32 -d"${SECS}s" -s "$CM_LT/post.lua" "http://127.0.0.1:$port" >"$W/wrk-bare.log" 2>&1
stop_and_wait "$bare"

compgen -G "$RAW/*.profraw" >/dev/null || cm_die "no profile written in $RAW"
"$PROFDATA" merge -o "$W/merged.profdata" "$RAW"
cm_log "optimized build (target/pgo-use)"
# Functions the training never ran keep the usual heuristics; a mismatch warning would only say so.
build "$CM_ROOT/target/pgo-use" "-Cprofile-use=$W/merged.profdata -Cllvm-args=-pgo-warn-missing-function=false"
mkdir -p "$OUT_DIR"
cp "$CM_ROOT/target/pgo-use/release/cheapmodel" "$CM_ROOT/target/pgo-use/release/examples/bare_pingora" "$OUT_DIR/"
cp "$W/merged.profdata" "$OUT_DIR/"
rm -rf "$W"
cm_log "done: $OUT_DIR/cheapmodel, $OUT_DIR/bare_pingora (profile: $OUT_DIR/merged.profdata)"
