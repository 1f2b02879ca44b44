//! The ledger's writer thread: batches rows from the queue, writes them to the database (through
//! `database`, which also counts what landed), spools them when the database fails or does not
//! answer in time, and replays the spool when it answers again.
//! Blocking IO on purpose: it runs on its own thread, never on Pingora's.
//! Imports: `metrics` (the ledger's counters), `ledger::database` (the connection, on its own
//! thread), `ledger::spool`. Not `proxy` or Pingora.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::database::{Batch, CallError, Database};
use super::spool::Spool;
use super::{PendingTask, Record, Row, TaskLanded};
use crate::metrics;

/// Rows per batch: a batch is written when it has this many rows or when the interval ends.
pub const BATCH_ROWS: usize = 1000;
/// How long the writer waits for a row before it looks at the spool again.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Rows kept in memory while neither the database nor the spool can take them.
const MAX_STASH: usize = 1_000_000;
/// During an outage, at most one error line this often (each failure is still counted).
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// The database's failures since it last answered: what the log says of an outage. The first
/// failure is logged at once, then one line a minute with the count, and the recovery once (the
/// writer retries every second, and a line per retry buried the log).
#[derive(Default)]
struct Outage {
    /// Failed calls since the database last answered.
    failures: u64,
    /// Failed calls not logged yet.
    unlogged: u64,
    last_line: Option<Instant>,
}

impl Outage {
    /// Counts a failure; `Some(n)` when a line is due, `n` failures since the last one.
    fn failed(&mut self) -> Option<u64> {
        self.failures += 1;
        self.unlogged += 1;
        if self.last_line.is_some_and(|t| t.elapsed() < OUTAGE_LOG_EVERY) {
            return None;
        }
        self.last_line = Some(Instant::now());
        Some(std::mem::take(&mut self.unlogged))
    }

    /// The database answered: `Some(failures)` when that ends an outage.
    fn answered(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        *self = Outage::default();
        (failures > 0).then_some(failures)
    }
}

/// State of the writer thread.
pub struct Writer {
    /// The connection's own thread; `None` only when that thread could not be started (logged).
    db: Option<Database>,
    /// `None` when the spool directory could not be opened at start (logged, counted).
    spool: Option<Spool>,
    /// Rows neither written nor spooled yet (the spool failed too).
    stash: (Vec<Row>, Vec<PendingTask>),
    failing: Arc<AtomicBool>,
    /// Records queued and not yet taken (`Ledger::record` bounds the queue with it).
    depth: Arc<AtomicUsize>,
    outage: Outage,
}

impl Writer {
    /// A writer for `url`, spooling to `spool`.
    pub fn new(
        url: String,
        spool: Option<Spool>,
        failing: Arc<AtomicBool>,
        depth: Arc<AtomicUsize>,
        task_landed: Arc<OnceLock<TaskLanded>>,
    ) -> Self {
        let db = Database::start(url, task_landed)
            .map_err(|e| {
                log::error!("ledger: {e}; rows go to the spool only");
                metrics::ledger().errors.with_label_values(&["database"]).inc();
            })
            .ok();
        Writer { db, spool, stash: (Vec::new(), Vec::new()), failing, depth, outage: Outage::default() }
    }

    /// One database call; a failure is counted here, once per failure, and logged (`what` says
    /// what failed) as `Outage` allows (the calls that are only waiting for a connection or for a
    /// stalled call stay quiet).
    fn call(&mut self, call: impl FnOnce(&mut Database) -> Result<(), CallError>, what: impl Fn() -> String) -> bool {
        let Some(db) = self.db.as_mut() else { return false };
        match call(db) {
            Ok(()) => {
                if let Some(failures) = self.outage.answered() {
                    log::info!("ledger: the database answers again ({failures} calls had failed)");
                }
                true
            }
            Err(CallError::Waiting) => false,
            Err(CallError::Failed(e)) => {
                metrics::ledger().errors.with_label_values(&["database"]).inc();
                match self.outage.failed() {
                    Some(1) => log::error!("ledger: {}: {e}", what()),
                    Some(n) => log::error!("ledger: {}: {e} ({n} calls failed since the last line)", what()),
                    None => {}
                }
                false
            }
        }
    }

