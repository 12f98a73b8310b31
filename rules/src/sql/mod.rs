//! SQL analysis: fingerprints, statement kinds, tables, functions and output-column lineage.
//!
//! Three entry points, cheapest first:
//! - [`fingerprint`]: a hand-written lexer (no sqlparser) that strips literals, comments and
//!   whitespace. Used for audit records (which never carry literal values) and as the shape key.
//! - [`analyze`]: parses with sqlparser and walks every statement kind with an exhaustive match
//!   (a new sqlparser variant is a compile error here, not a silent allow).
//! - [`Analyzer::analyze_cached`]: the hot-path entry, a bounded thread-safe cache keyed by the
//!   normalised text, so one shape is parsed once however many literal values it is run with.
//!
//! # What sqlparser sees
//! sqlparser never sees the client's bytes. The lexer re-renders every statement with comments
//! removed, MySQL executable comments (`/*!50000 ... */`) unwrapped into code, every string
//! literal replaced by `''`, every number by `0` and every parameter by `$1` / `?`, unquoted
//! Postgres identifiers folded to lower case (and truncated to 63 bytes, as the server does) and
//! `U&"..."` identifiers decoded. The analysis is a pure function of that text, which is also the
//! cache key: two statements that differ only in literal values get the same analysis by
//! construction, and no literal value can ever appear in an [`Analysis`].
//!
//! # Soundness contract for masking
//! [`OutputColumn::sources`] may over-report (name more columns than the value really derives
//! from) but must never under-report. Where the analyser cannot trace a value it says
//! [`ColumnSource::Opaque`], and the masking layer fails closed. `AllColumnsOf` on an entry that
//! is not a wildcard means "some or all columns of that table" (a whole-row reference such as
//! `SELECT c FROM customers c`): treat it as containing every labelled column of the table.
//! [`StatementInfo::written_sources`] reports labelled data being copied somewhere else (another
//! table, a file, a variable): a masked user doing that must be denied, or the copy read later
//! will not be masked.
//!
//! # Known limits (what this layer cannot see; the caller must cover them)
//! - **Session settings the lexer assumes.** Postgres `standard_conforming_strings = on` and an
//!   ASCII-safe `client_encoding` (not SJIS, BIG5, GBK, GB18030, UHC, whose second bytes can be
//!   `\`); MySQL `sql_mode` without `NO_BACKSLASH_ESCAPES` / `ANSI_QUOTES` and a client charset
//!   that is not gbk, sjis, big5, cp932 or gb18030. Otherwise the server may end a string where
//!   the lexer does not. The session must track or refuse changes to these
//!   ([`StatementInfo::set_variables`] names them).
//! - **The catalog.** Views, table inheritance and partitions (a parent's rows include its
//!   children's), row-level security, columns renamed after labelling, and `search_path` /
//!   `USE` for unqualified names (`schema: None`) are resolved by the masking/policy layer.
//! - **User code.** Unknown functions and user-defined operators are `Opaque`, but a user
//!   object *shadowing* a built-in name (an overloaded `=` for a user type, a `lower()` earlier
//!   on `search_path` than `pg_catalog`), user-defined casts, triggers, rules (`CREATE RULE ...
//!   ON SELECT`), `DO` blocks and procedures run code this layer does not see.
//! - **Session state.** Cursors (`FETCH` is `Opaque`), SQL-level `EXECUTE` (`Opaque`), temp
//!   tables filled from labelled data (see `written_sources`), MySQL user variables (reading
//!   `@v` is `Opaque`), `set_config()` / `set_config('role', ...)`.
//! - **Side channels.** Error messages can quote values (`SELECT email::int`), so can NOTIFY
//!   payloads, statistics views (`pg_stats`, `pg_stat_statements`) and `EXPLAIN`; predicates
//!   (WHERE, JOIN ON, ORDER BY, GROUP BY, EXISTS, LIMIT) leak by inference and are deliberately
//!   not lineage.
//! - **Parser coverage.** What sqlparser cannot parse (Postgres `DO`, `SET role TO x`, SQL
//!   function bodies with `BEGIN ATOMIC`, MySQL `LOAD DATA`, `PREPARE ... FROM`, `HANDLER`, ...)
//!   carries a parse error and a keyword-based kind. Statements over 256 KiB, with more than
//!   8000 operator tokens or nested deeper than 400 levels are refused the same way. Residual
//!   risk: a spelling sqlparser structures differently from the server.
//! - **Deliberate over-reporting** (sound, may mask more than needed): unqualified names in
//!   correlated subqueries also resolve to outer tables; set operations whose arms do not line
//!   up; `*` over USING / NATURAL joins is one wildcard for all joined tables; MySQL executable
//!   comments are code whatever their version number; nested DML under `EXPLAIN` counts as an
//!   effect even without ANALYZE.

mod analyze;
mod cache;
mod dml;
mod expr;
mod fallback;
mod fingerprint;
mod from;
mod functions;
mod lexer;
mod lineage;
mod names;
mod select;
mod spelling;
mod statement;
mod template;

#[cfg(test)]
mod tests;

