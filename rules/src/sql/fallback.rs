//! Classification of statements sqlparser cannot parse, from their leading keywords.
//!
//! The analysis of such a statement carries a parse error, so the policy denies it by default;
//! this classification exists so that deny rules on kinds (`drop`, `truncate`, `set_role`, ...)
//! still match when a deployment chooses to let unparseable statements through, and so the audit
//! record says something useful. Tables are unknown and every output is `Opaque`.

use super::fingerprint::{FLAG_DO, FLAG_OUTFILE};
use super::lexer::{lex, Kind};
use super::lineage::{Col, Star};
use super::{ColumnSource, CopyDirection, DdlKind, Dialect, StatementInfo, StatementKind as K};

/// Classify an unparseable statement (`text` is normalised parse text).
pub(crate) fn classify(text: &str, dialect: Dialect, flags: u8) -> StatementInfo {
    let lexed = lex(text, dialect);
    let words: Vec<String> =
        lexed.toks.iter().filter(|t| t.kind == Kind::Word).map(|t| t.text.to_ascii_lowercase()).collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    let first = words.first().map(String::as_str).unwrap_or("");
    let second = words.get(1).map(String::as_str).unwrap_or("");
    let mut server_io = flags & FLAG_OUTFILE != 0;
    let mut set_variables = Vec::new();
    let starts_with_word = lexed.toks.first().is_some_and(|t| t.kind == Kind::Word);
    let kind = if !starts_with_word {
        K::Unknown
    } else if flags & FLAG_DO != 0 {
        K::Other("do".into())
    } else {
        match first {
            "select" | "values" | "table" => K::Select,
            "insert" | "replace" => K::Insert,
            "update" => K::Update,
            "delete" => K::Delete,
            "merge" => K::Merge,
            "copy" => {
                let to = lexed.toks.iter().any(|t| t.kind == Kind::Word && t.text.eq_ignore_ascii_case("to"));
                server_io |= !(has("stdin") || has("stdout"));
                K::Copy {
                    to_program: has("program"),
                    direction: if to { CopyDirection::To } else { CopyDirection::From },
                }
            }
            "load" => {
                server_io |= !has("local");
                K::Copy { to_program: false, direction: CopyDirection::From }
            }
            "create" => K::Ddl(DdlKind::Create),
            "alter" => K::Ddl(DdlKind::Alter),
            "comment" => K::Ddl(DdlKind::Comment),
            "grant" => K::Ddl(DdlKind::Grant),
            "revoke" => K::Ddl(DdlKind::Revoke),
            "rename" => K::Ddl(DdlKind::Rename),
            "refresh" | "reindex" | "cluster" | "security" | "import" => K::Ddl(DdlKind::Other),
            "drop" => K::Drop,
            "truncate" => K::Truncate,
            "set" | "reset" => {
                set_variables.push(second.to_string());
                K::Set { role_change: has("role") || has("authorization") || (first == "reset" && second == "all") }
            }
            "use" => K::Use,
            "begin" | "start" | "commit" | "rollback" | "savepoint" | "release" | "end" | "abort" | "xa" => {
                K::Transaction
            }
            "show" | "describe" | "desc" => K::Show,
            "explain" => K::Explain,
            "prepare" => K::Prepare,
            "call" => K::Call,
            "listen" | "unlisten" | "notify" | "discard" | "fetch" | "move" | "close" | "declare" | "deallocate"
            | "lock" | "unlock" | "vacuum" | "analyze" | "checkpoint" | "kill" | "flush" | "optimize" => {
                K::Other(first.to_string())
            }
            // "do" (anonymous code block), "execute" (dynamic SQL), "handler" (reads rows
            // without SELECT) and everything else.
            _ => K::Unknown,
        }
    };
    let effects = match kind {
        K::Explain | K::Prepare | K::Transaction => vec![K::Unknown],
        _ => Vec::new(),
    };
    StatementInfo {
        kind,
        effects,
        outputs: vec![Col::star(Star::Any, vec![ColumnSource::Opaque]).output()],
        server_io,
        set_variables,
        ..StatementInfo::default()
    }
}
