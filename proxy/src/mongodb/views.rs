//! MongoDB views as governance sees them: the views of each database (`listCollections`:
//! `viewOn` and pipeline) and the names of its collections, cached per route and database, so
//! that rules on a collection also reach the views over it. Loaded on the connection the
//! command would use, dropped after any command that can create, change or remove a view,
//! listed again before a governed command on a collection the listing lacks (once per name and
//! listing), and every [`MAX_AGE`].

use super::backend::MongoConn;
use bson::{doc, Bson, Document};
use dashmap::DashMap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A cached list of views is reloaded after this long.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Views over views are followed this deep; deeper chains are refused for governed roles.
pub const MAX_CHAIN: usize = 16;
/// More collections and views than this in one database are not cached (the load fails:
/// governed roles are refused rather than served unchecked).
const MAX_VIEWS: i32 = 100_000;

/// One view: the collection (or view) it reads and its pipeline.
#[derive(Debug, Clone)]
pub struct View {
    /// `viewOn`, in the view's database.
    pub on: String,
    /// The view's pipeline.
    pub pipeline: Vec<Bson>,
}

/// The views of one database, and the names of its other collections.
#[derive(Debug)]
pub struct ViewDefs {
    views: HashMap<String, View>,
    collections: HashSet<String>,
    /// Names commands used that this listing, fresh, did not have (collections about to be
    /// created, typos): they do not make it list again.
    missing: crate::missing::MissingNames,
    loaded: Instant,
}

impl ViewDefs {
    /// The view named `coll`, if it is one.
    pub fn get(&self, coll: &str) -> Option<&View> {
        self.views.get(coll)
    }

    /// Whether `coll` is a view or collection of this listing, a `system.` collection, or was
    /// already looked for in vain since it was made.
    pub fn knows(&self, coll: &str) -> bool {
        coll.starts_with("system.")
            || self.views.contains_key(coll)
            || self.collections.contains(coll)
            || self.missing.contains(coll)
    }

    /// Remember that this listing, fresh, does not have `coll`.
    pub fn note_missing(&self, coll: &str) {
        self.missing.note(coll);
    }

    /// Read a `listCollections` reply.
    pub fn from_reply(reply: &Document) -> Result<ViewDefs, String> {
        if !matches!(reply.get("ok"), Some(Bson::Double(f)) if *f == 1.0)
            && !matches!(reply.get("ok"), Some(Bson::Int32(1)))
        {
            return Err(reply.get_str("errmsg").unwrap_or("listCollections failed").to_owned());
        }
        let cursor = reply.get_document("cursor").map_err(|_| "listCollections reply without cursor".to_owned())?;
        if cursor.get_i64("id").unwrap_or(0) != 0 {
            return Err(format!("more than {MAX_VIEWS} collections and views"));
        }
        let (mut views, mut collections) = (HashMap::new(), HashSet::new());
        for d in cursor.get_array("firstBatch").map(Vec::as_slice).unwrap_or(&[]) {
            let Some(d) = d.as_document() else { continue };
            let Ok(name) = d.get_str("name") else { continue };
            let opts = d.get_document("options").ok();
            let view =
                d.get_str("type").map_or_else(|_| opts.is_some_and(|o| o.contains_key("viewOn")), |t| t == "view");
            match opts.filter(|_| view) {
                Some(opts) => {
                    let on = opts.get_str("viewOn").unwrap_or_default().to_owned();
                    let pipeline = opts.get_array("pipeline").cloned().unwrap_or_default();
                    views.insert(name.to_owned(), View { on, pipeline });
                }
                None => {
                    collections.insert(name.to_owned());
                }
            }
        }
        Ok(ViewDefs { views, collections, missing: Default::default(), loaded: Instant::now() })
    }

    /// The `listCollections` command that lists the collections and views of `db`.
    pub fn command(db: &str) -> Document {
        doc! { "listCollections": 1, "cursor": { "batchSize": MAX_VIEWS }, "$db": db }
    }

