//! `mock-upstream`: a fast, recording mock of the OpenAI and Anthropic HTTP APIs.
//!
//! Used by the integration tests, the demo and the load tests. It speaks a
//! hand-rolled HTTP/1.1 over tokio (keep-alive, pipelining, Content-Length and
//! chunked request bodies, `Expect: 100-continue`) and never panics on bad input.
//!
//! ```text
//! mock-upstream --listen 127.0.0.1:0 [--threads N] [--no-record]
//! ```
//!
//! After binding it prints exactly one line `listening IP:PORT` to stdout.
//! It exits on SIGTERM / SIGINT.
//!
//! Routes:
//! * `POST /v1/chat/completions` (OpenAI, JSON or SSE with `"stream":true`)
//! * `POST /v1/messages` (Anthropic, JSON or SSE), `POST /v1/messages/count_tokens`
//! * `GET /v1/models`
//! * `GET /__mock/requests` (recorded requests, oldest first), `DELETE /__mock/requests`
//! * Media generation (see the "Media generation" section): flat (EvoLink-like)
//!   `POST /flat/v1/{images,videos,audios}/generations` + `GET /flat/v1/tasks/{id}`;
//!   wrapped (APIMart-like) the same under `/wrapped`; OpenAI
//!   `POST /v1/images/generations`, `POST /v1/audio/speech`, `POST /v1/videos`,
//!   `GET /v1/videos/{id}`, `GET /v1/videos/{id}/content`. Prompt words
//!   `mock-submit-error`, `mock-fail`, `mock-cancel`, `mock-never` pick the outcome.
//! * `GET /__mock/tasks` (`{"tasks":{id:{"polls","style","kind","status"}}}`),
//!   `DELETE /__mock/tasks`
//! * anything else: 404 with an OpenAI-shaped error.
//!
//! Fault injection by request header:
//! * `x-mock-status: NNN` (400..=599): provider-shaped error with that status
//!   (429 also carries `retry-after: 1`).
//! * `x-mock-delay-ms: N`: sleep before writing the response head.
//! * `x-mock-no-tools: 1`: a plain answer even when the request declares tools.
//!
//! Chat requests the real providers would refuse get their 400 here too (unknown OpenAI
//! fields, stray tool-call members, an over-long `user`, tool results that answer nothing,
//! Anthropic's missing `max_tokens`): a translation that would fail in production fails the tests.
//! * `x-mock-event-delay-ms: N`: sleep between SSE events.
//! * `x-mock-fault: garbage|reset|cut-stream|hang`. `cut-stream` on a
//!   non-streaming request writes the head and half the body, then closes.
//! * `x-mock-echo-usage: input,output,cache_read,cache_write`.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest accepted request head (request line + headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest accepted request body.
const MAX_BODY: usize = 256 * 1024 * 1024;
/// Longest accepted chunk-size / trailer line.
const MAX_LINE: usize = 8 * 1024;
/// Number of requests kept by the recorder.
const RECORD_CAP: usize = 1000;
/// Bodies up to this size are kept as text in the recording.
const BODY_TEXT_MAX: usize = 1024 * 1024;
/// Cap for the delay headers (one day).
const MAX_DELAY_MS: u64 = 86_400_000;
/// Per-connection buffers larger than this are released after the request.
const SHRINK_ABOVE: usize = 1024 * 1024;
const INITIAL_BUF: usize = 16 * 1024;

const CONTENT: &str = "Hello from the mock upstream!";
const OPENAI_PIECES: [&str; 5] = ["Hello", " from", " the", " mock", " upstream!"];
const ANTHROPIC_PIECES: [&str; 2] = ["Hello", " from the mock upstream!"];

#[derive(Parser, Debug)]
#[command(name = "mock-upstream", about = "Recording mock of the OpenAI and Anthropic HTTP APIs")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Number of tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Do not record requests (for load tests).
    #[arg(long)]
    no_record: bool,
}

// ---------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------

struct Record {
    method: String,
    path: String,
    version: String,
    headers: Vec<(String, String)>,
    body_len: usize,
    body_sha256: String,
    body: Option<String>,
    chunked: bool,
    /// Which TCP connection carried the request (numbered from 1 in accept order).
    conn: u64,
}

struct State {
    /// `None` when started with `--no-record`.
    recorder: Option<Mutex<VecDeque<Record>>>,
    /// Connections accepted so far.
    connections: std::sync::atomic::AtomicU64,
    /// Media-generation tasks (kept even with `--no-record`).
    tasks: Mutex<Tasks>,
}

impl State {
    fn record(&self, req: &Req<'_>) {
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

    fn dump(&self, out: &mut Vec<u8>) {
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
        out.extend_from_slice(b"]}");
    }

    fn clear(&self) -> usize {
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

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Append `s` as a JSON string literal.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

// ---------------------------------------------------------------------------
// HTTP parsing
// ---------------------------------------------------------------------------

type HeaderRanges = Vec<(Range<usize>, Range<usize>)>;

struct HeadInfo {
    method: Range<usize>,
    target: Range<usize>,
    version: Range<usize>,
    content_length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
    http10: bool,
    expect_continue: bool,
}

/// A fully read request; all slices borrow the connection buffers.
struct Req<'a> {
    head: &'a [u8],
    method: &'a [u8],
    target: &'a [u8],
    version: &'a [u8],
    headers: &'a [(Range<usize>, Range<usize>)],
    body: &'a [u8],
    chunked: bool,
    keep_alive: bool,
    http10: bool,
    conn: u64,
}

impl Req<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.head[v.clone()])
    }

    fn header_u64(&self, name: &str) -> Option<u64> {
        std::str::from_utf8(self.header(name)?).ok()?.trim().parse().ok()
    }

    fn path(&self) -> &[u8] {
        match self.target.iter().position(|&b| b == b'?') {
            Some(i) => &self.target[..i],
            None => self.target,
        }
    }
}

enum HeadError {
    Bad(&'static str),
    NotImplemented(&'static str),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_range(buf: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && matches!(buf[r.start], b' ' | b'\t') {
        r.start += 1;
    }
    while r.end > r.start && matches!(buf[r.end - 1], b' ' | b'\t') {
        r.end -= 1;
    }
    r
}

/// Does the comma separated header value contain `token` (case-insensitive)?
fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parse a request head (`head` ends with the blank line's CRLF).
fn parse_head(head: &[u8], headers: &mut HeaderRanges) -> Result<HeadInfo, HeadError> {
    headers.clear();
    let line_end = find(head, b"\r\n").ok_or(HeadError::Bad("malformed request line"))?;
    let line = &head[..line_end];
    let sp1 = line.iter().position(|&b| b == b' ').ok_or(HeadError::Bad("malformed request line"))?;
    let sp2 = line[sp1 + 1..]
        .iter()
        .position(|&b| b == b' ')
        .map(|p| p + sp1 + 1)
        .ok_or(HeadError::Bad("malformed request line"))?;
    let method = 0..sp1;
    let target = sp1 + 1..sp2;
    let version = sp2 + 1..line_end;
    if method.is_empty()
        || !head[method.clone()].iter().all(|b| b.is_ascii_alphabetic())
        || target.is_empty()
        || head[target.clone()].iter().any(|b| b.is_ascii_whitespace())
    {
        return Err(HeadError::Bad("malformed request line"));
    }
    let http10 = match &head[version.clone()] {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(HeadError::NotImplemented("unsupported HTTP version")),
    };

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut other_te = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;

    let mut pos = line_end + 2;
    loop {
        let rel = find(&head[pos..], b"\r\n").ok_or(HeadError::Bad("malformed header"))?;
        let end = pos + rel;
        if end == pos {
            break;
        }
        let line = &head[pos..end];
        if matches!(line[0], b' ' | b'\t') {
            return Err(HeadError::Bad("obsolete header line folding"));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(HeadError::Bad("header without colon"))?;
        if colon == 0 || line[..colon].iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(HeadError::Bad("invalid header name"));
        }
        let name = pos..pos + colon;
        let value = trim_range(head, pos + colon + 1..end);
        let n = &head[name.clone()];
        let v = &head[value.clone()];
        if n.eq_ignore_ascii_case(b"content-length") {
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Bad("invalid content-length"));
            }
            let len = v.iter().fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0'));
            if content_length.is_some_and(|old| old != len) {
                return Err(HeadError::Bad("conflicting content-length"));
            }
            content_length = Some(len);
        } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
            for t in v.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"identity") {
                    other_te = true;
                }
            }
        } else if n.eq_ignore_ascii_case(b"connection") {
            conn_close |= has_token(v, "close");
            conn_keep_alive |= has_token(v, "keep-alive");
        } else if n.eq_ignore_ascii_case(b"expect") {
            expect_continue |= v.eq_ignore_ascii_case(b"100-continue");
        }
        headers.push((name, value));
        pos = end + 2;
    }
    if other_te {
        return Err(HeadError::NotImplemented("unsupported transfer-encoding"));
    }
    let mut keep_alive = if http10 { conn_keep_alive && !conn_close } else { !conn_close };
    if chunked && content_length.is_some() {
        // RFC 9112 6.3: chunked wins, and the connection must be closed afterwards.
        content_length = None;
        keep_alive = false;
    }
    Ok(HeadInfo { method, target, version, content_length, chunked, keep_alive, http10, expect_continue })
}

