//! Serde mirror of the YAML config file. No logic and no pingora types: `config::load` validates
//! this into a `registry::Snapshot`. `deny_unknown_fields` everywhere so a typo is an error that
//! names its field path, never a silently ignored setting.
//! Imports: `ledger` and `limits` (their own config sections). Not `registry`, `proxy` or Pingora:
//! no logic here.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listener and process settings (read at start; a reload does not change them).
    pub server: RawServer,
    /// Upstream providers by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Registered models by their public, versioned name.
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    /// Caller keys, stored as sha256.
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// The usage ledger (read at start; a reload does not change it).
    #[serde(default)]
    pub ledger: RawLedger,
}

/// `ledger:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// `sqlite://PATH`, `postgres://...`, or `none`. Default: a SQLite file beside the config.
    #[serde(default)]
    pub url: Option<String>,
    /// Longest a row waits before its batch is written.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// Directory of the spool used while the database is unreachable. Default: beside the config.
    #[serde(default)]
    pub spool_dir: Option<String>,
    /// `serve` (default) or `reject`: what to do when rows can be neither written nor spooled.
    #[serde(default)]
    pub on_failure: crate::ledger::OnFailure,
}

impl Default for RawLedger {
    fn default() -> Self {
        RawLedger { url: None, flush_interval_ms: default_flush_ms(), spool_dir: None, on_failure: Default::default() }
    }
}

/// `server:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Addresses the gateway listens on (HTTP/1.1 and h2c).
    pub listen: Vec<String>,
    /// Address of the Prometheus `/metrics` listener.
    #[serde(default)]
    pub metrics: Option<String>,
    /// Worker threads.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Largest accepted request body in bytes (413 above).
    #[serde(default = "default_max_body")]
    pub max_request_body: usize,
    /// Pingora pid file (daemon mode, graceful upgrade).
    #[serde(default)]
    pub pid_file: Option<String>,
    /// Pingora upgrade socket (graceful binary upgrade).
    #[serde(default)]
    pub upgrade_sock: Option<String>,
    /// Seconds an old process keeps serving after a graceful upgrade or SIGTERM.
    #[serde(default)]
    pub grace_period_seconds: Option<u64>,
    /// Seconds to wait for in-flight requests when shutting the runtimes down.
    #[serde(default)]
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    /// Write one JSON access-log line per request to stdout.
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// How long the gateway waits on a silent caller while reading its request body (HTTP/1.x).
    #[serde(default = "default_client_read_ms")]
    pub client_read_timeout_ms: u64,
    /// How long a connection may wait for a request to start (a new one, or a kept-alive one
    /// between requests) before the gateway closes it.
    #[serde(default = "default_client_idle_ms")]
    pub client_idle_timeout_ms: u64,
    /// Environment variable holding the secret that signs task ids. Instances that share it (and
    /// a restarted instance) can answer each other's polls. Unset: derived from the config's
    /// key hashes and pinned in the ledger's database at the first start (`ledger::pin_task_secret`);
    /// reloads keep the running one.
    #[serde(default)]
    pub task_secret_env: Option<String>,
    /// How long finished tasks the gateway ran itself are kept.
    #[serde(default = "default_task_ttl")]
    pub task_ttl_seconds: u64,
    /// Bound on tasks kept by the embedded task store.
    #[serde(default = "default_task_entries")]
    pub task_store_max_entries: usize,
    /// Bound on result bytes kept by the embedded task store.
    #[serde(default = "default_task_bytes")]
    pub task_store_max_bytes: usize,
    /// Seconds between checks of the config file for changes (0 disables; SIGHUP always works).
    #[serde(default = "default_watch")]
    pub watch_interval_seconds: u64,
    /// `redis://…` (or `rediss://…`, TLS, verified against the system's roots or `SSL_CERT_FILE`):
    /// limits and budgets shared by every instance; absent = in-process.
    #[serde(default)]
    pub state: Option<String>,
    /// What an instance does while `state` is unreachable: `local` (its share, in-process) or `deny` (503).
    #[serde(default)]
    pub on_state_error: crate::limits::OnStateError,
}

/// One entry of `upstreams:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `scheme://host[:port][/base-path]`.
    pub url: String,
    /// The API the upstream speaks.
    pub dialect: UpstreamDialect,
    /// Environment variable holding the upstream's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the upstream's API key, relative to the config file's directory; read again
    /// at every reload, so that a key rotates without a restart.
    #[serde(default)]
    pub api_key_file: Option<String>,
    /// TCP (+TLS) connect timeout.
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for any single read from the upstream (time to first byte, gap between SSE events).
    #[serde(default = "default_read_ms")]
    pub read_timeout_ms: u64,
}

