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
//! Modules: `http` (parsing, connections, responses, raw-socket faults), `record` (what it
//! received), `chat` (OpenAI and Anthropic chat, JSON and SSE, tool turns), `replies` (the canned
//! chat replies, from `tests/fixtures/upstream/`, shared with the goldens), `strict` (what the
//! real providers refuse), `media` (task APIs in three styles); `main` holds the options.
//!
//! Routes:
//! * `POST /v1/chat/completions` (OpenAI, JSON or SSE with `"stream":true`)
//! * `POST /v1/messages` (Anthropic, JSON or SSE), `POST /v1/messages/count_tokens`
//! * `GET /v1/models`
//! * `GET /__mock/requests` (recorded requests, oldest first, capped; `total`: every request
//!   received, uncapped), `DELETE /__mock/requests`
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
//! * `x-mock-fault: garbage|reset|cut-stream|hang|not-an-answer|echo-key`. `cut-stream` on a
//!   non-streaming request writes the head and half the body, then closes; `not-an-answer` is a
//!   200 whose JSON is neither a chat completion nor a message; `echo-key` is a 500 whose message
//!   quotes the `authorization` or `x-api-key` header it got.
//! * `x-mock-echo-usage: input,output,cache_read,cache_write`.
//!
//! Imports: nothing of the gateway's crate: the mock stands for the providers and must not share
//! the gateway's code (a bug in one would hide in the other). The fixtures it serves are files
//! (`replies`).

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

mod chat;
mod http;
mod media;
mod record;
mod replies;
mod strict;

use chat::*;
use http::*;
use media::*;
use record::*;
use strict::*;

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
        received: std::sync::atomic::AtomicU64::new(0),
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
