//! The request plan: what the gateway does with a request, decided from its head, the registry
//! snapshot and its body, with no IO. The Pingora glue (`proxy/`) reads the body when the head
//! says one is needed, then carries the [`Decision`] out; every rule about *what* to do with a
//! request lives here, once.
//!
//! [`route`] classifies the method and path once, giving the route and the caller's dialect
//! together (the glue shapes every answer in that dialect, a refused route's included). Then two
//! steps, because a body is read only from an authenticated caller on a route that takes one:
//! [`plan_head`] (auth and what the head alone decides), then [`plan_body`]. [`plan`] runs all
//! three, for callers that already hold the body (the unit tests below).
//!
//! Owns: routing (`route`, with the caller's dialect), the auth order, model routing and allow-lists,
//! the count_tokens policy, the same-dialect body rewrite and the translation decision. May import
//! auth, peek, registry, dialect, error and the media route types; never `pingora::proxy`,
//! metrics or IO. Admission limits (per-key budgets) belong here too, beside auth and routing.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::RequestHeader;

use crate::auth;
use crate::content_encoding::{self, Codings};
use crate::dialect;
use crate::error::{Dialect, GatewayError};
use crate::peek::{self, Edit};
use crate::registry::{Key, Model, ModelKind, Snapshot};
use crate::tasks::styles::Media;

/// What a request asks of the gateway, from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Health,
    /// `GET /v1/models`.
    Models,
    /// `GET /v1/models/{id}` (the SDKs' `models.retrieve`).
    Model(String),
    /// Chat traffic to forward; the dialect is the endpoint's.
    Chat(Dialect),
    /// Anthropic `count_tokens`: forwarded to Anthropic upstreams, estimated for OpenAI ones.
    CountTokens,
    /// Media generation submit.
    TaskSubmit(Media),
    /// `GET /v1/tasks/{id}`.
    TaskPoll(String),
    /// `GET /v1/tasks/{id}/content`.
    TaskContent(String),
    /// `GET /v1/usage`: the caller's own totals from the ledger.
    Usage,
}

/// What the gateway does with a request.
#[derive(Debug)]
pub enum Decision {
    /// Answer this error in the caller's dialect.
    Reject(GatewayError),
    /// The same, for a request whose model is known: the access log names it.
    RejectModel(GatewayError, Arc<Model>),
    /// Answer from the gateway itself.
    Local(Local),
    /// A media task call for this caller, carried out by `tasks`.
    Task(TaskCall, Caller),
    /// Send this to the model's upstream.
    Forward(ForwardPlan),
}

/// Answers the gateway gives itself.
#[derive(Debug)]
pub enum Local {
    /// `{"status":"ok"}`.
    Health,
    /// The models this key may use.
    Models(Arc<Key>),
    /// One model the caller's key may use, by name.
    Model(String),
    /// An estimate of the body's input tokens (`count_tokens` on an OpenAI-dialect model, which
    /// has no such endpoint upstream).
    EstimateTokens,
    /// The caller key's totals by model and day (`ledger::report`).
    Usage(crate::ledger::report::Query),
}

/// A media task call for the authenticated caller.
#[derive(Debug)]
pub enum TaskCall {
    /// `GET /v1/tasks/{id}`.
    Poll(String),
    /// `GET /v1/tasks/{id}/content`.
    Content(String),
    /// A submit to `model`.
    Submit(Media, Arc<Model>),
}

/// A request to forward.
#[derive(Debug, Clone)]
pub struct ForwardPlan {
    /// The routed model (its pinned upstream is the only peer).
    pub model: Arc<Model>,
    /// The exact body to send upstream.
    pub body: Bytes,
    /// The caller asked for a stream.
    pub stream: bool,
    /// How the body and the response are treated.
    pub mode: Mode,
    /// Paths of the caller's fields translation left out (empty when passing through).
    pub dropped: Vec<String>,
    /// The output cap in the caller's body, if any (`Peek::max_tokens`): the limits' reservation.
    pub max_tokens: Option<u64>,
    /// Whether the upstream generates (and bills) anything.
    pub purpose: Purpose,
}

impl ForwardPlan {
    /// The answer is read whole from the upstream before any of it is sent, with its length
    /// (`proxy::whole`): every answer the caller did not ask to stream. A stream passes through
    /// Pingora's proxy as it comes.
    pub fn answered_whole(&self) -> bool {
        !self.stream
    }
}

