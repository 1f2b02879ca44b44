//! Anthropic messages request → OpenAI chat-completions request, in one pass over the body. The
//! rules, and what is dropped or refused, are listed in `request/mod.rs` and the README.
//! Imports: `scan` and `request/mod.rs`'s shared helpers. Not the answer or stream translators,
//! `proxy` or Pingora.

use super::super::scan::{
    anchor, dropped_at, fields, put_json_as_string, put_str, put_text, put_uint, sep, Fault, Scan, Seen, Str, R,
};
use super::super::RequestOptions;
use super::fit_openai_user;
use super::MESSAGES_PER_ANCHOR;

/// The request's fields this side reads. Any other field is dropped and reported
/// (`context_management`, `service_tier`, `cache_control`, `inference_geo`, `speed`, ...).
const REQUEST_KEYS: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "output_config",
    "output_format",
    "top_k",
    "container",
    "mcp_servers",
];

/// Request fields with no OpenAI counterpart that change the answer: a 400 when present.
fn refused(key: &str) -> Option<&'static str> {
    Some(match key {
        "top_k" => "OpenAI has no top_k",
        "container" => "Anthropic code-execution containers have no OpenAI counterpart",
        "mcp_servers" => "Anthropic's MCP connector has no OpenAI chat-completions counterpart",
        _ => return None,
    })
}

/// OpenAI takes at most this many stop sequences.
const OPENAI_MAX_STOP: usize = 4;

