//! Catalog cache for governance: table OID + attnum (as RowDescription reports them) to
//! `schema.table` and column name; what each view reads (`pg_depend` of its rewrite rule) and
//! its query; the functions users defined; and table inheritance (partitions), so that rules on
//! tables also reach the views, functions and partitions around them. Loaded per database in
//! one round trip on the session's own server connection (never an extra connection: the pool
//! cap holds), dropped after DDL or when an unknown OID shows up, reloaded before a governed
//! statement that names a relation it does not have (once per name and load), and refreshed at
//! most every [`MAX_AGE`].

use super::backend::{BackendError, ServerConn};
use bytes::BytesMut;
use dgf_protocols::postgres::frame::frame_len;
use dgf_protocols::postgres::messages::{self, btag, ErrorFields};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A cached catalog is reloaded after this long even without DDL seen through dgf.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Postgres's FirstNormalObjectId: objects made by initdb (the system catalogs, the
/// `information_schema`) have smaller OIDs; every user object has this one or larger.
pub const FIRST_NORMAL_OBJECT_ID: u32 = 16_384;
/// Refuse to cache catalogs larger than this many columns.
const MAX_COLUMNS: usize = 2_000_000;

const QUERY: &str = "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','v','m','p','f') \
     AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'; \
     SELECT DISTINCT r.ev_class, d.refobjid, d.refobjsubid \
     FROM pg_catalog.pg_rewrite r \
     JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v','m') \
     JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace \
     JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid \
     WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class \
     AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'; \
     SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid) FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v','m') \
     AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'; \
     SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' AND NOT EXISTS ( \
     SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
     AND d.objid = p.oid AND d.deptype = 'e'); \
     SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits";
/// Views nested deeper than this are not followed further.
const MAX_VIEW_DEPTH: usize = 32;

/// Columns of one database.
#[derive(Debug)]
pub struct Catalog {
    tables: HashMap<u32, (String, HashMap<i16, String>)>,
    /// View or materialized view OID -> the relations and columns its query references
    /// (attnum 0: the relation as a whole, as in `count(*)`).
    views: HashMap<u32, Vec<(u32, i16)>>,
    /// View name (`relname`) -> OIDs of the views so named, in any schema.
    view_names: HashMap<String, Vec<u32>>,
    /// View OID -> its query (`pg_get_viewdef`).
    defs: HashMap<u32, String>,
    /// Names of the functions defined in the database by its users (not by extensions).
    functions: std::collections::HashSet<String>,
    /// Child (partition or inheriting table) OID -> its parents.
    parents: HashMap<u32, Vec<u32>>,
    /// Name (`relname`) of a child -> OIDs so named, in any schema.
    child_names: HashMap<String, Vec<u32>>,
    /// Name (`relname`) of every relation -> OIDs so named, in any schema.
    rel_names: HashMap<String, Vec<u32>>,
    /// Objects statements named that this catalog, freshly loaded, did not have (temporary
    /// tables, names about to be created, typos): they do not make it reload again.
    missing: crate::missing::MissingNames,
    /// When it was loaded.
    pub loaded: Instant,
}

impl Catalog {
    fn new(p: Parts) -> Self {
        let names_of = |oids: &mut dyn Iterator<Item = &u32>| {
            let mut out: HashMap<String, Vec<u32>> = HashMap::new();
            for oid in oids {
                if let Some((t, _)) = p.tables.get(oid) {
                    let name = t.split_once('.').map_or(t.as_str(), |(_, n)| n);
                    out.entry(name.to_owned()).or_default().push(*oid);
                }
            }
            out
        };
        let view_names = names_of(&mut p.views.keys());
        let child_names = names_of(&mut p.parents.keys());
        let rel_names = names_of(&mut p.tables.keys());
        let Parts { tables, views, defs, functions, parents } = p;
        let missing = Default::default();
        let loaded = Instant::now();
        Catalog { tables, views, view_names, defs, functions, parents, child_names, rel_names, missing, loaded }
    }

    /// Whether an object of an analysis (`schema.t`, or `*.t` / `t` in any schema) may be a
    /// relation of this catalog, or was already looked for in vain since it was loaded. An
    /// object in a system schema (left out of the catalog) counts as known.
    pub fn knows(&self, object: &str) -> bool {
        let schema = object.split_once('.').map(|(s, _)| s);
        if schema.is_some_and(|s| s == "information_schema" || s.starts_with("pg_")) {
            return true;
        }
        let name = object.rsplit_once('.').map_or(object, |(_, n)| n);
        let qualified = schema.is_some_and(|s| s != "*");
        let found = self
            .rel_names
            .get(name)
            .is_some_and(|oids| !qualified || oids.iter().any(|o| self.relation(*o) == Some(object)));
        found || self.missing.contains(object)
    }

