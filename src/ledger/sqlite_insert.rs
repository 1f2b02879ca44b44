//! The SQLite ledger's multi-row `INSERT`, prepared once per size and bound through SQLite's C API.
//!
//! Why not rusqlite's `Statement::execute`: it binds every value through `ToSql` and hands text to
//! SQLite as `SQLITE_TRANSIENT` (SQLite copies it), which cost 4.6k instructions a row of 21 values,
//! a third of the ledger's whole cost per request (`loadtest/callgrind_ab.sh`). Here integers go
//! straight to `sqlite3_bind_int64` and text is bound `SQLITE_STATIC` (no copy): the row outlives
//! the step, and the bindings are cleared before `run` returns, so no pointer outlives the row.
//!
//! This is the ledger's only `unsafe` code; the rest of `backend` uses rusqlite's safe API.
//! Imports: `ledger::backend`'s row layout. Nothing else of the gateway's.

use std::ffi::{c_int, CStr};
use std::ptr::NonNull;

use rusqlite::ffi;

use super::backend::{RowParams, COLUMNS, COLUMN_COUNT};

/// One prepared `INSERT OR IGNORE INTO ledger ... VALUES (...) × rows`.
pub struct SqliteInsert {
    stmt: NonNull<ffi::sqlite3_stmt>,
    rows: usize,
}

// SAFETY: a statement belongs to the connection that prepared it, and `Sqlite` owns both and moves
// them together (the writer thread owns the `Sqlite`); SQLite itself is built threadsafe.
unsafe impl Send for SqliteInsert {}

/// What one value of a row is bound as (text as UTF-8 bytes).
enum Value<'a> {
    Int(i64),
    Text(&'a [u8]),
    Null,
}

impl SqliteInsert {
    /// Prepares the insert of `rows` rows on `db`.
    ///
    /// # Safety
    /// `db` is an open connection that outlives the returned statement.
    pub unsafe fn prepare(db: *mut ffi::sqlite3, rows: usize) -> Result<Self, String> {
        let one = format!("({})", vec!["?"; COLUMN_COUNT].join(","));
        let sql = format!("INSERT OR IGNORE INTO ledger ({COLUMNS}) VALUES {}", vec![one; rows].join(","));
        let mut stmt = std::ptr::null_mut();
        // PERSISTENT: the statement lives as long as the connection, so SQLite sizes it for that.
        let rc = ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr().cast(),
            sql.len() as c_int,
            ffi::SQLITE_PREPARE_PERSISTENT as _,
            &mut stmt,
            std::ptr::null_mut(),
        );
        match NonNull::new(stmt) {
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(SqliteInsert { stmt, rows }),
            _ => Err(format!("prepare ledger insert: {}", errmsg(db))),
        }
    }

    /// Rows per execution.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inserts `rows` (exactly `self.rows()` of them) in one step; returns how many were new.
    ///
    /// # Safety
    /// `db` is the connection this statement was prepared on.
    pub unsafe fn run(&mut self, db: *mut ffi::sqlite3, rows: &[RowParams<'_>]) -> Result<usize, String> {
        assert_eq!(rows.len(), self.rows, "a prepared insert takes exactly its own number of rows");
        let stmt = self.stmt.as_ptr();
        let mut bound = Ok(());
        for (n, p) in rows.iter().enumerate() {
            let r = p.row;
            let values = [
                Value::Text(r.id.as_bytes()),
                p.request_id.map_or(Value::Null, |id| Value::Text(id.as_bytes())),
                Value::Int(r.time_ms),
                Value::Text(p.day.as_bytes()),
                Value::Text(r.key.as_bytes()),
                Value::Text(r.model.as_bytes()),
                Value::Text(r.upstream.as_bytes()),
                Value::Text(r.endpoint.as_bytes()),
                Value::Int(p.counts[0]),
                Value::Int(i64::from(r.stream)),
                Value::Int(i64::from(r.translated)),
                Value::Int(p.counts[1]),
                Value::Int(p.counts[2]),
                Value::Int(p.counts[3]),
                Value::Int(p.counts[4]),
                Value::Int(p.counts[5]),
                Value::Int(p.counts[6]),
                Value::Int(p.counts[7]),
                Value::Int(r.cost.0),
                Value::Int(r.latency_us),
                r.ttfb_us.map_or(Value::Null, Value::Int),
                Value::Int(i64::from(r.estimated)),
            ];
            for (i, v) in values.iter().enumerate() {
                let index = (n * COLUMN_COUNT + i + 1) as c_int;
                let rc = match *v {
                    Value::Int(x) => ffi::sqlite3_bind_int64(stmt, index, x),
                    // STATIC: SQLite reads the bytes in place; they live until the bindings are
                    // cleared below.
                    Value::Text(s) => ffi::sqlite3_bind_text64(
                        stmt,
                        index,
                        s.as_ptr().cast(),
                        s.len() as u64,
                        ffi::SQLITE_STATIC(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    Value::Null => ffi::sqlite3_bind_null(stmt, index),
                };
                if rc != ffi::SQLITE_OK && bound.is_ok() {
                    bound = Err(format!("bind ledger value {index}: {}", errmsg(db)));
                }
            }
        }
        let result = match bound {
            Ok(()) => match ffi::sqlite3_step(stmt) {
                ffi::SQLITE_DONE => Ok(ffi::sqlite3_changes64(db) as usize),
                _ => Err(format!("insert into ledger: {}", errmsg(db))),
            },
            Err(e) => Err(e),
        };
        // Reset (its return repeats the step's error, reported above) and drop every pointer into
        // `rows` before they go.
        ffi::sqlite3_reset(stmt);
        ffi::sqlite3_clear_bindings(stmt);
        result
    }
}

impl Drop for SqliteInsert {
    fn drop(&mut self) {
        // SAFETY: the statement is finalized once, here, while its connection is open (`Sqlite`
        // drops its statements before its connection).
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

/// SQLite's message for the last error on `db`.
unsafe fn errmsg(db: *mut ffi::sqlite3) -> String {
    let msg = ffi::sqlite3_errmsg(db);
    if msg.is_null() {
        return "unknown SQLite error".into();
    }
    CStr::from_ptr(msg).to_string_lossy().into_owned()
}
