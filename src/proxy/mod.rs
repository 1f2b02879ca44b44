//! Pingora glue: `Gateway` implements `ProxyHttp` and carries out the request plan (`crate::plan`
//! decides what to do; `admit` reads the body when the plan asks for it, runs task calls and the
//! token estimate, and leaves the upstream leg in `ctx.leg`). Each hook delegates to the modules
//! that hold the logic (body IO in `body`, header rewrite in `upstream`, local answers in
//! `respond`, the response body and its usage in `response`; the accept loop's idle bound in
//! `idle`; JSON answers, read whole before they are sent, in `whole`). The only module that
//! imports `pingora::proxy`.

pub mod body;
pub mod ctx;
pub mod idle;
pub mod request_id;
pub mod respond;
pub mod response;
pub mod upstream;
mod whole;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log;
use crate::cost;
use crate::dialect;
use crate::error::{Dialect, GatewayError};
use crate::ledger::{self, Ledger, Row};
use crate::limits::{self, Limits, Refusal};
use crate::metrics;
use crate::plan::{self, Decision, Mode, Purpose};
use crate::registry::{Key, Model, Registry};
use crate::tasks::{self, Tasks};
use crate::usage::{StreamTokens, Usage};
use body::BodyError;
use ctx::{RequestCtx, UpstreamLeg};
use request_id::RequestIds;
use response::{Framing, ResponseBody};

/// Settings fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long the gateway waits on a silent caller while reading its body (HTTP/1.x).
    pub client_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (HTTP/1.x); the wait for a
    /// connection's first request is bounded in `idle`.
    pub client_idle_timeout: Duration,
}

/// Pingora keeps an HTTP/1.1 connection alive between requests with no time limit (its
/// `respect_keepalive` makes the wait infinite when the request has no `Keep-Alive: timeout=`),
/// so an idle caller would hold a file descriptor for ever: bound the wait by `idle`, in whole
/// seconds (Pingora's unit; 0 would mean no limit). Left alone when the request turned keep-alive
/// off.
fn bound_keepalive(session: &mut Session, idle: Duration) {
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(idle.as_secs_f64().ceil().max(1.0) as u64));
    }
}

/// Once a graceful stop or upgrade has begun, Pingora closes every keep-alive connection that
/// is idle, and closes the others as soon as their answer ends, although that answer said
/// `Connection: keep-alive`. A caller that sends its next request at that moment has it reset
/// unanswered (and SDKs do not retry a reset POST). So an answer written during the shutdown
/// says `Connection: close`: the caller opens its next connection on the listener, which by then
/// belongs to the new process (upgrade) or refuses cleanly (stop).
fn close_if_shutting_down(session: &mut Session) {
    if session.is_process_shutting_down() {
        session.set_keepalive(None);
    }
}

/// The gateway.
pub struct Gateway {
    registry: Arc<Registry>,
    tasks: Arc<Tasks>,
    ledger: Arc<Ledger>,
    limiter: Arc<Limits>,
    settings: Settings,
    request_ids: RequestIds,
    /// The upstream connections of the answers the gateway reads whole (`whole`), HTTP/1.1 as
    /// every peer is (`upstream::peer`); the proxy path has Pingora's own pool.
    connector: Connector,
}

impl Gateway {
    /// A gateway serving `registry`, billing into `ledger`, limiting with `limiter`.
    pub fn new(
        registry: Arc<Registry>,
        settings: Settings,
        tasks: Arc<Tasks>,
        ledger: Arc<Ledger>,
        limiter: Arc<Limits>,
        connector: Connector,
    ) -> Self {
        Gateway { registry, settings, request_ids: RequestIds::new(), tasks, ledger, limiter, connector }
    }

    /// A request's ledger row id: its own id, unique across processes, unless the caller chose it
    /// (`x-request-id`), which need not be unique: a fresh one then (the caller's stays in the
    /// row's `request_id`).
    fn row_id(&self, ctx: &RequestCtx) -> String {
        if ctx.request_id_from_caller {
            self.request_ids.fresh()
        } else {
            ctx.request_id.clone()
        }
    }
}

/// A request's ledger row with the id `id`, nothing metered (no usage, zero cost): what a forwarded
/// request's row adds is filled in by its caller.
fn request_row(
    id: String,
    ctx: &RequestCtx,
    key: &Key,
    model: &Model,
    endpoint: Cow<'static, str>,
    status: u16,
    total: Duration,
) -> Row {
    Row {
        id,
        request_id: ctx.request_id.clone(),
        time_ms: unix_now_ms(),
        key: key.name.clone(),
        model: model.name.clone(),
        upstream: model.upstream.name.clone(),
        endpoint,
        status,
        stream: false,
        translated: false,
        usage: Usage::default(),
        media: Default::default(),
        cost: crate::money::Money::ZERO,
        latency_us: total.as_micros() as i64,
        ttfb_us: None,
        task: false,
        estimated: false,
        charged: crate::money::Money::ZERO,
    }
}

