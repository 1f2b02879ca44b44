//! An OpenAI SDK request head, shared by `tests/alloc_budget.rs` and `benches/hot_path.rs`
//! (included with `#[path]`: it is not a test target of its own).

use pingora::http::RequestHeader;

/// `POST path` with the headers the OpenAI Python SDK sends, a `content-length` of `len`, and the
/// key as `auth` (`("authorization", "Bearer cm_…")` or `("x-api-key", "cm_…")`), last.
pub fn sdk_request(path: &'static [u8], len: usize, auth: (&'static str, String)) -> RequestHeader {
    let mut r = RequestHeader::build("POST", path, None).expect("request header");
    for (k, v) in [
        ("host", "gateway.internal:8080"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 1.99.9"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "1.99.9"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.12.3"),
        ("x-stainless-retry-count", "0"),
    ] {
        r.insert_header(k, v).expect("insert header");
    }
    r.insert_header("content-length", len.to_string()).expect("content-length");
    r.insert_header(auth.0, auth.1).expect("insert auth header");
    r
}