pub(super) fn translate(body: &[u8], opts: &RequestOptions<'_>) -> R<Vec<u8>> {
    let mut s = Scan::new(body);
    let top = s.here();
    // Room for the other dialect's longer keys, so the buffer is not regrown as it fills.
    let mut out = Vec::with_capacity(body.len() + body.len() / 4 + 256);
    out.extend_from_slice(b"{\"model\":");
    put_text(&mut out, opts.upstream_model);

    let mut messages_at = None;
    let mut system: Option<Vec<u8>> = None;
    let (mut max_tokens, mut temperature, mut top_p, mut stream, mut user) = (None, None, None, None, None);
    let (mut effort, mut tool_choice, mut parallel) = (None, None, false);
    let (mut config_effort, mut format, mut deprecated_format) = (None, None, None);
    let mut scratch = Scratch::default();

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
                out.extend_from_slice(b",\"messages\":[");
                messages_at = Some(out.len());
                messages(s, &mut out, &mut scratch)?;
                out.push(b']');
            }
            "system" => system = system_message(s, "system")?,
            "max_tokens" => max_tokens = Some(s.uint()?),
            "temperature" => temperature = Some(s.number()?),
            "top_p" => top_p = Some(s.number()?),
            "stop_sequences" => {
                let at = s.here();
                let start = out.len();
                out.extend_from_slice(b",\"stop\":[");
                s.arr()?;
                let (mut f, mut fo) = (true, true);
                let mut n = 0;
                while s.item(&mut f)? {
                    sep(&mut out, &mut fo);
                    put_str(&mut out, s.string()?);
                    n += 1;
                }
                if n > OPENAI_MAX_STOP {
                    return Err(Fault::at(at, "OpenAI accepts at most 4 stop sequences"));
                }
                if n == 0 {
                    out.truncate(start);
                } else {
                    out.push(b']');
                }
            }
            "stream" => stream = Some(s.boolean()?),
            // `user_id` is OpenAI's `user`; other keys are dropped (OpenAI's `metadata` means
            // stored-completion tags, not this).
            "metadata" => {
                fields(s, &["user_id"], &mut [], |_, s| {
                    user = Some(s.string()?);
                    Ok(())
                })?;
            }
            "tools" => tools(s, &mut out)?,
            "tool_choice" => (tool_choice, parallel) = read_tool_choice(s)?,
            "thinking" => effort = thinking(s)?,
            "output_config" => {
                fields(s, &["effort", "format"], &mut [], |key, s| {
                    match key {
                        "effort" => {
                            let e = s.string()?;
                            match &*e.text() {
                                "low" | "medium" | "high" | "xhigh" | "max" => config_effort = Some(e),
                                other => {
                                    return Err(Fault::at(
                                        e.at(),
                                        format!("'{other}' is not an effort (low, medium, high, xhigh, max)"),
                                    ))
                                }
                            }
                        }
                        _ => format = Some(structured_format(s)?),
                    }
                    Ok(())
                })?;
            }
            // The structured-outputs beta's name for `output_config.format` (deprecated, still sent).
            "output_format" => deprecated_format = Some(structured_format(s)?),
            _ => unreachable!("every key of REQUEST_KEYS has an arm"),
        }
        Ok(())
    })?;
    s.end()?;
    let messages_at = messages_at.ok_or_else(|| Fault::required(top, "messages"))?;

    out.extend_from_slice(b",\"max_completion_tokens\":");
    put_uint(&mut out, max_tokens.ok_or_else(|| Fault::required(top, "max_tokens"))?);
    if let Some(t) = temperature {
        out.extend_from_slice(b",\"temperature\":");
        out.extend_from_slice(t);
    }
    if let Some(p) = top_p {
        out.extend_from_slice(b",\"top_p\":");
        out.extend_from_slice(p);
    }
    match stream {
        Some(true) => out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}"),
        Some(false) => out.extend_from_slice(b",\"stream\":false"),
        None => {}
    }
    if let Some(u) = user {
        out.extend_from_slice(b",\"user\":");
        // Its unescaped length is at most its escaped one: only a long one is read and fitted.
        if u.raw.len() <= super::OPENAI_USER_MAX {
            put_str(&mut out, u);
        } else {
            put_text(&mut out, &fit_openai_user(u.text()));
        }
    }
    if let Some(c) = tool_choice {
        out.extend_from_slice(b",\"tool_choice\":");
        out.extend_from_slice(&c);
    }
    if parallel {
        out.extend_from_slice(b",\"parallel_tool_calls\":false");
    }
    // The caller's explicit effort wins over one derived from a thinking budget.
    if let Some(e) = config_effort {
        out.extend_from_slice(b",\"reasoning_effort\":");
        put_str(&mut out, e);
    } else if let Some(e) = effort {
        out.extend_from_slice(b",\"reasoning_effort\":\"");
        out.extend_from_slice(e);
        out.push(b'"');
    }
    if let Some(schema) = format.or(deprecated_format) {
        // Anthropic's structured output always holds to its schema: OpenAI's strict mode, where
        // OpenAI takes the schema (`openai_strict_accepts`).
        out.extend_from_slice(
            b",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"output\",\"schema\":",
        );
        out.extend_from_slice(schema);
        out.extend_from_slice(if openai_strict_accepts(schema) {
            b",\"strict\":true}}"
        } else {
            b",\"strict\":false}}"
        });
    }
    out.push(b'}');

    // The system message leads the messages, wherever `system` stood in the body.
    if let Some(mut sys) = system {
        if out.get(messages_at) != Some(&b']') {
            sys.push(b',');
        }
        // One memmove of the tail (`Vec::splice` moves it byte by byte).
        let tail = out.len() - messages_at;
        out.extend_from_slice(&sys);
        out.copy_within(messages_at..messages_at + tail, messages_at + sys.len());
        out[messages_at..messages_at + sys.len()].copy_from_slice(&sys);
    }
    Ok(out)
}

/// Buffers reused across messages.
#[derive(Default)]
struct Scratch {
    tools: Vec<u8>,
    texts: Vec<u8>,
    calls: Vec<u8>,
}

/// `system` (or a mid-conversation system turn's content) as an OpenAI system message; `None`
/// for an empty block list. Block texts are joined with a blank line.
fn system_message(s: &mut Scan<'_>, what: &str) -> R<Option<Vec<u8>>> {
    let mut msg = Vec::with_capacity(256);
    msg.extend_from_slice(b"{\"role\":\"system\",\"content\":");
    match s.peek()? {
        b'"' => put_str(&mut msg, s.string()?),
        b'[' => {
            msg.push(b'"');
            s.arr()?;
            let mut f = true;
            let mut n = 0;
            while s.item(&mut f)? {
                if n > 0 {
                    msg.extend_from_slice(b"\\n\\n");
                }
                msg.extend_from_slice(text_block(s, what)?.raw);
                n += 1;
            }
            if n == 0 {
                return Ok(None);
            }
            msg.push(b'"');
        }
        _ => return Err(s.fault("must be a string or an array of text blocks")),
    }
    msg.push(b'}');
    Ok(Some(msg))
}

