#!/usr/bin/env bash
# Runs fuzz targets one after another, each for a bounded time, on the stable toolchain.
#   tests/fuzz/run.sh [SECONDS] [TARGET...]      (default: 60 s, every target)
# The scratch corpus tests/fuzz/corpus/<target> is initialised from tests/fuzz/seeds/<target>;
# logs go to tests/fuzz/target/logs/<target>.log, crashes to tests/fuzz/artifacts/<target>/.
# Extra libFuzzer flags can be passed in FUZZ_FLAGS; SANITIZER=none builds without ASan.
set -uo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$fuzz/../.." && pwd)
secs=${1:-60}; shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(request_openai_to_anthropic request_anthropic_to_openai stream_openai_to_anthropic stream_anthropic_to_openai response_json peek)
san=()
[ -n "${SANITIZER:-}" ] && san=(--sanitizer "$SANITIZER")
mkdir -p "$fuzz/target/logs"
# The seeds are generated from the golden files (git-ignored, so they never go stale in the tree).
bash "$fuzz/make_seeds.sh"
cd "$root"
for t in "${targets[@]}"; do
  mkdir -p "$fuzz/corpus/$t"
  cp -n "$fuzz/seeds/$t"/* "$fuzz/corpus/$t/"
  echo "== $t ($secs s)"
  # One process, one thread: cargo-fuzz's default (--jobs 1) runs libFuzzer in-process, no fork.
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz "${san[@]}" "$t" "tests/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 -print_final_stats=1 ${FUZZ_FLAGS:-} \
    > "$fuzz/target/logs/$t.log" 2>&1
  rc=$?
  grep -E '^#[0-9]+\s+DONE' "$fuzz/target/logs/$t.log" | tail -1
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$fuzz/target/logs/$t.log"
  grep -E "panicked at|^SUMMARY|Test unit written to" "$fuzz/target/logs/$t.log"
  echo "exit $rc"
done
