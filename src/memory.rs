//! Handing memory the allocator holds back to the OS once the load that needed it is gone.
//!
//! mimalloc (the binary's global allocator, `main.rs`) returns freed memory to the OS a while
//! after it is freed (its purge delay: 1 s in v3), but only when some thread next allocates or
//! collects. After a burst the workers go quiet, so without this the gateway idled at 80 MB after
//! 1,000 concurrent streams against 16 MB before them, for good (`loadtest/streams.sh`). A purge
//! is program-wide, so one `mi_collect` a second from any thread returns what fell due. It costs
//! nothing measurable; a shorter purge delay did the same job for 4% more CPU per request under
//! load (pages in steady use went back to the OS and came back over and over:
//! `loadtest/cpu_ab.sh` with `MIMALLOC_PURGE_DELAY=100`).
//!
//! A Pingora background service, not a thread started in `main`: it then runs after Pingora has
//! daemonized (`-d`), and stops with the other services.
//! Imports: nothing of the gateway.

use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

extern "C" {
    /// mimalloc's collection of the calling thread's free lists and of every arena's due purges.
    /// Linked with `libmimalloc-sys` (`allocator`); harmless when mimalloc is not the global
    /// allocator (its own heaps are then empty).
    fn mi_collect(force: bool);
}

/// How often due purges are carried out.
const TICK: Duration = Duration::from_secs(1);

/// The background service; see the module docs.
pub struct MemoryReturn;

#[async_trait]
impl BackgroundService for MemoryReturn {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // SAFETY: mimalloc's documented entry point; takes no pointers, callable from
                    // any thread at any time; returns in microseconds (it never blocks on IO).
                    unsafe { mi_collect(false) };
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