/// A block that must be a text block (`system`, system turns); returns its text.
fn text_block<'a>(s: &mut Scan<'a>, what: &str) -> R<Str<'a>> {
    let b = read_block(s)?;
    if !b.kind.is("text") {
        return Err(Fault::at(b.kind.at(), format!("only text blocks are allowed in {what}")));
    }
    b.seen.drop_all_but(B_TEXT);
    b.seen.required(b.text, "text")
}

fn tools(s: &mut Scan<'_>, out: &mut Vec<u8>) -> R<()> {
    out.extend_from_slice(b",\"tools\":[");
    s.arr()?;
    let (mut first, mut fo) = (true, true);
    let mut index = 0;
    while s.item(&mut first)? {
        let at = s.here();
        anchor(at, "tools", Some(index));
        index += 1;
        let (mut name, mut description, mut schema, mut strict) = (None, None, None, None);
        // `cache_control`, `defer_loading`, `eager_input_streaming`, `input_examples`,
        // `allowed_callers`: no OpenAI counterpart, dropped.
        fields(s, &["type", "name", "description", "input_schema", "strict"], &mut [], |key, s| {
            match key {
                "type" => {
                    let kind = s.string()?;
                    if !kind.is("custom") {
                        return Err(Fault::at(
                            at,
                            format!("Anthropic server tool '{}' has no OpenAI counterpart", kind.text()),
                        ));
                    }
                }
                "name" => name = Some(s.string()?),
                "description" => description = Some(s.string()?),
                "input_schema" => schema = Some(s.raw_value()?),
                _ => strict = Some(s.boolean()?),
            }
            Ok(())
        })?;
        sep(out, &mut fo);
        out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
        put_str(out, name.ok_or_else(|| Fault::required(at, "name"))?);
        if let Some(d) = description {
            out.extend_from_slice(b",\"description\":");
            put_str(out, d);
        }
        out.extend_from_slice(b",\"parameters\":");
        out.extend_from_slice(schema.ok_or_else(|| Fault::required(at, "input_schema"))?);
        if let Some(strict) = strict {
            out.extend_from_slice(if strict { b",\"strict\":true" } else { b",\"strict\":false" });
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    Ok(())
}

/// `tool_choice` → the OpenAI choice's JSON and whether parallel tool calls are turned off.
fn read_tool_choice(s: &mut Scan<'_>) -> R<(Option<Vec<u8>>, bool)> {
    let at = s.here();
    let (mut kind, mut name, mut disable) = (None, None, None);
    fields(s, &["type", "name", "disable_parallel_tool_use"], &mut [], |key, s| {
        match key {
            "type" => kind = Some(s.string()?),
            "name" => name = Some(s.string()?),
            _ => disable = Some(s.boolean()?),
        }
        Ok(())
    })?;
    let kind = kind.ok_or_else(|| Fault::required(at, "type"))?;
    let kind_text = kind.text();
    if let Some(name) = name.filter(|_| kind_text != "tool") {
        return Err(Fault::at(name.at(), format!("not valid with tool_choice type '{kind_text}'")));
    }
    let choice = match &*kind_text {
        "auto" => b"\"auto\"".to_vec(),
        "any" => b"\"required\"".to_vec(),
        "none" => b"\"none\"".to_vec(),
        "tool" => {
            let mut c = b"{\"type\":\"function\",\"function\":{\"name\":".to_vec();
            put_str(&mut c, name.ok_or_else(|| Fault::required(at, "name"))?);
            c.extend_from_slice(b"}}");
            c
        }
        other => return Err(Fault::at(kind.at(), format!("unknown tool_choice type '{other}'"))),
    };
    Ok((Some(choice), disable == Some(true) && kind_text != "none"))
}

/// Whether OpenAI's strict mode takes `schema` as it is: every object closed
/// (`additionalProperties: false`) and every one of its properties in `required`. Anthropic's
/// structured output takes optional properties (a pydantic `Optional` field with a default is one);
/// OpenAI's strict mode answers 400 for the whole request. Such a schema goes with `strict: false`:
/// the model is asked for it, without OpenAI's guarantee.
fn openai_strict_accepts(schema: &[u8]) -> bool {
    fn closed(v: &serde_json::Value) -> bool {
        use serde_json::Value;
        let Value::Object(m) = v else { return true };
        let subschemas = |key: &str| -> Vec<&Value> {
            match m.get(key) {
                Some(Value::Object(map)) if matches!(key, "properties" | "$defs" | "definitions") => {
                    map.values().collect()
                }
                Some(Value::Array(list)) => list.iter().collect(),
                Some(one @ Value::Object(_)) => vec![one],
                _ => Vec::new(),
            }
        };
        let is_object = m.get("type").and_then(Value::as_str) == Some("object") || m.contains_key("properties");
        if is_object {
            let required: Vec<&str> =
                m.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let all_required = match m.get("properties") {
                Some(Value::Object(p)) => p.keys().all(|k| required.contains(&k.as_str())),
                _ => true,
            };
            if m.get("additionalProperties") != Some(&Value::Bool(false)) || !all_required {
                return false;
            }
        }
        ["properties", "$defs", "definitions", "items", "prefixItems", "anyOf", "allOf", "oneOf", "not"]
            .into_iter()
            .flat_map(subschemas)
            .all(closed)
    }
    serde_json::from_slice(schema).is_ok_and(|v| closed(&v))
}

/// A structured-output format (`output_config.format`, `output_format`): its schema's bytes.
fn structured_format<'a>(s: &mut Scan<'a>) -> R<&'a [u8]> {
    let at = s.here();
    let (mut kind, mut schema) = (None, None);
    fields(s, &["type", "schema"], &mut [], |key, s| {
        match key {
            "type" => kind = Some(s.string()?),
            _ => schema = Some(s.raw_value()?),
        }
        Ok(())
    })?;
    let kind = kind.ok_or_else(|| Fault::required(at, "type"))?;
    if !kind.is("json_schema") {
        return Err(Fault::at(kind.at(), format!("'{}' is not a structured-output format", kind.text())));
    }
    schema.ok_or_else(|| Fault::required(at, "schema"))
}