enum BodyError {
    Eof,
    Bad,
    TooLarge,
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(INITIAL_BUF);
    }
    stream.read_buf(buf).await
}

/// Read until `buf` holds at least `need` bytes.
async fn fill_to(stream: &mut TcpStream, buf: &mut BytesMut, need: usize) -> Result<(), BodyError> {
    if buf.len() < need {
        buf.reserve(need - buf.len());
    }
    while buf.len() < need {
        match read_more(stream, buf).await {
            Ok(0) | Err(_) => return Err(BodyError::Eof),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Read a CRLF terminated line starting at `pos`; returns the index of its CR.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut, pos: usize) -> Result<usize, BodyError> {
    let mut scanned = pos;
    loop {
        if let Some(i) = find(&buf[scanned..], b"\r\n") {
            return Ok(scanned + i);
        }
        if buf.len() - pos > MAX_LINE {
            return Err(BodyError::Bad);
        }
        scanned = buf.len().saturating_sub(1).max(pos);
        match read_more(stream, buf).await {
            Ok(0) | Err(_) => return Err(BodyError::Eof),
            Ok(_) => {}
        }
    }
}

/// Decode a chunked body that starts at `start` in `buf` into `body`.
/// Returns the offset just past the body (after the trailers).
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    start: usize,
    body: &mut Vec<u8>,
) -> Result<usize, BodyError> {
    let mut pos = start;
    loop {
        let end = read_line(stream, buf, pos).await?;
        let line = &buf[pos..end];
        let size_part = line.split(|&b| b == b';').next().unwrap_or(line).trim_ascii();
        if size_part.is_empty() || size_part.len() > 15 {
            return Err(BodyError::Bad);
        }
        let mut size = 0usize;
        for &c in size_part {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(BodyError::Bad),
            };
            size = size * 16 + usize::from(d);
        }
        pos = end + 2;
        if size == 0 {
            // Trailer section, terminated by an empty line.
            let mut trailers = 0usize;
            loop {
                let end = read_line(stream, buf, pos).await?;
                let empty = end == pos;
                trailers += end - pos + 2;
                pos = end + 2;
                if empty {
                    return Ok(pos);
                }
                if trailers > MAX_HEAD {
                    return Err(BodyError::Bad);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        let need = pos + size + 2;
        fill_to(stream, buf, need).await?;
        if &buf[pos + size..need] != b"\r\n" {
            return Err(BodyError::Bad);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos = need;
    }
}

// ---------------------------------------------------------------------------
// Connection handling
// ---------------------------------------------------------------------------

enum Outcome {
    KeepAlive,
    Close,
    Reset,
    Hang,
}

/// Per-connection reusable buffers.
struct Bufs {
    out: Vec<u8>,
    body: Vec<u8>,
}

async fn serve_conn(mut stream: TcpStream, state: Arc<State>) {
    let conn = state.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(INITIAL_BUF);
    let mut chunked_body: Vec<u8> = Vec::new();
    let mut headers: HeaderRanges = Vec::with_capacity(32);
    let mut bufs = Bufs { out: Vec::with_capacity(4096), body: Vec::with_capacity(2048) };

    loop {
        // Tolerate empty lines before a request line (RFC 9112 2.2).
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        // 1. Request head.
        let mut scanned = 0usize;
        let head_len = loop {
            if let Some(p) = find(&buf[scanned..], b"\r\n\r\n") {
                break scanned + p + 4;
            }
            if buf.len() > MAX_HEAD {
                simple_error(&mut stream, &mut bufs.out, 431, "mock: request head too large").await;
                return;
            }
            scanned = buf.len().saturating_sub(3);
            match read_more(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            while buf.starts_with(b"\r\n") {
                buf.advance(2);
                scanned = 0;
            }
        };
        if head_len > MAX_HEAD {
            simple_error(&mut stream, &mut bufs.out, 431, "mock: request head too large").await;
            return;
        }
        let info = match parse_head(&buf[..head_len], &mut headers) {
            Ok(info) => info,
            Err(HeadError::Bad(msg)) => {
                simple_error(&mut stream, &mut bufs.out, 400, msg).await;
                return;
            }
            Err(HeadError::NotImplemented(msg)) => {
                simple_error(&mut stream, &mut bufs.out, 501, msg).await;
                return;
            }
        };

        // 2. Request body.
        let body_range;
        let total_len;
        if info.chunked {
            if info.expect_continue
                && buf.len() == head_len
                && !info.http10
                && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
            {
                return;
            }
            chunked_body.clear();
            match read_chunked(&mut stream, &mut buf, head_len, &mut chunked_body).await {
                Ok(end) => total_len = end,
                Err(BodyError::Eof) => return,
                Err(BodyError::Bad) => {
                    simple_error(&mut stream, &mut bufs.out, 400, "mock: malformed chunked body").await;
                    return;
                }
                Err(BodyError::TooLarge) => {
                    simple_error(&mut stream, &mut bufs.out, 413, "mock: request body too large").await;
                    return;
                }
            }
            body_range = None;
        } else {
            let n = info.content_length.unwrap_or(0);
            if n > MAX_BODY {
                simple_error(&mut stream, &mut bufs.out, 413, "mock: request body too large").await;
                return;
            }
            let need = head_len + n;
            if info.expect_continue
                && n > 0
                && buf.len() < need
                && !info.http10
                && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
            {
                return;
            }
            if fill_to(&mut stream, &mut buf, need).await.is_err() {
                return;
            }
            total_len = need;
            body_range = Some(head_len..need);
        }

        // 3. Answer.
        let outcome = {
            let head = &buf[..head_len];
            let req = Req {
                head,
                method: &head[info.method.clone()],
                target: &head[info.target.clone()],
                version: &head[info.version.clone()],
                headers: &headers,
                body: match &body_range {
                    Some(r) => &buf[r.clone()],
                    None => &chunked_body,
                },
                chunked: info.chunked,
                keep_alive: info.keep_alive,
                http10: info.http10,
                conn,
            };
            handle(&mut stream, &state, &req, &mut bufs).await
        };
        buf.advance(total_len);

        match outcome {
            Outcome::KeepAlive if info.keep_alive => {}
            Outcome::KeepAlive | Outcome::Close => {
                let _ = stream.shutdown().await;
                return;
            }
            Outcome::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
            Outcome::Hang => {
                // Never answer; keep the socket open until the peer goes away.
                buf.clear();
                loop {
                    if buf.len() > MAX_HEAD {
                        buf.clear();
                    }
                    match read_more(&mut stream, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            }
        }

        // Do not keep huge buffers around on long-lived connections.
        if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
            buf = BytesMut::with_capacity(INITIAL_BUF);
        }
        if chunked_body.capacity() > SHRINK_ABOVE {
            chunked_body = Vec::new();
        }
        if bufs.out.capacity() > SHRINK_ABOVE {
            bufs.out = Vec::with_capacity(4096);
        }
        if bufs.body.capacity() > SHRINK_ABOVE {
            bufs.body = Vec::with_capacity(2048);
        }
    }
}

/// Protocol-level error (before a request could be read); always closes.
async fn simple_error(stream: &mut TcpStream, out: &mut Vec<u8>, status: u16, msg: &str) {
    let mut body = Vec::with_capacity(128);
    body.extend_from_slice(b"{\"error\":{\"message\":");
    json_str(&mut body, msg);
    body.extend_from_slice(b",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}");
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status,
        reason(status),
        body.len()
    );
    out.extend_from_slice(&body);
    if stream.write_all(out).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Unknown",
    }
}

fn write_conn_header(out: &mut Vec<u8>, req: &Req<'_>, close: bool) {
    if close || !req.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
}

/// Write a complete response with Content-Length in one `write_all`.
/// With `cut`, only the head and half of the body are written and the connection closes.
async fn respond(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    req: &Req<'_>,
    status: u16,
    extra_headers: &str,
    body: &[u8],
    cut: bool,
) -> Outcome {
    respond_as(stream, out, req, status, "application/json", extra_headers, body, cut).await
}

/// [`respond`] with an explicit content type.
#[allow(clippy::too_many_arguments)]
async fn respond_as(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    req: &Req<'_>,
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    cut: bool,
) -> Outcome {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n{}",
        status,
        reason(status),
        content_type,
        body.len(),
        extra_headers
    );
    write_conn_header(out, req, cut);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(if cut { &body[..body.len() / 2] } else { body });
    if stream.write_all(out).await.is_err() || cut || !req.keep_alive {
        return Outcome::Close;
    }
    Outcome::KeepAlive
}

/// Write an SSE response: each event is its own chunk, written as soon as it is ready.
async fn respond_sse(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    req: &Req<'_>,
    events: &[String],
    event_delay: Option<Duration>,
    cut: bool,
) -> Outcome {
    let chunked = !req.http10;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n");
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    write_conn_header(out, req, cut || !chunked);
    out.extend_from_slice(b"\r\n");
    if stream.write_all(out).await.is_err() {
        return Outcome::Close;
    }
    let count = if cut { events.len().min(2) } else { events.len() };
    for (i, ev) in events[..count].iter().enumerate() {
        if i > 0 {
            if let Some(d) = event_delay {
                tokio::time::sleep(d).await;
            }
        }
        out.clear();
        if chunked {
            let _ = write!(out, "{:x}\r\n", ev.len());
        }
        out.extend_from_slice(ev.as_bytes());
        if chunked {
            out.extend_from_slice(b"\r\n");
            if !cut && i + 1 == count {
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        if stream.write_all(out).await.is_err() {
            return Outcome::Close;
        }
    }
    if cut || !chunked || !req.keep_alive {
        Outcome::Close
    } else {
        Outcome::KeepAlive
    }
}

// ---------------------------------------------------------------------------
// Routing and provider bodies
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Usage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

const OPENAI_USAGE: Usage = Usage { input: 21, output: 7, cache_read: 5, cache_write: 0 };
const ANTHROPIC_USAGE: Usage = Usage { input: 12, output: 9, cache_read: 4, cache_write: 3 };

fn echo_usage(req: &Req<'_>, default: Usage) -> Usage {
    let parse = || -> Option<Usage> {
        let v = std::str::from_utf8(req.header("x-mock-echo-usage")?).ok()?;
        let mut it = v.split(',').map(|p| p.trim().parse::<u64>());
        let u = Usage {
            input: it.next()?.ok()?,
            output: it.next()?.ok()?,
            cache_read: it.next()?.ok()?,
            cache_write: it.next()?.ok()?,
        };
        it.next().is_none().then_some(u)
    };
    parse().unwrap_or(default)
}

/// The request's `model`, as a JSON literal.
fn model_json(v: &Value) -> String {
    match v.get("model") {
        Some(m) if !m.is_null() => serde_json::to_string(m).unwrap_or_else(|_| "\"mock-model\"".into()),
        _ => "\"mock-model\"".into(),
    }
}

fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool) == Some(true)
}

fn delay_from(req: &Req<'_>, name: &str) -> Option<Duration> {
    req.header_u64(name).filter(|&ms| ms > 0).map(|ms| Duration::from_millis(ms.min(MAX_DELAY_MS)))
}

async fn handle(stream: &mut TcpStream, state: &State, req: &Req<'_>, bufs: &mut Bufs) -> Outcome {
    let path = req.path();
    let method = req.method;

    // Control routes: never recorded, never faulted.
    if path == b"/__mock/requests" {
        return match method {
            b"GET" => {
                state.dump(&mut bufs.body);
                respond(stream, &mut bufs.out, req, 200, "", &bufs.body, false).await
            }
            b"DELETE" => {
                let n = state.clear();
                bufs.body.clear();
                let _ = write!(bufs.body, "{{\"cleared\":{n}}}");
                respond(stream, &mut bufs.out, req, 200, "", &bufs.body, false).await
            }
            _ => not_found(stream, bufs, req).await,
        };
    }
    if path == b"/__mock/tasks" {
        return match method {
            b"GET" => {
                state.dump_tasks(&mut bufs.body);
                respond(stream, &mut bufs.out, req, 200, "", &bufs.body, false).await
            }
            b"DELETE" => {
                let n = state.clear_tasks();
                bufs.body.clear();
                let _ = write!(bufs.body, "{{\"cleared\":{n}}}");
                respond(stream, &mut bufs.out, req, 200, "", &bufs.body, false).await
            }
            _ => not_found(stream, bufs, req).await,
        };
    }

    state.record(req);

    let fault = req.header("x-mock-fault").map(<[u8]>::trim_ascii);
    match fault {
        Some(f) if f.eq_ignore_ascii_case(b"hang") => return Outcome::Hang,
        Some(f) if f.eq_ignore_ascii_case(b"reset") => return Outcome::Reset,
        _ => {}
    }
    if let Some(d) = delay_from(req, "x-mock-delay-ms") {
        tokio::time::sleep(d).await;
    }
    if fault.is_some_and(|f| f.eq_ignore_ascii_case(b"garbage")) {
        let _ = stream.write_all(b"this is not http\r\n\r\n").await;
        return Outcome::Close;
    }
    let cut = fault.is_some_and(|f| f.eq_ignore_ascii_case(b"cut-stream"));
    let anthropic = path == b"/v1/messages" || path.starts_with(b"/v1/messages/");

    if let Some(status) = req.header_u64("x-mock-status").filter(|s| (400..=599).contains(s)) {
        let status = status as u16;
        let msg = format!("mock upstream error {status}");
        bufs.body.clear();
        if anthropic {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 | 529 => "overloaded_error",
                504 => "timeout_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            };
            let _ = write!(bufs.body, "{{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":\"{msg}\"}}}}");
        } else if path.starts_with(b"/wrapped/") {
            let _ = write!(bufs.body, "{{\"code\":{status},\"msg\":\"{msg}\"}}");
        } else if path.starts_with(b"/flat/") {
            let code = match status {
                401 => "unauthorized",
                402 => "insufficient_quota",
                403 => "permission_denied",
                404 => "resource_not_found",
                429 => "quota_exceeded",
                503 => "service_unavailable",
                s if s >= 500 => "service_error",
                _ => "invalid_parameters",
            };
            let _ = write!(bufs.body, "{{\"error\":{{\"code\":\"{code}\",\"message\":\"{msg}\"}}}}");
        } else {
            let (kind, code) = match status {
                401 => ("invalid_request_error", "invalid_api_key"),
                403 => ("invalid_request_error", "permission_denied"),
                404 => ("invalid_request_error", "model_not_found"),
                429 => ("requests", "rate_limit_exceeded"),
                503 => ("server_error", "service_unavailable"),
                s if s >= 500 => ("server_error", "server_error"),
                _ => ("invalid_request_error", "invalid_request"),
            };
            let _ = write!(
                bufs.body,
                "{{\"error\":{{\"message\":\"{msg}\",\"type\":\"{kind}\",\"param\":null,\"code\":\"{code}\"}}}}"
            );
        }
        let extra = if status == 429 { "retry-after: 1\r\n" } else { "" };
        return respond(stream, &mut bufs.out, req, status, extra, &bufs.body, cut).await;
    }

    if let Some(route) = media_route(method, path) {
        return media(stream, state, req, bufs, cut, route).await;
    }

    match (method, path) {
        (b"POST", b"/v1/chat/completions") => openai_chat(stream, req, bufs, cut).await,
        (b"POST", b"/v1/messages") => anthropic_messages(stream, req, bufs, cut).await,
        (b"POST", b"/v1/messages/count_tokens") => {
            if serde_json::from_slice::<Value>(req.body).is_err() {
                return anthropic_invalid_json(stream, req, bufs, cut).await;
            }
            let input = match req.header("x-mock-echo-usage") {
                Some(_) => echo_usage(req, ANTHROPIC_USAGE).input,
                None => 42,
            };
            bufs.body.clear();
            let _ = write!(bufs.body, "{{\"input_tokens\":{input}}}");
            respond(stream, &mut bufs.out, req, 200, "", &bufs.body, cut).await
        }
        (b"GET", b"/v1/models") => {
            const MODELS: &str = concat!(
                "{\"object\":\"list\",\"data\":[",
                "{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"openai\"},",
                "{\"id\":\"gpt-4o\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"openai\"},",
                "{\"id\":\"mock-model\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"mock\"}",
                "]}"
            );
            respond(stream, &mut bufs.out, req, 200, "", MODELS.as_bytes(), cut).await
        }
        _ => not_found(stream, bufs, req).await,
    }
}

async fn not_found(stream: &mut TcpStream, bufs: &mut Bufs, req: &Req<'_>) -> Outcome {
    bufs.body.clear();
    bufs.body.extend_from_slice(b"{\"error\":{\"message\":");
    let msg =
        format!("mock: unknown route {} {}", String::from_utf8_lossy(req.method), String::from_utf8_lossy(req.path()));
    json_str(&mut bufs.body, &msg);
    bufs.body.extend_from_slice(b",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"unknown_url\"}}");
    respond(stream, &mut bufs.out, req, 404, "", &bufs.body, false).await
}

async fn anthropic_invalid_json(stream: &mut TcpStream, req: &Req<'_>, bufs: &mut Bufs, cut: bool) -> Outcome {
    const BODY: &[u8] =
        b"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"mock: invalid JSON\"}}";
    respond(stream, &mut bufs.out, req, 400, "", BODY, cut).await
}

// ---------------------------------------------------------------------------
// What the real providers refuse (so a bad translation fails our tests)
// ---------------------------------------------------------------------------

/// Top-level fields OpenAI's chat completions accepts (its API reference); any other is a 400.
const OPENAI_FIELDS: &[&str] = &[
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "messages",
    "metadata",
    "modalities",
    "model",
    "moderation",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

/// Members OpenAI accepts on an input tool call (a streamed `index` is not one).
const OPENAI_TOOL_CALL_FIELDS: &[&str] = &["id", "type", "function"];

/// Why OpenAI would refuse this chat request, if it would: unknown fields, a `tool` message
/// that answers no earlier tool call, a tool call with stray members, an over-long `user`.
fn openai_refusal(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    if let Some(k) = obj.keys().find(|k| !OPENAI_FIELDS.contains(&k.as_str())) {
        return Some(format!("Unrecognized request argument supplied: {k}"));
    }
    if obj.get("user").and_then(Value::as_str).is_some_and(|u| u.len() > 64) {
        return Some("Invalid 'user': string too long. Expected a string with maximum length 64".into());
    }
    let mut open_calls: Vec<String> = Vec::new();
    for (i, m) in obj.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("assistant") => {
                for (j, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    if let Some(k) = call.as_object()?.keys().find(|k| !OPENAI_TOOL_CALL_FIELDS.contains(&k.as_str())) {
                        return Some(format!("Unrecognized request argument: messages[{i}].tool_calls[{j}].{k}"));
                    }
                    open_calls.push(call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned());
                }
            }
            Some("tool") => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                if !open_calls.iter().any(|c| c == id) {
                    return Some(format!(
                        "messages[{i}]: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'"
                    ));
                }
            }
            _ => open_calls.clear(),
        }
    }
    None
}

/// Why Anthropic would refuse this messages request, if it would: `max_tokens` missing, a
/// `tool_result` that answers no `tool_use` of the turn before it.
fn anthropic_refusal(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    if !obj.get("max_tokens").is_some_and(Value::is_u64) {
        return Some("max_tokens: Field required".into());
    }
    let mut last_tool_uses: Vec<&str> = Vec::new();
    for (i, m) in obj.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let blocks = m.get("content").and_then(Value::as_array);
        let of_type = |t: &'static str| {
            blocks.into_iter().flatten().filter(move |b| b.get("type").and_then(Value::as_str) == Some(t))
        };
        for b in of_type("tool_result") {
            let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or_default();
            if !last_tool_uses.contains(&id) {
                return Some(format!(
                    "messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
        last_tool_uses = of_type("tool_use").filter_map(|b| b.get("id").and_then(Value::as_str)).collect();
    }
    None
}

async fn openai_chat(stream: &mut TcpStream, req: &Req<'_>, bufs: &mut Bufs, cut: bool) -> Outcome {
    let Ok(v) = serde_json::from_slice::<Value>(req.body) else {
        const BODY: &[u8] = b"{\"error\":{\"message\":\"mock: invalid JSON\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}";
        return respond(stream, &mut bufs.out, req, 400, "", BODY, cut).await;
    };
    if let Some(why) = openai_refusal(&v) {
        let body = serde_json::json!({"error": {"message": why, "type": "invalid_request_error", "param": null, "code": null}});
        return respond(stream, &mut bufs.out, req, 400, "", body.to_string().as_bytes(), cut).await;
    }
    let model = model_json(&v);
    let u = echo_usage(req, OPENAI_USAGE);
    let total = u.input.saturating_add(u.output);
    if let Some(turn) = tool_turn(req, &v, false) {
        return openai_tool_turn(stream, req, bufs, cut, &v, &turn, &u).await;
    }

    if !is_true(v.get("stream")) {
        bufs.body.clear();
        let _ = write!(
            bufs.body,
            concat!(
                "{{\"id\":\"chatcmpl-mock123\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":{model},",
                "\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{content}\",\"refusal\":null}},",
                "\"logprobs\":null,\"finish_reason\":\"stop\"}}],",
                "\"usage\":{{\"prompt_tokens\":{pt},\"completion_tokens\":{ct},\"total_tokens\":{tt},",
                "\"prompt_tokens_details\":{{\"cached_tokens\":{cached},\"audio_tokens\":0}},",
                "\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,",
                "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}},",
                "\"system_fingerprint\":\"fp_mock\"}}"
            ),
            model = model,
            content = CONTENT,
            pt = u.input,
            ct = u.output,
            tt = total,
            cached = u.cache_read,
        );
        return respond(stream, &mut bufs.out, req, 200, "", &bufs.body, cut).await;
    }

    let include_usage = is_true(v.pointer("/stream_options/include_usage"));
    let pre = format!(
        "data: {{\"id\":\"chatcmpl-mock123\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":{model},\"system_fingerprint\":\"fp_mock\",\"choices\":["
    );
    let tail = if include_usage { "],\"usage\":null}\n\n" } else { "]}\n\n" };
    let mut events = Vec::with_capacity(OPENAI_PIECES.len() + 4);
    events.push(format!(
        "{pre}{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}{tail}"
    ));
    for piece in OPENAI_PIECES {
        events.push(format!(
            "{pre}{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}},\"logprobs\":null,\"finish_reason\":null}}{tail}"
        ));
    }
    events.push(format!("{pre}{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}{tail}"));
    if include_usage {
        events.push(format!(
            "{pre}],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{}}},\"completion_tokens_details\":{{\"reasoning_tokens\":0}}}}}}\n\n",
            u.input, u.output, total, u.cache_read
        ));
    }
    events.push("data: [DONE]\n\n".to_string());
    let delay = delay_from(req, "x-mock-event-delay-ms");
    respond_sse(stream, &mut bufs.out, req, &events, delay, cut).await
}

async fn anthropic_messages(stream: &mut TcpStream, req: &Req<'_>, bufs: &mut Bufs, cut: bool) -> Outcome {
    let Ok(v) = serde_json::from_slice::<Value>(req.body) else {
        return anthropic_invalid_json(stream, req, bufs, cut).await;
    };
    if let Some(why) = anthropic_refusal(&v) {
        let body = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": why}});
        return respond(stream, &mut bufs.out, req, 400, "", body.to_string().as_bytes(), cut).await;
    }
    let model = model_json(&v);
    let u = echo_usage(req, ANTHROPIC_USAGE);
    if let Some(turn) = tool_turn(req, &v, true) {
        return anthropic_tool_turn(stream, req, bufs, cut, &v, &turn, &u).await;
    }

    if !is_true(v.get("stream")) {
        bufs.body.clear();
        let _ = write!(
            bufs.body,
            concat!(
                "{{\"id\":\"msg_mock123\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model},",
                "\"content\":[{{\"type\":\"text\",\"text\":\"{content}\"}}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,",
                "\"usage\":{{\"input_tokens\":{it},\"cache_creation_input_tokens\":{cw},\"cache_read_input_tokens\":{cr},\"output_tokens\":{ot}}}}}"
            ),
            model = model,
            content = CONTENT,
            it = u.input,
            cw = u.cache_write,
            cr = u.cache_read,
            ot = u.output,
        );
        return respond(stream, &mut bufs.out, req, 200, "", &bufs.body, cut).await;
    }

    let mut events = Vec::with_capacity(ANTHROPIC_PIECES.len() + 6);
    events.push(format!(
        concat!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_mock123\",\"type\":\"message\",",
            "\"role\":\"assistant\",\"model\":{model},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,",
            "\"usage\":{{\"input_tokens\":{it},\"cache_creation_input_tokens\":{cw},\"cache_read_input_tokens\":{cr},\"output_tokens\":1}}}}}}\n\n"
        ),
        model = model,
        it = u.input,
        cw = u.cache_write,
        cr = u.cache_read,
    ));
    events.push(
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
            .to_string(),
    );
    events.push("event: ping\ndata: {\"type\":\"ping\"}\n\n".to_string());
    for piece in ANTHROPIC_PIECES {
        events.push(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{piece}\"}}}}\n\n"
        ));
    }
    events.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".to_string());
    events.push(format!(
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
        u.output
    ));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string());
    let delay = delay_from(req, "x-mock-event-delay-ms");
    respond_sse(stream, &mut bufs.out, req, &events, delay, cut).await
}

