//! The portable media request and the three upstream task styles, as pure functions: validate a
//! portable request and map it to an upstream's body; read an upstream's submit and poll answers
//! into one `TaskState`. Upstream status words never leak: each style's words are mapped to
//! pending | processing | completed | failed, anything unknown counts as processing.
//! Imports: `registry` (the upstream's style). Not `proxy`, `ledger`, `metrics` or Pingora.

use serde_json::{Map, Value};

use super::{TaskState, TaskStatus};
use crate::registry::{ModelKind, TaskStyle};

/// A request that cannot be served as asked: 400 naming `param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// The offending field.
    pub param: &'static str,
    /// Why.
    pub message: String,
}

fn bad(param: &'static str, message: impl Into<String>) -> TaskError {
    TaskError { param, message: message.into() }
}

/// Media type of a generation endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `/v1/images/generations`
    Image,
    /// `/v1/videos/generations`
    Video,
    /// `/v1/audios/generations` (speech or music)
    Audio,
}

impl Media {
    /// `image` / `video` / `audio`.
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Image => "image",
            Media::Video => "video",
            Media::Audio => "audio",
        }
    }

    /// From the `type` word in a task id.
    pub fn parse(s: &str) -> Option<Media> {
        match s {
            "image" => Some(Media::Image),
            "video" => Some(Media::Video),
            "audio" => Some(Media::Audio),
            _ => None,
        }
    }

    /// Whether a model of `kind` belongs on this endpoint.
    pub fn accepts(self, kind: ModelKind) -> bool {
        matches!(
            (self, kind),
            (Media::Image, ModelKind::Image)
                | (Media::Video, ModelKind::Video)
                | (Media::Audio, ModelKind::Audio | ModelKind::Music)
        )
    }

    fn generations_path(self) -> &'static str {
        match self {
            Media::Image => "/images/generations",
            Media::Video => "/videos/generations",
            Media::Audio => "/audios/generations",
        }
    }
}

/// How the gateway runs a submitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Relay: the upstream returns a task id to poll.
    Relay,
    /// Synchronous OpenAI call run by the gateway in the background; the answer is JSON
    /// (`data[].b64_json` or `data[].url`).
    SyncJson,
    /// Synchronous OpenAI call whose answer is the media bytes (speech).
    SyncBytes,
}

/// The upstream request for a submit.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSubmit {
    /// Path under the upstream's base path (e.g. `/images/generations`).
    pub path: &'static str,
    /// JSON body.
    pub body: Vec<u8>,
    /// How the task runs.
    pub run: Run,
    /// Requested seconds (video/audio), 0 if not given.
    pub seconds: u32,
    /// Requested images (`n`, 1 when not given; 0 for video and audio).
    pub images: u32,
}

/// Whether a model's price counts seconds (`per_second`) and, if so, the duration the gateway asks
/// for when the caller names none (`default_duration_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BilledSeconds {
    No,
    Yes { default: Option<u32> },
}

const RATIOS: &[&str] = &["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9", "9:21", "4:5", "5:4"];

fn pixels(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.split_once('x')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    ((64..=8192).contains(&w) && (64..=8192).contains(&h)).then_some((w, h))
}

/// Validates the portable fields of a media request.
fn validate(media: Media, body: &Map<String, Value>) -> Result<(), TaskError> {
    match body.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => {}
        Some(Value::String(_)) | None => return Err(bad("prompt", "prompt: field required")),
        Some(_) => return Err(bad("prompt", "prompt: expected a string")),
    }
    if let Some(n) = body.get("n") {
        let n = n.as_u64().ok_or_else(|| bad("n", "n: expected an integer"))?;
        let max = if media == Media::Image { 10 } else { 1 };
        if n < 1 || n > max {
            return Err(bad("n", format!("n: must be between 1 and {max}")));
        }
    }
    if let Some(size) = body.get("size") {
        let size = size.as_str().ok_or_else(|| bad("size", "size: expected a string"))?;
        if !RATIOS.contains(&size) && pixels(size).is_none() {
            return Err(bad(
                "size",
                format!(
                    "size: `{size}` is neither an aspect ratio ({}) nor a WIDTHxHEIGHT pixel size",
                    RATIOS.join(", ")
                ),
            ));
        }
    }
    if let Some(r) = body.get("resolution") {
        let r = r.as_str().ok_or_else(|| bad("resolution", "resolution: expected a string"))?;
        if !matches!(r.to_ascii_lowercase().as_str(), "1k" | "2k" | "4k") {
            return Err(bad("resolution", "resolution: must be 1k, 2k or 4k"));
        }
    }
    if let Some(d) = body.get("duration") {
        let d = d.as_f64().ok_or_else(|| bad("duration", "duration: expected a number of seconds"))?;
        if media == Media::Image {
            return Err(bad("duration", "duration: images have no duration"));
        }
        let max = if media == Media::Video { 60.0 } else { 600.0 };
        if !(d > 0.0 && d <= max) {
            return Err(bad(
                "duration",
                format!("duration: must be more than 0 and at most {max} seconds for {} generation", media.as_str()),
            ));
        }
    }
    if let Some(urls) = body.get("image_urls") {
        let ok = urls.as_array().is_some_and(|a| {
            a.len() <= 16
                && a.iter().all(|u| u.as_str().is_some_and(|s| s.starts_with("http") || s.starts_with("data:")))
        });
        if !ok {
            return Err(bad("image_urls", "image_urls: expected at most 16 http(s) or data URLs"));
        }
    }
    Ok(())
}