/// `thinking` → `reasoning_effort` (None when disabled, or adaptive: the model decides, and
/// `output_config.effort`, when sent, says how hard).
fn thinking(s: &mut Scan<'_>) -> R<Option<&'static [u8]>> {
    let at = s.here();
    let (mut kind, mut budget) = (None, None);
    // `display` and anything newer: dropped.
    fields(s, &["type", "budget_tokens"], &mut [], |key, s| {
        match key {
            "type" => kind = Some(s.string()?),
            _ => budget = Some((s.here(), s.uint()?)),
        }
        Ok(())
    })?;
    let kind = kind.ok_or_else(|| Fault::required(at, "type"))?;
    match (&*kind.text(), budget) {
        ("enabled", Some((_, 0..=4095))) => Ok(Some(b"low")),
        ("enabled", Some((_, 4096..=16383))) => Ok(Some(b"medium")),
        ("enabled", Some(_)) => Ok(Some(b"high")),
        ("enabled", None) => Err(Fault::required(at, "budget_tokens")),
        ("adaptive", Some((b, _))) => Err(Fault::at(b, "not valid with adaptive thinking")),
        ("disabled", Some((b, _))) => Err(Fault::at(b, "not valid with thinking disabled")),
        ("adaptive" | "disabled", None) => Ok(None),
        (other, _) => Err(Fault::at(kind.at(), format!("'{other}' thinking has no OpenAI counterpart"))),
    }
}

/// A message's content: a string or a (validated, unread) array of blocks.
#[derive(Clone, Copy)]
enum Content<'a> {
    Text(Str<'a>),
    Blocks(&'a [u8]),
}

fn messages(s: &mut Scan<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> R<()> {
    s.arr()?;
    let (mut first, mut fo) = (true, true);
    let mut index = 0;
    while s.item(&mut first)? {
        let at = s.here();
        // Every eighth message is anchor enough: a path walk then crosses at most seven.
        if index % MESSAGES_PER_ANCHOR == 0 {
            anchor(at, "messages", Some(index));
        }
        index += 1;
        let (mut role, mut content, mut written) = (None, None, false);
        fields(s, &["role", "content"], &mut [], |key, s| {
            match key {
                "role" => role = Some(s.string()?),
                _ => match role {
                    // Role first (as SDKs write it): the blocks are translated in this pass.
                    Some(role) if s.peek()? == b'[' => {
                        blocks(role, s, out, &mut fo, scratch)?;
                        written = true;
                    }
                    _ => {
                        content = Some(match s.peek()? {
                            b'"' => Content::Text(s.string()?),
                            b'[' => Content::Blocks(s.raw_array()?),
                            _ => return Err(s.fault("must be a string or an array of content blocks")),
                        })
                    }
                },
            }
            Ok(())
        })?;
        if written {
            continue;
        }
        let role = role.ok_or_else(|| Fault::required(at, "role"))?;
        let content = content.ok_or_else(|| Fault::required(at, "content"))?;
        match content {
            Content::Blocks(raw) => blocks(role, &mut Scan::new(raw), out, &mut fo, scratch)?,
            Content::Text(t) => {
                let head: &[u8] = match &*role.bytes() {
                    b"user" => b"{\"role\":\"user\",\"content\":",
                    b"assistant" => b"{\"role\":\"assistant\",\"content\":",
                    b"system" => b"{\"role\":\"system\",\"content\":",
                    _ => return Err(unknown_role(role)),
                };
                sep(out, &mut fo);
                out.extend_from_slice(head);
                put_str(out, t);
                out.push(b'}');
            }
        }
    }
    Ok(())
}

fn unknown_role(role: Str<'_>) -> Fault {
    Fault::at(role.at(), format!("unknown role '{}' (user, assistant, system)", role.text()))
}

/// The block fields read, in `B_*` bit order (`thinking`, `signature`, `data` and
/// `cache_control` are not here: they are never sent, so always dropped and reported).
const BLOCK_KEYS: &[&str] = &[
    "type",
    "text",
    "source",
    "id",
    "name",
    "input",
    "tool_use_id",
    "content",
    "is_error",
    "citations",
    "title",
    "context",
];
const B_TEXT: u64 = 1 << 1;
const B_SOURCE: u64 = 1 << 2;
const B_ID: u64 = 1 << 3;
const B_NAME: u64 = 1 << 4;
const B_INPUT: u64 = 1 << 5;
const B_TOOL_USE_ID: u64 = 1 << 6;
const B_CONTENT: u64 = 1 << 7;
const B_IS_ERROR: u64 = 1 << 8;
const B_CITATIONS: u64 = 1 << 9;
const B_TITLE: u64 = 1 << 10;
const B_CONTEXT: u64 = 1 << 11;

/// A block's `content` (tool results): a string, an array of blocks, or anything else (which a
/// tool result refuses).
#[derive(Clone, Copy)]
enum BlockContent<'a> {
    Text(Str<'a>),
    Blocks(&'a [u8]),
    Other,
}

/// Any content block, read before it is written (its keys may come in any order).
#[derive(Default)]
struct Block<'a> {
    seen: Seen<12>,
    kind: Str<'a>,
    text: Option<Str<'a>>,
    /// `None` inside: the field is there but not an object.
    source: Option<Option<Source<'a>>>,
    id: Option<Str<'a>>,
    name: Option<Str<'a>>,
    input: Option<&'a [u8]>,
    tool_use_id: Option<Str<'a>>,
    content: Option<BlockContent<'a>>,
    is_error: Option<bool>,
    citations: Option<&'a [u8]>,
    title: Option<Str<'a>>,
}

impl<'a> Block<'a> {
    /// The `source`, which must be an object.
    fn source(&self) -> R<Source<'a>> {
        self.seen
            .required(self.source, "source")?
            .ok_or_else(|| Fault::at(self.seen.addr(B_SOURCE), "must be an object"))
    }
}

fn read_block<'a>(s: &mut Scan<'a>) -> R<Block<'a>> {
    let mut b = Block::default();
    let mut kind = None;
    b.seen = Seen::read(s, BLOCK_KEYS, |key, s| {
        match key {
            "type" => kind = Some(s.string()?),
            "text" => b.text = Some(s.string()?),
            "source" => {
                b.source = Some(if s.peek()? == b'{' { Some(read_source(s)?) } else { s.skip(0).map(|()| None)? })
            }
            "id" => b.id = Some(s.string()?),
            "name" => b.name = Some(s.string()?),
            "input" => b.input = Some(s.raw_value()?),
            "tool_use_id" => b.tool_use_id = Some(s.string()?),
            "content" => {
                b.content = Some(match s.peek()? {
                    b'"' => BlockContent::Text(s.string()?),
                    b'[' => BlockContent::Blocks(s.raw_array()?),
                    _ => s.skip(0).map(|()| BlockContent::Other)?,
                })
            }
            "is_error" => b.is_error = Some(s.boolean()?),
            "citations" => b.citations = Some(s.raw_value()?),
            "title" => b.title = Some(s.string()?),
            _ => s.skip(0)?, // context: refused on documents, dropped elsewhere
        }
        Ok(())
    })?;
    b.kind = b.seen.required(kind, "type")?;
    Ok(b)
}

