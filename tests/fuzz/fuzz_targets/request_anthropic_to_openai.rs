//! Anthropic messages request body → OpenAI chat-completions request body.
//! Invariants: never panics; an `Ok` body is valid JSON.
#![no_main]

use cheapmodel::dialect::request::anthropic_to_openai;
use cheapmodel::dialect::RequestOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = RequestOptions {
        upstream_model: "m",
        default_max_tokens: 4096,
        strict: false,
        structured_outputs: true,
    };
    if let Ok(out) = anthropic_to_openai(data, &opts) {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out.body) {
            panic!(
                "Ok output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.body)
            );
        }
    }
});
