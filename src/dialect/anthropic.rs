//! The Anthropic messages wire types the gateway reads from Anthropic-dialect upstreams,
//! declared once: a JSON answer's `message` and content blocks are the same shapes a stream's
//! `message_start` and `content_block_start` carry. Read leniently: every field is optional, and
//! a string field of another type reads as absent ([`LStr`]). Requests are not read through types
//! at all (`request/`).
//!
//! A `tool_use` block's `input` is a type parameter: a JSON answer keeps it as the upstream's own
//! text (serde_json's `&RawValue`, so the OpenAI `arguments` keep the model's key order); a stream
//! skips it (`IgnoredAny`, the default): its blocks start with `input: {}` and stream the input as
//! deltas, and the rare one that starts with its whole input is read apart (`dialect::stream`).
//! Not sonic-rs's `LazyValue` here: deserialized through serde, it does not check that the bytes
//! are UTF-8 (the stream fuzz target found it).
//! Imports: `usage` (the usage wire type). Not `proxy`, `plan`, `metrics` or Pingora.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::LStr;
use crate::usage::AnthropicUsage;

/// A message: a JSON answer, or the one a stream's `message_start` opens.
#[derive(Deserialize)]
// Written out: serde would otherwise ask `Input: Default` for the defaulted fields.
#[serde(bound(deserialize = "Input: Deserialize<'de>"))]
pub(super) struct Message<'a, Input = IgnoredAny> {
    #[serde(default, borrow)]
    pub id: LStr<'a>,
    #[serde(default, borrow)]
    pub content: Vec<Block<'a, Input>>,
    #[serde(default, borrow)]
    pub stop_reason: LStr<'a>,
    #[serde(default)]
    pub usage: Option<AnthropicUsage>,
}

/// A content block (of any type: the fields of the ones the gateway translates).
#[derive(Deserialize)]
#[serde(bound(deserialize = "Input: Deserialize<'de>"))]
pub(super) struct Block<'a, Input = IgnoredAny> {
    #[serde(rename = "type", default, borrow)]
    pub kind: LStr<'a>,
    #[serde(default, borrow)]
    pub id: LStr<'a>,
    #[serde(default, borrow)]
    pub name: LStr<'a>,
    #[serde(default, borrow)]
    pub text: LStr<'a>,
    #[serde(default, borrow)]
    pub thinking: LStr<'a>,
    /// A `tool_use` block's input (a stream's block starts with `{}` and streams it as deltas).
    #[serde(default)]
    pub input: Option<Input>,
}
