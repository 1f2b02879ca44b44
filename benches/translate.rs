//! Dialect translation cost: a 10 KB request each way, and SSE stream events each way.
//!
//! Targets (issue "Dialect translation"): a 10 KB request under 20 µs; a stream event under 2 µs on
//! average. Baseline in the same run: `serde_json::from_slice::<Value>` of the same request (the
//! parse alone), so figures can be read as ratios on this shared machine.
//!
//! Run: `cargo bench --bench translate`. Results: see benches/README.md.

use std::hint::black_box;
use std::time::Duration;

use cheapmodel::dialect::stream::{AnthropicToOpenAi, OpenAiToAnthropic, StreamTranslator};
use cheapmodel::dialect::{request, RequestOptions};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};

#[path = "common/agent_body.rs"]
mod agent_body;

/// An OpenAI chat request of about `size` bytes: system prompt, turns, a tool call round trip, tools.
fn openai_request(size: usize) -> Vec<u8> {
    let mut messages = vec![json!({"role": "system", "content": "You are a careful assistant. Answer briefly."})];
    let mut i = 0;
    loop {
        messages.push(json!({"role": "user", "content": format!("Question {i}: what is the weather in \"Paris\" today? Please answer in {{json}}.")}));
        messages.push(
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{i}"), "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\",\"unit\":\"c\"}"}}]}),
        );
        messages.push(
            json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": "{\"temp\":21,\"sky\":\"clear\"}"}),
        );
        messages.push(json!({"role": "assistant", "content": format!("It is 21 degrees and clear in Paris ({i}).")}));
        i += 1;
        // The conversation ends with the user's turn, as a request to answer does.
        let mut turns = messages.clone();
        turns.push(json!({"role": "user", "content": "Thanks. And tomorrow?"}));
        let body = json!({"model": "claude-sonnet-4-5-20250929", "messages": turns, "max_tokens": 1024, "temperature": 0.5,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["location"]}}}],
            "stream": true});
        let bytes = serde_json::to_vec(&body).expect("json");
        if bytes.len() >= size {
            return bytes;
        }
    }
}

fn anthropic_request(size: usize) -> Vec<u8> {
    let opts = RequestOptions {
        upstream_model: "claude-sonnet-4-5-20250929",
        default_max_tokens: 4096,
        strict: false,
        structured_outputs: true,
    };
    request::openai_to_anthropic(&openai_request(size), &opts).expect("translates").body
}

/// One group's benches: a serde_json parse of the OpenAI body (the same-run baseline) and both
/// translation directions.
fn request_group(g: &mut BenchmarkGroup<'_, WallTime>, oa: &[u8], an: &[u8], opts: &RequestOptions<'_>) {
    g.throughput(Throughput::Bytes(oa.len() as u64));
    g.bench_function("baseline_parse_only", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(oa)).expect("json"))
    });
    g.bench_function("openai_to_anthropic", |b| {
        b.iter(|| request::openai_to_anthropic(black_box(oa), opts).expect("ok"))
    });
    g.bench_function("anthropic_to_openai", |b| {
        b.iter(|| request::anthropic_to_openai(black_box(an), opts).expect("ok"))
    });
}

fn bench_requests(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_10kb");
    g.sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let oa = openai_request(10 * 1024);
    let an = anthropic_request(10 * 1024);
    let opts = RequestOptions {
        upstream_model: "upstream-model",
        default_max_tokens: 4096,
        strict: false,
        structured_outputs: true,
    };
    request_group(&mut g, &oa, &an, &opts);
    g.finish();
}

/// A 1 MiB base64 PDF and a question, each way: the strings are copied, never unescaped.
fn bench_documents(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_pdf_1mib");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let data: String = (0..1024 * 1024)
        .map(|i| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64]))
        .collect();
    let oa = serde_json::to_vec(&json!({"model": "claude-sonnet-4-5-20250929", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{data}"), "filename": "report.pdf"}},
        {"type": "text", "text": "Summarize this report."}]}]}))
    .expect("json");
    let opts = RequestOptions {
        upstream_model: "upstream-model",
        default_max_tokens: 4096,
        strict: false,
        structured_outputs: true,
    };
    let an = request::openai_to_anthropic(&oa, &opts).expect("translates").body;
    request_group(&mut g, &oa, &an, &opts);
    g.finish();
}

