//! Identifier normalisation and comparison per dialect.
//!
//! Postgres: the parse text already folded unquoted names, so an identifier's value is its name;
//! names compare exactly. MySQL: names are reported as written but compared ASCII
//! case-insensitively (column names are case-insensitive there, and for table names matching
//! more is the conservative direction).

use super::{ColumnSource, Dialect};
use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

/// Name of one identifier as the server sees it.
pub(crate) fn ident(i: &Ident) -> String {
    i.value.clone()
}

/// Parts of an object name.
pub(crate) fn parts(n: &ObjectName) -> Vec<String> {
    n.0.iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => ident(i),
            ObjectNamePart::Function(f) => ident(&f.name),
        })
        .collect()
}

/// (schema, name) of a possibly qualified relation name: the last part is the name, the one
/// before it the schema (a leading catalog/database part is dropped).
pub(crate) fn schema_and_name(n: &ObjectName) -> (Option<String>, String) {
    let mut p = parts(n);
    let name = p.pop().unwrap_or_default();
    (p.pop(), name)
}

/// Lower-cased dotted function name.
pub(crate) fn function_name(n: &ObjectName) -> String {
    parts(n).join(".").to_lowercase()
}

/// Compare two names under the dialect's rules.
pub(crate) fn same(d: Dialect, a: &str, b: &str) -> bool {
    match d {
        Dialect::Postgres => a == b,
        Dialect::Mysql => a.eq_ignore_ascii_case(b),
    }
}

/// Does a (possibly qualified) reference `q` name the relation `(schema, table)`?
/// An unqualified relation also matches a schema-qualified reference (search_path may resolve
/// it there), which can only over-match.
pub(crate) fn qual_matches(d: Dialect, q: &[String], schema: &Option<String>, table: &str) -> bool {
    match q {
        [t] => same(d, t, table),
        [.., s, t] => same(d, t, table) && schema.as_ref().is_none_or(|x| same(d, x, s)),
        [] => false,
    }
}

/// Replace each `AllColumnsOf` by the named column of that table (a name looked up through a
/// `*` of a base table can only be that table's column of the same name).
pub(crate) fn narrow(sources: &[ColumnSource], column: &str) -> Vec<ColumnSource> {
    sources
        .iter()
        .map(|s| match s {
            ColumnSource::AllColumnsOf { schema, table } => {
                ColumnSource::Column { schema: schema.clone(), table: table.clone(), column: column.to_string() }
            }
            other => other.clone(),
        })
        .collect()
}

/// Append `add` to `into` without duplicates.
pub(crate) fn extend(into: &mut Vec<ColumnSource>, add: impl IntoIterator<Item = ColumnSource>) {
    for s in add {
        if !into.contains(&s) {
            into.push(s);
        }
    }
}
