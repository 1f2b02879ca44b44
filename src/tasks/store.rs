//! Where the gateway keeps the tasks it runs itself (OpenAI's synchronous image and speech calls)
//! and their results. `TaskStore` is the seam for a shared store (several instances); the
//! embedded `MemoryStore` is bounded in entries and bytes and forgets results after a TTL.
//! Imports: the task types of `tasks`. Not `proxy`, `ledger` or Pingora.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::TaskState;

/// Storage for gateway-run tasks.
pub trait TaskStore: Send + Sync {
    /// The task's current state.
    fn get(&self, id: &str) -> Option<TaskState>;
    /// Creates or replaces a task's state.
    fn put(&self, id: &str, state: TaskState);
}

struct Entry {
    state: TaskState,
    bytes: usize,
    expires: Instant,
}

/// In-process store: oldest entries go first when a bound is reached.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
    ttl: Duration,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
    bytes: usize,
}

impl MemoryStore {
    /// A store holding at most `max_entries` tasks and `max_bytes` of results for `ttl`.
    pub fn new(max_entries: usize, max_bytes: usize, ttl: Duration) -> Self {
        MemoryStore { inner: Mutex::new(Inner::default()), max_entries: max_entries.max(1), max_bytes, ttl }
    }
}

fn size_of(state: &TaskState) -> usize {
    state.results.iter().map(String::len).sum::<usize>() + 256
}

impl TaskStore for MemoryStore {
    fn get(&self, id: &str) -> Option<TaskState> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let e = inner.map.get(id)?;
        (e.expires > Instant::now()).then(|| e.state.clone())
    }

    fn put(&self, id: &str, state: TaskState) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = size_of(&state);
        let expires = Instant::now() + self.ttl;
        if let Some(old) = inner.map.insert(id.to_string(), Entry { state, bytes, expires }) {
            inner.bytes -= old.bytes;
        } else {
            inner.order.push_back(id.to_string());
        }
        inner.bytes += bytes;
        let now = Instant::now();
        while inner.map.len() > self.max_entries
            || inner.bytes > self.max_bytes
            || inner.order.front().and_then(|k| inner.map.get(k)).is_some_and(|e| e.expires <= now)
        {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if oldest == id && inner.map.len() == 1 {
                inner.order.push_back(oldest);
                break;
            }
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskStatus;

    fn state(n: usize) -> TaskState {
        TaskState {
            status: TaskStatus::Completed,
            progress: 100,
            results: vec!["x".repeat(n)],
            error: None,
            units: 1.0,
        }
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let s = MemoryStore::new(2, 10_000, Duration::from_secs(60));
        s.put("a", state(1));
        s.put("b", state(1));
        s.put("c", state(1));
        assert!(s.get("a").is_none() && s.get("b").is_some() && s.get("c").is_some());
        let s = MemoryStore::new(100, 3_000, Duration::from_secs(60));
        s.put("a", state(2_000));
        s.put("b", state(2_000));
        assert!(s.get("a").is_none() && s.get("b").is_some());
    }

    #[test]
    fn expires() {
        let s = MemoryStore::new(10, 10_000, Duration::from_millis(1));
        s.put("a", state(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.get("a").is_none());
    }
}
