//! The gateway itself under `cargo test`: the real `cheapmodel` binary in front of the real
//! `mock-upstream` binary, both on free 127.0.0.1 ports, stopped when each test ends (also when it
//! fails). Plain HTTP/1.1 over `TcpStream` with timeouts on every read and write. Covers auth,
//! routing and byte transparency; the SDKs and real clients stay in the Python suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

const KEY_A: &str = "cm_rust_test_key_a_0123456789";
const KEY_GPT_ONLY: &str = "cm_rust_test_key_b_0123456789";
const UPSTREAM_KEY: &str = "sk-upstream-rust-test-SECRET";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Stack {
    gateway: SocketAddr,
    mock: SocketAddr,
    _procs: (Proc, Proc),
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn start() -> Stack {
    let mut mock = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mock starts");
    let mut line = String::new();
    BufReader::new(mock.stdout.take().expect("stdout")).read_line(&mut line).expect("mock prints its address");
    let mock_addr: SocketAddr = line.trim().strip_prefix("listening ").expect("listening ADDR").parse().expect("addr");
    let mock = Proc(mock);

    let dir = std::env::temp_dir().join(format!("cheapmodel-rust-test-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let dir = TempDir(dir);
    let (port, metrics) = (free_port(), free_port());
    let config = format!(
        r#"
server:
  listen: ["127.0.0.1:{port}"]
  metrics: "127.0.0.1:{metrics}"
  threads: 1
  access_log: false
  watch_interval_seconds: 0
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  pid_file: "{dir}/cheapmodel.pid"
  upgrade_sock: "{dir}/upgrade.sock"
upstreams:
  openai: {{ url: "http://{mock_addr}", dialect: openai, api_key_env: RUST_TEST_UPSTREAM_KEY }}
  anthropic: {{ url: "http://{mock_addr}", dialect: anthropic }}
models:
  gpt-5.5: {{ upstream: openai }}
  gpt-pinned: {{ upstream: openai, upstream_model: gpt-5.5-2026-01-01 }}
  claude-sonnet-4-5-20250929: {{ upstream: anthropic }}
keys:
  - {{ name: team-a, sha256: "{a}" }}
  - {{ name: team-b, sha256: "{b}", models: [gpt-5.5] }}
"#,
        dir = dir.0.display(),
        a = hex_sha256(KEY_A),
        b = hex_sha256(KEY_GPT_ONLY),
    );
    let path = dir.0.join("cheapmodel.yaml");
    std::fs::write(&path, config).expect("config written");
    let gateway = Proc(
        Command::new(env!("CARGO_BIN_EXE_cheapmodel"))
            .arg("--config")
            .arg(&path)
            .env("RUST_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gateway starts"),
    );
    let gateway_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(gateway_addr, "GET", "/healthz", &[], b"").map(|r| r.status) != Some(200) {
        assert!(Instant::now() < deadline, "gateway did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    Stack { gateway: gateway_addr, mock: mock_addr, _procs: (gateway, mock), _dir: dir }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Response> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.set_write_timeout(Some(TIMEOUT)).ok()?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Some(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

fn mock_requests(stack: &Stack) -> Vec<Value> {
    let r = http(stack.mock, "GET", "/__mock/requests", &[], b"").expect("mock answers");
    r.json()["requests"].as_array().cloned().unwrap_or_default()
}

fn clear_mock(stack: &Stack) {
    http(stack.mock, "DELETE", "/__mock/requests", &[], b"").expect("mock answers");
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn auth_is_checked_before_anything_is_forwarded() {
    let stack = start();
    clear_mock(&stack);
    let body = br#"{"model":"gpt-5.5","messages":[{"role":"user","content":"hi"}]}"#;
    let json = ("content-type", "application/json");
    let none = http(stack.gateway, "POST", "/v1/chat/completions", &[json], body).expect("answer");
    assert_eq!(none.status, 401);
    assert!(none.json()["error"]["message"].as_str().is_some_and(|m| m.contains("didn't provide an API key")));
    let wrong = bearer("cm_not_a_key");
    let bad =
        http(stack.gateway, "POST", "/v1/chat/completions", &[json, ("authorization", &wrong)], body).expect("answer");
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"]["code"], "invalid_api_key");
    // Anthropic callers get Anthropic's error shape, with the key in x-api-key.
    let anth = http(stack.gateway, "POST", "/v1/messages", &[json, ("x-api-key", "cm_nope")], body).expect("answer");
    assert_eq!(anth.status, 401);
    assert_eq!(anth.json()["error"]["type"], "authentication_error");
    // A key may use only its allow-list.
    let b = bearer(KEY_GPT_ONLY);
    let claude =
        br#"{"model":"claude-sonnet-4-5-20250929","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let denied = http(stack.gateway, "POST", "/v1/messages", &[json, ("authorization", &b)], claude).expect("answer");
    assert_eq!(denied.status, 403);
    assert!(mock_requests(&stack).is_empty(), "nothing reaches the upstream before auth");
}

#[test]
fn routing_rejects_what_is_not_registered() {
    let stack = start();
    clear_mock(&stack);
    let a = bearer(KEY_A);
    let h = [("content-type", "application/json"), ("authorization", a.as_str())];
    for model in ["gpt", "gpt-5", "claude", "nope"] {
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        let r = http(stack.gateway, "POST", "/v1/chat/completions", &h, body.as_bytes()).expect("answer");
        assert_eq!(r.status, 404, "{model}");
        assert_eq!(r.json()["error"]["code"], "model_not_found", "{model}");
    }
    assert_eq!(http(stack.gateway, "POST", "/v1/unknown", &h, b"{}").expect("answer").status, 404);
    assert_eq!(http(stack.gateway, "GET", "/v1/chat/completions", &h, b"").expect("answer").status, 405);
    assert_eq!(http(stack.gateway, "POST", "/v1/chat/completions", &h, b"{oops").expect("answer").status, 400);
    assert!(mock_requests(&stack).is_empty());
    let models = http(stack.gateway, "GET", "/v1/models", &h, b"").expect("answer");
    assert_eq!(models.status, 200);
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect();
    assert!(ids.contains(&"gpt-5.5".to_owned()) && ids.contains(&"claude-sonnet-4-5-20250929".to_owned()), "{ids:?}");
}

#[test]
fn same_dialect_bytes_pass_through_and_credentials_are_swapped() {
    let stack = start();
    clear_mock(&stack);
    let a = bearer(KEY_A);
    let h = [("content-type", "application/json"), ("authorization", a.as_str()), ("x-custom", "kept")];
    // Odd spacing, key order and escapes: the upstream must see exactly these bytes.
    let body = "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"caf\\u00e9 \\\"q\\\" \u{1f600}\"} ],\n \"model\":\"gpt-5.5\" , \"temperature\": 0.50 }";
    let r = http(stack.gateway, "POST", "/v1/chat/completions", &h, body.as_bytes()).expect("answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.headers.iter().any(|(k, _)| k == "x-request-id"));
    let seen = mock_requests(&stack);
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got["path"], "/v1/chat/completions");
    assert_eq!(got["body_sha256"], Value::String(hex_sha256(body)));
    let headers: Vec<(String, String)> = got["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| (h[0].as_str().unwrap_or("").to_ascii_lowercase(), h[1].as_str().unwrap_or("").to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(header("authorization"), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    assert_eq!(header("x-custom"), Some("kept"));
    assert!(headers.iter().all(|(_, v)| !v.contains(KEY_A)), "the caller's key never reaches the upstream");

    // A pinned model: only the model value is spliced, every other byte kept.
    clear_mock(&stack);
    let pinned = body.replace("gpt-5.5", "gpt-pinned");
    let r = http(stack.gateway, "POST", "/v1/chat/completions", &h, pinned.as_bytes()).expect("answer");
    assert_eq!(r.status, 200);
    let seen = mock_requests(&stack);
    assert_eq!(seen[0]["body_sha256"], Value::String(hex_sha256(&body.replace("gpt-5.5", "gpt-5.5-2026-01-01"))));
}

#[test]
fn translated_route_answers_in_the_callers_dialect() {
    let stack = start();
    clear_mock(&stack);
    let a = bearer(KEY_A);
    let h = [("content-type", "application/json"), ("authorization", a.as_str())];
    let body = br#"{"model":"claude-sonnet-4-5-20250929","frobnicate":1,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = http(stack.gateway, "POST", "/v1/chat/completions", &h, body).expect("answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["object"], "chat.completion");
    assert!(r.headers.iter().any(|(k, v)| k == "x-cheapmodel-dropped" && v == "frobnicate"));
    let seen = mock_requests(&stack);
    assert_eq!(seen[0]["path"], "/v1/messages");
    let sent: Value = serde_json::from_str(seen[0]["body"].as_str().expect("body")).expect("json");
    assert!(sent.get("frobnicate").is_none() && sent["max_tokens"].is_u64());
}
