//! Media generation (images, video, audio) in three upstream styles.
//! Imports: `http`, `record` (through `main`). Nothing of the gateway's crate.

use super::*;

// ---------------------------------------------------------------------------
// Media generation (images, video, audio) in three upstream styles
// ---------------------------------------------------------------------------
//
// * flat (EvoLink-like) under `/flat/v1/...`, wrapped (APIMart-like) under
//   `/wrapped/v1/...`: async task submit + `GET .../v1/tasks/{id}` polling.
// * openai at the root: synchronous `POST /v1/images/generations` and
//   `POST /v1/audio/speech`, video jobs via `POST /v1/videos`,
//   `GET /v1/videos/{id}` and `GET /v1/videos/{id}/content`.
//
// Behaviour is chosen by words in the submitted `prompt` (`input` for speech):
// `mock-submit-error` (submit answers 400; with `mock-echo-key` its reason quotes the
// `authorization` header it got), `mock-fail` (task fails),
// `mock-cancel` (wrapped only: task ends cancelled), `mock-never` (task never
// finishes). Otherwise a task completes on its 3rd poll.

/// Tasks kept in memory; the oldest are forgotten beyond this.
pub(crate) const TASK_CAP: usize = 100_000;
/// Most results a task produces (`n` is clamped to 1..=this).
pub(crate) const MAX_N: u64 = 10;
pub(crate) const CDN: &str = "https://cdn.mock.invalid";
/// A valid 1x1 PNG, base64 encoded.
pub(crate) const PNG_1X1_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Flat,
    Wrapped,
    OpenAi,
}

impl Style {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Style::Flat => "flat",
            Style::Wrapped => "wrapped",
            Style::OpenAi => "openai",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Image,
    Video,
    Audio,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Video => "video",
            Kind::Audio => "audio",
        }
    }

    pub(crate) fn ext(self) -> &'static str {
        match self {
            Kind::Image => "png",
            Kind::Video => "mp4",
            Kind::Audio => "mp3",
        }
    }
}

/// How a task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Complete,
    Fail,
    Cancel,
    Never,
}

/// Where a task is after its polls so far.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not polled yet.
    Pending,
    /// First poll.
    Early,
    /// Second poll (and every later one for `mock-never`).
    Late,
    Completed,
    Failed,
    Cancelled,
}

pub(crate) struct Task {
    pub(crate) style: Style,
    pub(crate) kind: Kind,
    pub(crate) fate: Fate,
    pub(crate) model: Value,
    pub(crate) n: u64,
    pub(crate) created: u64,
    pub(crate) polls: u64,
    /// Unix time the task reached its terminal state (set by the poll that saw it).
    pub(crate) done_at: Option<u64>,
    /// OpenAI video jobs only.
    pub(crate) seconds: String,
    pub(crate) size: String,
    /// OpenAI video jobs only: the content's length (`mock-bytes:N` in the prompt; default the
    /// small fake MP4).
    pub(crate) content_bytes: Option<u64>,
}

impl Task {
    pub(crate) fn phase(&self) -> Phase {
        match self.polls {
            0 => Phase::Pending,
            1 => Phase::Early,
            2 => Phase::Late,
            _ => match self.fate {
                Fate::Complete => Phase::Completed,
                Fate::Fail => Phase::Failed,
                Fate::Cancel => Phase::Cancelled,
                Fate::Never => Phase::Late,
            },
        }
    }

    pub(crate) fn terminal(&self) -> bool {
        matches!(self.phase(), Phase::Completed | Phase::Failed | Phase::Cancelled)
    }

    /// Status word and progress in this task's style.
    pub(crate) fn status(&self) -> (&'static str, u64) {
        match (self.style, self.phase()) {
            (Style::OpenAi, Phase::Pending | Phase::Early) => ("queued", 0),
            (Style::OpenAi, Phase::Late) => ("in_progress", 50),
            (_, Phase::Pending) => ("pending", 0),
            (_, Phase::Early) => ("processing", 30),
            (_, Phase::Late) => ("processing", 70),
            (_, Phase::Completed) => ("completed", 100),
            (_, Phase::Failed) => ("failed", 0),
            (_, Phase::Cancelled) => ("cancelled", 0),
        }
    }

