//! OpenAI chat-completions request → Anthropic messages request, in one pass over the body. The
//! rules, and what is dropped or refused, are listed in `request/mod.rs` and the README.
//! Imports: `scan` and `request/mod.rs`'s shared helpers. Not the answer or stream translators,
//! `proxy` or Pingora.

use super::super::scan::{
    anchor, dropped_at, fields, put_str, put_text, put_uint, sep, unescape_into, Fault, Scan, Seen, Str, R,
};
use super::super::RequestOptions;
use super::MESSAGES_PER_ANCHOR;
use super::{data_url, is_http_url, put_piece};

/// The request's fields this side reads. Any other field is dropped and reported (the dropped
/// ones the mapping tables name, e.g. `seed` or `metadata`, are simply not here).
const REQUEST_KEYS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "n",
    "stream_options",
    "logprobs",
    "top_logprobs",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "response_format",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
];

/// Request fields with no Anthropic counterpart that change the answer: a 400 when present.
fn refused(key: &str) -> Option<&'static str> {
    Some(match key {
        "top_logprobs" => "Anthropic does not return log probabilities",
        "audio" => "Anthropic models do not produce audio",
        "prediction" => "Anthropic has no predicted outputs",
        "web_search_options" => "use an OpenAI model for built-in web search",
        "functions" => "legacy functions are not translated; use tools",
        "function_call" => "legacy function_call is not translated; use tool_choice",
        _ => return None,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum AnChoice {
    Auto,
    Any,
    None,
    Tool,
}

struct ToolChoice<'a> {
    mode: AnChoice,
    name: Option<Str<'a>>,
    disable_parallel: bool,
    at: usize,
}

/// A number field: its text (written as it is), its value, and where it stands.
type NumberField<'a> = (&'a [u8], f64, usize);

