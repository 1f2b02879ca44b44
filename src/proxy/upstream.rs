//! The upstream leg: the peer for a model, and the minimal rewrite of the request header.
//!
//! Only these change: the path (under the upstream's base path), Host, Content-Length (and
//! Content-Encoding, when the gateway decoded a compressed body), the
//! credentials (the caller's `Authorization` / `x-api-key` removed, the upstream's own key set,
//! and the caller's `OpenAI-Organization` / `OpenAI-Project` removed: they choose which of the
//! operator's organizations and projects the gateway's key acts for and is billed to),
//! a default `anthropic-version` for Anthropic upstreams when the caller sent none, on translated
//! routes the caller's dialect's own headers (`anthropic-*` or `openai-*`), `x-request-id`,
//! `Expect` (already answered by the gateway) and `Accept-Encoding` (identity, so usage can be
//! read from the response without decompressing it). Every other header passes unchanged.
//! Imports: `error`, `registry`, Pingora's headers and peers. Not `dialect`, `ledger` or `metrics`.

use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;

use crate::error::Dialect;
use crate::registry::Upstream;

/// Headers by which a caller would choose the organization or project the upstream key acts for
/// (OpenAI's; Anthropic's keys belong to one workspace and take no such header).
const ACCOUNT_HEADERS: [&str; 2] = ["openai-organization", "openai-project"];

/// Removes the caller's credentials and account choice (`ACCOUNT_HEADERS`) and sets the upstream's
/// key: the one rule for every request the gateway forwards.
fn set_credentials(req: &mut RequestHeader, upstream: &Upstream) -> Result<()> {
    req.remove_header(&http::header::AUTHORIZATION);
    req.remove_header("x-api-key");
    // Rarely sent: one pass over the names a request has (a few comparisons of lengths) before
    // any removal. Two `contains_key` lookups cost ~800 instructions a request (callgrind): each
    // parses and hashes the name.
    if req.headers.keys().any(|name| ACCOUNT_HEADERS.contains(&name.as_str())) {
        for name in ACCOUNT_HEADERS {
            req.remove_header(name);
        }
    }
    if let Some((name, value)) = &upstream.auth {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe the caller's connection to the gateway,
/// not the gateway's to the upstream.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Removes the hop-by-hop headers and those the caller's `Connection` names, before the rewrite
/// (which sets what the upstream needs): Pingora's proxy does the same to a request it forwards
/// (its default `HttpUpstreamRequestPolicy`); the answers read whole (`proxy::whole`) do it here.
pub fn strip_hop_by_hop(req: &mut RequestHeader) {
    // One pass over the names a request has, as in `set_credentials`: most requests carry one
    // such header at most (`Connection: keep-alive`), and each `remove_header` parses and hashes
    // its name.
    let mut found: Vec<http::HeaderName> =
        req.headers.keys().filter(|name| HOP_BY_HOP.contains(&name.as_str())).cloned().collect();
    if found.is_empty() {
        return;
    }
    let named = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `close` and `keep-alive`, nearly always all there is, name no header to look for.
        .filter(|token| {
            !token.eq_ignore_ascii_case("close") && !HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h))
        })
        .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok());
    found.extend(named);
    for name in &found {
        req.remove_header(name);
    }
}

