//! Recording what the mock received (`/__mock/requests`).
//! Imports: `http` (the parsed request). Nothing of the gateway's crate.

use super::*;

// ---------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------

pub(crate) struct Record {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) version: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body_len: usize,
    pub(crate) body_sha256: String,
    pub(crate) body: Option<String>,
    pub(crate) chunked: bool,
    /// Which TCP connection carried the request (numbered from 1 in accept order).
    pub(crate) conn: u64,
}

pub(crate) struct State {
    /// `None` when started with `--no-record`.
    pub(crate) recorder: Option<Mutex<VecDeque<Record>>>,
    /// Connections accepted so far.
    pub(crate) connections: std::sync::atomic::AtomicU64,
    /// Requests received so far (not capped like the recording; `total` in `/__mock/requests`).
    pub(crate) received: std::sync::atomic::AtomicU64,
    /// Media-generation tasks (kept even with `--no-record`).
    pub(crate) tasks: Mutex<Tasks>,
}

impl State {
    pub(crate) fn record(&self, req: &Req<'_>) {
        self.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(rec) = &self.recorder else { return };
        let record = Record {
            method: lossy(req.method),
            path: lossy(req.target),
            version: lossy(req.version),
            headers: req
                .headers
                .iter()
                .map(|(n, v)| (lossy(&req.head[n.clone()]), lossy(&req.head[v.clone()])))
                .collect(),
            body_len: req.body.len(),
            body_sha256: hex(&Sha256::digest(req.body)),
            body: (req.body.len() <= BODY_TEXT_MAX).then(|| lossy(req.body)),
            chunked: req.chunked,
            conn: req.conn,
        };
        let mut q = rec.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= RECORD_CAP {
            q.pop_front();
        }
        q.push_back(record);
    }

    pub(crate) fn dump(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(b"{\"requests\":[");
        if let Some(rec) = &self.recorder {
            let q = rec.lock().unwrap_or_else(|e| e.into_inner());
            for (i, r) in q.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"method\":");
                json_str(out, &r.method);
                out.extend_from_slice(b",\"path\":");
                json_str(out, &r.path);
                out.extend_from_slice(b",\"version\":");
                json_str(out, &r.version);
                out.extend_from_slice(b",\"headers\":[");
                for (j, (n, v)) in r.headers.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    json_str(out, n);
                    out.push(b',');
                    json_str(out, v);
                    out.push(b']');
                }
                let _ = write!(out, "],\"body_len\":{},\"body_sha256\":\"{}\",\"body\":", r.body_len, r.body_sha256);
                match &r.body {
                    Some(b) => json_str(out, b),
                    None => out.extend_from_slice(b"null"),
                }
                let _ = write!(out, ",\"chunked\":{},\"conn\":{}}}", r.chunked, r.conn);
            }
        }
        let _ = write!(out, "],\"total\":{}}}", self.received.load(std::sync::atomic::Ordering::Relaxed));
    }

    pub(crate) fn clear(&self) -> usize {
        match &self.recorder {
            Some(rec) => {
                let mut q = rec.lock().unwrap_or_else(|e| e.into_inner());
                let n = q.len();
                q.clear();
                n
            }
            None => 0,
        }
    }
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Append `s` as a JSON string literal.
pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}
