//! Per-key and per-model limits and budgets, in-process (exact for one instance).
//!
//! - **rpm**: GCRA (the generic cell rate algorithm): each key keeps one "theoretical arrival
//!   time"; a burst of up to `rpm` requests passes at once, then one per `60 s / rpm`. No window
//!   edges, so no double burst at a minute boundary.
//! - **tpm**: tokens per rolling minute. Admission reserves an estimate (input from the body size,
//!   plus the requested `max_tokens` capped by the model's `max_output_tokens`) and admits only if
//!   settled usage of the last minute plus every reservation in flight plus this estimate fits;
//!   settlement replaces the reservation with the real usage. So 50 concurrent requests cannot all
//!   pass a nearly spent limit.
//! - **concurrency**: requests in flight, streams included, each holding a lease (`Admission`)
//!   that is released when the request ends, however it ends (the lease's `Drop`).
//! - **budgets**: spend per UTC day and month in exact money (`money`), from the same cost the
//!   ledger records; a request is refused once settled spend plus reservations reach the cap.
//!   `raise` loads the current day's and month's spend from the ledger at start, and after a reload
//!   that gives a key its first budget.
//!
//! State is kept by key and model *name*, so a reload that changes a limit keeps the counts.
//! `Limiter` is the in-process state; `shared::Shared` the same rules on Redis for several
//! instances (`server.state`); `Limits` is what the gateway calls, and picks between them.
//! Time comes from `Clock` (tests shift it with `CHEAPMODEL_CLOCK_OFFSET_S`).
//! Imports: `money`, `usage`, `registry` (limit settings). Not `proxy` or `plan`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::money::Money;

pub mod shared;

pub use shared::OnStateError;
use shared::{Shared, SharedLease};

/// A key's or model's limits (`limits:` in the config); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests per rolling minute.
    pub rpm: Option<u32>,
    /// Tokens per rolling minute.
    pub tpm: Option<u64>,
    /// Requests in flight.
    pub concurrency: Option<u32>,
}

impl LimitSettings {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.concurrency.is_some()
    }

    /// One instance's share of each limit when `instances` share it (rounded up, at least 1).
    fn share(self, instances: u32) -> Self {
        let n = instances.max(1);
        LimitSettings {
            rpm: self.rpm.map(|v| v.div_ceil(n)),
            tpm: self.tpm.map(|v| v.div_ceil(u64::from(n))),
            concurrency: self.concurrency.map(|v| v.div_ceil(n)),
        }
    }
}

/// A key's budget (`budget:`), exact money; `None` is no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Per UTC day.
    pub daily: Option<Money>,
    /// Per UTC calendar month.
    pub monthly: Option<Money>,
}

impl BudgetSettings {
    /// Whether a cap is set.
    pub fn any(&self) -> bool {
        self.daily.is_some() || self.monthly.is_some()
    }

    /// One instance's share of each cap (see `LimitSettings::share`).
    fn share(self, instances: u32) -> Self {
        let n = i64::from(instances.max(1));
        let part = |m: Money| Money((m.0 + n - 1) / n);
        BudgetSettings { daily: self.daily.map(part), monthly: self.monthly.map(part) }
    }
}

/// What a request is expected to use, reserved at admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Input plus the largest output it may produce.
    pub tokens: u64,
    /// Those tokens at the model's prices.
    pub cost: Money,
    /// `cost` is what the request will cost (a media task's requested units at the model's
    /// prices), not an upper bound: it must fit in what a budget has left, whole.
    pub exact: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A limit (`what`: `requests`, `tokens`, `concurrency`); retry after this many seconds.
    Limit { what: &'static str, scope: Scope, retry_after_s: u64 },
    /// A budget is spent (`period`: `daily` or `monthly`); retry after this many seconds. With
    /// `exact`: not spent, but this request's exact cost is more than what it has left.
    Budget { period: &'static str, retry_after_s: u64, exact: Option<ExactRefused> },
    /// The shared state (Redis) is unreachable and `on_state_error` is `deny`.
    Unavailable,
}

/// A request of exact cost that a budget cannot take whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactRefused {
    /// The request's cost.
    pub cost: Money,
    /// What the budget has left.
    pub left: Money,
    /// The budget's whole cap for its period.
    pub cap: Money,
}

impl ExactRefused {
    /// The request costs more than the whole budget: no period will ever admit it, so the caller
    /// gets no `retry-after`.
    pub fn never_fits(&self) -> bool {
        self.cost.0 > self.cap.0
    }
}

/// Whose limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's key.
    Key,
    /// The model (all keys together).
    Model,
}

/// The allowance a limited key has left, for the rate-limit response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Allowance {
    /// `(limit, remaining, seconds until full)` for requests.
    pub requests: Option<(u64, u64, f64)>,
    /// The same for tokens.
    pub tokens: Option<(u64, u64, f64)>,
}

/// Unix time in microseconds, shifted in tests.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_us: i64,
}

impl Clock {
    /// The real clock, shifted by `CHEAPMODEL_CLOCK_OFFSET_S` seconds when set (tests of day and
    /// month boundaries).
    pub fn from_env() -> Self {
        let offset_s = std::env::var("CHEAPMODEL_CLOCK_OFFSET_S").ok().and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        Clock { offset_us: offset_s.saturating_mul(1_000_000) }
    }