pub(super) fn translate(body: &[u8], opts: &RequestOptions<'_>) -> R<Vec<u8>> {
    let mut s = Scan::new(body);
    let top = s.here();
    // Room for the other dialect's longer keys, so the buffer is not regrown as it fills.
    let mut out = Vec::with_capacity(body.len() + body.len() / 4 + 256);
    let mut system = Vec::new();
    out.extend_from_slice(b"{\"model\":");
    put_text(&mut out, opts.upstream_model);

    let (mut max_tokens, mut max_completion_tokens) = (None, None);
    let (mut temperature, mut top_p): (Option<NumberField<'_>>, Option<NumberField<'_>>) = (None, None);
    let (mut stream, mut user) = (None, None);
    let (mut tool_choice, mut parallel, mut has_tools, mut has_messages) = (None, None, false, false);
    let (mut effort, mut schema) = (None, None);

    fields(&mut s, REQUEST_KEYS, &mut [], |key, s| {
        anchor(s.here(), key, None);
        if let Some(why) = refused(key) {
            return Err(s.fault(why));
        }
        match key {
            "model" => {
                s.string()?;
            }
            "messages" => {
                out.extend_from_slice(b",\"messages\":");
                messages(s, &mut out, &mut system)?;
                has_messages = true;
            }
            "max_tokens" => max_tokens = Some(s.uint()?),
            "max_completion_tokens" => max_completion_tokens = Some(s.uint()?),
            "temperature" => {
                let at = s.here();
                let (text, value) = s.float()?;
                if !(0.0..=1.0).contains(&value) {
                    return Err(Fault::at(
                        at,
                        "Anthropic accepts 0 to 1 (OpenAI's 0 to 2 has no faithful mapping above 1)",
                    ));
                }
                temperature = Some((text, value, at));
            }
            "top_p" => {
                let at = s.here();
                let (text, value) = s.float()?;
                top_p = Some((text, value, at));
            }
            "stop" => {
                out.extend_from_slice(b",\"stop_sequences\":[");
                if s.peek()? == b'"' {
                    put_str(&mut out, s.string()?);
                } else {
                    s.arr()?;
                    let (mut f, mut fo) = (true, true);
                    while s.item(&mut f)? {
                        sep(&mut out, &mut fo);
                        put_str(&mut out, s.string()?);
                    }
                }
                out.push(b']');
            }
            "stream" => stream = Some(s.boolean()?),
            "user" => user = Some(s.string()?),
            "tools" => has_tools = tools(s, &mut out, opts.structured_outputs)?,
            "tool_choice" => tool_choice = Some(read_tool_choice(s)?),
            "parallel_tool_calls" => parallel = Some(s.boolean()?),
            "reasoning_effort" => effort = Some(s.string()?),
            "n" => {
                let at = s.here();
                if s.uint()? != 1 {
                    return Err(Fault::at(at, "Anthropic returns one choice per request"));
                }
            }
            // Honoured by the response side (Anthropic streams always carry usage), not sent.
            "stream_options" => s.skip(0)?,
            "logprobs" => {
                let at = s.here();
                if s.boolean()? {
                    return Err(Fault::at(at, "Anthropic does not return log probabilities"));
                }
            }
            "frequency_penalty" | "presence_penalty" => {
                let at = s.here();
                if s.float()?.1 != 0.0 {
                    let what = if key == "frequency_penalty" { "frequency" } else { "presence" };
                    return Err(Fault::at(at, format!("Anthropic has no {what} penalty")));
                }
            }
            "logit_bias" => {
                let at = s.here();
                s.obj()?;
                if s.any_key(&mut true)?.is_some() {
                    return Err(Fault::at(at, "Anthropic has no logit bias"));
                }
            }
            "response_format" => schema = response_format(s, opts.structured_outputs)?,
            "modalities" => {
                let at = s.here();
                s.arr()?;
                let mut f = true;
                while s.item(&mut f)? {
                    if !s.string()?.is("text") {
                        return Err(Fault::at(at, "only text output can be requested from an Anthropic model"));
                    }
                }
            }
            _ => unreachable!("every key of REQUEST_KEYS has an arm"),
        }
        Ok(())
    })?;
    s.end()?;
    if !has_messages {
        return Err(Fault::required(top, "messages"));
    }

    if parallel == Some(false) {
        match &mut tool_choice {
            Some(c) if c.mode != AnChoice::None => c.disable_parallel = true,
            None if has_tools => {
                tool_choice = Some(ToolChoice { mode: AnChoice::Auto, name: None, disable_parallel: true, at: top })
            }
            _ => {}
        }
    }
    let caller_max = max_completion_tokens.or(max_tokens);
    let max_tokens = caller_max.unwrap_or(u64::from(opts.default_max_tokens));
    if let Some(effort) = effort {
        if let Some(budget) = thinking_budget(effort, max_tokens, caller_max.is_some())? {
            thinking_limits(temperature, top_p, tool_choice.as_ref())?;
            out.extend_from_slice(b",\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":");
            put_uint(&mut out, budget);
            out.push(b'}');
        }
    }
    out.extend_from_slice(b",\"max_tokens\":");
    put_uint(&mut out, max_tokens);
    if !system.is_empty() {
        out.extend_from_slice(b",\"system\":[");
        out.extend_from_slice(&system);
        out.push(b']');
    }
    if let Some(u) = user {
        out.extend_from_slice(b",\"metadata\":{\"user_id\":");
        put_str(&mut out, u);
        out.push(b'}');
    }
    if let Some(stream) = stream {
        out.extend_from_slice(if stream { b",\"stream\":true" } else { b",\"stream\":false" });
    }
    if let Some((t, _, _)) = temperature {
        out.extend_from_slice(b",\"temperature\":");
        out.extend_from_slice(t);
    }
    if let Some((p, _, _)) = top_p {
        out.extend_from_slice(b",\"top_p\":");
        out.extend_from_slice(p);
    }
    if let Some(c) = tool_choice {
        out.extend_from_slice(match c.mode {
            AnChoice::Auto => b",\"tool_choice\":{\"type\":\"auto\"".as_slice(),
            AnChoice::Any => b",\"tool_choice\":{\"type\":\"any\"",
            AnChoice::None => b",\"tool_choice\":{\"type\":\"none\"",
            AnChoice::Tool => b",\"tool_choice\":{\"type\":\"tool\"",
        });
        if let Some(name) = c.name {
            out.extend_from_slice(b",\"name\":");
            put_str(&mut out, name);
        }
        if c.disable_parallel {
            out.extend_from_slice(b",\"disable_parallel_tool_use\":true");
        }
        out.push(b'}');
    }
    if let Some(schema) = schema {
        out.extend_from_slice(b",\"output_config\":{\"format\":{\"type\":\"json_schema\",\"schema\":");
        out.extend_from_slice(schema);
        out.extend_from_slice(b"}}");
    }
    out.push(b'}');
    Ok(out)
}

/// `reasoning_effort` → a thinking budget (`None` for `none`), capped below `max_tokens`.
/// `caller_max`: the caller chose `max_tokens`. OpenAI counts reasoning inside that limit too, so
/// the budget may take all of it but one token, as the caller's own limit would allow. Without it,
/// `max_tokens` is the model's default for the whole answer, and thinking gets at most half of it
/// (at least 1024): capped at `max_tokens - 1`, `high` on the 4096 default left the visible answer
/// one token.
fn thinking_budget(effort: Str<'_>, max_tokens: u64, caller_max: bool) -> R<Option<u64>> {
    let budget: u64 = match &*effort.text() {
        "none" => return Ok(None),
        "minimal" => 1024,
        "low" => 2048,
        "medium" => 8192,
        "high" => 16384,
        "xhigh" => 32768,
        "max" => 65536,
        other => {
            return Err(Fault::at(
                effort.at(),
                format!("'{other}' has no Anthropic thinking budget (none, minimal, low, medium, high, xhigh, max)"),
            ))
        }
    };
    let below_max = max_tokens.saturating_sub(1);
    let cap = if caller_max { below_max } else { (max_tokens / 2).max(1024).min(below_max) };
    let budget = budget.min(cap);
    if budget < 1024 {
        return Err(Fault::at(
            effort.at(),
            format!(
                "Anthropic needs a thinking budget of at least 1024 tokens below max_tokens, and max_tokens is {max_tokens}"
            ),
        ));
    }
    Ok(Some(budget))
}

/// With thinking on, Anthropic accepts only `temperature` 1, `top_p` 0.95..=1 and a tool choice
/// that does not force a tool: anything else is refused, not silently changed.
fn thinking_limits(
    temperature: Option<NumberField<'_>>,
    top_p: Option<NumberField<'_>>,
    tool_choice: Option<&ToolChoice<'_>>,
) -> R<()> {
    if let Some((_, t, at)) = temperature {
        if t != 1.0 {
            return Err(Fault::at(at, "Anthropic accepts only temperature 1 with thinking (reasoning_effort) enabled"));
        }
    }
    if let Some((_, p, at)) = top_p {
        if !(0.95..=1.0).contains(&p) {
            return Err(Fault::at(
                at,
                "Anthropic accepts only top_p from 0.95 to 1 with thinking (reasoning_effort) enabled",
            ));
        }
    }
    if let Some(c) = tool_choice {
        if matches!(c.mode, AnChoice::Any | AnChoice::Tool) {
            return Err(Fault::at(c.at, "Anthropic cannot force tool use with thinking (reasoning_effort) enabled"));
        }
    }
    Ok(())
}

/// `response_format` → the schema for `output_config.format` (`None` for text).
fn response_format<'a>(s: &mut Scan<'a>, structured_outputs: bool) -> R<Option<&'a [u8]>> {
    let at = s.here();
    let (mut kind, mut json_schema, mut schema) = (None, None, None);
    fields(s, &["type", "json_schema"], &mut [], |key, s| {
        match key {
            "type" => kind = Some(s.string()?),
            _ => {
                json_schema = Some(s.here());
                // `name`, `description` and `strict` have no Anthropic counterpart: the schema is
                // always held to exactly. `description` is reported as dropped.
                fields(s, &["name", "strict", "schema"], &mut [], |key, s| {
                    match key {
                        "name" => {
                            s.string()?;
                        }
                        "strict" => s.skip(0)?,
                        _ => schema = Some(s.raw_value()?),
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    })?;
    match kind.map(|k| k.text()).as_deref() {
        Some("text") => return Ok(None),
        Some("json_schema") => {}
        Some("json_object") => {
            return Err(Fault::at(
                at,
                "Anthropic has no schema-less JSON mode; send response_format json_schema with the object's schema",
            ))
        }
        _ => return Err(Fault::under(at, "type", "text or json_schema")),
    }
    let Some(json_schema) = json_schema else { return Ok(None) };
    if !structured_outputs {
        return Err(Fault::at(
            at,
            "this model is not configured for structured outputs (models.NAME.structured_outputs)",
        ));
    }
    schema.map(Some).ok_or_else(|| Fault::required(json_schema, "schema"))
}

/// `tools` → Anthropic tools, written as `,"tools":[...]`. Returns whether there is any.
/// `strict` goes along where the model takes strict tool use (`structured_outputs`), else it is
/// dropped.
fn tools(s: &mut Scan<'_>, out: &mut Vec<u8>, structured_outputs: bool) -> R<bool> {
    out.extend_from_slice(b",\"tools\":[");
    s.arr()?;
    let (mut first, mut fo) = (true, true);
    let mut index = 0;
    while s.item(&mut first)? {
        let tool = s.here();
        anchor(tool, "tools", Some(index));
        index += 1;
        let (mut kind, mut function, mut cache) = (None, None, None);
        let (mut name, mut description, mut parameters, mut strict) = (None, None, None, None);
        fields(s, &["type", "function", "cache_control"], &mut [], |key, s| {
            match key {
                "type" => kind = Some(s.string()?),
                "cache_control" => cache = read_cache_control(s)?,
                _ => {
                    function = Some(s.here());
                    fields(s, &["name", "description", "parameters", "strict"], &mut [], |key, s| {
                        match key {
                            "name" => name = Some(s.string()?),
                            "description" => description = Some(s.string()?),
                            "parameters" => parameters = Some(s.raw_value()?),
                            _ => {
                                let at = s.here();
                                let value = s.boolean()?;
                                if structured_outputs {
                                    strict = Some(value);
                                } else {
                                    dropped_at(at);
                                }
                            }
                        }
                        Ok(())
                    })?;
                }
            }
            Ok(())
        })?;
        let kind = kind.ok_or_else(|| Fault::required(tool, "type"))?;
        if !kind.is("function") {
            return Err(Fault::at(
                kind.at(),
                format!("'{}' tools have no Anthropic counterpart (only function tools)", kind.text()),
            ));
        }
        let function = function.ok_or_else(|| Fault::required(tool, "function"))?;
        sep(out, &mut fo);
        out.extend_from_slice(b"{\"name\":");
        put_str(out, name.ok_or_else(|| Fault::required(function, "name"))?);
        if let Some(d) = description {
            out.extend_from_slice(b",\"description\":");
            put_str(out, d);
        }
        out.extend_from_slice(b",\"input_schema\":");
        out.extend_from_slice(parameters.unwrap_or(b"{\"type\":\"object\",\"properties\":{}}"));
        if let Some(strict) = strict {
            out.extend_from_slice(if strict { b",\"strict\":true" } else { b",\"strict\":false" });
        }
        out.push(b'}');
        put_cache_control(out, cache);
    }
    out.push(b']');
    Ok(!fo)
}

fn read_tool_choice<'a>(s: &mut Scan<'a>) -> R<ToolChoice<'a>> {
    let at = s.here();
    if s.peek()? == b'"' {
        let mode = s.string()?;
        let mode = match &*mode.text() {
            "auto" => AnChoice::Auto,
            "required" => AnChoice::Any,
            "none" => AnChoice::None,
            other => {
                return Err(Fault::at(at, format!("'{other}' is not a tool_choice mode (auto, required, none)")));
            }
        };
        return Ok(ToolChoice { mode, name: None, disable_parallel: false, at });
    }
    if s.peek()? != b'{' {
        return Err(s.fault("must be a string or an object"));
    }
    let (mut kind, mut function, mut name) = (None, None, None);
    fields(s, &["type", "function"], &mut [], |key, s| {
        match key {
            "type" => kind = Some(s.string()?),
            _ => {
                function = Some(s.here());
                fields(s, &["name"], &mut [], |_, s| {
                    name = Some(s.string()?);
                    Ok(())
                })?;
            }
        }
        Ok(())
    })?;
    let kind = kind.ok_or_else(|| Fault::required(at, "type"))?;
    if !kind.is("function") {
        return Err(Fault::at(kind.at(), format!("'{}' has no Anthropic counterpart", kind.text())));
    }
    let function = function.ok_or_else(|| Fault::required(at, "function"))?;
    let name = name.ok_or_else(|| Fault::required(function, "name"))?;
    Ok(ToolChoice { mode: AnChoice::Tool, name: Some(name), disable_parallel: false, at })
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A message's content: a string or a (validated, unread) array of parts.
#[derive(Clone, Copy)]
enum Content<'a> {
    Text(Str<'a>),
    Parts(&'a [u8]),
}

fn read_content<'a>(s: &mut Scan<'a>) -> R<Content<'a>> {
    match s.peek()? {
        b'"' => Ok(Content::Text(s.string()?)),
        b'[' => Ok(Content::Parts(s.raw_array()?)),
        _ => Err(s.fault("must be a string or an array of parts")),
    }
}

/// The message fields read (the others, `name`, `reasoning_content` and `annotations` among them,
/// are dropped). Their order is the `M_*` bit order.
const MESSAGE_KEYS: &[&str] =
    &["role", "content", "tool_calls", "tool_call_id", "refusal", "audio", "function_call", "cache_control"];
const M_CONTENT: u64 = 1 << 1;
const M_TOOL_CALLS: u64 = 1 << 2;
const M_TOOL_CALL_ID: u64 = 1 << 3;
const M_REFUSAL: u64 = 1 << 4;
const M_AUDIO: u64 = 1 << 5;
const M_FUNCTION_CALL: u64 = 1 << 6;
const M_CACHE: u64 = 1 << 7;

/// One OpenAI message, read before it is written (its keys may come in any order).
struct Message<'a> {
    seen: Seen<8>,
    role: Role,
    /// The role as the caller wrote it (`system` or `developer` both hoist).
    role_name: Str<'a>,
    content: Option<Content<'a>>,
    /// Number of tool calls, already written as `tool_use` blocks (comma separated) into the
    /// `calls` buffer given to [`read_message`]: in the same pass, as most of an agent's history
    /// is tool calls.
    tool_calls: Option<usize>,
    tool_call_id: Option<Str<'a>>,
    refusal: Option<Str<'a>>,
    /// A `cache_control` on the message itself (LiteLLM takes one there for string content).
    cache: Option<CacheControl<'a>>,
}

impl<'a> Message<'a> {
    fn content(&self) -> R<Content<'_>> {
        self.seen.required(self.content, "content")
    }

    /// The message's own `cache_control`, for its one block of text: kept when the content is a
    /// non-empty string (the block it becomes); with parts, whose own breakpoints say where they
    /// go, or with an empty text, it is dropped and reported.
    fn cache_for_text(&self) -> Option<CacheControl<'a>> {
        let cache = self.cache?;
        match self.content {
            Some(Content::Text(t)) if !t.raw.is_empty() => Some(cache),
            _ => {
                dropped_at(self.seen.addr(M_CACHE));
                None
            }
        }
    }
}

