#!/usr/bin/env bash
# run_claude.sh BASE_URL MODEL KEY_MODE KEY PROMPT
#
# Runs the pinned Claude Code CLI (tests/clients/node_modules) once, headless,
# against an Anthropic-compatible BASE_URL, and prints Claude Code's
# `--output-format json` result on stdout. Exit code = claude's exit code
# (124 if the hard timeout fired, 127 if the CLI is not installed).
#
#   BASE_URL  e.g. http://127.0.0.1:8080   (Claude Code appends /v1/messages?beta=true)
#   MODEL     value for --model, sent verbatim as "model" (e.g. gpt-5.5)
#   KEY_MODE  api_key    -> ANTHROPIC_API_KEY=KEY    (sent as  x-api-key: KEY)
#             auth_token -> ANTHROPIC_AUTH_TOKEN=KEY (sent as  Authorization: Bearer KEY)
#   KEY       the key/token value
#   PROMPT    the -p prompt
#
# Every run gets a fresh, empty HOME (and an empty working directory inside
# it), so no user config, CLAUDE.md or git repo leaks into the request. The
# HOME holds ~/.claude/settings.json with a PreToolUse hook (matcher "*")
# that exits 2, which blocks every tool call: Claude Code then sends the model
# a tool_result with is_error=true instead of running anything.
#
# The environment is cleared (env -i); only PATH and LANG are kept, plus the
# variables set here. Optional knobs (environment of this script):
#   RUN_CLAUDE_TIMEOUT      hard timeout in seconds (default 90)
#   RUN_CLAUDE_MAX_RETRIES  CLAUDE_CODE_MAX_RETRIES (default 2; Claude Code's
#                           own default retries a failing stream for minutes)
#   RUN_CLAUDE_EXTRA_ENV    extra "NAME=value" words for claude's environment,
#                           space separated (e.g. "ANTHROPIC_DEFAULT_HAIKU_MODEL=x")
#   RUN_CLAUDE_HOOK_LOG     file to append the JSON of every blocked tool call to
#   RUN_CLAUDE_KEEP_HOME=1  keep the temporary HOME and print its path on stderr
#   CLAUDE_BIN              claude executable (default: node_modules/.bin/claude
#                           next to this script)
set -u

if [ $# -ne 5 ]; then
    echo "usage: $0 BASE_URL MODEL api_key|auth_token KEY PROMPT" >&2
    exit 2
fi
BASE_URL=$1 MODEL=$2 KEY_MODE=$3 KEY=$4 PROMPT=$5

case "$KEY_MODE" in
    api_key)    KEY_VAR=ANTHROPIC_API_KEY ;;
    auth_token) KEY_VAR=ANTHROPIC_AUTH_TOKEN ;;
    *) echo "KEY_MODE must be api_key or auth_token, got: $KEY_MODE" >&2; exit 2 ;;
esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLAUDE_BIN=${CLAUDE_BIN:-$HERE/node_modules/.bin/claude}
if [ ! -x "$CLAUDE_BIN" ]; then
    echo "claude CLI not found at $CLAUDE_BIN; run: npm install --prefix $HERE --no-audit --no-fund" >&2
    exit 127
fi

RUN_HOME=$(mktemp -d "${TMPDIR:-/tmp}/claude-home.XXXXXX")
cleanup() {
    if [ -n "${RUN_CLAUDE_HOOK_LOG:-}" ] && [ -f "$RUN_HOME/hook_calls.jsonl" ]; then
        cat "$RUN_HOME/hook_calls.jsonl" >> "$RUN_CLAUDE_HOOK_LOG"
    fi
    if [ "${RUN_CLAUDE_KEEP_HOME:-0}" = 1 ]; then
        echo "run_claude.sh: kept HOME at $RUN_HOME" >&2
    else
        rm -rf "$RUN_HOME"
    fi
}
trap cleanup EXIT

mkdir -p "$RUN_HOME/.claude" "$RUN_HOME/work"
# The hook's command text ends up verbatim in the tool_result Claude Code sends
# upstream, so it refers to $HOME instead of the random temp path.
cat > "$RUN_HOME/.claude/settings.json" <<'EOF'
{
  "hooks": {
    "PreToolUse": [
      {
        "matcher": "*",
        "hooks": [
          {
            "type": "command",
            "command": "(cat; echo) | sed '/^$/d' >> \"$HOME/hook_calls.jsonl\"; echo 'tool use blocked by test harness' >&2; exit 2"
          }
        ]
      }
    ]
  }
}
EOF

EXTRA=()
if [ -n "${RUN_CLAUDE_EXTRA_ENV:-}" ]; then
    read -r -a EXTRA <<< "$RUN_CLAUDE_EXTRA_ENV"
fi

cd "$RUN_HOME/work" || exit 1
env -i \
    PATH="${PATH:-/usr/local/bin:/usr/bin:/bin}" \
    LANG="${LANG:-C.UTF-8}" \
    HOME="$RUN_HOME" \
    ANTHROPIC_BASE_URL="$BASE_URL" \
    "$KEY_VAR=$KEY" \
    DISABLE_TELEMETRY=1 \
    DISABLE_AUTOUPDATER=1 \
    DISABLE_ERROR_REPORTING=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    CLAUDE_CODE_MAX_RETRIES="${RUN_CLAUDE_MAX_RETRIES:-2}" \
    "${EXTRA[@]}" \
    timeout -k 5 "${RUN_CLAUDE_TIMEOUT:-90}" \
    "$CLAUDE_BIN" -p "$PROMPT" --model "$MODEL" --output-format json < /dev/null
rc=$?
exit $rc
