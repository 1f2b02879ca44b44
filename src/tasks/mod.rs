//! Async media generation behind one task API: `POST /v1/{images,videos,audios}/generations`
//! answers a task at once, `GET /v1/tasks/{id}` answers its current state, for the key that
//! created it only.
//!
//! Two kinds of tasks:
//! - relayed: the upstream runs a task API (flat, wrapped, or OpenAI video jobs). The task id
//!   carries everything needed to poll it (`id`), so any instance with the same task secret
//!   answers, and a restart loses nothing. Polls of one task are coalesced and cached for a
//!   second, so many callers polling one task make at most one upstream poll per second.
//! - local: OpenAI's synchronous image and speech calls, run by the gateway in the background;
//!   the state and results (inline `data:` URLs) live in the task store (`store`).
//!
//! Billing: the gateway owns every relayed task it hands out until the task reaches a final state,
//! whether or not anyone polls it. Submit records it as pending in the ledger's database;
//! `settle_pending` (a background loop) polls pending tasks on a backoff schedule, reusing any
//! fresher answer a caller's poll already got, so a caller's poll and the settler share one
//! upstream poll per task per interval. The first time a process sees a task final (a caller's
//! poll or the settler), it writes the task's one ledger row, keyed by the task id: the ledger's
//! unique id, not a cache, makes it once across restarts and instances. A task not finished by its
//! model's deadline is failed.
//!
//! Media content (`GET /v1/tasks/{id}/content`) is not fetched here: `content` checks ownership
//! and names the upstream path, and the proxy relays the bytes through Pingora as the caller reads
//! them. Only submit and poll answers are read whole (polls capped at `MAX_POLL_REPLY`).
//! Imports: `auth`, `cost`, `error`, `ledger`, `metrics`, `registry`; `client` uses
//! `proxy::upstream` (peer and path helpers). Not `plan`.

pub mod client;
pub mod id;
pub mod store;
pub mod styles;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::cost::{self, MediaUnits};
use crate::error::{error_body, Dialect, GatewayError};
use crate::ledger::{Ledger, PendingTask, Row};
use crate::limits::Limits;
use crate::metrics;
use crate::money::Money;
use crate::registry::{Key, Model, Price, Registry, Snapshot, TaskStyle, Upstream};
use client::{CallError, UpstreamClient};
use id::{Origin, TaskRef};
use store::TaskStore;
use styles::{Media, Run, TaskError};

/// Largest upstream answer read for a submit (a synchronous image or speech call's answer is the
/// media itself, kept as the task's result).
const MAX_REPLY: usize = 256 * 1024 * 1024;
/// Largest poll answer read: a status with result URLs, small; a larger one is treated as a
/// transient failure (the last known state is shown).
const MAX_POLL_REPLY: usize = 4 * 1024 * 1024;
/// How long a poll answer is reused for other polls of the same task.
const POLL_CACHE: Duration = Duration::from_secs(1);
/// Bound on the poll-coalescing table.
const MAX_POLL_SLOTS: usize = 100_000;

/// Portable task status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Accepted, not started.
    Pending,
    /// Running.
    Processing,
    /// Done, results available.
    Completed,
    /// Failed (upstream failure, cancellation, deadline).
    Failed,
}

impl TaskStatus {
    /// Lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Processing => "processing",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
        }
    }

    fn terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed)
    }
}

/// A task's state as the gateway shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    /// Status.
    pub status: TaskStatus,
    /// 0..=100.
    pub progress: u8,
    /// Result URLs (when completed).
    pub results: Vec<String>,
    /// `(code, message)` (when failed).
    pub error: Option<(String, String)>,
    /// Billable units seen at completion (images or seconds), for the usage object.
    pub units: f64,
}

impl TaskState {
    fn new(status: TaskStatus) -> Self {
        TaskState { status, progress: 0, results: Vec::new(), error: None, units: 0.0 }
    }

    fn failed(code: &str, message: &str) -> Self {
        TaskState {
            status: TaskStatus::Failed,
            progress: 0,
            results: Vec::new(),
            error: Some((code.into(), message.into())),
            units: 0.0,
        }
    }
}

