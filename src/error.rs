//! Every error the gateway itself answers with, and how each one is shown to a caller.
//!
//! One enum, one exhaustive status map (no `_ =>` arm: a new variant does not compile until it has a
//! status), and a body in the caller's dialect. The OpenAI shape is
//! `{"error":{"message","type","param","code"}}`; the Anthropic shape is
//! `{"type":"error","error":{"type","message"}}` with Anthropic's fixed error types only.
//! No IO here: the proxy glue writes what this module renders.
//! Imports: `peek` only.

use bytes::Bytes;

/// Which API dialect a caller speaks (decided by the endpoint it called) or an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// OpenAI chat-completions dialect (`/v1/chat/completions`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic messages dialect (`/v1/messages`).
    Anthropic,
}

impl Dialect {
    /// Lowercase name, as written in the config and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}

/// An error answered by the gateway itself (never an upstream's own error, which passes through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// No `Authorization: Bearer` or `x-api-key` header.
    MissingKey,
    /// A key was sent but it is not registered.
    InvalidKey,
    /// The key is valid but its allow-list does not include the model.
    ModelNotAllowed(String),
    /// The body is larger than `server.max_request_body`.
    BodyTooLarge(usize),
    /// A body over 64 KiB came without Content-Length (see `proxy::body`).
    LengthRequired,
    /// The body came compressed (`Content-Encoding` other than `identity`): the gateway reads the
    /// body's JSON to route it, so it cannot take one it would have to forward blind.
    UnsupportedEncoding(String),
    /// The body is not valid data of the coding its `Content-Encoding` names.
    BadEncoding(&'static str),
    /// The body is not one well-formed JSON object.
    InvalidJson,
    /// The body has no `model`.
    MissingModel,
    /// `model` is not a string.
    ModelNotString,
    /// The body nests arrays/objects deeper than `peek::MAX_DEPTH`.
    TooDeep,
    /// The body names `model` (or `stream`) twice: different parsers would read different values.
    DuplicateField(&'static str),
    /// A field has the wrong JSON type.
    WrongType(&'static str, &'static str),
    /// The model is not registered.
    UnknownModel(String),
    /// The model is registered for another kind of work (e.g. an image model on the chat path).
    WrongKind(String, &'static str),
    /// A parameter has no faithful mapping to the upstream's dialect.
    Untranslatable { param: String, message: String },
    /// No such endpoint.
    NotFound { method: String, path: String },
    /// `GET /v1/usage` on a gateway that keeps no ledger (`ledger.url: none`).
    NoLedger,
    /// The endpoint exists, the method does not.
    MethodNotAllowed { method: String, path: String, allow: &'static [http::Method] },
    /// The request line or headers are not acceptable (absolute-form URI, bad header value...).
    BadRequest(&'static str),
    /// The caller stopped sending its body for `server.client_read_timeout_ms`.
    BodyTimeout,
    /// The upstream could not be reached, reset the connection or answered garbage.
    UpstreamUnavailable,
    /// The upstream did not answer within its configured timeouts.
    UpstreamTimeout,
    /// The upstream refused the gateway's own credentials (its status, 401 or 403): the operator's
    /// configuration, which the caller cannot fix. Its body is not relayed: OpenAI's 401 names the
    /// key it was sent, masked but with its last characters.
    UpstreamCredentials(u16),
    /// `ledger.on_failure: reject` and the ledger can take no more rows (queue full, spool unwritable).
    LedgerUnavailable,
    /// `/v1/usage`: the ledger's database failed or did not answer in time.
    ReportUnavailable,
    /// The shared limits state (Redis) is unreachable and `server.on_state_error` is `deny`.
    LimitsUnavailable,
    /// A key's or model's limit (`what`: requests, tokens, concurrency); retry after the seconds.
    RateLimited { what: &'static str, model_wide: bool, retry_after_s: u64 },
    /// The key's budget for the period (`daily`, `monthly`) is spent; retry after the seconds.
    BudgetExhausted { period: &'static str, retry_after_s: u64, exact: Option<crate::limits::ExactRefused> },
    /// A bug or an internal failure.
    Internal,
}

impl GatewayError {
    /// The gateway's own error for an upstream error status that is not the caller's to see: 401
    /// and 403 refuse the gateway's credentials (the caller's key was checked here), so the caller
    /// gets `UpstreamCredentials` instead of a key error it cannot fix. Every other upstream error
    /// passes on.
    pub fn for_upstream_status(status: u16) -> Option<GatewayError> {
        matches!(status, 401 | 403).then_some(GatewayError::UpstreamCredentials(status))
    }

    /// Tells the operator, who alone can fix it, that `upstream` refused the gateway's credentials
    /// (`status`, 401 or 403); the caller only gets [`GatewayError::UpstreamCredentials`].
    pub fn warn_credentials_refused(upstream: &str, status: u16) {
        log::warn!("upstream {upstream} refused the gateway's credentials ({status}): check its key and access");
    }

    /// HTTP status. Exhaustive on purpose.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey => 401,
            GatewayError::ModelNotAllowed(_) => 403,
            GatewayError::BodyTooLarge(_) => 413,
            GatewayError::LengthRequired => 411,
            GatewayError::UnsupportedEncoding(_) => 415,
            GatewayError::InvalidJson
            | GatewayError::BadEncoding(_)
            | GatewayError::MissingModel
            | GatewayError::ModelNotString
            | GatewayError::DuplicateField(_)
            | GatewayError::TooDeep
            | GatewayError::WrongType(..)
            | GatewayError::WrongKind(..)
            | GatewayError::Untranslatable { .. }
            | GatewayError::BadRequest(_) => 400,
            GatewayError::UnknownModel(_) | GatewayError::NotFound { .. } | GatewayError::NoLedger => 404,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::BodyTimeout => 408,
            GatewayError::UpstreamUnavailable | GatewayError::UpstreamCredentials(_) => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::LedgerUnavailable | GatewayError::ReportUnavailable | GatewayError::LimitsUnavailable => 503,
            GatewayError::RateLimited { .. } | GatewayError::BudgetExhausted { .. } => 429,
            GatewayError::Internal => 500,
        }
    }

    /// Low-cardinality label for `cheapmodel_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::MissingKey => "missing_key",
            GatewayError::InvalidKey => "invalid_key",
            GatewayError::ModelNotAllowed(_) => "model_not_allowed",
            GatewayError::BodyTooLarge(_) => "body_too_large",
            GatewayError::LengthRequired => "length_required",
            GatewayError::UnsupportedEncoding(_) => "unsupported_encoding",
            GatewayError::BadEncoding(_) => "bad_encoding",
            GatewayError::InvalidJson => "invalid_json",
            GatewayError::MissingModel => "missing_model",
            GatewayError::ModelNotString => "model_not_string",
            GatewayError::DuplicateField(_) => "duplicate_field",
            GatewayError::TooDeep => "too_deep",
            GatewayError::WrongType(..) => "wrong_type",
            GatewayError::UnknownModel(_) => "unknown_model",
            GatewayError::WrongKind(..) => "wrong_kind",
            GatewayError::Untranslatable { .. } => "untranslatable",
            GatewayError::NotFound { .. } | GatewayError::NoLedger => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::BodyTimeout => "body_timeout",
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamCredentials(_) => "upstream_credentials",
            GatewayError::LedgerUnavailable => "ledger_unavailable",
            GatewayError::ReportUnavailable => "report_unavailable",
            GatewayError::LimitsUnavailable => "limits_unavailable",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::BudgetExhausted { .. } => "budget_exhausted",
            GatewayError::Internal => "internal",
        }
    }

    /// Human-readable message; never contains key material.
    pub fn message(&self) -> String {
        match self {
            GatewayError::MissingKey => "You didn't provide an API key. Send your Cheap Model key as `Authorization: Bearer cm_...` or `x-api-key: cm_...`.".into(),
            GatewayError::InvalidKey => "Incorrect API key provided.".into(),
            GatewayError::ModelNotAllowed(m) => format!("This key is not allowed to use the model `{m}`."),
            GatewayError::BodyTooLarge(max) => format!("Request body is larger than the limit of {max} bytes."),
            GatewayError::LengthRequired => "A request body over 64 KiB must be sent with a Content-Length header.".into(),
            GatewayError::UnsupportedEncoding(e) => format!("Content-Encoding `{e}` is not supported: send the request body uncompressed, or as gzip, deflate, br or zstd."),
            GatewayError::BadEncoding(c) => format!("The request body is not valid `{c}` data, as its Content-Encoding says it is."),
            GatewayError::InvalidJson => "The request body is not valid JSON: expected one JSON object.".into(),
            GatewayError::MissingModel => "model: field required".into(),
            GatewayError::ModelNotString => "model: expected a string".into(),
            GatewayError::TooDeep => format!("The request body nests arrays or objects deeper than {} levels.", crate::peek::MAX_DEPTH),
            GatewayError::DuplicateField(f) => format!("{f}: the field appears more than once in the request body"),
            GatewayError::WrongType(f, t) => format!("{f}: expected {t}"),
            GatewayError::UnknownModel(m) => format!("The model `{m}` does not exist or you do not have access to it."),
            GatewayError::WrongKind(m, k) => format!("The model `{m}` is for {k} requests and cannot be used on this endpoint."),
            GatewayError::Untranslatable { param, message } => format!("{param}: {message}"),
            // OpenAI's words, then what is served: a caller trying `/v1/responses` or
            // `/v1/embeddings` learns that the gateway does not offer it, not that it mistyped.
            GatewayError::NoLedger => {
                "This gateway keeps no usage ledger (ledger.url: none): /v1/usage has nothing to report.".into()
            }
            GatewayError::NotFound { method, path } => format!(
                "Invalid URL ({method} {path}): this gateway serves /v1/chat/completions, /v1/messages, \
                 /v1/messages/count_tokens, /v1/models, /v1/images/generations, /v1/videos/generations, \
                 /v1/audios/generations, /v1/tasks/{{task_id}}, /v1/tasks/{{task_id}}/content and /v1/usage"
            ),
            GatewayError::MethodNotAllowed { method, path, .. } => format!("Method {method} is not allowed on {path}"),
            GatewayError::BadRequest(why) => (*why).to_string(),
            GatewayError::BodyTimeout => "The request body did not arrive in time: the connection went quiet before the whole body came in.".into(),
            GatewayError::UpstreamUnavailable => "The upstream provider could not be reached or answered an invalid response.".into(),
            GatewayError::UpstreamTimeout => "The upstream provider did not answer in time.".into(),
            GatewayError::UpstreamCredentials(status) => format!("The upstream provider refused the gateway's own credentials for this model (it answered {status}). Your key is fine: the gateway's operator must fix the upstream's key or its access."),
            GatewayError::LedgerUnavailable => "The gateway cannot record usage right now, so it takes no billable requests. Retry shortly.".into(),
            GatewayError::ReportUnavailable => "The usage ledger cannot be read right now. Retry shortly.".into(),
            GatewayError::LimitsUnavailable => "The gateway cannot check this key's limits right now. Retry shortly.".into(),
            GatewayError::RateLimited { what: "budget", retry_after_s, .. } => format!("The rest of this key's budget is held by requests in flight (it is not spent). Retry after {retry_after_s} s."),
            GatewayError::RateLimited { what: "concurrency", model_wide, retry_after_s } => format!("Too many requests in flight for this {}. Retry after {retry_after_s} s.", if *model_wide { "model" } else { "key" }),
            GatewayError::RateLimited { what, model_wide, retry_after_s } => format!("Rate limit reached: {what} per minute for this {}. Retry after {retry_after_s} s.", if *model_wide { "model" } else { "key" }),
            GatewayError::BudgetExhausted { period, retry_after_s, exact: None } => format!("This key's {period} budget is spent. It renews in {retry_after_s} s (UTC calendar periods)."),
            GatewayError::BudgetExhausted { period, exact: Some(e), .. } if e.never_fits() => format!(
                "This request costs ${}, more than this key's whole {period} budget of ${}, so it can never be admitted. Ask for less (fewer images, or a shorter length), or ask the gateway's operator for a larger budget.",
                e.cost.usd(),
                e.cap.usd()
            ),
            GatewayError::BudgetExhausted { period, retry_after_s, exact: Some(e) } => format!(
                "This request costs ${}, more than the ${} this key's {period} budget has left. It renews in {retry_after_s} s (UTC calendar periods).",
                e.cost.usd(),
                e.left.usd()
            ),
            GatewayError::Internal => "Internal gateway error.".into(),
        }
    }

    /// OpenAI `(type, code, param)` as the real API uses them.
    fn openai_fields(&self) -> (&'static str, Option<&'static str>, Option<&str>) {
        match self {
            GatewayError::MissingKey => ("invalid_request_error", None, None),
            GatewayError::InvalidKey => ("invalid_request_error", Some("invalid_api_key"), None),
            GatewayError::ModelNotAllowed(_) => ("invalid_request_error", Some("model_not_allowed"), Some("model")),
            GatewayError::BodyTooLarge(_) => ("invalid_request_error", Some("request_too_large"), None),
            GatewayError::LengthRequired => ("invalid_request_error", Some("length_required"), None),
            GatewayError::UnsupportedEncoding(_) => {
                ("invalid_request_error", Some("unsupported_content_encoding"), None)
            }
            GatewayError::BadEncoding(_) => ("invalid_request_error", Some("invalid_content_encoding"), None),
            GatewayError::InvalidJson | GatewayError::TooDeep => ("invalid_request_error", Some("invalid_json"), None),
            GatewayError::MissingModel | GatewayError::ModelNotString => ("invalid_request_error", None, Some("model")),
            GatewayError::DuplicateField(f) | GatewayError::WrongType(f, _) => ("invalid_request_error", None, Some(f)),
            GatewayError::UnknownModel(_) => ("invalid_request_error", Some("model_not_found"), Some("model")),
            GatewayError::WrongKind(..) => ("invalid_request_error", Some("model_not_supported"), Some("model")),
            GatewayError::Untranslatable { param, message } => {
                ("invalid_request_error", Some(untranslatable_code(message)), Some(param.as_str()))
            }
            GatewayError::NotFound { .. } | GatewayError::MethodNotAllowed { .. } | GatewayError::BadRequest(_) => {
                ("invalid_request_error", None, None)
            }
            GatewayError::NoLedger => ("invalid_request_error", Some("usage_not_kept"), None),
            GatewayError::BodyTimeout => ("invalid_request_error", Some("request_timeout"), None),
            GatewayError::UpstreamUnavailable => ("server_error", Some("upstream_unavailable"), None),
            GatewayError::UpstreamTimeout => ("server_error", Some("upstream_timeout"), None),
            GatewayError::UpstreamCredentials(_) => ("server_error", Some("upstream_credentials_refused"), None),
            GatewayError::LedgerUnavailable | GatewayError::ReportUnavailable => {
                ("server_error", Some("ledger_unavailable"), None)
            }
            GatewayError::LimitsUnavailable => ("server_error", Some("limits_unavailable"), None),
            GatewayError::RateLimited { what: "tokens", .. } => ("tokens", Some("rate_limit_exceeded"), None),
            GatewayError::RateLimited { .. } => ("requests", Some("rate_limit_exceeded"), None),
            GatewayError::BudgetExhausted { .. } => ("insufficient_quota", Some("insufficient_quota"), None),
            GatewayError::Internal => ("server_error", None, None),
        }
    }

    /// HTTP status in `dialect`: as `status`, except a spent budget, which Anthropic answers 402
    /// (`billing_error`) and OpenAI 429 (`insufficient_quota`).
    pub fn status_in(&self, dialect: Dialect) -> u16 {
        match (self, dialect) {
            (GatewayError::BudgetExhausted { .. }, Dialect::Anthropic) => 402,
            _ => self.status(),
        }
    }

    /// Seconds for a `retry-after` header, when the caller should come back later.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            // Waiting would not help: the request is larger than the whole budget.
            GatewayError::BudgetExhausted { exact: Some(e), .. } if e.never_fits() => None,
            GatewayError::RateLimited { retry_after_s, .. } | GatewayError::BudgetExhausted { retry_after_s, .. } => {
                Some(*retry_after_s)
            }
            // Redis is tried again a second after a failure (`limits::shared`).
            GatewayError::LimitsUnavailable => Some(1),
            _ => None,
        }
    }

    /// The header the answer carries besides its body, if any: `retry-after` (seconds) when the
    /// caller should come back later, `Allow` on a 405 (RFC 9110 §15.5.6).
    pub fn header(&self) -> Option<(&'static str, String)> {
        if let GatewayError::MethodNotAllowed { allow, .. } = self {
            let names: Vec<&str> = allow.iter().map(http::Method::as_str).collect();
            return Some(("allow", names.join(", ")));
        }
        self.retry_after().map(|s| ("retry-after", s.to_string()))
    }

    /// The response body in `dialect`.
    pub fn body(&self, dialect: Dialect) -> Bytes {
        error_body(dialect, self.status_in(dialect), &self.message(), self.openai_fields())
    }

    /// The body of an error the gateway answers itself: [`GatewayError::body`] with the request's
    /// id, which Anthropic's errors carry as `request_id`.
    pub fn body_with_id(&self, dialect: Dialect, request_id: &str) -> Bytes {
        error_body_with_id(dialect, self.status_in(dialect), &self.message(), self.openai_fields(), Some(request_id))
    }

    /// The SSE error event sent when a stream that already started is cut.
    pub fn stream_event(&self, dialect: Dialect) -> Bytes {
        let body = self.body(dialect);
        let mut out = Vec::with_capacity(body.len() + 24);
        match dialect {
            Dialect::OpenAi => out.extend_from_slice(b"data: "),
            Dialect::Anthropic => out.extend_from_slice(b"event: error\ndata: "),
        }
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

/// Anthropic's documented error type for an HTTP status.
pub fn anthropic_type_for_status(status: u16) -> &'static str {
    match status {
        // 408: the caller's body stalled; Anthropic's `timeout_error` is its own (504) side.
        400 | 405 | 408 | 411 | 415 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// OpenAI error body `{"error":{"message","type","param","code"}}` (also used for stream error chunks).
#[derive(serde::Serialize)]
pub(crate) struct OpenAiError<'a> {
    pub(crate) error: OpenAiErrorInner<'a>,
}

/// The inner object of `OpenAiError`.
#[derive(serde::Serialize)]
pub(crate) struct OpenAiErrorInner<'a> {
    pub(crate) message: &'a str,
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    pub(crate) param: Option<&'a str>,
    pub(crate) code: Option<&'a str>,
}

/// Anthropic error body `{"type":"error","error":{"type","message"}}` (also the `error` event's data).
#[derive(serde::Serialize)]
pub(crate) struct AnthropicError<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) error: AnthropicErrorInner<'a>,
    /// The request's id (`GatewayError::body_with_id`), as Anthropic's own errors carry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<&'a str>,
}

