//! Per-row cost of the usage ledger, off the request path but on the same CPUs.
//!
//! - `row`: building a request's `Row` (what the request path adds; `Ledger::record` then only
//!   queues it). The baseline for the per-row figures below.
//! - `sqlite`: `Backend::write` of 1,000 rows (one transaction) into a SQLite file in a temp dir,
//!   fresh ids each time. Reported per batch; divide by 1,000 for per row.
//! - `account`: `ledger::account_batch` of 1,000 rows (the metrics a landed row moves), and of one
//!   row: a batch at a moderate rate, where the series' lookups are not shared by other rows.
//! - `spool`: serializing 1,000 rows to the spool's JSON lines (no fsync).
//!
//! Run: `cargo bench --bench ledger`. Compare per-row figures with the gateway's CPU per request
//! in `bash loadtest/compare.sh` (`gateway` against `gateway-noledger`).

use std::sync::Arc;
use std::time::Duration;

use cheapmodel::cost::MediaUnits;
use cheapmodel::ledger::{self, backend::Backend, Row};
use cheapmodel::money::Money;
use cheapmodel::usage::Usage;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn row(n: u64, key: &Arc<str>, model: &Arc<str>, upstream: &Arc<str>) -> Row {
    Row {
        id: format!("req_{:016x}{:016x}", 0x1234_5678_9abc_def0u64, n),
        request_id: format!("req_{:016x}{:016x}", 0x1234_5678_9abc_def0u64, n),
        time_ms: 1_796_500_000_000 + n as i64,
        key: key.clone(),
        model: model.clone(),
        upstream: upstream.clone(),
        endpoint: "/v1/chat/completions".into(),
        status: 200,
        stream: false,
        translated: false,
        usage: Usage { input: 700, output: 200, cache_read: 300, cache_write: 0 },
        media: MediaUnits::default(),
        cost: Money(2_912_500_000),
        latency_us: 350,
        ttfb_us: Some(200),
        task: false,
        estimated: false,
        charged: Money::ZERO,
    }
}

fn bench(c: &mut Criterion) {
    let (key, model, upstream): (Arc<str>, Arc<str>, Arc<str>) = ("team-a".into(), "gpt-5.5".into(), "openai".into());
    let dir = std::env::temp_dir().join(format!("cm-ledger-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut n = 0u64;

    let mut g = c.benchmark_group("ledger");
    g.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    g.bench_function("row (baseline)", |b| {
        b.iter(|| {
            n += 1;
            row(n, &key, &model, &upstream)
        })
    });
    let mut db = ledger::backend::Sqlite::open(dir.join("bench.sqlite").to_str().expect("utf-8")).expect("sqlite");
    g.bench_function("sqlite write 1000 rows", |b| {
        b.iter_batched(
            || {
                (0..1000)
                    .map(|_| {
                        n += 1;
                        row(n, &key, &model, &upstream)
                    })
                    .collect::<Vec<_>>()
            },
            |rows| db.write(&rows, &[], true).expect("write"),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("account 1000 rows", |b| {
        let rows: Vec<Row> = (0..1000).map(|i| row(i, &key, &model, &upstream)).collect();
        b.iter(|| ledger::account_batch(rows.iter()))
    });
    g.bench_function("account 1 row", |b| {
        let row = row(0, &key, &model, &upstream);
        b.iter(|| ledger::account_batch(std::iter::once(&row)))
    });
    g.bench_function("spool json 1000 rows", |b| {
        let rows: Vec<Row> = (0..1000).map(|i| row(i, &key, &model, &upstream)).collect();
        b.iter(|| {
            let mut buf = Vec::with_capacity(512 * 1000);
            for r in &rows {
                serde_json::to_writer(&mut buf, r).expect("json");
                buf.push(b'\n');
            }
            buf
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
