//! The ledger's local spool: where rows go while the database cannot take them. One append-only
//! JSON-lines file per process (`spool-PID-RANDOM.jsonl`), locked by its process for its lifetime,
//! fsynced after every batch. Replay reads it back in order, writes it to the database (the insert
//! is idempotent, so a replay cut short is simply replayed again) and then empties it. A file whose
//! lock nobody holds belongs to a process that is gone (a crash, an upgrade's old process): it is
//! replayed and removed by whichever process gets its lock first.
//! Imports: `auth::hex` (file names) and the ledger's `Row`. Not `backend`, `proxy`, `metrics` or
//! Pingora.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{PendingTask, Row};

/// Writes one batch to the database (the writer's `Backend::write` plus its accounting).
pub type WriteBatch<'a> = dyn FnMut(&[Row], &[PendingTask]) -> Result<(), String> + 'a;

/// One spooled record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entry {
    /// A billable row.
    Row(Row),
    /// A task to settle.
    Pending(PendingTask),
}

/// How often the directory is listed for other processes' files. The writer asks after every
/// batch; listing it each time cost a dozen syscalls a batch (a tenth of the writer's fixed cost
/// per batch at 500 req/s), for files that appear only when a process dies.
const ORPHAN_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// This process's spool file.
pub struct Spool {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes written and not yet replayed.
    len: u64,
    /// Other processes' spool files and their sizes, as last listed, and when.
    orphans: Vec<(PathBuf, u64)>,
    listed: Option<Instant>,
}

impl Spool {
    /// Creates and locks this process's spool file in `dir`.
    pub fn open(dir: &Path) -> Result<Self, String> {
        fs::create_dir_all(dir).map_err(|e| format!("ledger.spool_dir {}: {e}", dir.display()))?;
        let mut salt = [0u8; 4];
        let _ = getrandom::getrandom(&mut salt);
        let name = format!("spool-{}-{}.jsonl", std::process::id(), crate::auth::hex(&salt));
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| format!("ledger spool {}: {e}", path.display()))?;
        file.try_lock().map_err(|e| format!("ledger spool {}: cannot lock: {e}", path.display()))?;
        Ok(Spool { dir: dir.to_path_buf(), path, file, len: 0, orphans: Vec::new(), listed: None })
    }

    /// Appends a batch and fsyncs it.
    pub fn append(&mut self, rows: &[Row], pending: &[PendingTask]) -> Result<(), String> {
        let mut buf = Vec::with_capacity(rows.len() * 512);
        for p in pending {
            serde_json::to_writer(&mut buf, &Entry::Pending(p.clone())).map_err(|e| e.to_string())?;
            buf.push(b'\n');
        }
        for r in rows {
            serde_json::to_writer(&mut buf, &Entry::Row(r.clone())).map_err(|e| e.to_string())?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(|e| e.to_string())?;
        self.file.sync_data().map_err(|e| e.to_string())?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Whether there is anything to replay: this process's rows, or another process's file (as
    /// listed at most `ORPHAN_SCAN_INTERVAL` ago).
    pub fn has_backlog(&mut self) -> bool {
        self.len > 0 || !self.orphans().is_empty()
    }

    /// Replays every spooled entry through `write` in batches of `batch`; empties the spool files
    /// that were written through. Stops at the first failure (what was written stays written and
    /// is skipped by the idempotent insert when replayed again).
    pub fn replay(&mut self, batch: usize, write: &mut WriteBatch<'_>) -> Result<(), String> {
        // What is replayed and removed here changes the listing: list again next time.
        self.listed = None;
        for (orphan, _) in std::mem::take(&mut self.orphans) {
            let Ok(file) = File::open(&orphan) else { continue };
            if file.try_lock().is_err() {
                continue; // its process is alive
            }
            replay_file(&file, batch, write)?;
            fs::remove_file(&orphan).map_err(|e| e.to_string())?;
            log::info!("ledger: replayed and removed {}", orphan.display());
        }
        if self.len > 0 {
            let file = File::open(&self.path).map_err(|e| e.to_string())?;
            replay_file(&file, batch, write)?;
            self.file.set_len(0).map_err(|e| e.to_string())?;
            self.file.sync_data().map_err(|e| e.to_string())?;
            self.len = 0;
        }
        Ok(())
    }

    /// Spool files of other processes in the same directory, with their sizes; listed again when
    /// the last listing is older than `ORPHAN_SCAN_INTERVAL`.
    fn orphans(&mut self) -> &[(PathBuf, u64)] {
        if self.listed.is_none_or(|at| at.elapsed() >= ORPHAN_SCAN_INTERVAL) {
            self.listed = Some(Instant::now());
            self.orphans = fs::read_dir(&self.dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            p != &self.path
                                && p.file_name()
                                    .and_then(|n| n.to_str())
                                    .is_some_and(|n| n.starts_with("spool-") && n.ends_with(".jsonl"))
                        })
                        .map(|p| {
                            let len = fs::metadata(&p).map_or(0, |m| m.len());
                            (p, len)
                        })
                        .collect()
                })
                .unwrap_or_default();
        }
        &self.orphans
    }

    /// Total bytes of every spool file in the directory (the `cheapmodel_ledger_spool_bytes`
    /// gauge); other processes' files as last listed.
    pub fn total_bytes(&mut self) -> u64 {
        self.len + self.orphans().iter().map(|(_, len)| len).sum::<u64>()
    }
}

