//! Closing connections on which no request starts: the one thing the gateway adds to Pingora's
//! accept loop, as a `ServerApp` that wraps the proxy.
//!
//! Why: with h2c on, Pingora tells an HTTP/2 preface from HTTP/1 by waiting for a new connection's
//! first 24 bytes, with no timeout (`pingora-core` `apps/mod.rs`, `try_peek`). A caller that
//! connects and sends nothing would hold a file descriptor for as long as it likes: 20,000 such
//! connections (this host's limit per process) stop the gateway from accepting. Here the same 24
//! bytes are waited for at most `idle`, and not at all once the server is shutting down; Pingora
//! then finds them already read (`Stream` rewinds what was peeked). The waits after the first
//! request are bounded elsewhere: HTTP/1.1 keep-alive in `proxy::bound_keepalive`, HTTP/2 by
//! Pingora's `h2_idle_timeout` (`cli`).
//! Imports: Pingora's `ServerApp` and `Stream`. Nothing of the gateway's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// Bytes Pingora peeks to look for the HTTP/2 preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const H2_PREFACE_LEN: usize = 24;

/// `app`, behind a bound on how long a connection may sit without starting a request.
pub struct IdleTimeout<A> {
    pub app: Arc<A>,
    pub idle: Duration,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for IdleTimeout<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let mut watch = shutdown.clone();
        if *watch.borrow() {
            return None;
        }
        let mut preface = [0u8; H2_PREFACE_LEN];
        tokio::select! {
            started = tokio::time::timeout(self.idle, stream.try_peek(&mut preface)) => {
                // Timed out, or the caller closed or reset the connection: nothing to answer.
                if !matches!(started, Ok(Ok(_))) {
                    return None;
                }
            }
            // An idle connection is closed as the server stops; one whose request started is
            // served (Pingora then answers it with `Connection: close`). Should the watch's sender
            // ever go, this branch is disabled rather than closing every connection.
            Ok(()) = watch.changed() => return None,
        }
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
