//! Glob matching (`*`, `?`) and label patterns: where labelled data lives, for every protocol.
//!
//! A label pattern names a field inside an object:
//! - SQL (Postgres, MySQL): `schema.table.column` (`table.column` and `column` mean any schema /
//!   any table); an optional `postgres:` / `mysql:` prefix is accepted.
//! - MongoDB: `mongodb:db.collection.path.to.field`.
//! - Redis: `redis:key-glob#hash-field`, or `redis:key-glob` for whole values.

/// Which family of names a pattern or a reference belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Postgres and MySQL: `schema.table` objects, columns.
    Sql,
    /// MongoDB: `db.collection` objects, dotted field paths.
    Mongo,
    /// Redis: keys, hash fields.
    Redis,
}

/// `*` matches any run of characters (including none), `?` exactly one. Case-insensitive when
/// `ci` (SQL identifiers), exact otherwise (Redis keys, MongoDB fields).
pub fn glob_match(pat: &str, s: &str, ci: bool) -> bool {
    if pat.is_ascii() && s.is_ascii() {
        return glob_bytes(pat.as_bytes(), s.as_bytes(), ci);
    }
    let (p, t): (Vec<char>, Vec<char>) = if ci {
        (pat.chars().flat_map(char::to_lowercase).collect(), s.chars().flat_map(char::to_lowercase).collect())
    } else {
        (pat.chars().collect(), s.chars().collect())
    };
    glob_slices(&p, &t, |a, b| a == b)
}

/// The allocation-free path for ASCII names (nearly all identifiers and keys).
fn glob_bytes(p: &[u8], t: &[u8], ci: bool) -> bool {
    if ci {
        glob_slices(p, t, |a: &u8, b: &u8| a.eq_ignore_ascii_case(b))
    } else {
        glob_slices(p, t, |a, b| a == b)
    }
}

