//! Hot reload: on SIGHUP, and when the config file or an upstream's `api_key_file` changes (checked
//! every `server.watch_interval_seconds`: polling a `stat`, and a key file's few bytes, is simpler
//! and sturdier than inotify across editors' atomic renames and Kubernetes' secret symlink swaps),
//! the file is loaded and validated off the request path and the new snapshot replaces the old one
//! in one store. An invalid file is rejected with one log line and
//! the old snapshot keeps serving. Requests in flight keep the snapshot they started with.
//! Imports: `config`, `metrics`, `registry`, pingora's background service. Not `proxy` or `plan`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config;
use crate::metrics;
use crate::registry::{Registry, Snapshot};

/// Work a reload brings with it beyond the swap, given the snapshots before and after; run on a
/// blocking thread before the reload counts as done (`cli::budgets_after_reload`).
pub type AfterReload = Arc<dyn Fn(&Snapshot, &Snapshot) + Send + Sync>;

/// The reload background service.
pub struct Reloader {
    /// Config file path.
    pub path: PathBuf,
    /// Live registry.
    pub registry: Arc<Registry>,
    /// File check interval (zero: SIGHUP only).
    pub interval: Duration,
    /// `server:` and `ledger:` as the process started with them (a reload does not change them).
    pub running: (config::raw::RawServer, config::raw::RawLedger),
    /// The upstream key files of the config in use, watched with the config file.
    pub key_files: Mutex<Vec<PathBuf>>,
    /// Run after each accepted reload.
    pub after_reload: Option<AfterReload>,
}

/// What a change of the watched files changes: modification time and length of the config file
/// (`None` while it is missing, as in the middle of an editor's rename), then a hash of each key
/// file's content (a few bytes, read at each check): a rotation by `cp -p`, `rsync -t` or tar
/// keeps the size and the time.
type Fingerprint = (Option<(SystemTime, u64)>, Vec<Option<u64>>);

fn stat(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn content_hash(path: &PathBuf) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).ok()?.hash(&mut h);
    Some(h.finish())
}

impl Reloader {
    fn fingerprint(&self) -> Fingerprint {
        let key_files = self.key_files.lock().unwrap_or_else(|e| e.into_inner());
        (stat(&self.path), key_files.iter().map(content_hash).collect())
    }

    /// Loads the file and swaps it in. Returns whether it was accepted.
    pub async fn reload(&self, why: &str) -> bool {
        let path = self.path.clone();
        // Loading resolves upstream host names (blocking DNS): keep it off the async workers.
        let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await;
        let m = metrics::get();
        match loaded {
            Ok(Ok(l)) => {
                let mut snapshot = l.snapshot;
                // The task secret outlives a reload unless the file names one of its own: derived
                // from the keys (or pinned in the ledger at start), it would otherwise change with
                // every key added or removed and void every task id already handed out.
                if l.server.task_secret_env.is_none() {
                    snapshot.task_secret = self.registry.current().task_secret.clone();
                }
                let before = self.registry.current();
                self.registry.replace(snapshot);
                *self.key_files.lock().unwrap_or_else(|e| e.into_inner()) = l.key_files;
                if let Some(after_reload) = self.after_reload.clone() {
                    let after = self.registry.current();
                    if let Err(e) = tokio::task::spawn_blocking(move || after_reload(&before, &after)).await {
                        log::error!("config reload ({why}): the work after the swap failed: {e}");
                    }
                }
                m.reloads.with_label_values(&["ok"]).inc();
                log::info!("config reloaded ({why}): {}", self.path.display());
                let (server, ledger) = &self.running;
                let ignored = config::restart_only_changes((server, ledger), (&l.server, &l.ledger));
                if !ignored.is_empty() {
                    log::warn!(
                        "config reload ({why}) left these changed settings as they were; they apply at a restart or a \
                         graceful upgrade (-u): {}",
                        ignored.join(", ")
                    );
                }
                true
            }
            Ok(Err(e)) => {
                m.reloads.with_label_values(&["error"]).inc();
                log::error!("config reload rejected ({why}), keeping the previous config: {e}");
                false
            }
            Err(e) => {
                m.reloads.with_label_values(&["error"]).inc();
                log::error!("config reload failed ({why}): {e}");
                false
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let mut last = self.fingerprint();
        let tick = if self.interval.is_zero() { Duration::from_secs(3600) } else { self.interval };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reload("SIGHUP").await;
                    last = self.fingerprint();
                }
                _ = tokio::time::sleep(tick), if !self.interval.is_zero() => {
                    let now = self.fingerprint();
                    if now.0.is_some() && now != last {
                        self.reload("config or key file changed").await;
                        // Taken again: the reload may have changed which key files there are.
                        last = self.fingerprint();
                    }
                }
            }
        }
    }
}
