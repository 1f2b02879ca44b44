//! The ledger's database connection on a thread of its own, so that the writer never waits on it
//! longer than `CALL_DEADLINE`. `statement_timeout`, the busy timeout and TCP keepalives catch a
//! database that is slow or gone; none of them catches one that is frozen while its host still
//! answers TCP (a stalled disk under the server's fsync, a stopped process). Without this, the
//! writer would block in that call, stop spooling, and every row queued behind it would be lost
//! to a crash or to the queue's bound.
//!
//! A call that misses the deadline is left running ("in doubt"): the writer spools its rows and
//! sends nothing more until it answers. Its rows may still land when the database wakes; the
//! replay of the spool then skips them (the insert is idempotent), and this thread counts them
//! (`account_batch`) when the late answer comes, so the metrics count each row once either way.
//! Imports: `ledger::backend`, the ledger's rows and accounting. Not `proxy` or Pingora.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::backend::{self, Backend};
use super::writer::redact;
use super::{account_batch, task_landed, PendingTask, Row, TaskLanded};

/// How long the writer waits for one call: longer than Postgres's `statement_timeout` and
/// SQLite's busy timeout (5 s each), so that a merely slow statement fails on its own first.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Wait before connecting again after a failed connect or write.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Rows and task entries to write in one transaction (`Backend::write`).
pub struct Batch {
    pub rows: Vec<Row>,
    pub pending: Vec<PendingTask>,
    /// `Backend::write`'s `fresh`: request rows straight from the queue.
    pub fresh: bool,
}

/// Why a call did not write.
#[derive(Debug, PartialEq)]
pub enum CallError {
    /// Not tried: no connection until the next attempt, or an earlier call is still in doubt.
    /// Already reported; the writer spools quietly.
    Waiting,
    /// The call failed or missed the deadline; the writer reports it.
    Failed(String),
}

struct Job {
    /// `None`: connect only.
    batch: Option<Arc<Batch>>,
    answer: Sender<Result<(), CallError>>,
}

/// The writer's handle on the database thread.
pub struct Database {
    jobs: Sender<Job>,
    /// The answer of the call that missed its deadline, while it has not come.
    in_doubt: Option<Receiver<Result<(), CallError>>>,
}

impl Database {
    /// Starts the thread for `url`; it connects at the first call.
    pub fn start(url: String, landed: Arc<OnceLock<TaskLanded>>) -> Result<Self, String> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("ledger-db".into())
            .spawn(move || serve(&url, queue, &landed))
            .map_err(|e| format!("cannot start the ledger's database thread: {e}"))?;
        Ok(Database { jobs, in_doubt: None })
    }

    /// Connects, if not connected yet.
    pub fn connect(&mut self) -> Result<(), CallError> {
        self.call(None)
    }

    /// Writes `batch` in one transaction, and counts the rows it inserted.
    pub fn write(&mut self, batch: Arc<Batch>) -> Result<(), CallError> {
        self.call(Some(batch))
    }

    fn call(&mut self, batch: Option<Arc<Batch>>) -> Result<(), CallError> {
        if let Some(late) = &self.in_doubt {
            match late.try_recv() {
                Err(TryRecvError::Empty) => return Err(CallError::Waiting),
                // Answered at last (its rows, if any landed, were counted there), or the thread is
                // gone, which the send below reports.
                Ok(_) | Err(TryRecvError::Disconnected) => self.in_doubt = None,
            }
        }
        let (answer, answered) = mpsc::channel();
        let stopped = || CallError::Failed("the ledger's database thread stopped".into());
        self.jobs.send(Job { batch, answer }).map_err(|_| stopped())?;
        match answered.recv_timeout(CALL_DEADLINE) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => {
                self.in_doubt = Some(answered);
                Err(CallError::Failed(format!("the database did not answer within {} s", CALL_DEADLINE.as_secs())))
            }
            Err(RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }
}

/// The database thread: one call at a time, until the writer drops its handle.
fn serve(url: &str, queue: Receiver<Job>, landed: &OnceLock<TaskLanded>) {
    let mut db: Option<Box<dyn Backend>> = None;
    let mut next_connect = Instant::now();
    for job in queue {
        let result = run(url, &mut db, &mut next_connect, job.batch.as_deref(), landed);
        // The writer may have stopped waiting (deadline) or exited: nothing to do then.
        let _ = job.answer.send(result);
    }
}

fn run(
    url: &str,
    db: &mut Option<Box<dyn Backend>>,
    next_connect: &mut Instant,
    batch: Option<&Batch>,
    landed: &OnceLock<TaskLanded>,
) -> Result<(), CallError> {
    let connected = match db {
        Some(connected) => connected,
        None if Instant::now() < *next_connect => return Err(CallError::Waiting),
        None => match backend::connect(url) {
            Ok(connected) => {
                log::info!("ledger: connected to {}", redact(url));
                db.insert(connected)
            }
            Err(e) => {
                *next_connect = Instant::now() + RECONNECT_AFTER;
                return Err(CallError::Failed(format!("cannot open {}: {e}", redact(url))));
            }
        },
    };
    let Some(batch) = batch else { return Ok(()) };
    match connected.write(&batch.rows, &batch.pending, batch.fresh) {
        Ok(inserted) => {
            let new_rows = || batch.rows.iter().zip(&inserted).filter(|(_, new)| **new).map(|(r, _)| r);
            account_batch(new_rows());
            task_landed(landed, new_rows());
            Ok(())
        }
        Err(e) => {
            *db = None;
            *next_connect = Instant::now() + RECONNECT_AFTER;
            Err(CallError::Failed(e))
        }
    }
}
