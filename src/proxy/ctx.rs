//! Per-request state carried between Pingora hooks: the plan being carried out (`forward`) and
//! what the response side learns. Imports: `plan`, `registry`, `usage`, `dialect`, `error`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::dialect::stream::StreamTranslator;
use crate::error::{Dialect, GatewayError};
use crate::plan::{ForwardPlan, Mode};
use crate::registry::{Key, Model, Snapshot};
use crate::usage::StreamMeter;

/// How the response body is metered.
#[derive(Debug, Default)]
pub enum ResponseMeter {
    /// Not decided yet, or nothing to meter.
    #[default]
    None,
    /// A JSON body: its chunks are kept (refcounted, not copied) and read once at the end.
    Json { chunks: Vec<Bytes>, len: usize },
    /// A same-dialect SSE stream, read as it passes.
    Stream(Box<StreamMeter>),
    /// A translated SSE stream: the translator reads the usage as it translates.
    Translate(Box<dyn StreamTranslator + Sync>),
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
    /// What to send upstream and how (set when the plan forwards).
    pub forward: Option<ForwardPlan>,
    /// A task's media, relayed from its upstream as the caller reads it (never with `forward`).
    pub download: Option<crate::tasks::Download>,
    /// The caller asked for a stream.
    pub stream: bool,
    /// The gateway's own error, if it answered one.
    pub error: Option<GatewayError>,
    /// When the upstream leg started (peer chosen).
    pub upstream_started: Option<Instant>,
    /// Upstream response headers, relative to `upstream_started`.
    pub ttfb: Option<Duration>,
    /// When the upstream body ended.
    pub upstream_done: Option<Instant>,
    /// Response metering.
    pub meter: ResponseMeter,
    /// The response is an SSE stream.
    pub sse: bool,
    /// The upstream's response status.
    pub upstream_status: u16,
    /// An answer the gateway gives itself (media tasks, local token count).
    pub local: Option<crate::tasks::Answer>,
    /// `local` is a token-count estimate.
    pub token_estimate: bool,
    /// What translation left out of the request, as the `x-cheapmodel-dropped` value (empty: nothing).
    pub dropped: String,
    /// The request's lease on its key's and model's limits (settled in `logging`; released when
    /// dropped, however the request ends).
    pub admission: Option<crate::limits::Admission>,
}

impl RequestCtx {
    /// A fresh context.
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            caller: Dialect::OpenAi,
            request_id: String::new(),
            request_id_from_caller: false,
            key: None,
            forward: None,
            download: None,
            stream: false,
            error: None,
            upstream_started: None,
            ttfb: None,
            upstream_done: None,
            meter: ResponseMeter::None,
            sse: false,
            upstream_status: 0,
            local: None,
            token_estimate: false,
            dropped: String::new(),
            admission: None,
        }
    }
}

impl RequestCtx {
    /// The routed model, when forwarding.
    pub fn model(&self) -> Option<&Arc<Model>> {
        self.forward.as_ref().map(|f| &f.model)
    }

    /// `(caller, upstream)` dialects when the request is translated.
    pub fn translation(&self) -> Option<(Dialect, Dialect)> {
        match self.forward.as_ref()?.mode {
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
