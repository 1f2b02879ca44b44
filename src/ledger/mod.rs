//! The usage ledger: one row per billable event (a forwarded request, a media task that reached a
//! final state), written off the request path and never lost.
//!
//! Data flow: the request path builds a `Row` and calls `Ledger::record`, which only pushes it on a
//! bounded queue (never waits). One writer thread (`writer`) takes rows in batches (every
//! `flush_interval` or `BATCH_ROWS` rows) and inserts them into the database (`Backend`:
//! `sqlite` or `postgres`), idempotently on the row's `id`, through the connection's own thread
//! (`database`), which it waits on for at most `database::CALL_DEADLINE`. When the database fails
//! or does not answer in time, the batch goes to an append-only spool file (`spool`, fsync per
//! batch) and is replayed once the database answers again. Shutdown (`Ledger::shutdown`, after
//! Pingora's runtimes stop) drains the queue.
//!
//! The token and cost metrics count rows as they land in the database (`account`), so that the
//! ledger and `cheapmodel_cost_usd_total` agree to the last pico-dollar, and a task row that two
//! instances both try to write is counted by the one whose insert wins.
//! Imports: `money`, `usage`, `cost`, `metrics`, `error` (nothing of `proxy` or `plan`).

pub mod backend;
pub mod database;
pub mod report;
pub mod spool;
mod sqlite_insert;
pub mod writer;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cost::MediaUnits;
use crate::metrics;
use crate::money::Money;
use crate::usage::Usage;

/// Rows the queue holds before `record` reports it full: about 10 s at 25k requests/s, longer than a
/// Postgres statement may take (`backend`), so a slow database fills the spool, not this bound.
/// Memory follows use (an unbounded channel counted by `depth`), not the bound.
const QUEUE_ROWS: usize = 262_144;

/// One billable event. Immutable once made: a replay writes exactly the same row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Unique event id: the gateway's own request id (never the caller's `x-request-id`, which a
    /// caller could repeat to hide a request), or the task id.
    pub id: String,
    /// The request's `x-request-id` (the caller's, or the gateway's own); for tasks, the task id.
    /// Stored as NULL when it equals `id` (the common case: the gateway made it).
    pub request_id: String,
    /// Unix milliseconds: when the request ended; for a task, when it was submitted, so that every
    /// instance that settles it writes the same row.
    pub time_ms: i64,
    /// Key name.
    pub key: Arc<str>,
    /// Model name.
    pub model: Arc<str>,
    /// Upstream name.
    pub upstream: Arc<str>,
    /// Endpoint path (`/v1/chat/completions`, `/v1/messages`, `/v1/images/generations`...).
    pub endpoint: std::borrow::Cow<'static, str>,
    /// HTTP status the caller got; for tasks 200 (completed) or 502 (failed).
    pub status: u16,
    /// The response was a stream.
    pub stream: bool,
    /// The request was translated between dialects.
    pub translated: bool,
    /// Tokens by class.
    pub usage: Usage,
    /// Media units.
    pub media: MediaUnits,
    /// Cost in pico-dollars.
    pub cost: Money,
    /// Whole request, microseconds.
    pub latency_us: i64,
    /// Upstream response headers after the request left, microseconds.
    pub ttfb_us: Option<i64>,
    /// A media task row (counted in `cheapmodel_tasks_total` when it lands).
    pub task: bool,
    /// The tokens are an estimate, a lower bound: a stream whose upstream count is missing or cannot
    /// be right (`usage::StreamTokens::needs_estimate`). Absent from rows spooled by older builds:
    /// false.
    #[serde(default)]
    pub estimated: bool,
    /// What a task's submit already counted against the key's budget (its id's `charged`): the
    /// budget counts `cost - charged` when the row lands. Not a column: the budget's business.
    #[serde(default)]
    pub charged: Money,
}

impl Row {
    /// UTC day of `time_ms`, `YYYY-MM-DD`.
    pub fn day(&self) -> String {
        day_of(self.time_ms)
    }
}

/// A relayed media task the gateway must settle (poll to a final state) even if nobody polls it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTask {
    /// The task id handed to the caller (decodes with the task secret).
    pub id: String,
    /// Key name.
    pub key: Arc<str>,
    /// Unix seconds it was submitted.
    pub created_s: i64,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Record {
    /// Insert a billable row.
    Row(Row),
    /// Remember a task to settle.
    Pending(PendingTask),
    /// Flush and stop; the sender is told when done, with the number of records lost (neither the
    /// database nor the spool took them).
    Shutdown(mpsc::Sender<usize>),
}

