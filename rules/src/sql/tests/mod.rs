//! Tests of the SQL layer: hostile spellings, statement kinds, lineage, cache, properties.

mod cache;
mod fingerprint;
mod lineage;
mod props;
mod statements;

use super::*;

/// Analyse one Postgres statement that must parse.
pub(super) fn pg(q: &str) -> StatementInfo {
    one(q, Dialect::Postgres)
}

/// Analyse one MySQL statement that must parse.
pub(super) fn my(q: &str) -> StatementInfo {
    one(q, Dialect::Mysql)
}

fn one(q: &str, d: Dialect) -> StatementInfo {
    let a = analyze(q, d);
    assert_eq!(a.parse_error, None, "{q}");
    assert_eq!(a.statements.len(), 1, "{q}");
    a.statements.into_iter().next().unwrap_or_default()
}

/// `table.column` with no schema.
pub(super) fn col(t: &str, c: &str) -> ColumnSource {
    ColumnSource::Column { schema: None, table: t.into(), column: c.into() }
}

/// `schema.table.column`.
pub(super) fn scol(s: &str, t: &str, c: &str) -> ColumnSource {
    ColumnSource::Column { schema: Some(s.into()), table: t.into(), column: c.into() }
}

/// All columns of an unqualified table.
pub(super) fn all(t: &str) -> ColumnSource {
    ColumnSource::AllColumnsOf { schema: None, table: t.into() }
}

/// Sources of output `i`, sorted.
pub(super) fn out(info: &StatementInfo, i: usize) -> Vec<ColumnSource> {
    let mut v = info.outputs.get(i).map(|o| o.sources.clone()).unwrap_or_else(|| panic!("no output {i}: {info:#?}"));
    v.sort();
    v
}

/// Sorted copy.
pub(super) fn sorted(mut v: Vec<ColumnSource>) -> Vec<ColumnSource> {
    v.sort();
    v
}

/// (schema, name, write) of every table.
pub(super) fn tables(info: &StatementInfo) -> Vec<(Option<&str>, &str, bool)> {
    info.tables.iter().map(|t| (t.schema.as_deref(), t.name.as_str(), t.write)).collect()
}