impl Gateway {
    /// Plans the request (`plan`), reading the body when the head says one is needed, and
    /// carries out what needs IO: task calls and the token estimate. Leaves a forward in
    /// `ctx.forward`; returns the error to answer, if any.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: Result<plan::Route, GatewayError>,
    ) -> Result<Option<GatewayError>, BodyError> {
        let snapshot = self.registry.current();
        ctx.snapshot = Some(snapshot.clone());
        let mut body = Bytes::new();
        let (decision, caller) = match plan::plan_head(session.req_header(), route, &snapshot) {
            plan::Head::Done(decision, caller) => (decision, caller),
            plan::Head::NeedsBody(route, caller, codings) => {
                body =
                    body::read_full_body(session, snapshot.max_request_body, self.settings.client_read_timeout).await?;
                let decoded = if codings.is_empty() {
                    Ok(())
                } else {
                    body::decode(body.clone(), codings, snapshot.max_request_body).await.map(|d| {
                        body = d;
                        ctx.body_decoded = true;
                    })
                };
                let decision = match decoded {
                    Ok(()) => plan::plan_body(&route, &caller, &snapshot, &body),
                    // Refused like any other body the plan refuses: the caller's key is known.
                    Err(e) => Decision::Reject(e),
                };
                (decision, Some(caller))
            }
        };
        ctx.key = caller.as_ref().map(|c| c.key.clone());
        match decision {
            Decision::Reject(e) => return Ok(Some(e)),
            Decision::RejectModel(e, model) => {
                ctx.refused_model = Some(model);
                return Ok(Some(e));
            }
            Decision::Local(plan::Local::Health) => {}
            Decision::Local(plan::Local::Models(key)) => {
                ctx.local = Some(tasks::Answer::ok_json(respond::models_body(&snapshot, &key, ctx.caller)));
            }
            Decision::Local(plan::Local::Model(name)) => {
                ctx.local = Some(tasks::Answer::ok_json(respond::model_body(&name, ctx.caller)));
            }
            Decision::Local(plan::Local::Usage(query)) => match self.usage(query).await {
                Ok(answer) => ctx.local = Some(answer),
                Err(e) => return Ok(Some(e)),
            },
            Decision::Local(plan::Local::EstimateTokens) => {
                let counted = estimate_tokens(body).await;
                match counted {
                    Ok(n) => {
                        ctx.local = Some(tasks::Answer::ok_json(Bytes::from(format!("{{\"input_tokens\":{n}}}"))));
                        ctx.token_estimate = true;
                    }
                    Err(e) => return Ok(Some(GatewayError::Untranslatable { param: e.param, message: e.message })),
                }
            }
            Decision::Task(plan::TaskCall::Submit(..), _) | Decision::Forward(_) if self.ledger.refuses() => {
                return Ok(Some(GatewayError::LedgerUnavailable));
            }
            Decision::Task(call, plan::Caller { key, digest }) => {
                let caller = tasks::Caller { digest, key: &key };
                // Boxed: a task call's future holds an upstream HTTP exchange, tens of KB that
                // would otherwise sit inline in this hook's future and be copied into the box
                // async_trait makes for every request, task or not.
                let answer = match call {
                    plan::TaskCall::Poll(id) => {
                        Box::pin(self.tasks.poll(&snapshot, &caller, &id, &base_url(session.req_header()))).await
                    }
                    plan::TaskCall::Content(id) => match self.tasks.content(&snapshot, &caller, &id) {
                        Ok(download) => {
                            ctx.leg = Some(UpstreamLeg::Download(download));
                            return Ok(None);
                        }
                        Err(answer) => answer,
                    },
                    plan::TaskCall::Submit(media, model) => match self.tasks.prepare(media, &model, &body) {
                        Err(refused) => {
                            ctx.refused_model = Some(model);
                            refused
                        }
                        Ok(prepared) => {
                            // A submit is a request of the key's (rpm, concurrency), and it reserves
                            // the task's expected cost against the budget, which counts as spent
                            // once the upstream accepts the task. What the task really costs counts
                            // when its row lands (`tasks::count_landed_task`).
                            let expected = prepared.expected;
                            let admission = if key.limits.any() || key.budget.any() || model.limits.any() {
                                let estimate = limits::Estimate { tokens: 0, cost: expected, exact: true };
                                match self
                                    .limiter
                                    .admit((&key.name, key.limits, key.budget), (&model.name, model.limits), estimate)
                                    .await
                                {
                                    Ok(admission) => Some(admission),
                                    Err(refusal) => return Ok(Some(refusal_error(refusal))),
                                }
                            } else {
                                None
                            };
                            let answer = Box::pin(self.tasks.submit(&snapshot, &caller, media, &model, prepared)).await;
                            if (200..300).contains(&answer.status) {
                                match admission {
                                    Some(admission) => admission.settle(0, expected),
                                    None => self.limiter.charge_now(&key.name, expected),
                                }
                            }
                            ctx.submitted = Some(model);
                            answer
                        }
                    },
                };
                ctx.local = Some(answer);
            }
            Decision::Forward(forward) => {
                if let (Some(key), Purpose::Generate) = (&ctx.key, forward.purpose) {
                    let model = &forward.model;
                    if key.limits.any() || key.budget.any() || model.limits.any() {
                        let estimate = limits::estimate(body.len(), forward.max_tokens, model);
                        match self
                            .limiter
                            .admit((&key.name, key.limits, key.budget), (&model.name, model.limits), estimate)
                            .await
                        {
                            Ok(admission) => ctx.admission = Some(admission),
                            Err(refusal) => {
                                ctx.refused_model = Some(forward.model.clone());
                                return Ok(Some(refusal_error(refusal)));
                            }
                        }
                    }
                }
                if !forward.dropped.is_empty() {
                    let counter = &metrics::get().dropped_params;
                    for path in &forward.dropped {
                        counter.with_label_values(&[&forward.model.name, dialect::dropped_param_label(path)]).inc();
                    }
                    ctx.dropped = dialect::dropped_header_value(&forward.dropped);
                }
                ctx.leg = Some(UpstreamLeg::Forward(forward));
            }
        }
        Ok(None)
    }
}

