//! Non-streaming response bodies and upstream error bodies, both directions.
//! Invariants: never panics; an `Ok` translation and every `error_to_caller` body are valid JSON.
#![no_main]

use cheapmodel::dialect::response::{anthropic_to_openai, error_to_caller, openai_to_anthropic};
use cheapmodel::error::Dialect;
use libfuzzer_sys::fuzz_target;

fn json(what: &str, out: &[u8]) {
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(out) {
        panic!(
            "{what}: output is not JSON ({e}): {}",
            String::from_utf8_lossy(out)
        );
    }
}

fuzz_target!(|data: &[u8]| {
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
