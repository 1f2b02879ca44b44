#!/usr/bin/env bash
# The README's performance section in one sitting: every comparison script, one after the other,
# into one directory, and one markdown file that strings their tables together.
#
#   cargo build --release --bins && cargo build --release --example bare_pingora
#   bash loadtest/all.sh                          # writes /tmp/cheapmodel-all.XXXXXX/all.md
#   DURATION=10 bash loadtest/all.sh              # seconds per wrk / k6 run (default 5)
#
# Runs: compare.sh (short chat: HAProxy, nginx, bare Pingora, the gateway and its ledger-off and
# limited variants, direct), translated.sh (the four routes), bodies.sh (85 KB and 1 MB agent
# requests), streams.sh (1,000 and 5,000 concurrent slow streams) and, when valgrind is there,
# callgrind_ab.sh noledger bare (instructions per request, exact: the gateway with and without its
# ledger, and the bare Pingora floor). About 25 minutes on 2 cores.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -x $CM_BIN && -x $CM_MOCK_BIN ]] || cm_die "build first: cargo build --release --bins"
[[ -x $CM_BARE_BIN ]] || cm_die "build the floor first: cargo build --release --example bare_pingora"
export DURATION=${DURATION:-5}
OUT=$(mktemp -d /tmp/cheapmodel-all.XXXXXX)
{
  echo "# Performance run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$CM_ROOT" rev-parse --short HEAD)"
  echo
  echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); DURATION=$DURATION"
} >"$OUT/all.md"
run() { # NAME COMMAND...: runs one script, its stderr to NAME.log, and appends its table
  local name=$1
  shift
  cm_log "$name: $*"
  "$@" 2>"$OUT/$name.log" >"$OUT/$name.stdout" || cm_die "$name failed: $(tail -n 20 "$OUT/$name.log")"
  { echo; echo "## $name"; echo; cat "$OUT/$name.md" 2>/dev/null || cat "$OUT/$name.stdout"; } >>"$OUT/all.md"
}
run compare bash "$CM_LT/compare.sh" --out "$OUT/compare.md"
run translated bash "$CM_LT/translated.sh" --out "$OUT/translated.md"
run bodies bash "$CM_LT/bodies.sh" --out "$OUT/bodies.md"
run streams bash "$CM_LT/streams.sh" --out "$OUT/streams.md"
if command -v valgrind >/dev/null; then
  SECONDS_PER_RUN=10 run callgrind bash "$CM_LT/callgrind_ab.sh" noledger bare
fi
cm_log "done: $OUT/all.md"
echo "$OUT/all.md"
