//! The floor of a Pingora L7 hop: a `ProxyHttp` that only picks a fixed peer. No auth, no body
//! read, no metrics, no logging. `loadtest/compare.sh` measures it beside the gateway so the
//! gateway's own cost can be told apart from Pingora's.
//!
//!   cargo build --release --example bare_pingora
//!   target/release/examples/bare_pingora LISTEN_ADDR UPSTREAM_ADDR THREADS [L4_READ_BUFFER_BYTES]
//!
//! `L4_READ_BUFFER_BYTES`: the downstream connections' read buffer (Pingora's default 64 KiB when
//! left out), to measure that setting on the floor itself.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// The same allocator as the gateway, so that this floor moves with it.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: cheapmodel::allocator::Allocator = cheapmodel::allocator::Allocator;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2).and_then(|a| a.parse().ok())) else {
        eprintln!("usage: bare_pingora LISTEN_ADDR UPSTREAM_ADDR [THREADS] [L4_READ_BUFFER_BYTES]");
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Bare { upstream });
    match args.get(4).and_then(|b| b.parse().ok()) {
        Some(read) => svc.add_listener(
            pingora::listeners::ListenerConfig::tcp(listen)
                .l4_buffer(pingora::protocols::l4::stream::L4BufferSettings::default().read(read)),
        ),
        None => svc.add_tcp(listen),
    }
    server.add_service(svc);
    server.run_forever();
}