// ---------------------------------------------------------------------------
// Tool-calling turns (for tool round trips through the gateway)
// ---------------------------------------------------------------------------

/// What a tool-using conversation asks of the model next.
enum ToolTurn {
    /// Call the first declared tool (`x-mock-parallel-tools` asks for two calls).
    Call { name: String },
    /// The last message carries a tool result: answer with its text.
    Answer { result: String },
}

fn tool_turn(req: &Req<'_>, v: &Value, anthropic: bool) -> Option<ToolTurn> {
    // Agents (Claude Code) always declare tools: this asks for a plain answer anyway.
    if req.header("x-mock-no-tools").is_some() {
        return None;
    }
    let last = v.get("messages")?.as_array()?.last()?;
    if anthropic {
        if let Some(blocks) = last.get("content").and_then(Value::as_array) {
            for b in blocks {
                if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                    let result = match b.get("content") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(parts)) => {
                            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect()
                        }
                        _ => String::new(),
                    };
                    return Some(ToolTurn::Answer { result });
                }
            }
        }
    } else if last.get("role").and_then(Value::as_str) == Some("tool") {
        let result = match last.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
            _ => String::new(),
        };
        return Some(ToolTurn::Answer { result });
    }
    let tool = v.get("tools")?.as_array()?.first()?;
    let name = if anthropic { tool.get("name") } else { tool.pointer("/function/name") };
    Some(ToolTurn::Call { name: name?.as_str()?.to_string() })
}