    /// Remember that this catalog, freshly loaded, does not have `object`.
    pub fn note_missing(&self, object: &str) {
        self.missing.note(object);
    }

    /// `schema.table` and column of a RowDescription field.
    pub fn column(&self, oid: u32, attnum: i16) -> Option<(&str, &str)> {
        let (t, cols) = self.tables.get(&oid)?;
        Some((t.as_str(), cols.get(&attnum)?.as_str()))
    }

    /// `schema.table` of a relation.
    pub fn relation(&self, oid: u32) -> Option<&str> {
        self.tables.get(&oid).map(|(t, _)| t.as_str())
    }

    /// Whether `name` (as the analysis reports a call: lower case, maybe schema-qualified)
    /// may be a function defined in the database by its users (names are kept lower case, so
    /// a quoted mixed-case name counts too).
    pub fn is_user_function(&self, name: &str) -> bool {
        let last = name.rsplit('.').next().unwrap_or(name);
        self.functions.contains(last)
    }

    /// The tables `oid` inherits from (partitioned parents, inheritance), nearest first,
    /// through every level.
    pub fn ancestors(&self, oid: u32) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        let mut todo = vec![oid];
        while let Some(o) = todo.pop() {
            for &p in self.parents.get(&o).map_or(&[][..], Vec::as_slice) {
                if !out.contains(&p) && p != oid && out.len() < MAX_VIEW_DEPTH {
                    out.push(p);
                    todo.push(p);
                }
            }
        }
        out
    }

    /// The partitions / inheriting tables an object of an analysis may name (see
    /// [`views_named`](Self::views_named)).
    pub fn children_named(&self, object: &str) -> Vec<u32> {
        Self::named(&self.child_names, object, |o| self.relation(o))
    }

    /// The query of view `oid`.
    pub fn view_definition(&self, oid: u32) -> Option<&str> {
        self.defs.get(&oid).map(String::as_str)
    }

    /// The columns of relation `oid` in attnum order.
    pub fn columns(&self, oid: u32) -> Vec<(i16, &str)> {
        let mut cols: Vec<(i16, &str)> =
            self.tables.get(&oid).map(|(_, c)| c.iter().map(|(n, s)| (*n, s.as_str())).collect()).unwrap_or_default();
        cols.sort_unstable();
        cols
    }

    /// The views an object of an analysis may name: `schema.v` exactly, `*.v` in any schema.
    pub fn views_named(&self, object: &str) -> Vec<u32> {
        Self::named(&self.view_names, object, |o| self.relation(o))
    }

    fn named<'a>(names: &HashMap<String, Vec<u32>>, object: &str, rel: impl Fn(u32) -> Option<&'a str>) -> Vec<u32> {
        let name = object.rsplit_once('.').map_or(object, |(_, n)| n);
        let Some(oids) = names.get(name) else { return Vec::new() };
        if object.starts_with("*.") || !object.contains('.') {
            return oids.clone();
        }
        oids.iter().copied().filter(|o| rel(*o) == Some(object)).collect()
    }

    /// Every relation and column view `oid` reads, through views over views (not the views
    /// themselves).
    pub fn view_sources(&self, oid: u32) -> Vec<(u32, i16)> {
        let mut out = Vec::new();
        let mut seen = vec![oid];
        let mut todo = vec![(oid, 0usize)];
        while let Some((v, depth)) = todo.pop() {
            for &(rel, att) in self.views.get(&v).map_or(&[][..], Vec::as_slice) {
                if self.views.contains_key(&rel) {
                    if depth < MAX_VIEW_DEPTH && !seen.contains(&rel) {
                        seen.push(rel);
                        todo.push((rel, depth + 1));
                    }
                } else if !out.contains(&(rel, att)) {
                    out.push((rel, att));
                }
            }
        }
        out
    }

    /// Whether it is too old to use.
    pub fn expired(&self) -> bool {
        self.loaded.elapsed() > MAX_AGE
    }

    /// Read the catalog through an idle server connection.
    pub async fn load(conn: &mut ServerConn) -> Result<Catalog, BackendError> {
        let mut out = BytesMut::new();
        messages::put_query(&mut out, QUERY);
        conn.stream.write_all(&out).await?;
        conn.stream.flush().await?;
        let mut parts = Parts::default();
        let mut set = 0usize;
        let mut failed = None;
        let mut count = 0usize;
        loop {
            let n = loop {
                if let Some(n) = frame_len(&conn.rbuf, super::backend::MAX_SERVER_MESSAGE)? {
                    break n;
                }
                if conn.stream.read_buf(&mut conn.rbuf).await? == 0 {
                    return Err(BackendError::Protocol("server closed during catalog load".into()));
                }
            };
            let f = conn.rbuf.split_to(n);
            let body = &f[5..];
            match f[0] {
                btag::DATA_ROW => {
                    count += 1;
                    if count > MAX_COLUMNS {
                        failed.get_or_insert(ErrorFields::new("ERROR", "54000", "catalog too large to cache"));
                        continue;
                    }
                    parts.row(set, body);
                }
                btag::ROW_DESCRIPTION => set += 1,
                btag::ERROR => failed = Some(ErrorFields::decode(body)?),
                btag::READY_FOR_QUERY => {
                    conn.status = messages::ready_status(body)?;
                    return match failed {
                        Some(e) => Err(BackendError::Refused(e)),
                        None => Ok(Catalog::new(parts)),
                    };
                }
                _ => {}
            }
        }
    }
}

