//! The process's logger: `env_logger` (`RUST_LOG`, default `info`), except that trace records of
//! other crates are never written. Pingora logs every request and upstream request head at trace
//! (`Request header: ...`, `Writing request header: ...`), callers' `cm_` keys and the upstream's
//! key included, and h2 logs header frames there; a key must never reach a log, whatever the log
//! level. The gateway's own code has nothing at trace.
//!
//! One Pingora record is also written a level lower: `failed to acquire reusable stream`, an
//! ERROR for a race its connection pool recovers from at once (the pooled connection's idle
//! watcher still holds it; a new connection is made). Back-to-back calls to one upstream (the
//! task settler's polls) raised it, unexplained, in operators' logs.
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

/// Pingora's records that say less than their level: (target, message) written at debug.
const OVERSTATED: [(&str, &str); 1] = [("pingora_core::connectors", "failed to acquire reusable stream")];

/// The level a record is written at.
fn level_of(record: &Record<'_>) -> Level {
    let overstated = record
        .args()
        .as_str()
        .is_some_and(|message| OVERSTATED.iter().any(|(target, m)| record.target() == *target && message == *m));
    if overstated {
        Level::Debug
    } else {
        record.level()
    }
}

impl Log for KeySafeLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // An overstated record's level is known only with its message (`log`).
        allowed(metadata) && (self.inner.enabled(metadata) || metadata.target().starts_with("pingora_core::connectors"))
    }

    fn log(&self, record: &Record<'_>) {
        if !allowed(record.metadata()) {
            return;
        }
        let level = level_of(record);
        if level == record.level() {
            if self.inner.enabled(record.metadata()) {
                self.inner.log(record);
            }
            return;
        }
        let lowered = Record::builder()
            .args(*record.args())
            .level(level)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if self.inner.enabled(lowered.metadata()) {
            self.inner.log(&lowered);
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

    #[test]
    fn pingoras_recovered_pool_race_is_a_debug_record() {
        let level = |target: &str, args: std::fmt::Arguments<'_>| {
            level_of(&Record::builder().level(Level::Error).target(target).args(args).build())
        };
        let target = "pingora_core::connectors";
        assert_eq!(level(target, format_args!("failed to acquire reusable stream")), Level::Debug);
        assert_eq!(level(target, format_args!("another error")), Level::Error);
        assert_eq!(level("pingora_proxy", format_args!("failed to acquire reusable stream")), Level::Error);
    }
}
