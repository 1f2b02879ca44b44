//! The routing data every request reads: upstreams, models and keys as one immutable snapshot,
//! swapped whole on reload (`Registry::replace`). A request takes one `Arc<Snapshot>` when it starts
//! and finishes on it, so a reload never changes a request midway. Everything a request needs per
//! call (peer address, upstream auth header, JSON-encoded upstream model name, prices) is built
//! here once per reload, not per request. No IO and no parsing here.
//! Imports: `error`, `config` (its raw types), `metrics` (lazily resolved handles). Not `proxy` or
//! `plan`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;

pub use crate::config::raw::ModelKind;
use crate::error::Dialect;

/// An upstream provider endpoint, ready to connect to.
#[derive(Debug)]
pub struct Upstream {
    /// Config name, used as a metric label.
    pub name: Arc<str>,
    /// Chat dialect it speaks (task upstreams use OpenAI-style auth and errors).
    pub dialect: Dialect,
    /// Media task style, for media models.
    pub task_style: Option<TaskStyle>,
    /// Resolved address (resolved at load time: Pingora's `HttpPeer::new` would do blocking DNS).
    pub addr: SocketAddr,
    /// TLS with SNI `host`.
    pub tls: bool,
    /// Host name (SNI) without port.
    pub host: String,
    /// `Host` header value sent upstream (host, plus port when not the scheme's default).
    pub host_header: HeaderValue,
    /// Path prefix that replaces the caller's `/v1` (e.g. `/v1beta/openai`); `/v1` when the URL has none.
    pub base_path: String,
    /// Header carrying the upstream key (`authorization` or `x-api-key`) and its value, marked
    /// sensitive so it never prints.
    pub auth: Option<(http::header::HeaderName, HeaderValue)>,
    /// TCP (+TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Per-read timeout.
    pub read_timeout: Duration,
}

impl Upstream {
    /// The upstream's key itself (the `auth` value without its `Bearer ` scheme): what `redact`
    /// masks in the error answers relayed to callers. Empty when the upstream has none.
    pub fn key(&self) -> &[u8] {
        let Some((_, value)) = &self.auth else { return b"" };
        let value = value.as_bytes();
        value.strip_prefix(b"Bearer ").unwrap_or(value)
    }
}

/// How an upstream runs media generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStyle {
    /// Flat task API (EvoLink-style).
    Flat,
    /// Wrapped task API (APIMart-style).
    Wrapped,
    /// OpenAI: synchronous images and speech (run by the gateway), video jobs (relayed).
    OpenAi,
}

/// A model's prices in exact money (`money`): pico-dollars per token for each token class, per
/// image, per second and per request. Converted from the config's decimal USD once per load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    /// Per non-cached input token.
    pub input: i64,
    /// Per output token.
    pub output: i64,
    /// Per input token read from the prompt cache.
    pub cache_read: i64,
    /// Per input token written to the prompt cache.
    pub cache_write: i64,
    /// Per generated image.
    pub per_image: i64,
    /// Per second of generated video or audio.
    pub per_second: i64,
    /// Per request (chat) or per task (media).
    pub per_request: i64,
}

/// A registered model.
#[derive(Debug)]
pub struct Model {
    /// Public name (metric label).
    pub name: Arc<str>,
    /// Pinned upstream.
    pub upstream: Arc<Upstream>,
    /// The upstream's name for it, JSON-encoded with quotes, only when it differs from `name`
    /// (spliced into the body in place of the caller's value).
    pub upstream_model_json: Option<Bytes>,
    /// The upstream's name for it (always set; equals `name` unless `upstream_model` says otherwise).
    pub upstream_model: Arc<str>,
    /// Kind of work.
    pub kind: ModelKind,
    /// Prices.
    pub price: Price,
    /// Default `max_tokens` for translated requests.
    pub max_output_tokens: Option<u32>,
    /// `params: strict`: unknown request fields are refused on translated routes.
    pub strict_params: bool,
    /// Takes Anthropic structured outputs (`structured_outputs: true`).
    pub structured_outputs: bool,
    /// Media task deadline.
    pub task_deadline: Duration,
    /// The duration a task API is asked for when a caller names none, for a model billed per
    /// second (none: such a request is a 400).
    pub default_duration_seconds: Option<u32>,
    /// Its metric handles (resolved on first use).
    pub metrics: crate::metrics::ModelHandles,
    /// Limits for the model as a whole (all keys).
    pub limits: crate::limits::LimitSettings,
}

/// A caller key (only its hash is known).
#[derive(Debug)]
pub struct Key {
    /// Configured name (metric label, logs).
    pub name: Arc<str>,
    /// Allow-list; `None` means every model.
    pub models: Option<HashSet<String>>,
    /// Its limits.
    pub limits: crate::limits::LimitSettings,
    /// Its spend caps.
    pub budget: crate::limits::BudgetSettings,
}

impl Key {
    /// Whether this key may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
    }
}

/// The registry's maps, looked up on every request (the key's digest, the model's name): hashed
/// with foldhash, not SipHash, which cost ~270 instructions a lookup (callgrind). Their keys are
/// fixed when the config loads; a caller only looks up, so there is no table for it to flood.
pub use foldhash::{HashMap, HashSet};

/// Upstreams, models and keys at one point in time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Upstreams by name.
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Models by exact registered name. No prefix or family matching, ever.
    pub models: HashMap<String, Arc<Model>>,
    /// Keys by sha256 digest.
    pub keys: HashMap<[u8; 32], Arc<Key>>,
    /// Largest accepted request body.
    pub max_request_body: usize,
    /// Secret that signs task ids.
    pub task_secret: Vec<u8>,
}

impl Snapshot {
    /// The key whose digest starts with `prefix` (task ownership).
    pub fn key_by_digest_prefix(&self, prefix: &[u8]) -> Option<&Arc<Key>> {
        self.keys.iter().find(|(d, _)| d.starts_with(prefix)).map(|(_, k)| k)
    }

    /// Exact-name model lookup.
    pub fn model(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }
}

/// The live snapshot behind an `ArcSwap`: readers never block, a reload is one pointer store.
pub struct Registry(ArcSwap<Snapshot>);

impl Registry {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Registry(ArcSwap::from_pointee(snapshot))
    }

    /// The snapshot a request keeps until it ends.
    pub fn current(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Installs a new, already validated snapshot.
    pub fn replace(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}
