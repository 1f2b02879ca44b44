#!/usr/bin/env bash
# Rebuilds tests/fuzz/seeds/<target>/ from the golden files (run from anywhere).
# Request and peek seeds are the request inputs (in.json and errors/*.json); stream seeds are
# in.sse prefixed with one byte (0x80: cut near the middle), the byte the target reads as the cut.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
golden="$fuzz/../golden"
rm -rf "$fuzz/seeds"
copy() { # dir-of-cases target
  local src=$1 dst="$fuzz/seeds/$2"; mkdir -p "$dst"
  for f in "$golden/$src"/*/in.json; do cp "$f" "$dst/$(basename "$(dirname "$f")").json"; done
  if [ -d "$golden/$src/errors" ]; then
    for f in "$golden/$src"/errors/*.json; do cp "$f" "$dst/error_$(basename "$f")"; done
  fi
}
copy request/openai_to_anthropic request_openai_to_anthropic
copy request/anthropic_to_openai request_anthropic_to_openai
mkdir -p "$fuzz/seeds/peek"
cp "$fuzz/seeds/request_openai_to_anthropic"/* "$fuzz/seeds/peek/"
for f in "$fuzz/seeds/request_anthropic_to_openai"/*; do cp "$f" "$fuzz/seeds/peek/a2o_$(basename "$f")"; done
# The fast-path target runs both directions on every input: both request sets.
mkdir -p "$fuzz/seeds/response_json"
for d in anthropic_to_openai openai_to_anthropic; do
  for f in "$golden/response/$d"/*/in.json; do cp "$f" "$fuzz/seeds/response_json/${d}_$(basename "$(dirname "$f")").json"; done
done
for d in anthropic_to_openai openai_to_anthropic; do
  dst="$fuzz/seeds/stream_$d"; mkdir -p "$dst"
  for f in "$golden/stream/$d"/*/in.sse; do
    { printf '\x80'; cat "$f"; } > "$dst/$(basename "$(dirname "$f")").bin"
  done
done