fn read_message<'a>(s: &mut Scan<'a>, calls: &mut Vec<u8>, args: &mut Vec<u8>) -> R<Message<'a>> {
    calls.clear();
    let (mut role, mut content, mut tool_calls, mut tool_call_id, mut refusal) = (None, None, None, None, None);
    let mut cache = None;
    let seen = Seen::read(s, MESSAGE_KEYS, |key, s| {
        match key {
            "role" => role = Some(s.string()?),
            "content" => content = Some(read_content(s)?),
            "tool_calls" => {
                s.arr()?;
                let (mut f, mut fo, mut n) = (true, true, 0);
                while s.item(&mut f)? {
                    sep(calls, &mut fo);
                    tool_call(s, calls, args)?;
                    n += 1;
                }
                tool_calls = Some(n);
            }
            "tool_call_id" => tool_call_id = Some(s.string()?),
            "refusal" => refusal = Some(s.string()?),
            "cache_control" => cache = read_cache_control(s)?,
            // audio, function_call: refused on assistant messages, dropped on others.
            _ => s.skip(0)?,
        }
        Ok(())
    })?;
    let role_name = seen.required(role, "role")?;
    let role = match &*role_name.bytes() {
        b"system" | b"developer" => Role::System,
        b"user" => Role::User,
        b"assistant" => Role::Assistant,
        b"tool" => Role::Tool,
        b"function" => {
            return Err(Fault::at(role_name.at(), "the legacy function role is not translated; use tool messages"));
        }
        _ => return Err(Fault::at(role_name.at(), format!("unknown role '{}'", role_name.text()))),
    };
    Ok(Message { seen, role, role_name, content, tool_calls, tool_call_id, refusal, cache })
}

