//! Limits and budgets shared by every instance, on Redis or Valkey (`server.state`).
//!
//! - **Admission** is one round trip: one pipeline holding one `admit.lua` call per scope that has
//!   limits (the key, the model). Each call checks and takes atomically for its scope. Every key
//!   of a scope carries the same hash tag (`cm:{k:NAME}…`, `cm:{m:NAME}…`), so each call stays
//!   on one Redis Cluster slot. When one scope refuses after the other took, the other's lease is
//!   returned at once (a settlement of nothing).
//! - **Leases** expire (`LEASE_TTL`) unless their instance renews them, so a crashed instance
//!   gives its concurrency slots and reservations back within `LEASE_TTL`.
//! - **Settlement** goes through a queue: the writer task sends whatever is queued as one
//!   pipeline of `settle.lua` calls. Settlements are numbered in send order and each scope keeps
//!   the last number applied per instance, so a batch is simply resent after a failure and
//!   nothing counts twice. Unsent settlements wait in memory while Redis is away. When the
//!   process exits, what is still unsent is sent once more (`flush_at_exit`) before it goes.
//! - **Redis unreachable** (an error, or no answer within `ADMIT_TIMEOUT`): the caller (`Limits`)
//!   falls back to the in-process limiter with this instance's share of each limit
//!   (`on_state_error: local`) or refuses with 503 (`deny`). After a failure, admissions skip
//!   Redis for `RETRY_AFTER_FAILURE`, so a dead Redis costs one failed call a second, not one per
//!   request. The instance rejoins the shared counters on its first success.
//!
//! Instances are counted in `cm:instances` (heartbeat every `RENEW_EVERY`), which gives the share.
//! Time is the gateway's clock, passed to the scripts: instances' clocks must agree (NTP).
//! Imports: `limits` (settings, clock), `money`, `metrics`, `ledger` (calendar). Not `proxy`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::sync::mpsc;

use super::{
    month_of, Allowance, BudgetSettings, Clock, Estimate, ExactRefused, LimitSettings, Refusal, Scope, DAY_US,
};
use crate::money::Money;

/// What an instance does while Redis is unreachable (`server.on_state_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStateError {
    /// In-process counters, each instance taking its share of every limit and budget.
    #[default]
    Local,
    /// Refuse with 503 in the caller's dialect.
    Deny,
}

/// How long an admission waits for Redis before it counts as unreachable.
pub const ADMIT_TIMEOUT: Duration = Duration::from_millis(50);
/// How long the first admissions wait for the first connection to Redis.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(1);
/// How long admissions skip Redis after it failed.
const RETRY_AFTER_FAILURE_US: i64 = 1_000_000;
/// A lease not renewed for this long is returned by the next admission of its scope.
const LEASE_TTL_US: i64 = 30_000_000;
/// Lease renewal and instance heartbeat period.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Settlements sent in one pipeline.
const SETTLE_BATCH: usize = 1000;
/// Settlements waiting for Redis beyond this many are dropped (counted); the ledger keeps them.
const MAX_UNSENT: usize = 1_000_000;

/// Set (without expiry) once the ledger's spend of the current periods is in Redis. Redis that
/// lost its data (restarted empty, flushed, failed over to an empty replica) has no mark: the
/// instances read the month's spend from the ledger again and raise the counts to it, even though
/// they may have recreated the counters meanwhile (`SET NX` would then keep the lower count).
const RESTORED_MARK: &str = "cm:spend_restored";
/// Raises a spend counter (KEYS[1]) to at least ARGV[1] pico-USD, expiring in ARGV[2] seconds: what
/// instances counted since is never lowered, and spend the ledger has is never forgotten. Both are
/// non-negative integers without leading zeros, compared as decimal strings (exact beyond the
/// 2^53 of Lua's doubles, as in `admit.lua`).
const RAISE_TO_LUA: &str = "local new, cur = ARGV[1], redis.call('GET', KEYS[1]) or '0' \
     if #new > #cur or (#new == #cur and new > cur) then redis.call('SET', KEYS[1], new, 'EX', ARGV[2]) end \
     return 0";