/// A complete local answer.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
    /// `content-type`.
    pub content_type: String,
    /// The gateway's own refusal or failure, as `cheapmodel_rejected_total{reason}` counts it
    /// (`None`: a success, or the upstream's own error passed on).
    pub rejected: Option<&'static str>,
}

/// A submit the gateway checked and mapped for its upstream, not sent yet (`Tasks::prepare`).
pub struct PreparedSubmit {
    style: TaskStyle,
    mapped: styles::UpstreamSubmit,
    /// What the task costs if it makes what was asked (the requested images and seconds at the
    /// model's prices): the key's budget counts it as spent once the upstream accepts the task.
    pub expected: Money,
}

impl Answer {
    /// A 200 with a JSON body already rendered.
    pub fn ok_json(body: Bytes) -> Self {
        Answer { status: 200, body, content_type: "application/json".into(), rejected: None }
    }

    fn json(status: u16, v: &impl Serialize) -> Self {
        Answer {
            status,
            body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            content_type: "application/json".into(),
            rejected: None,
        }
    }

    fn error(status: u16, message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Self {
        Answer {
            status,
            body: error_body(Dialect::OpenAi, status, message, (kind, code, param)),
            content_type: "application/json".into(),
            rejected: None,
        }
    }

    /// The gateway's own error, counted in `cheapmodel_rejected_total` under its `code`.
    fn own_error(status: u16, message: &str, kind: &str, code: &'static str, param: Option<&str>) -> Self {
        Answer { rejected: Some(code), ..Answer::error(status, message, kind, Some(code), param) }
    }

    /// The one answer for an unknown, foreign, forged or altered task id.
    fn not_found() -> Self {
        Answer::own_error(404, "No such task.", "invalid_request_error", "task_not_found", None)
    }

    fn bad_request(e: &TaskError) -> Self {
        Answer::own_error(400, &e.message, "invalid_request_error", "invalid_parameter", Some(e.param))
    }

    fn upstream_unavailable() -> Self {
        Answer::own_error(
            502,
            "The upstream provider could not be reached or answered an invalid response.",
            "server_error",
            "upstream_unavailable",
            None,
        )
    }
}

#[derive(Serialize)]
struct TaskObject<'a> {
    id: &'a str,
    object: String,
    #[serde(rename = "type")]
    media: &'a str,
    model: &'a str,
    created: u64,
    status: TaskStatus,
    progress: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

fn task_object(id: &str, r: &TaskRef, state: &TaskState, model: Option<&Model>) -> Answer {
    let usage = (state.status == TaskStatus::Completed).then(|| {
        let cost = cost_of(r, state, model).as_usd_f64();
        let mut u = serde_json::Map::new();
        if r.media == "image" {
            u.insert("images".into(), Value::from(state.results.len()));
        } else if r.seconds > 0 {
            u.insert("seconds".into(), Value::from(r.seconds));
        }
        u.insert("cost_usd".into(), Value::from(cost));
        Value::Object(u)
    });
    Answer::json(
        200,
        &TaskObject {
            id,
            object: format!("{}.generation.task", r.media),
            media: &r.media,
            model: &r.model,
            created: r.created,
            status: state.status,
            progress: if state.status == TaskStatus::Completed { 100 } else { state.progress.min(99) },
            results: (state.status == TaskStatus::Completed).then_some(state.results.as_slice()),
            error: state.error.as_ref().map(|(c, m)| serde_json::json!({"code": c, "message": m})),
            usage,
        },
    )
}

/// Billable units of a completed task: images generated, seconds requested.
fn units_of(r: &TaskRef, state: &TaskState) -> MediaUnits {
    MediaUnits {
        images: if r.media == "image" { state.results.len() as u64 } else { 0 },
        seconds: u64::from(r.seconds),
    }
}

/// Cost of a completed task (`cost::of_task`), at the prices its id carries (those of submit
/// time), else (an id made before ids carried them) at the model's current ones. Zero when neither
/// is known: an old id whose model is no longer configured.
fn cost_of(r: &TaskRef, state: &TaskState, model: Option<&Model>) -> Money {
    let price = match (r.price, model) {
        (Some([per_image, per_second, per_request]), _) => {
            Price { per_image, per_second, per_request, ..Price::default() }
        }
        (None, Some(m)) => m.price,
        (None, None) => return Money::ZERO,
    };
    cost::of_task(&units_of(r, state), &price)
}

/// Writes a finished task's row. Its cost counts against the key's budget as the row lands
/// (`count_landed_task`), once, whichever instance or run writes it.
fn bill(ledger: &Ledger, row: Row) {
    ledger.record(row);
}

/// What a landed task row adds to its key's budget: its cost less what its submit already counted
/// (the expected cost; a failed task gives that back). Dated at submit, as the row is.
fn count_landed_task(limiter: &Limits, row: &Row) {
    let rest = Money(row.cost.0.saturating_sub(row.charged.0));
    if rest != Money::ZERO {
        limiter.charge(&row.key, rest, row.time_ms.saturating_mul(1000));
    }
}

/// What pending tasks' submits counted against their keys' budgets, as `(key, day, charged)`, for
/// the spend restored at start (the ledger has no row of them yet). Ids this `secret` did not sign
/// count nothing.
pub fn pending_charges(secret: &[u8], pending: &[PendingTask]) -> Vec<(Arc<str>, String, Money)> {
    pending
        .iter()
        .filter_map(|p| {
            let task = id::decode(secret, &p.id)?;
            (task.charged != 0).then(|| (p.key.clone(), crate::ledger::day_of(p.created_s * 1000), Money(task.charged)))
        })
        .collect()
}

/// The task's one ledger row, for a final `state`. Its time is the submit time, so that every
/// instance that settles the task builds the same row.
fn task_row(id: &str, r: &TaskRef, state: &TaskState, model: Option<&Model>, key_name: &Arc<str>) -> Row {
    let completed = state.status == TaskStatus::Completed;
    if completed && r.price.is_none() && model.is_none() {
        log::warn!(
            "a task of model {} is billed 0: its id carries no prices and the model is no longer configured",
            r.model
        );
    }
    let units = if completed { units_of(r, state) } else { MediaUnits::default() };
    let endpoint = match r.media.as_str() {
        "image" => "/v1/images/generations",
        "video" => "/v1/videos/generations",
        _ => "/v1/audios/generations",
    };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let created_ms = r.created as i64 * 1000;
    Row {
        id: id.to_string(),
        request_id: id.to_string(),
        time_ms: created_ms,
        key: key_name.clone(),
        model: model.map_or_else(|| Arc::from(r.model.as_str()), |m| m.name.clone()),
        upstream: model.map_or_else(|| Arc::from(r.upstream.as_str()), |m| m.upstream.name.clone()),
        endpoint: endpoint.into(),
        status: if completed { 200 } else { 502 },
        stream: false,
        translated: false,
        usage: Default::default(),
        media: units,
        cost: if completed { cost_of(r, state, model) } else { Money::ZERO },
        latency_us: now_ms.saturating_sub(created_ms).saturating_mul(1000),
        ttfb_us: None,
        task: true,
        estimated: false,
        charged: Money(r.charged),
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Default)]
struct PollSlot {
    last: Option<(Instant, TaskState)>,
    /// This process wrote the task's ledger row (the ledger's unique id covers other processes).
    billed: bool,
}

/// The task engine.
pub struct Tasks {
    client: Arc<UpstreamClient>,
    store: Arc<dyn TaskStore>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<PollSlot>>>>,
    ledger: Arc<Ledger>,
    /// Tasks submitted here since the settler last looked (it also reads the database, for the
    /// tasks of other instances and of earlier runs).
    submitted: Mutex<Vec<PendingTask>>,
}

/// Who is asking.
pub struct Caller<'a> {
    /// sha256 of the caller's key.
    pub digest: [u8; 32],
    /// The key entry.
    pub key: &'a Key,
}

