//! Cheap Model: an LLM API gateway on Pingora. One key (`cm_...`), registered and pinned models,
//! byte-transparent forwarding for same-dialect traffic, per-model token and cost metrics.
//!
//! Request path: `proxy` (Pingora glue) → `auth` (key from header bytes) → `proxy::body` (read the
//! body once) → `peek` (model/stream without a DOM) → `registry` (pinned upstream) →
//! `proxy::upstream` (minimal header rewrite) → `usage`/`cost`/`metrics`/`access_log` on the way back.
//! Imports: the module list only.

/// Access log (one JSON line per request, off the request thread).
pub mod access_log;
/// The global allocator: mimalloc through its cheapest entry point for each layout.
pub mod allocator;
/// Caller keys from header bytes.
pub mod auth;
/// The `cheapmodel` command line.
pub mod cli;
/// Config loading and validation.
pub mod config;
pub mod content_encoding;
/// Cost from usage and price.
pub mod cost;
/// Translation between the OpenAI and Anthropic dialects (pure).
pub mod dialect;
/// Gateway errors and their dialect-shaped bodies.
pub mod error;
/// The closing quote of a JSON string, 64 bytes at a time (shared by `peek` and the translator).
pub mod json_string;
/// The durable usage ledger (SQLite / Postgres, spool, reports).
pub mod ledger;
/// Per-key and per-model limits and budgets.
pub mod limits;
/// The process's logger (`RUST_LOG`), which never writes other crates' trace records.
pub mod logger;
/// Returning memory the allocator holds to the OS after a burst.
pub mod memory;
/// Prometheus metrics.
pub mod metrics;
/// Exact integer money (pico-dollars).
pub mod money;
/// Lazy `model`/`stream` peek of request bodies.
pub mod peek;
/// The request plan: what to do with a request, decided without IO.
pub mod plan;
/// Pingora `ProxyHttp` glue.
pub mod proxy;
/// Masking an upstream's key in the error answers relayed to callers.
pub mod redact;
/// Immutable routing snapshots behind arc-swap.
pub mod registry;
/// Hot reload (SIGHUP and file watch).
pub mod reload;
/// Async media tasks (images, video, audio, music).
pub mod tasks;
/// Usage from JSON responses and SSE streams.
pub mod usage;
