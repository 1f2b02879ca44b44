#!/usr/bin/env bash
# Where a stream's memory goes: valgrind's DHAT on the bare Pingora floor and on the gateway, each
# with N OpenAI streams open at once (stream_rss.py, a slow stream of the mock), then the heap they
# held at its peak, per stream, grouped by who allocated it.
#
#   bash loadtest/stream_heap.sh                       # N=200 (and N/2), DELAY_MS=5000
#   N=400 bash loadtest/stream_heap.sh --out /tmp/heap.md
#
# DHAT sees only what goes through malloc, and mimalloc maps its own memory, so both binaries are
# built with `--features system-alloc` into target/system-alloc (the first run builds everything
# there once; target/release is left as it is). A heap byte is not a resident byte: a block counts
# whole here, and in RSS only for the pages that were written (Pingora's 64 KiB upstream body
# buffer is mostly never written). `streams.sh` measures RSS.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cm_cleanup EXIT
trap 'exit 130' INT TERM

OUT=/tmp/cheapmodel-stream-heap.md
cm_parse_out_args "$@"
cm_need valgrind python3 timeout cargo
N=${N:-200}
DELAY_MS=${DELAY_MS:-5000}
HEAP_TARGET=$CM_ROOT/target/system-alloc
(cd "$CM_ROOT" && CARGO_TARGET_DIR=$HEAP_TARGET cargo build --release --features system-alloc \
  --bin cheapmodel --example bare_pingora)
W=$(mktemp -d /tmp/cheapmodel-stream-heap.XXXXXX)
CM_MOCK_FLAGS="--threads 1 --no-record" cm_start_mock "$W/mock.log"

# profile NAME STREAMS MODEL CMD...: CMD under DHAT on CM_PORT, STREAMS streams through it at once,
# then SIGINT (both binaries exit on it), which makes DHAT write $W/NAME.json.
profile() {
  local name=$1 n=$2 model=$3 pid
  shift 3
  cm_spawn "$W/$name.log" valgrind --tool=dhat --dhat-out-file="$W/$name.json" "$@"
  pid=$(cm_child "$CM_LAST_PID")
  # Under valgrind a start takes seconds, not milliseconds.
  cm_wait_port "$CM_PORT" 120 || cm_die "$name did not start: $(tail -n 20 "$W/$name.log")"
  timeout 600 python3 "$CM_LT/stream_rss.py" "http://127.0.0.1:$CM_PORT" "$pid" --n "$n" \
    --delay-ms "$DELAY_MS" --model "$model" >"$W/$name.streams" ||
    cm_die "$name: not every stream ended with [DONE]: $(cat "$W/$name.streams")"
  kill -INT "$pid"
  timeout 120 tail --pid="$pid" -f /dev/null || cm_die "$name did not exit on SIGINT"
  [[ -s $W/$name.json ]] || cm_die "$name: DHAT wrote nothing: $(tail -n 20 "$W/$name.log")"
  cm_log "$name: $n streams profiled"
}

# Each target at N/2 and at N streams: a stream's share is the difference over N/2, so that what
# is allocated once at start (the registry, the config, the ledger's connection) drops out.
for n in $((N / 2)) "$N"; do
  CM_PORT=$(cm_free_port)
  profile "pingora-bare.$n" "$n" gpt-5.5 "$HEAP_TARGET/release/examples/bare_pingora" "127.0.0.1:$CM_PORT" "$CM_MOCK_ADDR" 1
  CM_PORT=$(cm_free_port)
  python3 "$CM_LT/gateway_config.py" "$CM_ROOT/conf/demo.yaml" "$W/g.$n.yaml" --mock "$CM_MOCK_ADDR" \
    --listen "127.0.0.1:$CM_PORT" --workdir "$W/g.$n" \
    --set server.threads=1 --set server.access_log=false --set server.watch_interval_seconds=0
  profile "gateway.$n" "$n" gpt-5.5 "$HEAP_TARGET/release/cheapmodel" --config "$W/g.$n.yaml"
done
cm_cleanup

python3 - "$W" "$N" "$OUT" <<'PY'
import collections, json, sys, time
w, n, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
half = n // 2
ALLOCATOR = ("malloc", "calloc", "realloc", "memalign", "alloc::", "__rust", "RawVec", "<alloc",
             "hashbrown::raw", "BytesMut::reserve", "BytesMut::with_capacity", "Vec<T")

def group(frames):
    """Who holds a block, named by the first frame past the allocator's own."""
    code = [f.split(": ", 1)[-1].split(" (in ")[0] for f in frames]
    if any("BodyReader::prepare_buf" in f for f in code):
        return "Pingora: upstream body buffer (`BODY_BUFFER_SIZE`, 64 KiB, mostly unwritten)"
    # The gateway's idle wrapper (`proxy::idle`) only awaits Pingora's app: what is allocated
    # while it is polled is Pingora's future (async_trait's box, made in an inlined frame).
    first = next((f for f in code if not any(a in f for a in ALLOCATOR) and "IdleTimeout" not in f), "?")
    if "cheapmodel::" in first:
        return "gateway: `" + first.replace("{{closure}}", "").rstrip(":") + "`"
    if any("calloc" in f for f in code) and "run_endpoint" in first:
        return "Pingora: caller connection's L4 read buffer (64 KiB by default)"
    for key, label in [("ServerApp>::process_new", "Pingora: the connection's future (`process_new`)"),
                       ("start_service", "Tokio: the connection's task"),
                       ("run_endpoint", "Pingora: the accept loop's per-connection futures (and the gateway's idle wrapper)"),
                       ("read_request", "Pingora: the request head (buffer, headers)"),
                       ("read_resp", "Pingora: the upstream response head (buffer, headers)"),
                       ("mpsc", "Pingora: `proxy_1to1`'s two task channels"),
                       ("HeaderMap", "Pingora: copies of the heads"),
                       ("connectors::", "Pingora: the upstream connection")]:
        if key in first:
            return label
    return "other (Pingora, Tokio)"

def held(name):
    d = json.load(open(f"{w}/{name}.json"))
    by = collections.Counter()
    for pp in d["pps"]:
        if pp.get("gb"):
            by[group([d["ftbl"][f] for f in pp["fs"]])] += pp["gb"]
    return by

cols = []
for target in ("pingora-bare", "gateway"):
    lo, hi = held(f"{target}.{half}"), held(f"{target}.{n}")
    cols.append({k: (hi[k] - lo[k]) / (n - half) for k in set(lo) | set(hi)})
labels = sorted({k for c in cols for k in c}, key=lambda k: -max(c.get(k, 0) for c in cols))
out = [f"**Heap held per open stream** ({time.strftime('%Y-%m-%d %H:%M')}, `bash loadtest/stream_heap.sh`: "
       f"valgrind DHAT at {half} and {n} streams, the system allocator; bytes at the peak, "
       f"the difference over {n - half})", "",
       "| held by | bare Pingora | gateway |", "|---|---:|---:|"]
small = [0.0, 0.0]
for k in labels:
    vals = [c.get(k, 0) for c in cols]
    if max(abs(v) for v in vals) >= 100:
        out.append(f"| {k} | {vals[0]:,.0f} | {vals[1]:,.0f} |")
    else:
        small = [s + v for s, v in zip(small, vals)]
out.append(f"| everything under 100 B a stream | {small[0]:,.0f} | {small[1]:,.0f} |")
out.append(f"| **total** | {sum(cols[0].values()):,.0f} | {sum(cols[1].values()):,.0f} |")
open(out_path, "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
cm_log "wrote $OUT"