/// Iterative glob with single-star backtracking (linear for one `*`, O(n*m) worst case).
fn glob_slices<T: Copy + PartialEq + From<u8>>(p: &[T], t: &[T], eq: impl Fn(&T, &T) -> bool) -> bool {
    let (star, any) = (T::from(b'*'), T::from(b'?'));
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut back, mut mark) = (None, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != star && (p[pi] == any || eq(&p[pi], &t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == star {
            back = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = back {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == star {
        pi += 1;
    }
    pi == p.len()
}

/// A compiled label (or column) pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPattern {
    /// Namespace.
    pub ns: Namespace,
    /// Glob over the object (`schema.table`, `db.collection`, Redis key).
    pub object: String,
    /// Glob over the field (column, dotted path, hash field); `None` = the whole value (Redis).
    pub field: Option<String>,
}

impl FieldPattern {
    /// Parses a pattern as written in `[[labels]] match` or a rule's `columns`.
    pub fn parse(s: &str) -> FieldPattern {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("mongodb:") {
            let mut parts = rest.splitn(3, '.');
            let db = parts.next().unwrap_or("*");
            let coll = parts.next().unwrap_or("*");
            let field = parts.next().map(str::to_owned);
            return FieldPattern {
                ns: Namespace::Mongo,
                object: format!("{db}.{coll}"),
                field: field.or(Some("*".into())),
            };
        }
        if let Some(rest) = s.strip_prefix("redis:") {
            return match rest.split_once('#') {
                Some((key, field)) => {
                    FieldPattern { ns: Namespace::Redis, object: key.to_owned(), field: Some(field.to_owned()) }
                }
                None => FieldPattern { ns: Namespace::Redis, object: rest.to_owned(), field: None },
            };
        }
        let rest = s.strip_prefix("postgres:").or_else(|| s.strip_prefix("mysql:")).unwrap_or(s);
        let parts: Vec<&str> = rest.split('.').collect();
        let (object, field) = match parts.as_slice() {
            [c] => ("*.*".to_owned(), (*c).to_owned()),
            [t, c] => (format!("*.{t}"), (*c).to_owned()),
            [s, t, c] => (format!("{s}.{t}"), (*c).to_owned()),
            _ => {
                // More dots than schema.table.column: keep the last part as the column.
                let (c, head) = parts.split_last().map_or(("", &[][..]), |(c, h)| (*c, h));
                (head.join("."), c.to_owned())
            }
        };
        FieldPattern { ns: Namespace::Sql, object, field: Some(field) }
    }

    /// Whether this pattern can match a field of `object` (some field of it is labelled).
    /// An SQL object written without a schema (`*.customers`: resolved by `search_path` / `USE`
    /// on the server) matches any schema.
    pub fn matches_object(&self, ns: Namespace, object: &str) -> bool {
        if self.ns != ns {
            return false;
        }
        if ns == Namespace::Sql {
            if let Some(table) = object.strip_prefix("*.") {
                let pt = self.object.rsplit('.').next().unwrap_or(&self.object);
                return glob_match(pt, table, true);
            }
        }
        glob_match(&self.object, object, ns == Namespace::Sql)
    }

    /// Whether the pattern matches `field` of `object`. `field = None` asks about the object as a
    /// whole (all columns, a whole document or value): true if any field of it may be labelled.
    /// For MongoDB a field that is a prefix of the pattern (`profile` for `profile.email`) matches:
    /// the returned subdocument contains the labelled field.
    pub fn matches(&self, r: &FieldRef<'_>) -> bool {
        if !self.matches_object(r.ns, r.object) {
            return false;
        }
        let (Some(pf), Some(f)) = (self.field.as_deref(), r.field) else { return true };
        let ci = r.ns == Namespace::Sql;
        // Array positions in a MongoDB path (`contacts.0.phone`) index the arrays the path
        // crosses: left out on both sides, so they match like `contacts.phone`.
        let (pf, f) =
            if r.ns == Namespace::Mongo { (&*without_positions(pf), &*without_positions(f)) } else { (pf, f) };
        if glob_match(pf, f, ci) {
            return true;
        }
        if r.ns == Namespace::Mongo {
            // The pattern's path starts with the referenced path: `profile` holds `profile.email`.
            let depth = f.split('.').count();
            let head: Vec<&str> = pf.split('.').take(depth).collect();
            return head.len() == depth && pf.split('.').count() > depth && glob_match(&head.join("."), f, false);
        }
        false
    }
}

/// A dotted MongoDB path without its all-digit segments (array positions).
fn without_positions(path: &str) -> std::borrow::Cow<'_, str> {
    let pos = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !path.split('.').any(pos) {
        return path.into();
    }
    path.split('.').filter(|s| !pos(s)).collect::<Vec<_>>().join(".").into()
}

/// A reference to data as a protocol sees it: a field of an object, or the whole object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a> {
    /// Namespace.
    pub ns: Namespace,
    /// `schema.table` (SQL, resolved), `db.collection` (MongoDB), key (Redis).
    pub object: &'a str,
    /// Column / path / hash field; `None` = all of the object.
    pub field: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("user:*", "user:42", false));
        assert!(glob_match("*", "", false));
        assert!(glob_match("a?c", "abc", false));
        assert!(!glob_match("a?c", "ac", false));
        assert!(glob_match("Public.*", "public.customers", true));
        assert!(!glob_match("Public.*", "public.customers", false));
        assert!(glob_match("*.cust*", "s.customers", true));
        assert!(!glob_match("user:*", "users:1", false));
        assert!(glob_match("é*", "élan", false));
        assert!(glob_match("*É", "café", true));
        assert!(glob_match("a*b*c", "axxbyyc", false));
        assert!(!glob_match("a*b*c", "axxbyy", false));
    }

    #[test]
    fn sql_patterns() {
        let p = FieldPattern::parse("public.customers.email");
        assert!(p.matches(&FieldRef { ns: Namespace::Sql, object: "public.customers", field: Some("EMAIL") }));
        assert!(p.matches(&FieldRef { ns: Namespace::Sql, object: "public.customers", field: None }));
        assert!(!p.matches(&FieldRef { ns: Namespace::Sql, object: "public.customers", field: Some("name") }));
        assert!(!p.matches(&FieldRef { ns: Namespace::Mongo, object: "public.customers", field: Some("email") }));
        let any = FieldPattern::parse("email");
        assert!(any.matches(&FieldRef { ns: Namespace::Sql, object: "shop.users", field: Some("email") }));
        let t = FieldPattern::parse("customers.ssn");
        assert!(t.matches(&FieldRef { ns: Namespace::Sql, object: "crm.customers", field: Some("ssn") }));
        // Unqualified references match any schema.
        assert!(p.matches(&FieldRef { ns: Namespace::Sql, object: "*.customers", field: Some("email") }));
        assert!(!p.matches(&FieldRef { ns: Namespace::Sql, object: "*.orders", field: Some("email") }));
    }

    #[test]
    fn redis_and_mongo_patterns() {
        let r = FieldPattern::parse("redis:user:*#email");
        assert!(r.matches(&FieldRef { ns: Namespace::Redis, object: "user:1", field: Some("email") }));
        assert!(r.matches(&FieldRef { ns: Namespace::Redis, object: "user:1", field: None }));
        assert!(!r.matches(&FieldRef { ns: Namespace::Redis, object: "user:1", field: Some("name") }));
        let whole = FieldPattern::parse("redis:session:*");
        assert!(whole.matches(&FieldRef { ns: Namespace::Redis, object: "session:9", field: Some("x") }));
        let m = FieldPattern::parse("mongodb:app.users.profile.email");
        assert!(m.matches(&FieldRef { ns: Namespace::Mongo, object: "app.users", field: Some("profile.email") }));
        assert!(m.matches(&FieldRef { ns: Namespace::Mongo, object: "app.users", field: Some("profile") }));
        assert!(!m.matches(&FieldRef { ns: Namespace::Mongo, object: "app.users", field: Some("prof") }));
        let c = FieldPattern::parse("mongodb:app.users.contacts.phone");
        for f in ["contacts.0.phone", "contacts.12.phone", "contacts.1", "contacts"] {
            assert!(c.matches(&FieldRef { ns: Namespace::Mongo, object: "app.users", field: Some(f) }), "{f}");
        }
        assert!(!c.matches(&FieldRef { ns: Namespace::Mongo, object: "app.users", field: Some("contacts.0.kind") }));
        assert!(!m.matches(&FieldRef { ns: Namespace::Mongo, object: "app.orders", field: Some("profile") }));
    }
}
