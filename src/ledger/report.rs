//! Reading the ledger back: totals by any of key, model, day and upstream, over a range of UTC
//! days (both ends inclusive). One SQL text for both databases (`totals_sql`), one parser of its
//! rows, one set of field names for the command line (`cheapmodel usage`) and `GET /v1/usage`.
//! Sums come back as text and are parsed as `i128`, so a total is never rounded or wrapped.
//! Imports: `money`, `ledger::backend`. Not `proxy`, `metrics` or Pingora.

use serde_json::Value;

use super::backend::{self, placeholder};
use crate::money;

/// A grouping column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Group {
    /// Key name.
    Key,
    /// Model name.
    Model,
    /// UTC day.
    Day,
    /// Upstream name.
    Upstream,
}

impl Group {
    /// Column and field name.
    pub fn name(self) -> &'static str {
        match self {
            Group::Key => "key",
            Group::Model => "model",
            Group::Day => "day",
            Group::Upstream => "upstream",
        }
    }
}

/// What to total.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// First UTC day, `YYYY-MM-DD`, inclusive.
    pub from: Option<String>,
    /// Last UTC day, inclusive.
    pub to: Option<String>,
    /// Grouping, in order (repeats ignored).
    pub by: Vec<Group>,
    /// Only this key's rows.
    pub key: Option<String>,
}

impl Query {
    /// `from` is a later day than `to`: no day can match, and the caller almost surely swapped
    /// them, so both readers refuse it rather than answer an empty total. Days are `YYYY-MM-DD`,
    /// so text order is day order.
    pub fn is_reversed(&self) -> bool {
        matches!((&self.from, &self.to), (Some(from), Some(to)) if from > to)
    }
}

/// The summed measures, in output order: (output field name, ledger column).
pub const MEASURES: [(&str, &str); 8] = [
    ("requests", "requests"),
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cache_read_tokens"),
    ("cache_write_tokens", "cache_write_tokens"),
    ("images", "images"),
    ("seconds", "seconds"),
    ("cost_usd", "cost_pusd"),
];

/// Requests billed on an estimate (ledger column `estimated`), summed after `MEASURES`. Shown in the
/// table only: the JSON and CSV fields are a fixed contract (`MEASURES`).
const ESTIMATED_SUM: &str = "CASE WHEN estimated THEN 1 ELSE 0 END";

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// The grouping values, in `Query::by` order.
    pub groups: Vec<(Group, String)>,
    /// `MEASURES` except `cost_usd`.
    pub counts: [i128; 7],
    /// Pico-dollars.
    pub cost: i128,
    /// Of `requests`, those billed on an estimate (a stream that ended without the upstream's
    /// final count: its tokens are a lower bound).
    pub estimated: i128,
}

fn groups(q: &Query) -> Vec<Group> {
    let mut g = Vec::new();
    for b in &q.by {
        if !g.contains(b) {
            g.push(*b);
        }
    }
    g
}

/// The report's SQL and its parameters, for SQLite (`?N`) or Postgres (`$N`).
pub fn totals_sql(q: &Query, postgres: bool) -> (String, Vec<String>) {
    let g = groups(q);
    let cols: Vec<&str> = g.iter().map(|g| g.name()).collect();
    let sum = |c: &str| format!("CAST(COALESCE(SUM({c}), 0) AS TEXT)");
    let mut select: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
    for (_, c) in MEASURES {
        select.push(sum(c));
    }
    select.push(sum(ESTIMATED_SUM));
    let mut conds = Vec::new();
    let mut params = Vec::new();
    for (cond, v) in [("day >=", &q.from), ("day <=", &q.to), ("key =", &q.key)] {
        if let Some(v) = v {
            params.push(v.clone());
            conds.push(format!("{cond} {}", placeholder(postgres, params.len())));
        }
    }
    let mut sql = format!("SELECT {} FROM ledger", select.join(", "));
    if !conds.is_empty() {
        sql += &format!(" WHERE {}", conds.join(" AND "));
    }
    if !cols.is_empty() {
        sql += &format!(" GROUP BY {0} ORDER BY {0}", cols.join(", "));
    }
    (sql, params)
}

/// Runs the report on the ledger at `url`.
pub fn totals(url: &str, q: &Query) -> Result<Vec<Totals>, String> {
    let postgres = !url.starts_with("sqlite://");
    if let Some(path) = url.strip_prefix("sqlite://") {
        if !std::path::Path::new(path).exists() {
            return Err(format!("no ledger at {path}"));
        }
    }
    let mut db = backend::connect(url)?;
    let (sql, params) = totals_sql(q, postgres);
    let g = groups(q);
    let rows = db.query(&sql, &params)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut groups = Vec::with_capacity(g.len());
        for (i, group) in g.iter().enumerate() {
            groups.push((*group, r.get(i).cloned().unwrap_or_default()));
        }
        let num = |i: usize| -> Result<i128, String> {
            let s = r.get(g.len() + i).map(String::as_str).unwrap_or("0");
            // Postgres prints a numeric sum of integers without a fraction; be strict anyway.
            s.parse::<i128>().map_err(|_| format!("ledger returned a non-integer total `{s}`"))
        };
        let mut counts = [0i128; 7];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = num(i)?;
        }
        let cost = num(7)?;
        let estimated = num(8)?;
        // An empty ledger totals to one line of zeros without grouping: show no line instead.
        if g.is_empty() && counts[0] == 0 {
            continue;
        }
        out.push(Totals { groups, counts, cost, estimated });
    }
    Ok(out)
}