/// Spend per key and UTC day (days since the epoch).
type RestoredSpend = Vec<(Arc<str>, i64, Money)>;

/// The ledger's `(key, "YYYY-MM-DD", spend)` rows with their days as day numbers.
pub(super) fn by_day_number(rows: impl IntoIterator<Item = (Arc<str>, String, Money)>) -> RestoredSpend {
    rows.into_iter().filter_map(|(key, day, spend)| Some((key, crate::ledger::parse_day(&day)?, spend))).collect()
}

/// Reads the spend of `(month_start, today)` (UTC days, `YYYY-MM-DD`) from the ledger, as `(key,
/// day, spend)` (`Limits::raise`'s rows); empty when no key has a budget.
pub type SpendSource = Arc<dyn Fn(&str, &str) -> Result<Vec<(Arc<str>, String, Money)>, String> + Send + Sync>;

/// The key scope and the model scope of a lease (`None`: that scope is not limited).
type Scopes = (Option<Arc<str>>, Option<Arc<str>>);

/// A limited scope's lease in Redis, held by one admission.
#[derive(Debug)]
pub(super) struct SharedLease {
    pub(super) id: u64,
    /// The key scope and the model scope the lease is held in (`None`: that scope is unlimited).
    pub(super) key: Option<Arc<str>>,
    pub(super) model: Option<Arc<str>>,
}

/// Usage to add to a scope, releasing a lease or not.
#[derive(Debug)]
struct Settlement {
    /// Numbered when first sent (increasing in send order: see `settle.lua`).
    seq: u64,
    lease: Option<u64>,
    key: Option<Arc<str>>,
    model: Option<Arc<str>>,
    tokens: u64,
    spend: Money,
    at_us: i64,
}

/// The settlement queue's receiving end and what was taken from it but not yet sent.
struct Backlog {
    rx: mpsc::UnboundedReceiver<Settlement>,
    unsent: Vec<Settlement>,
    /// The last number given to a settlement.
    seq: u64,
}

impl Backlog {
    /// Moves everything queued into `unsent` and numbers what has no number yet.
    fn take_queued(&mut self) {
        while let Ok(s) = self.rx.try_recv() {
            self.unsent.push(s);
        }
        for s in self.unsent.iter_mut().filter(|s| s.seq == 0) {
            self.seq += 1;
            s.seq = self.seq;
        }
    }
}

/// How long `flush_at_exit` waits for `run` to hand the backlog back.
const PARK_WAIT: Duration = Duration::from_secs(2);

/// Hands the backlog back to `Shared` however `run` ends (a runtime shutting down drops it
/// mid-await), so that `flush_at_exit` finds what was not sent.
struct ParkOnDrop<'a> {
    shared: &'a Shared,
    backlog: Option<Backlog>,
}

impl Drop for ParkOnDrop<'_> {
    fn drop(&mut self) {
        *self.shared.backlog.lock().unwrap_or_else(|e| e.into_inner()) = self.backlog.take();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("Shared").field("instance", &self.instance).field("on_error", &self.on_error).finish()
    }
}

