#!/usr/bin/env bash
# The demo: builds the gateway, starts the bundled mock upstream on 127.0.0.1:9901 and the gateway
# on 127.0.0.1:8080 (metrics on 127.0.0.1:9100) with conf/demo.yaml. No provider account needed.
# Key: cm_demo_key_not_secret. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
fi
cargo build --release --bins
target/release/mock-upstream --listen 127.0.0.1:9901 >/dev/null &
mock=$!
trap 'kill $mock 2>/dev/null || true' EXIT
exec_status=0
target/release/cheapmodel --config conf/demo.yaml || exec_status=$?
exit $exec_status