fn seconds_of(body: &Map<String, Value>) -> u32 {
    body.get("duration").and_then(Value::as_f64).map_or(0, |d| d.ceil() as u32)
}

/// Validates a portable request for `media` on a model of `kind` and builds the upstream request.
pub fn map_submit(
    media: Media,
    kind: ModelKind,
    style: TaskStyle,
    upstream_model: &str,
    billed: BilledSeconds,
    body: &[u8],
) -> Result<UpstreamSubmit, TaskError> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("body", "the request body must be a JSON object"));
    };
    validate(media, &obj)?;
    let seconds = seconds_of(&obj);
    // `validate` has checked `n` (1 to 10).
    let images = if media == Media::Image { obj.get("n").and_then(Value::as_u64).map_or(1, |n| n as u32) } else { 0 };
    obj.insert("model".into(), Value::from(upstream_model));
    let mut submit = match style {
        // Task APIs take the portable fields as they are.
        TaskStyle::Flat | TaskStyle::Wrapped => {
            // A task API makes some default length of its own when asked for none, which the
            // gateway cannot know: a model billed per second is asked for a length it can bill.
            let seconds = match (seconds, billed) {
                (0, BilledSeconds::Yes { default: Some(d) }) => {
                    obj.insert("duration".into(), Value::from(d));
                    d
                }
                (0, BilledSeconds::Yes { default: None }) => {
                    return Err(bad("duration", "duration: required for this model, which is billed per second"));
                }
                _ => seconds,
            };
            Ok(UpstreamSubmit {
                path: media.generations_path(),
                body: serde_json::to_vec(&obj).unwrap_or_default(),
                run: Run::Relay,
                seconds,
                images: 0,
            })
        }
        TaskStyle::OpenAi => map_openai(media, kind, obj, seconds),
    }?;
    submit.images = images;
    Ok(submit)
}

fn openai_image_size(size: &str) -> Option<&'static str> {
    match size {
        "1:1" | "1024x1024" => Some("1024x1024"),
        "3:2" | "4:3" | "16:9" | "21:9" | "5:4" | "1536x1024" => Some("1536x1024"),
        "2:3" | "3:4" | "9:16" | "9:21" | "4:5" | "1024x1536" => Some("1024x1536"),
        "auto" => Some("auto"),
        _ => None,
    }
}

fn openai_video_size(size: &str) -> Option<&'static str> {
    match size {
        "16:9" | "1280x720" => Some("1280x720"),
        "9:16" | "720x1280" => Some("720x1280"),
        "1792x1024" => Some("1792x1024"),
        "1024x1792" => Some("1024x1792"),
        _ => None,
    }
}

