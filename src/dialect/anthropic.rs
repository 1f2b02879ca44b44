//! The Anthropic messages wire types the gateway reads from Anthropic-dialect upstreams,
//! declared once: a JSON answer's `message` and content blocks are the same shapes a stream's
//! `message_start` and `content_block_start` carry. Read leniently: every field is optional, and
//! a string field of another type reads as absent ([`LStr`]). Requests are not read through types
//! at all (`request/`).

use serde::Deserialize;
use serde_json::Value;

use super::LStr;
use crate::usage::AnthropicUsage;

/// A message: a JSON answer, or the one a stream's `message_start` opens.
#[derive(Deserialize)]
pub(super) struct Message<'a> {
    #[serde(default, borrow)]
    pub id: LStr<'a>,
    #[serde(default, borrow)]
    pub content: Vec<Block<'a>>,
    #[serde(default, borrow)]
    pub stop_reason: LStr<'a>,
    #[serde(default)]
    pub usage: Option<AnthropicUsage>,
}

/// A content block (of any type: the fields of the ones the gateway translates).
#[derive(Deserialize)]
pub(super) struct Block<'a> {
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
    pub input: Option<Value>,
}
