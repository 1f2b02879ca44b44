//! The canned chat replies, read from `tests/fixtures/upstream/` at build time. The translation
//! goldens read the same files as their upstream input (`tests/golden/*/*/mock_reply/in.*` are
//! links to them), so what the tests get from the mock is what the goldens prove the translators
//! handle. A fixture is the reply exactly as served with the default model (`"mock-model"`) and
//! the default usage (`chat::OPENAI_USAGE`, `chat::ANTHROPIC_USAGE`); a `Template` splits it once at those
//! values so that each request fills in its own model and `x-mock-echo-usage`.
//!
//! Tool-calling turns are not fixtures: they are built from the tools the request declares
//! (`chat`).
//! Imports: `chat`'s usage defaults. Nothing of the gateway's crate.

use std::sync::OnceLock;

use super::chat::Usage;

const OPENAI_JSON: &str = include_str!("../../../tests/fixtures/upstream/openai/chat.json");
const OPENAI_SSE: &str = include_str!("../../../tests/fixtures/upstream/openai/chat.sse");
const ANTHROPIC_JSON: &str = include_str!("../../../tests/fixtures/upstream/anthropic/messages.json");
const ANTHROPIC_SSE: &str = include_str!("../../../tests/fixtures/upstream/anthropic/messages.sse");

/// A value filled in per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The request's `model`, as a JSON literal.
    Model,
    Input,
    Output,
    /// OpenAI's `total_tokens`: input + output.
    Total,
    CacheRead,
    CacheWrite,
    /// OpenAI's `,"usage":null`, on every chunk of a stream whose caller asked for usage.
    UsageNull,
}

