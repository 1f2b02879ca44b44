//! A hand-sized HTTP/1.1 server: head parsing (httparse), bodies (Content-Length and chunked),
//! connection handling, responses and SSE, and the raw-socket faults.
//! Imports: `main`'s limits and `httparse`. Nothing of the gateway's crate.

use super::*;

// ---------------------------------------------------------------------------
// HTTP parsing
// ---------------------------------------------------------------------------

pub(crate) type HeaderRanges = Vec<(Range<usize>, Range<usize>)>;

pub(crate) struct HeadInfo {
    pub(crate) method: Range<usize>,
    pub(crate) target: Range<usize>,
    pub(crate) version: Range<usize>,
    pub(crate) content_length: Option<usize>,
    pub(crate) chunked: bool,
    pub(crate) keep_alive: bool,
    pub(crate) http10: bool,
    pub(crate) expect_continue: bool,
}

/// A fully read request; all slices borrow the connection buffers.
pub(crate) struct Req<'a> {
    pub(crate) head: &'a [u8],
    pub(crate) method: &'a [u8],
    pub(crate) target: &'a [u8],
    pub(crate) version: &'a [u8],
    pub(crate) headers: &'a [(Range<usize>, Range<usize>)],
    pub(crate) body: &'a [u8],
    pub(crate) chunked: bool,
    pub(crate) keep_alive: bool,
    pub(crate) http10: bool,
    pub(crate) conn: u64,
}

impl Req<'_> {
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.head[v.clone()])
    }

    pub(crate) fn header_u64(&self, name: &str) -> Option<u64> {
        std::str::from_utf8(self.header(name)?).ok()?.trim().parse().ok()
    }

    pub(crate) fn path(&self) -> &[u8] {
        match self.target.iter().position(|&b| b == b'?') {
            Some(i) => &self.target[..i],
            None => self.target,
        }
    }
}

pub(crate) enum HeadError {
    Bad(&'static str),
    NotImplemented(&'static str),
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Does the comma separated header value contain `token` (case-insensitive)?
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Most header lines a request may have.
const MAX_HEADERS: usize = 128;

/// Parse a request head (`head` ends with the blank line's CRLF). The request line and the header
/// lines are httparse's (which refuses obsolete line folding, bad tokens and bad targets); the
/// framing rules the gateway must get right (Content-Length, Transfer-Encoding, Connection) are
/// checked here, strictly, since the mock exists to catch what the gateway sends wrong.
pub(crate) fn parse_head(head: &[u8], headers: &mut HeaderRanges) -> Result<HeadInfo, HeadError> {
    headers.clear();
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Bad("incomplete request head")),
        Err(httparse::Error::Version) => return Err(HeadError::NotImplemented("unsupported HTTP version")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::Bad("too many headers")),
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue) => {
            return Err(HeadError::Bad("malformed header"));
        }
        Err(_) => return Err(HeadError::Bad("malformed request line")),
    }
    // httparse hands out slices of `head`: back to ranges, which outlive the parser.
    let range_of = |part: &[u8]| {
        let start = part.as_ptr() as usize - head.as_ptr() as usize;
        start..start + part.len()
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(HeadError::Bad("malformed request line"));
    };
    let (method, target) = (range_of(method.as_bytes()), range_of(target.as_bytes()));
    let line_end = find(head, b"\n").unwrap_or(head.len());
    let line_end = if line_end > 0 && head[line_end - 1] == b'\r' { line_end - 1 } else { line_end };
    let version = line_end.saturating_sub(8)..line_end;
    let http10 = minor == 0;

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut other_te = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;

    for h in parsed.headers.iter() {
        let name = range_of(h.name.as_bytes());
        let value = range_of(h.value.trim_ascii());
        let (n, v) = (&head[name.clone()], &head[value.clone()]);
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

pub(crate) enum BodyError {
    Eof,
    Bad,
    TooLarge,
}

pub(crate) async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(INITIAL_BUF);
    }
    stream.read_buf(buf).await
}

