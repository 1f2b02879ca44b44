//! Every Prometheus metric the gateway exports, registered once in the default registry (which
//! `pingora-prometheus` serves on `server.metrics`). Label values come only from registry names
//! (model, upstream, key name) or `&'static str`: never a key, a secret or an unregistered model.
//! Imports: nothing of the gateway's. Everything that counts imports this module.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, HistogramVec, IntCounterVec, IntGauge,
};

use crate::money::Money;

/// Handles to every metric.
pub struct Metrics {
    /// `cheapmodel_requests_total{model,upstream,status}`: requests routed to an upstream.
    pub requests: IntCounterVec,
    /// `cheapmodel_request_duration_seconds{model}`: whole request, as the caller saw it.
    pub duration: HistogramVec,
    /// `cheapmodel_upstream_ttfb_seconds{model}`: upstream response headers after the request left.
    pub ttfb: HistogramVec,
    /// `cheapmodel_overhead_seconds{model}`: the gateway's own time (total minus upstream wait).
    pub overhead: HistogramVec,
    /// `cheapmodel_tokens_total{model,key,type}`.
    pub tokens: IntCounterVec,
    /// `cheapmodel_cost_usd_total{model,key}`, kept in exact integer money (`CostTotals`).
    pub cost: Arc<CostTotals>,
    /// `cheapmodel_rejected_total{reason}`: requests answered with the gateway's own error.
    pub rejected: IntCounterVec,
    /// `cheapmodel_config_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `cheapmodel_tasks_total{model,status}`: media tasks submitted (pending) and finished.
    pub tasks: IntCounterVec,
    /// `cheapmodel_estimated_requests_total{model,key}`: requests billed on an estimate (a stream
    /// whose upstream count is missing or cannot be right, `usage::StreamTokens::needs_estimate`),
    /// counted as their rows land, like the tokens.
    pub estimated: IntCounterVec,
    /// `cheapmodel_dropped_params_total{model,param}`: request fields translation left out;
    /// `param` is a name from `dialect::DROPPED_BY_RULE` or `other`.
    pub dropped_params: IntCounterVec,
}

/// Latency buckets from 1 ms to 10 min.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Overhead buckets fine enough to tell 50 microseconds from 500.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1,
];

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics (registered on first use).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let m = register();
        at_zero(&m.reloads, &["ok", "error"]);
        m
    })
}

/// Makes the series of a failure counter exist at 0 from the start: an alert on
/// `increase(...[5m]) > 0` misses the first failure of a series that appears only with it.
fn at_zero(counter: &IntCounterVec, values: &[&str]) {
    for v in values {
        counter.with_label_values(&[v]);
    }
}

#[expect(clippy::expect_used, reason = "registering fixed, valid metric definitions once at start cannot fail")]
fn register() -> Metrics {
    Metrics {
        requests: register_int_counter_vec!(
            "cheapmodel_requests_total",
            "Requests routed to an upstream, by final status",
            &["model", "upstream", "status"]
        )
        .expect("register"),
        duration: register_histogram_vec!(
            "cheapmodel_request_duration_seconds",
            "Request duration as seen by the caller",
            &["model"],
            DURATION_BUCKETS.to_vec()
        )
        .expect("register"),
        ttfb: register_histogram_vec!(
            "cheapmodel_upstream_ttfb_seconds",
            "Time from sending the request upstream to the upstream's response headers",
            &["model"],
            DURATION_BUCKETS.to_vec()
        )
        .expect("register"),
        overhead: register_histogram_vec!(
            "cheapmodel_overhead_seconds",
            "Time the gateway itself spent on a request: total minus time waiting on the upstream",
            &["model"],
            OVERHEAD_BUCKETS.to_vec()
        )
        .expect("register"),
        tokens: register_int_counter_vec!(
            "cheapmodel_tokens_total",
            "Tokens by model, key name and type (input excludes cached tokens)",
            &["model", "key", "type"]
        )
        .expect("register"),
        cost: {
            let c = Arc::new(CostTotals::new());
            prometheus::register(Box::new(CostCollector(c.clone()))).expect("register");
            c
        },
        rejected: register_int_counter_vec!(
            "cheapmodel_rejected_total",
            "Requests the gateway answered with its own error, by reason",
            &["reason"]
        )
        .expect("register"),
        reloads: register_int_counter_vec!("cheapmodel_config_reloads_total", "Config reloads by result", &["result"])
            .expect("register"),
        tasks: register_int_counter_vec!(
            "cheapmodel_tasks_total",
            "Media tasks by model and status (pending at submit, then completed or failed once)",
            &["model", "status"]
        )
        .expect("register"),
        estimated: register_int_counter_vec!(
            "cheapmodel_estimated_requests_total",
            "Requests billed on an estimate: streams whose upstream usage is missing or cannot be right",
            &["model", "key"]
        )
        .expect("register"),
        dropped_params: register_int_counter_vec!(
            "cheapmodel_dropped_params_total",
            "Request fields a translated route left out, by model and field name (other: not in the mapping tables)",
            &["model", "param"]
        )
        .expect("register"),
    }
}