/// Where each slot sits in a fixture: the member as it reads with the defaults, and what stands
/// in for its value.
const OPENAI_SLOTS: &[(&str, &str, Slot)] = &[
    (r#""model":"mock-model""#, r#""model":"#, Slot::Model),
    (r#""prompt_tokens":21"#, r#""prompt_tokens":"#, Slot::Input),
    (r#""completion_tokens":7"#, r#""completion_tokens":"#, Slot::Output),
    (r#""total_tokens":28"#, r#""total_tokens":"#, Slot::Total),
    (r#""cached_tokens":5"#, r#""cached_tokens":"#, Slot::CacheRead),
    (r#","usage":null"#, "", Slot::UsageNull),
];
const ANTHROPIC_SLOTS: &[(&str, &str, Slot)] = &[
    (r#""model":"mock-model""#, r#""model":"#, Slot::Model),
    (r#""input_tokens":12"#, r#""input_tokens":"#, Slot::Input),
    (r#""cache_creation_input_tokens":3"#, r#""cache_creation_input_tokens":"#, Slot::CacheWrite),
    (r#""cache_read_input_tokens":4"#, r#""cache_read_input_tokens":"#, Slot::CacheRead),
    // `message_delta`'s count; `message_start`'s `"output_tokens":1` stays as it is.
    (r#""output_tokens":9"#, r#""output_tokens":"#, Slot::Output),
];

#[derive(Debug)]
enum Part {
    Text(&'static str),
    Slot(Slot),
}

/// A fixture cut at its slots.
#[derive(Debug)]
pub(crate) struct Template(Vec<Part>);

/// What one request fills in.
pub(crate) struct Fill<'a> {
    pub(crate) model: &'a str,
    pub(crate) usage: Usage,
    pub(crate) usage_null: bool,
}

impl Template {
    fn new(mut text: &'static str, slots: &[(&'static str, &'static str, Slot)]) -> Template {
        let mut parts = Vec::new();
        while !text.is_empty() {
            let next = slots
                .iter()
                .filter_map(|&(member, key, slot)| Some((text.find(member)?, member, key, slot)))
                .min_by_key(|&(at, ..)| at);
            let Some((at, member, key, slot)) = next else {
                parts.push(Part::Text(text));
                break;
            };
            parts.push(Part::Text(&text[..at + key.len()]));
            parts.push(Part::Slot(slot));
            text = &text[at + member.len()..];
        }
        Template(parts)
    }

    pub(crate) fn render(&self, out: &mut Vec<u8>, fill: &Fill<'_>) {
        use std::io::Write as _;
        for part in &self.0 {
            let u = &fill.usage;
            let _ = match part {
                Part::Text(t) => out.write_all(t.as_bytes()),
                Part::Slot(Slot::Model) => out.write_all(fill.model.as_bytes()),
                Part::Slot(Slot::Input) => write!(out, "{}", u.input),
                Part::Slot(Slot::Output) => write!(out, "{}", u.output),
                Part::Slot(Slot::Total) => write!(out, "{}", u.input.saturating_add(u.output)),
                Part::Slot(Slot::CacheRead) => write!(out, "{}", u.cache_read),
                Part::Slot(Slot::CacheWrite) => write!(out, "{}", u.cache_write),
                Part::Slot(Slot::UsageNull) if fill.usage_null => out.write_all(br#","usage":null"#),
                Part::Slot(Slot::UsageNull) => Ok(()),
            };
        }
    }

    /// OpenAI's usage-only chunk (`"choices":[]`), sent only to a caller that asked for usage.
    fn is_usage_chunk(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Text(t) if t.contains(r#""choices":[]"#)))
    }
}

/// The canned replies, cut once.
pub(crate) struct Replies {
    pub(crate) openai_json: Template,
    openai_stream: Vec<Template>,
    pub(crate) anthropic_json: Template,
    anthropic_stream: Vec<Template>,
}

/// The events of an SSE fixture, each with its blank line.
fn events(sse: &'static str, slots: &[(&'static str, &'static str, Slot)]) -> Vec<Template> {
    sse.split_inclusive("\n\n").map(|event| Template::new(event, slots)).collect()
}

pub(crate) fn get() -> &'static Replies {
    static REPLIES: OnceLock<Replies> = OnceLock::new();
    REPLIES.get_or_init(|| Replies {
        openai_json: Template::new(OPENAI_JSON, OPENAI_SLOTS),
        openai_stream: events(OPENAI_SSE, OPENAI_SLOTS),
        anthropic_json: Template::new(ANTHROPIC_JSON, ANTHROPIC_SLOTS),
        anthropic_stream: events(ANTHROPIC_SSE, ANTHROPIC_SLOTS),
    })
}

impl Replies {
    /// The OpenAI stream's events; the usage chunk and the `"usage":null` members only when the
    /// caller asked for usage (`stream_options.include_usage`).
    pub(crate) fn openai_stream(&self, fill: &Fill<'_>) -> Vec<String> {
        self.openai_stream
            .iter()
            .filter(|e| fill.usage_null || !e.is_usage_chunk())
            .map(|e| rendered(e, fill))
            .collect()
    }

    pub(crate) fn anthropic_stream(&self, fill: &Fill<'_>) -> Vec<String> {
        self.anthropic_stream.iter().map(|e| rendered(e, fill)).collect()
    }
}

fn rendered(template: &Template, fill: &Fill<'_>) -> String {
    let mut out = Vec::new();
    template.render(&mut out, fill);
    String::from_utf8(out).unwrap_or_default()
}

/// The fill that reproduces a fixture as written.
#[cfg(test)]
fn defaults(usage: Usage) -> Fill<'static> {
    Fill { model: r#""mock-model""#, usage, usage_null: true }
}

#[cfg(test)]
mod tests {
    use super::super::chat::{ANTHROPIC_USAGE, OPENAI_USAGE};
    use super::*;

    #[test]
    fn the_defaults_give_back_each_fixture_byte_for_byte_and_every_slot_is_found() {
        let r = get();
        let mut out = Vec::new();
        r.openai_json.render(&mut out, &defaults(OPENAI_USAGE));
        assert_eq!(out, OPENAI_JSON.as_bytes());
        out.clear();
        r.anthropic_json.render(&mut out, &defaults(ANTHROPIC_USAGE));
        assert_eq!(out, ANTHROPIC_JSON.as_bytes());
        assert_eq!(r.openai_stream(&defaults(OPENAI_USAGE)).concat(), OPENAI_SSE);
        assert_eq!(r.anthropic_stream(&defaults(ANTHROPIC_USAGE)).concat(), ANTHROPIC_SSE);
        // A fixture edited so that a default no longer appears would silently serve fixed values.
        for (template, slots, n) in [(&r.openai_json, OPENAI_SLOTS, 5), (&r.anthropic_json, ANTHROPIC_SLOTS, 5)] {
            let found: Vec<Slot> =
                template.0.iter().filter_map(|p| if let Part::Slot(s) = p { Some(*s) } else { None }).collect();
            for (_, _, slot) in slots.iter().filter(|s| s.2 != Slot::UsageNull) {
                assert!(found.contains(slot), "{slot:?} not in its fixture");
            }
            assert_eq!(found.len(), n);
        }
    }

    #[test]
    fn a_request_fills_in_its_model_and_usage_and_a_stream_without_usage_loses_it() {
        let r = get();
        let usage = Usage { input: 100, output: 50, cache_read: 30, cache_write: 20 };
        let fill = Fill { model: r#"{"x":1}"#, usage, usage_null: false };
        let mut out = Vec::new();
        r.openai_json.render(&mut out, &fill);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["model"]["x"], 1);
        assert_eq!(v["usage"]["prompt_tokens"], 100);
        assert_eq!(v["usage"]["total_tokens"], 150);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
        let stream = r.openai_stream(&fill).concat();
        assert!(!stream.contains("usage") && stream.ends_with("data: [DONE]\n\n"), "{stream}");
        let stream = r.anthropic_stream(&fill).concat();
        assert!(stream.contains(r#""cache_creation_input_tokens":20"#) && stream.contains(r#""output_tokens":50}"#));
        assert!(stream.contains(r#""output_tokens":1}"#), "message_start's own count is not a slot");
    }
}
