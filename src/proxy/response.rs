//! The one response path: what the gateway does with an upstream's response body, chosen once
//! when the upstream's head arrives (`ResponseBody::for_forward`, `for_download`) and then fed
//! chunk by chunk. Each kind meters the usage it carries; the translating kinds also rewrite it
//! into the caller's dialect. The proxy hooks hold one `ResponseBody` and only hand it bytes:
//! the body it passes on, the usage it bills (`usage`), the head change it needs (`framing`) and
//! the end of a stream cut short (`cut_off`) all come from here.
//!
//! An enum rather than trait objects: choosing a kind allocates nothing, and each hook's `match`
//! is checked for every kind.
//!
//! Pure: no Pingora, no IO, no metrics. Imports: `dialect` (translators), `usage` (the meters),
//! `error`, `plan` (the forward plan's mode), `registry` (the model), `tasks` (the gateway's
//! shape of an upstream task error).

use std::sync::Arc;

use bytes::Bytes;

use crate::dialect::{self, stream::StreamTranslator};
use crate::error::{Dialect, GatewayError};
use crate::plan::{ForwardPlan, Mode};
use crate::redact::Redactor;
use crate::registry::Model;
use crate::usage::{self, StreamMeter, StreamTokens, Usage};

/// The largest JSON response body kept for reading usage (bigger ones pass unmetered).
pub const MAX_METERED_JSON: usize = 16 * 1024 * 1024;

/// What happens to one upstream response body.
#[derive(Debug, Default)]
pub enum ResponseBody {
    /// Nothing to read: bytes pass as they come (a local answer, a media download).
    #[default]
    Pass,
    /// Same-dialect JSON: passes as it comes; kept (refcounted, not copied) up to
    /// `MAX_METERED_JSON` so that its usage is read once, at the end.
    Json { kept: Kept, dialect: Dialect },
    /// Same-dialect SSE stream: usage read as it passes. In strip mode (the gateway asked for
    /// usage the caller did not) the stream is rewritten without it.
    Stream(Box<StreamMeter>),
    /// Translated JSON, an answer or an error (even one the upstream sent as a stream): held whole
    /// and translated at its end.
    /// `untranslatable`: the upstream's 2xx body could not be translated: the caller gets the
    /// gateway's error body instead, with a 502 when the answer is read whole (`proxy::whole`),
    /// under the 200 already sent when it is not (a stream request answered with JSON).
    TranslateJson { kept: Kept, model: Arc<Model>, caller: Dialect, status: u16, created: u64, untranslatable: bool },
    /// Translated SSE stream: the translator reads the usage as it translates.
    TranslateStream(Box<dyn StreamTranslator + Sync>),
    /// A same-dialect error answer (not 2xx) from an upstream with a key: passed on with that key
    /// masked wherever the body holds it (`redact`), same length. Errors are not billed: no usage.
    Redacted(Box<Redactor>),
    /// A media download the upstream refused: its error is held (capped) and replaced at its end
    /// by the gateway's own.
    DownloadError { kept: Kept, status: u16, key: Box<[u8]> },
    /// The upstream's answer is the gateway's error instead (`error`; its body in the caller's
    /// dialect goes out at the end, once): the upstream's own body is dropped unread.
    Replaced { error: GatewayError, body: Option<Bytes> },
}

/// Body chunks kept for reading at the end.
#[derive(Debug, Default)]
pub struct Kept {
    chunks: Vec<Bytes>,
    /// Bytes seen, kept or not.
    len: usize,
}

impl Kept {
    /// Counts `chunk`, and keeps it while the total stays within `cap`.
    fn push(&mut self, chunk: &Bytes, cap: usize) {
        self.len += chunk.len();
        if self.len <= cap {
            self.chunks.push(chunk.clone());
        }
    }

    /// Everything seen, if it was all kept.
    fn whole(&self) -> Option<Bytes> {
        match self.chunks.as_slice() {
            _ if self.chunks.iter().map(Bytes::len).sum::<usize>() != self.len => None,
            [one] => Some(one.clone()),
            chunks => Some(Bytes::from(chunks.concat())),
        }
    }
}