/// A model's handles, resolved on its first request and kept with the model (a reload builds new
/// models, so new handles): the request path then skips `with_label_values`' hash and lock.
#[derive(Default)]
pub struct ModelHandles(OnceLock<Resolved>);

/// The resolved handles of one model.
pub struct Resolved {
    /// `cheapmodel_requests_total{model,upstream,status="200"}`, the common case.
    pub ok: prometheus::IntCounter,
    /// `cheapmodel_request_duration_seconds{model}`.
    pub duration: prometheus::Histogram,
    /// `cheapmodel_upstream_ttfb_seconds{model}`.
    pub ttfb: prometheus::Histogram,
    /// `cheapmodel_overhead_seconds{model}`.
    pub overhead: prometheus::Histogram,
}

impl ModelHandles {
    /// The handles for `model` on `upstream`, resolved once.
    pub fn get(&self, model: &str, upstream: &str) -> &Resolved {
        self.0.get_or_init(|| {
            let m = get();
            Resolved {
                ok: m.requests.with_label_values(&[model, upstream, "200"]),
                duration: m.duration.with_label_values(&[model]),
                ttfb: m.ttfb.with_label_values(&[model]),
                overhead: m.overhead.with_label_values(&[model]),
            }
        })
    }
}

impl std::fmt::Debug for ModelHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "ModelHandles(resolved)" } else { "ModelHandles(unresolved)" })
    }
}

/// The token, estimate and cost series of one `(model, key)`, each resolved the first time it
/// moves (a series appears in `/metrics` only once it has counted something, as before).
#[derive(Default)]
pub struct SpendHandles {
    /// `cheapmodel_tokens_total{model,key,type}` by `type`, in `TOKEN_TYPES`' order.
    tokens: [OnceLock<prometheus::IntCounter>; 4],
    /// `cheapmodel_estimated_requests_total{model,key}`.
    estimated: OnceLock<prometheus::IntCounter>,
    /// The `(model, key)` cell of `cheapmodel_cost_usd_total`.
    cost: OnceLock<Arc<AtomicI64>>,
}

/// The `type` label of `cheapmodel_tokens_total`, in the order `SpendHandles::count` takes them.
const TOKEN_TYPES: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

/// Every `(model, key)`'s `SpendHandles`, kept by whoever counts spend (the ledger's database
/// thread, or each worker when there is no database): a row's series are then found by two
/// lookups of its names, where each `with_label_values` hashed three labels and took a lock, three
/// times a row (~1,300 instructions a request, callgrind). Grows with the series `/metrics` shows
/// anyway. Hashed with foldhash: the names are the registry's, not a caller's input, and SipHash
/// cost ~250 instructions a lookup here.
#[derive(Default)]
pub struct SpendSeries(foldhash::HashMap<Arc<str>, foldhash::HashMap<Arc<str>, SpendHandles>>);

impl SpendSeries {
    /// The handles of `(model, key)`.
    pub fn of(&mut self, model: &Arc<str>, key: &Arc<str>) -> &SpendHandles {
        // One hash a level (`entry` takes an owned name: a reference count, not a copy).
        self.0.entry(model.clone()).or_default().entry(key.clone()).or_default()
    }
}

