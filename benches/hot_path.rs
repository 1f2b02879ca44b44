//! Per-request hot path of the gateway, measured through the library's public API.
//!
//! What is measured (each group holds its own baseline):
//! - `auth`: `auth::authenticate` against a snapshot of 100 keys (`cm_` + 48 hex, as `new-key`
//!   makes them), with the key in `Authorization: Bearer` and in `x-api-key`, among the ~15
//!   headers the official SDKs send; also an unknown key. Baseline: `auth::key_digest` alone
//!   (the sha256 every request pays).
//! - `peek`: `peek::peek` on OpenAI chat bodies of exactly 1 KiB, 100 KiB and 5 MiB (system
//!   prompt, long user/assistant/tool turns with code, quotes, backslashes, non-ASCII, tool calls
//!   whose arguments are escaped JSON, a tools array with JSON schemas, `"model"` as the LAST key).
//!   Baseline: `memchr::memmem::find(body, "\"model\"")` (a plain substring scan of the same
//!   bytes). Also `agent_85KB`: a coding agent's request (`common/agent_body.rs`, the body
//!   `loadtest/bodies.sh` sends), `model` first, mostly file text with an escape on every line.
//! - `sse`: `usage::StreamMeter` over a recorded-shape OpenAI stream (role chunk, 200 content
//!   chunks, finish chunk, all with `"usage":null`, usage-only chunk, `[DONE]`: 204 events,
//!   60 986 B) and an Anthropic stream (message_start, content_block_start, ping, 200
//!   content_block_delta, content_block_stop, message_delta, message_stop: 206 events, 24 581 B),
//!   fed one event per `feed` and in 1400-byte pieces, passthrough (`new(d, false)`) and, for
//!   OpenAI, strip mode (`new(OpenAi, true)`). Throughput is in events. Baseline: splitting the
//!   same bytes into lines with memchr.
//! - `request_id`: `proxy::request_id::RequestIds::fresh` (a new id per request without a caller's
//!   `x-request-id`). Baseline: the `format!("req_{:016x}{:016x}")` it replaced.
//! - `upstream_head`: the upstream request head of a JSON answer read whole (`proxy::whole`) from
//!   the OpenAI SDK's 17 headers: `upstream::strip_hop_by_hop`, then `upstream::rewrite_request`
//!   for a translated route. Baseline: the clone of the caller's head both paths make.
//! - `sse_parts` (diagnostic): the per-line steps of `StreamMeter` for OpenAI (copy of the private
//!   `usage::contains`, the same test with memmem, `sonic_rs::get(data, ["usage"])`) and
//!   Anthropic (`sonic_rs::get(data, ["type"])`), per data line.
//!
//! Run: `cargo bench --bench hot_path` (about 75 s of measurement; 20 samples, 2 s, 0.5 s warm-up
//! per bench). `HOT_PATH_DUMP=<dir>` writes the generated bodies and streams to `<dir>`.
//!
//! Results, 2026-11-26, AMD EPYC, 2 cores, shared and noisy (load average ~2.6 during the run),
//! default release profile (no `-C target-cpu`); criterion's point estimate, [95% CI] where it
//! matters. Full table in `benches/README.md`.
//!
//! | bench | time | throughput | vs baseline |
//! |---|---|---|---|
//! | auth: key_digest (baseline) | 107 ns | | 1.00x |
//! | auth: authenticate, Bearer | 122 ns | | 1.14x (+15 ns) |
//! | auth: authenticate, x-api-key | 189 ns [168, 221] | | 1.76x (+81 ns) |
//! | auth: authenticate, unknown key | 159 ns | | 1.48x |
//! | peek 1 KiB: memmem / peek | 63 ns / 499 ns | 15.1 / 1.91 GiB/s | peek = 7.9x memmem |
//! | peek 100 KiB: memmem / peek | 3.44 / 21.7 us | 27.7 / 4.39 GiB/s | peek = 6.3x memmem |
//! | peek 5 MiB: memmem / peek | 0.228 / 1.58 ms | 21.4 / 3.10 GiB/s | peek = 6.9x memmem |
//! | sse openai: memchr lines (baseline) | 16.9 ns/event | | 1.00x |
//! | sse openai: passthrough, per event / 1400 B | 171 / 187 ns/event | | 10.1x / 11.1x |
//! | sse openai: strip, per event / 1400 B | 406 / 424 ns/event | | 24.1x / 25.1x |
//! | sse anthropic: memchr lines (baseline) | 19.2 ns/event | | 1.00x |
//! | sse anthropic: passthrough, per event / 1400 B | 98 / 95 ns/event | | 5.1x / 4.9x |
//! | sse_parts openai: naive contains / memmem / sonic get usage | 150 / 57 / 373 ns/line | | |
//! | sse_parts anthropic: sonic get type | 52 ns/line | | |
//!
//! The peek rows are from 2026-12-06, after `peek` became one structural pass (it walks the
//! top-level members itself, crosses strings with one `memchr` for the closing quote, checks
//! UTF-8 with simdutf8, and no longer validates values it does not read): in the same sitting
//! against `--baseline` of the version before (a depth-guard pass, then sonic-rs's validating
//! object iterator), `peek` took 66.5%, 77.2% and 70.9% less time at 1 KiB, 100 KiB and 5 MiB.
//! Target "peek at >= 1 GB/s": holds at every size. Later that day strings with escapes were
//! crossed 64 bytes at a time (`json_string`): -5.7%, -61.3% and -59.8% more at 1 KiB, 100 KiB and
//! 5 MiB, and -38.8% on `agent_85KB` (benches/README.md).
//! The sse rows are from 2026-12-06, after the meter moved onto `dialect::sse::SseDecoder` (the
//! only SSE parser); against `--baseline` of its own line splitter in the same sitting, relative to
//! the memchr baseline of each run: +2% and +8% (OpenAI passthrough, per event / 1400 B), +2% and
//! +1% (strip), +1% and -3% (Anthropic).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cheapmodel::auth::{authenticate, key_digest};
use cheapmodel::error::Dialect;
use cheapmodel::peek::peek;
use cheapmodel::registry::{Key, Snapshot};
use cheapmodel::usage::{openai_chunk_has_content, StreamMeter, Usage};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[path = "common/agent_body.rs"]
mod agent_body;