    pub(crate) fn urls(&self, id: &str) -> Vec<String> {
        (0..self.n).map(|i| format!("{CDN}/{id}/{i}.{}", self.kind.ext())).collect()
    }
}

#[derive(Default)]
pub(crate) struct Tasks {
    pub(crate) map: HashMap<String, Task>,
    /// Ids in submission order (for eviction and the dump).
    pub(crate) order: VecDeque<String>,
}

impl State {
    pub(crate) fn add_task(&self, id: String, task: Task) {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while t.order.len() >= TASK_CAP {
            if let Some(old) = t.order.pop_front() {
                t.map.remove(&old);
            }
        }
        t.order.push_back(id.clone());
        t.map.insert(id, task);
    }

    /// Count a poll of `id` (if it exists in `style`) and render its status body.
    pub(crate) fn poll_task(&self, style: Style, id: &str) -> Option<Value> {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let task = t.map.get_mut(id).filter(|task| task.style == style)?;
        task.polls += 1;
        if task.terminal() && task.done_at.is_none() {
            task.done_at = Some(unix_now());
        }
        Some(match style {
            Style::Flat => flat_task_json(id, task),
            Style::Wrapped => wrapped_task_json(id, task),
            Style::OpenAi => openai_video_json(id, task),
        })
    }

    /// Is the OpenAI video job `id` completed? `None` when unknown.
    /// `None`: no such video; `Some(None)`: not ready; `Some(Some(bytes))`: done, with the
    /// content length the prompt asked for, if any.
    pub(crate) fn video_done(&self, id: &str) -> Option<Option<Option<u64>>> {
        let t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let task = t.map.get(id).filter(|task| task.style == Style::OpenAi)?;
        Some((task.phase() == Phase::Completed).then_some(task.content_bytes))
    }

    pub(crate) fn dump_tasks(&self, out: &mut Vec<u8>) {
        let t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        out.clear();
        out.extend_from_slice(b"{\"tasks\":{");
        let mut first = true;
        for id in &t.order {
            let Some(task) = t.map.get(id) else { continue };
            if !first {
                out.push(b',');
            }
            first = false;
            json_str(out, id);
            let _ = write!(
                out,
                ":{{\"polls\":{},\"style\":\"{}\",\"kind\":\"{}\",\"status\":\"{}\"}}",
                task.polls,
                task.style.name(),
                task.kind.name(),
                task.status().0
            );
        }
        out.extend_from_slice(b"}}");
    }

    pub(crate) fn clear_tasks(&self) -> usize {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.map.len();
        t.map.clear();
        t.order.clear();
        n
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `len` random characters from `alphabet`.
pub(crate) fn random_chars(len: usize, alphabet: &[u8]) -> String {
    static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut bytes = vec![0u8; len];
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        let mut x = FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed) ^ nanos;
        for b in &mut bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    bytes.iter().map(|b| alphabet[usize::from(*b) % alphabet.len()] as char).collect()
}

pub(crate) const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
pub(crate) const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
pub(crate) const LOWER_HEX: &[u8] = b"0123456789abcdef";

pub(crate) enum MediaRoute<'a> {
    Submit(Style, Kind),
    Poll(Style, &'a str),
    OpenAiImage,
    OpenAiSpeech,
    OpenAiVideoSubmit,
    OpenAiVideoContent(&'a str),
}

/// A single, non-empty path segment.
pub(crate) fn segment(s: &str) -> Option<&str> {
    (!s.is_empty() && !s.contains('/')).then_some(s)
}

pub(crate) fn media_route<'a>(method: &[u8], path: &'a [u8]) -> Option<MediaRoute<'a>> {
    let path = std::str::from_utf8(path).ok()?;
    let (style, rest) = if let Some(r) = path.strip_prefix("/flat") {
        (Style::Flat, r)
    } else if let Some(r) = path.strip_prefix("/wrapped") {
        (Style::Wrapped, r)
    } else {
        (Style::OpenAi, path)
    };
    let kind = match rest {
        "/v1/images/generations" => Some(Kind::Image),
        "/v1/videos/generations" => Some(Kind::Video),
        "/v1/audios/generations" => Some(Kind::Audio),
        _ => None,
    };
    match (style, method) {
        (Style::Flat | Style::Wrapped, b"POST") => kind.map(|k| MediaRoute::Submit(style, k)),
        (Style::Flat | Style::Wrapped, b"GET") => {
            segment(rest.strip_prefix("/v1/tasks/")?).map(|id| MediaRoute::Poll(style, id))
        }
        (Style::OpenAi, b"POST") => match rest {
            "/v1/images/generations" => Some(MediaRoute::OpenAiImage),
            "/v1/audio/speech" => Some(MediaRoute::OpenAiSpeech),
            "/v1/videos" => Some(MediaRoute::OpenAiVideoSubmit),
            _ => None,
        },
        (Style::OpenAi, b"GET") => {
            let tail = rest.strip_prefix("/v1/videos/")?;
            match tail.strip_suffix("/content") {
                Some(id) => segment(id).map(MediaRoute::OpenAiVideoContent),
                None => segment(tail).map(|id| MediaRoute::Poll(Style::OpenAi, id)),
            }
        }
        _ => None,
    }
}

