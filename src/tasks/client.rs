//! A small HTTP client for the task legs the gateway drives itself (submit and poll),
//! on Pingora's connector so it shares the proxy's TLS stack (rustls) and connection pooling.
//! Replies are read whole and bounded; every call has a total deadline.
//! Imports: `registry`, `proxy::upstream` (the peer and the upstream's key), Pingora's connector.
//! Not `dialect`, `ledger` or `metrics`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;

use crate::proxy::upstream::{peer, upstream_path};
use crate::registry::Upstream;

/// An upstream's answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `content-type`, if any.
    pub content_type: Option<String>,
    /// The whole body.
    pub body: Bytes,
}

/// Why a call failed (said to logs and, generically, to callers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Connect, TLS, reset, garbage.
    Unavailable(String),
    /// The deadline passed.
    Timeout,
    /// The body was larger than allowed.
    TooLarge,
}

/// Client over Pingora's connector.
pub struct UpstreamClient {
    connector: Connector,
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamClient {
    /// A client with its own connection pool.
    pub fn new() -> Self {
        UpstreamClient { connector: Connector::new(None) }
    }

    /// `method path` (path under `/v1`, mapped under the upstream's base path) with an optional
    /// JSON body, within `deadline`.
    pub async fn call(
        &self,
        upstream: &Upstream,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        deadline: Duration,
        max_body: usize,
    ) -> Result<Reply, CallError> {
        match tokio::time::timeout(deadline, self.call_inner(upstream, method, path, body, max_body)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        }
    }

    async fn call_inner(
        &self,
        upstream: &Upstream,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        max_body: usize,
    ) -> Result<Reply, CallError> {
        let unavailable = |e: Box<pingora::Error>| CallError::Unavailable(e.to_string());
        let peer = peer(upstream);
        let full_path = upstream_path(&upstream.base_path, &format!("/v1{path}"));
        let mut req = RequestHeader::build(method, full_path.as_bytes(), Some(6)).map_err(unavailable)?;
        req.insert_header(http::header::HOST, upstream.host_header.clone()).map_err(unavailable)?;
        if let Some((name, value)) = &upstream.auth {
            req.insert_header(name.clone(), value.clone()).map_err(unavailable)?;
        }
        req.insert_header(http::header::ACCEPT_ENCODING, "identity").map_err(unavailable)?;
        req.insert_header(http::header::USER_AGENT, "cheapmodel").map_err(unavailable)?;
        if let Some(b) = body {
            req.insert_header(http::header::CONTENT_TYPE, "application/json").map_err(unavailable)?;
            req.insert_header(http::header::CONTENT_LENGTH, b.len().to_string()).map_err(unavailable)?;
        }
        let (mut session, _reused) = self.connector.get_http_session(&peer).await.map_err(unavailable)?;
        session.write_request_header(Box::new(req)).await.map_err(unavailable)?;
        if let Some(b) = body {
            session.write_request_body(Bytes::copy_from_slice(b), true).await.map_err(unavailable)?;
        }
        session.finish_request_body().await.map_err(unavailable)?;
        session.read_response_header().await.map_err(unavailable)?;
        let (status, content_type) = match session.response_header() {
            Some(h) => (
                h.status.as_u16(),
                h.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string),
            ),
            None => return Err(CallError::Unavailable("no response header".into())),
        };
        let mut buf = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await.map_err(unavailable)? {
            if buf.len() + chunk.len() > max_body {
                return Err(CallError::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        self.connector.release_http_session(session, &peer, Some(Duration::from_secs(60))).await;
        // Everything a media upstream answers may reach the caller (a reason, a result): its key
        // never does, should the upstream echo it.
        Ok(Reply { status, content_type, body: crate::redact::bytes(buf.freeze(), upstream.key()) })
    }
}
