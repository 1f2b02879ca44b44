//! The process's logger: `env_logger` (`RUST_LOG`, default `info`), except that trace records of
//! other crates are never written. Pingora logs every request and upstream request head at trace
//! (`Request header: ...`, `Writing request header: ...`), callers' `cm_` keys and the upstream's
//! key included, and h2 logs header frames there; a key must never reach a log, whatever the log
//! level. The gateway's own code has nothing at trace.
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

/// Whether a record may be written at all: not at trace, unless it is the gateway's own.
fn allowed(metadata: &Metadata<'_>) -> bool {
    metadata.level() < Level::Trace || metadata.target().starts_with("cheapmodel")
}

impl Log for KeySafeLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        allowed(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if allowed(record.metadata()) {
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
    fn other_crates_trace_records_are_never_written() {
        assert!(!at(Level::Trace, "pingora_proxy"));
        assert!(!at(Level::Trace, "pingora_core::protocols::http::v1::client"));
        assert!(!at(Level::Trace, "h2::codec"));
        assert!(at(Level::Debug, "pingora_core::protocols::http::v1::client"));
        assert!(at(Level::Error, "pingora_proxy"));
        assert!(at(Level::Trace, "cheapmodel::proxy"));
    }
}