/// The submitted fields: a JSON object, or the text fields of a multipart form.
pub(crate) fn submit_fields(req: &Req<'_>) -> Option<Value> {
    let ct = req.header("content-type").map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    if ct.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
        return multipart_fields(&ct, req.body);
    }
    match serde_json::from_slice::<Value>(req.body).ok()? {
        v @ Value::Object(_) => Some(v),
        _ => None,
    }
}

/// Text fields of a `multipart/form-data` body (file parts are skipped).
pub(crate) fn multipart_fields(content_type: &str, body: &[u8]) -> Option<Value> {
    let boundary = content_type.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })?;
    let delim = format!("--{boundary}");
    let mut fields = serde_json::Map::new();
    let mut rest = body;
    let start = find(rest, delim.as_bytes())?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let after = &rest[head_end + 4..];
        let next = find(after, format!("\r\n{delim}").as_bytes())?;
        let value = &after[..next];
        rest = &after[next + 2 + delim.len()..];
        let disposition =
            head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:")).unwrap_or("");
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), None) = (param("name"), param("filename")) {
            fields.insert(name, Value::String(String::from_utf8_lossy(value).into_owned()));
        }
    }
    Some(Value::Object(fields))
}

pub(crate) fn str_field<'v>(v: &'v Value, name: &str) -> &'v str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// `n` as a number or numeric string, clamped to 1..=MAX_N (default 1).
pub(crate) fn n_field(v: &Value) -> u64 {
    let n = match v.get("n") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    n.unwrap_or(1).clamp(1, MAX_N)
}

/// A field as a string (numbers are stringified), or `default`.
pub(crate) fn string_field(v: &Value, name: &str, default: &str) -> String {
    match v.get(name) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => default.to_string(),
    }
}

/// `(submit error?, fate)` chosen by the words in the prompt.
pub(crate) fn prompt_fate(prompt: &str, style: Style) -> (bool, Fate) {
    let fate = if prompt.contains("mock-fail") {
        Fate::Fail
    } else if style == Style::Wrapped && prompt.contains("mock-cancel") {
        Fate::Cancel
    } else if prompt.contains("mock-never") {
        Fate::Never
    } else {
        Fate::Complete
    };
    (prompt.contains("mock-submit-error"), fate)
}

pub(crate) fn flat_error(code: &str, message: &str) -> Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

pub(crate) fn wrapped_error(code: u16, msg: &str) -> Value {
    serde_json::json!({"code": code, "msg": msg})
}

pub(crate) fn openai_error(message: &str, param: Option<&str>, code: &str) -> Value {
    serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
}

pub(crate) fn flat_task_json(id: &str, t: &Task) -> Value {
    let (status, progress) = t.status();
    let mut v = serde_json::json!({
        "id": id,
        "object": format!("{}.generation.task", t.kind.name()),
        "created": t.created,
        "model": t.model,
        "status": status,
        "progress": progress,
        "type": t.kind.name(),
        "task_info": {"can_cancel": false},
    });
    match t.phase() {
        Phase::Completed => v["results"] = serde_json::json!(t.urls(id)),
        Phase::Failed => {
            v["error"] = serde_json::json!({"code": "content_policy_violation", "message": "mock: prompt rejected"});
        }
        _ => {}
    }
    v
}

