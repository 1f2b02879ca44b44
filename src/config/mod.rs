//! Loading and validating the YAML config. `load` is the only entry point: used at start, by
//! `cheapmodel check`, and on every reload. Errors name the failing field path
//! (`models.gpt-5.5.upstream`). Never panics. Reads the environment for `api_key_env`, the files of
//! `api_key_file`, and resolves upstream host names (so the request path never does DNS).
//! Imports: `error`, `registry` (what it builds). Not `proxy`, `plan`, `dialect` or `tasks`.

pub mod raw;

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use crate::error::Dialect;
use crate::registry::TaskStyle;
use crate::registry::{Key, Model, Snapshot, Upstream};
use raw::{ModelKind, RawConfig, RawServer, RawUpstream, UpstreamDialect};

/// A config error: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the failing field (`.` for the whole file).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

/// A loaded config: process settings plus the first routing snapshot.
#[derive(Debug)]
pub struct Loaded {
    /// `server:` as written (listeners, threads...).
    pub server: RawServer,
    /// Routing data.
    pub snapshot: Snapshot,
    /// `ledger:` as written (`ledger_settings` resolves it against the config's path).
    pub ledger: raw::RawLedger,
    /// The upstreams' `api_key_file`s, resolved: the reloader watches them with the config file.
    pub key_files: Vec<PathBuf>,
}

/// The `server:` and `ledger:` fields whose value in `reloaded` differs from the `running` one
/// although a reload leaves them as they were (they need a restart or a graceful upgrade): named
/// in the reload's log line, so that an edit that did not apply is not taken for one that did.
/// `max_request_body` and `task_secret_env` are not among them: they reload.
pub fn restart_only_changes(
    (running, running_ledger): (&RawServer, &raw::RawLedger),
    (reloaded, reloaded_ledger): (&RawServer, &raw::RawLedger),
) -> Vec<&'static str> {
    // Destructured whole: a new field does not compile until it is sorted here.
    let RawServer {
        listen,
        metrics,
        threads,
        max_request_body: _,
        pid_file,
        upgrade_sock,
        grace_period_seconds,
        graceful_shutdown_timeout_seconds,
        access_log,
        client_read_timeout_ms,
        client_idle_timeout_ms,
        task_secret_env: _,
        task_ttl_seconds,
        task_store_max_entries,
        task_store_max_bytes,
        watch_interval_seconds,
        state,
        on_state_error,
    } = reloaded;
    let raw::RawLedger { url, flush_interval_ms, spool_dir, on_failure } = reloaded_ledger;
    let r = running;
    let l = running_ledger;
    [
        ("server.listen", *listen != r.listen),
        ("server.metrics", *metrics != r.metrics),
        ("server.threads", *threads != r.threads),
        ("server.pid_file", *pid_file != r.pid_file),
        ("server.upgrade_sock", *upgrade_sock != r.upgrade_sock),
        ("server.grace_period_seconds", *grace_period_seconds != r.grace_period_seconds),
        (
            "server.graceful_shutdown_timeout_seconds",
            *graceful_shutdown_timeout_seconds != r.graceful_shutdown_timeout_seconds,
        ),
        ("server.access_log", *access_log != r.access_log),
        ("server.client_read_timeout_ms", *client_read_timeout_ms != r.client_read_timeout_ms),
        ("server.client_idle_timeout_ms", *client_idle_timeout_ms != r.client_idle_timeout_ms),
        ("server.task_ttl_seconds", *task_ttl_seconds != r.task_ttl_seconds),
        ("server.task_store_max_entries", *task_store_max_entries != r.task_store_max_entries),
        ("server.task_store_max_bytes", *task_store_max_bytes != r.task_store_max_bytes),
        ("server.watch_interval_seconds", *watch_interval_seconds != r.watch_interval_seconds),
        ("server.state", *state != r.state),
        ("server.on_state_error", *on_state_error != r.on_state_error),
        ("ledger.url", *url != l.url),
        ("ledger.flush_interval_ms", *flush_interval_ms != l.flush_interval_ms),
        ("ledger.spool_dir", *spool_dir != l.spool_dir),
        ("ledger.on_failure", *on_failure != l.on_failure),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// What a key's name may be: it is a metric label and a ledger value, written into YAML as is.
pub const KEY_NAME_RULE: &str = "must be non-empty ASCII letters, digits, '-', '_' or '.'";

/// `name` follows `KEY_NAME_RULE`.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The ledger settings for the config at `path`: defaults sit beside the config file.
pub fn ledger_settings(raw: &raw::RawLedger, path: &Path) -> crate::ledger::Settings {
    // Relative paths are the config's directory's, as the defaults are, and made absolute now: a
    // daemon (`-d`) works from `/`, and `cheapmodel usage` runs from anywhere (a relative SQLite
    // path split the ledger in two files, and `usage` read the empty one).
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path.parent().unwrap_or(Path::new("/"));
    let url = match raw.url.as_deref() {
        Some("none") => None,
        Some(u) => Some(match u.strip_prefix("sqlite://") {
            Some(file) if Path::new(file).is_relative() => format!("sqlite://{}", dir.join(file).display()),
            _ => u.to_string(),
        }),
        None => Some(crate::ledger::default_url(&path)),
    };
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("cheapmodel");
    let spool_dir = match &raw.spool_dir {
        Some(d) => dir.join(d),
        None => dir.join(format!("{stem}.ledger-spool")),
    };
    crate::ledger::Settings {
        url,
        flush_interval: Duration::from_millis(raw.flush_interval_ms),
        spool_dir,
        on_failure: raw.on_failure,
    }
}

/// Reads, parses and validates `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(path.display().to_string(), format!("cannot read the file: {e}")))?;
    let dir = std::path::absolute(path).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    load_str_in(&text, &|name| std::env::var(name).ok(), &dir)
}

