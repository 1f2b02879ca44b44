//! OpenAI SSE chunks → Anthropic SSE events (`OpenAiToAnthropic`).
//! Invariants: never panics; feeding the input in two pieces (cut chosen by the first byte)
//! gives exactly the output of feeding it whole; nothing is emitted after `finish`; every
//! emitted event's data is JSON.
#![no_main]

use cheapmodel::dialect::stream::OpenAiToAnthropic;
use libfuzzer_sys::fuzz_target;

#[path = "stream_common.rs"]
mod stream_common;

fuzz_target!(|data: &[u8]| {
    stream_common::check(data, || OpenAiToAnthropic::new("m"));
});
