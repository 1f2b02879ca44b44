#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, builds once in release mode
# (tests, benches and binaries share that one build), then runs
#   0. rustfmt and clippy (-D warnings),
#   1. cargo tests (unit + golden, and the criterion benches once each in test mode),
#   2. the integration suite (pytest): the real gateway binary in front of the real mock upstream,
#      the official openai/anthropic SDKs and their helpers, Claude Code headless (tools blocked),
#      promtool on the metrics, the usage ledger on SQLite and on a throwaway Postgres cluster,
#      and short k6 runs.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
command -v cmake >/dev/null || apt_missing+=(cmake)        # pingora's libz-ng-sys
command -v curl >/dev/null || apt_missing+=(curl)
command -v promtool >/dev/null || apt_missing+=(prometheus) # promtool check metrics
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_missing+=(nginx)  # TLS front for the upstream TLS test
command -v openssl >/dev/null || apt_missing+=(openssl)     # test certificates
command -v npm >/dev/null || apt_missing+=(nodejs npm)     # Claude Code (tests/clients)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_missing+=(postgresql)  # the Postgres ledger tests
command -v runuser >/dev/null || apt_missing+=(util-linux)  # Postgres runs as its own user
command -v redis-server >/dev/null || apt_missing+=(redis-server)  # the shared limits state (server.state)
if ((${#apt_missing[@]})); then
  echo "installing: ${apt_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt
# Claude Code, pinned by tests/clients/package-lock.json (its native binary comes from an npm package).
npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings

cargo build --release --bins
cargo test --release --all-targets
python3 -m pytest tests/integration -q --timeout 180 -p no:cacheprovider "$@"