impl SpendHandles {
    /// Counts `tokens` (by `TOKEN_TYPES`), `estimated` requests and `cost` in `model`/`key`'s
    /// series; a zero leaves its series alone.
    pub fn count(&self, model: &str, key: &str, tokens: [u64; 4], estimated: u64, cost: Money) {
        let m = get();
        for ((handle, kind), n) in self.tokens.iter().zip(TOKEN_TYPES).zip(tokens) {
            if n > 0 {
                handle.get_or_init(|| m.tokens.with_label_values(&[model, key, kind])).inc_by(n);
            }
        }
        if cost.0 != 0 {
            self.cost.get_or_init(|| m.cost.cell_or_new(model, key)).fetch_add(cost.0, Ordering::Relaxed);
        }
        if estimated > 0 {
            self.estimated.get_or_init(|| m.estimated.with_label_values(&[model, key])).inc_by(estimated);
        }
    }
}

/// Status code as a `&'static str` label without allocating.
#[expect(clippy::match_overlapping_arm, reason = "exact codes first, then their class for the rest")]
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        529 => "529",
        0 => "0",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Cost totals by `(model, key)` in pico-dollars (`money`): added as integers, converted to a float
/// only when Prometheus reads them, so the exported value is the exact ledger total (to the
/// float's 15-16 significant digits: exact up to $1,000 per series at the last pico-dollar, and to
/// the last nano-dollar up to $1 million) and no rounding error ever accumulates.
pub struct CostTotals {
    series: RwLock<CostSeries>,
}

impl CostTotals {
    fn new() -> Self {
        CostTotals { series: RwLock::new(HashMap::new()) }
    }

    fn cell(&self, model: &str, key: &str) -> Option<Arc<AtomicI64>> {
        self.series.read().unwrap_or_else(|e| e.into_inner()).get(model)?.get(key).cloned()
    }

    /// The `(model, key)` series' cell, made at zero when it is new.
    fn cell_or_new(&self, model: &str, key: &str) -> Arc<AtomicI64> {
        match self.cell(model, key) {
            Some(c) => c,
            None => self
                .series
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(Arc::from(model))
                .or_default()
                .entry(Arc::from(key))
                .or_default()
                .clone(),
        }
    }

    /// The `(model, key)` total.
    pub fn get(&self, model: &str, key: &str) -> Money {
        Money(self.cell(model, key).map_or(0, |c| c.load(Ordering::Relaxed)))
    }
}

/// model → key → pico-dollars.
type CostSeries = HashMap<Arc<str>, HashMap<Arc<str>, Arc<AtomicI64>>>;

struct CostCollector(Arc<CostTotals>);

static COST_DESC: OnceLock<Desc> = OnceLock::new();

fn cost_desc() -> &'static Desc {
    COST_DESC.get_or_init(|| {
        #[expect(clippy::expect_used, reason = "a fixed, valid metric definition")]
        Desc::new(
            "cheapmodel_cost_usd_total".into(),
            "Cost in USD by model and key name (exact: summed in integer pico-dollars)".into(),
            vec!["model".into(), "key".into()],
            HashMap::new(),
        )
        .expect("desc")
    })
}

impl Collector for CostCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![cost_desc()]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = self.0.series.read().unwrap_or_else(|e| e.into_inner());
        let mut metrics = Vec::with_capacity(series.len());
        for (model, key, total) in series.iter().flat_map(|(m, keys)| keys.iter().map(move |(k, t)| (m, k, t))) {
            let label = |name: &str, value: &str| {
                let mut l = LabelPair::default();
                l.set_name(name.into());
                l.set_value(value.into());
                l
            };
            let mut counter = Counter::default();
            counter.set_value(Money(total.load(Ordering::Relaxed)).as_usd_f64());
            let mut m = Metric::from_label(vec![label("key", key), label("model", model)]);
            m.set_counter(counter);
            metrics.push(m);
        }
        let mut family = MetricFamily::default();
        family.set_name(cost_desc().fq_name.clone());
        family.set_help(cost_desc().help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(metrics);
        vec![family]
    }
}

/// The ledger's own metrics.
pub struct LedgerMetrics {
    /// `cheapmodel_ledger_spool_bytes`: rows waiting in the local spool while the database is away.
    pub spool_bytes: IntGauge,
    /// `cheapmodel_ledger_errors_total{kind}`: `database`, `spool`, `queue_full`, `stopped`.
    pub errors: IntCounterVec,
}

static LEDGER: OnceLock<LedgerMetrics> = OnceLock::new();