fn replay_file(file: &File, batch: usize, write: &mut WriteBatch<'_>) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut pending = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        match serde_json::from_str::<Entry>(&line) {
            Ok(Entry::Row(r)) => rows.push(r),
            Ok(Entry::Pending(p)) => pending.push(p),
            // Only the last line can be torn (a crash mid-append); its batch was never acknowledged.
            Err(e) => log::warn!("ledger spool: skipping an unreadable line ({e})"),
        }
        if rows.len() + pending.len() >= batch {
            write(&rows, &pending)?;
            rows.clear();
            pending.clear();
        }
    }
    if !rows.is_empty() || !pending.is_empty() {
        write(&rows, &pending)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::backend::tests::row;

    /// Replays every spool file through `spool`, collecting the ids written.
    fn replay_ids(spool: &mut Spool) -> Vec<String> {
        let mut ids = Vec::new();
        let mut write = |rows: &[Row], _: &[PendingTask]| -> Result<(), String> {
            ids.extend(rows.iter().map(|r| r.id.clone()));
            Ok(())
        };
        spool.replay(100, &mut write).expect("replay");
        ids
    }

    #[test]
    fn a_dead_process_spool_is_replayed_and_removed_and_a_live_one_is_left() {
        let dir = std::env::temp_dir().join(format!("cm-spool-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // A process that is gone: its file, unlocked. One that is alive: its spool, locked.
        let mut dead = Spool::open(&dir).expect("open");
        dead.append(&[row("req_dead_1", "req_dead_1"), row("req_dead_2", "req_dead_2")], &[]).expect("append");
        let dead_path = dead.path.clone();
        let dead_bytes = dead.len;
        drop(dead);
        let mut alive = Spool::open(&dir).expect("open");
        alive.append(&[row("req_alive", "req_alive")], &[]).expect("append");

        let mut spool = Spool::open(&dir).expect("open");
        assert!(spool.has_backlog(), "another process's file is a backlog");
        assert_eq!(spool.total_bytes(), dead_bytes + alive.len, "both other files are counted");
        assert_eq!(replay_ids(&mut spool), ["req_dead_1", "req_dead_2"], "only the unlocked file is replayed");
        assert!(!dead_path.exists(), "a replayed file is removed");
        // The replay forgot the listing: the removed file no longer counts, at once.
        assert_eq!(spool.total_bytes(), alive.len);

        // Its own rows: counted at once, replayed, then the file is emptied.
        spool.append(&[row("req_own", "req_own")], &[]).expect("append");
        assert!(spool.total_bytes() > alive.len);
        assert_eq!(replay_ids(&mut spool), ["req_own"]);
        assert_eq!(spool.total_bytes(), alive.len);
        drop((spool, alive));
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