/// A message's block array (the scanner is at its `[`), written as OpenAI messages.
fn blocks(role: Str<'_>, s: &mut Scan<'_>, out: &mut Vec<u8>, fo: &mut bool, scratch: &mut Scratch) -> R<()> {
    match &*role.bytes() {
        b"user" => user_blocks(s, out, fo, scratch),
        b"assistant" => {
            sep(out, fo);
            assistant_blocks(s, out, scratch)
        }
        // A mid-conversation system turn (newer Claude models) stays where it stands: OpenAI
        // takes a system message anywhere.
        b"system" => {
            sep(out, fo);
            match system_message(s, "a system message")? {
                Some(msg) => out.extend_from_slice(&msg),
                None => out.extend_from_slice(b"{\"role\":\"system\",\"content\":\"\"}"),
            }
            Ok(())
        }
        _ => Err(unknown_role(role)),
    }
}

/// A user message's blocks: tool results become tool messages, written first; the rest is one
/// user message of parts after them.
fn user_blocks(s: &mut Scan<'_>, out: &mut Vec<u8>, fo: &mut bool, scratch: &mut Scratch) -> R<()> {
    // Parts go straight into `out`, inside a user message opened here; tool messages (usually
    // small, where parts can be megabytes of base64) are gathered aside and put before it.
    let tools = &mut scratch.tools;
    tools.clear();
    sep(out, fo);
    let open_at = out.len();
    out.extend_from_slice(b"{\"role\":\"user\",\"content\":[");
    s.arr()?;
    let (mut f, mut fp, mut ft) = (true, true, true);
    let mut tool_messages = 0;
    while s.item(&mut f)? {
        let b = read_block(s)?;
        match &*b.kind.bytes() {
            b"text" => {
                b.seen.drop_all_but(B_TEXT);
                sep(out, &mut fp);
                out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                put_str(out, b.seen.required(b.text, "text")?);
                out.push(b'}');
            }
            b"image" => {
                b.seen.drop_all_but(B_SOURCE);
                let source = b.source()?;
                sep(out, &mut fp);
                out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
                image_url(source, out)?;
                out.extend_from_slice(b"}}");
            }
            b"document" => {
                b.seen.drop_all_but(B_SOURCE | B_CITATIONS | B_TITLE | B_CONTEXT);
                if b.seen.has(B_CONTEXT) {
                    return Err(Fault::at(b.seen.addr(B_CONTEXT), "document context has no OpenAI counterpart"));
                }
                if b.citations.is_some_and(citations_enabled) {
                    return Err(Fault::at(b.seen.addr(B_CITATIONS), "OpenAI chat completions cannot cite documents"));
                }
                let source = b.source()?;
                sep(out, &mut fp);
                document(source, b.title, out)?;
            }
            b"tool_result" => {
                b.seen.drop_all_but(B_TOOL_USE_ID | B_CONTENT | B_IS_ERROR);
                sep(tools, &mut ft);
                tools.extend_from_slice(b"{\"role\":\"tool\",\"tool_call_id\":");
                put_str(tools, b.seen.required(b.tool_use_id, "tool_use_id")?);
                tools.extend_from_slice(b",\"content\":\"");
                if b.is_error == Some(true) {
                    tools.extend_from_slice(b"Error: ");
                }
                match b.content {
                    None => {}
                    Some(BlockContent::Other) => {
                        return Err(Fault::at(b.seen.addr(B_CONTENT), "must be a string or an array of text blocks"))
                    }
                    Some(BlockContent::Text(t)) => tools.extend_from_slice(t.raw),
                    Some(BlockContent::Blocks(inner)) => tool_result_texts(inner, tools)?,
                }
                tools.extend_from_slice(b"\"}");
                tool_messages += 1;
            }
            _ => {
                return Err(Fault::at(
                    b.kind.at(),
                    format!("'{}' blocks have no OpenAI counterpart in a user message", b.kind.text()),
                ))
            }
        }
    }
    if tool_messages == 0 {
        out.extend_from_slice(b"]}");
    } else if fp {
        // Only tool results: no user message.
        out.truncate(open_at);
        out.extend_from_slice(tools);
    } else {
        out.extend_from_slice(b"]}");
        tools.push(b',');
        out.splice(open_at..open_at, tools.iter().copied());
    }
    Ok(())
}