const TOOL_ARGS: [&str; 2] = [r#"{"location":"Paris","unit":"c"}"#, r#"{"location":"Tokyo","unit":"c"}"#];

fn tool_calls_wanted(req: &Req<'_>) -> usize {
    if req.header("x-mock-parallel-tools").is_some() {
        2
    } else {
        1
    }
}

async fn openai_tool_turn(
    stream: &mut TcpStream,
    req: &Req<'_>,
    bufs: &mut Bufs,
    cut: bool,
    v: &Value,
    turn: &ToolTurn,
    u: &Usage,
) -> Outcome {
    let model = v.get("model").cloned().unwrap_or(Value::Null);
    let usage = serde_json::json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output, "prompt_tokens_details": {"cached_tokens": u.cache_read}});
    let n = tool_calls_wanted(req);
    let (content, calls, finish) = match turn {
        ToolTurn::Answer { result } => (Some(format!("The tool said: {result}")), vec![], "stop"),
        ToolTurn::Call { name } => (
            None,
            (0..n).map(|i| (format!("call_mock_{i}"), name.clone(), TOOL_ARGS[i])).collect::<Vec<_>>(),
            "tool_calls",
        ),
    };
    if !is_true(v.get("stream")) {
        let tool_calls: Vec<Value> = calls.iter().map(|(id, name, args)| serde_json::json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})).collect();
        let mut message = serde_json::json!({"role": "assistant", "content": content, "refusal": null});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        let body = serde_json::json!({"id": "chatcmpl-mocktool", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}], "usage": usage});
        let body = body.to_string();
        return respond(stream, &mut bufs.out, req, 200, "", body.as_bytes(), cut).await;
    }
    let include_usage = is_true(v.pointer("/stream_options/include_usage"));
    let chunk = |delta: Value, finish: Value| {
        let mut c = serde_json::json!({"id": "chatcmpl-mocktool", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(serde_json::json!({"role": "assistant", "content": null}), Value::Null)];
    if let Some(text) = &content {
        for piece in text.split_inclusive(' ') {
            events.push(chunk(serde_json::json!({"content": piece}), Value::Null));
        }
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        events.push(chunk(serde_json::json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
        let (a, b) = args.split_at(args.len() / 2);
        for part in [a, b] {
            events.push(chunk(
                serde_json::json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                Value::Null,
            ));
        }
    }
    events.push(chunk(serde_json::json!({}), Value::from(finish)));
    if include_usage {
        let c = serde_json::json!({"id": "chatcmpl-mocktool", "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    respond_sse(stream, &mut bufs.out, req, &events, delay_from(req, "x-mock-event-delay-ms"), cut).await
}

async fn anthropic_tool_turn(
    stream: &mut TcpStream,
    req: &Req<'_>,
    bufs: &mut Bufs,
    cut: bool,
    v: &Value,
    turn: &ToolTurn,
    u: &Usage,
) -> Outcome {
    let model = v.get("model").cloned().unwrap_or(Value::Null);
    let n = tool_calls_wanted(req);
    let (blocks, stop) = match turn {
        ToolTurn::Answer { result } => {
            (vec![serde_json::json!({"type": "text", "text": format!("The tool said: {result}")})], "end_turn")
        }
        ToolTurn::Call { name } => (
            std::iter::once(serde_json::json!({"type": "text", "text": "Let me check."}))
                .chain((0..n).map(|i| {
                    serde_json::json!({"type": "tool_use", "id": format!("toolu_mock_{i}"), "name": name,
                    "input": serde_json::from_str::<Value>(TOOL_ARGS[i]).unwrap_or(Value::Null)})
                }))
                .collect::<Vec<_>>(),
            "tool_use",
        ),
    };
    let usage = serde_json::json!({"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cache_read, "output_tokens": u.output});
    if !is_true(v.get("stream")) {
        let body = serde_json::json!({"id": "msg_mocktool", "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": stop, "stop_sequence": null, "usage": usage});
        let body = body.to_string();
        return respond(stream, &mut bufs.out, req, 200, "", body.as_bytes(), cut).await;
    }
    let ev = |t: &str, data: Value| format!("event: {t}\ndata: {data}\n\n");
    let mut events = vec![ev(
        "message_start",
        serde_json::json!({"type": "message_start", "message": {"id": "msg_mocktool", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cache_read, "output_tokens": 1}}}),
    )];
    for (i, b) in blocks.iter().enumerate() {
        if b["type"] == "text" {
            events.push(ev("content_block_start", serde_json::json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})));
            events.push(ev("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": b["text"]}})));
        } else {
            events.push(ev(
                "content_block_start",
                serde_json::json!({"type": "content_block_start", "index": i,
                "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}),
            ));
            let args = b["input"].to_string();
            let (a, c) = args.split_at(args.len() / 2);
            for part in [a, c] {
                events.push(ev("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}})));
            }
        }
        events.push(ev("content_block_stop", serde_json::json!({"type": "content_block_stop", "index": i})));
    }
    events.push(ev("message_delta", serde_json::json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": u.output}})));
    events.push(ev("message_stop", serde_json::json!({"type": "message_stop"})));
    respond_sse(stream, &mut bufs.out, req, &events, delay_from(req, "x-mock-event-delay-ms"), cut).await
}

// ---------------------------------------------------------------------------
// Media generation (images, video, audio) in three upstream styles
// ---------------------------------------------------------------------------
//
// * flat (EvoLink-like) under `/flat/v1/...`, wrapped (APIMart-like) under
//   `/wrapped/v1/...`: async task submit + `GET .../v1/tasks/{id}` polling.
// * openai at the root: synchronous `POST /v1/images/generations` and
//   `POST /v1/audio/speech`, video jobs via `POST /v1/videos`,
//   `GET /v1/videos/{id}` and `GET /v1/videos/{id}/content`.
//
// Behaviour is chosen by words in the submitted `prompt` (`input` for speech):
// `mock-submit-error` (submit answers 400), `mock-fail` (task fails),
// `mock-cancel` (wrapped only: task ends cancelled), `mock-never` (task never
// finishes). Otherwise a task completes on its 3rd poll.

/// Tasks kept in memory; the oldest are forgotten beyond this.
const TASK_CAP: usize = 100_000;
/// Most results a task produces (`n` is clamped to 1..=this).
const MAX_N: u64 = 10;
const CDN: &str = "https://cdn.mock.invalid";
/// A valid 1x1 PNG, base64 encoded.
const PNG_1X1_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Flat,
    Wrapped,
    OpenAi,
}

impl Style {
    fn name(self) -> &'static str {
        match self {
            Style::Flat => "flat",
            Style::Wrapped => "wrapped",
            Style::OpenAi => "openai",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Video,
    Audio,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Video => "video",
            Kind::Audio => "audio",
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Kind::Image => "png",
            Kind::Video => "mp4",
            Kind::Audio => "mp3",
        }
    }
}

/// How a task ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Complete,
    Fail,
    Cancel,
    Never,
}

/// Where a task is after its polls so far.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not polled yet.
    Pending,
    /// First poll.
    Early,
    /// Second poll (and every later one for `mock-never`).
    Late,
    Completed,
    Failed,
    Cancelled,
}

struct Task {
    style: Style,
    kind: Kind,
    fate: Fate,
    model: Value,
    n: u64,
    created: u64,
    polls: u64,
    /// Unix time the task reached its terminal state (set by the poll that saw it).
    done_at: Option<u64>,
    /// OpenAI video jobs only.
    seconds: String,
    size: String,
}

impl Task {
    fn phase(&self) -> Phase {
        match self.polls {
            0 => Phase::Pending,
            1 => Phase::Early,
            2 => Phase::Late,
            _ => match self.fate {
                Fate::Complete => Phase::Completed,
                Fate::Fail => Phase::Failed,
                Fate::Cancel => Phase::Cancelled,
                Fate::Never => Phase::Late,
            },
        }
    }

    fn terminal(&self) -> bool {
        matches!(self.phase(), Phase::Completed | Phase::Failed | Phase::Cancelled)
    }

    /// Status word and progress in this task's style.
    fn status(&self) -> (&'static str, u64) {
        match (self.style, self.phase()) {
            (Style::OpenAi, Phase::Pending | Phase::Early) => ("queued", 0),
            (Style::OpenAi, Phase::Late) => ("in_progress", 50),
            (_, Phase::Pending) => ("pending", 0),
            (_, Phase::Early) => ("processing", 30),
            (_, Phase::Late) => ("processing", 70),
            (_, Phase::Completed) => ("completed", 100),
            (_, Phase::Failed) => ("failed", 0),
            (_, Phase::Cancelled) => ("cancelled", 0),
        }
    }

    fn urls(&self, id: &str) -> Vec<String> {
        (0..self.n).map(|i| format!("{CDN}/{id}/{i}.{}", self.kind.ext())).collect()
    }
}

#[derive(Default)]
struct Tasks {
    map: HashMap<String, Task>,
    /// Ids in submission order (for eviction and the dump).
    order: VecDeque<String>,
}

impl State {
    fn add_task(&self, id: String, task: Task) {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while t.order.len() >= TASK_CAP {
            if let Some(old) = t.order.pop_front() {
                t.map.remove(&old);
            }
        }
        t.order.push_back(id.clone());
        t.map.insert(id, task);
    }

    /// Count a poll of `id` (if it exists in `style`) and render its status body.
    fn poll_task(&self, style: Style, id: &str) -> Option<Value> {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let task = t.map.get_mut(id).filter(|task| task.style == style)?;
        task.polls += 1;
        if task.terminal() && task.done_at.is_none() {
            task.done_at = Some(unix_now());
        }
        Some(match style {
            Style::Flat => flat_task_json(id, task),
            Style::Wrapped => wrapped_task_json(id, task),
            Style::OpenAi => openai_video_json(id, task),
        })
    }

    /// Is the OpenAI video job `id` completed? `None` when unknown.
    fn video_done(&self, id: &str) -> Option<bool> {
        let t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let task = t.map.get(id).filter(|task| task.style == Style::OpenAi)?;
        Some(task.phase() == Phase::Completed)
    }

    fn dump_tasks(&self, out: &mut Vec<u8>) {
        let t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        out.clear();
        out.extend_from_slice(b"{\"tasks\":{");
        let mut first = true;
        for id in &t.order {
            let Some(task) = t.map.get(id) else { continue };
            if !first {
                out.push(b',');
            }
            first = false;
            json_str(out, id);
            let _ = write!(
                out,
                ":{{\"polls\":{},\"style\":\"{}\",\"kind\":\"{}\",\"status\":\"{}\"}}",
                task.polls,
                task.style.name(),
                task.kind.name(),
                task.status().0
            );
        }
        out.extend_from_slice(b"}}");
    }

    fn clear_tasks(&self) -> usize {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.map.len();
        t.map.clear();
        t.order.clear();
        n
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `len` random characters from `alphabet`.
fn random_chars(len: usize, alphabet: &[u8]) -> String {
    static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut bytes = vec![0u8; len];
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        let mut x = FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed) ^ nanos;
        for b in &mut bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    bytes.iter().map(|b| alphabet[usize::from(*b) % alphabet.len()] as char).collect()
}

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_HEX: &[u8] = b"0123456789abcdef";

enum MediaRoute<'a> {
    Submit(Style, Kind),
    Poll(Style, &'a str),
    OpenAiImage,
    OpenAiSpeech,
    OpenAiVideoSubmit,
    OpenAiVideoContent(&'a str),
}

/// A single, non-empty path segment.
fn segment(s: &str) -> Option<&str> {
    (!s.is_empty() && !s.contains('/')).then_some(s)
}

fn media_route<'a>(method: &[u8], path: &'a [u8]) -> Option<MediaRoute<'a>> {
    let path = std::str::from_utf8(path).ok()?;
    let (style, rest) = if let Some(r) = path.strip_prefix("/flat") {
        (Style::Flat, r)
    } else if let Some(r) = path.strip_prefix("/wrapped") {
        (Style::Wrapped, r)
    } else {
        (Style::OpenAi, path)
    };
    let kind = match rest {
        "/v1/images/generations" => Some(Kind::Image),
        "/v1/videos/generations" => Some(Kind::Video),
        "/v1/audios/generations" => Some(Kind::Audio),
        _ => None,
    };
    match (style, method) {
        (Style::Flat | Style::Wrapped, b"POST") => kind.map(|k| MediaRoute::Submit(style, k)),
        (Style::Flat | Style::Wrapped, b"GET") => {
            segment(rest.strip_prefix("/v1/tasks/")?).map(|id| MediaRoute::Poll(style, id))
        }
        (Style::OpenAi, b"POST") => match rest {
            "/v1/images/generations" => Some(MediaRoute::OpenAiImage),
            "/v1/audio/speech" => Some(MediaRoute::OpenAiSpeech),
            "/v1/videos" => Some(MediaRoute::OpenAiVideoSubmit),
            _ => None,
        },
        (Style::OpenAi, b"GET") => {
            let tail = rest.strip_prefix("/v1/videos/")?;
            match tail.strip_suffix("/content") {
                Some(id) => segment(id).map(MediaRoute::OpenAiVideoContent),
                None => segment(tail).map(|id| MediaRoute::Poll(Style::OpenAi, id)),
            }
        }
        _ => None,
    }
}

/// The submitted fields: a JSON object, or the text fields of a multipart form.
fn submit_fields(req: &Req<'_>) -> Option<Value> {
    let ct = req.header("content-type").map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    if ct.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
        return multipart_fields(&ct, req.body);
    }
    match serde_json::from_slice::<Value>(req.body).ok()? {
        v @ Value::Object(_) => Some(v),
        _ => None,
    }
}

/// Text fields of a `multipart/form-data` body (file parts are skipped).
fn multipart_fields(content_type: &str, body: &[u8]) -> Option<Value> {
    let boundary = content_type.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })?;
    let delim = format!("--{boundary}");
    let mut fields = serde_json::Map::new();
    let mut rest = body;
    let start = find(rest, delim.as_bytes())?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let after = &rest[head_end + 4..];
        let next = find(after, format!("\r\n{delim}").as_bytes())?;
        let value = &after[..next];
        rest = &after[next + 2 + delim.len()..];
        let disposition =
            head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:")).unwrap_or("");
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), None) = (param("name"), param("filename")) {
            fields.insert(name, Value::String(String::from_utf8_lossy(value).into_owned()));
        }
    }
    Some(Value::Object(fields))
}