/// The shared state client of one instance.
pub struct Shared {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    /// What `Limits` does while Redis is unreachable.
    pub on_error: OnStateError,
    /// A random id per process: lease and settlement ids are unique across instances.
    instance: String,
    next_id: AtomicU64,
    retry_at_us: AtomicI64,
    /// A call failed since Redis last answered (`failed`, `answered`).
    outage: AtomicBool,
    instances: AtomicU32,
    /// Leases this instance holds, to renew: id → (key scope, model scope).
    held: Mutex<HashMap<u64, Scopes>>,
    queue: mpsc::UnboundedSender<Settlement>,
    /// The settlements not yet in Redis, while `run` is not holding them: before it starts, and
    /// after its runtime stopped (for `flush_at_exit`).
    backlog: Mutex<Option<Backlog>>,
    /// Spend to raise Redis's counts to at the next heartbeat (or at once: `restored_ready`), which then marks Redis as restored
    /// (`RESTORED_MARK`); `None`: nothing to write.
    restored: Arc<Mutex<Option<RestoredSpend>>>,
    /// Reads the month's spend from the ledger again (`set_spend_source`), when Redis lost it.
    spend_source: Mutex<Option<SpendSource>>,
    /// A read of the spend source is under way.
    restoring: Arc<AtomicBool>,
    /// Woken when a read of the spend source has set `restored`: written at once, not at the next
    /// heartbeat (up to `RENEW_EVERY` later, while the counts run from zero).
    restored_ready: Arc<tokio::sync::Notify>,
    /// Set once the first connection attempt has ended (see `admit`).
    first_attempt: tokio::sync::watch::Sender<bool>,
    admit_script: Script,
    settle_script: Script,
    clock: Clock,
}

fn key_scope(name: &str) -> String {
    format!("cm:{{k:{name}}}")
}

fn model_scope(name: &str) -> String {
    format!("cm:{{m:{name}}}")
}

/// The five keys of a scope at `now` (see `admit.lua`).
fn scope_keys(base: &str, now_us: i64) -> [String; 5] {
    [
        base.to_string(),
        format!("{base}:l"),
        format!("{base}:tok"),
        format!("{base}:d:{}", now_us.div_euclid(DAY_US)),
        format!("{base}:m:{}", month_of(now_us)),
    ]
}

fn opt_money(m: Option<Money>) -> String {
    m.map_or(String::new(), |m| m.0.max(0).to_string())
}