/// The inner object of `AnthropicError`.
#[derive(serde::Serialize)]
pub(crate) struct AnthropicErrorInner<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    pub(crate) message: &'a str,
}

/// Renders an error body in `dialect`, fields in the order the providers send them.
pub fn error_body(
    dialect: Dialect,
    status: u16,
    message: &str,
    openai_fields: (&str, Option<&str>, Option<&str>),
) -> Bytes {
    error_body_with_id(dialect, status, message, openai_fields, None)
}

/// [`error_body`], with the request's id where the dialect's errors carry one: Anthropic's
/// `request_id` (OpenAI's errors carry none in the body).
pub fn error_body_with_id(
    dialect: Dialect,
    status: u16,
    message: &str,
    (openai_type, code, param): (&str, Option<&str>, Option<&str>),
    request_id: Option<&str>,
) -> Bytes {
    let out = match dialect {
        Dialect::OpenAi => {
            serde_json::to_vec(&OpenAiError { error: OpenAiErrorInner { message, kind: openai_type, param, code } })
        }
        Dialect::Anthropic => serde_json::to_vec(&AnthropicError {
            kind: "error",
            error: AnthropicErrorInner { kind: anthropic_type_for_status(status), message },
            request_id: request_id.filter(|id| !id.is_empty()),
        }),
    };
    Bytes::from(out.unwrap_or_default())
}