pub use analyze::analyze;
pub use cache::Analyzer;
pub use fingerprint::{fingerprint, stable_hash, Fingerprint};

/// SQL dialect of the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL (standard_conforming_strings on).
    Postgres,
    /// MySQL / MariaDB (default sql_mode: backslash escapes on, ANSI_QUOTES off).
    Mysql,
}

/// Errors of the SQL layer that callers may want to match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The lexer met a spelling it refuses to guess about (unterminated string or comment,
    /// `UESCAPE`, an ambiguous MySQL version comment, ...).
    #[error("cannot tokenize statement: {0}")]
    Lex(String),
    /// sqlparser rejected the statement.
    #[error("cannot parse statement: {0}")]
    Parse(String),
}

/// Result of analysing one query string (which may hold several statements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// One entry per non-empty statement, in order. Statements that failed to parse are still
    /// listed, classified from their leading keywords (tables and lineage then unknown).
    pub statements: Vec<StatementInfo>,
    /// Set when any statement could not be tokenized or parsed; the policy denies by default.
    pub parse_error: Option<String>,
}

impl Analysis {
    /// More than one statement in the query string.
    pub fn is_multi_statement(&self) -> bool {
        self.statements.len() > 1
    }
}

/// What one statement does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementInfo {
    /// Top-level kind.
    pub kind: StatementKind,
    /// Kinds of statements executed *inside* this one: data-modifying CTEs
    /// (`WITH d AS (DELETE ...) SELECT`), `EXPLAIN ANALYZE <stmt>`, `SELECT ... INTO new_table`,
    /// the actions of a `MERGE`, `INSERT ... ON CONFLICT DO UPDATE`, `REPLACE`, the query of
    /// `PREPARE` / `DECLARE CURSOR`. Use [`StatementInfo::classes`] for rule matching.
    pub effects: Vec<StatementKind>,
    /// Tables (and views, sequences, indexes, ...) named anywhere in the statement, deduplicated;
    /// `write` is set if any mention writes. `name == "*"` with a schema means every object of
    /// that schema (`DROP SCHEMA s`, `GRANT ... ON ALL TABLES IN SCHEMA s`).
    pub tables: Vec<TableRef>,
    /// Every function called anywhere (including table functions in FROM and CALL targets),
    /// lower-cased, schema-qualified if written so, deduplicated and sorted.
    pub functions: Vec<String>,
    /// UPDATE / DELETE with a WHERE clause.
    pub has_where: bool,
    /// Result columns in order (empty when the statement returns no rows). An entry with
    /// `wildcard` set stands for zero or more columns (`*`, `t.*`, `RETURNING *`).
    pub outputs: Vec<OutputColumn>,
    /// Sources of every value written into a table, file or variable (INSERT ... SELECT, UPDATE
    /// SET, CREATE TABLE AS, SELECT INTO, INTO OUTFILE, SET @v := ...). A masked user copying
    /// labelled data elsewhere shows up here.
    pub written_sources: Vec<ColumnSource>,
    /// Assigns a MySQL user variable (`SET @v := ...`, `SELECT @v := col`, `SELECT ... INTO @v`).
    pub assigns_user_variable: bool,
    /// Reads or writes files, or runs programs, on the database host (`COPY ... TO/FROM 'file'`
    /// or `PROGRAM`, `INTO OUTFILE`/`DUMPFILE`, `LOAD DATA INFILE`, `pg_read_file()`,
    /// `load_file()`, `lo_import()`, `dblink()`, ...).
    pub server_io: bool,
    /// Session parameters assigned by SET / RESET / USE (lower-cased names; `"role"`,
    /// `"session_authorization"`, `"search_path"`, `"database"`, ...).
    pub set_variables: Vec<String>,
}

impl StatementInfo {
    /// Rule classes of this statement *including* its [`effects`](Self::effects); this is what
    /// a rule's `statements = [...]` list should be matched against.
    pub fn classes(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.kind.classes().to_vec();
        for e in &self.effects {
            for c in e.classes() {
                if !v.contains(c) {
                    v.push(c);
                }
            }
        }
        v
    }
}

/// Direction of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    /// `COPY ... TO` (reads the table).
    To,
    /// `COPY ... FROM` / `LOAD DATA` (writes the table).
    From,
}

/// Sub-kind of DDL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlKind {
    /// CREATE ... (tables, views, indexes, functions, roles, schemas, ...).
    Create,
    /// ALTER ....
    Alter,
    /// COMMENT ON ....
    Comment,
    /// GRANT.
    Grant,
    /// REVOKE.
    Revoke,
    /// RENAME TABLE (MySQL).
    Rename,
    /// REFRESH MATERIALIZED VIEW and other object maintenance.
    Other,
}