impl Gateway {
    /// The request head the upstream gets (`upstream::rewrite_request` or `rewrite_download`),
    /// written once the upstream is connected: from here on the upstream may bill the request.
    fn rewrite_upstream_request(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<()> {
        ctx.request_sent = true;
        match &ctx.leg {
            Some(UpstreamLeg::Download(download)) => {
                upstream::rewrite_download(req, &download.upstream, &download.path, &ctx.request_id)
            }
            Some(UpstreamLeg::Forward(forward)) => {
                if forward.purpose == Purpose::Generate && ctx.key.is_some() {
                    ctx.unbilled = Some(self.ledger.clone());
                }
                let translated = matches!(forward.mode, Mode::Translate { .. });
                let body = upstream::BodySent { len: forward.body.len(), decoded: ctx.body_decoded };
                upstream::rewrite_request(req, &forward.model.upstream, body, &ctx.request_id, translated)
            }
            None => Err(Error::explain(ErrorType::InternalError, "no model routed")),
        }
    }

    /// What the gateway adds to the head the caller gets, whichever path the answer took: the
    /// request's id, the key's rate-limit headers in place of the upstream's, what translation
    /// dropped, and the close a shutdown needs.
    fn caller_head(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        // Anthropic's SDKs read a response's id from `request-id`: an answer that has none (one
        // translated from an OpenAI upstream) gets the gateway's. An Anthropic upstream's own stays.
        if ctx.caller == Dialect::Anthropic && !resp.headers.contains_key("request-id") {
            resp.insert_header("request-id", ctx.request_id.as_str())?;
        }
        close_if_shutting_down(session);
        if let Some(allowance) = ctx.admission.as_ref().and_then(|a| a.allowance) {
            rate_limit_headers(resp, ctx.caller, &allowance, self.limiter.now_s())?;
        } else if ctx.key.as_ref().is_some_and(|k| k.limits.any()) {
            // A limited key's request that takes nothing from its limits (`count_tokens`): no
            // allowance to show, and the upstream's headers describe the operator's account.
            rate_limit_headers(resp, ctx.caller, &limits::Allowance::default(), self.limiter.now_s())?;
        }
        if !ctx.dropped.is_empty() {
            resp.insert_header("x-cheapmodel-dropped", ctx.dropped.as_str())?;
        }
        // Pingora would relay the upstream's chunked framing to an HTTP/1.0 caller, which cannot
        // read it; without Transfer-Encoding the body is delimited by closing the connection.
        if session.req_header().version == http::Version::HTTP_10 {
            resp.remove_header(&http::header::TRANSFER_ENCODING);
        }
        Ok(())
    }
}

/// The upstream's response head arrived: times it and chooses what its body goes through
/// (`ResponseBody`), which may replace its status. Its framing is `frame_head`'s.
fn read_upstream_head(resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    if let Some(started) = ctx.upstream_started {
        ctx.ttfb = Some(started.elapsed());
    }
    ctx.upstream_status = resp.status.as_u16();
    ctx.response = match &ctx.leg {
        Some(UpstreamLeg::Forward(forward)) => {
            ctx.sse = resp
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            ResponseBody::for_forward(forward, ctx.upstream_status, ctx.sse, unix_now(), &ctx.request_id)
        }
        Some(UpstreamLeg::Download(download)) => {
            ResponseBody::for_download(ctx.upstream_status, download.upstream.key())
        }
        None => ResponseBody::Pass,
    };
    if let Some(err) = ctx.response.replacing() {
        GatewayError::warn_credentials_refused(
            ctx.leg.as_ref().map_or("?", |leg| &*leg.upstream().name),
            ctx.upstream_status,
        );
        resp.set_status(err.status())?;
        ctx.error = Some(err.clone());
    }
    Ok(())
}

/// Changes the upstream's head for the body the caller will get (`framing`). `whole`: that body's
/// length when it is sent whole (`proxy::whole`); `None` when it passes as it comes.
fn frame_head(resp: &mut ResponseHeader, framing: Framing, whole: Option<usize>) -> Result<()> {
    if let Some(len) = whole {
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(len);
        if !upstream::states_length(&resp.headers, digits) {
            resp.insert_header(http::header::CONTENT_LENGTH, digits)?;
        }
    }
    match framing {
        Framing::AsIs => {}
        Framing::LengthUnknown if whole.is_some() => {}
        Framing::LengthUnknown => {
            resp.remove_header(&http::header::CONTENT_LENGTH);
        }
        Framing::Rewritten { json } => {
            if whole.is_none() {
                // h2 callers: Pingora drops Transfer-Encoding itself.
                resp.remove_header(&http::header::CONTENT_LENGTH);
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
            if json {
                resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
            }
        }
    }
    Ok(())
}

/// The error the caller is answered for Pingora's error `e` (`None`: the caller's own connection
/// failed, and nothing can reach it).
fn error_for(e: &Error) -> Option<GatewayError> {
    match (e.esource(), e.etype()) {
        // The gateway answers its own rejections itself; a status error here comes from Pingora.
        (_, ErrorType::HTTPStatus(code)) if (400..500).contains(code) => {
            Some(GatewayError::BadRequest("The request could not be read."))
        }
        (_, ErrorType::HTTPStatus(_)) => Some(GatewayError::Internal),
        (
            ErrorSource::Upstream,
            ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::TLSHandshakeTimedout,
        ) => Some(GatewayError::UpstreamTimeout),
        (ErrorSource::Upstream, _) => Some(GatewayError::UpstreamUnavailable),
        (ErrorSource::Downstream, ErrorType::ReadTimedout) => Some(GatewayError::BodyTimeout),
        (ErrorSource::Downstream, _) => None,
        _ => Some(GatewayError::Internal),
    }
}

impl Gateway {
    /// `GET /v1/usage`: the report runs on a blocking thread with its own connection, at most
    /// `REPORTS_AT_ONCE` at a time, and the caller waits at most the ledger's call deadline: a
    /// frozen database then costs a 503 and a few parked threads, not a hung request per caller
    /// and Tokio's whole blocking pool (which `count_tokens` and reloads need too).
    async fn usage(&self, query: ledger::report::Query) -> Result<tasks::Answer, GatewayError> {
        static REPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(REPORTS_AT_ONCE);
        let Some(url) = self.ledger.url().map(str::to_string) else {
            return Err(GatewayError::NoLedger);
        };
        let report = async {
            let permit = REPORTS.acquire().await;
            // The permit goes with the thread, so that a report stuck past the deadline keeps its
            // place until it ends.
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                ledger::report::totals(&url, &query)
            })
            .await
        };
        let rows = match tokio::time::timeout(ledger::database::CALL_DEADLINE, report).await {
            Ok(Ok(Ok(rows))) => rows,
            // Nothing billed yet: the database file is made by the first write.
            Ok(Ok(Err(e))) if e.starts_with("no ledger at") => Vec::new(),
            Ok(Ok(Err(e))) => {
                log::warn!("/v1/usage: {e}");
                return Err(GatewayError::ReportUnavailable);
            }
            Ok(Err(_)) => return Err(GatewayError::Internal),
            Err(_) => {
                log::warn!(
                    "/v1/usage: the ledger did not answer within {} s",
                    ledger::database::CALL_DEADLINE.as_secs()
                );
                return Err(GatewayError::ReportUnavailable);
            }
        };
        let body = format!("{{\"object\":\"list\",\"data\":{}}}", ledger::report::to_json(&rows));
        Ok(tasks::Answer::ok_json(Bytes::from(body)))
    }
}

