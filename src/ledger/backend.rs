//! The databases the ledger writes to, behind one small trait. Both take the same schema and the
//! same report query (`report::totals_sql`); only connecting, binding and the insert statement
//! differ.
//!
//! Drivers: `rusqlite` (bundled SQLite: the embedded default needs nothing installed) and the
//! blocking `postgres` client (rust-postgres, the maintained pure-Rust driver under tokio-postgres).
//! The writer is one thread with one connection, so no pool is needed; reports open their own
//! short-lived connection.
//! Imports: `cost`, `money`, `usage`, and the ledger's `Row` and `sqlite_insert`. Not `proxy`,
//! `metrics` or Pingora.

use std::time::Duration;

use super::sqlite_insert::SqliteInsert;
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
    // 3: values pinned once for every instance that shares the database (`pin_setting`).
    "CREATE TABLE IF NOT EXISTS cheapmodel_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    // 4: rows whose tokens are an estimate (`usage::StreamTokens::needs_estimate`).
    "ALTER TABLE ledger ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT FALSE",
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
     latency_us, ttfb_us, estimated";
pub const COLUMN_COUNT: usize = 22;

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
    /// The value stored under `name`, storing `value` first when there is none: the first
    /// instance to ask pins it for every later one.
    fn pin_setting(&mut self, name: &str, value: &str) -> Result<String, String>;
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

/// Rows per SQLite `INSERT` statement, largest first: a batch goes in as few statements as the
/// binary digits of its size, so that a statement's fixed cost (~4k instructions: `sqlite3_reset`,
/// opening the cursor, `sqlite3VdbeHalt`) is shared by many rows whatever the batch size. Each is
/// prepared once (`SqliteInsert`); 64 rows is 1,344 parameters, far under SQLite's limit.
const SQLITE_ROWS_PER_INSERT: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// A UTC day as `YYYY-MM-DD`, kept inline (no allocation per row).
#[derive(Clone, Copy)]
pub struct Day([u8; 10]);

impl Day {
    fn of(time_ms: i64) -> Self {
        let (y, m, d) = super::civil_from_days(time_ms.div_euclid(86_400_000));
        let mut text = [0u8; 10];
        // `day_of`'s format, written in place; a year outside 0..=9999 never reaches the ledger
        // (it is the clock's), but is clamped rather than mis-written.
        let y = y.clamp(0, 9999) as u32;
        for (i, digit) in [y / 1000, y / 100 % 10, y / 10 % 10, y % 10].into_iter().enumerate() {
            text[i] = b'0' + digit as u8;
        }
        text[4] = b'-';
        text[5..7].copy_from_slice(&[b'0' + (m / 10) as u8, b'0' + (m % 10) as u8]);
        text[7] = b'-';
        text[8..10].copy_from_slice(&[b'0' + (d / 10) as u8, b'0' + (d % 10) as u8]);
        Day(text)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or("0000-00-00")
    }
}

/// The day of the last time seen: the rows of a batch nearly always share their day.
#[derive(Default)]
struct DayCache {
    last: Option<(i64, Day)>,
}

impl DayCache {
    fn of(&mut self, time_ms: i64) -> Day {
        let n = time_ms.div_euclid(86_400_000);
        match self.last {
            Some((last, day)) if last == n => day,
            _ => {
                let day = Day::of(time_ms);
                self.last = Some((n, day));
                day
            }
        }
    }
}

/// A row and its values that are not stored as they are in `Row`.
pub struct RowParams<'a> {
    pub row: &'a Row,
    /// `None` when it equals the id (the common case): stored as NULL, read back as the id.
    pub request_id: Option<&'a str>,
    pub day: Day,
    /// status, input, output, cache_read, cache_write, images, seconds, requests.
    pub counts: [i64; 8],
}