pub(crate) fn wrapped_task_json(id: &str, t: &Task) -> Value {
    let (status, progress) = t.status();
    let mut d = serde_json::json!({
        "id": id,
        "status": status,
        "progress": progress,
        "created": t.created,
        "estimated_time": 60,
    });
    if let Some(done) = t.done_at {
        d["completed"] = done.into();
        d["actual_time"] = done.saturating_sub(t.created).into();
    }
    let expires_at = t.done_at.unwrap_or(t.created) + 86_400;
    match t.phase() {
        Phase::Completed => {
            let urls = t.urls(id);
            d["result"] = match t.kind {
                Kind::Image => {
                    serde_json::json!({"images": [{"url": urls, "expires_at": expires_at}]})
                }
                Kind::Video => serde_json::json!({
                    "videos": urls.iter().map(|u| serde_json::json!({"url": u, "expires_at": expires_at})).collect::<Vec<_>>()
                }),
                Kind::Audio => serde_json::json!({
                    "audios": urls.iter().map(|u| serde_json::json!({"url": u})).collect::<Vec<_>>()
                }),
            };
        }
        Phase::Failed => {
            d["error"] = serde_json::json!({"code": "content_policy_violation", "message": "mock: prompt rejected"});
        }
        Phase::Cancelled => d["error"] = serde_json::json!({"code": "cancelled", "message": "mock: cancelled"}),
        _ => {}
    }
    serde_json::json!({"code": 200, "data": d})
}

pub(crate) fn openai_video_json(id: &str, t: &Task) -> Value {
    let (status, progress) = t.status();
    let mut v = serde_json::json!({
        "id": id,
        "object": "video",
        "model": t.model,
        "status": status,
        "progress": progress,
        "created_at": t.created,
        "seconds": t.seconds,
        "size": t.size,
    });
    match (t.phase(), t.done_at) {
        (Phase::Completed, Some(done)) => {
            v["completed_at"] = done.into();
            v["expires_at"] = (done + 86_400).into();
        }
        (Phase::Failed, _) => {
            v["error"] = serde_json::json!({"code": "moderation_blocked", "message": "mock: blocked"});
        }
        _ => {}
    }
    v
}

/// Fake MP3: an ID3v2 tag followed by silent MPEG-1 Layer III frames.
pub(crate) fn fake_mp3() -> Vec<u8> {
    let mut b = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    for _ in 0..2 {
        // 128 kbit/s, 44.1 kHz, mono: 417-byte frames.
        b.extend_from_slice(&[0xFF, 0xFB, 0x90, 0xC4]);
        b.resize(b.len() + 413, 0);
    }
    b
}

/// `mock-bytes:N` in a prompt: the video's content is N bytes.
fn content_bytes(prompt: &str) -> Option<u64> {
    let rest = &prompt[prompt.find("mock-bytes:")? + "mock-bytes:".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok().filter(|n| *n >= 32)
}

/// A fake MP4 of `len` bytes (`ftyp`, then an `mdat` of zeros), written 256 KiB at a time so
/// the mock never holds it whole: downloads of hundreds of MB measure the gateway, not the mock.
async fn respond_large_mp4(stream: &mut TcpStream, out: &mut Vec<u8>, req: &Req<'_>, len: u64) -> Outcome {
    out.clear();
    let _ = write!(out, "HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: {len}\r\n");
    write_conn_header(out, req, false);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom");
    out.extend_from_slice(&u32::try_from(len - 24).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b"mdat");
    if stream.write_all(out).await.is_err() {
        return Outcome::Close;
    }
    let zeros = vec![0u8; 256 * 1024];
    let mut left = len - 32;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        if stream.write_all(&zeros[..n]).await.is_err() {
            return Outcome::Close;
        }
        left -= n as u64;
    }
    if req.keep_alive {
        Outcome::KeepAlive
    } else {
        Outcome::Close
    }
}