/// The ledger's metrics (registered on first use).
pub fn ledger() -> &'static LedgerMetrics {
    LEDGER.get_or_init(|| {
        let m = ledger_metrics();
        at_zero(&m.errors, &["database", "spool", "queue_full", "stopped"]);
        m
    })
}

#[expect(clippy::expect_used, reason = "registering fixed, valid metric definitions once cannot fail")]
fn ledger_metrics() -> LedgerMetrics {
    LedgerMetrics {
        spool_bytes: register_int_gauge!(
            "cheapmodel_ledger_spool_bytes",
            "Bytes of ledger rows waiting in the local spool for the database"
        )
        .expect("register"),
        errors: register_int_counter_vec!(
            "cheapmodel_ledger_errors_total",
            "Ledger failures by kind (database: a write or connect failed, rows spooled; spool: the spool could not be written; queue_full: rows lost)",
            &["kind"]
        )
        .expect("register"),
    }
}

/// The shared limits state's (Redis) metrics.
pub struct StateMetrics {
    /// `cheapmodel_state_errors_total{op}`: failed Redis calls (`admit`, `settle`, `heartbeat`,
    /// `connect`) and `settle_dropped` (settlements given up after too long an outage).
    pub errors: IntCounterVec,
    /// `cheapmodel_state_up`: 1 while the last Redis call succeeded, 0 after a failure.
    pub up: IntGauge,
    /// `cheapmodel_state_instances`: live instances sharing the state, at the last heartbeat
    /// (while Redis is away, each takes this share of every limit).
    pub instances: IntGauge,
}

static STATE: OnceLock<StateMetrics> = OnceLock::new();

/// The shared state's metrics (registered on first use).
#[expect(clippy::expect_used, reason = "registering fixed, valid metric definitions once cannot fail")]
pub fn state() -> &'static StateMetrics {
    STATE.get_or_init(|| StateMetrics {
        errors: register_int_counter_vec!(
            "cheapmodel_state_errors_total",
            "Failed calls to the shared limits state (Redis), by operation; admissions fall back per server.on_state_error",
            &["op"]
        )
        .expect("register"),
        up: register_int_gauge!("cheapmodel_state_up", "1 while the shared limits state (Redis) answers, 0 after a failure")
            .expect("register"),
        instances: register_int_gauge!(
            "cheapmodel_state_instances",
            "Live gateway instances sharing the limits state, counted at the last heartbeat"
        )
        .expect("register"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `(labels, value)` of every series of `family` whose labels include `model`.
    fn series_of(family: &IntCounterVec, model: &str) -> Vec<(Vec<String>, u64)> {
        let mut found: Vec<(Vec<String>, u64)> = family
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.value() == model))
            .map(|m| (m.get_label().iter().map(|l| l.value().to_owned()).collect(), m.get_counter().value() as u64))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn spend_handles_count_into_their_own_series_and_only_what_moved() {
        let m = get();
        let model: Arc<str> = Arc::from("spend-handles-test-model");
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("key-a"), Arc::from("key-b"));
        let mut series = SpendSeries::default();
        series.of(&model, &a).count(&model, &a, [3, 5, 0, 0], 1, Money(7));
        series.of(&model, &a).count(&model, &a, [1, 0, 0, 2], 0, Money(0));
        series.of(&model, &b).count(&model, &b, [0, 4, 0, 0], 0, Money(11));
        // A second thread's handles (its own `SpendSeries`) move the same series.
        SpendSeries::default().of(&model, &b).count(&model, &b, [0, 1, 0, 0], 2, Money(5));

        // Prometheus orders a series' labels by name: key, model, type.
        let row = |key: &str, kind: &str, n| (vec![key.to_owned(), model.to_string(), kind.to_owned()], n);
        assert_eq!(
            series_of(&m.tokens, &model),
            [
                row("key-a", "cache_write", 2),
                row("key-a", "input", 4),
                row("key-a", "output", 5),
                row("key-b", "output", 5)
            ],
            "a type that never moved has no series"
        );
        let estimated = |key: &str, n| (vec![key.to_owned(), model.to_string()], n);
        assert_eq!(series_of(&m.estimated, &model), [estimated("key-a", 1), estimated("key-b", 2)]);
        assert_eq!(m.cost.get(&model, &a), Money(7));
        assert_eq!(m.cost.get(&model, &b), Money(16));
    }
}