/// How the upstream's response head must change for the body the caller will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The body passes unchanged.
    AsIs,
    /// The body is rewritten as it passes: its length is no longer known.
    LengthUnknown,
    /// The body is replaced: length unknown, re-chunked; `json` when it becomes a JSON document.
    Rewritten { json: bool },
}

impl ResponseBody {
    /// The body of a forwarded request's answer: `status` and whether it is an SSE stream come
    /// from the upstream's head. `now` (Unix seconds) stamps an answer translated into OpenAI's dialect.
    /// `request_id` goes into the error bodies of the dialects that carry one (Anthropic's).
    pub fn for_forward(forward: &ForwardPlan, status: u16, sse: bool, now: u64, request_id: &str) -> Self {
        let upstream = forward.model.upstream.dialect;
        let success = (200..300).contains(&status);
        // A same-dialect error passes with the upstream's key masked, should it quote it.
        let redactor = if success { None } else { Redactor::new(forward.model.upstream.key()) };
        if let Some(error) = GatewayError::for_upstream_status(status) {
            let caller = match forward.mode {
                Mode::Translate { caller, .. } => caller,
                Mode::Passthrough { .. } => upstream,
            };
            return ResponseBody::Replaced { body: Some(error.body_with_id(caller, request_id)), error };
        }
        match forward.mode {
            Mode::Translate { caller_wants_usage, .. } if sse && success => {
                let name = &forward.model.name;
                ResponseBody::TranslateStream(match upstream {
                    Dialect::Anthropic => {
                        Box::new(dialect::stream::AnthropicToOpenAi::new(name, caller_wants_usage, now))
                    }
                    Dialect::OpenAi => Box::new(dialect::stream::OpenAiToAnthropic::new(name)),
                })
            }
            Mode::Translate { caller, .. } => ResponseBody::TranslateJson {
                kept: Kept::default(),
                model: forward.model.clone(),
                caller,
                status,
                created: now,
                untranslatable: false,
            },
            Mode::Passthrough { .. } if redactor.is_some() => {
                ResponseBody::Redacted(Box::new(redactor.expect("matched as Some")))
            }
            Mode::Passthrough { injected_usage } if sse => {
                ResponseBody::Stream(Box::new(StreamMeter::new(upstream, injected_usage)))
            }
            Mode::Passthrough { .. } => ResponseBody::Json { kept: Kept::default(), dialect: upstream },
        }
    }

    /// The body of a task's media download: relayed as it comes, unless the upstream refused.
    /// `key`: the upstream's own, masked in the error it may answer (`redact`).
    pub fn for_download(status: u16, key: &[u8]) -> Self {
        if let Some(error) = GatewayError::for_upstream_status(status) {
            // Task answers are in the OpenAI shape, whatever the caller.
            return ResponseBody::Replaced { body: Some(error.body(Dialect::OpenAi)), error };
        }
        if (200..300).contains(&status) {
            ResponseBody::Pass
        } else {
            ResponseBody::DownloadError { kept: Kept::default(), status, key: key.into() }
        }
    }

    /// The head change this body needs.
    pub fn framing(&self) -> Framing {
        match self {
            ResponseBody::Pass | ResponseBody::Json { .. } | ResponseBody::Redacted(_) => Framing::AsIs,
            ResponseBody::Stream(meter) if meter.rewrites() => Framing::LengthUnknown,
            ResponseBody::Stream(_) => Framing::AsIs,
            ResponseBody::TranslateStream(_) => Framing::Rewritten { json: false },
            ResponseBody::TranslateJson { .. } | ResponseBody::DownloadError { .. } | ResponseBody::Replaced { .. } => {
                Framing::Rewritten { json: true }
            }
        }
    }