impl Tasks {
    /// An engine with `store` for the tasks it runs itself, billing into `ledger`; task costs
    /// count against the keys' budgets in `limiter` as their rows land.
    pub fn new(store: Arc<dyn TaskStore>, ledger: Arc<Ledger>, limiter: Arc<Limits>) -> Self {
        ledger.on_task_landed(Arc::new(move |row: &Row| count_landed_task(&limiter, row)));
        Tasks {
            client: Arc::new(UpstreamClient::new()),
            store,
            slots: Mutex::new(HashMap::new()),
            ledger,
            submitted: Mutex::new(Vec::new()),
        }
    }

    /// `POST /v1/{images,videos,audios}/generations`, after auth and model routing: the request
    /// checked and mapped for the model's upstream, with its expected cost, or the 400 refusing it
    /// (nothing was sent: no request routed, no ledger row).
    pub fn prepare(&self, media: Media, model: &Model, body: &[u8]) -> Result<PreparedSubmit, Answer> {
        let Some(style) = model.upstream.task_style else {
            return Err(Answer::bad_request(&TaskError {
                param: "model",
                message: format!("the model `{}` cannot generate media", model.name),
            }));
        };
        let billed = if model.price.per_second > 0 {
            styles::BilledSeconds::Yes { default: model.default_duration_seconds }
        } else {
            styles::BilledSeconds::No
        };
        let mapped = styles::map_submit(media, model.kind, style, &model.upstream_model, billed, body)
            .map_err(|e| Answer::bad_request(&e))?;
        let asked = MediaUnits { images: u64::from(mapped.images), seconds: u64::from(mapped.seconds) };
        Ok(PreparedSubmit { style, expected: cost::of_task(&asked, &model.price), mapped })
    }

