//! The ledger's writer thread: batches rows from the queue, writes them to the database, spools
//! them when it cannot, replays the spool when it can again, and counts what landed (`account`).
//! Blocking IO on purpose: it runs on its own thread, never on Pingora's.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{self, Backend};
use super::spool::Spool;
use super::{account, PendingTask, Record, Row};
use crate::metrics;

/// Rows per batch: a batch is written when it has this many rows or when the interval ends.
pub const BATCH_ROWS: usize = 1000;
/// Rows kept in memory while neither the database nor the spool can take them.
const MAX_STASH: usize = 1_000_000;

/// State of the writer thread.
pub struct Writer {
    url: String,
    db: Option<Box<dyn Backend>>,
    next_connect: Instant,
    spool: Spool,
    /// Rows neither written nor spooled yet (the spool failed too).
    stash: (Vec<Row>, Vec<PendingTask>),
    failing: Arc<AtomicBool>,
}

impl Writer {
    /// A writer for `url`, spooling to `spool`.
    pub fn new(url: String, spool: Spool, failing: Arc<AtomicBool>) -> Self {
        Writer { url, db: None, next_connect: Instant::now(), spool, stash: (Vec::new(), Vec::new()), failing }
    }

    fn database(&mut self) -> Option<&mut Box<dyn Backend>> {
        if self.db.is_none() && Instant::now() >= self.next_connect {
            match backend::connect(&self.url) {
                Ok(db) => {
                    log::info!("ledger: connected to {}", redact(&self.url));
                    self.db = Some(db);
                }
                Err(e) => {
                    log::error!("ledger: cannot open {}: {e}", redact(&self.url));
                    metrics::ledger().errors.with_label_values(&["database"]).inc();
                    self.next_connect = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        self.db.as_mut()
    }

    /// Runs until shut down or until every sender is gone.
    pub fn run(mut self, queue: Receiver<Record>, interval: Duration) {
        // Connect (and migrate) at once, so that a bad URL is logged at start; and here, on this
        // thread: the blocking Postgres client must not run on an async runtime's thread.
        self.database();
        let mut rows = Vec::new();
        let mut pending = Vec::new();
        loop {
            let deadline = Instant::now() + interval;
            let mut stop = None;
            while rows.len() < BATCH_ROWS {
                let wait = deadline.saturating_duration_since(Instant::now());
                match queue.recv_timeout(wait) {
                    Ok(Record::Row(r)) => rows.push(r),
                    Ok(Record::Pending(p)) => pending.push(p),
                    Ok(Record::Shutdown(done)) => {
                        stop = Some(Some(done));
                        break;
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        stop = Some(None);
                        break;
                    }
                }
            }
            if let Some(done) = stop {
                // Whatever is still queued was recorded before the shutdown began.
                while let Ok(r) = queue.try_recv() {
                    match r {
                        Record::Row(r) => rows.push(r),
                        Record::Pending(p) => pending.push(p),
                        Record::Shutdown(_) => {}
                    }
                }
                self.flush(std::mem::take(&mut rows), std::mem::take(&mut pending));
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            self.flush(std::mem::take(&mut rows), std::mem::take(&mut pending));
            self.replay();
            metrics::ledger().spool_bytes.set(self.spool.total_bytes() as i64);
        }
    }

    /// Writes one batch (plus anything stashed) to the database, or else to the spool.
    fn flush(&mut self, mut rows: Vec<Row>, mut pending: Vec<PendingTask>) {
        if !self.stash.0.is_empty() || !self.stash.1.is_empty() {
            let (r, p) = std::mem::take(&mut self.stash);
            rows.splice(0..0, r);
            pending.splice(0..0, p);
        }
        if rows.is_empty() && pending.is_empty() {
            return;
        }
        // Two records of one task (a caller's poll and the settler) may share a batch.
        let mut seen = HashSet::with_capacity(rows.len());
        rows.retain(|r| seen.insert(r.id.clone()));
        if let Some(db) = self.database() {
            match db.write(&rows, &pending) {
                Ok(inserted) => {
                    for (row, new) in rows.iter().zip(inserted) {
                        if new {
                            account(row);
                        }
                    }
                    self.failing.store(false, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    log::error!("ledger: write of {} rows failed, spooling them: {e}", rows.len());
                    metrics::ledger().errors.with_label_values(&["database"]).inc();
                    self.db = None;
                    self.next_connect = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        match self.spool.append(&rows, &pending) {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
                metrics::ledger().spool_bytes.set(self.spool.total_bytes() as i64);
            }
            Err(e) => {
                log::error!("ledger: cannot write the spool either ({e}); {} rows held in memory", rows.len());
                metrics::ledger().errors.with_label_values(&["spool"]).inc();
                self.failing.store(true, Ordering::Relaxed);
                if rows.len() + pending.len() > MAX_STASH {
                    log::error!(
                        "ledger: {} rows over the in-memory bound are lost",
                        rows.len() - MAX_STASH.min(rows.len())
                    );
                    rows.truncate(MAX_STASH);
                }
                self.stash = (rows, pending);
            }
        }
    }

    /// Moves spooled rows into the database once it answers again.
    fn replay(&mut self) {
        if !self.spool.has_backlog() {
            return;
        }
        if self.database().is_none() {
            return;
        }
        let Some(db) = self.db.as_mut() else { return };
        let mut write = |rows: &[Row], pending: &[PendingTask]| -> Result<(), String> {
            let inserted = db.write(rows, pending)?;
            for (row, new) in rows.iter().zip(inserted) {
                if new {
                    account(row);
                }
            }
            Ok(())
        };
        let result = self.spool.replay(BATCH_ROWS, &mut write);
        if let Err(e) = result {
            log::warn!("ledger: spool replay stopped, will retry: {e}");
            self.db = None;
            self.next_connect = Instant::now() + Duration::from_secs(1);
        }
    }
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
