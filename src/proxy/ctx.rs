//! Per-request state carried between Pingora hooks: the upstream leg being carried out (`leg`: a
//! forward plan or a task's media download) and what the response side learns (`response`, the
//! `ResponseBody` chosen from the upstream's head). Imports: `plan`, `registry`, `error`,
//! `proxy::response`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Dialect, GatewayError};
use crate::plan::{ForwardPlan, Mode};
use crate::registry::{Key, Model, Snapshot};

/// The one upstream exchange a request can have: both kinds go through Pingora's proxy (pooled
/// connections, the same timeouts, streamed bodies), so they share the proxy hooks; a forward
/// whose answer is read whole (`ForwardPlan::answered_whole`) goes through `proxy::whole`, which
/// calls the same rules.
#[derive(Debug)]
pub enum UpstreamLeg {
    /// A chat or messages request, carried out as planned (`plan`).
    Forward(ForwardPlan),
    /// A task's media, relayed from the upstream that holds it as the caller reads it. It has no
    /// model and no plan: the task id named the upstream and the path.
    Download(crate::tasks::Download),
}

impl UpstreamLeg {
    /// The upstream this leg talks to.
    pub fn upstream(&self) -> &crate::registry::Upstream {
        match self {
            UpstreamLeg::Forward(forward) => &forward.model.upstream,
            UpstreamLeg::Download(download) => &download.upstream,
        }
    }
}

/// State of one request.
pub struct RequestCtx {
    /// When the request headers were done.
    pub started: Instant,
    /// Routing data for the whole request (a reload does not change it midway).
    pub snapshot: Option<Arc<Snapshot>>,
    /// Dialect the caller speaks (errors are shaped in it).
    pub caller: Dialect,
    /// `x-request-id`.
    pub request_id: String,
    /// `request_id` came from the caller (so it cannot be the ledger row's unique id).
    pub request_id_from_caller: bool,
    /// Authenticated key.
    pub key: Option<Arc<Key>>,
    /// The caller's body came compressed and the gateway decoded it (the upstream gets it decoded).
    pub body_decoded: bool,
    /// Where the request goes upstream, once decided (`None`: answered by the gateway itself).
    pub leg: Option<UpstreamLeg>,
    /// The gateway's own error, if it answered one.
    pub error: Option<GatewayError>,
    /// When the upstream leg started (peer chosen).
    pub upstream_started: Option<Instant>,
    /// The request's head went to a connected upstream (`upstream_request_filter` ran): from here
    /// on the upstream may process, and its provider bill, the request.
    pub request_sent: bool,
    /// Upstream response headers, relative to `upstream_started`.
    pub ttfb: Option<Duration>,
    /// When the upstream body ended.
    pub upstream_done: Option<Instant>,
    /// What the response body goes through (chosen when the upstream's head arrives).
    pub response: super::response::ResponseBody,
    /// The response is an SSE stream.
    pub sse: bool,
    /// The upstream's response status.
    pub upstream_status: u16,
    /// An answer the gateway gives itself (media tasks, local token count).
    pub local: Option<crate::tasks::Answer>,
    /// The media model whose upstream a task submit went to (`tasks::submit` ran).
    pub submitted: Option<Arc<Model>>,
    /// The model of a request refused before its leg (a limit, a translation), for the access log.
    pub refused_model: Option<Arc<Model>>,
    /// `local` is a token-count estimate.
    pub token_estimate: bool,
    /// The local answer sent was the gateway's own error (`tasks::Answer::rejected`), for the metric.
    pub local_rejected: Option<&'static str>,
    /// What translation left out of the request, as the `x-cheapmodel-dropped` value (empty: nothing).
    pub dropped: String,
    /// The request's lease on its key's and model's limits (settled in `logging`; released when
    /// dropped, however the request ends).
    pub admission: Option<crate::limits::Admission>,
    /// Set when a generation request's head goes to its upstream, taken by `logging`, which bills
    /// it. Still set when the context is dropped, Pingora dropped the request without running
    /// `logging`: a shutdown's grace period ended with it in flight, and the runtime stopped. The
    /// drop then bills it (`super::bill_cut_off`), as a caller that left is billed.
    pub unbilled: Option<Arc<crate::ledger::Ledger>>,
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        if let Some(ledger) = self.unbilled.take() {
            super::bill_cut_off(self, &ledger);
        }
    }
}

impl RequestCtx {
    /// The request's id, as the gateway's own answers carry it.
    pub fn id(&self) -> super::respond::RequestId<'_> {
        super::respond::RequestId { id: &self.request_id, caller: self.caller }
    }

    /// A fresh context.
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            caller: Dialect::OpenAi,
            request_id: String::new(),
            request_id_from_caller: false,
            key: None,
            body_decoded: false,
            leg: None,
            error: None,
            upstream_started: None,
            request_sent: false,
            ttfb: None,
            upstream_done: None,
            response: super::response::ResponseBody::Pass,
            sse: false,
            upstream_status: 0,
            local: None,
            submitted: None,
            refused_model: None,
            token_estimate: false,
            local_rejected: None,
            dropped: String::new(),
            admission: None,
            unbilled: None,
        }
    }
}

impl RequestCtx {
    /// The forward plan being carried out, if the request is forwarded.
    pub fn forward(&self) -> Option<&ForwardPlan> {
        match &self.leg {
            Some(UpstreamLeg::Forward(forward)) => Some(forward),
            _ => None,
        }
    }

    /// The task media download being relayed, if that is what the request is.
    pub fn download(&self) -> Option<&crate::tasks::Download> {
        match &self.leg {
            Some(UpstreamLeg::Download(download)) => Some(download),
            _ => None,
        }
    }

    /// The routed model: the forwarded request's, the submitted task's, or the refused request's.
    pub fn model(&self) -> Option<&Arc<Model>> {
        self.forward().map(|f| &f.model).or(self.submitted.as_ref()).or(self.refused_model.as_ref())
    }

    /// `(caller, upstream)` dialects when the request is translated.
    pub fn translation(&self) -> Option<(Dialect, Dialect)> {
        match self.forward()?.mode {
            Mode::Translate { caller, upstream, .. } => Some((caller, upstream)),
            Mode::Passthrough { .. } => None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