    /// Now, unix microseconds.
    pub fn now_us(&self) -> i64 {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
        real + self.offset_us
    }

    /// The current UTC day and the first day of its month, `YYYY-MM-DD` (the ledger's spend of the
    /// budgets' periods is read over these).
    pub fn today_and_month_start(&self) -> (String, String) {
        let today = crate::ledger::day_of(self.now_us() / 1000);
        let month_start = format!("{}-01", &today[..7]);
        (today, month_start)
    }
}

const MINUTE_US: i64 = 60_000_000;
pub(crate) const DAY_US: i64 = 86_400_000_000;

/// Counters of one key or one model.
#[derive(Debug, Default)]
struct Counters {
    /// GCRA theoretical arrival time, unix µs.
    tat_us: i64,
    /// The emission interval `tat_us` was computed with (a reload may change the rpm).
    gcra_t_us: i64,
    /// Settled token usage of the last minute, per second: a ring of (unix second, tokens)
    /// indexed by the second modulo 60 (fixed memory at any request rate).
    tokens: Vec<(i64, u64)>,
    reserved_tokens: u64,
    in_flight: u32,
    /// (UTC day number, settled spend that day).
    day_spend: (i64, i64),
    /// (month number `year * 12 + month`, settled spend that month).
    month_spend: (i64, i64),
    reserved_spend: i64,
}

impl Counters {
    /// GCRA's state for `rpm`: when the limit changed since the last request, the requests still
    /// outstanding are carried over as a count, not as time (else a raised limit would keep
    /// refusing for as long as the old, slower rate needed).
    fn gcra(&mut self, rpm: u32, now: i64) -> (i64, i64) {
        let (t, tau) = gcra_params(rpm);
        if self.gcra_t_us != t {
            if self.gcra_t_us > 0 {
                let ahead = (self.tat_us - now).max(0);
                self.tat_us = now + ahead / self.gcra_t_us * t + ahead % self.gcra_t_us * t / self.gcra_t_us;
            }
            self.gcra_t_us = t;
        }
        (t, tau)
    }

    /// Settled tokens of the rolling minute before `now`.
    fn tokens_in_window(&self, now: i64) -> u64 {
        let sec = now.div_euclid(1_000_000);
        self.tokens.iter().filter(|(s, _)| *s > sec - 60).map(|(_, n)| n).sum()
    }

