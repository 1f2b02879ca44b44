//! Translation between the OpenAI chat-completions dialect and the Anthropic messages dialect:
//! requests, JSON responses, SSE streams and error bodies, both directions.
//!
//! Used only where the caller's dialect and the upstream's differ; same-dialect traffic never
//! enters this module. Everything here is pure (bytes in, bytes out, no IO, no metrics, no pingora
//! types) and tested with golden files under `tests/golden/`. The mapping table is in the README
//! ("Dialect translation").
//! Imports: `error`, `peek` (structural scans), `usage` (the token type). Not `registry`, `metrics`,
//! `proxy` or `plan`.

mod anthropic;
pub mod count;
mod openai;
pub mod request;
pub mod response;
mod scan;
pub mod sse;
pub mod stream;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::Dialect;
use crate::usage::Usage;

/// A string field of an upstream's answer read leniently: a JSON string gives `Some`, anything else (null, a number, an
/// object...) is skipped and gives `None`, so an odd field never makes a whole event unreadable.
#[derive(Debug, Default)]
pub(crate) struct LStr<'a>(Option<Cow<'a, str>>);

impl LStr<'_> {
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The string if it is present and not empty.
    pub(crate) fn non_empty(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for LStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(LStr(Some(Cow::Owned(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LStr(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LStr(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(LStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(LStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(LStr(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A request that cannot be translated faithfully: answered 400 in the caller's dialect, naming
/// the parameter (`param` is a JSON path such as `messages[2].content[0].type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    /// The offending parameter's path.
    pub param: String,
    /// Why it cannot be translated.
    pub message: String,
}

impl TranslateError {
    /// A new error for `param`.
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError { param: param.into(), message: message.into() }
    }
}

/// What request translation needs to know besides the body.
#[derive(Debug, Clone)]
pub struct RequestOptions<'a> {
    /// The model name the upstream expects (registry `upstream_model`, or the registered name).
    pub upstream_model: &'a str,
    /// `max_tokens` for an Anthropic upstream when an OpenAI caller sent none
    /// (registry `max_output_tokens`, else `DEFAULT_MAX_TOKENS`).
    pub default_max_tokens: u32,
    /// `models.NAME.params: strict`: an unknown field is a 400 instead of dropped and reported.
    pub strict: bool,
    /// The Anthropic model takes structured outputs (`models.NAME.structured_outputs`).
    pub structured_outputs: bool,
}

/// A translated request: the body to send, and the JSON paths of the caller's fields that
/// translation left out (sorted, each once), for the `x-cheapmodel-dropped` header, the access log
/// and `cheapmodel_dropped_params_total`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translated {
    /// The request in the upstream's dialect.
    pub body: Vec<u8>,
    /// Paths such as `messages[1].tool_calls[0].index`.
    pub dropped: Vec<String>,
}

/// Field names the mapping tables drop on purpose (README, "Dialect translation"): the
/// `param` values of `cheapmodel_dropped_params_total`. Any other dropped field is unknown to the
/// gateway: counted as `other`, and refused on models with `params: strict`.
pub const DROPPED_BY_RULE: &[&str] = &[
    "allowed_callers",
    "annotations",
    "cache_control",
    "citations",
    "context_management",
    "data",
    "defer_loading",
    "description",
    "detail",
    "display",
    "eager_input_streaming",
    "index",
    "inference_geo",
    "input_examples",
    "metadata",
    "name",
    "parsed",
    "parsed_arguments",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_content",
    "safety_identifier",
    "seed",
    "service_tier",
    "signature",
    "speed",
    "store",
    "strict",
    "thinking",
    "title",
    "verbosity",
];

/// The metric label for a dropped path: its last field name when the tables drop it by rule,
/// else `other` (so callers cannot grow the label set).
pub fn dropped_param_label(path: &str) -> &'static str {
    let last = path.rsplit('.').next().unwrap_or(path);
    let name = last.split('[').next().unwrap_or(last);
    match DROPPED_BY_RULE.binary_search(&name) {
        Ok(i) => DROPPED_BY_RULE[i],
        Err(_) => "other",
    }
}

/// Longest `x-cheapmodel-dropped` value: past it the list ends with `,...`.
pub const DROPPED_HEADER_MAX: usize = 1024;

/// The `x-cheapmodel-dropped` value (also the access log's `dropped`): the paths comma-separated,
/// capped at [`DROPPED_HEADER_MAX`] bytes. Keys come from callers, so every byte that is not
/// visible ASCII, and `,` and `%` themselves, is percent-encoded: a key cannot forge a header line
/// or split one path into two.
pub fn dropped_header_value(paths: &[String]) -> String {
    let mut out = String::new();
    for path in paths {
        let start = out.len();
        if start > 0 {
            out.push(',');
        }
        for b in path.bytes() {
            if b.is_ascii_graphic() && b != b',' && b != b'%' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        if out.len() > DROPPED_HEADER_MAX - 4 {
            out.truncate(start);
            out.push_str(if start > 0 { ",..." } else { "..." });
            break;
        }
    }
    out
}

/// Sorts and dedups the dropped paths; with `strict`, the first unknown one is a 400.
fn settle(body: Vec<u8>, mut dropped: Vec<String>, strict: bool) -> Result<Translated, TranslateError> {
    dropped.sort_unstable();
    dropped.dedup();
    if strict {
        if let Some(path) = dropped.iter().find(|p| dropped_param_label(p) == "other") {
            return Err(TranslateError::new(
                path.clone(),
                "unknown field (this model is configured with params: strict)",
            ));
        }
    }
    Ok(Translated { body, dropped })
}

/// `max_tokens` used when neither the caller nor the registry says.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Translates a request body from `from` to `to` (`from != to`).
pub fn translate_request(
    from: Dialect,
    to: Dialect,
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Result<Translated, TranslateError> {
    match (from, to) {
        (Dialect::OpenAi, Dialect::Anthropic) => request::openai_to_anthropic(body, opts),
        (Dialect::Anthropic, Dialect::OpenAi) => request::anthropic_to_openai(body, opts),
        _ => Ok(Translated { body: body.to_vec(), dropped: Vec::new() }),
    }
}

/// OpenAI `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason_for(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new: a normal stop.
        _ => "stop",
    }
}

/// Anthropic `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason_for(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// OpenAI's usage object, in the order OpenAI writes its members.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct OpenAiUsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
struct CachedTokens {
    cached_tokens: u64,
}

/// OpenAI usage object for counts in `Usage`'s convention (OpenAI's prompt includes the cache).
pub fn openai_usage_json(u: &Usage) -> OpenAiUsageOut {
    let prompt = u.input + u.cache_read + u.cache_write;
    OpenAiUsageOut {
        prompt_tokens: prompt,
        completion_tokens: u.output,
        total_tokens: prompt + u.output,
        prompt_tokens_details: CachedTokens { cached_tokens: u.cache_read },
    }
}

/// Anthropic's usage object, in the order Anthropic writes its members.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct AnthropicUsageOut {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

/// Anthropic usage object for counts in `Usage`'s convention (which is Anthropic's own).
pub fn anthropic_usage_json(u: &Usage) -> AnthropicUsageOut {
    AnthropicUsageOut {
        input_tokens: u.input,
        cache_creation_input_tokens: u.cache_write,
        cache_read_input_tokens: u.cache_read,
        output_tokens: u.output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_names_are_sorted_for_binary_search() {
        assert!(DROPPED_BY_RULE.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn dropped_labels_are_known_names_or_other() {
        assert_eq!(dropped_param_label("messages[1].tool_calls[0].index"), "index");
        assert_eq!(dropped_param_label("system[2].cache_control"), "cache_control");
        assert_eq!(dropped_param_label("verbosity"), "verbosity");
        assert_eq!(dropped_param_label("messages[0].frobnicate"), "other");
        assert_eq!(dropped_param_label("x.cache_controlx"), "other");
    }

    #[test]
    fn dropped_header_is_visible_ascii_and_capped() {
        let evil = vec!["a\r\nset-cookie: x".to_owned(), "b,c".to_owned(), "d%e".to_owned(), "é".to_owned()];
        assert_eq!(dropped_header_value(&evil), "a%0D%0Aset-cookie:%20x,b%2Cc,d%25e,%C3%A9");
        let many: Vec<String> = (0..500).map(|i| format!("messages[{i}].content[0].cache_control")).collect();
        let v = dropped_header_value(&many);
        assert!(v.len() <= DROPPED_HEADER_MAX, "{}", v.len());
        assert!(v.ends_with(",...") && v.starts_with("messages[0].content[0].cache_control,"));
    }
}