/// What an instance does when the ledger cannot take rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Keep serving, loudly (error log, `cheapmodel_ledger_errors_total`).
    #[default]
    Serve,
    /// Refuse billable requests with 503 until the ledger takes rows again.
    Reject,
}

/// The ledger's settings, resolved (`config`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://PATH`, `postgres://...`; `None` is `url: "none"`.
    pub url: Option<String>,
    /// Longest time a row waits in the queue before its batch is written.
    pub flush_interval: Duration,
    /// Where the spool file lives.
    pub spool_dir: PathBuf,
    /// What to do when rows cannot be kept.
    pub on_failure: OnFailure,
}

/// Told of each task row once, as it lands (or as it is recorded, with the ledger off): the key's
/// budget counts the task's cost then (`Row::charged` already counted at submit), so that a task
/// two instances both settle, or one polled again after a restart, counts once, as in the ledger.
pub type TaskLanded = Arc<dyn Fn(&Row) + Send + Sync>;

/// The handle the request path and the task engine hold.
pub struct Ledger {
    queue: Option<Sender<Record>>,
    /// Records in the queue (the bound `QUEUE_ROWS` is checked against it).
    depth: Arc<AtomicUsize>,
    receiver: Mutex<Option<mpsc::Receiver<Record>>>,
    settings: Settings,
    /// Set by the writer while rows can be neither written nor spooled; and by `record` while the
    /// queue is full.
    failing: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    full_logged: AtomicU64,
    task_landed: Arc<OnceLock<TaskLanded>>,
}

impl Ledger {
    /// A ledger for `settings`; the writer starts with `start` (after Pingora may have forked).
    pub fn new(settings: Settings) -> Self {
        let (queue, receiver) = match settings.url {
            Some(_) => {
                // Its metrics exist (at 0) from the start, not from the writer's first use.
                metrics::ledger();
                let (tx, rx) = mpsc::channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        Ledger {
            queue,
            receiver: Mutex::new(receiver),
            depth: Arc::new(AtomicUsize::new(0)),
            settings,
            failing: Arc::new(AtomicBool::new(false)),
            writer: Mutex::new(None),
            full_logged: AtomicU64::new(0),
            task_landed: Arc::new(OnceLock::new()),
        }
    }

    /// Starts the writer thread (it connects to the database itself, and retries). Without a
    /// usable spool directory it still writes to the database, and reports the spool error.
    pub fn start(&self) -> Result<(), String> {
        let Some(receiver) = self.receiver.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let Some(url) = self.settings.url.clone() else { return Ok(()) };
        let spool = match spool::Spool::open(&self.settings.spool_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("ledger: {e}; rows the database cannot take will be held in memory only");
                metrics::ledger().errors.with_label_values(&["spool"]).inc();
                None
            }
        };
        let w = writer::Writer::new(url, spool, self.failing.clone(), self.depth.clone(), self.task_landed.clone());
        let interval = self.settings.flush_interval;
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || w.run(receiver, interval))
            .map_err(|e| format!("cannot start the ledger writer: {e}"))?;
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Sets what is told of each task row as it lands (once; before any task row is recorded).
    pub fn on_task_landed(&self, f: TaskLanded) {
        let _ = self.task_landed.set(f);
    }

    /// Hands a row to the writer; never waits. Without a database, the row is only counted.
    pub fn record(&self, row: Row) {
        match &self.queue {
            None => {
                account(&row);
                task_landed(&self.task_landed, std::iter::once(&row));
            }
            Some(q) => self.push(q, Record::Row(row)),
        }
    }

    /// Remembers a relayed task until it is settled (no-op without a database).
    pub fn pending(&self, task: PendingTask) {
        if let Some(q) = &self.queue {
            self.push(q, Record::Pending(task));
        }
    }

    fn push(&self, q: &Sender<Record>, record: Record) {
        if self.depth.fetch_add(1, Ordering::Relaxed) >= QUEUE_ROWS {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            self.failing.store(true, Ordering::Relaxed);
            metrics::ledger().errors.with_label_values(&["queue_full"]).inc();
            // One line per 1,000 lost rows, not one per request.
            if self.full_logged.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
                log::error!("ledger queue full ({QUEUE_ROWS} rows): the database and the spool cannot keep up; rows are being lost");
            }
            return;
        }
        if q.send(record).is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            metrics::ledger().errors.with_label_values(&["stopped"]).inc();
        }
    }

    /// Whether billable requests should be refused now (`on_failure: reject` while failing).
    pub fn refuses(&self) -> bool {
        self.settings.on_failure == OnFailure::Reject && self.failing.load(Ordering::Relaxed)
    }

    /// Whether a database keeps rows (for `/v1/usage` and the task settler).
    pub fn url(&self) -> Option<&str> {
        self.settings.url.as_deref()
    }

    /// Writes every queued row, then stops the writer; waits at most `timeout`. False when something
    /// could not be kept (logged as an error, with the count).
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let Some(q) = &self.queue else { return true };
        let (done_tx, done_rx) = mpsc::channel();
        if q.send(Record::Shutdown(done_tx)).is_err() {
            return true;
        }
        let lost = match done_rx.recv_timeout(timeout) {
            Ok(lost) => lost,
            Err(_) => {
                log::error!("ledger writer did not finish within {timeout:?}; unflushed rows stay in the queue");
                return false;
            }
        };
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        lost == 0
    }
}

