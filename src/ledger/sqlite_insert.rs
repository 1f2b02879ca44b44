//! The SQLite ledger's multi-row `INSERT`, prepared once per size and bound through SQLite's C API.
//!
//! Why not rusqlite's `Statement::execute`: it binds every value through `ToSql` and hands text to
//! SQLite as `SQLITE_TRANSIENT` (SQLite copies it), which cost 4.6k instructions a row of 21 values,
//! a third of the ledger's whole cost per request (`loadtest/callgrind_ab.sh`). Here integers go
//! straight to `sqlite3_bind_int64` and text is bound `SQLITE_STATIC` (no copy).
//!
//! SQLite keeps a statement's bindings across `sqlite3_reset`, and most of a row repeats the row
//! that last used its place in the statement (status, flags, zero counts, key, model, upstream,
//! endpoint, day). So each parameter remembers what it holds (`Bound`) and is bound again only when
//! the value differs: that skips about half of the binds, each of which costs SQLite ~70
//! instructions (`benches/ledger.rs`). Text that repeats is bound from a copy the parameter owns;
//! text unique to a row (its ids) is bound in place and unbound after the step, so that no binding
//! ever points at a row that is gone.
//!
//! This is the ledger's only `unsafe` code; the rest of `backend` uses rusqlite's safe API.
//! Imports: `ledger::backend`'s row layout. Nothing else of the gateway's.

use std::borrow::Cow;
use std::ffi::{c_int, CStr};
use std::ptr::NonNull;
use std::sync::Arc;

use rusqlite::ffi;

use super::backend::{RowParams, COLUMNS, COLUMN_COUNT};

/// One prepared `INSERT OR IGNORE INTO ledger ... VALUES (...) × rows`.
pub struct SqliteInsert {
    stmt: NonNull<ffi::sqlite3_stmt>,
    rows: usize,
    /// What each parameter (0-based) holds now. Dropped after the statement is finalized (`Drop`
    /// runs before the fields drop), so repeated text outlives every binding to it.
    bound: Vec<Bound>,
    /// Parameters (1-based) bound in place to text of the rows being inserted, unbound after the step.
    unique: Vec<c_int>,
}

/// What a parameter of the statement holds.
#[derive(PartialEq)]
enum Bound {
    /// Not known: never bound, or its bind failed.
    Unknown,
    Null,
    Int(i64),
    /// Text that repeats from row to row, owned here because SQLite reads it in place.
    Text(Arc<[u8]>),
    /// Text that lives as long as the program (most endpoints).
    Static(&'static [u8]),
}

impl Bound {
    /// The text it holds.
    fn text(&self) -> Option<&[u8]> {
        match self {
            Bound::Text(text) => Some(text),
            Bound::Static(text) => Some(text),
            _ => None,
        }
    }
}

// SAFETY: a statement belongs to the connection that prepared it, and `Sqlite` owns both and moves
// them together (the writer thread owns the `Sqlite`); SQLite itself is built threadsafe.
unsafe impl Send for SqliteInsert {}

/// Repeated text (UTF-8), as the row holds it.
enum Text<'a> {
    /// Already shared (key, model, upstream): kept by cloning the `Arc`.
    Shared(&'a Arc<str>),
    /// Copied into an `Arc` when it differs from what the parameter holds (the day, an endpoint
    /// made at run time).
    Borrowed(&'a [u8]),
    /// Never copied (endpoints named in the code).
    Static(&'static [u8]),
}

impl Text<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Shared(s) => s.as_bytes(),
            Text::Borrowed(s) | Text::Static(s) => s,
        }
    }

    /// What a parameter that holds this text holds.
    fn to_bound(&self) -> Bound {
        match self {
            Text::Shared(s) => Bound::Text(Arc::<[u8]>::from(Arc::clone(s))),
            Text::Borrowed(s) => Bound::Text(Arc::from(*s)),
            Text::Static(s) => Bound::Static(s),
        }
    }
}

/// The parameters of one row of the statement, each bound only when its value changes.
struct RowParameters<'s> {
    stmt: *mut ffi::sqlite3_stmt,
    /// The row's first parameter, 1-based.
    first: c_int,
    /// What the row's parameters hold, in `COLUMNS` order.
    bound: &'s mut [Bound],
    /// `SqliteInsert::unique`.
    unique: &'s mut Vec<c_int>,
    /// The first bind that failed: its parameter and SQLite's code.
    failed: Option<(c_int, c_int)>,
}

