//! Session-state bookkeeping for transaction-level multiplexing: a small lexer that finds the
//! statements which create per-connection state (so the client is pinned to its server
//! connection), and the route-wide registry of prepared statements that lets a statement id
//! follow the client across pooled connections.

use bytes::Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a text query does to session state, as far as its spelling tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlTraits {
    /// Why the client must stay on its server connection from now on.
    pub pin: Option<&'static str>,
    /// Reads state of the previous statement (FOUND_ROWS(), LAST_INSERT_ID(), ROW_COUNT()).
    pub uses_previous: bool,
    /// Leaves state the next statement may read (SQL_CALC_FOUND_ROWS).
    pub leaves_previous: bool,
    /// `USE db` (schema switch; also reported by session tracking).
    pub use_schema: Option<String>,
    /// A `KILL` statement: server thread ids are shared by the pool's clients.
    pub kill: bool,
}

/// Lower-cased words of `sql` outside strings and comments. The body of a `/*! ... */`
/// version comment counts as code (the server executes it). User variables appear as words
/// starting with `@`; `@@` system variables are dropped.
pub fn words(sql: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    let mut version_comment = 0usize;
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while i < sql.len() {
        let c = sql[i];
        let next = sql.get(i + 1).copied();
        match c {
            b'\'' | b'"' => {
                flush(&mut cur, &mut out);
                i += 1;
                while i < sql.len() && sql[i] != c {
                    if sql[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                out.push("?".into());
            }
            b'`' => {
                i += 1;
                while i < sql.len() && sql[i] != b'`' {
                    cur.push(sql[i].to_ascii_lowercase() as char);
                    i += 1;
                }
            }
            b'#' => {
                flush(&mut cur, &mut out);
                while i < sql.len() && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' if next == Some(b'-') && sql.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) => {
                flush(&mut cur, &mut out);
                while i < sql.len() && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                flush(&mut cur, &mut out);
                let bang = sql.get(i + 2) == Some(&b'!') || sql.get(i + 2..i + 4) == Some(b"M!");
                if bang {
                    i += if sql[i + 2] == b'!' { 3 } else { 4 };
                    while i < sql.len() && sql[i].is_ascii_digit() {
                        i += 1;
                    }
                    version_comment += 1;
                    continue;
                }
                i += 2;
                while i + 1 < sql.len() && !(sql[i] == b'*' && sql[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'*' if next == Some(b'/') && version_comment > 0 => {
                flush(&mut cur, &mut out);
                version_comment -= 1;
                i += 1;
            }
            b'@' if next == Some(b'@') => {
                flush(&mut cur, &mut out);
                i += 2;
                while i < sql.len() && (sql[i].is_ascii_alphanumeric() || matches!(sql[i], b'_' | b'.' | b'$')) {
                    i += 1;
                }
                continue;
            }
            b'@' => {
                flush(&mut cur, &mut out);
                cur.push('@');
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                cur.push(c.to_ascii_lowercase() as char);
            }
            b';' => {
                flush(&mut cur, &mut out);
                out.push(";".into());
            }
            b'(' => {
                flush(&mut cur, &mut out);
                out.push("(".into());
            }
            _ => flush(&mut cur, &mut out),
        }
        i += 1;
    }
    flush(&mut cur, &mut out);
    out
}

/// Classify a text query.
pub fn scan(sql: &[u8]) -> SqlTraits {
    let w = words(sql);
    let mut t = SqlTraits::default();
    let pin = |why: &'static str, t: &mut SqlTraits| {
        t.pin.get_or_insert(why);
    };
    let mut first = true;
    for (i, word) in w.iter().enumerate() {
        let next = w.get(i + 1).map(String::as_str);
        if word == ";" {
            first = true;
            continue;
        }
        if word.starts_with('@') {
            pin("user variable", &mut t);
        }
        if first {
            match word.as_str() {
                "set" => pin("SET", &mut t),
                "use" => t.use_schema = next.filter(|n| *n != ";").map(str::to_owned),
                "lock" => pin("LOCK TABLES", &mut t),
                "prepare" | "execute" | "deallocate" => pin("SQL-level prepared statement", &mut t),
                "xa" => pin("XA transaction", &mut t),
                "handler" => pin("HANDLER", &mut t),
                "kill" => t.kill = true,
                _ => {}
            }
        }
        match (word.as_str(), next) {
            ("temporary", _) => pin("temporary table", &mut t),
            ("get_lock", Some("(")) => pin("GET_LOCK", &mut t),
            ("found_rows" | "last_insert_id" | "row_count", Some("(")) => t.uses_previous = true,
            ("sql_calc_found_rows", _) => t.leaves_previous = true,
            _ => {}
        }
        first = false;
    }
    t
}

/// A statement prepared somewhere on the route.
#[derive(Debug)]
pub struct StmtEntry {
    /// dgf id (route-wide).
    pub id: u64,
    /// The COM_STMT_PREPARE payload.
    pub prepare: Bytes,
    /// Parameters.
    pub num_params: u16,
    /// Result columns.
    pub num_columns: u16,
    /// The server's response packets (upstream form), replayed to later clients.
    pub response: Vec<Bytes>,
}

/// Route-wide prepared statements keyed by (schema, statement text).
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    by_sql: DashMap<(String, Bytes), Arc<StmtEntry>>,
}

/// Statements the registry remembers before it stops adding (each holds a few hundred bytes).
const REGISTRY_CAP: usize = 20_000;

impl Registry {
    /// The entry for `prepare` in `schema`, if known.
    pub fn get(&self, schema: &str, prepare: &Bytes) -> Option<Arc<StmtEntry>> {
        self.by_sql.get(&(schema.to_owned(), prepare.clone())).map(|e| e.clone())
    }

    /// Register a statement the server has just prepared.
    pub fn insert(
        &self,
        schema: &str,
        prepare: Bytes,
        num_params: u16,
        num_columns: u16,
        response: Vec<Bytes>,
    ) -> Arc<StmtEntry> {
        let key = (schema.to_owned(), prepare.clone());
        if let Some(e) = self.by_sql.get(&key) {
            return e.clone();
        }
        let e = Arc::new(StmtEntry {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            prepare,
            num_params,
            num_columns,
            response,
        });
        if self.by_sql.len() < REGISTRY_CAP {
            self.by_sql.insert(key, e.clone());
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins() {
        let cases: &[(&str, Option<&str>)] = &[
            ("SELECT 1", None),
            ("select * from t where a = '@x; set'", None),
            ("SET @a = 1", Some("SET")),
            ("select @a", Some("user variable")),
            ("SELECT 1 INTO @`v`", Some("user variable")),
            ("select @@session.autocommit", None),
            ("set names utf8mb4", Some("SET")),
            ("CREATE TEMPORARY TABLE t (a int)", Some("temporary table")),
            ("/* hi */ LOCK TABLES t READ", Some("LOCK TABLES")),
            ("SELECT GET_LOCK('x', 1)", Some("GET_LOCK")),
            ("PREPARE s FROM 'select 1'", Some("SQL-level prepared statement")),
            ("select 1; set autocommit=0", Some("SET")),
            ("select 1 # set @a=1", None),
            ("select 1 -- set @a=1", None),
            ("/*!40101 SET @saved = 1 */", Some("SET")),
            ("/*M!100101 SET @x = 1 */ select 1", Some("SET")),
            ("select 2-- 1", None),
        ];
        for (sql, want) in cases {
            assert_eq!(scan(sql.as_bytes()).pin, *want, "{sql}");
        }
    }

    #[test]
    fn finds_kill_in_every_spelling() {
        for sql in ["KILL 5", "kill query 5", "/* x */ KILL CONNECTION 7", "/*!50000 KILL 5 */", "select 1; kill 3"] {
            assert!(scan(sql.as_bytes()).kill, "{sql}");
        }
        for sql in ["SELECT 'kill 5'", "select kill from t", "select 1 -- kill 5"] {
            assert!(!scan(sql.as_bytes()).kill, "{sql}");
        }
    }

    #[test]
    fn previous_statement_functions_and_use() {
        assert!(scan(b"SELECT LAST_INSERT_ID()").uses_previous);
        assert!(scan(b"select found_rows ()").uses_previous);
        assert!(!scan(b"select last_insert_id from t").uses_previous);
        assert!(scan(b"select SQL_CALC_FOUND_ROWS * from t limit 1").leaves_previous);
        assert_eq!(scan(b"USE `shop`").use_schema.as_deref(), Some("shop"));
    }

    #[test]
    fn registry_dedups() {
        let r = Registry::default();
        let p = Bytes::from_static(b"\x16select ?");
        let a = r.insert("db", p.clone(), 1, 1, vec![]);
        let b = r.insert("db", p.clone(), 1, 1, vec![]);
        assert_eq!(a.id, b.id);
        assert_ne!(r.insert("other", p.clone(), 1, 1, vec![]).id, a.id);
        assert_eq!(r.get("db", &p).map(|e| e.id), Some(a.id));
    }
}