/// Tells `hook` (if set) of the task rows among `rows`, which have just landed.
pub fn task_landed<'a>(hook: &OnceLock<TaskLanded>, rows: impl Iterator<Item = &'a Row>) {
    if let Some(f) = hook.get() {
        rows.filter(|r| r.task).for_each(|r| f(r));
    }
}

/// Counts a row that landed in the ledger (or that would have, with the ledger off) in the token,
/// cost and task metrics (`account_batch` of one row).
pub fn account(row: &Row) {
    account_batch(std::iter::once(row));
}

/// Counts landed rows in the token, cost and task metrics: the one place these metrics move. Sums
/// them per model and key first, so the metrics are touched once per series per batch, not once
/// per row, through handles this thread resolved once (`metrics::SpendSeries`): at a moderate rate
/// a batch is a row or two, and label lookups per batch then cost ~1,300 instructions a request.
pub fn account_batch<'a>(rows: impl Iterator<Item = &'a Row>) {
    struct Sums<'a> {
        model: &'a Arc<str>,
        key: &'a Arc<str>,
        tokens: [u64; 4],
        cost: i64,
        completed: u64,
        failed: u64,
        estimated: u64,
    }
    thread_local! {
        /// This thread's handles of the spend series (one thread counts them when a database
        /// keeps the ledger; each worker without one).
        static SPEND: RefCell<metrics::SpendSeries> = RefCell::default();
    }
    // Few distinct series per batch: a linear scan beats hashing.
    let mut series: Vec<Sums<'a>> = Vec::new();
    for row in rows {
        let i = match series.iter().position(|s| **s.model == *row.model && **s.key == *row.key) {
            Some(i) => i,
            None => {
                series.push(Sums {
                    model: &row.model,
                    key: &row.key,
                    tokens: [0; 4],
                    cost: 0,
                    completed: 0,
                    failed: 0,
                    estimated: 0,
                });
                series.len() - 1
            }
        };
        let s = &mut series[i];
        for (t, n) in
            s.tokens.iter_mut().zip([row.usage.input, row.usage.output, row.usage.cache_read, row.usage.cache_write])
        {
            *t += n;
        }
        s.cost = s.cost.saturating_add(row.cost.0);
        s.estimated += u64::from(row.estimated);
        if row.task {
            if row.status == 200 {
                s.completed += 1;
            } else {
                s.failed += 1;
            }
        }
    }
    let m = metrics::get();
    SPEND.with_borrow_mut(|spend| {
        for s in series {
            spend.of(s.model, s.key).count(s.model, s.key, s.tokens, s.estimated, Money(s.cost));
            for (status, n) in [("completed", s.completed), ("failed", s.failed)] {
                if n > 0 {
                    m.tasks.with_label_values(&[s.model, status]).inc_by(n);
                }
            }
        }
    });
}