/// A tool result's blocks, which must be text or tool references, joined with a blank line into
/// an open string. A `tool_reference` (what Claude Code's ToolSearch returns: the tool it found,
/// which Anthropic expands into that tool's definition) becomes `Tool available: NAME`; the
/// definition itself is already among the OpenAI tools (`defer_loading` is dropped).
fn tool_result_texts(inner: &[u8], out: &mut Vec<u8>) -> R<()> {
    let mut s = Scan::new(inner);
    s.arr()?;
    let mut f = true;
    let mut n = 0;
    while s.item(&mut f)? {
        let at = s.here();
        let (mut kind, mut text, mut tool_name) = (None, None, None);
        // `cache_control`, `citations`: dropped.
        fields(&mut s, &["type", "text", "tool_name"], &mut [], |key, s| {
            match key {
                "type" => kind = Some(s.string()?),
                "text" => text = Some(s.string()?),
                _ => tool_name = Some(s.string()?),
            }
            Ok(())
        })?;
        let kind = kind.ok_or_else(|| Fault::required(at, "type"))?;
        let text: &[u8] = if kind.is("text") {
            text.ok_or_else(|| Fault::required(at, "text"))?.raw
        } else if kind.is("tool_reference") {
            tool_name.ok_or_else(|| Fault::required(at, "tool_name"))?.raw
        } else {
            return Err(Fault::at(
                kind.at(),
                format!(
                    "'{}' blocks in a tool result have no OpenAI counterpart (tool messages take text only)",
                    kind.text()
                ),
            ));
        };
        if n > 0 {
            out.extend_from_slice(b"\\n\\n");
        }
        if kind.is("tool_reference") {
            out.extend_from_slice(b"Tool available: ");
        }
        out.extend_from_slice(text);
        n += 1;
    }
    Ok(())
}