/// What a forwarded request asks of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A chat completion or message: limited, metered and billed.
    Generate,
    /// Anthropic's `count_tokens`: free upstream, generates nothing, and limited by Anthropic apart
    /// from messages. So it takes nothing from the key's limits or budget and writes no ledger row
    /// (the metrics and the access log still count it). Claude Code calls it often.
    CountTokens,
}

/// How a forwarded request and its response are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Same dialect: bytes pass, except the documented splices.
    Passthrough {
        /// The gateway asked an OpenAI stream for usage the caller did not ask for: the usage
        /// chunk is removed again on the way back.
        injected_usage: bool,
    },
    /// The caller's and the upstream's dialects differ.
    Translate {
        /// The caller's dialect (the endpoint's).
        caller: Dialect,
        /// The upstream's dialect.
        upstream: Dialect,
        /// An OpenAI caller of a translated stream asked for the usage chunk.
        caller_wants_usage: bool,
    },
}

/// The first step's outcome.
#[derive(Debug)]
pub enum Head {
    /// Decided from the head alone; the caller, once authenticated.
    Done(Decision, Option<Caller>),
    /// An authenticated caller on a route that takes a body: read it (at most
    /// `Snapshot::max_request_body`), undo its content codings (`content_encoding::decode`, empty
    /// for an uncompressed body), then call [`plan_body`].
    NeedsBody(Route, Caller, Codings),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's entry.
    pub key: Arc<Key>,
    /// The key's sha256 (task ids carry a prefix of it).
    pub digest: [u8; 32],
}

/// What a request's method and path name, classified once: the route (or why there is none) and
/// the caller's dialect, which every answer to it is shaped in, a refusal of the route included.
#[derive(Debug)]
pub struct Routed {
    /// The endpoint's dialect (`/v1/messages...` is Anthropic's, `/v1/chat/completions` OpenAI's);
    /// elsewhere Anthropic's when the `anthropic-version` header says so, else OpenAI's.
    pub caller: Dialect,
    /// The route, or the error that answers the request.
    pub route: Result<Route, GatewayError>,
}

/// Classifies the method and path. A trailing slash names the same endpoint (the upstream gets
/// the canonical path, `upstream::rewrite_request`).
pub fn route(req: &RequestHeader) -> Routed {
    let path = req.uri.path();
    let trimmed = path.trim_end_matches('/');
    let caller = if trimmed == "/v1/messages" || trimmed.starts_with("/v1/messages/") {
        Dialect::Anthropic
    } else if trimmed == "/v1/chat/completions" || !req.headers.contains_key("anthropic-version") {
        Dialect::OpenAi
    } else {
        Dialect::Anthropic
    };
    Routed { caller, route: classify(req, path, trimmed) }
}

fn classify(req: &RequestHeader, path: &str, trimmed: &str) -> Result<Route, GatewayError> {
    // A reverse proxy has no business with absolute-form targets (`POST http://host/...`): refuse
    // them rather than guess which host was meant. (h2's :scheme/:authority are not that.)
    if !req.raw_path().starts_with(b"/") {
        return Err(GatewayError::BadRequest("Absolute-form request targets are not accepted: send the path only."));
    }
    let method = &req.method;
    let not_found = || GatewayError::NotFound { method: method.to_string(), path: path.to_string() };
    let not_allowed =
        |allow| GatewayError::MethodNotAllowed { method: method.to_string(), path: path.to_string(), allow };
    // What the gateway answers itself on GET it answers on HEAD too (RFC 9110 §9.3.2): the head
    // alone. Proxied GETs (a task's media) stay GET only.
    const READ: &[http::Method] = &[http::Method::GET, http::Method::HEAD];
    const POST: &[http::Method] = &[http::Method::POST];
    if let Some(name) = trimmed.strip_prefix("/v1/models/") {
        if name.is_empty() || name.contains('/') {
            return Err(not_found());
        }
        if !READ.contains(method) {
            return Err(not_allowed(READ));
        }
        return Ok(Route::Model(name.to_string()));
    }
    if let Some(rest) = trimmed.strip_prefix("/v1/tasks/") {
        let (id, content) = match rest.strip_suffix("/content") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        if id.is_empty() || id.contains('/') {
            return Err(not_found());
        }
        let allowed = if content { &[http::Method::GET][..] } else { READ };
        if !allowed.contains(method) {
            return Err(not_allowed(allowed));
        }
        return Ok(if content { Route::TaskContent(id.to_string()) } else { Route::TaskPoll(id.to_string()) });
    }
    let (route, allowed): (Route, &[http::Method]) = match trimmed {
        "/healthz" => (Route::Health, READ),
        "/v1/models" => (Route::Models, READ),
        "/v1/usage" => (Route::Usage, READ),
        "/v1/chat/completions" => (Route::Chat(Dialect::OpenAi), POST),
        "/v1/messages" => (Route::Chat(Dialect::Anthropic), POST),
        "/v1/messages/count_tokens" => (Route::CountTokens, POST),
        "/v1/images/generations" => (Route::TaskSubmit(Media::Image), POST),
        "/v1/videos/generations" => (Route::TaskSubmit(Media::Video), POST),
        "/v1/audios/generations" => (Route::TaskSubmit(Media::Audio), POST),
        _ => return Err(not_found()),
    };
    if !allowed.contains(method) {
        return Err(not_allowed(allowed));
    }
    Ok(route)
}