fn map_openai(
    media: Media,
    kind: ModelKind,
    mut obj: Map<String, Value>,
    seconds: u32,
) -> Result<UpstreamSubmit, TaskError> {
    let resolution = obj.remove("resolution").and_then(|v| v.as_str().map(str::to_ascii_lowercase));
    match media {
        Media::Image => {
            if resolution.as_deref().is_some_and(|r| r != "1k") {
                return Err(bad("resolution", "resolution: this model makes images of about one megapixel (1k) only"));
            }
            if obj.contains_key("image_urls") {
                return Err(bad(
                    "image_urls",
                    "image_urls: reference images are not supported by this model's upstream",
                ));
            }
            if let Some(size) = obj.get("size").and_then(Value::as_str) {
                let mapped = openai_image_size(size)
                    .ok_or_else(|| bad("size", format!("size: `{size}` is not available; use 1:1, a landscape ratio (1536x1024) or a portrait ratio (1024x1536)")))?;
                obj.insert("size".into(), Value::from(mapped));
            }
            Ok(UpstreamSubmit {
                path: "/images/generations",
                body: serde_json::to_vec(&obj).unwrap_or_default(),
                run: Run::SyncJson,
                seconds: 0,
                images: 0,
            })
        }
        Media::Audio => {
            if kind == ModelKind::Music {
                return Err(bad("model", "music generation is not available from an OpenAI upstream"));
            }
            for field in ["size", "n", "image_urls"] {
                if obj.contains_key(field) {
                    return Err(bad(field_name(field), format!("{field}: not supported for speech")));
                }
            }
            if resolution.is_some() {
                return Err(bad("resolution", "resolution: not supported for speech"));
            }
            let prompt = obj.remove("prompt").unwrap_or(Value::Null);
            obj.insert("input".into(), prompt);
            obj.entry("voice").or_insert_with(|| Value::from("alloy"));
            obj.remove("duration");
            Ok(UpstreamSubmit {
                path: "/audio/speech",
                body: serde_json::to_vec(&obj).unwrap_or_default(),
                run: Run::SyncBytes,
                seconds,
                images: 0,
            })
        }
        Media::Video => {
            if resolution.as_deref().is_some_and(|r| r != "1k") {
                return Err(bad("resolution", "resolution: this model makes 720p/1080p-class video (1k) only"));
            }
            if obj.contains_key("image_urls") {
                return Err(bad(
                    "image_urls",
                    "image_urls: reference images are not supported by this model's upstream",
                ));
            }
            if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
                return Err(bad("n", "n: must be 1"));
            }
            obj.remove("n");
            // The length is the portable `duration`, or OpenAI's own `seconds` (a string there): a
            // `seconds` passed through unread made the clip the caller asked for and billed the
            // upstream's 4 s default.
            let asked = match (obj.remove("duration"), obj.remove("seconds")) {
                (Some(_), Some(_)) => return Err(bad("seconds", "seconds: give duration or seconds, not both")),
                (Some(d), None) => Some(("duration", d.as_f64())),
                (None, Some(s)) => Some(("seconds", s.as_f64().or_else(|| s.as_str()?.trim().parse().ok()))),
                (None, None) => None,
            };
            let seconds = match asked {
                None => 4,
                Some((field, secs)) => {
                    let secs = secs.unwrap_or(0.0);
                    if ![4.0, 8.0, 12.0].contains(&secs) {
                        return Err(bad(field, format!("{field}: this model makes clips of 4, 8 or 12 seconds")));
                    }
                    obj.insert("seconds".into(), Value::from((secs as u32).to_string()));
                    secs as u32
                }
            };
            if let Some(size) = obj.get("size").and_then(Value::as_str) {
                let mapped = openai_video_size(size).ok_or_else(|| {
                    bad("size", format!("size: `{size}` is not available; use 16:9, 9:16, 1792x1024 or 1024x1792"))
                })?;
                obj.insert("size".into(), Value::from(mapped));
            }
            Ok(UpstreamSubmit {
                path: "/videos",
                body: serde_json::to_vec(&obj).unwrap_or_default(),
                run: Run::Relay,
                seconds,
                images: 0,
            })
        }
    }
}

fn field_name(f: &str) -> &'static str {
    match f {
        "size" => "size",
        "n" => "n",
        _ => "image_urls",
    }
}

/// The upstream's task id and first state from its submit answer.
pub fn parse_submit(style: TaskStyle, body: &[u8]) -> Option<(String, TaskState)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match style {
        TaskStyle::Flat => {
            let id = v.get("id")?.as_str()?.to_string();
            Some((id, flat_state(&v)))
        }
        TaskStyle::Wrapped => {
            let data = unwrap_envelope(&v)?;
            let item = match data {
                Value::Array(items) => items.first()?,
                other => other,
            };
            let id = item.get("task_id").or_else(|| item.get("id"))?.as_str()?.to_string();
            Some((id, wrapped_state(item)))
        }
        TaskStyle::OpenAi => {
            let id = v.get("id")?.as_str()?.to_string();
            Some((id, openai_video_state(&v)))
        }
    }
}