/// Messages: system and developer texts are hoisted into `system`; tool results (and a user
/// message right after them) are merged into one user message.
fn messages(s: &mut Scan<'_>, out: &mut Vec<u8>, system: &mut Vec<u8>) -> R<()> {
    s.arr()?;
    out.push(b'[');
    let mut first = true;
    let mut first_out = true;
    let mut first_system = system.is_empty();
    // The last message written is a user message of tool results, still open (`]}` not written),
    // that a following tool or user message joins.
    let mut open_results = false;
    let (mut calls, mut args) = (Vec::new(), Vec::new());
    let mut index = 0;
    while s.item(&mut first)? {
        // Every eighth message is anchor enough: a path walk then crosses at most seven.
        if index % MESSAGES_PER_ANCHOR == 0 {
            anchor(s.here(), "messages", Some(index));
        }
        index += 1;
        let m = read_message(s, &mut calls, &mut args)?;
        match m.role {
            Role::System => {
                m.seen.drop_all_but(M_CONTENT | M_CACHE);
                let cache = m.cache_for_text();
                match m.content()? {
                    Content::Text(t) => {
                        if !t.raw.is_empty() {
                            sep(system, &mut first_system);
                            text_block_into(system, t);
                            put_cache_control(system, cache);
                        }
                    }
                    Content::Parts(raw) => {
                        let what = format!("a {} message", m.role_name.text());
                        let mut ps = Scan::new(raw);
                        ps.arr()?;
                        let mut f = true;
                        while ps.item(&mut f)? {
                            let (t, cache) = text_part(&mut ps, &what)?;
                            if !t.raw.is_empty() {
                                sep(system, &mut first_system);
                                text_block_into(system, t);
                                put_cache_control(system, cache);
                            }
                        }
                    }
                }
            }
            Role::User => {
                m.seen.drop_all_but(M_CONTENT | M_CACHE);
                let cache = m.cache_for_text();
                let content = m.content()?;
                if open_results {
                    user_content(content, cache, out, true)?;
                    out.extend_from_slice(b"]}");
                } else {
                    sep(out, &mut first_out);
                    out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
                    user_content(content, cache, out, false)?;
                    out.push(b'}');
                }
                open_results = false;
            }
            Role::Assistant => {
                m.seen.drop_all_but(M_CONTENT | M_TOOL_CALLS | M_REFUSAL | M_AUDIO | M_FUNCTION_CALL | M_CACHE);
                if m.seen.has(M_AUDIO) {
                    return Err(Fault::at(
                        m.seen.addr(M_AUDIO),
                        "earlier audio replies cannot be sent to an Anthropic model",
                    ));
                }
                if m.seen.has(M_FUNCTION_CALL) {
                    return Err(Fault::at(
                        m.seen.addr(M_FUNCTION_CALL),
                        "legacy function_call is not translated; use tool_calls",
                    ));
                }
                if open_results {
                    out.extend_from_slice(b"]}");
                    open_results = false;
                }
                let (mark, was_first) = (out.len(), first_out);
                sep(out, &mut first_out);
                if !assistant(&m, &calls, out)? {
                    // An assistant turn with nothing in it says nothing, and Anthropic refuses
                    // empty content (but in a last message): it is left out.
                    out.truncate(mark);
                    first_out = was_first;
                }
            }
            Role::Tool => {
                m.seen.drop_all_but(M_CONTENT | M_TOOL_CALL_ID | M_CACHE);
                let cache = m.cache_for_text();
                let id = m.seen.required(m.tool_call_id, "tool_call_id")?;
                let content = m.content()?;
                if open_results {
                    out.push(b',');
                } else {
                    sep(out, &mut first_out);
                    out.extend_from_slice(b"{\"role\":\"user\",\"content\":[");
                }
                out.extend_from_slice(b"{\"type\":\"tool_result\",\"tool_use_id\":");
                put_str(out, id);
                out.extend_from_slice(b",\"content\":");
                match content {
                    Content::Text(t) => put_str(out, t),
                    Content::Parts(raw) => {
                        out.push(b'[');
                        let mut ps = Scan::new(raw);
                        ps.arr()?;
                        let (mut f, mut fo) = (true, true);
                        while ps.item(&mut f)? {
                            sep(out, &mut fo);
                            let (t, cache) = text_part(&mut ps, "a tool message")?;
                            text_block_into(out, t);
                            put_cache_control(out, cache);
                        }
                        out.push(b']');
                    }
                }
                out.push(b'}');
                put_cache_control(out, cache);
                open_results = true;
            }
        }
    }
    if open_results {
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
    Ok(())
}

/// `{"type":"text","text":...}`.
fn text_block_into(out: &mut Vec<u8>, t: Str<'_>) {
    out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
    put_str(out, t);
    out.push(b'}');
}

/// The payload fields of a content part, in `P_*` bit order after `type`, and `cache_control`.
const PART_KEYS: &[&str] = &["type", "text", "refusal", "image_url", "file", "input_audio", "cache_control"];
const P_TEXT: u64 = 1 << 1;
const P_REFUSAL: u64 = 1 << 2;
const P_IMAGE_URL: u64 = 1 << 3;
const P_FILE: u64 = 1 << 4;
const P_CACHE: u64 = 1 << 6;

/// A `cache_control` on a content part or a tool: Anthropic's prompt-cache breakpoint, which the
/// OpenAI dialect has no word for. The OpenAI-compatible gateways in front of Claude (LiteLLM,
/// OpenRouter, Portkey) take it there, so callers written for them send it; without it a Claude
/// model caches nothing and every turn of an agent pays its whole prompt again.
#[derive(Clone, Copy)]
struct CacheControl<'a> {
    kind: Str<'a>,
    ttl: Option<Str<'a>>,
}