    /// Every namespace (`db.coll`) the view `coll` reads, through views over views: its
    /// `viewOn` chain and what the pipelines join or union. `None` when a chain is deeper than
    /// [`MAX_CHAIN`] or a pipeline nests sub-pipelines too deeply to follow.
    pub fn sources(&self, db: &str, coll: &str) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut todo = vec![(coll.to_owned(), 0usize)];
        while let Some((c, depth)) = todo.pop() {
            let Some(v) = self.get(&c) else { continue };
            if depth >= MAX_CHAIN {
                return None;
            }
            let mut next = vec![format!("{db}.{}", v.on)];
            next.extend(dgf_rules::mongodb::pipeline_namespaces(db, &v.pipeline)?);
            for ns in next {
                if out.contains(&ns) {
                    continue;
                }
                if let Some(inner) = ns.strip_prefix(db).and_then(|r| r.strip_prefix('.')) {
                    todo.push((inner.to_owned(), depth + 1));
                }
                out.push(ns);
            }
        }
        Some(out)
    }
}

/// Views per database of one route.
#[derive(Default)]
pub struct ViewCatalog {
    dbs: DashMap<String, Arc<ViewDefs>>,
}

impl ViewCatalog {
    /// The views of `db`, if loaded recently.
    pub fn get(&self, db: &str) -> Option<Arc<ViewDefs>> {
        self.dbs.get(db).map(|v| v.clone()).filter(|v| v.loaded.elapsed() <= MAX_AGE)
    }

    /// Load the views of `db` on `conn` (a connection with no command in flight).
    pub async fn load(&self, conn: &mut MongoConn, db: &str) -> Result<Arc<ViewDefs>, String> {
        let reply = conn.command(&ViewDefs::command(db)).await.map_err(|e| e.to_string())?;
        let defs = Arc::new(ViewDefs::from_reply(&reply)?);
        self.dbs.insert(db.to_owned(), defs.clone());
        Ok(defs)
    }

    /// Forget the views of `db` (a command may have created, changed or dropped one).
    pub fn invalidate(&self, db: &str) {
        self.dbs.remove(db);
    }
}

/// The databases whose views a command can create, change or remove (its own; for
/// `renameCollection`, both sides).
pub fn changed_dbs<'a>(name: &str, db: &'a str, cmd: &'a bson::RawDocument) -> Vec<&'a str> {
    match name {
        "create" | "collMod" | "drop" | "dropDatabase" | "applyOps" => vec![db],
        "renameCollection" => ["renameCollection", "to"]
            .iter()
            .filter_map(|k| cmd.get_str(k).ok())
            .filter_map(|ns| ns.split_once('.').map(|(d, _)| d))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> ViewDefs {
        let reply = doc! { "ok": 1.0, "cursor": { "id": 0i64, "firstBatch": [
            { "name": "v1", "type": "view", "options": { "viewOn": "users", "pipeline": [ { "$project": { "e": "$email" } } ] } },
            { "name": "v2", "type": "view", "options": { "viewOn": "v1", "pipeline": [
                { "$lookup": { "from": "payroll", "pipeline": [], "as": "p" } } ] } },
            { "name": "loop", "type": "view", "options": { "viewOn": "loop", "pipeline": [] } },
            { "name": "users", "type": "collection", "options": {} },
            { "name": "old", "options": { "viewOn": "users", "pipeline": [] } },
            { "name": "payroll" },
        ] } };
        ViewDefs::from_reply(&reply).unwrap()
    }

    #[test]
    fn sources_follow_chains_and_joins() {
        let d = defs();
        assert_eq!(d.sources("app", "v1").unwrap(), vec!["app.users"]);
        let mut s = d.sources("app", "v2").unwrap();
        s.sort();
        assert_eq!(s, vec!["app.payroll", "app.users", "app.v1"]);
        assert_eq!(d.sources("app", "users").unwrap(), Vec::<String>::new());
        assert_eq!(d.sources("app", "loop").unwrap(), vec!["app.loop"]);
    }

    #[test]
    fn listings_know_collections_views_and_names_found_missing() {
        let d = defs();
        for c in ["users", "payroll", "v1", "system.views"] {
            assert!(d.knows(c), "{c}");
        }
        // A listing without `type` (older servers): `viewOn` makes a view.
        assert!(d.get("old").is_some() && d.get("users").is_none() && d.get("payroll").is_none());
        assert!(!d.knows("v_new"));
        d.note_missing("v_new");
        assert!(d.knows("v_new") && !d.knows("v_other"));
    }

    #[test]
    fn failed_or_partial_listings_are_errors() {
        assert!(ViewDefs::from_reply(&doc! { "ok": 0.0, "errmsg": "no" }).is_err());
        let partial = doc! { "ok": 1.0, "cursor": { "id": 7i64, "firstBatch": [] } };
        assert!(ViewDefs::from_reply(&partial).is_err());
    }
}
