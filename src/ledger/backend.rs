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
/// Never edit an applied entry: add a new one. `{LEDGER_OPTIONS}` is the one difference between
/// the databases: SQLite stores the ledger as a `WITHOUT ROWID` table, clustered on `id` (one
/// b-tree per insert instead of two); Postgres has no such option and needs none.
const MIGRATIONS: &[&str] = &[
    // 1: the ledger and the tasks still to settle. SQLite gets no secondary index: an index costs
    // every insert a quarter more, and reports scan the table anyway. Postgres gets one on
    // `(day, key)` (migration 2) for reports over a few days of a large table.
    "CREATE TABLE IF NOT EXISTS ledger (
        id TEXT PRIMARY KEY,
        request_id TEXT,
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
    ){LEDGER_OPTIONS};
    CREATE TABLE IF NOT EXISTS pending_tasks (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        created_s BIGINT NOT NULL
    )",
    // 2: the report index, Postgres only.
    "{POSTGRES_ONLY}CREATE INDEX IF NOT EXISTS ledger_day_key ON ledger (day, key)",
];

/// A migration's text for one database.
fn migration(text: &str, postgres: bool) -> Option<String> {
    if let Some(pg) = text.strip_prefix("{POSTGRES_ONLY}") {
        return postgres.then(|| pg.to_string());
    }
    Some(text.replace("{LEDGER_OPTIONS}", if postgres { "" } else { " WITHOUT ROWID" }))
}

/// Columns of `ledger`, in insert order.
pub const COLUMNS: &str = "id, request_id, time_ms, day, key, model, upstream, endpoint, status, stream, translated, \
     input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, images, seconds, requests, cost_pusd, \
     latency_us, ttfb_us";
const COLUMN_COUNT: usize = 21;

/// A ledger database.
pub trait Backend: Send {
    /// In one transaction: remembers `pending` tasks (unless already billed), inserts the `rows`
    /// whose id is not there yet, and forgets the pending entry of every task row. Returns, per
    /// row, whether this call inserted it. `fresh`: the request rows (not task rows) come straight
    /// from the queue, so their ids (made by this process) cannot be there yet; false on replay.
    fn write(&mut self, rows: &[Row], pending: &[PendingTask], fresh: bool) -> Result<Vec<bool>, String>;
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

/// Rows per SQLite `INSERT` (21 parameters each).
const SQLITE_ROWS_PER_INSERT: usize = 32;

fn sqlite_insert(rows: usize) -> String {
    let one = format!("({})", vec!["?"; COLUMN_COUNT].join(","));
    format!("INSERT OR IGNORE INTO ledger ({COLUMNS}) VALUES {}", vec![one; rows].join(","))
}

/// `YYYY-MM-DD` of the last time seen: the rows of a batch nearly always share their day.
#[derive(Default)]
struct DayCache {
    day_number: i64,
    text: String,
}

impl DayCache {
    fn of(&mut self, time_ms: i64) -> String {
        let n = time_ms.div_euclid(86_400_000);
        if self.text.is_empty() || n != self.day_number {
            self.day_number = n;
            self.text = super::day_of(time_ms);
        }
        self.text.clone()
    }
}

/// The values of a row that are not stored as they are in `Row`.
struct RowParams<'a> {
    /// `None` when it equals the id (the common case): stored as NULL, read back as the id.
    request_id: Option<&'a str>,
    day: String,
    /// status, input, output, cache_read, cache_write, images, seconds, requests.
    counts: [i64; 8],
}

impl<'a> RowParams<'a> {
    fn of(r: &'a Row, days: &mut DayCache) -> Self {
        RowParams {
            request_id: (r.request_id != r.id).then_some(r.request_id.as_str()),
            day: days.of(r.time_ms),
            counts: [
                i64::from(r.status),
                r.usage.input as i64,
                r.usage.output as i64,
                r.usage.cache_read as i64,
                r.usage.cache_write as i64,
                r.media.images as i64,
                r.media.seconds as i64,
                1,
            ],
        }
    }
}

/// The embedded default: one SQLite file, WAL mode, `synchronous=FULL` (a committed batch survives
/// a power cut), a busy timeout so that two instances can share a file.
pub struct Sqlite {
    conn: rusqlite::Connection,
    /// The insert statements' text for a full chunk and for one row, built once.
    insert_chunk: String,
    insert_one: String,
}