/// Reads a `cache_control`. Only an object with a `type` can be written again exactly; anything
/// else is dropped and reported (as the field was before it was read), never a 400. Its `type`
/// and `ttl` go as written (Anthropic checks them); other keys are dropped and reported.
fn read_cache_control<'a>(s: &mut Scan<'a>) -> R<Option<CacheControl<'a>>> {
    let at = s.here();
    if s.peek()? != b'{' {
        dropped_at(at);
        s.skip(0)?;
        return Ok(None);
    }
    let (mut kind, mut ttl) = (None, None);
    fields(s, &["type", "ttl"], &mut [], |key, s| {
        match key {
            "type" => kind = Some(s.string()?),
            _ => ttl = Some(s.string()?),
        }
        Ok(())
    })?;
    if kind.is_none() {
        dropped_at(at);
    }
    Ok(kind.map(|kind| CacheControl { kind, ttl }))
}

/// Gives the block or tool just written (it ends with `}`) its `cache_control`, if any.
fn put_cache_control(out: &mut Vec<u8>, cache: Option<CacheControl<'_>>) {
    let Some(CacheControl { kind, ttl }) = cache else { return };
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    out.extend_from_slice(b",\"cache_control\":{\"type\":");
    put_str(out, kind);
    if let Some(ttl) = ttl {
        out.extend_from_slice(b",\"ttl\":");
        put_str(out, ttl);
    }
    out.extend_from_slice(b"}}");
}