/// `/v1/usage` reports running at once (each holds a blocking thread and a database connection).
const REPORTS_AT_ONCE: usize = 4;

/// A limiter refusal as the error the caller gets.
fn refusal_error(refusal: Refusal) -> GatewayError {
    match refusal {
        Refusal::Limit { what, scope, retry_after_s } => {
            GatewayError::RateLimited { what, model_wide: scope == limits::Scope::Model, retry_after_s }
        }
        Refusal::Budget { period, retry_after_s, exact } => {
            GatewayError::BudgetExhausted { period, retry_after_s, exact }
        }
        Refusal::Unavailable => GatewayError::LimitsUnavailable,
    }
}

/// Puts the key's own allowance in the rate-limit headers of the caller's dialect, replacing the
/// upstream's, which describe the gateway's upstream account, not the caller.
///
/// Six header inserts are most of what a limited key costs a request (Pingora keeps a case map
/// beside the header map: two map inserts and a name parse each). Ours go in first, replacing an
/// upstream header of the same name in place; only the upstream's others are removed after.
#[inline(never)]
fn rate_limit_headers(
    resp: &mut ResponseHeader,
    caller: Dialect,
    allowance: &limits::Allowance,
    now_s: i64,
) -> Result<()> {
    // (limit, remaining, reset) header names per kind and dialect.
    const NAMES: [[[&str; 3]; 2]; 2] = [
        [
            ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"],
            ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"],
        ],
        [
            [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ],
            [
                "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset",
            ],
        ],
    ];
    let names = &NAMES[usize::from(caller == Dialect::Anthropic)];
    let kinds = [allowance.requests, allowance.tokens];
    for (values, kind_names) in kinds.iter().zip(names) {
        let Some((limit, remaining, reset_s)) = *values else { continue };
        let [limit_name, remaining_name, reset_name] = *kind_names;
        resp.insert_header(limit_name, itoa::Buffer::new().format(limit))?;
        resp.insert_header(remaining_name, itoa::Buffer::new().format(remaining))?;
        let reset = match caller {
            Dialect::OpenAi => limits::openai_duration(reset_s),
            Dialect::Anthropic => limits::rfc3339(now_s + reset_s.ceil() as i64),
        };
        resp.insert_header(reset_name, reset)?;
    }
    let ours = |n: &str| kinds.iter().zip(names).any(|(v, kind_names)| v.is_some() && kind_names.contains(&n));
    let is_upstreams =
        |n: &http::HeaderName| n.as_str().starts_with("x-ratelimit-") || n.as_str().starts_with("anthropic-ratelimit-");
    if resp.headers.keys().any(|n| is_upstreams(n) && !ours(n.as_str())) {
        let stale: Vec<http::HeaderName> =
            resp.headers.keys().filter(|n| is_upstreams(n) && !ours(n.as_str())).cloned().collect();
        for name in stale {
            resp.remove_header(&name);
        }
    }
    Ok(())
}