/// Only the `ledger:` section of `path`, validated (for `cheapmodel usage`, which needs no upstream
/// keys in its environment).
pub fn load_ledger(path: &Path) -> Result<raw::RawLedger, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(path.display().to_string(), format!("cannot read the file: {e}")))?;
    let de = serde_yaml::Deserializer::from_str(&text);
    let raw: RawConfig =
        serde_path_to_error::deserialize(de).map_err(|e| err(e.path().to_string(), e.inner().to_string()))?;
    validate_ledger(&raw.ledger)?;
    Ok(raw.ledger)
}

/// Parses and validates YAML text; `env` looks up environment variables (injected for tests).
/// Relative `api_key_file`s are the working directory's.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    load_str_in(text, env, Path::new(""))
}

/// `load_str`, with relative `api_key_file`s in `dir` (the config file's directory).
fn load_str_in(text: &str, env: &dyn Fn(&str) -> Option<String>, dir: &Path) -> Result<Loaded, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // serde_yaml's message may start with the path again, or with the path of the mapping
        // that holds an unknown field (the path here names the field itself): say it once.
        let message = e.inner().to_string();
        let message = match message.split_once(": ") {
            Some((head, rest)) if !head.is_empty() && path.starts_with(head) => rest.to_string(),
            _ => message,
        };
        err(if path.is_empty() { ".".to_string() } else { path }, message)
    })?;
    validate(raw, env, dir)
}

fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>, dir: &Path) -> Result<Loaded, ConfigError> {
    validate_server(&raw.server)?;
    validate_ledger(&raw.ledger)?;
    let mut upstreams = crate::registry::HashMap::default();
    let mut key_files = Vec::new();
    for (name, u) in &raw.upstreams {
        let key_file = u.api_key_file.as_ref().map(|f| dir.join(f));
        upstreams.insert(name.clone(), Arc::new(build_upstream(name, u, env, key_file.as_deref())?));
        key_files.extend(key_file);
    }
    let mut models = crate::registry::HashMap::default();
    for (name, m) in &raw.models {
        let path = format!("models.{name}");
        validate_model_name(name).map_err(|m| err(&path, m))?;
        let upstream = upstreams
            .get(&m.upstream)
            .ok_or_else(|| err(format!("{path}.upstream"), format!("no upstream named `{}`", m.upstream)))?;
        let upstream_model_json = match &m.upstream_model {
            Some(um) if um.is_empty() => return Err(err(format!("{path}.upstream_model"), "must not be empty")),
            Some(um) if um != name => Some(Bytes::from(serde_json::Value::from(um.as_str()).to_string())),
            _ => None,
        };
        let price = exact_price(&m.price).map_err(|(f, msg)| err(format!("{path}.price.{f}"), msg))?;
        let upstream_dialect = raw.upstreams.get(&m.upstream).map(|u| u.dialect);
        match (m.kind, upstream_dialect) {
            (ModelKind::Chat, Some(UpstreamDialect::Task | UpstreamDialect::TaskWrapped)) => {
                return Err(err(format!("{path}.upstream"), "a chat model needs an openai or anthropic upstream"));
            }
            (
                ModelKind::Image | ModelKind::Video | ModelKind::Audio | ModelKind::Music,
                Some(UpstreamDialect::Anthropic),
            ) => {
                return Err(err(
                    format!("{path}.upstream"),
                    "a media model needs an openai, task or task-wrapped upstream",
                ));
            }
            _ => {}
        }
        if let Some((field, why)) = price_never_billed(m.kind, &price) {
            return Err(err(format!("{path}.price.{field}"), why));
        }
        if m.task_deadline_seconds == 0 {
            return Err(err(format!("{path}.task_deadline_seconds"), "must be at least 1"));
        }
        if m.default_duration_seconds == Some(0) {
            return Err(err(format!("{path}.default_duration_seconds"), "must be at least 1"));
        }
        if m.max_output_tokens == Some(0) {
            // Anthropic refuses `max_tokens: 0`: every translated request would fail upstream.
            return Err(err(format!("{path}.max_output_tokens"), "must be at least 1"));
        }
        models.insert(
            name.clone(),
            Arc::new(Model {
                name: Arc::from(name.as_str()),
                upstream: upstream.clone(),
                upstream_model_json,
                upstream_model: Arc::from(m.upstream_model.as_deref().unwrap_or(name)),
                kind: m.kind,
                price,
                max_output_tokens: m.max_output_tokens,
                strict_params: m.params == raw::ParamsPolicy::Strict,
                structured_outputs: m.structured_outputs,
                task_deadline: Duration::from_secs(m.task_deadline_seconds),
                default_duration_seconds: m.default_duration_seconds,
                metrics: Default::default(),
                limits: limit_settings(&m.limits).map_err(|(f, msg)| err(format!("{path}.limits.{f}"), msg))?,
            }),
        );
    }
    let mut keys = crate::registry::HashMap::default();
    let mut names = HashSet::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let path = format!("keys[{i}]");
        if !is_key_name(&k.name) {
            return Err(err(format!("{path}.name"), KEY_NAME_RULE));
        }
        if !names.insert(k.name.clone()) {
            return Err(err(format!("{path}.name"), format!("duplicate key name `{}`", k.name)));
        }
        let digest = crate::auth::parse_sha256(&k.sha256)
            .ok_or_else(|| err(format!("{path}.sha256"), "expected 64 hex characters"))?;
        if let Some(list) = &k.models {
            for (j, m) in list.iter().enumerate() {
                if !models.contains_key(m) {
                    return Err(err(format!("{path}.models[{j}]"), format!("no model named `{m}`")));
                }
            }
            if list.is_empty() {
                // Valid (a key on hold), but one bad template could lock a whole team out unseen.
                log::warn!("{path}.models is empty: the key `{}` may use no model (every request 403)", k.name);
            }
        }
        let key = Key {
            name: Arc::from(k.name.as_str()),
            models: k.models.as_ref().map(|l| l.iter().cloned().collect()),
            limits: limit_settings(&k.limits).map_err(|(f, msg)| err(format!("{path}.limits.{f}"), msg))?,
            budget: budget_settings(&k.budget).map_err(|(f, msg)| err(format!("{path}.budget.{f}"), msg))?,
        };
        if keys.insert(digest, Arc::new(key)).is_some() {
            return Err(err(format!("{path}.sha256"), "the same key is listed twice"));
        }
    }
    if raw.keys.is_empty() {
        log::warn!("keys: none: every request will be refused 401");
    }
    let task_secret = match &raw.server.task_secret_env {
        Some(var) => match env(var) {
            Some(v) if v.len() >= 16 => v.into_bytes(),
            Some(_) => {
                return Err(err(
                    "server.task_secret_env",
                    format!("environment variable {var} must hold at least 16 characters"),
                ))
            }
            None => return Err(err("server.task_secret_env", format!("environment variable {var} is not set"))),
        },
        None => {
            // Stable across restarts and shared by instances with the same keys.
            let mut digests: Vec<&[u8; 32]> = keys.keys().collect();
            digests.sort();
            let mut h = <sha2::Sha256 as sha2::Digest>::new();
            sha2::Digest::update(&mut h, b"cheapmodel task ids v1");
            for d in digests {
                sha2::Digest::update(&mut h, d);
            }
            sha2::Digest::finalize(h).to_vec()
        }
    };
    let snapshot = Snapshot { upstreams, models, keys, max_request_body: raw.server.max_request_body, task_secret };
    Ok(Loaded { server: raw.server, snapshot, ledger: raw.ledger, key_files })
}

