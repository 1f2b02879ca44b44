//! The databases the ledger writes to, behind one small trait. Both take the same schema and the
//! same report query (`report::totals_sql`); only connecting, binding and the insert statement
//! differ.
//!
//! Drivers: `rusqlite` (bundled SQLite: the embedded default needs nothing installed) and the
//! blocking `postgres` client (rust-postgres, the maintained pure-Rust driver under tokio-postgres).
//! The writer is one thread with one connection, so no pool is needed; reports open their own
//! short-lived connection.

use std::time::Duration;

use super::{PendingTask, Row};

/// Schema changes, applied in order on start; `cheapmodel_schema` records the ones applied.
/// Never edit an applied entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the ledger and the tasks still to settle.
    "CREATE TABLE IF NOT EXISTS ledger (
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        day TEXT NOT NULL,
        key TEXT NOT NULL,
        model TEXT NOT NULL,
        upstream TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        status INTEGER NOT NULL,
        stream BOOLEAN NOT NULL,
        translated BOOLEAN NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cache_read_tokens BIGINT NOT NULL,
        cache_write_tokens BIGINT NOT NULL,
        images BIGINT NOT NULL,
        seconds BIGINT NOT NULL,
        requests BIGINT NOT NULL,
        cost_pusd BIGINT NOT NULL,
        latency_us BIGINT NOT NULL,
        ttfb_us BIGINT
    );
    CREATE INDEX IF NOT EXISTS ledger_day_key ON ledger (day, key);
    CREATE TABLE IF NOT EXISTS pending_tasks (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        created_s BIGINT NOT NULL
    )",
];

/// Columns of `ledger`, in insert order.
pub const COLUMNS: &str = "id, request_id, time_ms, day, key, model, upstream, endpoint, status, stream, translated, \
     input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, images, seconds, requests, cost_pusd, \
     latency_us, ttfb_us";
const COLUMN_COUNT: usize = 21;

/// A ledger database.
pub trait Backend: Send {
    /// In one transaction: remembers `pending` tasks (unless already billed), inserts the `rows`
    /// whose id is not there yet, and forgets the pending entry of every task row. Returns, per
    /// row, whether this call inserted it.
    fn write(&mut self, rows: &[Row], pending: &[PendingTask]) -> Result<Vec<bool>, String>;
    /// Runs a report query (`report`); every value comes back as text.
    fn query(&mut self, sql: &str, params: &[String]) -> Result<Vec<Vec<String>>, String>;
    /// Every task still to settle.
    fn pending_tasks(&mut self) -> Result<Vec<PendingTask>, String>;
}

/// Connects to `url` (`sqlite://PATH` or `postgres://...`) and applies the migrations.
pub fn connect(url: &str) -> Result<Box<dyn Backend>, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Box::new(Sqlite::open(path)?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(Postgres::connect(url)?))
    } else {
        Err("ledger.url must be sqlite://PATH, postgres://... or none".into())
    }
}

/// Placeholder number `i` (1-based) in each database's syntax.
pub fn placeholder(postgres: bool, i: usize) -> String {
    if postgres {
        format!("${i}")
    } else {
        format!("?{i}")
    }
}