/// Whether a document's `citations` turn citations on (`{"enabled": true}`).
fn citations_enabled(raw: &[u8]) -> bool {
    let mut s = Scan::new(raw);
    if s.obj().is_err() {
        return false;
    }
    let mut f = true;
    while let Ok(Some(key)) = s.any_key(&mut f) {
        if key.is("enabled") && s.boolean().ok() == Some(true) {
            return true;
        }
        if s.skip(0).is_err() {
            return false;
        }
    }
    false
}

/// The source fields read, in `S_*` bit order.
const SOURCE_KEYS: &[&str] = &["type", "media_type", "data", "url", "file_id", "content"];
const S_MEDIA_TYPE: u64 = 1 << 1;
const S_DATA: u64 = 1 << 2;
const S_URL: u64 = 1 << 3;

/// An image or document `source`.
#[derive(Clone, Copy, Default)]
struct Source<'a> {
    seen: Seen<6>,
    kind: Option<Str<'a>>,
    media: Option<Str<'a>>,
    data: Option<Str<'a>>,
    url: Option<Str<'a>>,
}

fn read_source<'a>(s: &mut Scan<'a>) -> R<Source<'a>> {
    let mut src = Source::default();
    src.seen = Seen::read(s, SOURCE_KEYS, |key, s| {
        match key {
            "type" => src.kind = Some(s.string()?),
            "media_type" => src.media = Some(s.string()?),
            "data" => src.data = Some(s.string()?),
            "url" => src.url = Some(s.string()?),
            _ => s.skip(0)?, // file_id, content: sources OpenAI cannot take (refused by type)
        }
        Ok(())
    })?;
    Ok(src)
}

