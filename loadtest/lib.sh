# Shared helpers for smoke.sh and compare.sh (sourced, not run).
# Every process started through cm_spawn is killed by cm_cleanup (installed on EXIT by the caller).

CM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CM_LT="$CM_ROOT/loadtest"
# CM_BIN may name another build of the gateway (an A/B against an older commit's binary).
CM_BIN="${CM_BIN:-$CM_ROOT/target/release/cheapmodel}"
CM_MOCK_BIN="$CM_ROOT/target/release/mock-upstream"
CM_PIDS=()

cm_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cm_die() { cm_log "ERROR: $*"; exit 1; }

# Kill every process we spawned (TERM, then KILL after 3 s), youngest first.
cm_cleanup() {
  local pid i
  for ((i = ${#CM_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${CM_PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < 30; i++)); do
    local alive=0
    for pid in "${CM_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${CM_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  CM_PIDS=()
}

# Stop one spawned process by pid and forget it.
cm_stop() {
  local pid=$1 i keep=()
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for i in "${CM_PIDS[@]}"; do [[ $i == "$pid" ]] || keep+=("$i"); done
  CM_PIDS=("${keep[@]}")
}

# cm_spawn LOGFILE CMD...: start CMD in the background with a hard time bound; sets CM_LAST_PID.
# The time bound (CM_MAX_SECONDS, default 600) is enforced by `timeout`, which execs nothing
# else: the recorded pid is the timeout process, its child the real one; use cm_child for /proc.
cm_spawn() {
  local log=$1
  shift
  timeout --kill-after=5 "${CM_MAX_SECONDS:-600}" "$@" >"$log" 2>&1 &
  CM_LAST_PID=$!
  CM_PIDS+=("$CM_LAST_PID")
}

# cm_child PID: the (single) child of a `timeout` wrapper, i.e. the real process.
cm_child() {
  local i c
  for ((i = 0; i < 50; i++)); do
    c=$(pgrep -P "$1" | head -n1 || true)
    [[ -n $c ]] && { echo "$c"; return 0; }
    sleep 0.1
  done
  return 1
}

# cm_schedstat PID FIELD: the sum of FIELD (1: CPU time in ns; 3: times run, i.e. wake-ups) over
# PID's live threads (/proc/PID/task/*/schedstat). A thread that exits between the glob and the
# read makes `cat` fail, which `pipefail` would turn into the caller's exit (compare.sh's did, once,
# after the gateway's k6 run): the threads still there are the ones that count.
cm_schedstat() {
  { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk -v f="$2" '{s += $f} END {printf "%.0f\n", s}'
}
# CPU nanoseconds and wake-ups of PID, every live thread (cm_schedstat).
cm_cpu_ns() { cm_schedstat "$1" 1; }
cm_runs() { cm_schedstat "$1" 3; }

# A free TCP port on 127.0.0.1 (the kernel's choice; a tiny race is accepted).
cm_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# cm_wait_port PORT [SECONDS]: wait until 127.0.0.1:PORT accepts connections.
cm_wait_port() {
  local port=$1 secs=${2:-10} i
  for ((i = 0; i < secs * 20; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# cm_start_mock LOGFILE [PREFIX...]: start mock-upstream on a free port; sets CM_MOCK_ADDR, CM_MOCK_PID.
# PREFIX is e.g. `taskset -c 0`; extra mock flags via CM_MOCK_FLAGS.
cm_start_mock() {
  local log=$1 i
  shift
  # shellcheck disable=SC2086
  cm_spawn "$log" "$@" "$CM_MOCK_BIN" --listen 127.0.0.1:0 ${CM_MOCK_FLAGS:-}
  CM_MOCK_PID=$CM_LAST_PID
  CM_MOCK_ADDR=
  for ((i = 0; i < 100; i++)); do
    CM_MOCK_ADDR=$(awk '/^listening /{print $2; exit}' "$log" 2>/dev/null || true)
    [[ -n $CM_MOCK_ADDR ]] && break
    sleep 0.05
  done
  [[ $CM_MOCK_ADDR == 127.0.0.1:* ]] || cm_die "mock-upstream did not start: $(cat "$log")"
}

# cm_wait_gateway BASE_URL [SECONDS]: wait until GET /v1/models answers 200 with the demo key.
cm_wait_gateway() {
  local url=$1 secs=${2:-15} i code
  for ((i = 0; i < secs * 10; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
      -H "Authorization: Bearer ${CM_KEY:-cm_demo_key_not_secret}" "$url/v1/models" || true)
    [[ $code == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

# Seconds from a DURATION like "10", "10s" (default 10).
cm_duration_s() {
  local d=${DURATION:-10}
  d=${d%s}
  [[ $d =~ ^[0-9]+$ && $d -gt 0 ]] || cm_die "DURATION must be a number of seconds (got '${DURATION:-}')"
  echo "$d"
}

# The arguments every report script takes: --out FILE (sets OUT: set its default first) and
# -h/--help (prints the script's header comment). Anything else is an error.
cm_parse_out_args() {
  while (($#)); do
    case $1 in
      --out) OUT=${2:?--out FILE}; shift 2 ;;
      -h | --help) sed -n '2,/^set -euo pipefail/{/^#/p}' "$0"; exit 0 ;;
      *) cm_die "unknown argument: $1" ;;
    esac
  done
}

cm_need() {
  local t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || cm_die "missing tool: $t"; done
}

# The configurations the A/B scripts (callgrind_ab.sh, cpu_ab.sh) compare, each against `baseline`
# (the demo config: an unlimited key, the SQLite ledger beside the config).
CM_VARIANTS="baseline noledger limited budget postgres"
# cm_variant_sets NAME: the gateway_config.py arguments of variant NAME, one per line (none for
# baseline); fails for an unknown name. `postgres` needs cm_pg_start first.
cm_variant_sets() {
  case $1 in
    baseline) ;;
    noledger) printf '%s\n' --set ledger.url=none ;;
    limited) printf '%s\n' --set 'keys.0.limits={rpm: 10000000, tpm: 100000000000, concurrency: 100000}' ;;
    budget) printf '%s\n' --set 'keys.0.budget={daily_usd: 10000, monthly_usd: 100000}' ;;
    postgres) printf '%s\n' --set "ledger.url=postgres://postgres@127.0.0.1:${CM_PG_PORT:?cm_pg_start first}/postgres" ;;
    *) return 1 ;;
  esac
}
# cm_variant_env NAME: NAME=VALUE words of the environment variant NAME runs with (none yet: the
# place for an allocator setting's A/B, e.g. MIMALLOC_PURGE_DELAY=100).
cm_variant_env() {
  case $1 in
    *) ;;
  esac
}

# cm_pg_start WORKDIR: a throwaway Postgres cluster on a free port (fsync off: only the gateway is
# measured), pinned to CPU 0, run as the `postgres` user when we are root (Postgres refuses root); sets CM_PG_PORT.
# cm_pg_stop removes it (call it from the EXIT trap).
CM_PG_DIR=""
cm_pg_start() {
  local bin as=()
  bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort | tail -n1)")
  [[ -x $bin/initdb ]] || cm_die "needs the postgresql package (initdb, pg_ctl)"
  CM_PG_DIR=$(mktemp -d /tmp/cheapmodel-pg.XXXXXX)
  CM_PG_PORT=$(cm_free_port)
  if ((EUID == 0)); then chown postgres: "$CM_PG_DIR"; as=(runuser -u postgres --); fi
  "${as[@]}" "$bin/initdb" -D "$CM_PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-sync >"$1/pg-init.log" 2>&1 ||
    cm_die "initdb failed: $(tail -n 5 "$1/pg-init.log")"
  # On CPU 0 with the load generators, as a database on another host would be: the gateway's CPU
  # (CPU 1 in cpu_ab.sh) then counts only the gateway's own work.
  taskset -c 0 "${as[@]}" "$bin/pg_ctl" -D "$CM_PG_DIR/data" -l "$CM_PG_DIR/pg.log" -w -t 30 \
    -o "-p $CM_PG_PORT -k $CM_PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
    cm_die "pg_ctl start failed: $(tail -n 5 "$CM_PG_DIR/pg.log")"
  CM_PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$CM_PG_DIR/data" -m immediate -w -t 30 stop)
}
cm_pg_stop() {
  [[ -n $CM_PG_DIR ]] || return 0
  "${CM_PG_STOP[@]}" >/dev/null 2>&1 || true
  rm -rf "$CM_PG_DIR"
  CM_PG_DIR=""
}

# Starters for the one-core comparisons (streams.sh, bodies.sh): each starts one proxy pinned to
# CPU 1 in front of the mock (cm_start_mock first), waits for its port, and sets CM_PORT and
# CM_WRAPPER (stop it with cm_stop "$CM_WRAPPER"; cm_child "$CM_WRAPPER" is its pid).
# CM_BARE_BIN may name another build of the floor (loadtest/pgo.sh's, beside its gateway in CM_BIN).
CM_BARE_BIN=${CM_BARE_BIN:-$CM_ROOT/target/release/examples/bare_pingora}

# cm_start_haproxy WORKDIR: HAProxy as a plain L7 hop (haproxy.cfg: no key check, no routing).
cm_start_haproxy() {
  local dir=$1
  CM_PORT=$(cm_free_port)
  mkdir -p "$dir"
  sed -e "s|@WORKDIR@|$dir|g" -e "s|@LISTEN_PORT@|$CM_PORT|g" -e "s|@MOCK_PORT@|${CM_MOCK_ADDR##*:}|g" \
    "$CM_LT/haproxy.cfg" >"$dir/haproxy.cfg"
  cm_spawn "$dir/log" taskset -c 1 haproxy -db -f "$dir/haproxy.cfg"
  CM_WRAPPER=$CM_LAST_PID
  cm_wait_port "$CM_PORT" 10 || cm_die "haproxy did not start: $(cat "$dir/log")"
}

# cm_start_haproxy_route WORKDIR BUFSIZE: HAProxy doing the gateway's routing job (haproxy_route.cfg).
cm_start_haproxy_route() {
  local dir=$1 bufsize=$2
  CM_PORT=$(cm_free_port)
  mkdir -p "$dir"
  sed -e "s|@WORKDIR@|$dir|g" -e "s|@LISTEN_PORT@|$CM_PORT|g" -e "s|@MOCK_PORT@|${CM_MOCK_ADDR##*:}|g" \
    -e "s|@BUFSIZE@|$bufsize|g" "$CM_LT/haproxy_route.cfg" >"$dir/haproxy.cfg"
  cm_spawn "$dir/log" taskset -c 1 haproxy -db -f "$dir/haproxy.cfg"
  CM_WRAPPER=$CM_LAST_PID
  cm_wait_port "$CM_PORT" 10 || cm_die "haproxy did not start: $(cat "$dir/log")"
}

# cm_start_bare LOGFILE [L4_READ_BUFFER_BYTES]: the bare Pingora floor (loadtest/bare_pingora.rs),
# with the gateway's mimalloc setting so that the floor moves with it.
cm_start_bare() {
  local log=$1
  shift
  CM_PORT=$(cm_free_port)
  cm_spawn "$log" env MIMALLOC_ARENA_EAGER_COMMIT=0 taskset -c 1 "$CM_BARE_BIN" "127.0.0.1:$CM_PORT" "$CM_MOCK_ADDR" 1 "$@"
  CM_WRAPPER=$CM_LAST_PID
  cm_wait_port "$CM_PORT" 15 || cm_die "bare_pingora did not start: $(tail -n 20 "$log")"
}

# cm_start_gateway WORKDIR [ENV_WORD...]: the demo config with one worker, no access log.
cm_start_gateway() {
  local dir=$1
  shift
  CM_PORT=$(cm_free_port)
  mkdir -p "$dir"
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$dir/g.yaml" --mock "$CM_MOCK_ADDR" \
    --listen "127.0.0.1:$CM_PORT" --workdir "$dir" \
    --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0
  cm_spawn "$dir/log" env "$@" taskset -c 1 "$CM_BIN" --config "$dir/g.yaml"
  CM_WRAPPER=$CM_LAST_PID
  cm_wait_port "$CM_PORT" 15 || cm_die "gateway did not start: $(tail -n 20 "$dir/log")"
}