fn validate_server(s: &RawServer) -> Result<(), ConfigError> {
    if s.listen.is_empty() {
        return Err(err("server.listen", "at least one address is required"));
    }
    for (i, a) in s.listen.iter().enumerate() {
        a.parse::<SocketAddr>()
            .map_err(|_| err(format!("server.listen[{i}]"), format!("`{a}` is not an IP:port address")))?;
    }
    if let Some(m) = &s.metrics {
        m.parse::<SocketAddr>().map_err(|_| err("server.metrics", format!("`{m}` is not an IP:port address")))?;
    }
    if s.threads == 0 {
        return Err(err("server.threads", "must be at least 1"));
    }
    // Zero would not mean "off" for any of these: no body, no stored task, or no read timeout at all.
    for (field, value) in [
        ("server.max_request_body", s.max_request_body as u64),
        ("server.task_store_max_entries", s.task_store_max_entries as u64),
        ("server.client_read_timeout_ms", s.client_read_timeout_ms),
        ("server.client_idle_timeout_ms", s.client_idle_timeout_ms),
    ] {
        if value == 0 {
            return Err(err(field, "must be at least 1"));
        }
    }
    if let Some(url) = &s.state {
        let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
        if !scheme_ok || redis::Client::open(url.as_str()).is_err() {
            // Not the URL itself in the message: it may carry a password.
            return Err(err(
                "server.state",
                "must be a redis://[user:password@]host:port[/db] URL, or rediss:// for TLS (Redis or Valkey)",
            ));
        }
    }
    Ok(())
}

fn validate_model_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 200
        || !name.bytes().all(|b| b.is_ascii_graphic())
        || name.contains('"')
        || name.contains('\\')
    {
        return Err("model names are 1 to 200 printable ASCII characters without quotes or backslashes".into());
    }
    Ok(())
}

fn validate_ledger(l: &raw::RawLedger) -> Result<(), ConfigError> {
    if let Some(url) = &l.url {
        let ok = url == "none"
            || url.strip_prefix("sqlite://").is_some_and(|p| !p.is_empty())
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://");
        if !ok {
            return Err(err("ledger.url", "must be sqlite://PATH, postgres://USER@HOST/DB or none"));
        }
    }
    if !(10..=60_000).contains(&l.flush_interval_ms) {
        return Err(err("ledger.flush_interval_ms", "must be between 10 and 60000"));
    }
    Ok(())
}

fn limit_settings(l: &raw::RawLimits) -> Result<crate::limits::LimitSettings, (&'static str, String)> {
    let positive = |name: &'static str, v: Option<u64>| match v {
        Some(0) => Err((name, "must be at least 1 (leave it out for no limit)".to_string())),
        _ => Ok(()),
    };
    positive("rpm", l.rpm.map(u64::from))?;
    positive("tpm", l.tpm)?;
    positive("concurrency", l.concurrency.map(u64::from))?;
    Ok(crate::limits::LimitSettings { rpm: l.rpm, tpm: l.tpm, concurrency: l.concurrency })
}

fn budget_settings(b: &raw::RawBudget) -> Result<crate::limits::BudgetSettings, (&'static str, String)> {
    use crate::money::{Money, UNITS_PER_USD};
    let cap = |name: &'static str, v: Option<f64>| {
        v.map(|usd| Money::from_config(usd, UNITS_PER_USD).map(Money).map_err(|m| (name, m))).transpose()
    };
    Ok(crate::limits::BudgetSettings {
        daily: cap("daily_usd", b.daily_usd)?,
        monthly: cap("monthly_usd", b.monthly_usd)?,
    })
}