fn str_field<'v>(v: &'v Value, name: &str) -> &'v str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// `n` as a number or numeric string, clamped to 1..=MAX_N (default 1).
fn n_field(v: &Value) -> u64 {
    let n = match v.get("n") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    n.unwrap_or(1).clamp(1, MAX_N)
}

/// A field as a string (numbers are stringified), or `default`.
fn string_field(v: &Value, name: &str, default: &str) -> String {
    match v.get(name) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => default.to_string(),
    }
}

/// `(submit error?, fate)` chosen by the words in the prompt.
fn prompt_fate(prompt: &str, style: Style) -> (bool, Fate) {
    let fate = if prompt.contains("mock-fail") {
        Fate::Fail
    } else if style == Style::Wrapped && prompt.contains("mock-cancel") {
        Fate::Cancel
    } else if prompt.contains("mock-never") {
        Fate::Never
    } else {
        Fate::Complete
    };
    (prompt.contains("mock-submit-error"), fate)
}

fn flat_error(code: &str, message: &str) -> Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

fn wrapped_error(code: u16, msg: &str) -> Value {
    serde_json::json!({"code": code, "msg": msg})
}

fn openai_error(message: &str, param: Option<&str>, code: &str) -> Value {
    serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
}

fn flat_task_json(id: &str, t: &Task) -> Value {
    let (status, progress) = t.status();
    let mut v = serde_json::json!({
        "id": id,
        "object": format!("{}.generation.task", t.kind.name()),
        "created": t.created,
        "model": t.model,
        "status": status,
        "progress": progress,
        "type": t.kind.name(),
        "task_info": {"can_cancel": false},
    });
    match t.phase() {
        Phase::Completed => v["results"] = serde_json::json!(t.urls(id)),
        Phase::Failed => {
            v["error"] = serde_json::json!({"code": "content_policy_violation", "message": "mock: prompt rejected"});
        }
        _ => {}
    }
    v
}

