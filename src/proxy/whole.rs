//! Answers read whole: an answer the caller did not ask to stream (`ForwardPlan::answered_whole`)
//! is fetched from the upstream in full over Pingora's connector, translated if the dialects
//! differ, and written to the caller with its exact `Content-Length`: head and body leave in one
//! write when they fit Pingora's write buffer (1,460 bytes), in two otherwise.
//!
//! Why not Pingora's proxy path, which streams still take: it writes the caller's response head as
//! soon as the upstream's arrives, before any body hook has seen the body.
//! - A translated body changes length, so there it could only go chunked: head, chunk and
//!   terminator, each flushed on its own.
//! - An upstream that fails after its head (a reset, a body cut short, a 2xx body that cannot be
//!   translated) left a `200` under way that could no longer become an error: the caller got a
//!   cut body. Here nothing is written until the whole answer is in, so such a failure is a clean
//!   502 or 504 in the caller's dialect.
//! - It costs less CPU: a JSON caller cannot use an answer before its end anyway, and one task
//!   reading it whole skips the proxy's per-chunk machinery (`loadtest/cpu_ab.sh` with `B_BIN`:
//!   0.96x the proxy path's CPU per request same-dialect, 0.76x translated).
//!
//! The same rules as the proxy path, called from here: the request head
//! (`Gateway::rewrite_upstream_request`, after `upstream::strip_hop_by_hop`, as Pingora's proxy
//! strips), the response head (`read_upstream_head`, `frame_head`, `Gateway::caller_head`), the body
//! (`ResponseBody::feed`: same-dialect bytes pass unchanged), the errors (`error_for`) and the
//! peer and its timeouts (`upstream::peer`). A caller that leaves while the upstream works drops
//! the upstream call, as Pingora's proxy does, and `logging` bills it the same way.
//! What Pingora's proxy does that this path has no use for: retries (never for a POST), caching,
//! upgrades, and HTTP/2 upstreams (`upstream::peer` speaks HTTP/1.1).

use std::time::Instant;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::ctx::RequestCtx;
use super::{error_for, frame_head, read_upstream_head, respond, upstream, Gateway};
use crate::error::GatewayError;

impl Gateway {
    /// Carries out `ctx`'s forward (one that `answered_whole`) and answers the caller: the
    /// upstream's answer as the caller's dialect has it, or the gateway's error. `Err` only when
    /// the caller's own connection failed.
    pub(super) async fn answer_whole(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let Some(forward) = ctx.forward() else {
            return Err(Error::explain(ErrorType::InternalError, "no model routed"));
        };
        let peer = upstream::peer(&forward.model.upstream);
        let body = forward.body.clone();
        let mut req = session.req_header().clone();
        upstream::strip_hop_by_hop(&mut req);
        req.set_version(http::Version::HTTP_11);
        ctx.upstream_started = Some(Instant::now());
        let fetched = {
            let fetch = self.fetch_whole(&peer, req, body, ctx);
            tokio::select! {
                fetched = fetch => fetched,
                gone = caller_gone(session) => return Err(gone),
            }
        };
        let (mut resp, answer) = match fetched {
            Ok(fetched) => fetched,
            Err(e) => {
                let err = error_for(&e).unwrap_or(GatewayError::Internal);
                log::error!("Fail to proxy: {e}, {}", super::request_summary(session, ctx));
                respond::error(session, &err, ctx.id()).await?;
                ctx.error = Some(err);
                return Ok(());
            }
        };
        if ctx.response.untranslatable() {
            // The body is the gateway's error already (`ResponseBody::feed`); here its status can
            // still say so.
            resp.set_status(GatewayError::UpstreamUnavailable.status_in(ctx.caller))?;
        }
        frame_head(&mut resp, ctx.response.framing(), Some(answer.len()))?;
        self.caller_head(session, &mut resp, ctx)?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(answer), true).await?;
        Ok(())
    }

    /// The upstream exchange: `req` (the caller's head, rewritten here) and `body` out, the
    /// response head and the whole body the caller gets back (`ctx.response` fed every chunk).
    /// The connection goes back to the pool only after a complete answer.
    async fn fetch_whole(
        &self,
        peer: &HttpPeer,
        mut req: RequestHeader,
        body: Bytes,
        ctx: &mut RequestCtx,
    ) -> Result<(ResponseHeader, Bytes)> {
        // A pooled connection first. Connecting is boxed: its future (TCP, TLS) is ~9 KB that
        // would otherwise sit in this future, and be copied with it, on every request.
        let mut up = match self.connector.reused_http_session(peer).await {
            Some(up) => up,
            None => Box::pin(self.connector.get_http_session(peer)).await.map_err(|e| e.into_up())?.0,
        };
        up.read_timeout = peer.options.read_timeout;
        up.write_timeout = peer.options.write_timeout;
        self.rewrite_upstream_request(&mut req, ctx)?;
        up.write_request_header(Box::new(req)).await.map_err(|e| e.into_up())?;
        up.write_body(&body).await.map_err(|e| e.into_up())?;
        up.finish_body().await.map_err(|e| e.into_up())?;
        let mut resp = loop {
            up.read_response().await.map_err(|e| e.into_up())?;
            match up.resp_header() {
                // An interim answer (`100 Continue`, `103 Early Hints`): the final one follows.
                Some(head) if head.status.is_informational() => continue,
                Some(head) => break head.clone(),
                None => return Err(Error::explain(ErrorType::InvalidHTTPHeader, "no response head").into_up()),
            }
        };
        read_upstream_head(&mut resp, ctx)?;
        let mut parts: Vec<Bytes> = Vec::new();
        loop {
            let mut chunk = up.read_body_bytes().await.map_err(|e| e.into_up())?;
            let end = chunk.is_none() || up.is_body_done();
            if end {
                ctx.upstream_done = Some(Instant::now());
            }
            ctx.response.feed(&mut chunk, end, &ctx.request_id);
            parts.extend(chunk);
            if end {
                break;
            }
        }
        self.connector.release_http_session(up, peer, peer.options.idle_timeout).await;
        let answer = match parts.len() {
            1 => parts.pop().expect("one part"),
            _ => Bytes::from(parts.concat()),
        };
        Ok((resp, answer))
    }
}

/// Resolves when the caller closes or resets its connection while its answer is awaited (the
/// error says which); never otherwise. The same watch as Pingora's proxy keeps (`read_body_or_idle`
/// once the request body is in: bytes of a pipelined next request are kept for it).
async fn caller_gone(session: &mut Session) -> Box<Error> {
    match session.downstream_session.read_body_or_idle(true).await {
        Err(e) => e.into_down(),
        Ok(_) => std::future::pending().await,
    }
}