    /// One chunk of the upstream body (`None`: no bytes, as Pingora hands them), replaced in place
    /// by what the caller gets; `end` on the last call. `request_id` goes into a translated error
    /// body, where the caller's dialect carries one.
    pub fn feed(&mut self, body: &mut Option<Bytes>, end: bool, request_id: &str) {
        match self {
            ResponseBody::Pass => {}
            ResponseBody::Json { kept, .. } => {
                if let Some(b) = body {
                    kept.push(b, MAX_METERED_JSON);
                }
            }
            ResponseBody::TranslateJson { kept, model, caller, status, created, untranslatable } => {
                // Held whole: a translator needs the complete document.
                if let Some(b) = body.take() {
                    kept.push(&b, usize::MAX);
                }
                if end {
                    let mut whole = kept.whole().unwrap_or_default();
                    if !(200..300).contains(status) {
                        whole = crate::redact::bytes(whole, model.upstream.key());
                    }
                    let translated = translate_json(model, *caller, *status, *created, &whole, request_id);
                    *untranslatable = translated.is_err();
                    *body = Some(Bytes::from(translated.unwrap_or_else(|error_body| error_body)));
                    // Kept as one chunk so `usage` reads it without joining the chunks again.
                    kept.chunks = vec![whole];
                }
            }
            ResponseBody::DownloadError { kept, status, key } => {
                if let Some(b) = body.take() {
                    kept.push(&b, MAX_METERED_JSON);
                }
                if end {
                    let held = crate::redact::bytes(Bytes::from(kept.chunks.concat()), key);
                    *body = Some(crate::tasks::upstream_error(*status, &held).body);
                }
            }
            ResponseBody::TranslateStream(translator) => {
                let mut out = Vec::new();
                if let Some(b) = body.as_ref() {
                    translator.feed(b, &mut out);
                }
                if end {
                    translator.finish(&mut out);
                }
                *body = (!out.is_empty()).then(|| Bytes::from(out));
            }
            ResponseBody::Stream(meter) => feed_stream(meter, body, end),
            ResponseBody::Redacted(redactor) => {
                let mut out = body.take().map_or_else(Vec::new, |b| redactor.feed(&b));
                if end {
                    out.extend(redactor.finish());
                }
                *body = (!out.is_empty()).then(|| Bytes::from(out));
            }
            ResponseBody::Replaced { body: ours, .. } => *body = if end { ours.take() } else { None },
        }
    }