/// Turns off SQLite's global memory statistics, once, before the library initialises: with them
/// on (the default), every allocation SQLite makes takes a process-wide mutex, and binding a row
/// allocates for each text value.
fn sqlite_without_memstatus() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is called before any connection exists (it answers SQLITE_MISUSE,
        // harmlessly, if the library was already initialised), with the documented int argument.
        let rc = unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
        if rc != rusqlite::ffi::SQLITE_OK {
            log::debug!("sqlite3_config(MEMSTATUS) answered {rc}");
        }
    });
}

impl Sqlite {
    /// Opens (creating) the file and migrates it.
    pub fn open(path: &str) -> Result<Self, String> {
        sqlite_without_memstatus();
        let conn = rusqlite::Connection::open(path).map_err(|e| format!("sqlite {path}: {e}"))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;").map_err(|e| e.to_string())?;
        let mut s = Sqlite { conn, insert_chunk: sqlite_insert(SQLITE_ROWS_PER_INSERT), insert_one: sqlite_insert(1) };
        s.migrate()?;
        Ok(s)
    }

    fn migrate(&mut self) -> Result<(), String> {
        // A plain read first: reports open the file too, and must not take the write lock (and
        // wait on the writer) when every migration is already there.
        let applied: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(version), 0) FROM cheapmodel_schema", [], |r| r.get(0))
            .unwrap_or(0);
        if applied as usize >= MIGRATIONS.len() {
            return Ok(());
        }
        let tx =
            self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS cheapmodel_schema (version INTEGER PRIMARY KEY)")
            .map_err(|e| e.to_string())?;
        let done: i64 = tx
            .query_row("SELECT COALESCE(MAX(version), 0) FROM cheapmodel_schema", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            if let Some(m) = migration(m, false) {
                tx.execute_batch(&m).map_err(|e| format!("migration {}: {e}", i + 1))?;
            }
            tx.execute("INSERT INTO cheapmodel_schema (version) VALUES (?1)", [i as i64 + 1])
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

impl Backend for Sqlite {
    fn write(&mut self, rows: &[Row], pending: &[PendingTask], fresh: bool) -> Result<Vec<bool>, String> {
        let tx =
            self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
        let mut inserted = vec![false; rows.len()];
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
            // Fresh request rows go many per statement (a statement's fixed cost is paid per 32
            // rows); rows that may already be there (tasks, replays) one per statement, so that
            // `changes()` says for each whether it was inserted.
            let (mut bulk, mut single): (Vec<usize>, Vec<usize>) =
                (0..rows.len()).partition(|&i| fresh && !rows[i].task);
            // The tail that does not fill a chunk goes one by one: two statements, both cached.
            single.extend(bulk.drain(bulk.len() - bulk.len() % SQLITE_ROWS_PER_INSERT..));
            let mut days = DayCache::default();
            for chunk in bulk.chunks(SQLITE_ROWS_PER_INSERT).chain(single.chunks(1)) {
                let sql = if chunk.len() == 1 { &self.insert_one } else { &self.insert_chunk };
                let mut insert = tx.prepare_cached(sql).map_err(|e| e.to_string())?;
                let owned: Vec<RowParams> = chunk.iter().map(|&i| RowParams::of(&rows[i], &mut days)).collect();
                let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * COLUMN_COUNT);
                for (&i, o) in chunk.iter().zip(&owned) {
                    let r = &rows[i];
                    params.extend_from_slice(&[
                        &r.id,
                        &o.request_id,
                        &r.time_ms,
                        &o.day,
                        &r.key,
                        &r.model,
                        &r.upstream,
                        &r.endpoint,
                        &o.counts[0],
                        &r.stream,
                        &r.translated,
                        &o.counts[1],
                        &o.counts[2],
                        &o.counts[3],
                        &o.counts[4],
                        &o.counts[5],
                        &o.counts[6],
                        &o.counts[7],
                        &r.cost.0,
                        &r.latency_us,
                        &r.ttfb_us,
                    ]);
                }
                let changed = insert.execute(params.as_slice()).map_err(|e| e.to_string())?;
                if chunk.len() == 1 {
                    inserted[chunk[0]] = changed == 1;
                } else if changed == chunk.len() {
                    chunk.iter().for_each(|&i| inserted[i] = true);
                } else {
                    // Cannot happen (fresh ids); roll back rather than count rows that are not new.
                    return Err(format!(
                        "{} of {} fresh rows were already in the ledger",
                        chunk.len() - changed,
                        chunk.len()
                    ));
                }
            }
            let mut settle = tx.prepare_cached("DELETE FROM pending_tasks WHERE id = ?1").map_err(|e| e.to_string())?;
            for r in rows.iter().filter(|r| r.task) {
                settle.execute([&r.id]).map_err(|e| e.to_string())?;
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

/// Postgres, for several instances and finance tooling. A batch is sent with `COPY ... FROM
/// STDIN` (text format) into a per-connection temporary table, then moved with one `INSERT ...
/// SELECT ... ON CONFLICT (id) DO NOTHING`: the cheapest way to hand Postgres many rows, and the
/// conflict rule keeps it idempotent. Migrations run under an advisory lock so that instances
/// starting together apply them once. Every statement is bounded by `statement_timeout`, so a slow
/// database sends the batch to the spool instead of stalling the writer.
pub struct Postgres {
    client: postgres::Client,
}

impl Postgres {
    /// Connects (5 s timeout) and migrates.
    pub fn connect(url: &str) -> Result<Self, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| format!("ledger.url: {e}"))?;
        config.connect_timeout(Duration::from_secs(5));
        config.options("-c statement_timeout=5000");
        let client = config.connect(postgres::NoTls).map_err(|e| format!("postgres: {e}"))?;
        let mut p = Postgres { client };
        p.migrate()?;
        p.client
            .batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS ledger_stage (LIKE ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
            )
            .map_err(|e| e.to_string())?;
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
            if let Some(m) = migration(m, true) {
                tx.batch_execute(&m).map_err(|e| format!("migration {}: {e}", i + 1))?;
            }
            tx.execute("INSERT INTO cheapmodel_schema (version) VALUES ($1)", &[&(i as i32 + 1)])
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

/// One row as a line of `COPY ... FROM STDIN` text format, in `COLUMNS` order.
fn copy_line(out: &mut Vec<u8>, r: &Row, days: &mut DayCache) {
    let p = RowParams::of(r, days);
    copy_text(out, &r.id);
    out.push(b'\t');
    match p.request_id {
        Some(id) => copy_text(out, id),
        None => out.extend_from_slice(b"\\N"),
    }
    let num = |out: &mut Vec<u8>, n: i64| {
        out.push(b'\t');
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    };
    num(out, r.time_ms);
    for text in [p.day.as_str(), &r.key, &r.model, &r.upstream, &r.endpoint] {
        out.push(b'\t');
        copy_text(out, text);
    }
    num(out, p.counts[0]);
    out.extend_from_slice(if r.stream { b"\tt" } else { b"\tf" });
    out.extend_from_slice(if r.translated { b"\tt" } else { b"\tf" });
    for n in &p.counts[1..] {
        num(out, *n);
    }
    num(out, r.cost.0);
    num(out, r.latency_us);
    match r.ttfb_us {
        Some(t) => num(out, t),
        None => out.extend_from_slice(b"\t\\N"),
    }
    out.push(b'\n');
}

/// A text value escaped for COPY's text format (backslash, tab, newline, carriage return).
fn copy_text(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

impl Backend for Postgres {
    fn write(&mut self, rows: &[Row], pending: &[PendingTask], fresh: bool) -> Result<Vec<bool>, String> {
        use std::io::Write;
        let mut tx = self.client.transaction().map_err(|e| e.to_string())?;
        for p in pending {
            tx.execute(
                "INSERT INTO pending_tasks (id, key, created_s) SELECT $1, $2, $3
                 WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE id = $1) ON CONFLICT (id) DO NOTHING",
                &[&p.id, &&*p.key, &p.created_s],
            )
            .map_err(|e| e.to_string())?;
        }
        let mut inserted = vec![false; rows.len()];
        if !rows.is_empty() {
            let mut buf = Vec::with_capacity(rows.len() * 160);
            let mut days = DayCache::default();
            for r in rows {
                copy_line(&mut buf, r, &mut days);
            }
            let mut copy =
                tx.copy_in(&format!("COPY ledger_stage ({COLUMNS}) FROM STDIN")).map_err(|e| e.to_string())?;
            copy.write_all(&buf).map_err(|e| e.to_string())?;
            copy.finish().map_err(|e| e.to_string())?;
            let move_rows = format!(
                "INSERT INTO ledger ({COLUMNS}) SELECT {COLUMNS} FROM ledger_stage ON CONFLICT (id) DO NOTHING"
            );
            if fresh && !rows.iter().any(|r| r.task) {
                // Fresh ids cannot be there yet: the count alone says all of them went in.
                let n = tx.execute(&move_rows, &[]).map_err(|e| e.to_string())?;
                if n as usize != rows.len() {
                    return Err(format!(
                        "{} of {} fresh rows were already in the ledger",
                        rows.len() - n as usize,
                        rows.len()
                    ));
                }
                inserted.iter_mut().for_each(|i| *i = true);
            } else {
                let ids: std::collections::HashSet<String> = tx
                    .query(&format!("{move_rows} RETURNING id"), &[])
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                for (i, r) in rows.iter().enumerate() {
                    inserted[i] = ids.contains(&r.id);
                }
            }
        }
        let settled: Vec<&str> = rows.iter().filter(|r| r.task).map(|r| r.id.as_str()).collect();
        if !settled.is_empty() {
            tx.execute("DELETE FROM pending_tasks WHERE id = ANY($1)", &[&settled]).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(inserted)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::MediaUnits;
    use crate::money::Money;
    use crate::usage::Usage;
    use std::sync::Arc;

    fn row(id: &str, request_id: &str) -> Row {
        Row {
            id: id.into(),
            request_id: request_id.into(),
            time_ms: 1_796_508_385_313,
            key: Arc::from("team-a"),
            model: Arc::from("gpt-5.5"),
            upstream: Arc::from("openai"),
            endpoint: "/v1/chat/completions".into(),
            status: 200,
            stream: true,
            translated: false,
            usage: Usage { input: 700, output: 200, cache_read: 300, cache_write: 0 },
            media: MediaUnits::default(),
            cost: Money(2_912_500_000),
            latency_us: 350,
            ttfb_us: None,
            task: false,
        }
    }

    #[test]
    fn copy_lines_escape_text_and_write_nulls() {
        let mut out = Vec::new();
        copy_line(&mut out, &row("req_1", "req_1"), &mut DayCache::default());
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "req_1\t\\N\t1796508385313\t2026-12-05\tteam-a\tgpt-5.5\topenai\t/v1/chat/completions\t200\tt\tf\t700\t200\t300\t0\t0\t0\t1\t2912500000\t350\t\\N\n"
        );
        let mut out = Vec::new();
        copy_line(&mut out, &row("req_2", "a\\b\tc\nd\re"), &mut DayCache::default());
        assert!(String::from_utf8(out).expect("utf-8").starts_with("req_2\ta\\\\b\\tc\\nd\\re\t"));
    }

    #[test]
    fn sqlite_skips_ids_already_there_and_says_which_went_in() {
        let dir = std::env::temp_dir().join(format!("cm-ledger-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("l.sqlite");
        let mut db = Sqlite::open(path.to_str().expect("utf-8")).expect("open");
        let rows: Vec<Row> = (0..40).map(|i| row(&format!("req_{i}"), &format!("req_{i}"))).collect();
        assert_eq!(db.write(&rows, &[], true).expect("write"), vec![true; 40]);
        // A replay of some of them plus new ones: only the new ones go in.
        let again: Vec<Row> = (30..50).map(|i| row(&format!("req_{i}"), "caller-id")).collect();
        let inserted = db.write(&again, &[], false).expect("write");
        assert_eq!(inserted, (30..50).map(|i| i >= 40).collect::<Vec<_>>());
        let n =
            db.query("SELECT CAST(COUNT(*) AS TEXT), CAST(COUNT(request_id) AS TEXT) FROM ledger", &[]).expect("query");
        assert_eq!(n, vec![vec!["50".to_string(), "10".to_string()]]);
        // A fresh batch that repeats an id is refused whole, not half counted.
        let dup: Vec<Row> = (0..32).map(|i| row(&format!("req_{}", 100 + i % 31), "x")).collect();
        assert!(db.write(&dup, &[], true).is_err());
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