/// The task state from an upstream's poll answer (`None`: not a task answer).
pub fn parse_poll(style: TaskStyle, body: &[u8]) -> Option<TaskState> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match style {
        TaskStyle::Flat => v.get("status").map(|_| flat_state(&v)),
        TaskStyle::Wrapped => unwrap_envelope(&v).filter(|d| d.get("status").is_some()).map(wrapped_state),
        TaskStyle::OpenAi => v.get("status").map(|_| openai_video_state(&v)),
    }
}

/// The upstream path that polls `id`.
pub fn poll_path(style: TaskStyle, id: &str) -> String {
    match style {
        TaskStyle::Flat | TaskStyle::Wrapped => format!("/tasks/{id}"),
        TaskStyle::OpenAi => format!("/videos/{id}"),
    }
}

fn unwrap_envelope(v: &Value) -> Option<&Value> {
    let code = v.get("code").and_then(Value::as_u64);
    if code.is_some_and(|c| c != 200) {
        return None;
    }
    v.get("data")
}

fn progress(v: &Value, status: TaskStatus) -> u8 {
    match status {
        TaskStatus::Completed => 100,
        _ => v.get("progress").and_then(Value::as_f64).map_or(0, |p| p.clamp(0.0, 99.0) as u8),
    }
}

fn error_of(v: &Value, default_code: &str) -> Option<(String, String)> {
    let e = v.get("error")?;
    if e.is_null() {
        return None;
    }
    let code = e
        .get("code")
        .map(|c| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string()))
        .unwrap_or_else(|| default_code.to_string());
    let message = e.get("message").and_then(Value::as_str).unwrap_or("the upstream failed the task").to_string();
    Some((code, message))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn finish(status: TaskStatus, v: &Value, results: Vec<String>) -> TaskState {
    let error = match status {
        TaskStatus::Failed => Some(
            error_of(v, "upstream_failed")
                .unwrap_or_else(|| ("upstream_failed".into(), "the upstream failed the task".into())),
        ),
        _ => None,
    };
    TaskState {
        status,
        progress: progress(v, status),
        results: if status == TaskStatus::Completed { results } else { Vec::new() },
        error,
        units: 0.0,
    }
}

/// A task API's status word. The documented words are lowercase `pending`, `processing`,
/// `completed`, `failed` (and `submitted`, `queued`, `cancelled` on wrapped APIs); the other
/// spellings task APIs use are read too, in any case, so that a word we did not expect cannot
/// hold a finished task as `processing` until its deadline fails it unbilled.
fn task_status(v: &Value) -> TaskStatus {
    let Some(word) = v.get("status").and_then(Value::as_str) else { return TaskStatus::Processing };
    match word.to_ascii_lowercase().as_str() {
        "pending" | "submitted" | "queued" | "waiting" => TaskStatus::Pending,
        "completed" | "complete" | "succeeded" | "success" | "successful" | "done" | "finished" => {
            TaskStatus::Completed
        }
        "failed" | "failure" | "error" | "cancelled" | "canceled" | "expired" | "rejected" => TaskStatus::Failed,
        _ => TaskStatus::Processing,
    }
}

fn flat_state(v: &Value) -> TaskState {
    finish(task_status(v), v, strings(v.get("results")))
}

fn wrapped_state(v: &Value) -> TaskState {
    let status = task_status(v);
    let mut results = Vec::new();
    if let Some(result) = v.get("result") {
        for bucket in ["images", "videos", "audios"] {
            for item in result.get(bucket).and_then(Value::as_array).into_iter().flatten() {
                results.extend(strings(item.get("url")));
            }
        }
    }
    finish(status, v, results)
}