/// A local token count (`dialect::count`) of `body`; a large body, or the first count (which loads
/// the tokenizer's tables), is counted off the async threads.
async fn count_off_thread<T: Send + 'static>(
    body: Bytes,
    count: impl FnOnce(&[u8]) -> T + Send + 'static,
    failed: T,
) -> T {
    if body.len() > 64 * 1024 || !dialect::count::o200k_ready() {
        tokio::task::spawn_blocking(move || count(&body)).await.unwrap_or(failed)
    } else {
        count(&body)
    }
}

/// The local token estimate for `count_tokens`.
async fn estimate_tokens(body: Bytes) -> Result<u64, dialect::TranslateError> {
    let failed = Err(dialect::TranslateError::new("body", "token count failed"));
    count_off_thread(body, dialect::count::estimate_input_tokens, failed).await
}

/// What a forwarded request is billed, and whether it is an estimate: the usage the upstream
/// reported, or `StreamTokens::estimate` (its input counted from the body sent upstream when the
/// upstream reported none) when
/// - a stream's count is missing or cannot be right (`StreamTokens::needs_estimate`), or
/// - the caller left before the upstream's answer (`left_unanswered`) had reported any input: the
///   upstream had the request, and providers bill what they processed, so it is billed at least
///   its input.
async fn billable_usage(response: &ResponseBody, forward: &plan::ForwardPlan, left_unanswered: bool) -> (Usage, bool) {
    match usage_or_estimate(response, left_unanswered) {
        Ok(reported) => (reported, false),
        Err(tokens) if tokens.lacks_input() => {
            let upstream = forward.model.upstream.dialect;
            let count = move |b: &[u8]| dialect::count::estimate_request_input(upstream, b);
            (tokens.estimate(count_off_thread(forward.body.clone(), count, 0).await), true)
        }
        Err(tokens) => (tokens.estimate(0), true),
    }
}

/// `billable_usage`'s rule: `Ok` the usage the upstream reported, or `Err` the stream's tokens so
/// far, to be billed as an estimate (its input counted from the body when it lacks one).
fn usage_or_estimate(response: &ResponseBody, left_unanswered: bool) -> Result<Usage, StreamTokens> {
    match response.stream_tokens() {
        Some(tokens) if tokens.needs_estimate() || (left_unanswered && tokens.lacks_input()) => Err(tokens),
        // A JSON answer that never came reported nothing.
        None if left_unanswered => Err(StreamTokens::default()),
        _ => Ok(response.usage()),
    }
}

/// Bills a generation request that Pingora dropped without its `logging` hook (`RequestCtx::drop`:
/// the grace period of a shutdown or an upgrade ended with it in flight). The upstream had it: it
/// is billed like a caller that left before the answer ended (`billable_usage`), counted here, on
/// the dropping thread (the runtime is stopping). Its row says status 0 and `estimated`, and its id
/// is its own, or one made from the caller's (a fresh id needs the gateway, gone by now).
fn bill_cut_off(ctx: &RequestCtx, ledger: &Ledger) {
    let (Some(forward), Some(key)) = (ctx.forward(), ctx.key.as_ref()) else { return };
    let (usage, estimated) = match usage_or_estimate(&ctx.response, ctx.upstream_done.is_none()) {
        Ok(reported) => (reported, false),
        Err(tokens) => {
            let input = if tokens.lacks_input() {
                dialect::count::estimate_request_input(forward.model.upstream.dialect, &forward.body)
            } else {
                0
            };
            (tokens.estimate(input), true)
        }
    };
    let model = &forward.model;
    let id = if ctx.request_id_from_caller {
        let mut salt = [0u8; 8];
        let _ = getrandom::getrandom(&mut salt);
        format!("{}:cut:{}", ctx.request_id, crate::auth::hex(&salt))
    } else {
        ctx.request_id.clone()
    };
    log::warn!("request {} to {} was cut by the shutdown; billed as an estimate", ctx.request_id, model.name);
    ledger.record(Row {
        stream: forward.stream,
        translated: ctx.translation().is_some(),
        usage,
        cost: cost::of_request(&usage, &model.price),
        ttfb_us: ctx.ttfb.map(|t| t.as_micros() as i64),
        estimated,
        ..request_row(id, ctx, key, model, endpoint_of(ctx.caller).into(), 0, ctx.started.elapsed())
    });
}

/// The endpoint a caller's generation request came in on (the ledger's `endpoint`).
fn endpoint_of(caller: Dialect) -> &'static str {
    match caller {
        Dialect::OpenAi => "/v1/chat/completions",
        Dialect::Anthropic => "/v1/messages",
    }
}

/// The request in Pingora's error lines ("Fail to proxy: ..., <this>"), on both paths.
fn request_summary(session: &Session, ctx: &RequestCtx) -> String {
    format!("{} {}, request_id: {}", session.req_header().method, session.req_header().uri.path(), ctx.request_id)
}

/// The caller went away (`e` is its connection's error) after its request reached the upstream and
/// before the upstream's answer ended, and that answer was not an error.
fn left_unanswered(ctx: &RequestCtx, e: Option<&Error>) -> bool {
    ctx.request_sent
        && ctx.upstream_done.is_none()
        && matches!(ctx.upstream_status, 0 | 200..=299)
        && e.is_some_and(caller_left)
}

