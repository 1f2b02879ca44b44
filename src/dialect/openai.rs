//! The OpenAI chat-completions wire types the gateway reads from OpenAI-dialect upstreams,
//! declared once: a JSON answer and a stream chunk are the same shape (a choice carries a
//! `message` in one and a `delta` in the other). Read leniently: every field is optional, and a
//! string field of another type reads as absent ([`LStr`]), so an odd field from an upstream
//! never makes a whole answer or event unreadable. Requests are not read through types at all
//! (`request/`).
//! Imports: `usage` (the usage wire type). Not `proxy`, `plan`, `metrics` or Pingora.

use serde::Deserialize;
use serde_json::Value;

use super::LStr;
use crate::usage::OpenAiUsage;

/// A chat completion, or one chunk of a streamed one.
#[derive(Deserialize)]
pub(super) struct Completion<'a> {
    #[serde(default, borrow)]
    pub id: LStr<'a>,
    #[serde(default, borrow)]
    pub choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    pub usage: Option<OpenAiUsage>,
    /// An error object some upstreams send inside a stream.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct Choice<'a> {
    #[serde(default)]
    pub index: Option<u64>,
    /// A JSON answer's message.
    #[serde(default, borrow)]
    pub message: Option<Message<'a>>,
    /// A stream chunk's piece of the message.
    #[serde(default, borrow)]
    pub delta: Option<Message<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: LStr<'a>,
}

/// An assistant message, or a piece of one.
#[derive(Deserialize, Default)]
pub(super) struct Message<'a> {
    #[serde(default, borrow)]
    pub content: LStr<'a>,
    /// Reasoning text: `reasoning_content` (DeepSeek, vLLM, ...) or `reasoning` (others).
    #[serde(default, borrow)]
    pub reasoning_content: LStr<'a>,
    #[serde(default, borrow)]
    pub reasoning: LStr<'a>,
    #[serde(default, borrow)]
    pub refusal: LStr<'a>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
}

impl Message<'_> {
    /// The reasoning text under either name.
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning_content.non_empty().or(self.reasoning.non_empty())
    }

    /// Generated content: text, reasoning, a refusal or tool-call arguments (the same members
    /// `usage::openai_chunk_has_content` looks for in a same-dialect stream).
    pub fn has_content(&self) -> bool {
        let has_args = |tc: &ToolCall<'_>| tc.function.as_ref().is_some_and(|f| f.arguments.non_empty().is_some());
        self.content.non_empty().is_some()
            || self.reasoning().is_some()
            || self.refusal.non_empty().is_some()
            || self.tool_calls.iter().flatten().any(has_args)
    }
}

/// A tool call, or a piece of one in a stream (`index` says which).
#[derive(Deserialize)]
pub(super) struct ToolCall<'a> {
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default, borrow)]
    pub id: LStr<'a>,
    #[serde(default, borrow)]
    pub function: Option<Function<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Function<'a> {
    #[serde(default, borrow)]
    pub name: LStr<'a>,
    #[serde(default, borrow)]
    pub arguments: LStr<'a>,
}
