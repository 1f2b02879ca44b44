//! Heap allocations per request of the gateway's own per-request work, counted exactly by a
//! counting global allocator (this test binary only), against a budget: the test fails when a
//! change makes a step allocate more. Counts are deterministic, unlike timings on a shared
//! machine, so the budget holds in CI. When a change lowers a count, lower its budget with it.
//!
//! What is counted, per request, through the library's public API (Pingora's own allocations on
//! the socket side are not in here; callgrind sees those, `loadtest/callgrind_ab.sh`):
//! - an OpenAI SDK request for a same-dialect model: plan the head (route, auth), plan the body
//!   (peek, usage injection), rewrite the upstream request header;
//! - the same request on an Anthropic model (the body is translated);
//! - reading usage and cost from the upstream's JSON answer;
//! - metering a 100-event OpenAI stream (per stream, not per event).
//!
//! Run: `cargo test --release --test alloc_budget -- --nocapture` prints every count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use cheapmodel::auth::key_digest;
use cheapmodel::error::Dialect;
use cheapmodel::plan::{self, Decision, Head};
use cheapmodel::proxy::upstream;
use cheapmodel::usage::{self, StreamMeter};

#[path = "common/sdk_request.rs"]
mod sdk_request;
use sdk_request::sdk_request;

struct Counting;

thread_local! {
    /// Allocations (and reallocations) made by this thread; each test runs on its own thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a thread-local counter
// (const-initialised, so it never allocates itself) is bumped on the way.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f`, and its result.
fn count<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

/// Fails when `got` is over `budget`; prints both either way.
fn hold(step: &str, got: u64, budget: u64) {
    println!("{step}: {got} allocations (budget {budget})");
    assert!(got <= budget, "{step}: {got} allocations, over its budget of {budget}");
}

const KEY: &str = "cm_alloc_budget_key_0123456789abcdef0123456789abcdef";

fn snapshot() -> cheapmodel::registry::Snapshot {
    let digest: String = key_digest(KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let yaml = format!(
        r#"
server: {{ listen: ["127.0.0.1:1"] }}
upstreams:
  openai: {{ url: "http://127.0.0.1:9", dialect: openai }}
  anthropic: {{ url: "http://127.0.0.1:9", dialect: anthropic }}
models:
  gpt-5.5: {{ upstream: openai, price: {{ input_per_mtok: 1.25, output_per_mtok: 10 }} }}
  claude-sonnet-4-5-20250929: {{ upstream: anthropic }}
keys:
  - {{ name: team-a, sha256: "{digest}" }}
"#
    );
    cheapmodel::config::load_str(&yaml, &|_| None).expect("test config").snapshot
}

fn chat_body(model: &str, stream: bool) -> Bytes {
    Bytes::from(format!(
        r#"{{"messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"What is the weather in Paris today? Answer in one sentence."}}],"model":"{model}","stream":{stream},"max_completion_tokens":256,"temperature":0.2}}"#
    ))
}

/// Allocations of plan_head, plan_body and the upstream header rewrite of one request, and
/// whether it was translated.
fn plan_and_rewrite(snapshot: &cheapmodel::registry::Snapshot, body: &Bytes) -> ([u64; 3], bool) {
    let mut req = sdk_request(b"/v1/chat/completions", body.len(), ("authorization", format!("Bearer {KEY}")));
    let (head, planned) = count(|| plan::plan_head(&req, plan::route(&req).route, snapshot));
    let Head::NeedsBody(route, caller, _) = planned else { panic!("needs a body") };
    let (body_n, decision) = count(|| plan::plan_body(&route, &caller, snapshot, body));
    let Decision::Forward(forward) = decision else { panic!("forward") };
    let translated = matches!(forward.mode, plan::Mode::Translate { .. });
    let (rewrite, done) = count(|| {
        let sent = upstream::BodySent { len: forward.body.len(), decoded: false };
        upstream::rewrite_request(&mut req, &forward.model.upstream, sent, "req_0123", translated)
    });
    done.expect("rewrite");
    ([head, body_n, rewrite], translated)
}

/// Holds each step's budget: `[plan_head, plan_body, rewrite_request]`.
fn hold_steps(what: &str, got: [u64; 3], budget: [u64; 3]) {
    for ((step, got), budget) in ["plan_head", "plan_body", "rewrite_request"].iter().zip(got).zip(budget) {
        hold(&format!("{what}: {step}"), got, budget);
    }
}

// Where the counts come from (2026-12-06): plan_body allocates nothing for a same-dialect body
// (`peek` walks the members itself; sonic-rs's object iterator, about one allocation per member,
// is gone), and two for a stream that gets usage injected: the spliced body and the rewritten
// `stream_options`;
// rewrite_request's are the new URI, and each header value or non-standard name it inserts
// (Pingora's `insert_header` copies both).
#[test]
fn a_same_dialect_request_holds_its_allocation_budget() {
    let snapshot = snapshot();
    for (stream, budget) in [(false, [0, 0, 7]), (true, [0, 2, 6])] {
        let body = chat_body("gpt-5.5", stream);
        let (got, translated) = plan_and_rewrite(&snapshot, &body);
        assert!(!translated);
        hold_steps(&format!("same dialect, stream={stream}"), got, budget);
    }
}

#[test]
fn a_translated_request_holds_its_allocation_budget() {
    let snapshot = snapshot();
    let body = chat_body("claude-sonnet-4-5-20250929", false);
    let (got, translated) = plan_and_rewrite(&snapshot, &body);
    assert!(translated);
    hold_steps("translated (OpenAI caller, Anthropic model)", got, [0, 4, 10]);
}

#[test]
fn reading_usage_and_cost_of_an_answer_holds_its_allocation_budget() {
    let snapshot = snapshot();
    let model = snapshot.models.get("gpt-5.5").expect("model").clone();
    let answer = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-5.5","choices":[{"index":0,"message":{"role":"assistant","content":"Sunny, 21 C."},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":7,"total_tokens":38,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    let (n, cost) = count(|| {
        let u = usage::from_json_body(Dialect::OpenAi, answer).expect("usage");
        cheapmodel::cost::of_request(&u, &model.price)
    });
    assert!(cost.0 > 0);
    hold("usage + cost of a JSON answer", n, 0);
}

#[test]
fn metering_a_stream_holds_its_allocation_budget() {
    let mut stream = String::new();
    for i in 0..100 {
        stream.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    stream.push_str("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":31,\"completion_tokens\":100,\"total_tokens\":131}}\n\ndata: [DONE]\n\n");
    let bytes = stream.as_bytes();
    for (strip, budget) in [(false, 5), (true, 7)] {
        let (n, meter) = count(|| {
            let mut meter = StreamMeter::new(Dialect::OpenAi, strip);
            let mut out = Vec::with_capacity(bytes.len());
            // As Pingora hands it over: pieces that split events anywhere.
            for piece in bytes.chunks(1400) {
                meter.feed(piece, &mut out);
            }
            meter.finish(&mut out);
            meter
        });
        assert!(meter.finished() && meter.usage().output == 100);
        hold(&format!("metering a 100-event stream, strip={strip}"), n, budget);
    }
}