/// The first price that a model of `kind` never bills, and why: it would make every request cheaper
/// than the operator meant, silently (and `per_second` on an image model would refuse every request:
/// images have no duration). Chat is billed by tokens, images by the image, the other kinds by the
/// second; every kind per request too.
fn price_never_billed(kind: ModelKind, price: &crate::registry::Price) -> Option<(&'static str, String)> {
    let tokens = [
        ("input_per_mtok", price.input),
        ("output_per_mtok", price.output),
        ("cache_read_per_mtok", price.cache_read),
        ("cache_write_per_mtok", price.cache_write),
    ];
    let (billed_by, never_billed): (&str, Vec<(&'static str, i64)>) = match kind {
        ModelKind::Chat => ("tokens", vec![("per_image", price.per_image), ("per_second", price.per_second)]),
        ModelKind::Image => ("per_image", [&tokens[..], &[("per_second", price.per_second)]].concat()),
        ModelKind::Video | ModelKind::Audio | ModelKind::Music => {
            ("per_second", [&tokens[..], &[("per_image", price.per_image)]].concat())
        }
    };
    let (field, _) = never_billed.into_iter().find(|p| p.1 != 0)?;
    Some((
        field,
        format!(
            "{} models are billed by {billed_by} and per_request: this price would never be charged",
            kind.as_str()
        ),
    ))
}

/// The config's decimal USD prices as exact money; names the field that cannot be one.
fn exact_price(p: &raw::RawPrice) -> Result<crate::registry::Price, (&'static str, String)> {
    use crate::money::{Money, UNITS_PER_USD};
    const PER_MTOK: i64 = UNITS_PER_USD / 1_000_000;
    let field = |name: &'static str, v: f64, scale: i64| Money::from_config(v, scale).map_err(|m| (name, m));
    Ok(crate::registry::Price {
        input: field("input_per_mtok", p.input_per_mtok, PER_MTOK)?,
        output: field("output_per_mtok", p.output_per_mtok, PER_MTOK)?,
        cache_read: field("cache_read_per_mtok", p.cache_read_per_mtok, PER_MTOK)?,
        cache_write: field("cache_write_per_mtok", p.cache_write_per_mtok, PER_MTOK)?,
        per_image: field("per_image", p.per_image, UNITS_PER_USD)?,
        per_second: field("per_second", p.per_second, UNITS_PER_USD)?,
        per_request: field("per_request", p.per_request, UNITS_PER_USD)?,
    })
}

/// Parts of an upstream URL.
#[derive(Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// https?
    pub tls: bool,
    /// Host name or IP literal (no brackets).
    pub host: String,
    /// Port (scheme default when absent).
    pub port: u16,
    /// Path without trailing slash; empty when none.
    pub path: String,
    /// Whether the port was written explicitly.
    pub explicit_port: bool,
}

/// Parses `scheme://host[:port][/base-path]`.
pub fn parse_upstream_url(url: &str) -> Result<UpstreamUrl, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err("must not contain a query or fragment".into());
    }
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let end = r.find(']').ok_or("unclosed [ in IPv6 host")?;
        let host = &r[..end];
        let after = &r[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("garbage after IPv6 host".into()),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains('@') {
        return Err("missing host (and user info is not allowed)".into());
    }
    let explicit_port = port.is_some();
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?,
        None if tls => 443,
        None => 80,
    };
    Ok(UpstreamUrl { tls, host: host.to_string(), port, path: path.trim_end_matches('/').to_string(), explicit_port })
}

/// The upstream key: from `api_key_env` or from `key_file` (`api_key_file`, resolved), trimmed (an
/// env file's or an editor's stray space or newline would go into the header as is, `Bearer
/// sk-... `, and the upstream refuse every request); the field's path and what is wrong, if unusable.
fn upstream_key(
    u: &RawUpstream,
    env: &dyn Fn(&str) -> Option<String>,
    key_file: Option<&Path>,
) -> Result<Option<(&'static str, String)>, (&'static str, String)> {
    let read = match (&u.api_key_env, key_file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(("api_key_file", "set api_key_env or api_key_file, not both".into())),
        (Some(var), None) => ("api_key_env", env(var).ok_or_else(|| format!("environment variable {var} is not set"))),
        (None, Some(file)) => {
            ("api_key_file", std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display())))
        }
    };
    let (field, value) = read;
    let secret = value.map_err(|m| (field, m))?.trim().to_string();
    if secret.is_empty() {
        return Err((field, "the key is empty".into()));
    }
    Ok(Some((field, secret)))
}

