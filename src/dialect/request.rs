//! Request translation (placeholder until the translator lands).
use super::{RequestOptions, TranslateError};

/// OpenAI chat-completions request → Anthropic messages request.
pub fn openai_to_anthropic(_body: &[u8], _opts: &RequestOptions<'_>) -> Result<Vec<u8>, TranslateError> {
    Err(TranslateError::new("model", "translation is not available yet"))
}

/// Anthropic messages request → OpenAI chat-completions request.
pub fn anthropic_to_openai(_body: &[u8], _opts: &RequestOptions<'_>) -> Result<Vec<u8>, TranslateError> {
    Err(TranslateError::new("model", "translation is not available yet"))
}