/// `GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`: the key's own rows only, by model and day.
fn usage_query(req: &RequestHeader, key: &Key) -> Result<crate::ledger::report::Query, GatewayError> {
    use crate::ledger::report::{Group, Query};
    let mut q = Query { from: None, to: None, by: vec![Group::Model, Group::Day], key: Some(key.name.to_string()) };
    for pair in req.uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "from" => &mut q.from,
            "to" => &mut q.to,
            _ => continue,
        };
        if crate::ledger::parse_day(value).is_none() {
            return Err(GatewayError::BadRequest("from and to must be UTC days written YYYY-MM-DD."));
        }
        *slot = Some(value.to_string());
    }
    if q.is_reversed() {
        return Err(GatewayError::BadRequest("from must not be after to."));
    }
    Ok(q)
}

/// Step one: authenticate and decide from the head alone, on the request's `route` (`route()`).
pub fn plan_head(req: &RequestHeader, route: Result<Route, GatewayError>, snapshot: &Snapshot) -> Head {
    let route = match route {
        Ok(Route::Health) => return Head::Done(Decision::Local(Local::Health), None),
        Ok(r) => r,
        Err(e) => {
            // Still authenticate first: an unknown path must not tell a stranger anything.
            let e = auth::authenticate(req, snapshot).err().unwrap_or(e);
            return Head::Done(Decision::Reject(e), None);
        }
    };
    let caller = match auth::authenticate_with_digest(req, snapshot) {
        Ok((key, digest)) => Caller { key, digest },
        Err(e) => return Head::Done(Decision::Reject(e), None),
    };
    let decision = match route {
        Route::Models => Decision::Local(Local::Models(caller.key.clone())),
        // The chat path's answers for the same name: 404 unregistered, 403 not on the key's list.
        Route::Model(name) => match snapshot.model(&name) {
            None => Decision::Reject(GatewayError::UnknownModel(name)),
            Some(_) if !caller.key.allows(&name) => Decision::Reject(GatewayError::ModelNotAllowed(name)),
            Some(_) => Decision::Local(Local::Model(name)),
        },
        Route::TaskPoll(id) => Decision::Task(TaskCall::Poll(id), caller.clone()),
        Route::TaskContent(id) => Decision::Task(TaskCall::Content(id), caller.clone()),
        Route::Usage => match usage_query(req, &caller.key) {
            Ok(q) => Decision::Local(Local::Usage(q)),
            Err(e) => Decision::Reject(e),
        },
        // A body is read as JSON to route it: a coding the gateway cannot undo is refused before
        // a byte of it is read.
        route => match content_encoding::codings(req.headers.get_all(http::header::CONTENT_ENCODING).iter()) {
            Ok(codings) => return Head::NeedsBody(route, caller, codings),
            Err(e) => Decision::Reject(e),
        },
    };
    Head::Done(decision, Some(caller))
}

/// Step two: the body read, pick the model and decide how it is sent.
pub fn plan_body(route: &Route, caller: &Caller, snapshot: &Snapshot, body: &Bytes) -> Decision {
    match forward(route, caller, snapshot, body) {
        Ok(d) => d,
        Err((e, Some(model))) => Decision::RejectModel(e, model),
        Err((e, None)) => Decision::Reject(e),
    }
}

