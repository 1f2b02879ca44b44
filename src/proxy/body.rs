//! The only place that does request-body IO: read the whole body before the peer is chosen
//! (the model lives in it), then hand it to the upstream.
//!
//! Pingora 0.9.1 runs no body hook before `upstream_peer`, and a body consumed in `request_filter`
//! is never sent upstream unless its retry buffer (capped at 64 KiB, `BODY_BUF_LIMIT`, not
//! exported) replays it. So: read the body ourselves, and switch retry buffering on only once the
//! bytes still to come fit in 64 KiB. Pingora then replays that never-truncated tail through
//! `request_body_filter(Some(tail), end_of_stream = true)` exactly once per upstream attempt, and
//! `replay` swaps the whole buffered (or rewritten) body in its place: one `Bytes` clone, no copy.
//! The caller-side cost is one copy of the body (socket chunks into one buffer), none when it
//! arrives in one chunk.
//!
//! Limit of the trick: without a Content-Length the tail cannot be aimed at, so a body over
//! 64 KiB without one (chunked HTTP/1.1, h2 without `content-length`) is answered 411, never left
//! hanging. See `../shared/PINGORA.md` §1.4; re-run the body-size tests on every pingora bump.
//! Imports: `error`, `content_encoding`, Pingora's session. Not `dialect`, `ledger` or `metrics`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use crate::content_encoding::{self, Codings};
use crate::error::GatewayError;

/// Mirrors pingora-core's private `BODY_BUF_LIMIT`.
pub const RETRY_BUF_LIMIT: usize = 64 * 1024;

/// Why a body could not be read.
pub enum BodyError {
    /// Answer the caller with this error.
    Reject(GatewayError),
    /// The caller's connection failed (timeout, reset): nothing to answer.
    Io(Box<pingora::Error>),
}

/// Declared Content-Length, if one valid value was sent.
pub fn declared_length(session: &Session) -> Option<usize> {
    let v = session.req_header().headers.get(http::header::CONTENT_LENGTH)?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

/// Reads the whole request body, at most `max` bytes. A caller that sends nothing for `idle` gets
/// 408: Pingora's read timeout (`set_read_timeout`) covers HTTP/1, and this function's own covers
/// h2, whose body reads Pingora leaves without any (an h2 stream whose body never ended was held
/// open for good).
pub async fn read_full_body(session: &mut Session, max: usize, idle: Duration) -> Result<Bytes, BodyError> {
    let declared = declared_length(session);
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::Reject(GatewayError::BodyTooLarge(max)));
    }
    // The body is read before any upstream exists, so the gateway answers `100 Continue` itself
    // (otherwise curl-like clients stall for a second); `Expect` is removed from the upstream request.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session.write_continue_response().await.map_err(BodyError::Io)?;
    }
    let mut buf = Gather { first: None, rest: BytesMut::new(), capacity: declared.unwrap_or(8 * 1024).min(max) };
    // Bytes read with retry buffering on: what Pingora's retry buffer holds, unless it overflowed.
    let mut tail = 0;
    loop {
        let remaining_fits = match declared {
            Some(n) => n.saturating_sub(buf.len()) <= RETRY_BUF_LIMIT,
            None => true,
        };
        if remaining_fits {
            session.enable_retry_buffering();
        }
        let read = if session.is_http2() {
            match tokio::time::timeout(idle, session.read_request_body()).await {
                Ok(read) => read,
                Err(_) => return Err(BodyError::Reject(GatewayError::BodyTimeout)),
            }
        } else {
            session.read_request_body().await
        };
        let read = read.map_err(|e| {
            // The connection's framing is lost: what follows on it cannot be trusted to be the
            // next request (RFC 9112 §9.3.2, a front proxy could desync), so it is closed.
            session.set_keepalive(None);
            unreadable(&e)
        })?;
        match read {
            Some(chunk) => {
                if buf.len() + chunk.len() > max {
                    return Err(BodyError::Reject(GatewayError::BodyTooLarge(max)));
                }
                if remaining_fits {
                    tail += chunk.len();
                }
                buf.push(chunk);
            }
            None => break,
        }
    }
    // Pingora replays its retry buffer unless it is empty or truncated. Asked without
    // `get_retry_buffer`, which answers with a copy of the buffer (up to 64 KiB per request).
    if buf.len() > 0 && (tail == 0 || session.retry_buffer_truncated()) {
        // Pingora would replay nothing and the upstream would wait for a body forever.
        return Err(BodyError::Reject(GatewayError::LengthRequired));
    }
    Ok(buf.finish())
}

/// A body's chunks in one buffer. Pingora hands each chunk out as its own copy, so a body that
/// arrives in one chunk (a short chat, read with its header) is kept as that chunk: no second
/// copy, no second allocation. The buffer is made at the second chunk, sized for the whole body.
struct Gather {
    first: Option<Bytes>,
    rest: BytesMut,
    /// The expected size (Content-Length, capped).
    capacity: usize,
}

impl Gather {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    fn push(&mut self, chunk: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
            return;
        }
        if let Some(first) = self.first.take() {
            self.rest.reserve(self.capacity.max(first.len() + chunk.len()));
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&chunk);
    }

    fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.freeze())
    }
}

/// A body that could not be read: the caller's doing either way, so answered in its dialect. A
/// caller that went quiet (`server.client_read_timeout_ms`) gets 408; anything else is its framing
/// (a chunk size that is not hex or overflows, a body shorter than its Content-Length before the
/// caller half-closed): a 400. Pingora's error would reach `fail_to_proxy` without a source (the
/// body read does not mark it downstream) and be answered as the gateway's own 500.
fn unreadable(e: &pingora::Error) -> BodyError {
    match e.etype() {
        pingora::ErrorType::ReadTimedout => BodyError::Reject(GatewayError::BodyTimeout),
        _ => BodyError::Reject(GatewayError::BadRequest(
            "The request body could not be read: invalid chunked framing, or fewer bytes than Content-Length.",
        )),
    }
}

/// Undoes a body's content codings (`content_encoding`) on a blocking thread: a small compressed
/// body can expand to `max` bytes, tens of milliseconds of CPU that must not hold up the other
/// requests on this runtime thread. Compressed bodies are rare; the hand-off is their cost.
pub async fn decode(body: Bytes, codings: Codings, max: usize) -> Result<Bytes, GatewayError> {
    tokio::task::spawn_blocking(move || content_encoding::decode(&codings, body, max))
        .await
        .unwrap_or(Err(GatewayError::Internal))
}

/// `request_body_filter`: replace the replayed tail with the full body, once, at its end.
pub fn replay(body: &mut Option<Bytes>, end_of_stream: bool, full: &Bytes) {
    *body = if end_of_stream && !full.is_empty() { Some(full.clone()) } else { None };
}