/// `YYYY-MM-DD` (UTC) of a unix millisecond time.
pub fn day_of(time_ms: i64) -> String {
    let (y, m, d) = civil_from_days(time_ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` UTC day.
pub fn parse_day(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = text[0..4].parse().ok()?;
    let m: u32 = text[5..7].parse().ok()?;
    let d: u32 = text[8..10].parse().ok()?;
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

// Howard Hinnant's civil-calendar algorithms (public domain), proleptic Gregorian, UTC.
/// `(year, month, day)` of a day number (days since 1970-01-01).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of `civil_from_days`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The default ledger beside a config file: `sqlite://DIR/STEM.ledger.sqlite`.
pub fn default_url(config: &Path) -> String {
    let dir = config.parent().unwrap_or(Path::new("."));
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("cheapmodel");
    format!("sqlite://{}", dir.join(format!("{stem}.ledger.sqlite")).display())
}

/// The task-id secret every instance on the ledger's database signs with: the first instance to
/// start pins its own (`derived`, from the config's key hashes) and every later start, reload or
/// instance keeps that one, so adding or removing a key no longer voids the task ids already
/// handed out, across restarts included. Bounded by `database::CALL_DEADLINE`, on a thread of its
/// own (a frozen database must not hold start-up for longer).
pub fn pin_task_secret(url: &str, derived: &[u8]) -> Result<Vec<u8>, String> {
    let (url, hex) = (url.to_string(), crate::auth::hex(derived));
    let (done, answer) = mpsc::channel();
    std::thread::Builder::new()
        .name("ledger-pin".into())
        .spawn(move || {
            let _ = done.send(backend::connect(&url).and_then(|mut db| db.pin_setting("task_secret", &hex)));
        })
        .map_err(|e| e.to_string())?;
    let pinned = answer.recv_timeout(database::CALL_DEADLINE).map_err(|_| "the database did not answer in time")??;
    // The derived secret is a sha256, stored as its hex.
    crate::auth::parse_sha256(&pinned)
        .map(Vec::from)
        .ok_or_else(|| "the pinned task secret is not 64 hex characters".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_task_secret_pinned_is_the_one_every_later_start_gets() {
        let dir = std::env::temp_dir().join(format!("cm-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let url = format!("sqlite://{}", dir.join("l.sqlite").display());
        assert_eq!(pin_task_secret(&url, &[7; 32]), Ok(vec![7; 32]));
        assert_eq!(pin_task_secret(&url, &[9; 32]), Ok(vec![7; 32]), "pinned by the first");
        assert!(pin_task_secret("mysql://x", &[1; 32]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_task_row_written_twice_is_told_once_as_it_lands() {
        let dir = std::env::temp_dir().join(format!("cm-landed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ledger = Ledger::new(Settings {
            url: Some(format!("sqlite://{}", dir.join("l.sqlite").display())),
            flush_interval: Duration::from_millis(20),
            spool_dir: dir.clone(),
            on_failure: OnFailure::Serve,
        });
        let told = Arc::new(Mutex::new(Vec::new()));
        let seen = told.clone();
        ledger.on_task_landed(Arc::new(move |row: &Row| seen.lock().expect("lock").push(row.id.clone())));
        ledger.start().expect("start");
        let task = Row { task: true, ..backend::tests::row("task_1", "task_1") };
        ledger.record(task.clone());
        ledger.record(backend::tests::row("req_1", "req_1"));
        std::thread::sleep(Duration::from_millis(300));
        // Another instance's settler, or a poll after a restart, writes the same task row again.
        ledger.record(task);
        assert!(ledger.shutdown(Duration::from_secs(10)));
        assert_eq!(*told.lock().expect("lock"), vec!["task_1".to_string()]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_399_999), "1970-01-01");
        assert_eq!(day_of(86_400_000), "1970-01-02");
        assert_eq!(day_of(1_772_323_200_000), "2026-03-01");
        assert_eq!(day_of(1_772_323_199_999), "2026-02-28");
        assert_eq!(day_of(1_709_164_800_000), "2024-02-29");
        for d in ["1970-01-01", "2024-02-29", "2026-12-05", "2100-03-01"] {
            let days = parse_day(d).expect(d);
            assert_eq!(day_of(days * 86_400_000), d);
        }
        assert_eq!(parse_day("2026-02-29"), None);
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("2026-1-01"), None);
    }

    #[test]
    fn default_url_sits_beside_the_config() {
        assert_eq!(default_url(Path::new("/etc/cm/gw.yaml")), "sqlite:///etc/cm/gw.ledger.sqlite");
    }
}