fn wrapped_task_json(id: &str, t: &Task) -> Value {
    let (status, progress) = t.status();
    let mut d = serde_json::json!({
        "id": id,
        "status": status,
        "progress": progress,
        "created": t.created,
        "estimated_time": 60,
    });
    if let Some(done) = t.done_at {
        d["completed"] = done.into();
        d["actual_time"] = done.saturating_sub(t.created).into();
    }
    let expires_at = t.done_at.unwrap_or(t.created) + 86_400;
    match t.phase() {
        Phase::Completed => {
            let urls = t.urls(id);
            d["result"] = match t.kind {
                Kind::Image => {
                    serde_json::json!({"images": [{"url": urls, "expires_at": expires_at}]})
                }
                Kind::Video => serde_json::json!({
                    "videos": urls.iter().map(|u| serde_json::json!({"url": u, "expires_at": expires_at})).collect::<Vec<_>>()
                }),
                Kind::Audio => serde_json::json!({
                    "audios": urls.iter().map(|u| serde_json::json!({"url": u})).collect::<Vec<_>>()
                }),
            };
        }
        Phase::Failed => {
            d["error"] = serde_json::json!({"code": "content_policy_violation", "message": "mock: prompt rejected"});
        }
        Phase::Cancelled => d["error"] = serde_json::json!({"code": "cancelled", "message": "mock: cancelled"}),
        _ => {}
    }
    serde_json::json!({"code": 200, "data": d})
}