    fn add_tokens(&mut self, now: i64, n: u64) {
        if self.tokens.is_empty() {
            self.tokens = vec![(i64::MIN, 0); 60];
        }
        let sec = now.div_euclid(1_000_000);
        let slot = &mut self.tokens[sec.rem_euclid(60) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += n;
    }

    /// Seconds in the window that still count, oldest first: (unix second, tokens).
    fn live_seconds(&self, now: i64) -> Vec<(i64, u64)> {
        let sec = now.div_euclid(1_000_000);
        let mut live: Vec<(i64, u64)> = self.tokens.iter().copied().filter(|(s, n)| *s > sec - 60 && *n > 0).collect();
        live.sort_unstable();
        live
    }

    /// The oldest second in the window that holds tokens.
    fn oldest_second(&self, now: i64) -> Option<i64> {
        let sec = now.div_euclid(1_000_000);
        self.tokens.iter().filter(|(s, n)| *s > sec - 60 && *n > 0).map(|(s, _)| *s).min()
    }

    fn spend(&mut self, now: i64) -> (i64, i64) {
        let (day, month) = (now.div_euclid(DAY_US), month_of(now));
        if self.day_spend.0 != day {
            self.day_spend = (day, 0);
        }
        if self.month_spend.0 != month {
            self.month_spend = (month, 0);
        }
        (self.day_spend.1, self.month_spend.1)
    }

    /// Seconds until `needed` tokens fit in the window again.
    fn tokens_retry_s(&self, now: i64, needed: u64, limit: u64) -> u64 {
        let mut free = limit.saturating_sub(self.tokens_in_window(now) + self.reserved_tokens);
        for (sec, n) in self.live_seconds(now) {
            free += n;
            if free >= needed {
                return secs_ceil((sec + 60) * 1_000_000 - now);
            }
        }
        60
    }
}

/// `year * 12 + month - 1` of a unix µs time (UTC).
pub(crate) fn month_of(now_us: i64) -> i64 {
    let (y, m, _) = crate::ledger::civil_from_days(now_us.div_euclid(DAY_US));
    y * 12 + i64::from(m) - 1
}

/// `retry-after` of a refusal caused only by what requests in flight hold (tokens, budget): they
/// settle within seconds.
pub const IN_FLIGHT_RETRY_S: u64 = 1;

fn secs_ceil(us: i64) -> u64 {
    (us.max(0) as u64).div_ceil(1_000_000).max(1)
}

/// Seconds from `now` to the next UTC midnight, and to the first of next month. Only a budget
/// refusal needs them (its `retry-after`).
pub(crate) fn period_ends(now: i64) -> (u64, u64) {
    let day = now.div_euclid(DAY_US);
    let to_midnight = secs_ceil((day + 1) * DAY_US - now);
    let (y, m, _) = crate::ledger::civil_from_days(day);
    let (next_y, next_m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let next_month = crate::ledger::days_from_civil(next_y, next_m, 1);
    (to_midnight, secs_ceil(next_month * DAY_US - now))
}

/// The in-process limiter.
#[derive(Debug)]
pub struct Limiter {
    /// Counters by key name and by model name, under one lock: a request takes it once to admit
    /// and once to settle.
    state: Mutex<Tables>,
    clock: Clock,
}

#[derive(Debug, Default)]
struct Tables {
    keys: HashMap<Arc<str>, Counters>,
    models: HashMap<Arc<str>, Counters>,
}

/// A request's lease: what it reserved. Settle it with `Admission::settle`; dropped unsettled (a
/// request that ended before usage was known), it releases its slot and reservation as is.
#[derive(Debug)]
pub struct Admission {
    /// What the key has left after this request, for the response headers (`None`: key unlimited).
    pub allowance: Option<Allowance>,
    holder: Holder,
    settled: bool,
}

/// Where the lease is held.
#[derive(Debug)]
enum Holder {
    /// In this process; with `Some(shared)` it was admitted while Redis was away, and its usage
    /// is also added to the shared counters once they are back.
    Local { limiter: Arc<Limiter>, key: Arc<str>, model: Arc<str>, estimate: Estimate, shared: Option<Arc<Shared>> },
    /// On Redis.
    Shared { shared: Arc<Shared>, lease: Option<SharedLease> },
}

impl Admission {
    /// Replaces the reservation with what the request really used and cost.
    pub fn settle(mut self, tokens: u64, cost: Money) {
        self.settled = true;
        self.finish(Some((tokens, cost)));
    }

    fn finish(&mut self, used: Option<(u64, Money)>) {
        match &mut self.holder {
            Holder::Local { limiter, key, model, estimate, shared } => {
                limiter.release(key, model, *estimate, used);
                if let (Some(shared), Some((tokens, cost))) = (shared, used) {
                    shared.add(Some(key.clone()), Some(model.clone()), tokens, cost);
                }
            }
            Holder::Shared { shared, lease } => {
                if let Some(lease) = lease.take() {
                    let (tokens, cost) = used.unwrap_or((0, Money::ZERO));
                    shared.release(lease, tokens, cost);
                }
            }
        }
    }
}

/// One scope's settings for `admit`.
struct Check<'a> {
    name: &'a Arc<str>,
    limits: LimitSettings,
    budget: BudgetSettings,
    scope: Scope,
}

impl Limiter {
    /// An empty limiter on `clock`.
    pub fn new(clock: Clock) -> Arc<Self> {
        Arc::new(Limiter { state: Mutex::new(Tables::default()), clock })
    }

    /// Admits a request of `key` on `model` or says why not; the key's limits and budget are
    /// checked first, then the model's limits. Nothing is taken unless every check passes.
    pub fn admit(
        self: &Arc<Self>,
        key: (&Arc<str>, LimitSettings, BudgetSettings),
        model: (&Arc<str>, LimitSettings),
        estimate: Estimate,
    ) -> Result<Admission, Refusal> {
        let now = self.clock.now_us();
        let checks = [
            Check { name: key.0, limits: key.1, budget: key.2, scope: Scope::Key },
            Check { name: model.0, limits: model.1, budget: BudgetSettings::default(), scope: Scope::Model },
        ];
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Tables { keys, models } = &mut *state;
        for c in &checks {
            if !c.limits.any() && !c.budget.any() {
                continue;
            }
            let table = if c.scope == Scope::Key { &mut *keys } else { &mut *models };
            let counters = table.entry(c.name.clone()).or_default();
            check(counters, c, estimate, now)?;
        }
        let mut allowance = None;
        for c in &checks {
            if !c.limits.any() && !c.budget.any() {
                continue;
            }
            let table = if c.scope == Scope::Key { &mut *keys } else { &mut *models };
            let Some(counters) = table.get_mut(c.name) else { continue };
            take(counters, c, estimate, now);
            if c.scope == Scope::Key && c.limits.any() {
                allowance = Some(allowance_of(counters, c.limits, now));
            }
        }
        Ok(Admission {
            allowance,
            holder: Holder::Local {
                limiter: self.clone(),
                key: key.0.clone(),
                model: model.0.clone(),
                estimate,
                shared: None,
            },
            settled: false,
        })
    }

    fn release(&self, key: &Arc<str>, model: &Arc<str>, estimate: Estimate, used: Option<(u64, Money)>) {
        let now = self.clock.now_us();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Tables { keys, models } = &mut *state;
        for (table, name) in [(keys, key), (models, model)] {
            let Some(c) = table.get_mut(name) else { continue };
            c.in_flight = c.in_flight.saturating_sub(1);
            c.reserved_tokens = c.reserved_tokens.saturating_sub(estimate.tokens);
            c.reserved_spend = c.reserved_spend.saturating_sub(estimate.cost.0).max(0);
            if let Some((tokens, cost)) = used {
                if tokens > 0 {
                    c.add_tokens(now, tokens);
                }
                c.spend(now);
                c.day_spend.1 = c.day_spend.1.saturating_add(cost.0);
                c.month_spend.1 = c.month_spend.1.saturating_add(cost.0);
            }
        }
    }