/// One scope's answer from `admit.lua`.
enum Answer {
    Took {
        requests: Option<(u64, f64)>,
        tokens_used: u64,
        tokens_reset_s: f64,
    },
    Refused(&'static str, u64),
    /// A request of exact cost that the `daily` or `monthly` budget cannot take whole, and the
    /// period's spend.
    RefusedExact(&'static str, Money),
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

fn parse_answer(v: &Value) -> Option<Answer> {
    let Value::Array(items) = v else { return None };
    if int(items.first()?) == 1 {
        let remaining = int(items.get(1)?);
        let reset_s = int(items.get(2)?) as f64 / 1000.0;
        let requests = (remaining >= 0).then_some((remaining as u64, reset_s));
        return Some(Answer::Took {
            requests,
            tokens_used: int(items.get(3)?).max(0) as u64,
            tokens_reset_s: int(items.get(4)?) as f64 / 1000.0,
        });
    }
    let what = match items.get(1)? {
        Value::BulkString(b) if b.ends_with(b"_exact") => {
            let period = if b.starts_with(b"daily") { "daily" } else { "monthly" };
            return Some(Answer::RefusedExact(period, Money(int(items.get(2)?))));
        }
        Value::BulkString(b) => match b.as_slice() {
            b"concurrency" => "concurrency",
            b"requests" => "requests",
            b"tokens" => "tokens",
            b"budget" => "budget",
            b"daily" => "daily",
            _ => "monthly",
        },
        _ => return None,
    };
    Some(Answer::Refused(what, int(items.get(2)?).max(0) as u64))
}

/// Connection timeouts: the first connect and reconnects stay short, so a dead Redis is found
/// out fast; each call also has its own timeout (`query`).
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

impl Shared {
    /// A client of `url` (checked here; connected by `run`).
    pub fn new(url: &str, on_error: OnStateError, clock: Clock) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("server.state: {e}"))?;
        let mut id = [0u8; 6];
        let _ = getrandom::getrandom(&mut id);
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Shared {
            client,
            conn: ArcSwapOption::empty(),
            on_error,
            instance: id.iter().map(|b| format!("{b:02x}")).collect(),
            next_id: AtomicU64::new(1),
            retry_at_us: AtomicI64::new(0),
            outage: AtomicBool::new(false),
            instances: AtomicU32::new(1),
            held: Mutex::new(HashMap::new()),
            queue: tx,
            backlog: Mutex::new(Some(Backlog { rx, unsent: Vec::new(), seq: 0 })),
            restored: Arc::new(Mutex::new(None)),
            spend_source: Mutex::new(None),
            restoring: Arc::new(AtomicBool::new(false)),
            restored_ready: Arc::new(tokio::sync::Notify::new()),
            first_attempt: tokio::sync::watch::Sender::new(false),
            admit_script: Script::new(concat!(include_str!("lease.lua"), include_str!("admit.lua"))),
            settle_script: Script::new(concat!(include_str!("lease.lua"), include_str!("settle.lua"))),
            clock,
        }))
    }

    /// Live instances sharing the state, as last counted (at least 1).
    pub fn instances(&self) -> u32 {
        self.instances.load(Ordering::Relaxed).max(1)
    }

    fn id_string(&self, id: u64) -> String {
        format!("{}-{id}", self.instance)
    }

    fn failed(&self, op: &str, e: &dyn std::fmt::Display) {
        let now = self.clock.now_us();
        let before = self.retry_at_us.swap(now + RETRY_AFTER_FAILURE_US, Ordering::Relaxed);
        let m = crate::metrics::state();
        m.errors.with_label_values(&[op]).inc();
        m.up.set(0);
        self.outage.store(true, Ordering::Relaxed);
        // One line per outage, not one per request.
        if before < now - 2 * RETRY_AFTER_FAILURE_US {
            let fallback = match self.on_error {
                OnStateError::Local => "local",
                OnStateError::Deny => "deny",
            };
            log::error!("limits state (Redis) unreachable ({op}: {e}); on_state_error: {fallback}");
        }
    }

    /// Redis answered: the gauge says so, and the log once after an outage.
    fn answered(&self) {
        crate::metrics::state().up.set(1);
        if self.outage.load(Ordering::Relaxed) && self.outage.swap(false, Ordering::Relaxed) {
            log::info!("limits state: Redis answers again; the shared counters are in use");
        }
    }

    /// Admits on the shared counters: `Ok(Ok(..))` admitted, `Ok(Err(..))` refused, `Err(())`
    /// Redis could not answer (the caller falls back).
    pub(super) async fn admit(
        &self,
        key: Option<(&Arc<str>, LimitSettings, BudgetSettings)>,
        model: Option<(&Arc<str>, LimitSettings)>,
        estimate: Estimate,
    ) -> Result<Result<(SharedLease, Option<Allowance>), Refusal>, ()> {
        let now = self.clock.now_us();
        if now < self.retry_at_us.load(Ordering::Relaxed) {
            return Err(());
        }
        let conn = match self.conn.load_full() {
            Some(c) => c,
            None => {
                // Just started: wait for the first connection attempt rather than admit the first
                // requests on local counters Redis would never hear of.
                let mut first = self.first_attempt.subscribe();
                let _ = tokio::time::timeout(FIRST_CONNECT_WAIT, first.wait_for(|done| *done)).await;
                self.conn.load_full().ok_or(())?
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lease = self.id_string(id);
        let mut pipe = redis::pipe();
        let scopes: Vec<(String, LimitSettings, BudgetSettings)> = key
            .map(|(n, l, b)| (key_scope(n), l, b))
            .into_iter()
            .chain(model.map(|(n, l)| (model_scope(n), l, BudgetSettings::default())))
            .collect();
        for (base, limits, budget) in &scopes {
            let mut call = self.admit_script.prepare_invoke();
            for k in scope_keys(base, now) {
                call.key(k);
            }
            call.arg(now)
                .arg(&lease)
                .arg(now + LEASE_TTL_US)
                .arg(limits.rpm.unwrap_or(0))
                .arg(limits.tpm.unwrap_or(0))
                .arg(limits.concurrency.unwrap_or(0))
                .arg(opt_money(budget.daily))
                .arg(opt_money(budget.monthly))
                .arg(estimate.tokens)
                .arg(estimate.cost.0.max(0).to_string())
                .arg(if estimate.exact { "1" } else { "0" });
            pipe.invoke_script(&call);
        }
        let answers: Vec<Value> = match self.query(&conn, &pipe, ADMIT_TIMEOUT).await {
            Ok(v) => v,
            Err(e) => {
                self.failed("admit", &e);
                return Err(());
            }
        };
        self.answered();
        let parsed: Vec<Option<Answer>> = answers.iter().map(parse_answer).collect();
        let took = |i: usize| matches!(parsed.get(i), Some(Some(Answer::Took { .. })));
        let lease_of = |key_took: bool, model_took: bool| SharedLease {
            id,
            key: key.filter(|_| key_took).map(|k| k.0.clone()),
            model: model.filter(|_| model_took).map(|m| m.0.clone()),
        };
        let key_index = key.map(|_| 0);
        let model_index = model.map(|_| usize::from(key.is_some()));
        let refusal = parsed.iter().enumerate().find_map(|(i, a)| match a {
            Some(Answer::Refused(what, retry)) => Some((i, *what, *retry, None)),
            Some(Answer::RefusedExact(period, spent)) => Some((i, *period, 0, Some(*spent))),
            Some(Answer::Took { .. }) => None,
            None => Some((i, "", 0, None)),
        });
        if let Some((i, what, retry_after_s, exact_spent)) = refusal {
            // Return what the other scope took.
            let partial = lease_of(key_index.is_some_and(took), model_index.is_some_and(took));
            if partial.key.is_some() || partial.model.is_some() {
                self.release(partial, 0, Money::ZERO);
            }
            let scope = if Some(i) == key_index { Scope::Key } else { Scope::Model };
            return Ok(Err(match what {
                "daily" | "monthly" => {
                    let (to_midnight, to_month_end) = super::period_ends(now);
                    let (period, cap) = if what == "daily" {
                        ("daily", key.and_then(|k| k.2.daily))
                    } else {
                        ("monthly", key.and_then(|k| k.2.monthly))
                    };
                    let exact = exact_spent.zip(cap).map(|(spent, cap)| ExactRefused {
                        cost: estimate.cost,
                        left: Money(cap.0.saturating_sub(spent.0).max(0)),
                        cap,
                    });
                    let retry_after_s = if what == "daily" { to_midnight } else { to_month_end };
                    Refusal::Budget { period, retry_after_s, exact }
                }
                "" => return Err(()),
                what => Refusal::Limit { what, scope, retry_after_s },
            }));
        }
        let allowance = key.filter(|k| k.1.any()).and_then(|(_, limits, _)| match parsed.first() {
            Some(Some(Answer::Took { requests, tokens_used, tokens_reset_s })) => Some(Allowance {
                requests: limits.rpm.zip(*requests).map(|(rpm, (left, reset))| (u64::from(rpm), left, reset)),
                tokens: limits.tpm.map(|tpm| (tpm, tpm.saturating_sub(*tokens_used), *tokens_reset_s)),
            }),
            _ => None,
        });
        let lease = lease_of(key.is_some(), model.is_some());
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (lease.key.clone(), lease.model.clone()));
        Ok(Ok((lease, allowance)))
    }

    /// Returns `lease` with the usage it really had.
    pub(super) fn release(&self, lease: SharedLease, tokens: u64, spend: Money) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&lease.id);
        let _ = self.queue.send(Settlement {
            seq: 0,
            lease: Some(lease.id),
            key: lease.key,
            model: lease.model,
            tokens,
            spend,
            at_us: self.clock.now_us(),
        });
    }

    /// Adds usage that holds no lease (admitted while Redis was away, a media task's cost).
    pub(super) fn add(&self, key: Option<Arc<str>>, model: Option<Arc<str>>, tokens: u64, spend: Money) {
        let _ =
            self.queue.send(Settlement { seq: 0, lease: None, key, model, tokens, spend, at_us: self.clock.now_us() });
    }

    /// Spend restored from the ledger, written at once (`restored_ready`): each count is raised
    /// to it (Redis's own count, which every instance adds to, wins when it is higher).
    pub(super) fn restore(&self, spend: RestoredSpend) {
        *self.restored.lock().unwrap_or_else(|e| e.into_inner()) = Some(spend);
        self.restored_ready.notify_one();
    }

    /// Where the month's spend is read again when Redis turns out to have lost it.
    pub(super) fn set_spend_source(&self, source: SpendSource) {
        *self.spend_source.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Redis has no `RESTORED_MARK`: reads the month's spend from the ledger on a blocking thread,
    /// for the next heartbeat to write (one read at a time; none while a write is pending).
    fn reread_spend(&self) {
        let Some(source) = self.spend_source.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        if self.restored.lock().unwrap_or_else(|e| e.into_inner()).is_some()
            || self.restoring.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (restored, restoring, ready) = (self.restored.clone(), self.restoring.clone(), self.restored_ready.clone());
        let (today, month_start) = self.clock.today_and_month_start();
        tokio::task::spawn_blocking(move || {
            match source(&month_start, &today) {
                Ok(rows) => {
                    if !rows.is_empty() {
                        log::warn!("limits state: Redis has lost the budgets' spend; restoring it from the ledger");
                    }
                    *restored.lock().unwrap_or_else(|e| e.into_inner()) = Some(by_day_number(rows));
                    ready.notify_one();
                }
                Err(e) => log::error!("budgets: cannot read this month's spend from the ledger ({e}); trying again"),
            }
            restoring.store(false, Ordering::Release);
        });
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        conn: &ConnectionManager,
        pipe: &redis::Pipeline,
        timeout: Duration,
    ) -> Result<T, String> {
        let mut c = conn.clone();
        let first = tokio::time::timeout(timeout, pipe.query_async::<T>(&mut c)).await;
        match first {
            Ok(Ok(v)) => Ok(v),
            // Redis restarted empty: load the scripts and send again (each call is atomic, and a
            // settlement is applied once, so a resend counts nothing twice).
            Ok(Err(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_scripts(&mut c).await?;
                match tokio::time::timeout(timeout, pipe.query_async::<T>(&mut c)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".into()),
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn load_scripts(&self, c: &mut ConnectionManager) -> Result<(), String> {
        for s in [&self.admit_script, &self.settle_script] {
            tokio::time::timeout(Duration::from_secs(1), s.prepare_invoke().load_async(c))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Connects, then sends settlements, renews leases and counts instances until the process
    /// ends. It does not stop at the shutdown signal: requests finishing in the grace period
    /// still settle.
    pub async fn run(self: Arc<Self>) {
        let Some(backlog) = self.backlog.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let mut parked = ParkOnDrop { shared: &self, backlog: Some(backlog) };
        let Some(b) = parked.backlog.as_mut() else { return };
        let conn = self.connect().await;
        let mut renew = tokio::time::interval(RENEW_EVERY);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if b.unsent.is_empty() {
                tokio::select! {
                    got = b.rx.recv() => match got {
                        Some(s) => b.unsent.push(s),
                        None => return,
                    },
                    _ = renew.tick() => {
                        self.heartbeat(&conn).await;
                        continue;
                    }
                    _ = self.restored_ready.notified() => {
                        self.heartbeat(&conn).await;
                        continue;
                    }
                }
            }
            b.take_queued();
            // In order, a bounded pipeline at a time: what was sent before a failure is not
            // resent (it would be skipped anyway, but a backlog after an outage is large).
            let mut sent = 0;
            let mut failure = None;
            for chunk in b.unsent.chunks(SETTLE_BATCH) {
                match self.send(&conn, chunk).await {
                    Ok(()) => sent += chunk.len(),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            b.unsent.drain(..sent);
            if let Some(e) = failure {
                self.failed("settle", &e);
                if b.unsent.len() > MAX_UNSENT {
                    let extra = b.unsent.len() - MAX_UNSENT;
                    b.unsent.drain(..extra);
                    crate::metrics::state().errors.with_label_values(&["settle_dropped"]).inc_by(extra as u64);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Sends, on a connection of its own, the settlements still unsent once every runtime has
    /// stopped: requests that ended in the last moments before the exit, or while Redis was away.
    /// Spend sent here counts against the key's budget on every other instance. Tries again until
    /// `within` has passed (Redis may be restarting too); what is still unsent then is lost to
    /// Redis (the ledger has it) and said in the log.
    pub fn flush_at_exit(&self, within: Duration) {
        // `run` may still hold the backlog for a moment: a runtime stopped by a fast shutdown does
        // not wait for a worker that is busy (one unwinding a panic in the Redis client's timer,
        // say), and `run` is dropped, parking the backlog, only when that worker gets to it.
        let waited = std::time::Instant::now();
        let mut b = loop {
            if let Some(b) = self.backlog.lock().unwrap_or_else(|e| e.into_inner()).take() {
                break b;
            }
            if waited.elapsed() >= within.min(PARK_WAIT) {
                return log::error!("limits state: the sender still held its settlements at exit; the ledger has them");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        b.take_queued();
        if b.unsent.is_empty() {
            return;
        }
        let n = b.unsent.len();
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => return log::error!("limits state: {n} settlements not sent at exit ({e})"),
        };
        let mut last_error = String::from("no answer");
        // The timer is made inside the runtime (`block_on`), which it needs.
        let sent = runtime.block_on(async {
            tokio::time::timeout(within, async {
                // A batch resent after a failure is skipped by the scripts (its numbers were seen).
                while let Err(e) = self.send_on_new_connection(&b.unsent).await {
                    last_error = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
        });
        match sent {
            Ok(()) => log::info!("limits state: {n} settlements sent at exit"),
            Err(_) => log::error!(
                "limits state: {n} settlements not sent at exit within {within:?} ({last_error}); the ledger has them"
            ),
        }
    }

    async fn send_on_new_connection(&self, batch: &[Settlement]) -> Result<(), String> {
        let mut conn = ConnectionManager::new_with_config(self.client.clone(), connection_config())
            .await
            .map_err(|e| e.to_string())?;
        self.load_scripts(&mut conn).await?;
        for chunk in batch.chunks(SETTLE_BATCH) {
            self.send(&conn, chunk).await?;
        }
        Ok(())
    }

    async fn connect(&self) -> ConnectionManager {
        loop {
            match ConnectionManager::new_with_config(self.client.clone(), connection_config()).await {
                Ok(mut c) => {
                    if let Err(e) = self.load_scripts(&mut c).await {
                        self.failed("connect", &e);
                    } else {
                        log::info!("limits state: connected to Redis");
                        self.conn.store(Some(Arc::new(c.clone())));
                        self.heartbeat(&c).await;
                        self.first_attempt.send_replace(true);
                        return c;
                    }
                }
                Err(e) => self.failed("connect", &e),
            }
            self.first_attempt.send_replace(true);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// One pipeline of `settle.lua` calls, one per scope of each settlement.
    async fn send(&self, conn: &ConnectionManager, batch: &[Settlement]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for s in batch {
            let scopes = s.key.iter().map(|k| key_scope(k)).chain(s.model.iter().map(|m| model_scope(m)));
            for base in scopes {
                let is_key = base.starts_with("cm:{k:");
                let mut call = self.settle_script.prepare_invoke();
                for k in scope_keys(&base, s.at_us) {
                    call.key(k);
                }
                call.key(format!("{base}:seq:{}", self.instance));
                call.arg(s.at_us)
                    .arg(s.lease.map_or(String::new(), |l| self.id_string(l)))
                    .arg(s.tokens)
                    // Spend is the key's (budgets); a model scope counts tokens only. Negative: a
                    // failed task gives back what its submit counted (`settle.lua` stops at 0).
                    .arg(if is_key { s.spend.0.to_string() } else { "0".into() })
                    .arg(s.seq);
                pipe.invoke_script(&call).ignore();
            }
        }
        self.query::<()>(conn, &pipe, Duration::from_secs(2)).await
    }

    /// Renews this instance's leases, counts live instances, and writes restored spend.
    async fn heartbeat(&self, conn: &ConnectionManager) {
        let now = self.clock.now_us();
        let mut pipe = redis::pipe();
        pipe.zadd("cm:instances", &self.instance, now + 3 * RENEW_EVERY.as_micros() as i64)
            .ignore()
            .zrembyscore("cm:instances", "-inf", now)
            .ignore()
            .zcard("cm:instances");
        let held: Vec<(u64, Scopes)> = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.iter().map(|(id, scopes)| (*id, scopes.clone())).collect()
        };
        for (id, (k, m)) in &held {
            for base in k.iter().map(|k| key_scope(k)).chain(m.iter().map(|m| model_scope(m))) {
                pipe.cmd("ZADD")
                    .arg(format!("{base}:l"))
                    .arg("XX")
                    .arg(now + LEASE_TTL_US)
                    .arg(self.id_string(*id))
                    .ignore();
            }
        }
        let restored = self.restored.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(restored) = &restored {
            let raise = |pipe: &mut redis::Pipeline, key: String, spend: i64, ttl_s: i64| {
                pipe.cmd("EVAL").arg(RAISE_TO_LUA).arg(1).arg(key).arg(spend).arg(ttl_s).ignore();
            };
            // Summed per key and period: a key's day may come as several rows (the ledger's total
            // and the charges of its running tasks), and raising the count to each row in turn
            // left it at the largest.
            let mut today: HashMap<Arc<str>, i64> = HashMap::new();
            let mut months: HashMap<(Arc<str>, i64), i64> = HashMap::new();
            for (key, day, spend) in restored {
                if *day == now.div_euclid(DAY_US) {
                    *today.entry(key.clone()).or_default() += spend.0;
                }
                *months.entry((key.clone(), month_of(day * DAY_US))).or_default() += spend.0;
            }
            let day = now.div_euclid(DAY_US);
            for (key, spend) in today {
                raise(&mut pipe, format!("{}:d:{day}", key_scope(&key)), spend.max(0), 2 * 86_400);
            }
            for ((key, month), spend) in months {
                if month == month_of(now) {
                    raise(&mut pipe, format!("{}:m:{month}", key_scope(&key)), spend.max(0), 32 * 86_400);
                }
            }
            pipe.cmd("SET").arg(RESTORED_MARK).arg(1).ignore();
        }
        pipe.exists(RESTORED_MARK);
        match self.query::<(u32, bool)>(conn, &pipe, Duration::from_secs(2)).await {
            Ok((n, marked)) => {
                self.instances.store(n.max(1), Ordering::Relaxed);
                self.answered();
                crate::metrics::state().instances.set(i64::from(n.max(1)));
                if !marked {
                    self.reread_spend();
                }
            }
            Err(e) => {
                if let Some(restored) = restored {
                    self.restored.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(restored);
                }
                self.failed("heartbeat", &e);
            }
        }
    }
}