/// Both steps, for a caller that holds the body already.
pub fn plan(req: &RequestHeader, snapshot: &Snapshot, body: &Bytes) -> Decision {
    match plan_head(req, route(req).route, snapshot) {
        Head::Done(d, _) => d,
        Head::NeedsBody(route, caller, codings) => match content_encoding::decode(&codings, body.clone(), usize::MAX) {
            Ok(body) => plan_body(&route, &caller, snapshot, &body),
            Err(e) => Decision::Reject(e),
        },
    }
}

/// The decision for a body; an error comes with the model when the body named a known one.
fn forward(
    route: &Route,
    caller: &Caller,
    snapshot: &Snapshot,
    body: &Bytes,
) -> Result<Decision, (GatewayError, Option<Arc<Model>>)> {
    let peeked = peek::peek(body).map_err(|e| (e, None))?;
    let model =
        snapshot.model(&peeked.model).ok_or_else(|| (GatewayError::UnknownModel(peeked.model.to_string()), None))?;
    forward_to(route, caller, model, &peeked, body).map_err(|e| (e, Some(model.clone())))
}

fn forward_to(
    route: &Route,
    caller: &Caller,
    model: &Arc<Model>,
    peeked: &peek::Peek<'_>,
    body: &Bytes,
) -> Result<Decision, GatewayError> {
    if !caller.key.allows(&model.name) {
        return Err(GatewayError::ModelNotAllowed(model.name.to_string()));
    }
    let caller_dialect = match route {
        Route::TaskSubmit(media) => {
            if !media.accepts(model.kind) {
                return Err(GatewayError::WrongKind(model.name.to_string(), model.kind.as_str()));
            }
            return Ok(Decision::Task(TaskCall::Submit(*media, model.clone()), caller.clone()));
        }
        Route::Chat(dialect) => *dialect,
        _ => Dialect::Anthropic,
    };
    if model.kind != ModelKind::Chat {
        return Err(GatewayError::WrongKind(model.name.to_string(), model.kind.as_str()));
    }
    let upstream = model.upstream.dialect;
    let splice_model = |body: &Bytes| match &model.upstream_model_json {
        Some(json) => Bytes::from(peek::splice(body, &mut [Edit { range: peeked.model_span.clone(), with: json }])),
        None => body.clone(),
    };

    if *route == Route::CountTokens {
        if upstream == Dialect::OpenAi {
            // No such endpoint upstream: an honest local estimate instead of a 404.
            return Ok(Decision::Local(Local::EstimateTokens));
        }
        let passthrough = Mode::Passthrough { injected_usage: false };
        let plan = ForwardPlan {
            model: model.clone(),
            body: splice_model(body),
            stream: false,
            mode: passthrough,
            dropped: Vec::new(),
            max_tokens: peeked.max_tokens,
            purpose: Purpose::CountTokens,
        };
        return Ok(Decision::Forward(plan));
    }

    if caller_dialect != upstream {
        let opts = dialect::RequestOptions {
            upstream_model: &model.upstream_model,
            default_max_tokens: model.max_output_tokens.unwrap_or(dialect::DEFAULT_MAX_TOKENS),
            strict: model.strict_params,
            structured_outputs: model.structured_outputs,
        };
        let translated = dialect::translate_request(caller_dialect, upstream, body, &opts)
            .map_err(|e| GatewayError::Untranslatable { param: e.param, message: e.message })?;
        let caller_wants_usage = caller_dialect == Dialect::OpenAi
            && peeked.stream_options.as_ref().is_some_and(|(_, raw)| with_include_usage(raw).is_none());
        return Ok(Decision::Forward(ForwardPlan {
            model: model.clone(),
            body: Bytes::from(translated.body),
            stream: peeked.stream,
            mode: Mode::Translate { caller: caller_dialect, upstream, caller_wants_usage },
            dropped: translated.dropped,
            max_tokens: peeked.max_tokens,
            purpose: Purpose::Generate,
        }));
    }

    // Same dialect, minimal rewrite: splice the upstream's model name, and for an OpenAI stream
    // without usage, ask for usage (the extra chunk is removed again on the way back).
    let mut edits: Vec<Edit<'_>> = Vec::new();
    if let Some(json) = &model.upstream_model_json {
        edits.push(Edit { range: peeked.model_span.clone(), with: json });
    }
    let stream_options;
    let mut injected_usage = false;
    if peeked.stream && upstream == Dialect::OpenAi {
        match &peeked.stream_options {
            None => {
                edits.push(Edit {
                    range: peeked.object_start..peeked.object_start,
                    with: br#""stream_options":{"include_usage":true},"#,
                });
                injected_usage = true;
            }
            Some((span, raw)) => {
                if let Some(rewritten) = with_include_usage(raw) {
                    stream_options = rewritten;
                    edits.push(Edit { range: span.clone(), with: stream_options.as_bytes() });
                    injected_usage = true;
                }
            }
        }
    }
    let body = if edits.is_empty() { body.clone() } else { Bytes::from(peek::splice(body, &mut edits)) };
    Ok(Decision::Forward(ForwardPlan {
        model: model.clone(),
        body,
        stream: peeked.stream,
        mode: Mode::Passthrough { injected_usage },
        dropped: Vec::new(),
        max_tokens: peeked.max_tokens,
        purpose: Purpose::Generate,
    }))
}