/// The API an upstream speaks: a chat dialect, or a media task API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpstreamDialect {
    /// OpenAI: chat completions, and for media synchronous images/speech and video jobs.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic messages.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Flat task API (EvoLink-style): submit returns the task, `GET /v1/tasks/{id}` polls it.
    #[serde(rename = "task")]
    Task,
    /// Wrapped task API (APIMart-style): `{"code":200,"data":...}` envelopes.
    #[serde(rename = "task-wrapped")]
    TaskWrapped,
}

/// `models.NAME.params`: what translation does with a request field it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ParamsPolicy {
    /// Dropped and reported (`x-cheapmodel-dropped`, access log, metric): clients add fields
    /// with every release, and a gateway that refuses them breaks its users on each update.
    #[default]
    Lenient,
    /// 400 naming the field, as before; fields the mapping tables drop by rule stay dropped.
    Strict,
}

/// Kind of work a model does; chat models route on the chat endpoints only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat / messages.
    #[default]
    Chat,
    /// Image generation.
    Image,
    /// Video generation.
    Video,
    /// Speech.
    Audio,
    /// Music.
    Music,
}

impl ModelKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Image => "image",
            ModelKind::Video => "video",
            ModelKind::Audio => "audio",
            ModelKind::Music => "music",
        }
    }
}

/// One entry of `models:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Name of the upstream this model is pinned to.
    pub upstream: String,
    /// Model name the upstream knows (defaults to the registered name).
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Kind of work.
    #[serde(default)]
    pub kind: ModelKind,
    /// Prices in USD.
    #[serde(default)]
    pub price: RawPrice,
    /// Default `max_tokens` for translated requests that carry none.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// What translation does with a request field it does not know.
    #[serde(default)]
    pub params: ParamsPolicy,
    /// The model takes Anthropic structured outputs (`output_config.format`), so an OpenAI
    /// caller's `response_format` json_schema / json_object can be translated (else: 400).
    #[serde(default)]
    pub structured_outputs: bool,
    /// A media task not finished after this many seconds is failed (`deadline_exceeded`).
    #[serde(default = "default_task_deadline")]
    pub task_deadline_seconds: u64,
    /// For a model priced per second on a task API: the duration asked for when the caller names
    /// none (else such a request is a 400: the upstream's own default is unknown, so unbillable).
    #[serde(default)]
    pub default_duration_seconds: Option<u32>,
    /// Limits for the whole model, all keys together (protects the upstream account).
    #[serde(default)]
    pub limits: RawLimits,
}

/// `limits:` of a key or a model; absent fields are unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Requests per rolling minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per rolling minute (input, output and cache tokens together).
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests in flight, streams included.
    #[serde(default)]
    pub concurrency: Option<u32>,
}

/// `budget:` of a key, in USD per UTC calendar period.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Per UTC day.
    #[serde(default)]
    pub daily_usd: Option<f64>,
    /// Per UTC calendar month.
    #[serde(default)]
    pub monthly_usd: Option<f64>,
}

/// Prices in USD per million tokens (and per unit for media).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// Non-cached input tokens.
    #[serde(default)]
    pub input_per_mtok: f64,
    /// Output tokens (reasoning included).
    #[serde(default)]
    pub output_per_mtok: f64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_per_mtok: f64,
    /// Input tokens written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_per_mtok: f64,
    /// Per generated image.
    #[serde(default)]
    pub per_image: f64,
    /// Per second of generated video or audio.
    #[serde(default)]
    pub per_second: f64,
    /// Per request.
    #[serde(default)]
    pub per_request: f64,
}

/// One entry of `keys:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Shown in logs and metrics, never the key itself.
    pub name: String,
    /// Lowercase hex sha256 of the key (`cheapmodel hash-key KEY`).
    pub sha256: String,
    /// Optional allow-list of model names.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Per-key limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Per-key spend caps.
    #[serde(default)]
    pub budget: RawBudget,
}

fn default_flush_ms() -> u64 {
    200
}
fn default_threads() -> usize {
    2
}
fn default_max_body() -> usize {
    32 * 1024 * 1024
}
fn default_true() -> bool {
    true
}
fn default_watch() -> u64 {
    2
}
fn default_task_deadline() -> u64 {
    1800
}
fn default_task_ttl() -> u64 {
    3600
}
fn default_task_entries() -> usize {
    10_000
}
fn default_task_bytes() -> usize {
    256 * 1024 * 1024
}
fn default_client_read_ms() -> u64 {
    30_000
}
fn default_client_idle_ms() -> u64 {
    60_000
}
fn default_connect_ms() -> u64 {
    2000
}
fn default_read_ms() -> u64 {
    600_000
}