/// The result sets of the catalog query, as they arrive.
#[derive(Default)]
struct Parts {
    tables: HashMap<u32, (String, HashMap<i16, String>)>,
    views: HashMap<u32, Vec<(u32, i16)>>,
    defs: HashMap<u32, String>,
    functions: std::collections::HashSet<String>,
    parents: HashMap<u32, Vec<u32>>,
}

impl Parts {
    /// One DataRow of result set `set` (1-based, in the order of [`QUERY`]).
    fn row(&mut self, set: usize, body: &[u8]) {
        let num = |s: &str| s.parse::<u32>().ok();
        match set {
            1 => {
                let Some([oid, nsp, rel, att, name]) = text_fields::<5>(body) else { return };
                let (Some(oid), Ok(att)) = (num(oid), att.parse::<i16>()) else { return };
                let e = self.tables.entry(oid).or_insert_with(|| (format!("{nsp}.{rel}"), HashMap::new()));
                e.1.insert(att, name.to_owned());
            }
            2 => {
                let Some([view, rel, att]) = text_fields::<3>(body) else { return };
                if let (Some(v), Some(r), Ok(a)) = (num(view), num(rel), att.parse::<i16>()) {
                    self.views.entry(v).or_default().push((r, a));
                }
            }
            3 => {
                let Some([view, def]) = text_fields::<2>(body) else { return };
                if let Some(v) = num(view) {
                    self.defs.insert(v, def.to_owned());
                }
            }
            4 => {
                if let Some([name]) = text_fields::<1>(body) {
                    self.functions.insert(name.to_lowercase());
                }
            }
            5 => {
                let Some([child, parent]) = text_fields::<2>(body) else { return };
                if let (Some(c), Some(p)) = (num(child), num(parent)) {
                    self.parents.entry(c).or_default().push(p);
                }
            }
            _ => {}
        }
    }
}

/// The first `N` text fields of a DataRow (none may be NULL).
fn text_fields<const N: usize>(body: &[u8]) -> Option<[&str; N]> {
    let mut rest = body.get(2..)?;
    let mut out = [""; N];
    for slot in out.iter_mut() {
        let len = usize::try_from(i32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        *slot = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
        rest = &rest[4 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_decode_and_reject_null() {
        let mut b = vec![0, 2];
        for v in ["16384", "public"] {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        assert_eq!(text_fields::<2>(&b), Some(["16384", "public"]));
        let mut n = vec![0, 1];
        n.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(text_fields::<1>(&n), None);
    }

    #[test]
    fn knows_relations_by_name_system_schemas_and_names_found_missing() {
        let mut p = Parts::default();
        p.tables.insert(16_400, ("public.customers".into(), HashMap::new()));
        p.tables.insert(16_401, ("app.v_mail".into(), HashMap::new()));
        p.views.insert(16_401, vec![(16_400, 2)]);
        let c = Catalog::new(p);
        for o in ["public.customers", "*.customers", "customers", "app.v_mail", "*.v_mail", "pg_catalog.pg_class"] {
            assert!(c.knows(o), "{o}");
        }
        for o in ["app.customers", "*.v_new", "information_schema.tables_x"] {
            assert_eq!(c.knows(o), o.starts_with("information_schema."), "{o}");
        }
        c.note_missing("*.v_new");
        assert!(c.knows("*.v_new") && !c.knows("public.v_new"));
    }
}