fn openai_video_json(id: &str, t: &Task) -> Value {
    let (status, progress) = t.status();
    let mut v = serde_json::json!({
        "id": id,
        "object": "video",
        "model": t.model,
        "status": status,
        "progress": progress,
        "created_at": t.created,
        "seconds": t.seconds,
        "size": t.size,
    });
    match (t.phase(), t.done_at) {
        (Phase::Completed, Some(done)) => {
            v["completed_at"] = done.into();
            v["expires_at"] = (done + 86_400).into();
        }
        (Phase::Failed, _) => {
            v["error"] = serde_json::json!({"code": "moderation_blocked", "message": "mock: blocked"});
        }
        _ => {}
    }
    v
}

/// Fake MP3: an ID3v2 tag followed by silent MPEG-1 Layer III frames.
fn fake_mp3() -> Vec<u8> {
    let mut b = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    for _ in 0..2 {
        // 128 kbit/s, 44.1 kHz, mono: 417-byte frames.
        b.extend_from_slice(&[0xFF, 0xFB, 0x90, 0xC4]);
        b.resize(b.len() + 413, 0);
    }
    b
}

/// Fake MP4: an `ftyp` box followed by an `mdat` box of zeros.
fn fake_mp4() -> Vec<u8> {
    let mut b = Vec::with_capacity(1048);
    b.extend_from_slice(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom");
    b.extend_from_slice(&1032u32.to_be_bytes());
    b.extend_from_slice(b"mdat");
    b.resize(b.len() + 1024, 0);
    b
}

async fn respond_json(
    stream: &mut TcpStream,
    req: &Req<'_>,
    bufs: &mut Bufs,
    status: u16,
    v: &Value,
    cut: bool,
) -> Outcome {
    bufs.body.clear();
    if serde_json::to_writer(&mut bufs.body, v).is_err() {
        bufs.body.clear();
        bufs.body.extend_from_slice(b"{}");
    }
    respond(stream, &mut bufs.out, req, status, "", &bufs.body, cut).await
}

async fn media(
    stream: &mut TcpStream,
    state: &State,
    req: &Req<'_>,
    bufs: &mut Bufs,
    cut: bool,
    route: MediaRoute<'_>,
) -> Outcome {
    match route {
        MediaRoute::Poll(style, id) => {
            let (status, v) = match state.poll_task(style, id) {
                Some(v) => (200, v),
                None => (
                    404,
                    match style {
                        Style::Flat => flat_error("task_not_found", "mock: no such task"),
                        Style::Wrapped => wrapped_error(404, "task not found"),
                        Style::OpenAi => openai_error("mock: no such video", None, "video_not_found"),
                    },
                ),
            };
            respond_json(stream, req, bufs, status, &v, cut).await
        }
        MediaRoute::Submit(style, kind) => {
            let Some(v) = submit_fields(req) else {
                let err = match style {
                    Style::Wrapped => wrapped_error(400, "mock: invalid JSON"),
                    _ => flat_error("invalid_parameters", "mock: invalid JSON"),
                };
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            };
            let (submit_error, fate) = prompt_fate(str_field(&v, "prompt"), style);
            if submit_error {
                let err = match style {
                    Style::Wrapped => wrapped_error(400, "mock: prompt rejected"),
                    _ => flat_error("content_policy_violation", "mock: prompt rejected"),
                };
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            }
            let now = unix_now();
            let model = v.get("model").filter(|m| !m.is_null()).cloned().unwrap_or_else(|| "mock-model".into());
            let id = match style {
                Style::Flat => format!("task-unified-{now}-{}", random_chars(8, LOWER_ALNUM)),
                _ => format!("task_01{}", random_chars(24, UPPER_ALNUM)),
            };
            let body = match style {
                Style::Flat => serde_json::json!({
                    "created": now,
                    "id": id,
                    "model": model,
                    "object": format!("{}.generation.task", kind.name()),
                    "progress": 0,
                    "status": "pending",
                    "task_info": {"can_cancel": true, "estimated_time": 100},
                    "type": kind.name(),
                    "usage": {"billing_rule": "per_call", "credits_reserved": 2.5, "user_group": "default"},
                }),
                _ => {
                    let m = model.as_str().unwrap_or("").to_ascii_lowercase();
                    if m.contains("sora") || m.contains("veo") {
                        serde_json::json!({"code": 200, "data": {"id": id, "status": "pending", "created": now}})
                    } else {
                        serde_json::json!({"code": 200, "data": [{"status": "submitted", "task_id": id}]})
                    }
                }
            };
            let task = Task {
                style,
                kind,
                fate,
                model,
                n: n_field(&v),
                created: now,
                polls: 0,
                done_at: None,
                seconds: String::new(),
                size: String::new(),
            };
            state.add_task(id, task);
            respond_json(stream, req, bufs, 200, &body, cut).await
        }
        MediaRoute::OpenAiVideoSubmit => {
            let Some(v) = submit_fields(req) else {
                let err = openai_error("mock: invalid JSON", None, "invalid_request");
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            };
            let (submit_error, fate) = prompt_fate(str_field(&v, "prompt"), Style::OpenAi);
            if submit_error {
                let err = openai_error("mock: prompt rejected", Some("prompt"), "content_policy_violation");
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            }
            let id = format!("video_{}", random_chars(32, LOWER_HEX));
            let model = v.get("model").filter(|m| !m.is_null()).cloned().unwrap_or_else(|| "sora-2".into());
            let task = Task {
                style: Style::OpenAi,
                kind: Kind::Video,
                fate,
                model,
                n: 1,
                created: unix_now(),
                polls: 0,
                done_at: None,
                seconds: string_field(&v, "seconds", "4"),
                size: string_field(&v, "size", "720x1280"),
            };
            let body = openai_video_json(&id, &task);
            state.add_task(id, task);
            respond_json(stream, req, bufs, 200, &body, cut).await
        }
        MediaRoute::OpenAiVideoContent(id) => match state.video_done(id) {
            None => {
                respond_json(stream, req, bufs, 404, &openai_error("mock: no such video", None, "video_not_found"), cut)
                    .await
            }
            Some(false) => {
                let err = openai_error("mock: video is not ready", None, "video_not_ready");
                respond_json(stream, req, bufs, 400, &err, cut).await
            }
            Some(true) => respond_as(stream, &mut bufs.out, req, 200, "video/mp4", "", &fake_mp4(), cut).await,
        },
        MediaRoute::OpenAiImage | MediaRoute::OpenAiSpeech => {
            let speech = matches!(route, MediaRoute::OpenAiSpeech);
            let Some(v) = submit_fields(req) else {
                let err = openai_error("mock: invalid JSON", None, "invalid_request");
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            };
            let field = if speech { "input" } else { "prompt" };
            let (submit_error, fate) = prompt_fate(str_field(&v, field), Style::OpenAi);
            if submit_error || fate == Fate::Fail {
                let err = openai_error("mock: prompt rejected", Some(field), "content_policy_violation");
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            }
            if speech {
                return respond_as(stream, &mut bufs.out, req, 200, "audio/mpeg", "", &fake_mp3(), cut).await;
            }
            let url = str_field(&v, "response_format") == "url";
            let data: Vec<Value> = (0..n_field(&v))
                .map(|i| {
                    if url {
                        serde_json::json!({"url": format!("{CDN}/img/{i}.png")})
                    } else {
                        serde_json::json!({"b64_json": PNG_1X1_B64})
                    }
                })
                .collect();
            let body = serde_json::json!({
                "created": unix_now(),
                "data": data,
                "usage": {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
                          "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}},
            });
            respond_json(stream, req, bufs, 200, &body, cut).await
        }
    }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

async fn run(args: Args) -> Result<(), String> {
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| format!("bind {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening {addr}");
        let _ = out.flush();
    }
    let state = Arc::new(State {
        recorder: (!args.no_record).then(|| Mutex::new(VecDeque::with_capacity(RECORD_CAP))),
        connections: std::sync::atomic::AtomicU64::new(0),
        tasks: Mutex::new(Tasks::default()),
    });

    let accept_loop = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_conn(stream, Arc::clone(&state)));
                }
                Err(e) => {
                    // e.g. EMFILE: back off briefly instead of spinning.
                    eprintln!("mock-upstream: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };

    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("signal: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("signal: {e}"))?;
        tokio::select! {
            _ = accept_loop => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = accept_loop => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-upstream: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args));
    // Open connections (including hung ones) are dropped, which closes them.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}