    /// Sends a `prepare`d submit to its upstream (a task API), or runs it here. The task's id
    /// records `expected` as counted against the key's budget: the caller counts it when the
    /// answer is a success.
    pub async fn submit(
        &self,
        snapshot: &Arc<Snapshot>,
        caller: &Caller<'_>,
        media: Media,
        model: &Arc<Model>,
        prepared: PreparedSubmit,
    ) -> Answer {
        let PreparedSubmit { style, mapped, expected } = prepared;
        let mut task = TaskRef {
            origin: Origin::Relayed,
            upstream: model.upstream.name.to_string(),
            upstream_id: String::new(),
            model: model.name.to_string(),
            media: media.as_str().to_string(),
            created: unix_now(),
            owner: id::owner_of(&caller.digest),
            seconds: mapped.seconds,
            price: Some([model.price.per_image, model.price.per_second, model.price.per_request]),
            charged: expected.0,
        };
        let state = match mapped.run {
            Run::Relay => {
                let deadline = model.upstream.read_timeout.min(Duration::from_secs(120));
                let reply = match self
                    .client
                    .call(&model.upstream, "POST", mapped.path, Some(&mapped.body), deadline, MAX_REPLY)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        log::warn!("task submit to {} failed: {e:?}", model.upstream.name);
                        return if e == CallError::Timeout {
                            Answer::own_error(
                                504,
                                "The upstream provider did not answer in time.",
                                "server_error",
                                "upstream_timeout",
                                None,
                            )
                        } else {
                            Answer::upstream_unavailable()
                        };
                    }
                };
                if !(200..300).contains(&reply.status) {
                    if GatewayError::for_upstream_status(reply.status).is_some() {
                        GatewayError::warn_credentials_refused(&model.upstream.name, reply.status);
                    }
                    return upstream_error(reply.status, &reply.body);
                }
                let Some((upstream_id, state)) = styles::parse_submit(style, &reply.body) else {
                    // Some wrapped APIs answer HTTP 200 with an error code inside.
                    return upstream_error(502, &reply.body);
                };
                task.upstream_id = upstream_id;
                state
            }
            Run::SyncJson | Run::SyncBytes => {
                let mut local = [0u8; 16];
                if getrandom::getrandom(&mut local).is_err() {
                    let internal = Answer::error(500, "Internal gateway error.", "server_error", None, None);
                    return Answer { rejected: Some("internal"), ..internal };
                }
                task.origin = Origin::Local;
                task.upstream_id = crate::auth::hex(&local);
                let state = TaskState::new(TaskStatus::Pending);
                self.store.put(&task.upstream_id, state.clone());
                let id = id::encode(&snapshot.task_secret, &task);
                self.spawn_local(snapshot.clone(), model.clone(), task.clone(), id, caller.key.name.clone(), mapped);
                state
            }
        };
        metrics::get().tasks.with_label_values(&[&model.name, "pending"]).inc();
        let id = id::encode(&snapshot.task_secret, &task);
        if task.origin == Origin::Relayed {
            // Settled whether or not anyone polls, with or without a ledger: the budget counts its
            // expected cost from now on, and only its end counts the difference.
            let pending = PendingTask { id: id.clone(), key: caller.key.name.clone(), created_s: task.created as i64 };
            self.submitted.lock().unwrap_or_else(|e| e.into_inner()).push(pending.clone());
            self.ledger.pending(pending);
        }
        // The submit answer is always the task as accepted.
        let shown = TaskState { status: TaskStatus::Pending, ..state };
        task_object(&id, &task, &shown, Some(model))
    }

    fn spawn_local(
        &self,
        snapshot: Arc<Snapshot>,
        model: Arc<Model>,
        task: TaskRef,
        id: String,
        key_name: Arc<str>,
        mapped: styles::UpstreamSubmit,
    ) {
        let store = self.store.clone();
        let client = self.client.clone();
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            let _keep = snapshot;
            let mut running = TaskState::new(TaskStatus::Processing);
            running.progress = 10;
            store.put(&task.upstream_id, running);
            let reply = client
                .call(&model.upstream, "POST", mapped.path, Some(&mapped.body), model.task_deadline, MAX_REPLY)
                .await;
            let state = match reply {
                Err(CallError::Timeout) => {
                    TaskState::failed("deadline_exceeded", "the task did not finish before its deadline")
                }
                Err(_) => TaskState::failed("upstream_unavailable", "the upstream provider could not be reached"),
                Ok(r) if !(200..300).contains(&r.status) => {
                    let msg = upstream_message(&r.body).unwrap_or_else(|| format!("upstream error {}", r.status));
                    TaskState::failed(&upstream_code(&r.body).unwrap_or_else(|| "upstream_error".into()), &msg)
                }
                Ok(r) => match mapped.run {
                    Run::SyncBytes => {
                        let ct = r.content_type.unwrap_or_else(|| "audio/mpeg".into());
                        TaskState {
                            status: TaskStatus::Completed,
                            progress: 100,
                            results: vec![format!("data:{ct};base64,{}", B64.encode(&r.body))],
                            error: None,
                            units: 0.0,
                        }
                    }
                    _ => match sync_image_results(&r.body) {
                        Some(results) => {
                            TaskState { status: TaskStatus::Completed, progress: 100, results, error: None, units: 0.0 }
                        }
                        None => TaskState::failed("upstream_invalid_response", "the upstream answered without images"),
                    },
                },
            };
            bill(&ledger, task_row(&id, &task, &state, Some(&model), &key_name));
            store.put(&task.upstream_id, state);
        });
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn poll(&self, snapshot: &Arc<Snapshot>, caller: &Caller<'_>, id: &str, base_url: &str) -> Answer {
        let Some(task) = self.owned(snapshot, caller, id) else {
            return Answer::not_found();
        };
        let model = snapshot.model(&task.model).cloned();
        match task.origin {
            Origin::Local => match self.store.get(&task.upstream_id) {
                Some(state) => task_object(id, &task, &state, model.as_deref()),
                None => Answer::not_found(),
            },
            Origin::Relayed => {
                let Some(upstream) = snapshot.upstreams.get(&task.upstream).cloned() else {
                    return Answer::not_found();
                };
                let mut state =
                    self.relayed_state(&upstream, &task, id, model.as_deref(), &caller.key.name, POLL_CACHE).await;
                if state.status == TaskStatus::Completed && upstream.task_style == Some(TaskStyle::OpenAi) {
                    state.results = vec![format!("{base_url}/v1/tasks/{id}/content")];
                }
                task_object(id, &task, &state, model.as_deref())
            }
        }
    }

    /// `GET /v1/tasks/{id}/content`: where the media of a relayed OpenAI video job is (it needs
    /// the upstream key, so the gateway fetches it). The bytes go through Pingora as the caller
    /// reads them (`proxy`), never whole in memory; here only the ownership check and the path.
    pub fn content(&self, snapshot: &Snapshot, caller: &Caller<'_>, id: &str) -> Result<Download, Answer> {
        let task = self.owned(snapshot, caller, id).ok_or_else(Answer::not_found)?;
        let upstream = snapshot.upstreams.get(&task.upstream).ok_or_else(Answer::not_found)?;
        if task.origin != Origin::Relayed || upstream.task_style != Some(TaskStyle::OpenAi) {
            return Err(Answer::not_found());
        }
        Ok(Download { upstream: upstream.clone(), path: format!("/v1/videos/{}/content", task.upstream_id) })
    }

    fn owned(&self, snapshot: &Snapshot, caller: &Caller<'_>, id: &str) -> Option<TaskRef> {
        let task = id::decode(&snapshot.task_secret, id)?;
        (task.owner == id::owner_of(&caller.digest)).then_some(task)
    }

    async fn relayed_state(
        &self,
        upstream: &Upstream,
        task: &TaskRef,
        id: &str,
        model: Option<&Model>,
        key_name: &Arc<str>,
        fresh_for: Duration,
    ) -> TaskState {
        let slot_key = format!("{}\u{0}{}", task.upstream, task.upstream_id);
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.len() >= MAX_POLL_SLOTS {
                slots.retain(|_, s| Arc::strong_count(s) > 1);
            }
            slots.entry(slot_key).or_default().clone()
        };
        // One poll in flight per task; the others wait here and reuse its answer.
        let mut slot = slot.lock().await;
        if let Some((at, state)) = &slot.last {
            if state.status.terminal() || at.elapsed() < fresh_for {
                return state.clone();
            }
        }
        let previous = slot.last.as_ref().map(|(_, s)| s.clone());
        let style = upstream.task_style.unwrap_or(TaskStyle::Flat);
        let path = styles::poll_path(style, &task.upstream_id);
        let timeout = upstream.read_timeout.min(Duration::from_secs(30));
        let polled = match self.client.call(upstream, "GET", &path, None, timeout, MAX_POLL_REPLY).await {
            Ok(r) if (200..300).contains(&r.status) => styles::parse_poll(style, &r.body)
                .unwrap_or_else(|| previous.clone().unwrap_or_else(|| TaskState::new(TaskStatus::Processing))),
            Ok(r) if r.status == 404 => {
                TaskState::failed("upstream_task_not_found", "the upstream no longer knows this task")
            }
            Ok(r) => {
                if GatewayError::for_upstream_status(r.status).is_some() {
                    GatewayError::warn_credentials_refused(&upstream.name, r.status);
                }
                previous.clone().unwrap_or_else(|| TaskState::new(TaskStatus::Pending))
            }
            // A transient upstream problem is not the task's failure: show the last known state.
            Err(_) => previous.clone().unwrap_or_else(|| TaskState::new(TaskStatus::Pending)),
        };
        // The deadline fails only a task the upstream has not finished: it is asked first, so
        // that a task that ended between two of the settler's polls (up to a minute apart), or
        // long before a restart, is answered and billed as it ended.
        let deadline = model.map_or(Duration::from_secs(1800), |m| m.task_deadline);
        let state = if !polled.status.terminal() && unix_now().saturating_sub(task.created) > deadline.as_secs() {
            TaskState::failed("deadline_exceeded", "the task did not finish before its deadline")
        } else {
            polled
        };
        if state.status.terminal() && !slot.billed {
            slot.billed = true;
            bill(&self.ledger, task_row(id, task, &state, model, key_name));
        }
        slot.last = Some((Instant::now(), state.clone()));
        state
    }
}