/// The report as a JSON array of objects: grouping fields, then `MEASURES`. Written by hand so
/// that `cost_usd` is a JSON number with the exact decimal digits of the total (a float would
/// round it).
pub fn to_json(rows: &[Totals]) -> String {
    let mut out = String::from("[");
    for (i, t) in rows.iter().enumerate() {
        out += if i == 0 { "\n  {" } else { ",\n  {" };
        let mut fields: Vec<String> =
            t.groups.iter().map(|(g, v)| format!("\"{}\": {}", g.name(), Value::from(v.as_str()))).collect();
        fields.extend(MEASURES.iter().zip(t.counts).map(|((name, _), n)| format!("\"{name}\": {n}")));
        fields.push(format!("\"cost_usd\": {}", money::usd_string(t.cost)));
        out += &fields.join(", ");
        out.push('}');
    }
    out += if rows.is_empty() { "]" } else { "\n]" };
    out
}

/// The report as CSV with a header line.
pub fn to_csv(q: &Query, rows: &[Totals]) -> String {
    lines(q, rows, false).iter().map(|cells| cells.join(",") + "\n").collect()
}

/// The header and one line per row, CSV-escaped: grouping fields, then `MEASURES`, then (for the
/// table) `estimated`.
fn lines(q: &Query, rows: &[Totals], with_estimated: bool) -> Vec<Vec<String>> {
    let mut header: Vec<String> = groups(q).iter().map(|g| g.name().to_string()).collect();
    header.extend(MEASURES.iter().map(|(name, _)| name.to_string()));
    if with_estimated {
        header.push("estimated".into());
    }
    let mut out = vec![header];
    for t in rows {
        let mut cells: Vec<String> = t.groups.iter().map(|(_, v)| csv_cell(v)).collect();
        cells.extend(t.counts.iter().map(|n| n.to_string()));
        cells.push(money::usd_string(t.cost));
        if with_estimated {
            cells.push(t.estimated.to_string());
        }
        out.push(cells);
    }
    out
}

fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// The report as an aligned text table, with the `estimated` column (requests whose tokens are a
/// lower bound, `Totals::estimated`).
pub fn to_table(q: &Query, rows: &[Totals]) -> String {
    let cells = lines(q, rows, true);
    let width = cells.first().map_or(0, Vec::len);
    let widths: Vec<usize> =
        (0..width).map(|i| cells.iter().map(|r| r.get(i).map_or(0, |c| c.len())).max().unwrap_or(0)).collect();
    let mut text = String::new();
    for r in &cells {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:>w$}", w = widths[i])).collect();
        text += line.join("  ").trim_end();
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_groups_filters_and_placeholders() {
        let q = Query {
            from: Some("2026-12-01".into()),
            to: None,
            by: vec![Group::Key, Group::Model, Group::Key],
            key: Some("team-a".into()),
        };
        let (sql, params) = totals_sql(&q, true);
        assert!(sql.starts_with("SELECT key, model, CAST(COALESCE(SUM(requests), 0) AS TEXT)"), "{sql}");
        assert!(sql.ends_with("WHERE day >= $1 AND key = $2 GROUP BY key, model ORDER BY key, model"), "{sql}");
        assert_eq!(params, vec!["2026-12-01", "team-a"]);
        let (sql, params) = totals_sql(&Query::default(), false);
        assert!(!sql.contains("WHERE") && !sql.contains("GROUP BY"), "{sql}");
        assert!(params.is_empty());
    }

    #[test]
    fn json_cost_is_an_exact_number() {
        let t = Totals {
            groups: vec![(Group::Model, "m".into())],
            counts: [2, 10, 5, 0, 0, 0, 0],
            cost: 1_234_567,
            estimated: 1,
        };
        let json = to_json(&[t]);
        assert!(json.contains("\"cost_usd\": 0.000001234567}"), "{json}");
        let parsed: Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed[0]["model"], "m");
        assert_eq!(parsed[0]["requests"], 2);
        assert_eq!(to_json(&[]), "[]");
        assert!(!json.contains("estimated"), "the JSON fields are a fixed contract");
    }

    #[test]
    fn only_the_table_shows_the_estimated_requests() {
        let q = Query { by: vec![Group::Model], ..Query::default() };
        let t =
            Totals { groups: vec![(Group::Model, "a,b".into())], counts: [3, 1, 2, 0, 0, 0, 0], cost: 5, estimated: 2 };
        let csv = to_csv(&q, std::slice::from_ref(&t));
        assert_eq!(
            csv,
            "model,requests,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,images,seconds,cost_usd\n\
             \"a,b\",3,1,2,0,0,0,0,0.000000000005\n"
        );
        let table = to_table(&q, &[t]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with("cost_usd  estimated"), "{table}");
        assert!(lines[1].starts_with("\"a,b\"") && lines[1].ends_with(" 2"), "{table}");
    }
}
