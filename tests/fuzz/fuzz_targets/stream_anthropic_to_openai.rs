//! Anthropic SSE events → OpenAI SSE chunks (`AnthropicToOpenAi`, include_usage on).
//! Invariants: never panics; feeding the input in two pieces (cut chosen by the first byte)
//! gives exactly the output of feeding it whole; nothing is emitted after `finish`; every
//! emitted event's data is JSON or `[DONE]`.
#![no_main]

use cheapmodel::dialect::stream::AnthropicToOpenAi;
use libfuzzer_sys::fuzz_target;

#[path = "stream_common.rs"]
mod stream_common;

fuzz_target!(|data: &[u8]| {
    stream_common::check(data, || AnthropicToOpenAi::new("m", true, 0));
});