impl<'a> RowParams<'a> {
    fn of(r: &'a Row, days: &mut DayCache) -> Self {
        RowParams {
            row: r,
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
    /// One prepared insert per `SQLITE_ROWS_PER_INSERT` size, in that order; empty until the first
    /// write. Dropped (finalized) before the connection: see `Drop`.
    inserts: Vec<SqliteInsert>,
    conn: rusqlite::Connection,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        // A connection closes only once its statements are finalized.
        self.inserts.clear();
    }
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
        // A new file gets 16 KiB pages (an existing one keeps its own: SQLite sets the page size
        // only before the first table, and not at all in WAL mode, hence first). Rows arrive in id
        // order, and a `WITHOUT ROWID` table splits a full page in two: with 4 KiB pages that is
        // every ~18 rows. `sqlite3_step` per row at 16 KiB, against 4 KiB: -15% in batches of
        // 1,024 rows, -11% of 128, -2% of 16, +33% one row at a time (where the load is nil); in
        // the gateway under `loadtest/callgrind_ab.sh`, 6.5k -> 6.1k instructions a row.
        conn.execute_batch("PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(|e| e.to_string())?;
        let mut s = Sqlite { inserts: Vec::new(), conn };
        s.migrate()?;
        Ok(s)
    }

    /// The prepared inserts, made at the first write: most connections only read (the task
    /// settler's every 10 s, `cheapmodel usage`), and preparing every size costs more than their
    /// query.
    fn prepare_inserts(&mut self) -> Result<(), String> {
        if self.inserts.is_empty() {
            for rows in SQLITE_ROWS_PER_INSERT {
                // SAFETY: the connection is open, and `Sqlite` finalizes its statements before it.
                self.inserts.push(unsafe { SqliteInsert::prepare(self.conn.handle(), rows)? });
            }
        }
        Ok(())
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
        self.prepare_inserts()?;
        let Sqlite { inserts, conn } = self;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
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
            // Fresh request rows go many per statement; rows that may already be there (tasks,
            // replays) one per statement, so that the count of changes says for each whether it
            // was inserted.
            let (bulk, single): (Vec<usize>, Vec<usize>) = (0..rows.len()).partition(|&i| fresh && !rows[i].task);
            // SAFETY: `db` is the open connection the inserts were prepared on.
            let db = unsafe { tx.handle() };
            let mut days = DayCache::default();
            let mut params = Vec::with_capacity(SQLITE_ROWS_PER_INSERT[0]);
            let mut rest = bulk.as_slice();
            for insert in inserts.iter_mut() {
                while rest.len() >= insert.rows() {
                    let (chunk, tail) = rest.split_at(insert.rows());
                    rest = tail;
                    params.clear();
                    params.extend(chunk.iter().map(|&i| RowParams::of(&rows[i], &mut days)));
                    // SAFETY: as above.
                    let changed = unsafe { insert.run(db, &params)? };
                    if changed != chunk.len() {
                        // Cannot happen (fresh ids); roll back rather than count rows that are not new.
                        return Err(format!(
                            "{} of {} fresh rows were already in the ledger",
                            chunk.len() - changed,
                            chunk.len()
                        ));
                    }
                    chunk.iter().for_each(|&i| inserted[i] = true);
                }
            }
            let one = inserts.last_mut().expect("SQLITE_ROWS_PER_INSERT ends with 1");
            for &i in &single {
                params.clear();
                params.push(RowParams::of(&rows[i], &mut days));
                // SAFETY: as above.
                inserted[i] = unsafe { one.run(db, &params)? } == 1;
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

    fn pin_setting(&mut self, name: &str, value: &str) -> Result<String, String> {
        self.conn
            .execute(
                "INSERT INTO cheapmodel_settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                [name, value],
            )
            .map_err(|e| e.to_string())?;
        self.conn
            .query_row("SELECT value FROM cheapmodel_settings WHERE name = ?1", [name], |r| r.get(0))
            .map_err(|e| e.to_string())
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
/// database sends the batch to the spool instead of stalling the writer, and TCP keepalives and
/// a user timeout do the same for a connection that went dark.
/// A Postgres error with its causes: the client's own text is only "db error" or "error
/// connecting to server", and the reason (the server's message, "Connection refused") is in its
/// source.
fn pg_error(e: postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub struct Postgres {
    client: postgres::Client,
}

impl Postgres {
    /// Connects (5 s timeout) and migrates.
    pub fn connect(url: &str) -> Result<Self, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| format!("ledger.url: {e}"))?;
        config.connect_timeout(Duration::from_secs(5));
        config.options("-c statement_timeout=5000");
        // `statement_timeout` bounds the server's work, not a connection that went dark (a
        // partition, a host that vanished): the blocking client would wait on it for the kernel's
        // defaults (hours for an idle socket, ~15 min for unacknowledged data) while the queue
        // fills. These turn such a connection into an error within ~15 s, and the batch goes to
        // the spool.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(15));
        let client = config.connect(postgres::NoTls).map_err(|e| format!("postgres: {}", pg_error(e)))?;
        let mut p = Postgres { client };
        p.migrate()?;
        p.client
            .batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS ledger_stage (LIKE ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
            )
            .map_err(pg_error)?;
        Ok(p)
    }

    fn migrate(&mut self) -> Result<(), String> {
        // A plain read first: the task settler and reports connect often, and must not take the
        // lock, nor have Postgres log a NOTICE for `CREATE TABLE IF NOT EXISTS`, when every
        // migration is there.
        if let Ok(row) = self.client.query_one("SELECT COALESCE(MAX(version), 0) FROM cheapmodel_schema", &[]) {
            if row.get::<_, i32>(0) as usize >= MIGRATIONS.len() {
                return Ok(());
            }
        }
        let mut tx = self.client.transaction().map_err(pg_error)?;
        // Any constant: instances that start together take turns here.
        tx.execute("SELECT pg_advisory_xact_lock(7210331)", &[]).map_err(pg_error)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS cheapmodel_schema (version INTEGER PRIMARY KEY)")
            .map_err(pg_error)?;
        let done: i32 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM cheapmodel_schema", &[]).map_err(pg_error)?.get(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            if let Some(m) = migration(m, true) {
                tx.batch_execute(&m).map_err(|e| format!("migration {}: {}", i + 1, pg_error(e)))?;
            }
            tx.execute("INSERT INTO cheapmodel_schema (version) VALUES ($1)", &[&(i as i32 + 1)]).map_err(pg_error)?;
        }
        tx.commit().map_err(pg_error)
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
    out.extend_from_slice(if r.estimated { b"\tt" } else { b"\tf" });
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
        let mut tx = self.client.transaction().map_err(pg_error)?;
        for p in pending {
            tx.execute(
                "INSERT INTO pending_tasks (id, key, created_s) SELECT $1, $2, $3
                 WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE id = $1) ON CONFLICT (id) DO NOTHING",
                &[&p.id, &&*p.key, &p.created_s],
            )
            .map_err(pg_error)?;
        }
        let mut inserted = vec![false; rows.len()];
        if !rows.is_empty() {
            let mut buf = Vec::with_capacity(rows.len() * 160);
            let mut days = DayCache::default();
            for r in rows {
                copy_line(&mut buf, r, &mut days);
            }
            let mut copy = tx.copy_in(&format!("COPY ledger_stage ({COLUMNS}) FROM STDIN")).map_err(pg_error)?;
            copy.write_all(&buf).map_err(|e| e.to_string())?;
            copy.finish().map_err(pg_error)?;
            let move_rows = format!(
                "INSERT INTO ledger ({COLUMNS}) SELECT {COLUMNS} FROM ledger_stage ON CONFLICT (id) DO NOTHING"
            );
            if fresh && !rows.iter().any(|r| r.task) {
                // Fresh ids cannot be there yet: the count alone says all of them went in.
                let n = tx.execute(&move_rows, &[]).map_err(pg_error)?;
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
                    .map_err(pg_error)?
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
            tx.execute("DELETE FROM pending_tasks WHERE id = ANY($1)", &[&settled]).map_err(pg_error)?;
        }
        tx.commit().map_err(pg_error)?;
        Ok(inserted)
    }

    fn query(&mut self, sql: &str, params: &[String]) -> Result<Vec<Vec<String>>, String> {
        use postgres::types::ToSql;
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|s| s as &(dyn ToSql + Sync)).collect();
        let rows = self.client.query(sql, &p).map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i).unwrap_or_default()).collect())
            .collect())
    }

    fn pin_setting(&mut self, name: &str, value: &str) -> Result<String, String> {
        self.client
            .execute(
                "INSERT INTO cheapmodel_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )
            .map_err(pg_error)?;
        let row = self
            .client
            .query_one("SELECT value FROM cheapmodel_settings WHERE name = $1", &[&name])
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    fn pending_tasks(&mut self) -> Result<Vec<PendingTask>, String> {
        let rows = self.client.query("SELECT id, key, created_s FROM pending_tasks", &[]).map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| PendingTask { id: r.get(0), key: r.get::<_, String>(1).into(), created_s: r.get(2) })
            .collect())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cost::MediaUnits;
    use crate::money::Money;
    use crate::usage::Usage;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// A request row (shared with the spool's tests).
    pub(in crate::ledger) fn row(id: &str, request_id: &str) -> Row {
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
            estimated: false,
            charged: crate::money::Money::ZERO,
        }
    }

    #[test]
    fn copy_lines_escape_text_and_write_nulls() {
        let mut out = Vec::new();
        copy_line(&mut out, &row("req_1", "req_1"), &mut DayCache::default());
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "req_1\t\\N\t1796508385313\t2026-12-05\tteam-a\tgpt-5.5\topenai\t/v1/chat/completions\t200\tt\tf\t700\t200\t300\t0\t0\t0\t1\t2912500000\t350\t\\N\tf\n"
        );
        let mut out = Vec::new();
        let mut estimated = row("req_2", "a\\b\tc\nd\re");
        estimated.estimated = true;
        copy_line(&mut out, &estimated, &mut DayCache::default());
        let line = String::from_utf8(out).expect("utf-8");
        assert!(line.starts_with("req_2\ta\\\\b\\tc\\nd\\re\t") && line.ends_with("\t\\N\tt\n"), "{line}");
    }

    #[test]
    fn days_are_written_as_day_of_writes_them() {
        for time_ms in [0, 86_399_999, 86_400_000, 951_782_400_000, 1_796_508_385_313, 253_402_300_799_000, -1] {
            assert_eq!(Day::of(time_ms).as_str(), crate::ledger::day_of(time_ms), "{time_ms}");
        }
    }

    #[test]
    fn sqlite_batches_of_every_shape_land_whole_and_exact() {
        let dir = std::env::temp_dir().join(format!("cm-ledger-shapes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("l.sqlite");
        let mut db = Sqlite::open(path.to_str().expect("utf-8")).expect("open");
        let mut total = 0usize;
        // Sizes around every chunk boundary (64, 32, ... 1), and one over a full chunk plus all tails.
        for size in [0usize, 1, 2, 3, 31, 63, 64, 65, 127, 128, 200] {
            let rows: Vec<Row> = (0..size)
                .map(|i| {
                    let mut r = row(&format!("req_{size}_{i}"), &format!("req_{size}_{i}"));
                    r.time_ms += (i as i64) * 3_600_000; // crosses day boundaries inside a batch
                    r.cost = Money(i as i64 + 1);
                    r.ttfb_us = (i % 2 == 0).then_some(i as i64);
                    r.estimated = i % 3 == 1;
                    r
                })
                .collect();
            assert_eq!(db.write(&rows, &[], true).expect("write"), vec![true; size]);
            total += size;
        }
        let sums = db
            .query(
                "SELECT CAST(COUNT(*) AS TEXT), CAST(COUNT(DISTINCT id) AS TEXT), CAST(SUM(cost_pusd) AS TEXT), \
                 CAST(SUM(ttfb_us) AS TEXT), CAST(COUNT(ttfb_us) AS TEXT), MIN(day), MAX(day), \
                 CAST(SUM(estimated) AS TEXT) FROM ledger",
                &[],
            )
            .expect("query");
        let sizes = [0i64, 1, 2, 3, 31, 63, 64, 65, 127, 128, 200];
        let cost: i64 = sizes.iter().map(|n| n * (n + 1) / 2).sum();
        let ttfb: i64 = sizes.iter().map(|&n| (0..n).step_by(2).sum::<i64>()).sum();
        let ttfbs: i64 = sizes.iter().map(|n| (n + 1) / 2).sum();
        let expected = [total, total].map(|n| n.to_string()).to_vec();
        assert_eq!(sums[0][..2], expected[..]);
        assert_eq!(sums[0][2..5], [cost.to_string(), ttfb.to_string(), ttfbs.to_string()]);
        let last_day = crate::ledger::day_of(row("x", "x").time_ms + 199 * 3_600_000);
        assert_eq!(sums[0][5..7], ["2026-12-05".to_string(), last_day]);
        let estimated: i64 = sizes.iter().map(|&n| (0..n).filter(|i| i % 3 == 1).count() as i64).sum();
        assert_eq!(sums[0][7], estimated.to_string());
        // One row read back value by value, in `COLUMNS` order.
        let as_text: Vec<String> = COLUMNS.split(", ").map(|c| format!("CAST({} AS TEXT)", c.trim())).collect();
        let one =
            db.query(&format!("SELECT {} FROM ledger WHERE id = 'req_3_1'", as_text.join(", ")), &[]).expect("query");
        assert_eq!(
            one[0].join("|"),
            "req_3_1||1796511985313|2026-12-05|team-a|gpt-5.5|openai|/v1/chat/completions|200|1|0|700|200|300|0|0|0|1|2|350||1"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The row as `SELECT CAST(column AS TEXT)` over `COLUMNS` reads it back ('' for NULL).
    fn stored_as(r: &Row) -> String {
        let b = |x: bool| i64::from(x).to_string();
        [
            r.id.clone(),
            if r.request_id == r.id { String::new() } else { r.request_id.clone() },
            r.time_ms.to_string(),
            crate::ledger::day_of(r.time_ms),
            r.key.to_string(),
            r.model.to_string(),
            r.upstream.to_string(),
            r.endpoint.to_string(),
            r.status.to_string(),
            b(r.stream),
            b(r.translated),
            r.usage.input.to_string(),
            r.usage.output.to_string(),
            r.usage.cache_read.to_string(),
            r.usage.cache_write.to_string(),
            r.media.images.to_string(),
            r.media.seconds.to_string(),
            "1".into(),
            r.cost.0.to_string(),
            r.latency_us.to_string(),
            r.ttfb_us.map_or(String::new(), |t| t.to_string()),
            b(r.estimated),
        ]
        .join("|")
    }

    #[test]
    fn sqlite_rows_read_back_exactly_when_values_repeat_change_and_come_back() {
        // The insert binds a parameter only when its value differs from the one it holds since the
        // last batch: every value here repeats, changes and returns across batches that reuse the
        // same statements, and each row must still read back as itself.
        let dir = std::env::temp_dir().join(format!("cm-ledger-rebind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut db = Sqlite::open(dir.join("l.sqlite").to_str().expect("utf-8")).expect("open");
        let keys: [Arc<str>; 3] = [Arc::from("team-a"), Arc::from("team-a"), Arc::from("team-b")];
        let mut all = Vec::new();
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for batch in 0..12 {
            let size = [64, 3, 64, 1, 67][batch % 5];
            let rows: Vec<Row> = (0..size)
                .map(|i| {
                    let id = format!("req_{batch}_{i}");
                    let mut r = row(&id, if next(3) == 0 { "caller-id" } else { &id });
                    r.time_ms += next(3) as i64 * 86_400_000;
                    r.key = keys[next(3) as usize].clone();
                    r.model = if next(2) == 0 { r.model } else { Arc::from("claude-opus-4-7") };
                    r.endpoint =
                        if next(2) == 0 { "/v1/messages".into() } else { String::from("/v1/chat/completions").into() };
                    r.status = [200, 200, 429][next(3) as usize];
                    r.stream = next(2) == 0;
                    r.translated = next(2) == 0;
                    r.usage.input = next(3) * 700;
                    r.usage.cache_write = next(2);
                    r.media.images = next(2);
                    r.cost = Money(next(3) as i64);
                    r.ttfb_us = (next(2) == 0).then(|| next(3) as i64);
                    r.estimated = next(2) == 0;
                    r
                })
                .collect();
            assert_eq!(db.write(&rows, &[], true).expect("write"), vec![true; size]);
            all.extend(rows);
        }
        let as_text: Vec<String> =
            COLUMNS.split(", ").map(|c| format!("COALESCE(CAST({} AS TEXT), '')", c.trim())).collect();
        let stored = db.query(&format!("SELECT {} FROM ledger", as_text.join(", ")), &[]).expect("query");
        let stored: HashMap<String, String> = stored.into_iter().map(|r| (r[0].clone(), r.join("|"))).collect();
        assert_eq!(stored.len(), all.len());
        for r in &all {
            assert_eq!(stored[&r.id], stored_as(r));
        }
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
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

    #[test]
    fn a_new_sqlite_file_gets_16k_pages_and_an_existing_one_keeps_its_own() {
        let dir = std::env::temp_dir().join(format!("cm-ledger-pages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let page_size = |db: &mut Sqlite| db.query("SELECT CAST(page_size AS TEXT) FROM pragma_page_size", &[]);
        let fresh = dir.join("new.sqlite");
        let mut db = Sqlite::open(fresh.to_str().expect("utf-8")).expect("open");
        assert_eq!(page_size(&mut db), Ok(vec![vec!["16384".to_string()]]));
        // A file made by an earlier build (4 KiB pages, WAL) opens, migrates and takes rows.
        let old = dir.join("old.sqlite");
        rusqlite::Connection::open(&old)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)"))
            .expect("old file");
        let mut db = Sqlite::open(old.to_str().expect("utf-8")).expect("open");
        assert_eq!(page_size(&mut db), Ok(vec![vec!["4096".to_string()]]));
        assert_eq!(db.write(&[row("req_1", "req_1")], &[], true), Ok(vec![true]));
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
