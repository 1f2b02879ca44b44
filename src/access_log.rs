//! One JSON line per request on stdout, written by a background thread so a slow log consumer
//! (a full pipe to journald) never blocks a request: lines are handed over on a bounded channel
//! and dropped (and counted) when it is full. Carries the key's *name*, never key material.
//! Imports: nothing of the gateway's; only `proxy` calls it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

use serde::Serialize;

/// One access-log record.
#[derive(Serialize)]
pub struct Record<'a> {
    /// Unix time in seconds, with milliseconds.
    pub time: f64,
    /// `x-request-id` (received or generated).
    pub request_id: &'a str,
    /// Configured key name, when the key was valid.
    pub key: Option<&'a str>,
    /// Registered model name, when routed.
    pub model: Option<&'a str>,
    /// Upstream name, when routed.
    pub upstream: Option<&'a str>,
    /// Method and path as received.
    pub method: &'a str,
    /// Path as received.
    pub path: &'a str,
    /// Final status sent to the caller (0: none, the caller went away).
    pub status: u16,
    /// Total time in milliseconds.
    pub latency_ms: f64,
    /// Time to the upstream's response headers, in milliseconds.
    pub ttfb_ms: Option<f64>,
    /// Non-cached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cache-read tokens.
    pub cache_read_tokens: u64,
    /// Cache-write tokens.
    pub cache_write_tokens: u64,
    /// USD.
    pub cost_usd: f64,
    /// The gateway's own error, when it answered one.
    pub error: Option<&'static str>,
    /// Whether the response was a stream.
    pub stream: bool,
    /// Request fields translation left out (the `x-cheapmodel-dropped` value), when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<&'a str>,
    /// The tokens are an estimate: a stream whose upstream count is missing or cannot be right
    /// (`usage::StreamTokens::needs_estimate`). Written only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static SINK: OnceLock<Option<SyncSender<Vec<u8>>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Turns the access log on or off; without this call records are discarded. The writer thread
/// starts with the first record, in the process that serves: `-d` forks after start-up, and a
/// thread started before the fork does not exist in the daemon (its records were queued, then
/// dropped, and nothing reached the journal).
pub fn init(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// The writer's queue, started at the first call once enabled.
fn sink() -> Option<&'static SyncSender<Vec<u8>>> {
    SINK.get_or_init(|| {
        if !ENABLED.load(Ordering::Relaxed) {
            return None;
        }
        let (tx, rx) = sync_channel::<Vec<u8>>(16 * 1024);
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            while let Ok(line) = rx.recv() {
                let _ = out.write_all(&line);
                while let Ok(more) = rx.try_recv() {
                    let _ = out.write_all(&more);
                }
                let _ = out.flush();
            }
        });
        spawned.ok().map(|_| tx)
    })
    .as_ref()
}

/// Queues one record.
pub fn write(record: &Record<'_>) {
    let Some(tx) = sink() else { return };
    let mut line = Vec::with_capacity(384);
    if serde_json::to_writer(&mut line, record).is_err() {
        return;
    }
    line.push(b'\n');
    if let Err(TrySendError::Full(_)) = tx.try_send(line) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lines dropped because the writer could not keep up.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}
