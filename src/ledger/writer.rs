//! The ledger's writer thread: batches rows from the queue, writes them to the database, spools
//! them when it cannot, replays the spool when it can again, and counts what landed (`account`).
//! Blocking IO on purpose: it runs on its own thread, never on Pingora's.
//! Imports: `metrics` (the ledger's counters), `ledger::backend`, `ledger::spool`. Not `proxy` or
//! Pingora.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{self, Backend};
use super::spool::Spool;
use super::{account_batch, PendingTask, Record, Row};
use crate::metrics;

/// Rows per batch: a batch is written when it has this many rows or when the interval ends.
pub const BATCH_ROWS: usize = 1000;
/// How long the writer waits for a row before it looks at the spool again.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Rows kept in memory while neither the database nor the spool can take them.
const MAX_STASH: usize = 1_000_000;

/// State of the writer thread.
pub struct Writer {
    url: String,
    db: Option<Box<dyn Backend>>,
    next_connect: Instant,
    /// `None` when the spool directory could not be opened at start (logged, counted).
    spool: Option<Spool>,
    /// Rows neither written nor spooled yet (the spool failed too).
    stash: (Vec<Row>, Vec<PendingTask>),
    failing: Arc<AtomicBool>,
    /// Records queued and not yet taken (`Ledger::record` bounds the queue with it).
    depth: Arc<AtomicUsize>,
}

impl Writer {
    /// A writer for `url`, spooling to `spool`.
    pub fn new(url: String, spool: Option<Spool>, failing: Arc<AtomicBool>, depth: Arc<AtomicUsize>) -> Self {
        Writer { url, db: None, next_connect: Instant::now(), spool, stash: (Vec::new(), Vec::new()), failing, depth }
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
        if self.database().is_none() && self.spool.is_none() {
            self.failing.store(true, Ordering::Relaxed);
        }
        let mut rows = Vec::new();
        let mut pending = Vec::new();
        loop {
            // Wait for a first record, then sleep out the window and take everything queued in
            // one go: one wake-up per window, not one per request (on a busy CPU a wake-up per row
            // costs a context switch per request).
            let mut stop = None;
            let mut take = |r: Record, stop: &mut Option<Option<mpsc::Sender<()>>>| match r {
                Record::Row(r) => rows.push(r),
                Record::Pending(p) => pending.push(p),
                Record::Shutdown(done) => *stop = Some(Some(done)),
            };
            match queue.recv_timeout(IDLE_TICK) {
                Ok(first) => {
                    take(first, &mut stop);
                    if stop.is_none() {
                        std::thread::sleep(interval);
                    }
                    while let Ok(r) = queue.try_recv() {
                        take(r, &mut stop);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = Some(None),
            }
            self.depth.fetch_sub(rows.len() + pending.len(), Ordering::Relaxed);
            while !rows.is_empty() || !pending.is_empty() {
                let batch: Vec<Row> = rows.drain(..rows.len().min(BATCH_ROWS)).collect();
                self.flush(batch, std::mem::take(&mut pending));
            }
            if let Some(done) = stop {
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            self.replay();
            self.show_spool();
        }
    }

    fn show_spool(&mut self) {
        metrics::ledger().spool_bytes.set(self.spool.as_mut().map_or(0, Spool::total_bytes) as i64);
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
        // Two records of one task (a caller's poll and the settler) may share a batch. Request rows
        // cannot repeat (each request id is made once, by this process), so only tasks are looked at.
        let mut seen = HashSet::new();
        rows.retain(|r| !r.task || seen.insert(r.id.clone()));
        if let Some(db) = self.database() {
            match db.write(&rows, &pending, true) {
                Ok(inserted) => {
                    account_batch(rows.iter().zip(inserted).filter(|(_, new)| *new).map(|(r, _)| r));
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
        let spooled = match self.spool.as_mut() {
            Some(spool) => spool.append(&rows, &pending),
            None => Err("no spool directory".into()),
        };
        match spooled {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
                self.show_spool();
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
        if !self.spool.as_mut().is_some_and(Spool::has_backlog) {
            return;
        }
        if self.database().is_none() {
            return;
        }
        let (Some(db), Some(spool)) = (self.db.as_mut(), self.spool.as_mut()) else { return };
        let mut write = |rows: &[Row], pending: &[PendingTask]| -> Result<(), String> {
            let inserted = db.write(rows, pending, false)?;
            account_batch(rows.iter().zip(inserted).filter(|(_, new)| *new).map(|(r, _)| r));
            Ok(())
        };
        let result = spool.replay(BATCH_ROWS, &mut write);
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