/// `e` says the caller closed or dropped its connection (a client timeout, a cancelled call): not
/// the gateway's failure, so Pingora's error log skips it and the access log says `client_closed`.
fn caller_left(e: &Error) -> bool {
    // `H2Error`: an h2 caller that reset its stream (or broke the protocol) is gone the same way;
    // missing it here billed such a request nothing though the upstream had it.
    e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError | ErrorType::H2Error
        )
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: Pingora keeps the context inside each connection's future, which is copied whole
    /// when made and held for as long as a stream is open; a box keeps that at one pointer
    /// (`loadtest/stream_heap.sh`).
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx::new())
    }

    /// Runs once the request headers are in: routes, authenticates, reads the body, picks the
    /// model, or answers an error itself (`Ok(true)`).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.started = Instant::now();
        // One classification of the path: the dialect every answer takes, and the route `admit`
        // plans on.
        let routed = plan::route(session.req_header());
        ctx.caller = routed.caller;
        (ctx.request_id, ctx.request_id_from_caller) = self.request_ids.for_request(session.req_header());
        session.set_read_timeout(Some(self.settings.client_read_timeout));
        bound_keepalive(session, self.settings.client_idle_timeout);
        // A request sent before the previous answer was read is served after it, in order
        // (RFC 9112 §9.3.2), instead of being dropped with the connection (Pingora's default).
        session.set_pipelining_enabled(true);
        let outcome = match self.admit(session, ctx, routed.route).await {
            Ok(o) => o,
            Err(BodyError::Reject(e)) => Some(e),
            Err(BodyError::Io(e)) => return Err(e),
        };
        // Local answers are written from here: the same close applies to them.
        close_if_shutting_down(session);
        if let Some(err) = outcome {
            respond::error(session, &err, ctx.id()).await?;
            ctx.error = Some(err);
            return Ok(true);
        }
        if let Some(answer) = ctx.local.take() {
            ctx.local_rejected = answer.rejected;
            let extra: &[(&str, &str)] =
                if ctx.token_estimate { &[("x-cheapmodel-token-count", "estimate")] } else { &[] };
            respond::answer(session, answer.status, answer.body, &answer.content_type, ctx.id(), extra).await?;
            return Ok(true);
        }
        if ctx.forward().is_some_and(plan::ForwardPlan::answered_whole) {
            // Boxed: the future holds an upstream exchange that would otherwise sit inline in
            // this hook's future (see `admit`'s task calls).
            Box::pin(self.answer_whole(session, ctx)).await?;
            return Ok(true);
        }
        if ctx.leg.is_some() {
            return Ok(false);
        }
        // The one local answer left: /healthz.
        respond::json(session, 200, Bytes::from_static(br#"{"status":"ok"}"#), ctx.id()).await?;
        Ok(true)
    }

    /// The model's pinned upstream, or the one holding a task's media. Never another one.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let leg = ctx.leg.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no model routed"))?;
        let peer = upstream::peer(leg.upstream());
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.rewrite_upstream_request(req, ctx)
    }

    /// Receives the replayed body tail once per attempt and swaps the full body in.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(forward) = ctx.forward() {
            body::replay(body, end_of_stream, &forward.body);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        read_upstream_head(resp, ctx)?;
        frame_head(resp, ctx.response.framing(), None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.caller_head(session, resp, ctx)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            ctx.upstream_done = Some(Instant::now());
        }
        Ok(None)
    }

    /// Meters the response as it passes; rewrites it only to remove usage the caller did not ask
    /// for, or to translate it into the caller's dialect.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        ctx.response.feed(body, end_of_stream, &ctx.request_id);
        Ok(None)
    }

    /// The upstream leg failed: answer 502/504 in the caller's dialect, or, when a stream was
    /// already under way, end it with the dialect's error event.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Self::CTX) -> FailToProxy {
        let err = error_for(e);
        let mut code = 0;
        if let Some(err) = err {
            if session.response_written().is_none() {
                code = err.status();
                if respond::error(session, &err, ctx.id()).await.is_err() {
                    code = 0;
                }
            } else if ctx.sse {
                let tail = ctx.response.cut_off(&err, ctx.caller);
                if let Some(tail) = tail {
                    let _ = session.write_response_body(Some(tail), true).await;
                }
                code = session.response_written().map_or(0, |r| r.status.as_u16());
            }
            ctx.error = Some(err);
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// Meters, counts and logs every request, whatever its outcome.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let now = Instant::now();
        let total = now.duration_since(ctx.started);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // What the caller asked for, whatever came back (an error, or nothing when it left first).
        let stream = ctx.forward().map_or(ctx.sse, |f| f.stream);
        let m = metrics::get();
        let (usage, estimated, cost) = match ctx.forward() {
            Some(forward) => {
                let model = forward.model.clone();
                let (usage, estimated) = match forward.purpose {
                    Purpose::Generate => billable_usage(&ctx.response, forward, left_unanswered(ctx, e)).await,
                    Purpose::CountTokens => (Usage::default(), false),
                };
                let cost = cost::of_request(&usage, &model.price);
                let name = &*model.name;
                let handles = model.metrics.get(name, &model.upstream.name);
                match status {
                    200 => handles.ok.inc(),
                    _ => {
                        m.requests.with_label_values(&[name, &model.upstream.name, metrics::status_label(status)]).inc()
                    }
                }
                handles.duration.observe(total.as_secs_f64());
                if let Some(ttfb) = ctx.ttfb {
                    handles.ttfb.observe(ttfb.as_secs_f64());
                }
                let upstream_wait = match ctx.upstream_started {
                    Some(s) => ctx.upstream_done.unwrap_or(now).saturating_duration_since(s),
                    None => Duration::ZERO,
                };
                handles.overhead.observe(total.saturating_sub(upstream_wait).as_secs_f64());
                if let (Some(key), Purpose::Generate) = (&ctx.key, forward.purpose) {
                    let endpoint = endpoint_of(ctx.caller);
                    self.ledger.record(Row {
                        stream,
                        translated: ctx.translation().is_some(),
                        usage,
                        cost,
                        ttfb_us: ctx.ttfb.map(|t| t.as_micros() as i64),
                        estimated,
                        ..request_row(self.row_id(ctx), ctx, key, &model, endpoint.into(), status, total)
                    });
                }
                (usage, estimated, cost)
            }
            None => {
                // A task submit's call to its upstream; a task's cost comes with its own ledger row,
                // when it ends. A submit the upstream refused makes no task: its row is written
                // here (cost zero), as an upstream error on a chat request gets one.
                if let Some(model) = &ctx.submitted {
                    let labels = [&*model.name, &*model.upstream.name, metrics::status_label(status)];
                    m.requests.with_label_values(&labels).inc();
                    if let (Some(key), false) = (&ctx.key, (200..300).contains(&status)) {
                        let endpoint = session.req_header().uri.path().to_string().into();
                        self.ledger.record(request_row(self.row_id(ctx), ctx, key, model, endpoint, status, total));
                    }
                }
                (Usage::default(), false, crate::money::Money::ZERO)
            }
        };
        // Billed above, with no await since `billable_usage`: a context dropped before then (at
        // that await, or before this hook) still has it and bills itself.
        ctx.unbilled = None;
        if let Some(admission) = ctx.admission.take() {
            let tokens = usage.input + usage.output + usage.cache_read + usage.cache_write;
            admission.settle(tokens, cost);
        }
        if let Some(reason) = ctx.error.as_ref().map(GatewayError::reason).or(ctx.local_rejected) {
            m.rejected.with_label_values(&[reason]).inc();
        }
        let req = session.req_header();
        access_log::write(&access_log::Record {
            time: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_millis() as f64 / 1000.0),
            request_id: &ctx.request_id,
            key: ctx.key.as_deref().map(|k| &*k.name),
            model: ctx.model().map(|m| &**m).map(|m| &*m.name),
            upstream: ctx.model().map(|m| &*m.upstream.name).or_else(|| ctx.download().map(|d| &*d.upstream.name)),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            latency_ms: total.as_secs_f64() * 1000.0,
            ttfb_ms: ctx.ttfb.map(|t| t.as_secs_f64() * 1000.0),
            input_tokens: usage.input,
            output_tokens: usage.output,
            cache_read_tokens: usage.cache_read,
            cache_write_tokens: usage.cache_write,
            cost_usd: cost.as_usd_f64(),
            error: ctx
                .error
                .as_ref()
                .map(GatewayError::reason)
                .or(e.map(|e| if caller_left(e) { "client_closed" } else { "proxy_error" }))
                .or(ctx.response.untranslatable().then_some("untranslatable_response")),
            stream,
            dropped: (!ctx.dropped.is_empty()).then_some(ctx.dropped.as_str()),
            estimated,
        });
    }

    /// A caller that went away is not an error of the gateway's: the access log line says it.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        caller_left(error)
    }

    /// Keeps Pingora's per-request error log free of request details that could carry secrets.
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        request_summary(session, ctx)
    }
}