    /// The gateway's error that replaces the upstream's answer, if it does (`Replaced`): its status
    /// goes in the head.
    pub fn replacing(&self) -> Option<&GatewayError> {
        match self {
            ResponseBody::Replaced { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The tokens the upstream reported, so far: what the request is billed.
    pub fn usage(&self) -> Usage {
        let (kept, dialect) = match self {
            ResponseBody::Pass
            | ResponseBody::Redacted(_)
            | ResponseBody::DownloadError { .. }
            | ResponseBody::Replaced { .. } => return Usage::default(),
            ResponseBody::Stream(meter) => return meter.usage(),
            ResponseBody::TranslateStream(translator) => return translator.tokens().reported,
            ResponseBody::Json { kept, dialect } => (kept, *dialect),
            ResponseBody::TranslateJson { kept, model, .. } => (kept, model.upstream.dialect),
        };
        // Too large to have been kept whole: unmetered.
        kept.whole().and_then(|whole| usage::from_json_body(dialect, &whole)).unwrap_or_default()
    }

    /// A stream's token report, for billing one cut short (`StreamTokens::needs_estimate`); `None`
    /// when the body is not a stream.
    pub fn stream_tokens(&self) -> Option<StreamTokens> {
        match self {
            ResponseBody::Stream(meter) => Some(meter.tokens()),
            ResponseBody::TranslateStream(translator) => Some(translator.tokens()),
            _ => None,
        }
    }

    /// The upstream's 2xx JSON could not be translated (`TranslateJson`).
    pub fn untranslatable(&self) -> bool {
        matches!(self, ResponseBody::TranslateJson { untranslatable: true, .. })
    }

    /// The upstream leg failed after the caller's stream began: the bytes that end that stream in
    /// the caller's dialect, once (`None` when it had ended, or is not a stream).
    pub fn cut_off(&mut self, err: &GatewayError, caller: Dialect) -> Option<Bytes> {
        match self {
            ResponseBody::Stream(meter) if !meter.finished() => {
                meter.mark_finished();
                Some(err.stream_event(caller))
            }
            ResponseBody::TranslateStream(translator) if !translator.done() => {
                // The translator closes what it opened and ends with its own error event.
                let mut out = Vec::new();
                translator.finish(&mut out);
                Some(Bytes::from(out))
            }
            _ => None,
        }
    }
}

/// A same-dialect stream's chunk: metered; rewritten only in strip mode; and, if the upstream
/// ended without finishing its stream, followed by an error event (never a faked success).
fn feed_stream(meter: &mut StreamMeter, body: &mut Option<Bytes>, end: bool) {
    let mut out = Vec::new();
    if let Some(b) = body.as_ref() {
        meter.feed(b, &mut out);
    }
    if end {
        meter.finish(&mut out);
        if !meter.finished() {
            out.extend_from_slice(&GatewayError::UpstreamUnavailable.stream_event(meter.dialect()));
            meter.mark_finished();
        }
    }
    if meter.rewrites() || end && !out.is_empty() {
        if !meter.rewrites() {
            if let Some(b) = body.as_ref() {
                let mut joined = Vec::with_capacity(b.len() + out.len());
                joined.extend_from_slice(b);
                joined.extend_from_slice(&out);
                out = joined;
            }
        }
        *body = (!out.is_empty()).then(|| Bytes::from(out));
    }
}

/// Translates a complete upstream JSON body (answer or error) into the caller's dialect; `Err`
/// holds the error body sent instead of a 2xx answer that cannot be translated.
fn translate_json(
    model: &Model,
    caller: Dialect,
    status: u16,
    created: u64,
    body: &[u8],
    request_id: &str,
) -> Result<Vec<u8>, Vec<u8>> {
    let upstream = model.upstream.dialect;
    if !(200..300).contains(&status) {
        return Ok(dialect::response::error_to_caller(status, body, upstream, caller, request_id));
    }
    let translated = match upstream {
        Dialect::Anthropic => dialect::response::anthropic_to_openai(body, &model.name, created),
        Dialect::OpenAi => dialect::response::openai_to_anthropic(body, &model.name),
    };
    // A body that cannot be translated becomes the gateway's error body (`untranslatable`).
    translated.map_err(|e| {
        log::warn!("untranslatable upstream response for {}: {}", model.name, e.message);
        GatewayError::UpstreamUnavailable.body_with_id(caller, request_id).to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(model: &str, mode: Mode) -> ForwardPlan {
        let yaml = r#"
server: { listen: ["127.0.0.1:1"] }
upstreams:
  openai: { url: "http://127.0.0.1:9", dialect: openai }
  anthropic: { url: "http://127.0.0.1:9", dialect: anthropic }
models:
  gpt-5.5: { upstream: openai }
  claude-sonnet-4-5-20250929: { upstream: anthropic }
keys: []
"#;
        let snapshot = crate::config::load_str(yaml, &|_| None).expect("test config").snapshot;
        ForwardPlan {
            model: snapshot.model(model).expect("model").clone(),
            body: Bytes::new(),
            stream: false,
            mode,
            dropped: Vec::new(),
            max_tokens: None,
            purpose: crate::plan::Purpose::Generate,
        }
    }

    const PASS: Mode = Mode::Passthrough { injected_usage: false };
    const STRIP: Mode = Mode::Passthrough { injected_usage: true };
    const TO_OPENAI: Mode =
        Mode::Translate { caller: Dialect::OpenAi, upstream: Dialect::Anthropic, caller_wants_usage: true };
    const TO_ANTHROPIC: Mode =
        Mode::Translate { caller: Dialect::Anthropic, upstream: Dialect::OpenAi, caller_wants_usage: true };

    /// Feeds `chunks` as Pingora would (the last one with `end`), returning what the caller got.
    fn run(body: &mut ResponseBody, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut b = Some(Bytes::copy_from_slice(chunk));
            body.feed(&mut b, i + 1 == chunks.len(), "req_test");
            out.extend_from_slice(b.as_deref().unwrap_or_default());
        }
        out
    }

    const OPENAI_ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt-5.5","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":4}}}"#;
    const ANTHROPIC_ANSWER: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":7,"output_tokens":3}}"#;

    #[test]
    fn each_mode_status_and_content_type_gets_its_kind_and_head() {
        let gpt = |mode| plan("gpt-5.5", mode);
        let claude = |mode| plan("claude-sonnet-4-5-20250929", mode);
        let cases = [
            (ResponseBody::for_forward(&gpt(PASS), 200, false, 0, "req_test"), "Json", Framing::AsIs),
            (ResponseBody::for_forward(&gpt(PASS), 200, true, 0, "req_test"), "Stream", Framing::AsIs),
            (ResponseBody::for_forward(&gpt(STRIP), 200, true, 0, "req_test"), "Stream", Framing::LengthUnknown),
            // Injected usage on a JSON answer changes nothing in the body.
            (ResponseBody::for_forward(&gpt(STRIP), 200, false, 0, "req_test"), "Json", Framing::AsIs),
            (
                ResponseBody::for_forward(&claude(TO_OPENAI), 200, true, 0, "req_test"),
                "TranslateStream",
                Framing::Rewritten { json: false },
            ),
            (
                ResponseBody::for_forward(&gpt(TO_ANTHROPIC), 200, false, 0, "req_test"),
                "TranslateJson",
                Framing::Rewritten { json: true },
            ),
            // An error sent as a stream is still one error: translated whole, as JSON.
            (
                ResponseBody::for_forward(&gpt(TO_ANTHROPIC), 429, true, 0, "req_test"),
                "TranslateJson",
                Framing::Rewritten { json: true },
            ),
            (ResponseBody::for_download(200, b""), "Pass", Framing::AsIs),
            (ResponseBody::for_download(404, b""), "DownloadError", Framing::Rewritten { json: true }),
        ];
        for (i, (body, kind, framing)) in cases.iter().enumerate() {
            let name = format!("{body:?}");
            assert!(name.starts_with(kind), "case {i}: {name}");
            assert_eq!(body.framing(), *framing, "case {i}");
        }
    }

    #[test]
    fn same_dialect_json_passes_untouched_and_is_metered_once_at_its_end() {
        let mut body = ResponseBody::for_forward(&plan("gpt-5.5", PASS), 200, false, 0, "req_test");
        let (a, b) = OPENAI_ANSWER.as_bytes().split_at(70);
        assert_eq!(run(&mut body, &[a, b]), OPENAI_ANSWER.as_bytes());
        // OpenAI's prompt_tokens includes the cached ones.
        assert_eq!(body.usage(), Usage { input: 7, output: 3, cache_read: 4, cache_write: 0 });
    }

    #[test]
    fn a_body_too_large_to_keep_is_unmetered_not_half_read() {
        let mut kept = Kept::default();
        kept.push(&Bytes::from_static(b"{\"usage\":"), 11);
        assert!(kept.whole().is_some());
        kept.push(&Bytes::from_static(b"{}}"), 11);
        assert_eq!(kept.whole(), None, "a body past the cap must not be read as if whole");
    }

    #[test]
    fn translated_json_is_held_then_sent_whole_in_the_callers_dialect() {
        let mut body = ResponseBody::for_forward(&plan("gpt-5.5", TO_ANTHROPIC), 200, false, 0, "req_test");
        let (a, b) = OPENAI_ANSWER.as_bytes().split_at(50);
        let mut first = Some(Bytes::copy_from_slice(a));
        body.feed(&mut first, false, "req_test");
        assert_eq!(first, None, "nothing reaches the caller before the document is whole");
        let mut last = Some(Bytes::copy_from_slice(b));
        body.feed(&mut last, true, "req_test");
        let sent: serde_json::Value = serde_json::from_slice(&last.expect("answer")).expect("json");
        assert_eq!(sent["type"], "message");
        assert_eq!(sent["content"][0]["text"], "hi");
        assert_eq!(sent["usage"]["input_tokens"], 7);
        // Billed from the upstream's own counts.
        assert_eq!(body.usage(), Usage { input: 7, output: 3, cache_read: 4, cache_write: 0 });

        let mut body =
            ResponseBody::for_forward(&plan("claude-sonnet-4-5-20250929", TO_OPENAI), 200, false, 42, "req_test");
        let sent: serde_json::Value =
            serde_json::from_slice(&run(&mut body, &[ANTHROPIC_ANSWER.as_bytes()])).expect("json");
        assert_eq!((sent["object"].as_str(), sent["created"].as_u64()), (Some("chat.completion"), Some(42)));
        assert_eq!(body.usage(), Usage { input: 7, output: 3, cache_read: 0, cache_write: 0 });
    }

    #[test]
    fn a_translated_upstream_error_keeps_its_status_meaning_in_the_callers_shape() {
        let mut body = ResponseBody::for_forward(&plan("gpt-5.5", TO_ANTHROPIC), 429, false, 0, "req_test");
        let upstream = br#"{"error":{"message":"slow down","type":"rate_limit_exceeded","code":null}}"#;
        let sent: serde_json::Value = serde_json::from_slice(&run(&mut body, &[upstream])).expect("json");
        assert_eq!(sent["type"], "error");
        assert_eq!(sent["error"]["type"], "rate_limit_error");
        assert_eq!(sent["error"]["message"], "slow down");
        assert_eq!(sent["request_id"], "req_test", "Anthropic's errors name the request");
        assert_eq!(body.usage(), Usage::default());
    }

    #[test]
    fn a_same_dialect_stream_passes_as_sent_and_an_unfinished_one_ends_with_an_error_event() {
        let stream: &[&[u8]] = &[
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ];
        let mut body = ResponseBody::for_forward(&plan("gpt-5.5", PASS), 200, true, 0, "req_test");
        assert_eq!(run(&mut body, stream), stream.concat());
        assert_eq!(body.usage(), Usage { input: 5, output: 2, cache_read: 0, cache_write: 0 });
        assert_eq!(body.cut_off(&GatewayError::UpstreamUnavailable, Dialect::OpenAi), None, "it had ended");

        let mut body = ResponseBody::for_forward(&plan("gpt-5.5", PASS), 200, true, 0, "req_test");
        let sent = run(&mut body, &stream[..1]);
        assert!(sent.starts_with(stream[0]));
        let tail = String::from_utf8(sent[stream[0].len()..].to_vec()).expect("utf-8");
        assert!(tail.starts_with("data: {\"error\":"), "{tail}");
    }

    #[test]
    fn strip_mode_removes_only_the_usage_the_gateway_asked_for() {
        let stream: &[&[u8]] = &[
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ];
        let mut body = ResponseBody::for_forward(&plan("gpt-5.5", STRIP), 200, true, 0, "req_test");
        let sent = String::from_utf8(run(&mut body, stream)).expect("utf-8");
        assert_eq!(sent, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n");
        assert_eq!(body.usage(), Usage { input: 5, output: 2, cache_read: 0, cache_write: 0 });
    }

    #[test]
    fn a_stream_cut_short_is_ended_once_in_the_callers_dialect() {
        let mut body =
            ResponseBody::for_forward(&plan("claude-sonnet-4-5-20250929", TO_OPENAI), 200, true, 0, "req_test");
        let mut first = Some(Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        ));
        body.feed(&mut first, false, "req_test");
        let tail = body.cut_off(&GatewayError::UpstreamTimeout, Dialect::OpenAi).expect("an end");
        let tail = String::from_utf8(tail.to_vec()).expect("utf-8");
        assert!(tail.contains("\"error\""), "{tail}");
        assert_eq!(body.cut_off(&GatewayError::UpstreamTimeout, Dialect::OpenAi), None, "ended once");
        assert_eq!(body.usage().input, 9);
    }

    #[test]
    fn a_refused_download_is_replaced_by_the_gateways_error() {
        let mut body = ResponseBody::for_download(404, b"");
        let sent = run(&mut body, &[br#"{"error":{"message":"no such file"#, br#""}}"#]);
        let sent: serde_json::Value = serde_json::from_slice(&sent).expect("json");
        assert_eq!(sent["error"]["message"], "no such file");
        let mut ok = ResponseBody::for_download(200, b"");
        assert_eq!(run(&mut ok, &[b"\x00\x01mp4", b"tail"]), b"\x00\x01mp4tail");
    }
}