fn openai_stream(events: usize) -> Vec<u8> {
    let mut s = String::new();
    let head = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-5.5","choices":[{"index":0,"delta":"#;
    s.push_str(&format!("data: {head}{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}\n\n"));
    for i in 0..events {
        s.push_str(&format!("data: {head}{{\"content\":\"token {i} \"}},\"finish_reason\":null}}]}}\n\n"));
    }
    s.push_str(&format!("data: {head}{{}},\"finish_reason\":\"stop\"}}]}}\n\n"));
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5.5\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":200,\"total_tokens\":210}}\n\n");
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

fn anthropic_stream(events: usize) -> Vec<u8> {
    let mut s = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..events {
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"token {i} \"}}}}\n\n"));
    }
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":200}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s.into_bytes()
}

/// Splits a stream into its events (one network read per event, as providers flush them).
fn events_of(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(p) = memchr::memmem::find(&stream[start..], b"\n\n") {
        out.push(&stream[start..start + p + 2]);
        start += p + 2;
    }
    out
}

fn bench_streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream_event");
    g.sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let oa = openai_stream(200);
    let an = anthropic_stream(200);
    for (name, stream) in [("openai_to_anthropic", &oa), ("anthropic_to_openai", &an)] {
        let events = events_of(stream);
        g.throughput(Throughput::Elements(events.len() as u64));
        g.bench_with_input(BenchmarkId::new(name, events.len()), &events, |b, events| {
            b.iter(|| {
                let mut out = Vec::with_capacity(64 * 1024);
                let mut t: Box<dyn StreamTranslator> = if name == "openai_to_anthropic" {
                    Box::new(OpenAiToAnthropic::new("caller"))
                } else {
                    Box::new(AnthropicToOpenAi::new("caller", true, 1))
                };
                for e in events.iter() {
                    t.feed(e, &mut out);
                }
                t.finish(&mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// A request translator, as the benches call it.
type Translate =
    fn(&[u8], &RequestOptions<'_>) -> Result<cheapmodel::dialect::Translated, cheapmodel::dialect::TranslateError>;

/// One recorded-size request translated one way (`name`, by `translate`, for `upstream_model`),
/// against a serde_json parse of the same bytes, in the group `group`.
fn one_way(c: &mut Criterion, group: &str, body: &[u8], upstream_model: &str, name: &str, translate: Translate) {
    let mut g = c.benchmark_group(group);
    g.sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let opts = RequestOptions { upstream_model, default_max_tokens: 4096, strict: false, structured_outputs: false };
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("baseline_parse_only", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(body)).expect("json"))
    });
    g.bench_function(name, |b| b.iter(|| translate(black_box(body), &opts).expect("ok")));
    g.finish();
}

/// The Claude Code request recorded in `tests/fixtures/claude_code/` (Anthropic caller, gpt-5.5:
/// adaptive thinking, effort, a mid-conversation system turn, 12 tool schemas). Target (issue
/// "Real clients"): at most 0.35x the parse.
fn bench_claude_code(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/claude_code/messages_request.json");
    let an = std::fs::read(path).expect("recorded Claude Code request");
    one_way(c, "request_claude_code", &an, "gpt-5.5", "anthropic_to_openai", request::anthropic_to_openai);
}

/// A coding agent's ~85 KB OpenAI request (`common/agent_body.rs`, the body `loadtest/bodies.sh`
/// sends: tool results of file text with an escape on every line) for an Anthropic model.
fn bench_agent(c: &mut Criterion) {
    let oa = agent_body::agent_request("claude-sonnet-4-5-20250929", 85 * 1024);
    let model = "claude-sonnet-4-5-20250929";
    one_way(c, "request_agent_85kb", &oa, model, "openai_to_anthropic", request::openai_to_anthropic);
}

criterion_group!(benches, bench_requests, bench_documents, bench_streams, bench_claude_code, bench_agent);
criterion_main!(benches);