/// Default `anthropic-version` when the caller sent none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A peer for `upstream` (resolved address, no DNS on the request path).
pub fn peer(upstream: &Upstream) -> HttpPeer {
    let mut peer = HttpPeer::new(upstream.addr, upstream.tls, upstream.host.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(upstream.connect_timeout);
    o.total_connection_timeout = Some(upstream.connect_timeout * 2);
    o.read_timeout = Some(upstream.read_timeout);
    o.write_timeout = Some(upstream.read_timeout);
    o.idle_timeout = Some(std::time::Duration::from_secs(60));
    peer
}

/// Upstream path: the caller's path with its `/v1` prefix replaced by the upstream's base path.
pub fn upstream_path(base_path: &str, caller_path_and_query: &str) -> String {
    let rest = caller_path_and_query.strip_prefix("/v1").unwrap_or(caller_path_and_query);
    let mut p = String::with_capacity(base_path.len() + rest.len());
    p.push_str(base_path);
    p.push_str(rest);
    p
}

/// The body the upstream gets, as the header must describe it.
pub struct BodySent {
    pub len: usize,
    /// The caller's body came compressed and is sent decoded: its `Content-Encoding` goes.
    pub decoded: bool,
}

/// Rewrites the request header for `upstream`.
/// With `translated`, the request goes to the upstream dialect's own endpoint and headers that
/// belong to the caller's dialect are dropped.
pub fn rewrite_request(
    req: &mut RequestHeader,
    upstream: &Upstream,
    body: BodySent,
    request_id: &str,
    translated: bool,
) -> Result<()> {
    let path_and_query = if translated {
        match upstream.dialect {
            Dialect::OpenAi => "/v1/chat/completions",
            Dialect::Anthropic => "/v1/messages",
        }
    } else {
        req.uri.path_and_query().map_or("/", |p| p.as_str())
    };
    // `route` takes `/v1/chat/completions/` for `/v1/chat/completions`: the upstream gets the
    // endpoint's canonical path, never the slash as sent.
    let canonical;
    let path_and_query = match req.uri.path().strip_suffix('/') {
        Some(trimmed) if !translated => {
            let trimmed = trimmed.trim_end_matches('/');
            canonical = match req.uri.query() {
                Some(q) => format!("{trimmed}?{q}"),
                None => trimmed.to_owned(),
            };
            canonical.as_str()
        }
        _ => path_and_query,
    };
    let path = upstream_path(&upstream.base_path, path_and_query);
    let uri = http::Uri::try_from(path).map_err(|_| pingora::Error::new_str("bad upstream path"))?;
    req.set_uri(uri);
    set_credentials(req, upstream)?;
    if translated {
        // The caller's dialect's own headers mean nothing to the other API, and some name the
        // caller (`anthropic-user-profile-id`): every one of them stays here.
        let prefix = match upstream.dialect {
            Dialect::OpenAi => "anthropic-",
            Dialect::Anthropic => "openai-",
        };
        let foreign: Vec<http::HeaderName> =
            req.headers.keys().filter(|name| name.as_str().starts_with(prefix)).cloned().collect();
        for name in foreign {
            req.remove_header(&name);
        }
    }
    if upstream.dialect == Dialect::Anthropic && !req.headers.contains_key("anthropic-version") {
        req.insert_header("anthropic-version", ANTHROPIC_VERSION)?;
    }
    req.insert_header(http::header::HOST, upstream.host_header.clone())?;
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.remove_header(&http::header::EXPECT);
    // A static value: no allocation per request.
    req.insert_header(http::header::ACCEPT_ENCODING, http::HeaderValue::from_static("identity"))?;
    let mut len = itoa::Buffer::new();
    let len = len.format(body.len);
    if body.decoded {
        req.remove_header(&http::header::CONTENT_ENCODING);
    }
    if !states_length(&req.headers, len) {
        req.insert_header(http::header::CONTENT_LENGTH, len)?;
    }
    req.insert_header("x-request-id", request_id)?;
    Ok(())
}

/// `headers` already say `Content-Length: {digits}`, once: the sender's own header is then left
/// as it came (a body passed unchanged), one header write less (Pingora's `insert_header` also
/// keeps a case-preserving copy of the name), and the name keeps the sender's spelling. A repeated
/// `Content-Length`, even with the same value, is written anew as one.
pub(super) fn states_length(headers: &http::HeaderMap, digits: &str) -> bool {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    values.next().is_some_and(|v| v.as_bytes() == digits.as_bytes()) && values.next().is_none()
}

/// Rewrites a caller's `GET /v1/tasks/{id}/content` into the upstream's GET of `path` (a `/v1`
/// path): the caller's credentials out, the upstream's in. The response passes back byte for byte.
pub fn rewrite_download(req: &mut RequestHeader, upstream: &Upstream, path: &str, request_id: &str) -> Result<()> {
    let uri = http::Uri::try_from(upstream_path(&upstream.base_path, path))
        .map_err(|_| pingora::Error::new_str("bad upstream path"))?;
    req.set_uri(uri);
    set_credentials(req, upstream)?;
    req.insert_header(http::header::HOST, upstream.host_header.clone())?;
    for h in [http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING, http::header::EXPECT] {
        req.remove_header(&h);
    }
    req.insert_header("x-request-id", request_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(req: &RequestHeader) -> String {
        let mut out = Vec::new();
        req.header_to_h1_wire(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_content_length_that_still_holds_is_left_as_the_caller_wrote_it() {
        let yaml = r#"
server: { listen: ["127.0.0.1:1"] }
upstreams: { openai: { url: "http://127.0.0.1:9", dialect: openai } }
models: { gpt-5.5: { upstream: openai } }
keys: []
"#;
        let snapshot = crate::config::load_str(yaml, &|_| None).expect("test config").snapshot;
        let upstream = &snapshot.model("gpt-5.5").expect("model").upstream;
        let caller = || {
            let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).expect("header");
            r.append_header("content-length", "42").expect("append");
            r
        };
        let sent = |len| BodySent { len, decoded: false };
        let mut same = caller();
        rewrite_request(&mut same, upstream, sent(42), "req_1", false).expect("rewrite");
        let same = wire(&same);
        assert!(same.contains("content-length: 42\r\n") && !same.contains("Content-Length"), "{same}");
        let mut spliced = caller();
        rewrite_request(&mut spliced, upstream, sent(45), "req_1", false).expect("rewrite");
        let spliced = wire(&spliced);
        assert!(spliced.contains("Content-Length: 45\r\n") && !spliced.contains(": 42"), "{spliced}");
        // A body the gateway decoded goes without its coding; one it did not keeps the header.
        for decoded in [true, false] {
            let mut gzipped = caller();
            gzipped.append_header("content-encoding", "gzip").expect("append");
            rewrite_request(&mut gzipped, upstream, BodySent { len: 300, decoded }, "req_1", false).expect("rewrite");
            let gzipped = wire(&gzipped);
            assert_eq!(gzipped.contains("content-encoding"), !decoded, "{gzipped}");
            assert!(gzipped.contains("Content-Length: 300\r\n"), "{gzipped}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed_and_no_other() {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).expect("header");
        for (name, value) in [
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Content-Type", "application/json"),
            ("X-Stainless-Lang", "python"),
        ] {
            req.append_header(name, value).expect("append");
        }
        strip_hop_by_hop(&mut req);
        let mut left: Vec<&str> = req.headers.keys().map(http::HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-stainless-lang"]);
        // A request with none of them keeps every header.
        let mut plain = RequestHeader::build("POST", b"/v1/messages", None).expect("header");
        plain.append_header("X-Kept", "1").expect("append");
        strip_hop_by_hop(&mut plain);
        assert!(plain.headers.contains_key("x-kept"));
    }

    #[test]
    fn paths_go_under_the_base_path() {
        assert_eq!(upstream_path("/v1", "/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(upstream_path("/v1beta/openai", "/v1/chat/completions"), "/v1beta/openai/chat/completions");
        assert_eq!(upstream_path("/v1", "/v1/messages/count_tokens?beta=true"), "/v1/messages/count_tokens?beta=true");
    }
}