/// The gateway's own base URL as the caller reached it (for result URLs it serves).
fn base_url(req: &RequestHeader) -> String {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = match req.headers.get("x-forwarded-proto").map(|v| v.as_bytes()) {
        Some(b"https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_response() -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).expect("header");
        for (name, value) in [
            ("Content-Type", "application/json"),
            ("X-RateLimit-Limit-Requests", "10000"),
            ("x-ratelimit-remaining-tokens", "5"),
            ("anthropic-ratelimit-input-tokens-limit", "7"),
        ] {
            resp.append_header(name, value).expect("append");
        }
        resp
    }

    fn wire(resp: &ResponseHeader) -> String {
        let mut out = Vec::new();
        resp.header_to_h1_wire(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_body_sent_whole_gets_its_length_and_one_passing_as_it_comes_is_rechunked_only_if_rewritten() {
        let framed = |upstream: &[(&str, &str)], framing, whole| {
            let mut resp = ResponseHeader::build(200, None).expect("header");
            for (name, value) in upstream {
                resp.append_header(name.to_string(), *value).expect("append");
            }
            frame_head(&mut resp, framing, whole).expect("framed");
            wire(&resp).to_ascii_lowercase()
        };
        let sized = [("content-type", "text/plain"), ("content-length", "10")];
        let chunked = [("content-type", "text/plain"), ("transfer-encoding", "chunked")];
        // Passing as it comes (Pingora's proxy path).
        let translated = framed(&sized, Framing::Rewritten { json: true }, None);
        assert!(translated.contains("transfer-encoding: chunked") && !translated.contains("content-length"));
        assert!(translated.contains("content-type: application/json"), "{translated}");
        assert!(framed(&sized, Framing::AsIs, None).contains("content-length: 10\r\n"));
        assert!(!framed(&sized, Framing::LengthUnknown, None).contains("content-length"));
        // Sent whole (`whole`): the length of what is sent, never chunked, whatever the upstream did.
        for upstream in [&sized[..], &chunked[..]] {
            for framing in [Framing::AsIs, Framing::LengthUnknown, Framing::Rewritten { json: true }] {
                let head = framed(upstream, framing, Some(42));
                assert!(head.contains("content-length: 42\r\n") && !head.contains("transfer-encoding"), "{head}");
                assert!(!head.contains("content-length: 10"), "{head}");
            }
        }
        let whole = framed(&chunked, Framing::Rewritten { json: true }, Some(42));
        assert!(whole.contains("content-type: application/json"), "{whole}");
        // A length the upstream already stated once stays as it wrote it (its spelling included);
        // a repeated one, even of the same value, becomes one header.
        let spelled = |upstream: &[(&str, &str)]| {
            let mut resp = ResponseHeader::build(200, None).expect("header");
            for (name, value) in upstream {
                resp.append_header(name.to_string(), *value).expect("append");
            }
            frame_head(&mut resp, Framing::AsIs, Some(10)).expect("framed");
            wire(&resp)
        };
        let kept = spelled(&[("content-length", "10")]);
        assert!(kept.contains("content-length: 10\r\n") && !kept.contains("Content-Length"), "{kept}");
        let twice = spelled(&[("content-length", "10"), ("content-length", "10")]);
        assert_eq!(twice.to_ascii_lowercase().matches("content-length: 10\r\n").count(), 1, "{twice}");
        let cased = spelled(&[("Content-Length", "10"), ("Transfer-Encoding", "chunked")]);
        assert!(cased.contains("Content-Length: 10\r\n") && !cased.contains("Transfer-Encoding"), "{cased}");
    }

    #[test]
    fn a_limited_keys_headers_replace_every_upstream_rate_limit_header() {
        let mut resp = upstream_response();
        let allowance = limits::Allowance { requests: Some((60, 59, 0.5)), tokens: None };
        rate_limit_headers(&mut resp, Dialect::OpenAi, &allowance, 0).expect("headers");
        let h = &resp.headers;
        assert_eq!(h.get("x-ratelimit-limit-requests").map(|v| v.as_bytes()), Some(&b"60"[..]));
        assert_eq!(h.get("x-ratelimit-remaining-requests").map(|v| v.as_bytes()), Some(&b"59"[..]));
        assert_eq!(h.get("x-ratelimit-reset-requests").map(|v| v.as_bytes()), Some(&b"500ms"[..]));
        // The upstream's token and Anthropic headers describe the upstream account: gone.
        assert!(h.get("x-ratelimit-remaining-tokens").is_none());
        assert!(h.get("anthropic-ratelimit-input-tokens-limit").is_none());
        assert_eq!(h.get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        // The case map stays in step with the values (Pingora asserts it while writing).
        let wire = wire(&resp);
        assert_eq!(wire.matches("atelimit").count(), 3, "{wire}");
        assert!(wire.contains("x-ratelimit-limit-requests: 60\r\n"), "{wire}");
    }

    #[test]
    fn anthropic_callers_get_the_anthropic_names_with_an_rfc3339_reset() {
        let mut resp = upstream_response();
        let allowance = limits::Allowance { requests: Some((60, 0, 1.2)), tokens: Some((1000, 10, 30.0)) };
        rate_limit_headers(&mut resp, Dialect::Anthropic, &allowance, 1_700_000_000).expect("headers");
        let h = &resp.headers;
        assert_eq!(h.get("anthropic-ratelimit-requests-remaining").map(|v| v.as_bytes()), Some(&b"0"[..]));
        assert_eq!(h.get("anthropic-ratelimit-tokens-reset").map(|v| v.as_bytes()), Some(&b"2023-11-14T22:13:50Z"[..]));
        assert!(h.get("x-ratelimit-limit-requests").is_none() && h.get("x-ratelimit-remaining-tokens").is_none());
        assert_eq!(wire(&resp).matches("atelimit").count(), 6);
    }

    #[test]
    fn only_a_caller_leaving_a_sent_request_before_a_non_error_answer_ended_is_left_unanswered() {
        let caller_left = Error::new_down(ErrorType::ConnectionClosed);
        let upstream_failed = Error::new_up(ErrorType::ConnectionClosed);
        let body_timeout = Error::new_down(ErrorType::ReadTimedout);
        let sent = |status: u16, done: bool| {
            let mut ctx = RequestCtx::new();
            ctx.request_sent = true;
            ctx.upstream_status = status;
            ctx.upstream_done = done.then(Instant::now);
            ctx
        };
        let h2_stream_reset = Error::new_down(ErrorType::H2Error);
        for status in [0, 200] {
            assert!(left_unanswered(&sent(status, false), Some(&caller_left)), "{status}");
            assert!(left_unanswered(&sent(status, false), Some(&h2_stream_reset)), "{status}");
        }
        assert!(!left_unanswered(&sent(0, false), Some(&Error::new_up(ErrorType::H2Error))));
        // The upstream's answer was whole (its count is there), or an error (not billed), or the
        // leg failed upstream, or nothing failed.
        assert!(!left_unanswered(&sent(200, true), Some(&caller_left)));
        assert!(!left_unanswered(&sent(429, false), Some(&caller_left)));
        assert!(!left_unanswered(&sent(0, false), Some(&upstream_failed)));
        assert!(!left_unanswered(&sent(0, false), Some(&body_timeout)));
        assert!(!left_unanswered(&sent(0, false), None));
        // The caller left before the request reached an upstream.
        assert!(!left_unanswered(&RequestCtx::new(), Some(&caller_left)));
    }
}