    /// Runs until shut down or until every sender is gone.
    pub fn run(mut self, queue: Receiver<Record>, interval: Duration) {
        // Connect (and migrate) at once, so that a bad URL is logged at start; on the database
        // thread: the blocking Postgres client must not run on an async runtime's thread.
        if !self.call(Database::connect, || "connect".into()) && self.spool.is_none() {
            self.failing.store(true, Ordering::Relaxed);
        }
        let mut rows = Vec::new();
        let mut pending = Vec::new();
        loop {
            // Wait for a first record, then sleep out the window and take everything queued in
            // one go: one wake-up per window, not one per request (on a busy CPU a wake-up per row
            // costs a context switch per request).
            let mut stop = None;
            let mut take = |r: Record, stop: &mut Option<Option<mpsc::Sender<usize>>>| match r {
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
                let (rows, tasks) = (self.stash.0.len(), self.stash.1.len());
                if rows + tasks > 0 {
                    log::error!(
                        "ledger: exiting with {rows} rows and {tasks} pending tasks that neither the database nor \
                         the spool took: they are lost"
                    );
                }
                if let Some(done) = done {
                    let _ = done.send(rows + tasks);
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
        // Stashed rows went to a call that failed, or missed its deadline and may land yet: not
        // fresh.
        let fresh = self.stash.0.is_empty() && self.stash.1.is_empty();
        if !fresh {
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
        let counts = (rows.len(), pending.len());
        let what = move || match counts {
            (rows, 0) => format!("write of {rows} rows failed, spooling them"),
            (0, tasks) => format!("write of {tasks} pending tasks failed, spooling them"),
            (rows, tasks) => format!("write of {rows} rows and {tasks} pending tasks failed, spooling them"),
        };
        // Shared with the database thread, which keeps it while a call is in doubt.
        let batch = Arc::new(Batch { rows, pending, fresh });
        if self.call(|db| db.write(batch.clone()), what) {
            self.failing.store(false, Ordering::Relaxed);
            return;
        }
        let spooled = match self.spool.as_mut() {
            Some(spool) => spool.append(&batch.rows, &batch.pending),
            None => Err("no spool directory".into()),
        };
        match spooled {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
                self.show_spool();
            }
            Err(e) => {
                let Batch { mut rows, pending, .. } = Arc::try_unwrap(batch).unwrap_or_else(|shared| Batch {
                    rows: shared.rows.clone(),
                    pending: shared.pending.clone(),
                    fresh: false,
                });
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
        if !self.spool.as_mut().is_some_and(Spool::has_backlog) || !self.call(Database::connect, || "connect".into()) {
            return;
        }
        let (Some(db), Some(spool)) = (self.db.as_mut(), self.spool.as_mut()) else { return };
        let mut write = |rows: &[Row], pending: &[PendingTask]| -> Result<(), String> {
            let batch = Batch { rows: rows.to_vec(), pending: pending.to_vec(), fresh: false };
            db.write(Arc::new(batch)).map_err(|e| match e {
                CallError::Waiting => "the database is not answering".to_string(),
                CallError::Failed(e) => e,
            })
        };
        if let Err(e) = spool.replay(BATCH_ROWS, &mut write) {
            log::warn!("ledger: spool replay stopped, will retry: {e}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_at_once_then_once_a_minute_and_its_end_once() {
        let mut outage = Outage::default();
        assert_eq!(outage.answered(), None, "no outage, nothing to say");
        assert_eq!(outage.failed(), Some(1));
        assert_eq!(outage.failed(), None);
        assert_eq!(outage.failed(), None);
        outage.last_line = Some(Instant::now() - OUTAGE_LOG_EVERY);
        assert_eq!(outage.failed(), Some(3), "a minute on: one line for the three since the last");
        assert_eq!(outage.failed(), None);
        assert_eq!(outage.answered(), Some(5));
        assert_eq!(outage.answered(), None);
        assert_eq!(outage.failed(), Some(1), "the next outage is logged at once");
    }
}
