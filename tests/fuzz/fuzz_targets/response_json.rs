//! Non-streaming response bodies and upstream error bodies, both directions, and the usage the
//! gateway bills from them.
//! Invariants: never panics; an `Ok` translation and every `error_to_caller` body are valid JSON;
//! on a valid JSON body with one top-level `usage` object (no escapes), `usage::from_json_body`
//! reads exactly what serde_json reads there, whenever serde_json reads every count as a u64.
#![no_main]

use cheapmodel::dialect::response::{anthropic_to_openai, error_to_caller, openai_to_anthropic};
use cheapmodel::error::Dialect;
use cheapmodel::usage::{from_json_body, Usage};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// A member as a count: `Some(None)` when absent or null, `None` when serde_json does not read it
/// as a u64 (then the gateway's reading is not compared).
fn count(m: &Map<String, Value>, key: &str) -> Option<Option<u64>> {
    match m.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_u64().map(Some),
    }
}

/// What serde_json reads as the usage of a body, in `Usage`'s convention.
fn serde_usage(dialect: Dialect, u: &Map<String, Value>) -> Option<Usage> {
    match dialect {
        Dialect::OpenAi => {
            let cached = match u.get("prompt_tokens_details") {
                None | Some(Value::Null) => None,
                Some(Value::Object(d)) => count(d, "cached_tokens")?,
                Some(_) => return None,
            }
            .unwrap_or(0);
            Some(Usage {
                input: count(u, "prompt_tokens")?.unwrap_or(0).saturating_sub(cached),
                output: count(u, "completion_tokens")?.unwrap_or(0),
                cache_read: cached,
                cache_write: 0,
            })
        }
        Dialect::Anthropic => Some(Usage {
            input: count(u, "input_tokens")?.unwrap_or(0),
            output: count(u, "output_tokens")?.unwrap_or(0),
            cache_read: count(u, "cache_read_input_tokens")?.unwrap_or(0),
            cache_write: count(u, "cache_creation_input_tokens")?.unwrap_or(0),
        }),
    }
}

fn check_usage(data: &[u8]) {
    let got = [from_json_body(Dialect::OpenAi, data), from_json_body(Dialect::Anthropic, data)];
    // Escaped keys and repeated `usage` members are read as written, not decoded: not compared.
    if data.contains(&b'\\') || data.windows(7).filter(|w| *w == b"\"usage\"").count() != 1 {
        return;
    }
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(data) else { return };
    let Some(Value::Object(u)) = top.get("usage") else { return };
    for (dialect, got) in [Dialect::OpenAi, Dialect::Anthropic].into_iter().zip(got) {
        if let Some(want) = serde_usage(dialect, u) {
            assert_eq!(got, Some(want), "{dialect:?} usage of {}", String::from_utf8_lossy(data));
        }
    }
}

fn json(what: &str, out: &[u8]) {
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(out) {
        panic!(
            "{what}: output is not JSON ({e}): {}",
            String::from_utf8_lossy(out)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check_usage(data);
    if let Ok(out) = anthropic_to_openai(data, "m", 0) {
        json("anthropic_to_openai", &out);
    }
    if let Ok(out) = openai_to_anthropic(data, "m") {
        json("openai_to_anthropic", &out);
    }
    // The status comes from the first two bytes when there are any (any u16, not only 4xx/5xx).
    let status = match data {
        [a, b, ..] => u16::from_le_bytes([*a, *b]),
        _ => 500,
    };
    for (up, caller) in [
        (Dialect::Anthropic, Dialect::OpenAi),
        (Dialect::OpenAi, Dialect::Anthropic),
    ] {
        json(
            "error_to_caller",
            &error_to_caller(status, data, up, caller),
        );
    }
});