/// A `file` part's object.
#[derive(Clone, Copy)]
struct FilePart<'a> {
    at: usize,
    data: Option<Str<'a>>,
    name: Option<Str<'a>>,
    /// Where a `file_id` stands (refused: a file uploaded to OpenAI).
    id: Option<usize>,
}

/// One OpenAI content part, read before it is written.
struct Part<'a> {
    seen: Seen<7>,
    kind: Str<'a>,
    text: Option<Str<'a>>,
    refusal: Option<Str<'a>>,
    /// `image_url`: where it stands, and its `url`.
    image_url: Option<(usize, Option<Str<'a>>)>,
    file: Option<FilePart<'a>>,
    cache: Option<CacheControl<'a>>,
}

impl<'a> Part<'a> {
    /// The part's `cache_control` for a block of text `t`: none on an empty text, which is left
    /// out or refused with a breakpoint on it (so the breakpoint is reported as dropped).
    fn cache_for_text(&self, t: Str<'_>) -> Option<CacheControl<'a>> {
        if t.raw.is_empty() && self.cache.is_some() {
            dropped_at(self.seen.addr(P_CACHE));
            return None;
        }
        self.cache
    }
}

fn read_part<'a>(s: &mut Scan<'a>) -> R<Part<'a>> {
    let (mut kind, mut text, mut refusal, mut image_url, mut file, mut cache) = (None, None, None, None, None, None);
    let seen = Seen::read(s, PART_KEYS, |key, s| {
        match key {
            "type" => kind = Some(s.string()?),
            "text" => text = Some(s.string()?),
            "refusal" => refusal = Some(s.string()?),
            "image_url" => {
                let at = s.here();
                let mut url = None;
                // `detail` has no Anthropic counterpart: dropped.
                fields(s, &["url"], &mut [], |_, s| {
                    url = Some(s.string()?);
                    Ok(())
                })?;
                image_url = Some((at, url));
            }
            "file" => {
                let at = s.here();
                let (mut data, mut name, mut id) = (None, None, None);
                fields(s, &["file_data", "filename", "file_id"], &mut [], |key, s| {
                    match key {
                        "file_data" => data = Some(s.string()?),
                        "filename" => name = Some(s.string()?),
                        _ => {
                            id = Some(s.here());
                            s.skip(0)?;
                        }
                    }
                    Ok(())
                })?;
                file = Some(FilePart { at, data, name, id });
            }
            "cache_control" => cache = read_cache_control(s)?,
            _ => s.skip(0)?, // input_audio: refused on user messages, dropped elsewhere
        }
        Ok(())
    })?;
    let kind = seen.required(kind, "type")?;
    Ok(Part { seen, kind, text, refusal, image_url, file, cache })
}