    /// Adds spend that did not go through `admit` (a media task's cost, restored ledger totals).
    pub fn charge(&self, key: &Arc<str>, cost: Money, at_us: i64) {
        let now = self.clock.now_us();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let c = state.keys.entry(key.clone()).or_default();
        c.spend(now);
        if at_us.div_euclid(DAY_US) == now.div_euclid(DAY_US) {
            c.day_spend.1 = c.day_spend.1.saturating_add(cost.0);
        }
        if month_of(at_us) == month_of(now) {
            c.month_spend.1 = c.month_spend.1.saturating_add(cost.0);
        }
    }

    /// The clock's current UTC day and the first day of its month (`Clock::today_and_month_start`).
    pub fn today_and_month_start(&self) -> (String, String) {
        self.clock.today_and_month_start()
    }

    /// Raises each key's spend of the current day and month to the ledger's `(key, day, cost)`
    /// totals, summed per key and period, and never lowers it: at start the counts are empty, and
    /// after a reload they may already hold some of the same spend.
    pub fn raise(&self, spend: impl IntoIterator<Item = (Arc<str>, String, Money)>) {
        let now = self.clock.now_us();
        let (today, month) = (now.div_euclid(DAY_US), month_of(now));
        let mut totals: HashMap<Arc<str>, (i64, i64)> = HashMap::new();
        for (key, day, cost) in spend {
            let Some(days) = crate::ledger::parse_day(&day) else { continue };
            let t = totals.entry(key).or_default();
            if days == today {
                t.0 = t.0.saturating_add(cost.0);
            }
            if month_of(days * DAY_US) == month {
                t.1 = t.1.saturating_add(cost.0);
            }
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (key, (day_total, month_total)) in totals {
            let c = state.keys.entry(key).or_default();
            c.spend(now);
            c.day_spend.1 = c.day_spend.1.max(day_total);
            c.month_spend.1 = c.month_spend.1.max(month_total);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.settled {
            self.finish(None);
        }
    }
}

fn check(c: &mut Counters, s: &Check<'_>, est: Estimate, now: i64) -> Result<(), Refusal> {
    let limit = |what, retry_after_s| Refusal::Limit { what, scope: s.scope, retry_after_s };
    if let Some(max) = s.limits.concurrency {
        if c.in_flight >= max {
            return Err(limit("concurrency", 1));
        }
    }
    if let Some(rpm) = s.limits.rpm {
        let (_, tau) = c.gcra(rpm, now);
        let tat = c.tat_us.max(now);
        if tat - now > tau {
            return Err(limit("requests", secs_ceil(tat - tau - now)));
        }
    }
    if let Some(tpm) = s.limits.tpm {
        let settled = c.tokens_in_window(now);
        let used = settled + c.reserved_tokens;
        // A request larger than the whole limit still passes when nothing else is in use, so a
        // big prompt is slow, not refused forever.
        if used > 0 && used + est.tokens > tpm {
            // Held by requests in flight, not used: they settle (mostly far under their
            // reservation) within seconds, not when the minute's tokens age out.
            let retry = if settled == 0 || settled + est.tokens <= tpm {
                IN_FLIGHT_RETRY_S
            } else {
                c.tokens_retry_s(now, est.tokens, tpm)
            };
            return Err(limit("tokens", retry));
        }
    }
    if s.budget.any() {
        let (day, month) = c.spend(now);
        // Spent: until the period ends. Only held by requests in flight: a rate limit of a second
        // (what is reserved is mostly not spent, and a "budget spent" with a day's retry-after
        // failed parallel agents outright: Anthropic's SDKs do not retry a 402).
        let (to_midnight, to_month_end) = period_ends(now);
        let periods = [("daily", s.budget.daily, day, to_midnight), ("monthly", s.budget.monthly, month, to_month_end)];
        for (period, cap, spent, retry_after_s) in periods {
            if cap.is_some_and(|cap| spent >= cap.0) {
                return Err(Refusal::Budget { period, retry_after_s, exact: None });
            }
        }
        // A request of exact cost is admitted only whole: what it costs is known, and a media
        // task costs up to dollars, far more than the overshoot a chat request's estimate allows.
        for (period, cap, spent, retry_after_s) in periods {
            if let Some(cap) = cap.filter(|cap| est.exact && spent.saturating_add(est.cost.0) > cap.0) {
                let exact = Some(ExactRefused { cost: est.cost, left: Money(cap.0 - spent), cap });
                return Err(Refusal::Budget { period, retry_after_s, exact });
            }
        }
        for (_, cap, spent, _) in periods {
            let held = spent.saturating_add(c.reserved_spend);
            if cap.is_some_and(|cap| held >= cap.0 || (est.exact && held.saturating_add(est.cost.0) > cap.0)) {
                return Err(limit("budget", IN_FLIGHT_RETRY_S));
            }
        }
    }
    Ok(())
}

fn take(c: &mut Counters, s: &Check<'_>, est: Estimate, now: i64) {
    c.in_flight += 1;
    if let Some(rpm) = s.limits.rpm {
        let (t, _) = c.gcra(rpm, now);
        c.tat_us = c.tat_us.max(now) + t;
    }
    c.reserved_tokens += est.tokens;
    c.reserved_spend = c.reserved_spend.saturating_add(est.cost.0);
}

/// GCRA's emission interval and burst tolerance, µs: `rpm` requests may pass at once.
fn gcra_params(rpm: u32) -> (i64, i64) {
    let t = (MINUTE_US / i64::from(rpm.max(1))).max(1);
    (t, t * (i64::from(rpm.max(1)) - 1))
}

fn allowance_of(c: &Counters, s: LimitSettings, now: i64) -> Allowance {
    let requests = s.rpm.map(|rpm| {
        let (t, tau) = gcra_params(rpm);
        let ahead = (c.tat_us - now).max(0);
        let remaining = ((tau - ahead).max(-t) + t) / t;
        (u64::from(rpm), remaining.max(0) as u64, ahead as f64 / 1e6)
    });
    let tokens = s.tpm.map(|tpm| {
        let used = c.tokens_in_window(now) + c.reserved_tokens;
        let oldest = c.oldest_second(now);
        // Tokens only reserved so far (nothing settled in the window yet) count for a whole minute
        // once they settle: "0ms" would tell the caller its allowance is back already.
        let only_reserved = if used > 0 { 60.0 } else { 0.0 };
        let reset = oldest.map_or(only_reserved, |sec| ((sec + 60) * 1_000_000 - now).max(0) as f64 / 1e6);
        (tpm, tpm.saturating_sub(used), reset)
    });
    Allowance { requests, tokens }
}

/// Default output reservation when neither the request nor the model names a maximum.
const DEFAULT_OUTPUT_RESERVATION: u64 = 4096;

/// What a chat request may use: input from the body size (about 4 bytes a token, an over-estimate
/// for JSON), plus the requested output cap (`Peek::max_tokens`: `max_tokens`,
/// `max_completion_tokens` or `max_output_tokens`) capped by the model's `max_output_tokens`;
/// priced at the model's input and output prices.
pub fn estimate(body_len: usize, requested: Option<u64>, model: &crate::registry::Model) -> Estimate {
    let cap = model.max_output_tokens.map(u64::from);
    let output = match (requested, cap) {
        (Some(r), Some(c)) => r.min(c),
        (Some(r), None) => r,
        (None, Some(c)) => c,
        (None, None) => DEFAULT_OUTPUT_RESERVATION,
    };
    let input = (body_len as u64).div_ceil(4);
    let cost = i128::from(input) * i128::from(model.price.input) + i128::from(output) * i128::from(model.price.output);
    Estimate { tokens: input + output, cost: crate::money::from_i128(cost), exact: false }
}

/// RFC 3339 (UTC, whole seconds) of unix seconds: `2026-12-05T22:10:00Z`.
pub fn rfc3339(unix_s: i64) -> String {
    let day = crate::ledger::day_of(unix_s * 1000);
    let s = unix_s.rem_euclid(86_400);
    format!("{day}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

/// A duration the way OpenAI writes its reset headers: `20ms`, `1s`, `1.5s`, `6m0s`. Integer
/// formatting only: it is written on every response to a limited key.
pub fn openai_duration(secs: f64) -> String {
    let ms = (secs * 1000.0).ceil().max(0.0) as u64;
    let mut out = String::with_capacity(12);
    let mut num = itoa::Buffer::new();
    if ms < 1000 {
        out.push_str(num.format(ms));
        out.push_str("ms");
    } else if ms < 60_000 {
        out.push_str(num.format(ms / 1000));
        if !ms.is_multiple_of(1000) {
            // Milliseconds as a decimal fraction without trailing zeros: 250 -> ".25".
            let mut frac = ms % 1000;
            let mut digits = 3;
            while frac.is_multiple_of(10) {
                frac /= 10;
                digits -= 1;
            }
            out.push('.');
            for _ in num.format(frac).len()..digits {
                out.push('0');
            }
            out.push_str(num.format(frac));
        }
        out.push('s');
    } else {
        let whole = ms.div_ceil(1000);
        out.push_str(num.format(whole / 60));
        out.push('m');
        out.push_str(num.format(whole % 60));
        out.push('s');
    }
    out
}

impl Limiter {
    /// Now, unix seconds, on this limiter's clock (for reset times).
    pub fn now_s(&self) -> i64 {
        self.clock.now_us() / 1_000_000
    }
}

/// What the gateway calls: the in-process limiter alone, or the shared state (Redis) with the
/// in-process limiter as its fallback while Redis is unreachable.
pub struct Limits {
    local: Arc<Limiter>,
    shared: Option<Arc<Shared>>,
}

impl Limits {
    /// Limits on `clock`, shared through `shared` when set.
    pub fn new(clock: Clock, shared: Option<Arc<Shared>>) -> Arc<Self> {
        Arc::new(Limits { local: Limiter::new(clock), shared })
    }

    /// The shared state client, when `server.state` is set (its `run` must be started).
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Admits a request of `key` on `model` or says why not (`Limiter::admit`'s rules, on the
    /// shared counters when they are configured and reachable).
    pub async fn admit(
        &self,
        key: (&Arc<str>, LimitSettings, BudgetSettings),
        model: (&Arc<str>, LimitSettings),
        estimate: Estimate,
    ) -> Result<Admission, Refusal> {
        let Some(shared) = &self.shared else { return self.local.admit(key, model, estimate) };
        let key_scope = (key.1.any() || key.2.any()).then_some(key);
        let model_scope = model.1.any().then_some(model);
        match shared.admit(key_scope, model_scope, estimate).await {
            Ok(Ok((lease, allowance))) => Ok(Admission {
                allowance,
                holder: Holder::Shared { shared: shared.clone(), lease: Some(lease) },
                settled: false,
            }),
            Ok(Err(refusal)) => Err(refusal),
            Err(()) if shared.on_error == OnStateError::Deny => Err(Refusal::Unavailable),
            Err(()) => {
                let n = shared.instances();
                let mut admission =
                    self.local.admit((key.0, key.1.share(n), key.2.share(n)), (model.0, model.1.share(n)), estimate)?;
                if let Holder::Local { shared: forward, .. } = &mut admission.holder {
                    *forward = Some(shared.clone());
                }
                Ok(admission)
            }
        }
    }

    /// Adds spend that did not go through `admit`, dated `at_us` (a media task: its expected cost
    /// at submit when the key has no limits, what its row adds when it lands). On Redis it counts
    /// in the current day and month.
    pub fn charge(&self, key: &Arc<str>, cost: Money, at_us: i64) {
        self.local.charge(key, cost, at_us);
        if let Some(shared) = &self.shared {
            shared.add(Some(key.clone()), None, 0, cost);
        }
    }

    /// `charge`, dated now.
    pub fn charge_now(&self, key: &Arc<str>, cost: Money) {
        self.charge(key, cost, self.local.clock.now_us());
    }

    /// Raises the counts to the ledger's totals of the current month (`Limiter::raise`; on Redis,
    /// written at once): at start, and for keys whose spend went uncounted, such as one that a
    /// reload gave its first budget.
    pub fn raise(&self, spend: Vec<(Arc<str>, String, Money)>) {
        if let Some(shared) = &self.shared {
            shared.restore(shared::by_day_number(spend.iter().cloned()));
        }
        self.local.raise(spend);
    }

    /// Where the month's spend is read again when the shared state (Redis) lost it: the spend is
    /// restored at start (`raise`), and again whenever Redis turns out to have been emptied
    /// while the gateway ran (`shared::RESTORED_MARK`).
    pub fn set_spend_source(&self, source: shared::SpendSource) {
        if let Some(shared) = &self.shared {
            shared.set_spend_source(source);
        }
    }

    /// The clock's current UTC day and the first day of its month (`Limiter::today_and_month_start`).
    pub fn today_and_month_start(&self) -> (String, String) {
        self.local.today_and_month_start()
    }

    /// Now, unix seconds (for reset times).
    pub fn now_s(&self) -> i64 {
        self.local.now_s()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(offset_s: i64) -> Arc<Limiter> {
        Limiter::new(Clock { offset_us: offset_s * 1_000_000 })
    }

    fn names() -> (Arc<str>, Arc<str>) {
        (Arc::from("team-a"), Arc::from("gpt-5.5"))
    }

    #[test]
    fn a_first_reservation_resets_in_a_minute_not_at_once() {
        let l = limiter(0);
        let (k, m) = names();
        let lim = LimitSettings { tpm: Some(100_000), ..Default::default() };
        let est = Estimate { tokens: 4_112, ..Default::default() };
        let a = l.admit((&k, lim, BudgetSettings::default()), (&m, LimitSettings::default()), est).expect("admitted");
        assert_eq!(a.allowance.and_then(|a| a.tokens), Some((100_000, 95_888, 60.0)));
    }

    #[test]
    fn rpm_admits_a_burst_of_rpm_then_refuses_with_retry_after() {
        let l = limiter(0);
        let (k, m) = names();
        let lim = LimitSettings { rpm: Some(60), ..Default::default() };
        let mut held = Vec::new();
        for i in 0..60 {
            let a = l.admit((&k, lim, BudgetSettings::default()), (&m, LimitSettings::default()), Estimate::default());
            let a = a.unwrap_or_else(|e| panic!("request {i} refused: {e:?}"));
            held.push(a);
        }
        let allowance = held.last().and_then(|a| a.allowance).expect("allowance");
        assert_eq!(allowance.requests.map(|r| (r.0, r.1)), Some((60, 0)));
        match l.admit((&k, lim, BudgetSettings::default()), (&m, LimitSettings::default()), Estimate::default()) {
            Err(Refusal::Limit { what: "requests", scope: Scope::Key, retry_after_s }) => assert_eq!(retry_after_s, 1),
            other => panic!("61st: {other:?}"),
        }
    }

    #[test]
    fn concurrency_leases_are_released_when_dropped() {
        let l = limiter(0);
        let (k, m) = names();
        let lim = LimitSettings { concurrency: Some(2), ..Default::default() };
        let admit =
            || l.admit((&k, lim, BudgetSettings::default()), (&m, LimitSettings::default()), Estimate::default());
        let a = admit().expect("1");
        let b = admit().expect("2");
        assert!(matches!(admit(), Err(Refusal::Limit { what: "concurrency", .. })));
        drop(a);
        let c = admit().expect("3 after a release");
        b.settle(0, Money::ZERO);
        drop(c);
        assert!(admit().is_ok());
    }

    #[test]
    fn tpm_counts_reservations_so_concurrent_requests_cannot_all_pass() {
        let l = limiter(0);
        let (k, m) = names();
        let lim = LimitSettings { tpm: Some(1000), ..Default::default() };
        let est = Estimate { tokens: 300, ..Default::default() };
        let admit = || l.admit((&k, lim, BudgetSettings::default()), (&m, LimitSettings::default()), est);
        let held: Vec<_> = (0..3).map(|_| admit().expect("fits")).collect();
        assert!(matches!(admit(), Err(Refusal::Limit { what: "tokens", .. })));
        // Held by the three in flight, none settled: retry in a second, not when a minute ends.
        assert_eq!(admit().err(), Some(Refusal::Limit { what: "tokens", scope: Scope::Key, retry_after_s: 1 }));
        // Settled for less than reserved: room again.
        for a in held {
            a.settle(100, Money::ZERO);
        }
        assert!(admit().is_ok());
    }

    #[test]
    fn model_limits_hold_for_all_keys_and_refusals_take_nothing() {
        let l = limiter(0);
        let (k, m) = names();
        let other: Arc<str> = Arc::from("team-b");
        let ml = LimitSettings { concurrency: Some(1), ..Default::default() };
        let kl = LimitSettings { rpm: Some(1), ..Default::default() };
        let a = l.admit((&k, kl, BudgetSettings::default()), (&m, ml), Estimate::default()).expect("first");
        assert!(matches!(
            l.admit((&other, LimitSettings::default(), BudgetSettings::default()), (&m, ml), Estimate::default()),
            Err(Refusal::Limit { what: "concurrency", scope: Scope::Model, .. })
        ));
        drop(a);
        // team-a's rpm (1) was spent by the first request; the model's refusal above took nothing from team-b.
        assert!(l.admit((&k, kl, BudgetSettings::default()), (&m, ml), Estimate::default()).is_err());
        assert!(l
            .admit((&other, LimitSettings::default(), BudgetSettings::default()), (&m, ml), Estimate::default())
            .is_ok());
    }

    #[test]
    fn a_request_of_exact_cost_is_admitted_only_if_it_fits_whole() {
        let (k, m) = names();
        let budget = BudgetSettings { daily: Some(Money(1_000)), monthly: None };
        let l = limiter(0);
        let admit = |cost| {
            l.admit(
                (&k, LimitSettings::default(), budget),
                (&m, LimitSettings::default()),
                Estimate { tokens: 0, cost: Money(cost), exact: true },
            )
        };
        let over = admit(1_001).expect_err("more than the cap");
        assert!(matches!(
            over,
            Refusal::Budget {
                period: "daily",
                exact: Some(ExactRefused { cost: Money(1_001), left: Money(1_000), cap: Money(1_000) }),
                ..
            }
        ));
        let Refusal::Budget { exact: Some(e), .. } = over else { unreachable!() };
        assert!(e.never_fits(), "no day admits more than the cap");
        let a = admit(600).expect("fits");
        // 400 left, but only once the task in flight settles: a rate limit, not a refusal.
        assert_eq!(admit(500).err(), Some(Refusal::Limit { what: "budget", scope: Scope::Key, retry_after_s: 1 }));
        a.settle(0, Money(600));
        let Err(Refusal::Budget { exact: Some(e), .. }) = admit(500) else { panic!("500 of 400 left") };
        assert_eq!((e.left, e.never_fits()), (Money(400), false), "tomorrow it fits");
        let b = admit(400).expect("exactly what is left");
        b.settle(0, Money(400));
        assert!(matches!(admit(1), Err(Refusal::Budget { exact: None, .. })), "spent");
    }

    #[test]
    fn raising_to_the_ledger_sums_each_period_and_never_lowers_a_count() {
        let (k, m) = names();
        let budget = BudgetSettings { daily: Some(Money(1_000)), monthly: Some(Money(5_000)) };
        let l = limiter(0);
        let spent = |l: &Arc<Limiter>| {
            let mut state = l.state.lock().expect("not poisoned");
            state.keys.get_mut(&k).map(|c| c.spend(l.clock.now_us()))
        };
        let (today, _) = l.today_and_month_start();
        let days = crate::ledger::parse_day(&today).expect("a day");
        // Yesterday counts in the month only when it is in this month.
        let yesterday = crate::ledger::day_of((days - 1) * 86_400_000);
        let same_month = yesterday[..7] == today[..7];
        // Two rows of today (a ledger total and a running task's charge) add up.
        l.raise([
            (k.clone(), today.clone(), Money(600)),
            (k.clone(), today.clone(), Money(300)),
            (k.clone(), yesterday, Money(50)),
        ]);
        let month = if same_month { 950 } else { 900 };
        assert_eq!(spent(&l), Some((900, month)));
        // A higher count stays: the counts may hold spend the ledger has not written yet.
        let a = l
            .admit((&k, LimitSettings::default(), budget), (&m, LimitSettings::default()), Estimate::default())
            .expect("900 of 1000");
        a.settle(0, Money(80));
        l.raise([(k.clone(), today, Money(900))]);
        assert_eq!(spent(&l), Some((980, month + 80)));
    }

    #[test]
    fn daily_budget_stops_at_the_cap_and_resumes_the_next_utc_day() {
        let (k, m) = names();
        let budget = BudgetSettings { daily: Some(Money(1_000)), monthly: None };
        let l = limiter(0);
        let admit = |l: &Arc<Limiter>| {
            l.admit(
                (&k, LimitSettings::default(), budget),
                (&m, LimitSettings::default()),
                Estimate { tokens: 0, cost: Money(400), exact: false },
            )
        };
        let a = admit(&l).expect("0 spent");
        let b = admit(&l).expect("400 reserved");
        let c = admit(&l).expect("800 reserved");
        // Only reserved, not spent: a rate limit of a second, not the day's end.
        assert_eq!(admit(&l).err(), Some(Refusal::Limit { what: "budget", scope: Scope::Key, retry_after_s: 1 }));
        a.settle(0, Money(400));
        b.settle(0, Money(400));
        c.settle(0, Money(400));
        assert!(matches!(admit(&l), Err(Refusal::Budget { period: "daily", exact: None, .. })));
        // The same spend restored into a limiter whose clock is a day later: allowed again.
        let tomorrow = limiter(86_400);
        let (today, _) = l.today_and_month_start();
        tomorrow.raise([(k.clone(), today, Money(1_200))]);
        assert!(admit(&tomorrow).is_ok());
        let same_day = limiter(0);
        let (today, _) = same_day.today_and_month_start();
        same_day.raise([(k.clone(), today, Money(1_200))]);
        assert!(admit(&same_day).is_err());
    }

    #[test]
    fn a_raised_rpm_applies_at_once_and_keeps_the_count() {
        let l = limiter(0);
        let (k, m) = names();
        let admit = |rpm| {
            l.admit(
                (&k, LimitSettings { rpm: Some(rpm), ..Default::default() }, BudgetSettings::default()),
                (&m, LimitSettings::default()),
                Estimate::default(),
            )
        };
        for _ in 0..5 {
            drop(admit(5).expect("within 5"));
        }
        assert!(admit(5).is_err());
        // 5 used of a new 10: five more pass, not ten.
        for i in 0..5 {
            drop(admit(10).unwrap_or_else(|e| panic!("{i}: {e:?}")));
        }
        assert!(admit(10).is_err());
    }

    #[test]
    fn tokens_leave_the_window_after_a_minute() {
        let mut c = Counters::default();
        c.add_tokens(0, 500);
        c.add_tokens(30_000_000, 200);
        assert_eq!(c.tokens_in_window(59_999_999), 700);
        assert_eq!(c.tokens_in_window(60_000_000), 200);
        assert_eq!(c.tokens_retry_s(59_000_000, 600, 1000), 1);
        // 60 s later the ring slot of second 0 is reused, not added to.
        c.add_tokens(60_000_000, 1);
        assert_eq!(c.tokens_in_window(60_000_000), 201);
    }

    #[test]
    fn header_formats() {
        assert_eq!(rfc3339(1_796_508_600), "2026-12-05T22:10:00Z");
        assert_eq!(openai_duration(0.02), "20ms");
        assert_eq!(openai_duration(1.0), "1s");
        assert_eq!(openai_duration(1.5), "1.5s");
        assert_eq!(openai_duration(360.0), "6m0s");
        assert_eq!(openai_duration(59.25), "59.25s");
        assert_eq!(openai_duration(2.005), "2.005s");
        assert_eq!(openai_duration(3.07), "3.07s");
        assert_eq!(openai_duration(12.3), "12.3s");
        assert_eq!(openai_duration(0.0), "0ms");
    }

    #[test]
    fn periods_end_at_utc_midnight_and_month_end() {
        // 2026-12-31 23:00:00 UTC.
        let now = 1_798_758_000 * 1_000_000;
        assert_eq!(crate::ledger::day_of(now / 1000), "2026-12-31");
        assert_eq!(period_ends(now), (3600, 3600));
        // 2026-12-05 00:00:00 UTC: a whole day, and 27 days to January.
        let now = 1_796_428_800 * 1_000_000;
        assert_eq!(crate::ledger::day_of(now / 1000), "2026-12-05");
        assert_eq!(period_ends(now), (86_400, 27 * 86_400));
        // 2028-02-10 12:00 UTC, a leap year: 19.5 days to March.
        assert_eq!(period_ends(1_833_796_800 * 1_000_000), (43_200, 1_684_800));
        // 2027-02-28 00:00:01 UTC: the month's last day.
        assert_eq!(period_ends(1_803_772_801 * 1_000_000), (86_399, 86_399));
    }
}