fn build_upstream(
    name: &str,
    u: &RawUpstream,
    env: &dyn Fn(&str) -> Option<String>,
    key_file: Option<&Path>,
) -> Result<Upstream, ConfigError> {
    let path = format!("upstreams.{name}");
    let url = parse_upstream_url(&u.url).map_err(|m| err(format!("{path}.url"), m))?;
    let addr = resolve(&url.host, url.port).map_err(|m| err(format!("{path}.url"), m))?;
    let host_header =
        if url.explicit_port { format!("{}:{}", bracket(&url.host), url.port) } else { bracket(&url.host) };
    let host_header = HeaderValue::from_str(&host_header)
        .map_err(|_| err(format!("{path}.url"), "host is not a valid header value"))?;
    let auth = match upstream_key(u, env, key_file).map_err(|(field, m)| err(format!("{path}.{field}"), m))? {
        None => None,
        Some((field, secret)) => {
            let (name, value) = match u.dialect {
                UpstreamDialect::Anthropic => (http::header::HeaderName::from_static("x-api-key"), secret),
                _ => (http::header::AUTHORIZATION, format!("Bearer {secret}")),
            };
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| err(format!("{path}.{field}"), "the key is not a valid header value"))?;
            value.set_sensitive(true);
            Some((name, value))
        }
    };
    for (field, ms) in [("connect_timeout_ms", u.connect_timeout_ms), ("read_timeout_ms", u.read_timeout_ms)] {
        if ms == 0 {
            return Err(err(format!("{path}.{field}"), "timeouts must be at least 1 ms"));
        }
    }
    Ok(Upstream {
        name: Arc::from(name),
        dialect: match u.dialect {
            UpstreamDialect::Anthropic => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        },
        task_style: match u.dialect {
            UpstreamDialect::OpenAi => Some(TaskStyle::OpenAi),
            UpstreamDialect::Task => Some(TaskStyle::Flat),
            UpstreamDialect::TaskWrapped => Some(TaskStyle::Wrapped),
            UpstreamDialect::Anthropic => None,
        },
        addr,
        tls: url.tls,
        host: url.host,
        host_header,
        base_path: if url.path.is_empty() { "/v1".to_string() } else { url.path },
        auth,
        connect_timeout: Duration::from_millis(u.connect_timeout_ms),
        read_timeout: Duration::from_millis(u.read_timeout_ms),
    })
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolved to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
server:
  listen: ["127.0.0.1:8080"]
upstreams:
  openai:
    url: "http://127.0.0.1:9000"
    dialect: openai
    api_key_env: TEST_OPENAI_KEY
models:
  gpt-5.5:
    upstream: openai
    upstream_model: gpt-5.5-2026
    price: { input_per_mtok: 1.25, output_per_mtok: 10.0 }
keys:
  - name: team-a
    sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    models: ["gpt-5.5"]