// The SDK's request head (the key among ~15 headers), shared with `tests/alloc_budget.rs`.
#[path = "../tests/common/sdk_request.rs"]
mod sdk_request;
use sdk_request::sdk_request;

// ---------------------------------------------------------------------------------------------
// Deterministic pseudo-random source (no rand dependency; same inputs on every run).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b"0123456789abcdef"[self.below(16)])).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Key check.

/// Keys as `cheapmodel new-key` makes them: `cm_` + 48 hex digits (192 bits).
fn key_set(n: usize) -> (Snapshot, Vec<String>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut snapshot = Snapshot::default();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("cm_{}", rng.hex(48));
        let models = (i % 3 == 0).then(|| ["gpt-4o", "claude-sonnet-4-5"].iter().map(|s| s.to_string()).collect());
        snapshot.keys.insert(
            key_digest(key.as_bytes()),
            Arc::new(Key {
                name: format!("team-{i}").into(),
                models,
                limits: Default::default(),
                budget: Default::default(),
            }),
        );
        keys.push(key);
    }
    (snapshot, keys)
}

fn bench_auth(c: &mut Criterion) {
    let (snapshot, keys) = key_set(100);
    let key = keys[57].clone();
    let bearer = sdk_request(b"/v1/chat/completions", 48213, ("authorization", format!("Bearer {key}")));
    let x_api_key = sdk_request(b"/v1/messages", 48213, ("x-api-key", key.clone()));
    let unknown =
        sdk_request(b"/v1/chat/completions", 48213, ("authorization", format!("Bearer cm_{}", Rng(7).hex(48))));
    // Sanity: the benched calls do what they claim.
    assert_eq!(&*authenticate(&bearer, &snapshot).expect("bearer ok").name, "team-57");
    assert_eq!(&*authenticate(&x_api_key, &snapshot).expect("x-api-key ok").name, "team-57");
    assert!(authenticate(&unknown, &snapshot).is_err());

    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_key_digest", |b| b.iter(|| key_digest(black_box(key.as_bytes()))));
    g.bench_function("authenticate_bearer", |b| b.iter(|| authenticate(black_box(&bearer), black_box(&snapshot))));
    g.bench_function("authenticate_x_api_key", |b| {
        b.iter(|| authenticate(black_box(&x_api_key), black_box(&snapshot)))
    });
    g.bench_function("authenticate_unknown_key", |b| {
        b.iter(|| authenticate(black_box(&unknown), black_box(&snapshot)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Model peek on OpenAI chat bodies, `"model"` last.

/// Text as it shows up in chat requests: prose, pasted code (newlines, quotes, backslashes,
/// tabs), Windows paths, JSON in text, non-ASCII.
const PIECES: &[&str] = &[
    "The gateway forwards the request unchanged unless the model is pinned to another upstream. ",
    "Could you explain why the \"retry\" policy doesn't apply to streamed responses? ",
    "Here is the function that fails:\n\n```rust\nfn parse(s: &str) -> Result<Config, Error> {\n    let v: Value = serde_json::from_str(s)?;\n    if v[\"version\"] != \"2\" {\n        return Err(Error::Version(format!(\"got {:?}\", v[\"version\"])));\n    }\n    Ok(Config::from(v))\n}\n```\n",
    "```python\ndef load(path):\n\twith open(path) as f:\n\t\treturn json.load(f)  # \"utf-8\" by default\n```\n",
    "The log says: {\"level\":\"error\",\"msg\":\"upstream closed\",\"status\":502,\"path\":\"/v1/chat/completions\"}\n",
    "Files are under C:\\Users\\dev\\project\\src\\ and D:\\data\\2024\\. ",
    "Résumé: la réponse était « naïve », voilà. 東京の天気は晴れです。 Größe: 42 µm. 🚀\n",
    "1. Read the config.\n2. Validate every upstream.\n3. Swap the snapshot.\n",
    "Sure! Let me walk through it step by step. First, note that `Option<T>` is ",
    "<div class=\"note\" data-id='7'>Use &lt;b&gt; for bold.</div>\n",
];

/// Serialized length of `s` as a JSON string body (without the quotes), as serde_json writes it.
fn json_str_len(s: &str) -> usize {
    serde_json::to_string(s).expect("string").len() - 2
}

/// Text whose JSON-encoded form is exactly `want` bytes (padded with ASCII at the end).
fn text_of_encoded_len(rng: &mut Rng, want: usize) -> String {
    let mut s = String::new();
    let mut enc = 0;
    loop {
        let p = PIECES[rng.below(PIECES.len())];
        let l = json_str_len(p);
        if enc + l > want {
            break;
        }
        s.push_str(p);
        enc += l;
    }
    while enc < want {
        s.push(char::from(b'a' + (enc % 26) as u8));
        enc += 1;
    }
    s
}

fn tool(name: &str, desc: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "function",
        "function": {
            "name": name,
            "description": desc,
            "strict": true,
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the repository root, e.g. \"src/main.rs\"."},
                    "range": {"type": "object", "properties": {
                        "start": {"type": "integer", "minimum": 1},
                        "end": {"type": ["integer", "null"], "minimum": 1}
                    }, "required": ["start", "end"], "additionalProperties": false},
                    "mode": {"type": "string", "enum": ["read", "write", "append"]},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8}
                },
                "required": ["path", "range", "mode", "tags"],
                "additionalProperties": false
            }
        }
    })
}