/// The embedded default: one SQLite file, WAL mode, `synchronous=FULL` (a committed batch survives
/// a power cut), a busy timeout so that two instances can share a file.
pub struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    /// Opens (creating) the file and migrates it.
    pub fn open(path: &str) -> Result<Self, String> {
        let conn = rusqlite::Connection::open(path).map_err(|e| format!("sqlite {path}: {e}"))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;").map_err(|e| e.to_string())?;
        let mut s = Sqlite { conn };
        s.migrate()?;
        Ok(s)
    }

    fn migrate(&mut self) -> Result<(), String> {
        let tx =
            self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS cheapmodel_schema (version INTEGER PRIMARY KEY)")
            .map_err(|e| e.to_string())?;
        let done: i64 = tx
            .query_row("SELECT COALESCE(MAX(version), 0) FROM cheapmodel_schema", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.execute_batch(m).map_err(|e| format!("migration {}: {e}", i + 1))?;
            tx.execute("INSERT INTO cheapmodel_schema (version) VALUES (?1)", [i as i64 + 1])
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

impl Backend for Sqlite {
    fn write(&mut self, rows: &[Row], pending: &[PendingTask]) -> Result<Vec<bool>, String> {
        let tx =
            self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
        let mut inserted = Vec::with_capacity(rows.len());
        {
            let mut add_pending = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO pending_tasks (id, key, created_s)
                     SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE id = ?1)",
                )
                .map_err(|e| e.to_string())?;
            for p in pending {
                add_pending.execute(rusqlite::params![p.id, &*p.key, p.created_s]).map_err(|e| e.to_string())?;
            }
            let placeholders: Vec<String> = (1..=COLUMN_COUNT).map(|i| placeholder(false, i)).collect();
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT OR IGNORE INTO ledger ({COLUMNS}) VALUES ({})",
                    placeholders.join(", ")
                ))
                .map_err(|e| e.to_string())?;
            let mut settle = tx.prepare_cached("DELETE FROM pending_tasks WHERE id = ?1").map_err(|e| e.to_string())?;
            for r in rows {
                let n = insert
                    .execute(rusqlite::params![
                        r.id,
                        r.request_id,
                        r.time_ms,
                        r.day(),
                        &*r.key,
                        &*r.model,
                        &*r.upstream,
                        &*r.endpoint,
                        r.status,
                        r.stream,
                        r.translated,
                        r.usage.input as i64,
                        r.usage.output as i64,
                        r.usage.cache_read as i64,
                        r.usage.cache_write as i64,
                        r.media.images as i64,
                        r.media.seconds as i64,
                        1i64,
                        r.cost.0,
                        r.latency_us,
                        r.ttfb_us,
                    ])
                    .map_err(|e| e.to_string())?;
                inserted.push(n == 1);
                if r.task {
                    settle.execute([&r.id]).map_err(|e| e.to_string())?;
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(inserted)
    }

    fn query(&mut self, sql: &str, params: &[String]) -> Result<Vec<Vec<String>>, String> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| e.to_string())?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                (0..n).map(|i| r.get::<_, Option<String>>(i).map(Option::unwrap_or_default)).collect()
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<Vec<String>>, _>>().map_err(|e| e.to_string())
    }

    fn pending_tasks(&mut self) -> Result<Vec<PendingTask>, String> {
        let mut stmt = self.conn.prepare("SELECT id, key, created_s FROM pending_tasks").map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PendingTask { id: r.get(0)?, key: r.get::<_, String>(1)?.into(), created_s: r.get(2)? })
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
    }
}

/// Postgres, for several instances and finance tooling: multi-row `INSERT ... ON CONFLICT (id) DO
/// NOTHING RETURNING id` per batch, migrations under an advisory lock so that instances starting
/// together apply them once. Every statement is bounded by `statement_timeout`, so a slow database
/// sends the batch to the spool instead of stalling the writer.
pub struct Postgres {
    client: postgres::Client,
}

/// Rows per `INSERT` statement (21 parameters each, well under Postgres' 65,535).
const PG_ROWS_PER_INSERT: usize = 500;