"#;

    fn env(name: &str) -> Option<String> {
        (name == "TEST_OPENAI_KEY").then(|| "sk-test".to_string())
    }

    #[test]
    fn a_reload_names_the_changed_settings_it_cannot_apply() {
        let running = load_str(BASE, &env).expect("valid");
        let changed = BASE.replace(
            r#"  listen: ["127.0.0.1:8080"]"#,
            "  listen: [\"127.0.0.1:8081\"]\n  threads: 7\n  max_request_body: 1024\nledger: { url: none }",
        );
        let reloaded = load_str(&changed, &env).expect("valid");
        let ignored = restart_only_changes((&running.server, &running.ledger), (&reloaded.server, &reloaded.ledger));
        // max_request_body reloads: not named.
        assert_eq!(ignored, ["server.listen", "server.threads", "ledger.url"]);
        assert!(restart_only_changes((&running.server, &running.ledger), (&running.server, &running.ledger)).is_empty());
    }

    #[test]
    fn an_upstream_key_is_read_without_surrounding_whitespace() {
        let padded = |name: &str| (name == "TEST_OPENAI_KEY").then(|| " sk-test\n".to_string());
        let l = load_str(BASE, &padded).expect("valid");
        let m = l.snapshot.model("gpt-5.5").expect("model");
        assert_eq!(m.upstream.auth.as_ref().map(|(_, v)| v.as_bytes()), Some(&b"Bearer sk-test"[..]));
        let blank = |name: &str| (name == "TEST_OPENAI_KEY").then(|| "  ".to_string());
        assert!(load_str(BASE, &blank).is_err(), "a blank key is no key");
    }

    #[test]
    fn an_upstream_key_file_is_read_relative_to_the_config_and_named_when_unusable() {
        let dir = std::env::temp_dir().join(format!("cm-key-file-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("secrets")).expect("dir");
        std::fs::write(dir.join("secrets/openai"), "sk-from-file\n").expect("write");
        let yaml = BASE.replace("api_key_env: TEST_OPENAI_KEY", "api_key_file: secrets/openai");
        let l = load_str_in(&yaml, &|_| None, &dir).expect("valid");
        let m = l.snapshot.model("gpt-5.5").expect("model");
        assert_eq!(m.upstream.auth.as_ref().map(|(_, v)| v.as_bytes()), Some(&b"Bearer sk-from-file"[..]));
        assert_eq!(l.key_files, vec![dir.join("secrets/openai")]);
        let e = load_str_in(&yaml, &|_| None, Path::new("/nonexistent")).expect_err("no file");
        assert_eq!(e.path, "upstreams.openai.api_key_file");
        assert!(e.message.starts_with("cannot read /nonexistent/secrets/openai"), "{}", e.message);
        std::fs::write(dir.join("secrets/openai"), "\n").expect("write");
        let e = load_str_in(&yaml, &|_| None, &dir).expect_err("empty");
        assert_eq!((e.path.as_str(), e.message.as_str()), ("upstreams.openai.api_key_file", "the key is empty"));
        let both = BASE.replace("api_key_env: TEST_OPENAI_KEY", "api_key_env: TEST_OPENAI_KEY\n    api_key_file: k");
        let e = load_str_in(&both, &|_| Some("sk".into()), &dir).expect_err("both");
        assert_eq!(e.path, "upstreams.openai.api_key_file");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn relative_ledger_paths_are_the_configs_directorys() {
        let raw = raw::RawLedger {
            url: Some("sqlite://data/gw.sqlite".into()),
            spool_dir: Some("spool".into()),
            ..Default::default()
        };
        let s = ledger_settings(&raw, Path::new("/etc/cm/gw.yaml"));
        assert_eq!(s.url.as_deref(), Some("sqlite:///etc/cm/data/gw.sqlite"));
        assert_eq!(s.spool_dir, Path::new("/etc/cm/spool"));
        let absolute = raw::RawLedger { url: Some("sqlite:///var/lib/cm.sqlite".into()), ..Default::default() };
        let s = ledger_settings(&absolute, Path::new("gw.yaml"));
        assert_eq!(s.url.as_deref(), Some("sqlite:///var/lib/cm.sqlite"));
        assert!(s.spool_dir.is_absolute(), "a relative config path is made absolute: {:?}", s.spool_dir);
    }

    #[test]
    fn loads_a_valid_file() {
        let l = load_str(BASE, &env).expect("valid");
        let m = l.snapshot.model("gpt-5.5").expect("model");
        assert_eq!(m.upstream_model_json.as_deref(), Some(&b"\"gpt-5.5-2026\""[..]));
        assert_eq!(m.upstream.base_path, "/v1");
        assert_eq!(m.upstream.host_header, "127.0.0.1:9000");
        assert!(l.snapshot.model("gpt").is_none());
        assert_eq!(l.snapshot.max_request_body, 32 * 1024 * 1024);
        let (name, value) = m.upstream.auth.as_ref().expect("auth");
        assert_eq!(name, "authorization");
        assert!(value.is_sensitive());
        assert!(!format!("{:?}", m.upstream).contains("sk-test"), "upstream key must not print");
    }

    #[test]
    fn errors_name_the_field_path() {
        let bad = BASE.replace("upstream: openai", "upstream: nope");
        assert_eq!(load_str(&bad, &env).expect_err("bad").path, "models.gpt-5.5.upstream");
        let bad = BASE.replace("dialect: openai", "dialect: klingon");
        assert_eq!(load_str(&bad, &env).expect_err("bad").path, "upstreams.openai.dialect");
        let bad = BASE.replace("models: [\"gpt-5.5\"]", "models: [\"gpt\"]");
        assert_eq!(load_str(&bad, &env).expect_err("bad").path, "keys[0].models[0]");
        let bad = BASE.replace("9f86", "zz86");
        assert_eq!(load_str(&bad, &env).expect_err("bad").path, "keys[0].sha256");
        let bad = BASE.replace("upstream: openai\n", "upstream: openai\n    max_output_tokens: 0\n");
        assert_eq!(load_str(&bad, &env).expect_err("bad").path, "models.gpt-5.5.max_output_tokens");
        // A price the model's kind never bills: refused, not silently free.
        let bad = BASE.replace("output_per_mtok: 10.0", "output_per_mtok: 10.0, per_image: 0.04");
        let e = load_str(&bad, &env).expect_err("bad");
        assert_eq!((e.path.as_str(), e.message.contains("never be charged")), ("models.gpt-5.5.price.per_image", true));
        let ok = BASE.replace("output_per_mtok: 10.0", "output_per_mtok: 10.0, per_request: 0.001");
        assert!(load_str(&ok, &env).is_ok(), "chat is billed per request too");
        let bad = BASE.replace("upstream: openai\n", "upstream: openai\n    kind: image\n");
        assert_eq!(load_str(&bad, &env).expect_err("bad").path, "models.gpt-5.5.price.input_per_mtok");
        let ok = BASE
            .replace("upstream: openai\n", "upstream: openai\n    kind: image\n")
            .replace("{ input_per_mtok: 1.25, output_per_mtok: 10.0 }", "{ per_image: 0.04, per_request: 0.01 }");
        assert!(load_str(&ok, &env).is_ok());
        // Images have no duration, videos no image count.
        let bad = ok.replace("per_image: 0.04", "per_image: 0.04, per_second: 0.3");
        assert_eq!(load_str(&bad, &env).expect_err("bad").path, "models.gpt-5.5.price.per_second");
        let video = ok.replace("kind: image", "kind: video");
        assert_eq!(load_str(&video, &env).expect_err("bad").path, "models.gpt-5.5.price.per_image");
        assert!(load_str(&video.replace("per_image: 0.04", "per_second: 0.1"), &env).is_ok());
        for field in ["max_request_body", "task_store_max_entries", "client_read_timeout_ms", "client_idle_timeout_ms"]
        {
            let bad = BASE.replace("listen:", &format!("{field}: 0\n  listen:"));
            assert_eq!(load_str(&bad, &env).expect_err("bad").path, format!("server.{field}"));
        }
        let bad = BASE.replace("listen:", "threads: many\n  listen:");
        let e = load_str(&bad, &env).expect_err("bad");
        assert_eq!(e.path, "server.threads");
        assert!(!e.message.contains("server.threads"), "the path once: {e}");
        // An unknown field: the path names the field, serde_yaml's message its mapping.
        let e = load_str(&BASE.replace("upstream_model:", "upstream_modle:"), &env).expect_err("bad");
        assert_eq!(e.path, "models.gpt-5.5.upstream_modle");
        assert!(e.message.starts_with("unknown field `upstream_modle`"), "the path once: {e}");
        let secret = |value: Option<&str>| {
            let cfg = BASE.replace("listen:", "task_secret_env: SECRET\n  listen:");
            let value = value.map(str::to_string);
            load_str(&cfg, &move |n| if n == "SECRET" { value.clone() } else { env(n) })
                .map(|_| ())
                .map_err(|e| e.message)
        };
        assert_eq!(secret(None), Err("environment variable SECRET is not set".into()));
        assert_eq!(secret(Some("short")), Err("environment variable SECRET must hold at least 16 characters".into()));
        assert_eq!(secret(Some("sixteen-chars-ok")), Ok(()));
        let missing = load(Path::new("/nonexistent/cm.yaml")).expect_err("no file");
        assert_eq!(missing.path, "/nonexistent/cm.yaml");
        for field in ["connect_timeout_ms", "read_timeout_ms"] {
            let bad = BASE.replace("dialect: openai", &format!("dialect: openai\n    {field}: 0"));
            assert_eq!(load_str(&bad, &env).expect_err("bad").path, format!("upstreams.openai.{field}"));
        }
        let bad = BASE.replace("output_per_mtok: 10.0", "output_per_mtok: -1");
        assert_eq!(load_str(&bad, &env).expect_err("bad").path, "models.gpt-5.5.price.output_per_mtok");
        let bad = BASE.replace("listen:", "lisen:");
        assert!(load_str(&bad, &env).expect_err("bad").path.starts_with("server"));
        let bad = BASE.replace("listen:", "state: \"http://secret@127.0.0.1:6379\"\n  listen:");
        let e = load_str(&bad, &env).expect_err("bad");
        assert_eq!(e.path, "server.state");
        assert!(!e.message.contains("secret"), "a state URL may carry a password: {}", e.message);
        let bad = BASE.replace("listen:", "on_state_error: drop\n  listen:");
        assert!(load_str(&bad, &env).expect_err("bad").path.starts_with("server"));
        let tls = BASE.replace("listen:", "state: \"rediss://:secret@cache.example:6380/0\"\n  listen:");
        assert!(load_str(&tls, &env).is_ok(), "rediss:// (TLS) is accepted");
        let good = BASE.replace("listen:", "state: \"redis://127.0.0.1:6379/0\"\n  on_state_error: deny\n  listen:");
        let l = load_str(&good, &env).expect("valid");
        assert_eq!(l.server.on_state_error, crate::limits::OnStateError::Deny);
        let missing_env = load_str(BASE, &|_| None).expect_err("no env");
        assert_eq!(missing_env.path, "upstreams.openai.api_key_env");
        assert!(missing_env.message.contains("TEST_OPENAI_KEY"));
    }

    #[test]
    fn parses_upstream_urls() {
        let u = parse_upstream_url("https://generativelanguage.googleapis.com/v1beta/openai/").expect("ok");
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, "/v1beta/openai"));
        let u = parse_upstream_url("http://[::1]:8081").expect("ok");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8081));
        assert!(parse_upstream_url("ftp://x").is_err());
        assert!(parse_upstream_url("http://user@host").is_err());
        assert!(parse_upstream_url("http://host:99999").is_err());
    }
}