/// Statement kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StatementKind {
    /// SELECT, VALUES, TABLE t, set operations.
    Select,
    /// INSERT / REPLACE.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// MERGE (its actions are listed as effects).
    Merge,
    /// COPY / LOAD DATA.
    Copy {
        /// `PROGRAM` is used (in either direction: both run a shell command on the server).
        to_program: bool,
        /// Direction.
        direction: CopyDirection,
    },
    /// CREATE / ALTER / COMMENT / GRANT / REVOKE / RENAME.
    Ddl(DdlKind),
    /// DROP of anything.
    Drop,
    /// TRUNCATE.
    Truncate,
    /// SET / RESET of a session setting or variable.
    Set {
        /// SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE/ALL, `SET role = ...`.
        role_change: bool,
    },
    /// USE db (changes how unqualified names resolve).
    Use,
    /// BEGIN / START TRANSACTION / COMMIT / ROLLBACK / SAVEPOINT.
    Transaction,
    /// SHOW / DESCRIBE.
    Show,
    /// EXPLAIN (the explained statement is analysed too; with ANALYZE it is an effect).
    Explain,
    /// `PREPARE name AS stmt` (the prepared statement is analysed and listed as an effect).
    Prepare,
    /// EXECUTE of a named prepared statement (its content is not visible here).
    Execute,
    /// CALL procedure (its effects are not visible here).
    Call,
    /// Recognised but not otherwise classified (lower-case name, e.g. "listen", "do", "fetch").
    Other(String),
    /// Nothing known: dynamic SQL, anonymous code blocks, unparseable input.
    #[default]
    Unknown,
}

impl StatementKind {
    /// Rule classes (the names used in `statements = [...]`). Besides the kind's own name:
    /// `"write"` for anything that changes table data, `"read"` for SELECT / COPY TO,
    /// `"ddl"` for all schema and privilege changes including DROP and TRUNCATE.
    pub fn classes(&self) -> &'static [&'static str] {
        match self {
            Self::Select => &["select", "read"],
            Self::Insert => &["insert", "write"],
            Self::Update => &["update", "write"],
            Self::Delete => &["delete", "write"],
            Self::Merge => &["merge", "write"],
            Self::Copy { direction: CopyDirection::To, to_program: false } => &["copy", "copy_to", "read"],
            Self::Copy { direction: CopyDirection::To, to_program: true } => &["copy", "copy_to", "read", "program"],
            Self::Copy { direction: CopyDirection::From, to_program: false } => {
                &["copy", "copy_from", "insert", "write"]
            }
            Self::Copy { direction: CopyDirection::From, to_program: true } => {
                &["copy", "copy_from", "insert", "write", "program"]
            }
            Self::Ddl(DdlKind::Create) => &["ddl", "create"],
            Self::Ddl(DdlKind::Alter) => &["ddl", "alter"],
            Self::Ddl(DdlKind::Comment) => &["ddl", "comment"],
            Self::Ddl(DdlKind::Grant) => &["ddl", "grant", "dcl"],
            Self::Ddl(DdlKind::Revoke) => &["ddl", "revoke", "dcl"],
            Self::Ddl(DdlKind::Rename) => &["ddl", "alter", "rename"],
            Self::Ddl(DdlKind::Other) => &["ddl"],
            Self::Drop => &["ddl", "drop"],
            Self::Truncate => &["ddl", "truncate", "delete", "write"],
            Self::Set { role_change: false } => &["set"],
            Self::Set { role_change: true } => &["set", "set_role"],
            Self::Use => &["use", "set"],
            Self::Transaction => &["transaction"],
            Self::Show => &["show"],
            Self::Explain => &["explain"],
            Self::Prepare => &["prepare"],
            Self::Execute => &["execute"],
            Self::Call => &["call"],
            Self::Other(_) => &["other"],
            Self::Unknown => &["unknown"],
        }
    }
}

/// A table (or other relation-like object) named by a statement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableRef {
    /// Schema (MySQL: database) if written; `None` means "resolved by search_path / USE".
    pub schema: Option<String>,
    /// Name: Postgres unquoted names lower-cased, quoted kept; MySQL as written.
    pub name: String,
    /// Written (INSERT/UPDATE/DELETE/MERGE/COPY FROM/TRUNCATE/DDL target).
    pub write: bool,
}

/// Where one output value comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnSource {
    /// A column of a base table (or view: the masking layer resolves views with the catalog).
    Column {
        /// Schema if written.
        schema: Option<String>,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// Some or all columns of a table whose column list the analyser does not know
    /// (`*`, `t.*`, whole-row references).
    AllColumnsOf {
        /// Schema if written.
        schema: Option<String>,
        /// Table.
        table: String,
    },
    /// Untraceable (unknown function, cursor, prepared statement, ...): mask fails closed.
    Opaque,
}

/// One result column (or, with `wildcard`, a run of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    /// Output name as the analyser computes it (alias, column name, else `?column?`/`*`);
    /// informational, positions are what count.
    pub name: String,
    /// Union of everything the value may derive from; empty for constants and `count(*)`.
    pub sources: Vec<ColumnSource>,
    /// Stands for zero or more result columns whose count needs the catalog (`*`, `t.*`).
    pub wildcard: bool,
}

impl OutputColumn {
    /// True if any source is [`ColumnSource::Opaque`].
    pub fn is_opaque(&self) -> bool {
        self.sources.contains(&ColumnSource::Opaque)
    }
}
