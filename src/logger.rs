//! The process's logger: `env_logger` (`RUST_LOG`, default `info`), except that other crates'
//! debug and trace records are never written. Pingora logs request heads and bodies there: every
//! request head at trace (`Request header: ...`, `Writing request header: ...`), each upstream
//! body event at debug (`upstream event now: ...`, an error body that quotes the upstream key
//! included), and a head it cannot parse, raw, at debug; h2 logs header frames at trace. Callers'
//! `cm_` keys, the upstream keys and prompts would reach the log, and a key must never, whatever
//! the level. The gateway's own records are written at every level.
//!
//! One Pingora record is not written at all: `failed to acquire reusable stream`, an ERROR for a
//! race its connection pool recovers from at once (the pooled connection's idle watcher still
//! holds it; a new connection is made). Back-to-back calls to one upstream (the task settler's
//! polls) raised it, unexplained, in operators' logs.
//! Imports: nothing of the gateway's.

use log::{Level, Log, Metadata, Record};

/// Installs the logger. Call once, first thing.
pub fn init() {
    let inner = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    log::set_max_level(inner.filter());
    // Fails only if a logger is already set, which then stays.
    let _ = log::set_boxed_logger(Box::new(KeySafeLogger { inner }));
}

struct KeySafeLogger {
    inner: env_logger::Logger,
}

/// Whether records of this target and level may be written: the gateway's own at any level,
/// other crates' at info and above.
fn allowed(metadata: &Metadata<'_>) -> bool {
    metadata.level() <= Level::Info || metadata.target().starts_with("cheapmodel")
}

/// Pingora's records that say more than they mean: (target, message), never written.
const OVERSTATED: [(&str, &str); 1] = [("pingora_core::connectors", "failed to acquire reusable stream")];

/// Whether `record` is written (`allowed`, and not `OVERSTATED`).
fn written(record: &Record<'_>) -> bool {
    allowed(record.metadata())
        && !record
            .args()
            .as_str()
            .is_some_and(|message| OVERSTATED.iter().any(|(target, m)| record.target() == *target && message == *m))
}

impl Log for KeySafeLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        allowed(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if written(record) && self.inner.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(level: Level, target: &str) -> bool {
        allowed(&Metadata::builder().level(level).target(target).build())
    }

    #[test]
    fn other_crates_debug_and_trace_records_are_never_written() {
        assert!(!at(Level::Trace, "pingora_proxy"));
        assert!(!at(Level::Trace, "pingora_core::protocols::http::v1::client"));
        assert!(!at(Level::Debug, "pingora_proxy::proxy_h1"));
        assert!(!at(Level::Trace, "h2::codec"));
        assert!(at(Level::Info, "pingora_core::server"));
        assert!(at(Level::Error, "pingora_proxy"));
        assert!(at(Level::Trace, "cheapmodel::proxy"));
        assert!(at(Level::Debug, "cheapmodel::ledger::backend"));
    }

    #[test]
    fn pingoras_recovered_pool_race_is_not_written() {
        let written = |target: &str, args: std::fmt::Arguments<'_>| {
            written(&Record::builder().level(Level::Error).target(target).args(args).build())
        };
        let target = "pingora_core::connectors";
        assert!(!written(target, format_args!("failed to acquire reusable stream")));
        assert!(written(target, format_args!("another error")));
        assert!(written("pingora_proxy", format_args!("failed to acquire reusable stream")));
    }
}