/// OpenAI's `code` for a request translation refused, by the refusal's kind: a missing field
/// (the translator's message is then `required`), a value of the wrong JSON type (`must be ...`),
/// or anything else, which has no counterpart upstream. Clients branch on it: one that drops an
/// `unsupported_parameter` and retries must not be told a missing `messages` is one.
fn untranslatable_code(message: &str) -> &'static str {
    if message == "required" {
        "missing_required_parameter"
    } else if message.starts_with("must be") {
        "invalid_type"
    } else {
        "unsupported_parameter"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_callers_get_openais_code_for_each_kind_of_untranslatable_request() {
        let opts = crate::dialect::RequestOptions {
            upstream_model: "claude",
            default_max_tokens: 1024,
            strict: false,
            structured_outputs: false,
        };
        let hi = r#""messages":[{"role":"user","content":"hi"}]"#;
        for (body, param, code) in [
            (r#"{"model":"m"}"#.to_string(), "messages", "missing_required_parameter"),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#.into(),
                "messages[0].content",
                "missing_required_parameter",
            ),
            (format!(r#"{{"model":"m","max_tokens":"x",{hi}}}"#), "max_tokens", "invalid_type"),
            (format!(r#"{{"model":"m","temperature":"hot",{hi}}}"#), "temperature", "invalid_type"),
            (format!(r#"{{"model":"m","n":2,{hi}}}"#), "n", "unsupported_parameter"),
        ] {
            let e = crate::dialect::translate_request(Dialect::OpenAi, Dialect::Anthropic, body.as_bytes(), &opts)
                .expect_err(&body);
            let err = GatewayError::Untranslatable { param: e.param, message: e.message };
            let v = parse(err.body(Dialect::OpenAi));
            assert_eq!(
                (v["error"]["param"].as_str(), v["error"]["code"].as_str()),
                (Some(param), Some(code)),
                "{body}"
            );
        }
    }

    fn parse(b: Bytes) -> serde_json::Value {
        serde_json::from_slice(&b).expect("error bodies are JSON")
    }

    #[test]
    fn unknown_model_in_both_dialects() {
        let e = GatewayError::UnknownModel("gpt".into());
        assert_eq!(e.status(), 404);
        let o = parse(e.body(Dialect::OpenAi));
        assert_eq!(o["error"]["code"], "model_not_found");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert!(o["error"]["message"].as_str().is_some_and(|m| m.contains("`gpt`")));
        let a = parse(e.body(Dialect::Anthropic));
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "not_found_error");
    }

    #[test]
    fn auth_errors_use_provider_types() {
        let a = parse(GatewayError::InvalidKey.body(Dialect::Anthropic));
        assert_eq!(a["error"]["type"], "authentication_error");
        let o = parse(GatewayError::InvalidKey.body(Dialect::OpenAi));
        assert_eq!(o["error"]["code"], "invalid_api_key");
        let p = parse(GatewayError::ModelNotAllowed("m".into()).body(Dialect::Anthropic));
        assert_eq!(p["error"]["type"], "permission_error");
    }

    #[test]
    fn stream_events_are_framed_per_dialect() {
        let a = GatewayError::UpstreamUnavailable.stream_event(Dialect::Anthropic);
        assert!(a.starts_with(b"event: error\ndata: {"));
        assert!(a.ends_with(b"\n\n"));
        let o = GatewayError::UpstreamUnavailable.stream_event(Dialect::OpenAi);
        assert!(o.starts_with(b"data: {\"error\""));
    }
}