/// An image `source` as an OpenAI image URL string (a data URL for base64).
fn image_url(source: Source<'_>, out: &mut Vec<u8>) -> R<()> {
    let kind = source.seen.required(source.kind, "type")?;
    match &*kind.text() {
        "base64" => {
            source.seen.drop_all_but(S_MEDIA_TYPE | S_DATA);
            let media = source.seen.required(source.media, "media_type")?;
            let data = source.seen.required(source.data, "data")?;
            // Raw (escaped) string contents mean the same inside another JSON string.
            out.extend_from_slice(b"\"data:");
            out.extend_from_slice(media.raw);
            out.extend_from_slice(b";base64,");
            out.extend_from_slice(data.raw);
            out.push(b'"');
        }
        "url" => {
            source.seen.drop_all_but(S_URL);
            put_str(out, source.seen.required(source.url, "url")?);
        }
        other => return Err(Fault::at(kind.at(), format!("'{other}' image sources have no OpenAI counterpart"))),
    }
    Ok(())
}

/// A document as an OpenAI part: a base64 PDF as a `file` part named after its title, a plain
/// text document as a text part (its title dropped).
fn document(source: Source<'_>, title: Option<Str<'_>>, out: &mut Vec<u8>) -> R<()> {
    let kind = source.seen.required(source.kind, "type")?;
    match &*kind.text() {
        "base64" => {
            source.seen.drop_all_but(S_MEDIA_TYPE | S_DATA);
            let media = source.seen.required(source.media, "media_type")?;
            if !media.text().eq_ignore_ascii_case("application/pdf") {
                return Err(Fault::at(media.at(), "OpenAI takes base64 documents as PDF only"));
            }
            let data = source.seen.required(source.data, "data")?;
            out.extend_from_slice(b"{\"type\":\"file\",\"file\":{\"filename\":");
            match title {
                Some(t) => put_str(out, t),
                None => out.extend_from_slice(b"\"document.pdf\""),
            }
            out.extend_from_slice(b",\"file_data\":\"data:application/pdf;base64,");
            out.extend_from_slice(data.raw);
            out.extend_from_slice(b"\"}}");
        }
        "text" => {
            source.seen.drop_all_but(S_MEDIA_TYPE | S_DATA);
            if let Some(t) = title {
                dropped_at(t.at());
            }
            out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
            put_str(out, source.seen.required(source.data, "data")?);
            out.push(b'}');
        }
        other => return Err(Fault::at(kind.at(), format!("'{other}' document sources have no OpenAI counterpart"))),
    }
    Ok(())
}

/// An assistant message's blocks: texts joined, tool uses as tool calls, thinking dropped.
fn assistant_blocks(s: &mut Scan<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> R<()> {
    let (texts, calls) = (&mut scratch.texts, &mut scratch.calls);
    texts.clear();
    calls.clear();
    s.arr()?;
    let (mut f, mut fc) = (true, true);
    let mut n_texts = 0;
    while s.item(&mut f)? {
        let b = read_block(s)?;
        match &*b.kind.bytes() {
            b"text" => {
                b.seen.drop_all_but(B_TEXT);
                texts.extend_from_slice(b.seen.required(b.text, "text")?.raw);
                n_texts += 1;
            }
            b"tool_use" => {
                b.seen.drop_all_but(B_ID | B_NAME | B_INPUT);
                sep(calls, &mut fc);
                calls.extend_from_slice(b"{\"id\":");
                put_str(calls, b.seen.required(b.id, "id")?);
                calls.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                put_str(calls, b.seen.required(b.name, "name")?);
                calls.extend_from_slice(b",\"arguments\":");
                put_json_as_string(calls, b.seen.required(b.input, "input")?);
                calls.extend_from_slice(b"}}");
            }
            // Unsigned thinking cannot be replayed to another provider: the block is dropped
            // (its `thinking`, `signature` and `data` are reported).
            b"thinking" | b"redacted_thinking" => b.seen.drop_all_but(0),
            _ => {
                return Err(Fault::at(
                    b.kind.at(),
                    format!("'{}' blocks have no OpenAI counterpart in an assistant message", b.kind.text()),
                ))
            }
        }
    }
    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
    if n_texts == 0 && !fc {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        out.extend_from_slice(texts);
        out.push(b'"');
    }
    if !fc {
        out.extend_from_slice(b",\"tool_calls\":[");
        out.extend_from_slice(calls);
        out.push(b']');
    }
    out.push(b'}');
    Ok(())
}