/// `stream_options` with `include_usage: true`, or `None` when it is already there.
fn with_include_usage(raw: &str) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(raw).ok()?;
    match &mut v {
        serde_json::Value::Object(map) => {
            if map.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
                return None;
            }
            map.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
        _ => v = serde_json::json!({"include_usage": true}),
    }
    Some(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::key_digest;

    const KEY: &str = "cm_plan_test_key_a";
    const KEY_GPT_ONLY: &str = "cm_plan_test_key_b";

    fn snapshot() -> Snapshot {
        let yaml = format!(
            r#"
server: {{ listen: ["127.0.0.1:1"] }}
upstreams:
  openai: {{ url: "http://127.0.0.1:9", dialect: openai }}
  anthropic: {{ url: "http://127.0.0.1:9", dialect: anthropic }}
  media: {{ url: "http://127.0.0.1:9/flat/v1", dialect: task }}
models:
  gpt-5.5: {{ upstream: openai }}
  gpt-pinned: {{ upstream: openai, upstream_model: gpt-5.5-2026-01-01 }}
  claude-sonnet-4-5-20250929: {{ upstream: anthropic, max_output_tokens: 777 }}
  claude-strict: {{ upstream: anthropic, params: strict }}
  gpt-image-2: {{ upstream: media, kind: image }}
keys:
  - {{ name: team-a, sha256: "{a}" }}
  - {{ name: team-b, sha256: "{b}", models: [gpt-5.5] }}
"#,
            a = hex(&key_digest(KEY.as_bytes())),
            b = hex(&key_digest(KEY_GPT_ONLY.as_bytes())),
        );
        crate::config::load_str(&yaml, &|_| None).expect("test config").snapshot
    }

    fn hex(d: &[u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn req(method: &str, path: &str, key: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).expect("header");
        if let Some(k) = key {
            r.insert_header("authorization", format!("Bearer {k}")).expect("insert");
        }
        r
    }

    fn head(r: &RequestHeader, s: &Snapshot) -> Head {
        plan_head(r, route(r).route, s)
    }

    fn decide(method: &str, path: &str, key: Option<&str>, body: &str) -> Decision {
        plan(&req(method, path, key), &snapshot(), &Bytes::from(body.to_owned()))
    }

    fn rejected(d: Decision) -> GatewayError {
        match d {
            Decision::Reject(e) | Decision::RejectModel(e, _) => e,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn forwarded(d: Decision) -> ForwardPlan {
        match d {
            Decision::Forward(f) => f,
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    #[test]
    fn every_route_and_its_dialect() {
        let cases: &[(&str, &str, Route, Dialect)] = &[
            ("GET", "/healthz", Route::Health, Dialect::OpenAi),
            ("HEAD", "/healthz", Route::Health, Dialect::OpenAi),
            ("GET", "/v1/models", Route::Models, Dialect::OpenAi),
            ("GET", "/v1/models/gpt-5.5", Route::Model("gpt-5.5".into()), Dialect::OpenAi),
            ("POST", "/v1/chat/completions", Route::Chat(Dialect::OpenAi), Dialect::OpenAi),
            ("POST", "/v1/chat/completions/", Route::Chat(Dialect::OpenAi), Dialect::OpenAi),
            ("POST", "/v1/messages", Route::Chat(Dialect::Anthropic), Dialect::Anthropic),
            ("POST", "/v1/messages/count_tokens?beta=true", Route::CountTokens, Dialect::Anthropic),
            ("POST", "/v1/images/generations", Route::TaskSubmit(Media::Image), Dialect::OpenAi),
            ("POST", "/v1/videos/generations", Route::TaskSubmit(Media::Video), Dialect::OpenAi),
            ("POST", "/v1/audios/generations", Route::TaskSubmit(Media::Audio), Dialect::OpenAi),
            ("GET", "/v1/tasks/task_abc", Route::TaskPoll("task_abc".into()), Dialect::OpenAi),
            ("GET", "/v1/tasks/task_abc/content", Route::TaskContent("task_abc".into()), Dialect::OpenAi),
        ];
        for (method, path, want, dialect) in cases {
            let r = req(method, path, None);
            let routed = route(&r);
            assert_eq!(routed.route.as_ref(), Ok(want), "{method} {path}");
            assert_eq!(routed.caller, *dialect, "{method} {path}");
        }
    }

    #[test]
    fn route_rejections() {
        let not_found = |p: &str| matches!(route(&req("GET", p, None)).route, Err(GatewayError::NotFound { .. }));
        assert!(not_found("/v1/nothing"));
        assert!(not_found("/v1/tasks/"));
        assert!(not_found("/v1/tasks/a/b"));
        let refused = |m: &str, p: &str| route(&req(m, p, None)).route.err();
        assert!(matches!(refused("GET", "/v1/chat/completions"), Some(GatewayError::MethodNotAllowed { .. })));
        assert!(matches!(refused("POST", "/v1/tasks/t"), Some(GatewayError::MethodNotAllowed { .. })));
        assert!(matches!(refused("POST", "http://evil/v1/messages"), Some(GatewayError::BadRequest(_))));
        // A refused route is still answered in the caller's dialect.
        assert_eq!(route(&req("POST", "/v1/messages/nothing", None)).caller, Dialect::Anthropic);
        assert_eq!(route(&req("POST", "http://evil/v1/messages", None)).caller, Dialect::Anthropic);
        let mut models = req("GET", "/v1/models/", None);
        models.insert_header("anthropic-version", "2023-06-01").expect("insert");
        assert_eq!(route(&models).caller, Dialect::Anthropic, "no endpoint dialect: the header decides");
    }

    #[test]
    fn health_needs_no_key_and_everything_else_does() {
        assert!(matches!(decide("GET", "/healthz", None, ""), Decision::Local(Local::Health)));
        assert_eq!(rejected(decide("GET", "/v1/models", None, "")), GatewayError::MissingKey);
        assert_eq!(rejected(decide("GET", "/v1/models", Some("cm_wrong"), "")), GatewayError::InvalidKey);
        // An unknown path tells a stranger nothing: the key is checked first.
        assert_eq!(rejected(decide("GET", "/v1/nothing", None, "")), GatewayError::MissingKey);
        assert!(matches!(rejected(decide("GET", "/v1/nothing", Some(KEY), "")), GatewayError::NotFound { .. }));
        assert!(matches!(decide("GET", "/v1/models", Some(KEY), ""), Decision::Local(Local::Models(_))));
    }

    #[test]
    fn one_model_is_answered_as_the_chat_path_would_treat_its_name() {
        assert_eq!(rejected(decide("GET", "/v1/models/gpt-5.5", None, "")), GatewayError::MissingKey);
        assert!(matches!(
            decide("GET", "/v1/models/gpt-5.5", Some(KEY), ""),
            Decision::Local(Local::Model(m)) if m == "gpt-5.5"
        ));
        assert_eq!(rejected(decide("GET", "/v1/models/gpt", Some(KEY), "")), GatewayError::UnknownModel("gpt".into()));
        assert_eq!(
            rejected(decide("GET", "/v1/models/claude-strict", Some(KEY_GPT_ONLY), "")),
            GatewayError::ModelNotAllowed("claude-strict".into())
        );
        assert!(matches!(rejected(decide("GET", "/v1/models/a/b", Some(KEY), "")), GatewayError::NotFound { .. }));
        assert!(matches!(
            rejected(decide("DELETE", "/v1/models/gpt-5.5", Some(KEY), "")),
            GatewayError::MethodNotAllowed { .. }
        ));
    }

    #[test]
    fn the_body_is_needed_only_after_auth_on_body_routes() {
        let s = snapshot();
        assert!(matches!(head(&req("POST", "/v1/messages", None), &s), Head::Done(Decision::Reject(_), None)));
        assert!(matches!(head(&req("POST", "/v1/messages", Some(KEY)), &s), Head::NeedsBody(Route::Chat(_), _, _)));
        assert!(matches!(
            head(&req("GET", "/v1/tasks/t1", Some(KEY)), &s),
            Head::Done(Decision::Task(TaskCall::Poll(_), _), Some(_))
        ));
    }

    #[test]
    fn content_codings_are_read_from_the_head_and_unknown_ones_refused_before_the_body() {
        let s = snapshot();
        let with = |path: &str, key, encodings: &[&str]| {
            let mut r = req("POST", path, key);
            for e in encodings {
                r.append_header("content-encoding", *e).expect("append");
            }
            r
        };
        let codings = |r: &RequestHeader| match head(r, &s) {
            Head::NeedsBody(_, _, codings) => Ok(codings),
            Head::Done(Decision::Reject(e), _) => Err(e),
            other => panic!("{other:?}"),
        };
        use content_encoding::Coding;
        assert_eq!(codings(&with("/v1/chat/completions", Some(KEY), &[])), Ok(vec![]));
        assert_eq!(codings(&with("/v1/chat/completions", Some(KEY), &["identity"])), Ok(vec![]));
        assert_eq!(codings(&with("/v1/messages", Some(KEY), &["gzip"])), Ok(vec![Coding::Gzip]));
        assert_eq!(codings(&with("/v1/images/generations", Some(KEY), &["zstd"])), Ok(vec![Coding::Zstd]));
        let compress = GatewayError::UnsupportedEncoding("compress".into());
        assert_eq!(codings(&with("/v1/chat/completions", Some(KEY), &["compress"])), Err(compress.clone()));
        // A second header line counts as much as the first.
        assert_eq!(codings(&with("/v1/messages", Some(KEY), &["identity", "compress"])), Err(compress));
        // The key is still checked first.
        assert_eq!(codings(&with("/v1/messages", None, &["compress"])), Err(GatewayError::MissingKey));
        // And the plan of a whole request decodes the body it is given.
        let body = br#"{"model":"gpt-5.5","messages":[]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, body).expect("gzip");
        let gz = Bytes::from(gz.finish().expect("gzip"));
        let f = forwarded(plan(&with("/v1/chat/completions", Some(KEY), &["gzip"]), &s, &gz));
        assert_eq!(&f.body[..], body);
        assert_eq!(
            rejected(plan(&with("/v1/chat/completions", Some(KEY), &["gzip"]), &s, &Bytes::from_static(body))),
            GatewayError::BadEncoding("gzip")
        );
    }

    #[test]
    fn model_rejections() {
        let chat = |model: &str| format!(r#"{{"model":"{model}","messages":[]}}"#);
        let post = |key, body: &str| decide("POST", "/v1/chat/completions", Some(key), body);
        assert!(matches!(rejected(post(KEY, &chat("gpt"))), GatewayError::UnknownModel(_)));
        assert!(matches!(
            rejected(post(KEY_GPT_ONLY, &chat("claude-sonnet-4-5-20250929"))),
            GatewayError::ModelNotAllowed(_)
        ));
        assert!(matches!(rejected(post(KEY, &chat("gpt-image-2"))), GatewayError::WrongKind(..)));
        assert!(matches!(rejected(post(KEY, "{not json")), GatewayError::BadRequest(_) | GatewayError::InvalidJson));
        let image = decide("POST", "/v1/videos/generations", Some(KEY), r#"{"model":"gpt-image-2","prompt":"x"}"#);
        assert!(matches!(rejected(image), GatewayError::WrongKind(..)));
    }

    #[test]
    fn same_dialect_is_passed_with_only_the_documented_splices() {
        let body = r#"{"model":"gpt-5.5","messages":[{"role":"user","content":"hi"}]}"#;
        let f = forwarded(decide("POST", "/v1/chat/completions", Some(KEY), body));
        assert_eq!(f.mode, Mode::Passthrough { injected_usage: false });
        assert_eq!(&f.body[..], body.as_bytes());
        assert!(f.dropped.is_empty() && !f.stream);

        let pinned =
            forwarded(decide("POST", "/v1/chat/completions", Some(KEY), &body.replace("gpt-5.5", "gpt-pinned")));
        assert_eq!(&pinned.body[..], body.replace("gpt-5.5", "gpt-5.5-2026-01-01").as_bytes());

        let stream = r#"{"model":"gpt-5.5","stream":true,"messages":[]}"#;
        let f = forwarded(decide("POST", "/v1/chat/completions", Some(KEY), stream));
        assert_eq!(f.mode, Mode::Passthrough { injected_usage: true });
        assert!(f.stream);
        assert_eq!(
            &f.body[..],
            br#"{"stream_options":{"include_usage":true},"model":"gpt-5.5","stream":true,"messages":[]}"#
        );

        let asked = r#"{"model":"gpt-5.5","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
        let f = forwarded(decide("POST", "/v1/chat/completions", Some(KEY), asked));
        assert_eq!(f.mode, Mode::Passthrough { injected_usage: false });
        assert_eq!(&f.body[..], asked.as_bytes());
    }

    #[test]
    fn differing_dialects_are_translated() {
        let body = r#"{"model":"claude-sonnet-4-5-20250929","stream":true,"stream_options":{"include_usage":true},"frobnicate":1,"messages":[{"role":"user","content":"hi"}]}"#;
        let f = forwarded(decide("POST", "/v1/chat/completions", Some(KEY), body));
        assert_eq!(
            f.mode,
            Mode::Translate { caller: Dialect::OpenAi, upstream: Dialect::Anthropic, caller_wants_usage: true }
        );
        assert_eq!(f.dropped, ["frobnicate"]);
        let sent: serde_json::Value = serde_json::from_slice(&f.body).expect("json");
        assert_eq!(sent["max_tokens"], 777);

        let body = r#"{"model":"gpt-5.5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
        let f = forwarded(decide("POST", "/v1/messages", Some(KEY), body));
        assert_eq!(
            f.mode,
            Mode::Translate { caller: Dialect::Anthropic, upstream: Dialect::OpenAi, caller_wants_usage: false }
        );

        let strict = r#"{"model":"claude-strict","frobnicate":1,"messages":[{"role":"user","content":"hi"}]}"#;
        let e = rejected(decide("POST", "/v1/chat/completions", Some(KEY), strict));
        assert!(matches!(e, GatewayError::Untranslatable { ref param, .. } if param == "frobnicate"), "{e:?}");
        let refused = r#"{"model":"claude-sonnet-4-5-20250929","n":2,"messages":[{"role":"user","content":"hi"}]}"#;
        let e = rejected(decide("POST", "/v1/chat/completions", Some(KEY), refused));
        assert!(matches!(e, GatewayError::Untranslatable { ref param, .. } if param == "n"), "{e:?}");
    }

    #[test]
    fn count_tokens_is_forwarded_to_anthropic_and_estimated_for_openai() {
        let body = r#"{"model":"gpt-5.5","messages":[{"role":"user","content":"hi"}]}"#;
        assert!(matches!(
            decide("POST", "/v1/messages/count_tokens", Some(KEY), body),
            Decision::Local(Local::EstimateTokens)
        ));
        let body = r#"{"model":"claude-sonnet-4-5-20250929","messages":[{"role":"user","content":"hi"}]}"#;
        let f = forwarded(decide("POST", "/v1/messages/count_tokens", Some(KEY), body));
        assert_eq!(f.mode, Mode::Passthrough { injected_usage: false });
        assert_eq!(&f.body[..], body.as_bytes());
        assert_eq!(f.purpose, Purpose::CountTokens);
        let f = forwarded(decide("POST", "/v1/messages", Some(KEY), body));
        assert_eq!(f.purpose, Purpose::Generate);
    }

    #[test]
    fn media_submits_become_task_calls() {
        let body = r#"{"model":"gpt-image-2","prompt":"a city"}"#;
        match decide("POST", "/v1/images/generations", Some(KEY), body) {
            Decision::Task(TaskCall::Submit(Media::Image, model), caller) => {
                assert_eq!(&*model.name, "gpt-image-2");
                assert_eq!(&*caller.key.name, "team-a");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide("GET", "/v1/tasks/task_x/content", Some(KEY), ""),
            Decision::Task(TaskCall::Content(id), _) if id == "task_x"
        ));
    }
}