/// Fake MP4: an `ftyp` box followed by an `mdat` box of zeros.
pub(crate) fn fake_mp4() -> Vec<u8> {
    let mut b = Vec::with_capacity(1048);
    b.extend_from_slice(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom");
    b.extend_from_slice(&1032u32.to_be_bytes());
    b.extend_from_slice(b"mdat");
    b.resize(b.len() + 1024, 0);
    b
}

pub(crate) async fn respond_json(
    stream: &mut TcpStream,
    req: &Req<'_>,
    bufs: &mut Bufs,
    status: u16,
    v: &Value,
    cut: bool,
) -> Outcome {
    bufs.body.clear();
    if serde_json::to_writer(&mut bufs.body, v).is_err() {
        bufs.body.clear();
        bufs.body.extend_from_slice(b"{}");
    }
    respond(stream, &mut bufs.out, req, status, "", &bufs.body, cut).await
}

pub(crate) async fn media(
    stream: &mut TcpStream,
    state: &State,
    req: &Req<'_>,
    bufs: &mut Bufs,
    cut: bool,
    route: MediaRoute<'_>,
) -> Outcome {
    match route {
        MediaRoute::Poll(style, id) => {
            let (status, v) = match state.poll_task(style, id) {
                Some(v) => (200, v),
                None => (
                    404,
                    match style {
                        Style::Flat => flat_error("task_not_found", "mock: no such task"),
                        Style::Wrapped => wrapped_error(404, "task not found"),
                        Style::OpenAi => openai_error("mock: no such video", None, "video_not_found"),
                    },
                ),
            };
            respond_json(stream, req, bufs, status, &v, cut).await
        }
        MediaRoute::Submit(style, kind) => {
            let Some(v) = submit_fields(req) else {
                let err = match style {
                    Style::Wrapped => wrapped_error(400, "mock: invalid JSON"),
                    _ => flat_error("invalid_parameters", "mock: invalid JSON"),
                };
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            };
            let (submit_error, fate) = prompt_fate(str_field(&v, "prompt"), style);
            if submit_error {
                // `mock-echo-key`: the reason quotes the credentials the submit carried.
                let message = if str_field(&v, "prompt").contains("mock-echo-key") {
                    let sent = req.header("authorization").unwrap_or_default();
                    format!("mock: prompt rejected for {}", String::from_utf8_lossy(sent))
                } else {
                    "mock: prompt rejected".to_string()
                };
                let err = match style {
                    Style::Wrapped => wrapped_error(400, &message),
                    _ => flat_error("content_policy_violation", &message),
                };
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            }
            let now = unix_now();
            let model = v.get("model").filter(|m| !m.is_null()).cloned().unwrap_or_else(|| "mock-model".into());
            let id = match style {
                Style::Flat => format!("task-unified-{now}-{}", random_chars(8, LOWER_ALNUM)),
                _ => format!("task_01{}", random_chars(24, UPPER_ALNUM)),
            };
            let body = match style {
                Style::Flat => serde_json::json!({
                    "created": now,
                    "id": id,
                    "model": model,
                    "object": format!("{}.generation.task", kind.name()),
                    "progress": 0,
                    "status": "pending",
                    "task_info": {"can_cancel": true, "estimated_time": 100},
                    "type": kind.name(),
                    "usage": {"billing_rule": "per_call", "credits_reserved": 2.5, "user_group": "default"},
                }),
                _ => {
                    let m = model.as_str().unwrap_or("").to_ascii_lowercase();
                    if m.contains("sora") || m.contains("veo") {
                        serde_json::json!({"code": 200, "data": {"id": id, "status": "pending", "created": now}})
                    } else {
                        serde_json::json!({"code": 200, "data": [{"status": "submitted", "task_id": id}]})
                    }
                }
            };
            let task = Task {
                style,
                kind,
                fate,
                model,
                n: n_field(&v),
                created: now,
                polls: 0,
                done_at: None,
                seconds: String::new(),
                size: String::new(),
                content_bytes: None,
            };
            state.add_task(id, task);
            respond_json(stream, req, bufs, 200, &body, cut).await
        }
        MediaRoute::OpenAiVideoSubmit => {
            let Some(v) = submit_fields(req) else {
                let err = openai_error("mock: invalid JSON", None, "invalid_request");
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            };
            let (submit_error, fate) = prompt_fate(str_field(&v, "prompt"), Style::OpenAi);
            if submit_error {
                let err = openai_error("mock: prompt rejected", Some("prompt"), "content_policy_violation");
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            }
            let id = format!("video_{}", random_chars(32, LOWER_HEX));
            let model = v.get("model").filter(|m| !m.is_null()).cloned().unwrap_or_else(|| "sora-2".into());
            let task = Task {
                style: Style::OpenAi,
                kind: Kind::Video,
                fate,
                model,
                n: 1,
                created: unix_now(),
                polls: 0,
                done_at: None,
                seconds: string_field(&v, "seconds", "4"),
                size: string_field(&v, "size", "720x1280"),
                content_bytes: content_bytes(str_field(&v, "prompt")),
            };
            let body = openai_video_json(&id, &task);
            state.add_task(id, task);
            respond_json(stream, req, bufs, 200, &body, cut).await
        }
        MediaRoute::OpenAiVideoContent(id) => match state.video_done(id) {
            None => {
                respond_json(stream, req, bufs, 404, &openai_error("mock: no such video", None, "video_not_found"), cut)
                    .await
            }
            Some(None) => {
                let err = openai_error("mock: video is not ready", None, "video_not_ready");
                respond_json(stream, req, bufs, 400, &err, cut).await
            }
            Some(Some(None)) => respond_as(stream, &mut bufs.out, req, 200, "video/mp4", "", &fake_mp4(), cut).await,
            Some(Some(Some(len))) => respond_large_mp4(stream, &mut bufs.out, req, len).await,
        },
        MediaRoute::OpenAiImage | MediaRoute::OpenAiSpeech => {
            let speech = matches!(route, MediaRoute::OpenAiSpeech);
            let Some(v) = submit_fields(req) else {
                let err = openai_error("mock: invalid JSON", None, "invalid_request");
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            };
            let field = if speech { "input" } else { "prompt" };
            let (submit_error, fate) = prompt_fate(str_field(&v, field), Style::OpenAi);
            if submit_error || fate == Fate::Fail {
                let err = openai_error("mock: prompt rejected", Some(field), "content_policy_violation");
                return respond_json(stream, req, bufs, 400, &err, cut).await;
            }
            if speech {
                return respond_as(stream, &mut bufs.out, req, 200, "audio/mpeg", "", &fake_mp3(), cut).await;
            }
            let url = str_field(&v, "response_format") == "url";
            let data: Vec<Value> = (0..n_field(&v))
                .map(|i| {
                    if url {
                        serde_json::json!({"url": format!("{CDN}/img/{i}.png")})
                    } else {
                        serde_json::json!({"b64_json": PNG_1X1_B64})
                    }
                })
                .collect();
            let body = serde_json::json!({
                "created": unix_now(),
                "data": data,
                "usage": {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
                          "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}},
            });
            respond_json(stream, req, bufs, 200, &body, cut).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_pick_each_tasks_fate_and_size() {
        assert_eq!(prompt_fate("a cat", Style::Flat), (false, Fate::Complete));
        assert_eq!(prompt_fate("mock-fail", Style::Flat), (false, Fate::Fail));
        assert_eq!(prompt_fate("mock-cancel", Style::Flat), (false, Fate::Complete), "only wrapped tasks cancel");
        assert_eq!(prompt_fate("mock-cancel", Style::Wrapped), (false, Fate::Cancel));
        assert_eq!(prompt_fate("mock-submit-error mock-never", Style::OpenAi), (true, Fate::Never));
        assert_eq!(content_bytes("waves mock-bytes:209715200 at dusk"), Some(209_715_200));
        assert_eq!(content_bytes("mock-bytes:12"), None, "smaller than the MP4 boxes");
        assert_eq!(content_bytes("waves"), None);
    }

    #[test]
    fn fake_media_have_the_lengths_their_headers_say() {
        let mp4 = fake_mp4();
        assert_eq!(&mp4[4..8], b"ftyp");
        assert_eq!(u32::from_be_bytes([mp4[24], mp4[25], mp4[26], mp4[27]]) as usize, mp4.len() - 24);
    }
}