/// An OpenAI chat-completions body of exactly `target` bytes: system prompt, user/assistant turns
/// with long text, assistant tool calls (arguments are an escaped JSON string) and tool results,
/// a tools array with JSON schemas, sampling options, and `"model"` as the last key.
fn chat_body(target: usize) -> Vec<u8> {
    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    let tools: Vec<serde_json::Value> = if target < 4096 {
        vec![
            serde_json::json!({"type":"function","function":{"name":"get_weather","description":"Current weather for a city.","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}},"required":["city"]}}}),
        ]
    } else {
        vec![
            tool("read_file", "Read a file of the workspace."),
            tool("write_file", "Write a file of the workspace; creates parent directories."),
            tool("search", "Full-text search over the workspace; returns matching lines."),
            tool("run_tests", "Run the test suite and return the failures."),
        ]
    };
    let head = "{\"messages\":[";
    let tail = format!(
        "],\"tools\":{},\"tool_choice\":\"auto\",\"temperature\":0.2,\"max_completion_tokens\":4096,\"stream\":true,\"stream_options\":{{\"include_usage\":true}},\"model\":\"gpt-4o\"}}",
        serde_json::to_string(&tools).expect("tools")
    );
    let system = serde_json::json!({"role":"system","content":"You are a careful senior engineer. Answer with code when it helps; quote file paths as \"path/to/file\"."});
    let mut msgs: Vec<String> = vec![serde_json::to_string(&system).expect("system")];
    let len = |msgs: &[String]| head.len() + tail.len() + msgs.iter().map(|m| m.len() + 1).sum::<usize>() - 1;
    // Typical message size grows with the body (a 5 MB body is long pasted context).
    let typical = (target / 24).clamp(200, 96 * 1024);
    let mut turn = 0usize;
    loop {
        let size = typical / 2 + rng.below(typical);
        let msg = match turn % 4 {
            0 => serde_json::json!({"role":"user","content":text_of_encoded_len(&mut rng, size)}),
            1 => {
                serde_json::json!({"role":"assistant","content":null,"tool_calls":[{"id":format!("call_{}", rng.hex(24)),"type":"function","function":{"name":"read_file","arguments":serde_json::to_string(&serde_json::json!({"path":"src/proxy/mod.rs","range":{"start":1,"end":400},"mode":"read","tags":["review"]})).expect("args")}}]})
            }
            2 => {
                serde_json::json!({"role":"tool","tool_call_id":format!("call_{}", rng.hex(24)),"content":text_of_encoded_len(&mut rng, size)})
            }
            _ => {
                serde_json::json!({"role":"assistant","content":text_of_encoded_len(&mut rng, size)})
            }
        };
        let msg = serde_json::to_string(&msg).expect("message");
        // Leave room for a final user message of at least 64 bytes of text.
        let room = target as isize - (len(&msgs) + 1 + msg.len()) as isize;
        if room < 200 {
            break;
        }
        msgs.push(msg);
        turn += 1;
    }
    // Final user message, sized to land exactly on `target`.
    let empty = serde_json::to_string(&serde_json::json!({"role":"user","content":""})).expect("empty").len();
    let want = target - len(&msgs) - 1 - empty;
    let last = serde_json::json!({"role":"user","content":text_of_encoded_len(&mut rng, want)});
    msgs.push(serde_json::to_string(&last).expect("last"));
    let mut body = String::with_capacity(target);
    body.push_str(head);
    body.push_str(&msgs.join(","));
    body.push_str(&tail);
    assert_eq!(body.len(), target, "body size");
    body.into_bytes()
}

fn bench_peek(c: &mut Criterion) {
    let sizes: [(&str, usize); 3] = [("1KB", 1024), ("100KB", 100 * 1024), ("5MB", 5 * 1024 * 1024)];
    let bodies: Vec<(&str, Vec<u8>)> = sizes.iter().map(|&(n, s)| (n, chat_body(s))).collect();
    for (name, body) in &bodies {
        // Sanity: valid JSON, model found last, stream read, nesting within the limit.
        serde_json::from_slice::<serde_json::Value>(body).expect("valid JSON");
        let p = peek(body).expect("peek ok");
        assert_eq!(p.model, "gpt-4o", "{name}");
        assert!(p.stream && p.stream_options.is_some());
        assert_eq!(body.len() - p.model_span.end, 1, "model is the last key");
        assert_eq!(memchr::memmem::find(body, b"\"model\""), Some(p.model_span.start - 8));
    }

    dump(bodies.iter().map(|(n, b)| (format!("body_{n}.json"), b.as_slice())));

    // A coding agent's request (`common/agent_body.rs`): `model` first, then mostly file text
    // with an escape on every line.
    let agent = agent_body::agent_request("gpt-5.5", 85 * 1024);
    assert_eq!(peek(&agent).expect("peek ok").model, "gpt-5.5");

    let mut g = c.benchmark_group("peek");
    g.throughput(Throughput::Bytes(agent.len() as u64));
    g.bench_with_input(BenchmarkId::new("baseline_memmem_model", "agent_85KB"), &agent, |b, body| {
        b.iter(|| memchr::memmem::find(black_box(body), b"\"model\""))
    });
    g.bench_with_input(BenchmarkId::new("peek", "agent_85KB"), &agent, |b, body| {
        b.iter(|| peek(black_box(body)).map(|p| p.model_span))
    });
    for (name, body) in &bodies {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("baseline_memmem_model", name), body, |b, body| {
            b.iter(|| memchr::memmem::find(black_box(body), b"\"model\""))
        });
        g.bench_with_input(BenchmarkId::new("peek", name), body, |b, body| {
            b.iter(|| peek(black_box(body)).map(|p| p.model_span))
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. SSE usage scan.

/// Output tokens as they come out of a chat model, some needing JSON escapes.
const TOKENS: &[&str] = &[
    " the",
    " gateway",
    " forwards",
    " each",
    " request",
    ",",
    " and",
    " then",
    " reads",
    " usage",
    ".",
    "\n\n",
    "```",
    "rust",
    "\n",
    "fn",
    " main",
    "()",
    " {",
    "\n   ",
    " let",
    " s",
    " =",
    " \"",
    "hello",
    "\"",
    ";",
    "\n",
    "}",
    " Caf",
    "é",
    " \\",
    "n",
    " —",
    " 🚀",
    "\t",
    " `",
    "Option",
    "<T>",
    "`",
    " is",
];

const OPENAI_CHUNK_HEAD: &str = "data: {\"id\":\"chatcmpl-C3xQ7wKkz1bT9yVJf2mN8pLrS0aEu\",\"object\":\"chat.completion.chunk\",\"created\":1756310400,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_07871e2ad8\",\"choices\":";

/// An OpenAI chat stream with `stream_options.include_usage`: role chunk, `n` content chunks,
/// finish chunk (all with `"usage":null`), usage-only chunk, `[DONE]`. Returns (bytes, events).
fn openai_stream(n: usize) -> (Vec<u8>, u64) {
    let mut rng = Rng(42);
    let mut s = String::new();
    let mut events = 0;
    let chunk = |s: &mut String, choices: &str, usage: &str| {
        s.push_str(OPENAI_CHUNK_HEAD);
        s.push_str(choices);
        s.push_str(",\"usage\":");
        s.push_str(usage);
        s.push_str("}\n\n");
    };
    chunk(&mut s, "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]", "null");
    events += 1;
    for _ in 0..n {
        let tok = serde_json::to_string(TOKENS[rng.below(TOKENS.len())]).expect("token");
        chunk(
            &mut s,
            &format!("[{{\"index\":0,\"delta\":{{\"content\":{tok}}},\"logprobs\":null,\"finish_reason\":null}}]"),
            "null",
        );
        events += 1;
    }
    chunk(&mut s, "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]", "null");
    chunk(&mut s, "[]", "{\"prompt_tokens\":1834,\"completion_tokens\":200,\"total_tokens\":2034,\"prompt_tokens_details\":{\"cached_tokens\":1024,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}");
    s.push_str("data: [DONE]\n\n");
    events += 3;
    (s.into_bytes(), events)
}

/// An Anthropic messages stream: message_start, content_block_start, ping, `n`
/// content_block_delta, content_block_stop, message_delta, message_stop. Returns (bytes, events).
fn anthropic_stream(n: usize) -> (Vec<u8>, u64) {
    let mut rng = Rng(43);
    let mut s = String::new();
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":810,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":1024,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1,\"service_tier\":\"standard\"}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
    for _ in 0..n {
        let tok = serde_json::to_string(TOKENS[rng.below(TOKENS.len())]).expect("token");
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{tok}}}}}\n\n"));
    }
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":200}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    (s.into_bytes(), n as u64 + 6)
}

/// One network read per SSE event (what a streaming upstream typically flushes).
fn per_event(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(i) = memchr::memmem::find(rest, b"\n\n") {
        let (ev, tail) = rest.split_at(i + 2);
        out.push(ev);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Pieces of one TCP segment's payload (~MSS), cutting lines anywhere.
fn per_segment(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.chunks(1400).collect()
}

/// What the proxy does per response: one meter, a fresh `out` per body chunk, `finish` at the end.
fn run_meter(dialect: Dialect, strip: bool, pieces: &[&[u8]]) -> (Usage, bool, usize) {
    let mut m = StreamMeter::new(dialect, strip);
    let mut emitted = 0;
    for p in pieces {
        let mut out = Vec::new();
        m.feed(p, &mut out);
        emitted += out.len();
        black_box(&out);
    }
    let mut out = Vec::new();
    m.finish(&mut out);
    emitted += out.len();
    (m.usage(), m.finished(), emitted)
}

/// Baseline: split the same bytes into lines with memchr and touch each line.
fn memchr_lines(bytes: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = bytes;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        black_box(&rest[..i]);
        n += 1;
        rest = &rest[i + 1..];
    }
    n
}

fn bench_sse(c: &mut Criterion) {
    let (oa, oa_events) = openai_stream(200);
    let (an, an_events) = anthropic_stream(200);
    let oa_expect = Usage { input: 810, output: 200, cache_read: 1024, cache_write: 0 };
    let an_expect = Usage { input: 810, output: 200, cache_read: 1024, cache_write: 0 };
    // Sanity: every feeding pattern meters the same usage and ends the stream; strip mode drops
    // the usage chunk and every `"usage":null`.
    for pieces in [per_event(&oa), per_segment(&oa)] {
        assert_eq!(run_meter(Dialect::OpenAi, false, &pieces), (oa_expect, true, 0));
        let (u, fin, emitted) = run_meter(Dialect::OpenAi, true, &pieces);
        assert_eq!((u, fin), (oa_expect, true));
        let mut m = StreamMeter::new(Dialect::OpenAi, true);
        let mut out = Vec::new();
        for p in &pieces {
            m.feed(p, &mut out);
        }
        m.finish(&mut out);
        assert_eq!(out.len(), emitted);
        assert!(memchr::memmem::find(&out, b"\"usage\"").is_none(), "strip mode leaves no usage");
        assert!(out.ends_with(b"data: [DONE]\n\n"));
    }
    for pieces in [per_event(&an), per_segment(&an)] {
        assert_eq!(run_meter(Dialect::Anthropic, false, &pieces), (an_expect, true, 0));
    }
    assert_eq!(per_event(&oa).len() as u64, oa_events);
    assert_eq!(per_event(&an).len() as u64, an_events);

    dump([("openai.sse".to_string(), oa.as_slice()), ("anthropic.sse".to_string(), an.as_slice())]);

    let mut g = c.benchmark_group("sse");
    let cases: [(&str, Dialect, &[u8], u64); 2] =
        [("openai", Dialect::OpenAi, &oa, oa_events), ("anthropic", Dialect::Anthropic, &an, an_events)];
    for (name, dialect, bytes, events) in cases {
        g.throughput(Throughput::Elements(events));
        g.bench_with_input(BenchmarkId::new("baseline_memchr_lines", name), bytes, |b, bytes| {
            b.iter(|| memchr_lines(black_box(bytes)))
        });
        let modes: &[(&str, bool)] = if dialect == Dialect::OpenAi {
            &[("passthrough", false), ("strip", true)]
        } else {
            &[("passthrough", false)]
        };
        for &(mode, strip) in modes {
            for (split, pieces) in [("per_event", per_event(bytes)), ("1400B", per_segment(bytes))] {
                g.bench_with_input(BenchmarkId::new(format!("meter_{mode}_{split}"), name), &pieces, |b, pieces| {
                    b.iter(|| run_meter(dialect, strip, black_box(pieces)))
                });
            }
        }
    }
    g.finish();
}

/// With `HOT_PATH_DUMP=<dir>`, writes the generated inputs there (to look at them).
fn dump<'a>(files: impl IntoIterator<Item = (String, &'a [u8])>) {
    if let Some(dir) = std::env::var_os("HOT_PATH_DUMP") {
        for (name, bytes) in files {
            std::fs::write(std::path::Path::new(&dir).join(name), bytes).expect("dump input");
        }
    }
}

/// Diagnostic: the per-line steps `StreamMeter::on_data` takes for one OpenAI content chunk and
/// one Anthropic delta, to say where the per-event time goes. `naive_contains` is a copy of the
/// private `usage::contains` (`windows().any()`), next to the same test done with memmem.
fn bench_sse_parts(c: &mut Criterion) {
    fn data_lines(bytes: &[u8], starts: &[u8]) -> Vec<Vec<u8>> {
        bytes
            .split(|&b| b == b'\n')
            .filter_map(|l| l.strip_prefix(b"data: "))
            .filter(|d| d.starts_with(starts))
            .map(<[u8]>::to_vec)
            .collect()
    }
    fn naive_contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }
    let (oa, _) = openai_stream(200);
    let (an, _) = anthropic_stream(200);
    let oa_lines: Vec<Vec<u8>> =
        data_lines(&oa, b"{").into_iter().filter(|d| memchr::memmem::find(d, b"\"content\":").is_some()).collect();
    let an_lines = data_lines(&an, b"{\"type\":\"content_block_delta\"");
    assert_eq!((oa_lines.len(), an_lines.len()), (201, 200));

    let mut g = c.benchmark_group("sse_parts");
    g.throughput(Throughput::Elements(oa_lines.len() as u64));
    g.bench_function("openai/naive_contains_error", |b| {
        b.iter(|| black_box(&oa_lines).iter().filter(|d| naive_contains(d, b"\"error\":{")).count())
    });
    g.bench_function("openai/memmem_contains_error", |b| {
        b.iter(|| black_box(&oa_lines).iter().filter(|d| memchr::memmem::find(d, b"\"error\":{").is_some()).count())
    });
    // What counting content events (a cut stream's estimate, `usage::StreamTokens`) adds per chunk.
    assert!(oa_lines.iter().filter(|d| openai_chunk_has_content(d)).count() >= 200);
    g.bench_function("openai/chunk_has_content", |b| {
        b.iter(|| black_box(&oa_lines).iter().filter(|d| openai_chunk_has_content(d)).count())
    });
    g.bench_function("openai/sonic_get_usage", |b| {
        b.iter(|| black_box(&oa_lines).iter().filter(|d| sonic_rs::get(d.as_slice(), ["usage"]).is_ok()).count())
    });
    g.throughput(Throughput::Elements(an_lines.len() as u64));
    g.bench_function("anthropic/sonic_get_type", |b| {
        b.iter(|| black_box(&an_lines).iter().filter(|d| sonic_rs::get(d.as_slice(), ["type"]).is_ok()).count())
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

fn bench_request_id(c: &mut Criterion) {
    let ids = cheapmodel::proxy::request_id::RequestIds::new();
    let prefix = 0x5eed_u64;
    let counter = std::sync::atomic::AtomicU64::new(0);
    let mut g = c.benchmark_group("request_id");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_format", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("req_{:016x}{:016x}", black_box(prefix), n)
        })
    });
    g.bench_function("fresh", |b| b.iter(|| black_box(&ids).fresh()));
    g.finish();
}