/// How often the settler looks for tasks due a poll.
const SETTLE_TICK: Duration = Duration::from_secs(1);
/// The settler's first wait after submit, doubled after each poll up to `SETTLE_MAX`.
const SETTLE_FIRST: Duration = Duration::from_secs(1);
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// How often the pending list is re-read from the database (other instances add to it).
const SETTLE_RELOAD: Duration = Duration::from_secs(10);
/// Most tasks polled per tick (one after the other: the settler is background work).
const SETTLE_BATCH: usize = 32;

impl Tasks {
    /// The settler: until `stop` turns true, polls every pending relayed task (this run's, and the
    /// ledger database's when there is one) on a backoff schedule until it is final, and bills it (`relayed_state`). Reuses
    /// an answer a caller's poll got within the current backoff interval instead of polling.
    pub async fn settle_pending(&self, registry: Arc<Registry>, mut stop: tokio::sync::watch::Receiver<bool>) {
        // Without a database (`ledger.url: none`) the tasks to settle are only this run's.
        let url = self.ledger.url().map(str::to_string);
        // Task id → (when it is due, how long its wait before that turn was, key name).
        let mut schedule: HashMap<String, (Instant, Duration, Arc<str>)> = HashMap::new();
        let mut reloaded: Option<Instant> = None;
        // The read of the pending list, while it has not answered.
        let mut listing: Option<tokio::task::JoinHandle<Result<Vec<PendingTask>, String>>> = None;
        loop {
            let mut patience = Duration::ZERO;
            if let Some(url) =
                url.clone().filter(|_| listing.is_none() && reloaded.is_none_or(|t| t.elapsed() >= SETTLE_RELOAD))
            {
                reloaded = Some(Instant::now());
                listing = Some(tokio::task::spawn_blocking(move || {
                    crate::ledger::backend::connect(&url).and_then(|mut db| db.pending_tasks())
                }));
                patience = crate::ledger::database::CALL_DEADLINE;
            }
            // A frozen database must not stop the settling of the tasks already known (nor the
            // shutdown): past the deadline the read is only looked at once a turn, and no second
            // one starts until it ends.
            if let Some(handle) = listing.as_mut() {
                match tokio::time::timeout(patience, handle).await {
                    Ok(listed) => {
                        listing = None;
                        match listed {
                            Ok(Ok(list)) => {
                                // Entries are only removed once final: a task another instance
                                // settled costs one more poll here, which answers final and bills
                                // nothing twice.
                                for p in &list {
                                    let age = Duration::from_secs(unix_now().saturating_sub(p.created_s as u64));
                                    let first = SETTLE_FIRST.saturating_sub(age);
                                    schedule.entry(p.id.clone()).or_insert((
                                        Instant::now() + first,
                                        SETTLE_FIRST,
                                        p.key.clone(),
                                    ));
                                }
                            }
                            Ok(Err(e)) => log::warn!("task settler: cannot read pending tasks: {e}"),
                            Err(_) => {}
                        }
                    }
                    Err(_) if patience > Duration::ZERO => {
                        log::warn!(
                            "task settler: the ledger did not list pending tasks in time; settling the known ones"
                        )
                    }
                    Err(_) => {}
                }
            }
            for p in std::mem::take(&mut *self.submitted.lock().unwrap_or_else(|e| e.into_inner())) {
                schedule.entry(p.id).or_insert((Instant::now() + SETTLE_FIRST, SETTLE_FIRST, p.key));
            }
            let snapshot = registry.current();
            let now = Instant::now();
            let due: Vec<(String, Duration, Arc<str>)> = schedule
                .iter()
                .filter(|(_, (at, _, _))| *at <= now)
                .take(SETTLE_BATCH)
                .map(|(id, (_, waited, key))| (id.clone(), *waited, key.clone()))
                .collect();
            for (id, waited, key) in due {
                // An answer from within the wait (a caller's poll) is as good as a new poll.
                if self.settle_one(&snapshot, &id, waited, &key).await {
                    schedule.remove(&id);
                } else {
                    let wait = (waited * 2).min(SETTLE_MAX);
                    schedule.insert(id, (Instant::now() + wait, wait, key));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SETTLE_TICK) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Polls one pending task (or reuses a fresh answer); true once it is final and billed.
    async fn settle_one(&self, snapshot: &Snapshot, id: &str, fresh_for: Duration, key: &Arc<str>) -> bool {
        let Some(task) = id::decode(&snapshot.task_secret, id) else {
            // Signed with another secret: not this configuration's to settle.
            return false;
        };
        let Some(upstream) = snapshot.upstreams.get(&task.upstream).cloned() else { return false };
        let model = snapshot.model(&task.model).cloned();
        let state = self.relayed_state(&upstream, &task, id, model.as_deref(), key, fresh_for).await;
        state.status.terminal()
    }
}

/// Result URLs of a synchronous OpenAI image answer (`data[].url` or `data[].b64_json`).
fn sync_image_results(body: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let format = v.get("output_format").and_then(Value::as_str).unwrap_or("png");
    let results: Vec<String> = v
        .get("data")?
        .as_array()?
        .iter()
        .filter_map(|d| match (d.get("url").and_then(Value::as_str), d.get("b64_json").and_then(Value::as_str)) {
            (Some(url), _) => Some(url.to_string()),
            (None, Some(b64)) => Some(format!("data:image/{format};base64,{b64}")),
            _ => None,
        })
        .collect();
    (!results.is_empty()).then_some(results)
}

fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .or_else(|| v.get("msg"))
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn upstream_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/code").and_then(Value::as_str).map(str::to_string)
}

/// An upstream's own error, status kept, in the OpenAI shape our task API uses.
/// A task's media, fetched from its upstream as the caller reads it.
#[derive(Debug, Clone)]
pub struct Download {
    /// The upstream that holds the media.
    pub upstream: Arc<Upstream>,
    /// Its path there, as a caller path (`/v1/...`, mapped under the upstream's base path).
    pub path: String,
}

/// An upstream's error reply, in the gateway's (OpenAI-shaped) error format.
pub fn upstream_error(status: u16, body: &[u8]) -> Answer {
    if let Some(own) = GatewayError::for_upstream_status(status) {
        return Answer {
            status: own.status(),
            body: own.body(Dialect::OpenAi),
            content_type: "application/json".into(),
            rejected: Some(own.reason()),
        };
    }
    let message = upstream_message(body).unwrap_or_else(|| format!("upstream error {status}"));
    let code = upstream_code(body);
    let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
    Answer::error(status, &message, kind, code.as_deref(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_tasks_count_what_their_submit_charged_on_their_submit_day() {
        let task = |charged| TaskRef {
            origin: Origin::Relayed,
            upstream: "evolink".into(),
            upstream_id: "u1".into(),
            model: "kling-v2".into(),
            media: "video".into(),
            created: 1_796_508_385,
            owner: "00".into(),
            seconds: 5,
            price: Some([0, 50_000_000_000, 10_000_000_000]),
            charged,
        };
        let pending = |id: String| PendingTask { id, key: Arc::from("team-a"), created_s: 1_796_508_385 };
        let list = [
            pending(id::encode(b"s", &task(260_000_000_000))),
            pending(id::encode(b"s", &task(0))),
            pending(id::encode(b"another secret", &task(7))),
            pending("task_garbage".into()),
        ];
        assert_eq!(
            pending_charges(b"s", &list),
            vec![(Arc::from("team-a"), "2026-12-05".to_string(), Money(260_000_000_000))]
        );
    }

    #[test]
    fn an_upstream_refusing_the_gateways_key_is_the_gateways_502_without_the_upstreams_body() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-proj-****wxyz.","code":"invalid_api_key"}}"#;
        for status in [401, 403] {
            let a = upstream_error(status, body);
            assert_eq!((a.status, a.rejected), (502, Some("upstream_credentials")));
            let text = String::from_utf8_lossy(&a.body);
            assert!(text.contains("upstream_credentials_refused") && !text.contains("wxyz"), "{text}");
        }
        // Other upstream errors keep their status and message.
        let a = upstream_error(429, br#"{"error":{"message":"slow down","code":"rate_limited"}}"#);
        assert_eq!(a.status, 429);
        assert!(String::from_utf8_lossy(&a.body).contains("slow down"));
    }

    #[test]
    fn sync_image_results_become_urls() {
        let r = sync_image_results(br#"{"data":[{"b64_json":"AAAA"},{"url":"https://x/y.png"}]}"#).expect("results");
        assert_eq!(r, vec!["data:image/png;base64,AAAA", "https://x/y.png"]);
        assert!(sync_image_results(br#"{"data":[]}"#).is_none());
    }
}