impl RowParameters<'_> {
    fn done(&mut self, i: usize, rc: c_int, now: Bound) {
        let index = self.first + i as c_int;
        if rc == ffi::SQLITE_OK {
            self.bound[i] = now;
        } else {
            self.bound[i] = Bound::Unknown;
            self.failed.get_or_insert((index, rc));
        }
    }

    fn int(&mut self, i: usize, x: i64) {
        if !matches!(self.bound[i], Bound::Int(held) if held == x) {
            // SAFETY: `stmt` is a live statement and `first + i` one of its parameters.
            let rc = unsafe { ffi::sqlite3_bind_int64(self.stmt, self.first + i as c_int, x) };
            self.done(i, rc, Bound::Int(x));
        }
    }

    fn null(&mut self, i: usize) {
        if self.bound[i] != Bound::Null {
            // SAFETY: as in `int`.
            let rc = unsafe { ffi::sqlite3_bind_null(self.stmt, self.first + i as c_int) };
            self.done(i, rc, Bound::Null);
        }
    }

    fn int_or_null(&mut self, i: usize, x: Option<i64>) {
        match x {
            Some(x) => self.int(i, x),
            None => self.null(i),
        }
    }

    /// Text that usually repeats from row to row: bound from an `Arc` the parameter keeps.
    fn repeated(&mut self, i: usize, text: Text<'_>) {
        let bytes = text.as_bytes();
        // The same text in the same place (no compare: an `Arc` or a static), or equal bytes.
        let same = |held: &[u8]| (held.as_ptr() == bytes.as_ptr() && held.len() == bytes.len()) || *held == *bytes;
        if !self.bound[i].text().is_some_and(same) {
            let now = text.to_bound();
            let owned = now.text().unwrap_or_default();
            // SAFETY: as in `int`; the text lives in `bound` (or always) until the parameter is
            // bound again, and the text it replaces is dropped only once SQLite points at the new one.
            let rc = unsafe { bind_static(self.stmt, self.first + i as c_int, owned) };
            self.done(i, rc, now);
        }
    }

    /// Text of this row only (its ids): bound in place, and unbound by `SqliteInsert::run` after the
    /// step, so that no binding outlives the row.
    fn unique(&mut self, i: usize, text: &str) {
        let index = self.first + i as c_int;
        self.unique.push(index);
        // SAFETY: as in `int`; the caller unbinds it before the row goes.
        let rc = unsafe { bind_static(self.stmt, index, text.as_bytes()) };
        // Not a value to compare with: it is NULL again after the step.
        self.done(i, rc, Bound::Unknown);
    }
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
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(SqliteInsert {
                stmt,
                rows,
                bound: (0..rows * COLUMN_COUNT).map(|_| Bound::Unknown).collect(),
                unique: Vec::with_capacity(rows * 2),
            }),
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
        let mut failed = None;
        for (n, (p, bound)) in rows.iter().zip(self.bound.chunks_exact_mut(COLUMN_COUNT)).enumerate() {
            let r = p.row;
            let mut row = RowParameters {
                stmt,
                first: (n * COLUMN_COUNT + 1) as c_int,
                bound,
                unique: &mut self.unique,
                failed: None,
            };
            // In `COLUMNS` order.
            row.unique(0, &r.id);
            match p.request_id {
                Some(id) => row.unique(1, id),
                None => row.null(1),
            }
            row.int(2, r.time_ms);
            row.repeated(3, Text::Borrowed(p.day.as_bytes()));
            row.repeated(4, Text::Shared(&r.key));
            row.repeated(5, Text::Shared(&r.model));
            row.repeated(6, Text::Shared(&r.upstream));
            row.repeated(
                7,
                match &r.endpoint {
                    Cow::Borrowed(endpoint) => Text::Static(endpoint.as_bytes()),
                    Cow::Owned(endpoint) => Text::Borrowed(endpoint.as_bytes()),
                },
            );
            row.int(8, p.counts[0]);
            row.int(9, i64::from(r.stream));
            row.int(10, i64::from(r.translated));
            for (i, &count) in p.counts[1..].iter().enumerate() {
                row.int(11 + i, count);
            }
            row.int(18, r.cost.0);
            row.int(19, r.latency_us);
            row.int_or_null(20, r.ttfb_us);
            row.int(21, i64::from(r.estimated));
            failed = failed.or(row.failed);
        }
        let bound = match failed {
            Some((index, rc)) => Err(format!("bind ledger value {index} ({rc}): {}", errmsg(db))),
            None => Ok(()),
        };
        let result = match bound {
            Ok(()) => match ffi::sqlite3_step(stmt) {
                ffi::SQLITE_DONE => Ok(ffi::sqlite3_changes64(db) as usize),
                _ => Err(format!("insert into ledger: {}", errmsg(db))),
            },
            Err(e) => Err(e),
        };
        // Reset (its return repeats the step's error, reported above), then drop every pointer
        // into `rows` before they go.
        ffi::sqlite3_reset(stmt);
        for index in self.unique.drain(..) {
            let slot = &mut self.bound[index as usize - 1];
            *slot = match ffi::sqlite3_bind_null(stmt, index) {
                ffi::SQLITE_OK => Bound::Null,
                _ => Bound::Unknown,
            };
        }
        result
    }
}

/// Binds UTF-8 `text` in place (`SQLITE_STATIC`: SQLite reads it until it is bound again).
unsafe fn bind_static(stmt: *mut ffi::sqlite3_stmt, index: c_int, text: &[u8]) -> c_int {
    ffi::sqlite3_bind_text64(
        stmt,
        index,
        text.as_ptr().cast(),
        text.len() as u64,
        ffi::SQLITE_STATIC(),
        ffi::SQLITE_UTF8 as u8,
    )
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