impl Postgres {
    /// Connects (5 s timeout) and migrates.
    pub fn connect(url: &str) -> Result<Self, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| format!("ledger.url: {e}"))?;
        config.connect_timeout(Duration::from_secs(5));
        config.options("-c statement_timeout=10000");
        let client = config.connect(postgres::NoTls).map_err(|e| format!("postgres: {e}"))?;
        let mut p = Postgres { client };
        p.migrate()?;
        Ok(p)
    }

    fn migrate(&mut self) -> Result<(), String> {
        let mut tx = self.client.transaction().map_err(|e| e.to_string())?;
        // Any constant: instances that start together take turns here.
        tx.execute("SELECT pg_advisory_xact_lock(7210331)", &[]).map_err(|e| e.to_string())?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS cheapmodel_schema (version INTEGER PRIMARY KEY)")
            .map_err(|e| e.to_string())?;
        let done: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM cheapmodel_schema", &[])
            .map_err(|e| e.to_string())?
            .get(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(m).map_err(|e| format!("migration {}: {e}", i + 1))?;
            tx.execute("INSERT INTO cheapmodel_schema (version) VALUES ($1)", &[&(i as i32 + 1)])
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

impl Backend for Postgres {
    fn write(&mut self, rows: &[Row], pending: &[PendingTask]) -> Result<Vec<bool>, String> {
        use postgres::types::ToSql;
        let mut tx = self.client.transaction().map_err(|e| e.to_string())?;
        for p in pending {
            tx.execute(
                "INSERT INTO pending_tasks (id, key, created_s) SELECT $1, $2, $3
                 WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE id = $1) ON CONFLICT (id) DO NOTHING",
                &[&p.id, &&*p.key, &p.created_s],
            )
            .map_err(|e| e.to_string())?;
        }
        let mut inserted_ids = std::collections::HashSet::new();
        for chunk in rows.chunks(PG_ROWS_PER_INSERT) {
            struct Owned {
                day: String,
                status: i32,
                counts: [i64; 7],
            }
            let owned: Vec<Owned> = chunk
                .iter()
                .map(|r| Owned {
                    day: r.day(),
                    status: i32::from(r.status),
                    counts: [
                        r.usage.input as i64,
                        r.usage.output as i64,
                        r.usage.cache_read as i64,
                        r.usage.cache_write as i64,
                        r.media.images as i64,
                        r.media.seconds as i64,
                        1,
                    ],
                })
                .collect();
            let keys: Vec<(&str, &str, &str, &str)> =
                chunk.iter().map(|r| (&*r.key, &*r.model, &*r.upstream, &*r.endpoint)).collect();
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * COLUMN_COUNT);
            let mut values = Vec::with_capacity(chunk.len());
            for (i, ((r, o), k)) in chunk.iter().zip(&owned).zip(&keys).enumerate() {
                let base = i * COLUMN_COUNT;
                let ph: Vec<String> = (1..=COLUMN_COUNT).map(|j| placeholder(true, base + j)).collect();
                values.push(format!("({})", ph.join(", ")));
                params.extend_from_slice(&[
                    &r.id,
                    &r.request_id,
                    &r.time_ms,
                    &o.day,
                    &k.0,
                    &k.1,
                    &k.2,
                    &k.3,
                    &o.status,
                    &r.stream,
                    &r.translated,
                    &o.counts[0],
                    &o.counts[1],
                    &o.counts[2],
                    &o.counts[3],
                    &o.counts[4],
                    &o.counts[5],
                    &o.counts[6],
                    &r.cost.0,
                    &r.latency_us,
                    &r.ttfb_us,
                ]);
            }
            let sql = format!(
                "INSERT INTO ledger ({COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                values.join(", ")
            );
            for row in tx.query(&sql, &params).map_err(|e| e.to_string())? {
                inserted_ids.insert(row.get::<_, String>(0));
            }
        }
        let settled: Vec<&str> = rows.iter().filter(|r| r.task).map(|r| r.id.as_str()).collect();
        if !settled.is_empty() {
            tx.execute("DELETE FROM pending_tasks WHERE id = ANY($1)", &[&settled]).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(rows.iter().map(|r| inserted_ids.contains(&r.id)).collect())
    }

    fn query(&mut self, sql: &str, params: &[String]) -> Result<Vec<Vec<String>>, String> {
        use postgres::types::ToSql;
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|s| s as &(dyn ToSql + Sync)).collect();
        let rows = self.client.query(sql, &p).map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i).unwrap_or_default()).collect())
            .collect())
    }

    fn pending_tasks(&mut self) -> Result<Vec<PendingTask>, String> {
        let rows = self.client.query("SELECT id, key, created_s FROM pending_tasks", &[]).map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|r| PendingTask { id: r.get(0), key: r.get::<_, String>(1).into(), created_s: r.get(2) })
            .collect())
    }
}