/// A part that must be text (system, developer and tool messages): its text and breakpoint.
fn text_part<'a>(s: &mut Scan<'a>, what: &str) -> R<(Str<'a>, Option<CacheControl<'a>>)> {
    let p = read_part(s)?;
    if !p.kind.is("text") {
        return Err(Fault::at(p.kind.at(), format!("only text parts are allowed in {what}")));
    }
    p.seen.drop_all_but(P_TEXT | P_CACHE);
    let t = p.seen.required(p.text, "text")?;
    Ok((t, p.cache_for_text(t)))
}

/// A user part as an Anthropic block.
fn user_block(s: &mut Scan<'_>, out: &mut Vec<u8>) -> R<()> {
    let p = read_part(s)?;
    match &*p.kind.bytes() {
        b"text" => {
            p.seen.drop_all_but(P_TEXT | P_CACHE);
            let t = p.seen.required(p.text, "text")?;
            text_block_into(out, t);
            put_cache_control(out, p.cache_for_text(t));
        }
        b"image_url" => {
            p.seen.drop_all_but(P_IMAGE_URL | P_CACHE);
            let (at, url) = p.seen.required(p.image_url, "image_url")?;
            let url = url.ok_or_else(|| Fault::required(at, "url"))?;
            // Bytes, not text: a megabyte of base64 is not validated as UTF-8 a second time.
            let text = url.bytes();
            if let Some((media, data)) = data_url(&text) {
                out.extend_from_slice(b"{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":");
                put_piece(out, url, &text, media);
                out.extend_from_slice(b",\"data\":");
                put_piece(out, url, &text, data);
                out.extend_from_slice(b"}}");
            } else if is_http_url(&text) {
                out.extend_from_slice(b"{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":");
                put_str(out, url);
                out.extend_from_slice(b"}}");
            } else {
                return Err(Fault::at(url.at(), "must be an http(s) URL or a data:<media type>;base64,<data> URL"));
            }
            put_cache_control(out, p.cache);
        }
        b"file" => {
            p.seen.drop_all_but(P_FILE | P_CACHE);
            let FilePart { at, data, name, id } = p.seen.required(p.file, "file")?;
            if let Some(id) = id {
                return Err(Fault::at(
                    id,
                    "files uploaded to OpenAI cannot be used with an Anthropic model; send file_data",
                ));
            }
            let data = data.ok_or_else(|| Fault::required(at, "file_data"))?;
            let text = data.bytes();
            let pdf = data_url(&text).filter(|(media, _)| {
                text.get(media.clone()).is_some_and(|m| m.eq_ignore_ascii_case(b"application/pdf"))
            });
            let Some((_, payload)) = pdf else {
                return Err(Fault::at(
                    data.at(),
                    "must be a data:application/pdf;base64,<data> URL (Anthropic takes PDF documents)",
                ));
            };
            out.extend_from_slice(
                b"{\"type\":\"document\",\"source\":{\"type\":\"base64\",\"media_type\":\"application/pdf\",\"data\":",
            );
            put_piece(out, data, &text, payload);
            out.push(b'}');
            if let Some(name) = name {
                out.extend_from_slice(b",\"title\":");
                put_str(out, name);
            }
            out.push(b'}');
            put_cache_control(out, p.cache);
        }
        b"input_audio" => return Err(Fault::at(p.kind.at(), "Anthropic models do not take audio input")),
        _ => return Err(Fault::at(p.kind.at(), format!("'{}' parts are not valid in a user message", p.kind.text()))),
    }
    Ok(())
}

/// User content as Anthropic content (`"text"` or `[blocks]`), or appended as blocks to an open
/// tool-results message (`append`).
/// `cache` is the message's own breakpoint (string content only: `Message::cache_for_text`).
fn user_content(content: Content<'_>, cache: Option<CacheControl<'_>>, out: &mut Vec<u8>, append: bool) -> R<()> {
    match content {
        Content::Text(t) if append => {
            out.push(b',');
            text_block_into(out, t);
            put_cache_control(out, cache);
        }
        Content::Text(t) if cache.is_some() => {
            out.push(b'[');
            text_block_into(out, t);
            put_cache_control(out, cache);
            out.push(b']');
        }
        Content::Text(t) => put_str(out, t),
        Content::Parts(raw) => {
            if !append {
                out.push(b'[');
            }
            let mut s = Scan::new(raw);
            s.arr()?;
            let (mut f, mut fo) = (true, !append);
            while s.item(&mut f)? {
                sep(out, &mut fo);
                user_block(&mut s, out)?;
            }
            if !append {
                out.push(b']');
            }
        }
    }
    Ok(())
}

/// An assistant message: `"content":"text"` when it is only text, else blocks (texts, refusal,
/// tool uses, in that order).
/// Writes an assistant message; false when it has no content at all (nothing usable written).
fn assistant(m: &Message<'_>, rendered_calls: &[u8], out: &mut Vec<u8>) -> R<bool> {
    let calls = m.tool_calls.filter(|&n| n > 0);
    let cache = m.cache_for_text();
    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
    if let (Some(Content::Text(t)), None, None, None) = (m.content, calls, m.refusal, cache) {
        put_str(out, t);
        out.push(b'}');
        return Ok(!t.raw.is_empty());
    }
    if m.content.is_none() && calls.is_none() && m.refusal.is_none() {
        return Err(Fault::under(m.seen.at, "content", "an assistant message needs content or tool_calls"));
    }
    let start = out.len();
    out.push(b'[');
    let mut fo = true;
    match m.content {
        Some(Content::Text(t)) => text_block(out, t, cache, &mut fo),
        Some(Content::Parts(raw)) => {
            let mut ps = Scan::new(raw);
            ps.arr()?;
            let mut f = true;
            while ps.item(&mut f)? {
                let p = read_part(&mut ps)?;
                let t = match &*p.kind.bytes() {
                    b"text" => {
                        p.seen.drop_all_but(P_TEXT | P_CACHE);
                        p.seen.required(p.text, "text")?
                    }
                    b"refusal" => {
                        p.seen.drop_all_but(P_REFUSAL | P_CACHE);
                        p.seen.required(p.refusal, "refusal")?
                    }
                    _ => {
                        return Err(Fault::at(
                            p.kind.at(),
                            format!("'{}' parts are not valid in an assistant message", p.kind.text()),
                        ))
                    }
                };
                text_block(out, t, p.cache_for_text(t), &mut fo);
            }
        }
        None => {}
    }
    if let Some(r) = m.refusal {
        text_block(out, r, None, &mut fo);
    }
    if calls.is_some() {
        sep(out, &mut fo);
        out.extend_from_slice(rendered_calls);
    }
    if fo {
        out.truncate(start);
        out.extend_from_slice(b"\"\"}");
        return Ok(false);
    }
    out.extend_from_slice(b"]}");
    Ok(true)
}

/// A text block, unless the text is empty (Anthropic refuses empty text blocks).
fn text_block(out: &mut Vec<u8>, t: Str<'_>, cache: Option<CacheControl<'_>>, fo: &mut bool) {
    if !t.raw.is_empty() {
        sep(out, fo);
        text_block_into(out, t);
        put_cache_control(out, cache);
    }
}

/// An assistant tool call as a `tool_use` block; `arguments` (a JSON text in a string) becomes
/// the `input` object.
fn tool_call(s: &mut Scan<'_>, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> R<()> {
    let at = s.here();
    let (mut id, mut kind, mut function, mut name, mut arguments) = (None, None, None, None, None);
    fields(s, &["id", "type", "function"], &mut [], |key, s| {
        match key {
            "id" => id = Some(s.string()?),
            "type" => kind = Some(s.string()?),
            _ => {
                function = Some(s.here());
                fields(s, &["name", "arguments"], &mut [], |key, s| {
                    match key {
                        "name" => name = Some(s.string()?),
                        _ => arguments = Some(s.string()?),
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    })?;
    if let Some(kind) = kind.filter(|k| !k.is("function")) {
        return Err(Fault::at(kind.at(), format!("'{}' tool calls have no Anthropic counterpart", kind.text())));
    }
    let id = id.ok_or_else(|| Fault::required(at, "id"))?;
    let function = function.ok_or_else(|| Fault::required(at, "function"))?;
    let name = name.ok_or_else(|| Fault::required(function, "name"))?;
    let arguments = arguments.ok_or_else(|| Fault::required(function, "arguments"))?;
    out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
    put_str(out, id);
    out.extend_from_slice(b",\"name\":");
    put_str(out, name);
    out.extend_from_slice(b",\"input\":");
    let text: &[u8] = if arguments.escaped {
        scratch.clear();
        // A string `Scan::string` validated: its escapes resolve.
        let _ = unescape_into(arguments.raw, scratch);
        scratch
    } else {
        arguments.raw
    };
    // Faults inside the arguments' text are about the `arguments` string in the body.
    let refuse = |f: &str| Fault::at(arguments.at(), format!("the arguments string is not a valid JSON object ({f})"));
    let mut a = Scan::new(text);
    a.ws();
    if a.i == text.len() {
        out.extend_from_slice(b"{}");
    } else {
        if a.peek().map_err(|_| refuse("empty"))? != b'{' {
            return Err(Fault::at(arguments.at(), "must be a JSON object"));
        }
        let input = a.raw_value().map_err(|f| refuse(f.message()))?;
        a.end().map_err(|f| refuse(f.message()))?;
        out.extend_from_slice(input);
    }
    out.push(b'}');
    Ok(())
}