/// The upstream request head of a JSON answer read whole (`proxy::whole`): the caller's head is
/// cloned (as Pingora's proxy clones it), stripped of hop-by-hop headers, and rewritten.
fn bench_upstream_head(c: &mut Criterion) {
    use cheapmodel::proxy::upstream::{rewrite_request, strip_hop_by_hop, BodySent};
    use pingora::http::RequestHeader;
    let yaml = r#"
server: { listen: ["127.0.0.1:1"] }
upstreams: { anthropic: { url: "http://127.0.0.1:9", dialect: anthropic, api_key_env: K } }
models: { claude-sonnet-4-5-20250929: { upstream: anthropic } }
keys: []
"#;
    let snapshot = cheapmodel::config::load_str(yaml, &|_| Some("sk-ant-bench".into())).expect("bench config").snapshot;
    let upstream = snapshot.model("claude-sonnet-4-5-20250929").expect("model").upstream.clone();
    // The head the OpenAI Python SDK sends (httpx), with its `Connection: keep-alive`.
    let mut caller = RequestHeader::build("POST", b"/v1/chat/completions", None).expect("head");
    for (name, value) in [
        ("host", "127.0.0.1:8080"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 2.8.1"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "2.8.1"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.11.2"),
        ("authorization", "Bearer cm_0123456789abcdef0123456789abcdef0123456789abcdef"),
        ("x-stainless-async", "false"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("content-length", "196"),
    ] {
        caller.append_header(name, value).expect("header");
    }
    let mut g = c.benchmark_group("upstream_head");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_clone", |b| b.iter(|| black_box(&caller).clone()));
    g.bench_function("clone_strip_hop_by_hop", |b| {
        b.iter(|| {
            let mut req = black_box(&caller).clone();
            strip_hop_by_hop(&mut req);
            req
        })
    });
    g.bench_function("clone_strip_rewrite_translated", |b| {
        b.iter(|| {
            let mut req = black_box(&caller).clone();
            strip_hop_by_hop(&mut req);
            let sent = BodySent { len: 240, decoded: false };
            rewrite_request(&mut req, &upstream, sent, "req_0123456789abcdef0123456789abcdef", true).expect("rewrite");
            req
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_auth, bench_peek, bench_sse, bench_sse_parts, bench_request_id, bench_upstream_head
}
criterion_main!(benches);
