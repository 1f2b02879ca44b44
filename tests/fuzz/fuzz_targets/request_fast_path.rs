//! The single-pass request transcoder against the typed translator, both directions.
//! Invariants: never panics; whenever the fast path takes a body, the typed translator accepts it
//! too and both outputs are the same JSON (tool-call arguments compared parsed).
#![no_main]

use cheapmodel::dialect::request::differential::{check_fast_path, Direction};
use cheapmodel::dialect::RequestOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = RequestOptions {
        upstream_model: "m",
        default_max_tokens: 4096,
        strict: false,
        structured_outputs: true,
    };
    for dir in [Direction::OpenAiToAnthropic, Direction::AnthropicToOpenAi] {
        if let Err(e) = check_fast_path(dir, data, &opts) {
            panic!("{e}");
        }
    }
});