/// Read until `buf` holds at least `need` bytes.
pub(crate) async fn fill_to(stream: &mut TcpStream, buf: &mut BytesMut, need: usize) -> Result<(), BodyError> {
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
pub(crate) async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut, pos: usize) -> Result<usize, BodyError> {
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
pub(crate) async fn read_chunked(
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

pub(crate) enum Outcome {
    KeepAlive,
    Close,
    Reset,
    Hang,
}

/// Per-connection reusable buffers.
pub(crate) struct Bufs {
    pub(crate) out: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

pub(crate) async fn serve_conn(mut stream: TcpStream, state: Arc<State>) {
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
pub(crate) async fn simple_error(stream: &mut TcpStream, out: &mut Vec<u8>, status: u16, msg: &str) {
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

pub(crate) fn reason(status: u16) -> &'static str {
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

pub(crate) fn write_conn_header(out: &mut Vec<u8>, req: &Req<'_>, close: bool) {
    if close || !req.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
}

/// Write a complete response with Content-Length in one `write_all`.
/// With `cut`, only the head and half of the body are written and the connection closes.
pub(crate) async fn respond(
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
pub(crate) async fn respond_as(
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
pub(crate) async fn respond_sse(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<HeadInfo, &'static str> {
        let mut headers = Vec::new();
        parse_head(head.as_bytes(), &mut headers).map_err(|e| match e {
            HeadError::Bad(m) | HeadError::NotImplemented(m) => m,
        })
    }

    #[test]
    fn a_request_head_gives_its_framing_and_connection() {
        let head = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12 \r\n\r\n";
        let mut headers = Vec::new();
        let Ok(info) = parse_head(head.as_bytes(), &mut headers) else { panic!("valid head") };
        let b = head.as_bytes();
        assert_eq!(
            (&b[info.method.clone()], &b[info.target.clone()]),
            (&b"POST"[..], &b"/v1/chat/completions?x=1"[..])
        );
        assert_eq!(&b[info.version.clone()], b"HTTP/1.1");
        assert_eq!((info.content_length, info.chunked, info.keep_alive, info.http10), (Some(12), false, true, false));
        assert_eq!(headers.len(), 2);
        assert_eq!(&b[headers[1].1.clone()], b"12", "values are trimmed");
        let info = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").map_err(|m| m.to_string());
        assert!(info.is_ok_and(|i| i.http10 && i.keep_alive));
    }

    #[test]
    fn chunked_wins_over_content_length_and_closes() {
        let info = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").ok();
        assert!(info.is_some_and(|i| i.chunked && i.content_length.is_none() && !i.keep_alive));
    }

    #[test]
    fn what_a_gateway_must_never_send_is_refused() {
        for (head, why) in [
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "conflicting content-length"),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "invalid content-length"),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported transfer-encoding"),
            ("GET / HTTP/2.0\r\n\r\n", "unsupported HTTP version"),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "malformed header"),
            ("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", "malformed header"),
            ("GET /a b HTTP/1.1\r\n\r\n", "unsupported HTTP version"),
            ("GET / HTTP/1.1\r\nHost: a\r\n", "incomplete request head"),
        ] {
            assert_eq!(parse(head).err(), Some(why), "{head:?}");
        }
    }

    /// Feeds `wire` to `read_chunked` through a real loopback socket, in small writes.
    async fn dechunk(wire: &'static [u8]) -> Result<Vec<u8>, &'static str> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|_| "bind")?;
        let addr = listener.local_addr().map_err(|_| "addr")?;
        let writer = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            for piece in wire.chunks(3) {
                s.write_all(piece).await.expect("write");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Closed here: a body cut short ends in EOF.
        });
        let (mut stream, _) = listener.accept().await.map_err(|_| "accept")?;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), read_chunked(&mut stream, &mut buf, 0, &mut body))
            .await
            .map_err(|_| "timeout")?;
        let _ = writer.await;
        match read {
            Ok(end) if end == wire.len() => Ok(body),
            Ok(_) => Err("stopped early"),
            Err(BodyError::Bad) => Err("bad"),
            Err(BodyError::Eof) => Err("eof"),
            Err(BodyError::TooLarge) => Err("too large"),
        }
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_across_reads_and_bad_framing_is_refused() {
        assert_eq!(
            dechunk(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n").await,
            Ok(b"hello world".to_vec())
        );
        assert_eq!(dechunk(b"zz\r\nhello\r\n0\r\n\r\n").await, Err("bad"));
        assert_eq!(dechunk(b"5\r\nhelloXX0\r\n\r\n").await, Err("bad"));
        assert_eq!(dechunk(b"5\r\nhel").await, Err("eof"));
    }
}