fn openai_video_state(v: &Value) -> TaskState {
    let status = match v.get("status").and_then(Value::as_str) {
        Some("queued") => TaskStatus::Pending,
        Some("completed") => TaskStatus::Completed,
        Some("failed") => TaskStatus::Failed,
        _ => TaskStatus::Processing,
    };
    // The content is served by the gateway (it needs the upstream key): the engine fills results.
    finish(status, v, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(media: Media, kind: ModelKind, style: TaskStyle, body: &str) -> Result<UpstreamSubmit, TaskError> {
        map_submit(media, kind, style, "up-model", BilledSeconds::No, body.as_bytes())
    }

    #[test]
    fn a_task_api_is_asked_for_the_seconds_a_per_second_model_bills() {
        let run = |billed, body: &str| {
            map_submit(Media::Video, ModelKind::Video, TaskStyle::Flat, "m", billed, body.as_bytes())
        };
        let sent = |u: &UpstreamSubmit| serde_json::from_slice::<Value>(&u.body).expect("json")["duration"].clone();
        let default8 = BilledSeconds::Yes { default: Some(8) };
        let u = run(default8, r#"{"prompt":"x"}"#).expect("default");
        assert_eq!((u.seconds, sent(&u)), (8, Value::from(8)));
        let u = run(default8, r#"{"prompt":"x","duration":5}"#).expect("asked");
        assert_eq!((u.seconds, sent(&u)), (5, Value::from(5)));
        let refused = run(BilledSeconds::Yes { default: None }, r#"{"prompt":"x"}"#).err().map(|e| e.param);
        assert_eq!(refused, Some("duration"), "no length to bill");
        let u = run(BilledSeconds::No, r#"{"prompt":"x"}"#).expect("not billed by length");
        assert_eq!((u.seconds, sent(&u)), (0, Value::Null));
    }

    #[test]
    fn task_status_words_are_read_in_any_spelling() {
        let status = |w: &str| task_status(&serde_json::json!({ "status": w }));
        for (word, want) in [
            ("pending", TaskStatus::Pending),
            ("Queued", TaskStatus::Pending),
            ("processing", TaskStatus::Processing),
            ("running", TaskStatus::Processing),
            ("completed", TaskStatus::Completed),
            ("SUCCEEDED", TaskStatus::Completed),
            ("success", TaskStatus::Completed),
            ("failed", TaskStatus::Failed),
            ("FAILED", TaskStatus::Failed),
            ("cancelled", TaskStatus::Failed),
            ("expired", TaskStatus::Failed),
        ] {
            assert_eq!(status(word), want, "{word}");
        }
        assert_eq!(task_status(&serde_json::json!({})), TaskStatus::Processing);
    }

    #[test]
    fn portable_validation_names_the_field() {
        let e = |body: &str| submit(Media::Image, ModelKind::Image, TaskStyle::Flat, body).err().map(|e| e.param);
        assert_eq!(e(r#"{"model":"m"}"#), Some("prompt"));
        assert_eq!(e(r#"{"model":"m","prompt":"  "}"#), Some("prompt"));
        assert_eq!(e(r#"{"model":"m","prompt":"x","n":0}"#), Some("n"));
        assert_eq!(e(r#"{"model":"m","prompt":"x","n":11}"#), Some("n"));
        assert_eq!(e(r#"{"model":"m","prompt":"x","size":"7:5"}"#), Some("size"));
        assert_eq!(e(r#"{"model":"m","prompt":"x","resolution":"8k"}"#), Some("resolution"));
        assert_eq!(e(r#"{"model":"m","prompt":"x","duration":5}"#), Some("duration"));
        assert_eq!(e(r#"{"model":"m","prompt":"x","image_urls":"http://a"}"#), Some("image_urls"));
        assert_eq!(e(r#"{"model":"m","prompt":"x","size":"16:9","resolution":"2k","n":2}"#), None);
    }

    #[test]
    fn task_styles_pass_fields_through_with_the_upstream_model() {
        let s = submit(
            Media::Image,
            ModelKind::Image,
            TaskStyle::Flat,
            r#"{"model":"gpt-image-2","prompt":"city","size":"16:9","resolution":"2k","quality":"high"}"#,
        )
        .expect("ok");
        let v: Value = serde_json::from_slice(&s.body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"model":"up-model","prompt":"city","size":"16:9","resolution":"2k","quality":"high"})
        );
        assert_eq!((s.path, s.run), ("/images/generations", Run::Relay));
    }

    #[test]
    fn openai_sizes_and_tiers_are_mapped_or_refused() {
        let s = submit(
            Media::Image,
            ModelKind::Image,
            TaskStyle::OpenAi,
            r#"{"prompt":"x","size":"16:9","resolution":"1k"}"#,
        )
        .expect("ok");
        let v: Value = serde_json::from_slice(&s.body).expect("json");
        assert_eq!(v["size"], "1536x1024");
        assert!(v.get("resolution").is_none());
        assert_eq!(s.run, Run::SyncJson);
        let e = submit(
            Media::Image,
            ModelKind::Image,
            TaskStyle::OpenAi,
            r#"{"prompt":"x","size":"16:9","resolution":"2k"}"#,
        )
        .expect_err("2k");
        assert_eq!(e.param, "resolution");
        let e = submit(Media::Image, ModelKind::Image, TaskStyle::OpenAi, r#"{"prompt":"x","size":"640x480"}"#)
            .expect_err("size");
        assert_eq!(e.param, "size");
        let s =
            submit(Media::Video, ModelKind::Video, TaskStyle::OpenAi, r#"{"prompt":"x","size":"9:16","duration":8}"#)
                .expect("ok");
        let v: Value = serde_json::from_slice(&s.body).expect("json");
        assert_eq!((v["size"].as_str(), v["seconds"].as_str(), s.path), (Some("720x1280"), Some("8"), "/videos"));
        assert_eq!(
            submit(Media::Video, ModelKind::Video, TaskStyle::OpenAi, r#"{"prompt":"x","duration":5}"#)
                .expect_err("5s")
                .param,
            "duration"
        );
        // OpenAI's own `seconds` (a string there, or a number) is the length billed and asked for.
        let video = |body: &str| submit(Media::Video, ModelKind::Video, TaskStyle::OpenAi, body);
        for body in [r#"{"prompt":"x","seconds":"12"}"#, r#"{"prompt":"x","seconds":12}"#] {
            let s = video(body).expect("ok");
            let v: Value = serde_json::from_slice(&s.body).expect("json");
            assert_eq!((s.seconds, v["seconds"].as_str()), (12, Some("12")), "{body}");
        }
        assert_eq!(video(r#"{"prompt":"x"}"#).expect("ok").seconds, 4, "the upstream's default");
        assert_eq!(video(r#"{"prompt":"x","seconds":"5"}"#).expect_err("5 s").param, "seconds");
        assert_eq!(video(r#"{"prompt":"x","seconds":"long"}"#).expect_err("words").param, "seconds");
        assert_eq!(video(r#"{"prompt":"x","seconds":"8","duration":8}"#).expect_err("both").param, "seconds");
        let s = submit(Media::Audio, ModelKind::Audio, TaskStyle::OpenAi, r#"{"prompt":"hello"}"#).expect("ok");
        let v: Value = serde_json::from_slice(&s.body).expect("json");
        assert_eq!((v["input"].as_str(), v["voice"].as_str(), s.run), (Some("hello"), Some("alloy"), Run::SyncBytes));
    }

    #[test]
    fn wrapped_submit_shapes_and_statuses() {
        let (id, st) =
            parse_submit(TaskStyle::Wrapped, br#"{"code":200,"data":[{"status":"submitted","task_id":"task_01K"}]}"#)
                .expect("array form");
        assert_eq!((id.as_str(), st.status), ("task_01K", TaskStatus::Pending));
        let (id, _) = parse_submit(TaskStyle::Wrapped, br#"{"code":200,"data":{"id":"task_02","status":"pending"}}"#)
            .expect("object form");
        assert_eq!(id, "task_02");
        assert!(parse_submit(TaskStyle::Wrapped, br#"{"code":500,"msg":"x"}"#).is_none());
        let st = parse_poll(TaskStyle::Wrapped, br#"{"code":200,"data":{"id":"t","status":"completed","progress":100,"result":{"images":[{"url":["https://a/1.png","https://a/2.png"]}],"videos":[{"url":"https://a/v.mp4"}]}}}"#).expect("poll");
        assert_eq!(st.status, TaskStatus::Completed);
        assert_eq!(st.results, vec!["https://a/1.png", "https://a/2.png", "https://a/v.mp4"]);
        let st = parse_poll(
            TaskStyle::Wrapped,
            br#"{"code":200,"data":{"id":"t","status":"cancelled","error":{"code":"cancelled","message":"stop"}}}"#,
        )
        .expect("poll");
        assert_eq!((st.status, st.error.map(|e| e.0)), (TaskStatus::Failed, Some("cancelled".to_string())));
    }

    #[test]
    fn flat_poll_and_unknown_words() {
        let st = parse_poll(TaskStyle::Flat, br#"{"id":"t","status":"processing","progress":42.5}"#).expect("poll");
        assert_eq!((st.status, st.progress), (TaskStatus::Processing, 42));
        let st = parse_poll(TaskStyle::Flat, br#"{"id":"t","status":"weird-new-word","progress":500}"#).expect("poll");
        assert_eq!((st.status, st.progress), (TaskStatus::Processing, 99));
        let st = parse_poll(
            TaskStyle::Flat,
            br#"{"id":"t","status":"failed","error":{"code":"content_policy_violation","message":"no"}}"#,
        )
        .expect("poll");
        assert_eq!(st.error, Some(("content_policy_violation".into(), "no".into())));
        let st = parse_poll(TaskStyle::OpenAi, br#"{"id":"v","status":"in_progress","progress":50}"#).expect("poll");
        assert_eq!(st.status, TaskStatus::Processing);
    }
}
