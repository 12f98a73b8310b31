//! End-to-end: governance on the MongoDB route with pymongo against secantusdb. The route and
//! label of issue 6 as written (only the ports differ), masking for an analyst vs clear values
//! for an admin (cursor batches, getMore, findAndModify, distinct, nested and array paths,
//! non-string values), a denied `drop` on a still-usable connection, a corpus of aggregation
//! and projection bypass attempts that must be refused or come back masked, and the audit
//! chain (one record per command, fingerprints without values, verifies).

mod common;
use common::mongo::{python, MongoServer};
use common::*;

/// The configuration block of issue 6, verbatim.
const ISSUE_CONFIG: &str = r#"[[routes]]
name = "docs"
protocol = "mongodb"
listen = "127.0.0.1:27018"
upstream = "mongodb://127.0.0.1:27017/?directConnection=true"
pool = { size = 4 }

[[labels]]
name = "email"
match = ["mongodb:app.users.email"]
"#;

fn config(port: u16, upstream: u16, audit: &str) -> String {
    let issue = ISSUE_CONFIG.replace("27018", &port.to_string()).replace("27017", &upstream.to_string());
    assert_eq!(issue.matches(&port.to_string()).count(), 1);
    format!(
        r#"
[admin]
listen = "{{admin}}"

[audit]
path = "{audit}"

[[users]]
name = "analyst"
password = "analyst-pw"
roles = ["analyst"]

[[users]]
name = "admin"
password = "admin-pw"
roles = ["admin"]

{issue}
[[labels]]
name = "phone"
match = ["mongodb:app.users.contacts.phone"]

[[rules]]
name = "mask email for analysts"
roles = ["analyst"]
action = "mask"
labels = ["email"]
with = "email"

[[rules]]
name = "hide phones"
roles = ["analyst"]
action = "mask"
labels = ["phone"]
with = "redact"

[[rules]]
name = "analysts never drop"
roles = ["analyst"]
action = "deny"
statements = ["drop", "dropDatabase"]

[[rules]]
name = "admins keep out of payroll"
roles = ["admin"]
action = "deny"
tables = ["mongodb:app.payroll"]
"#
    )
}

#[test]
fn issue_config_starts_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dgf.toml");
    std::fs::write(&path, ISSUE_CONFIG).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dgf"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("dgf check");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("email"), "{text}");
}

const SCRIPT: &str = r#"
import pymongo, json
from pymongo.errors import OperationFailure
SECRETS = ["s3cr3t", "555-01", "555-02", "12345"]
def leaks(x):
    s = json.dumps(x, default=str).lower()
    return [k for k in SECRETS if k in s]
ad = pymongo.MongoClient("mongodb://admin:admin-pw@127.0.0.1:PORT/?directConnection=true")
an = pymongo.MongoClient("mongodb://analyst:analyst-pw@127.0.0.1:PORT/?directConnection=true")
A, U = ad.app, an.app
A.users.drop(); A.orders.drop()
A.users.insert_many([
  {"_id": 1, "name": "alice", "email": "s3cr3t.alice@example.com", "age": 30,
   "contacts": [{"kind": "home", "phone": "555-0101"}, {"kind": "work", "phone": "555-0102"}]},
  {"_id": 2, "name": "bob", "email": "s3cr3t.bob@example.org", "age": 40, "contacts": [{"kind": "home", "phone": "555-0201"}]},
  {"_id": 3, "name": "carol", "email": 12345, "age": 50, "contacts": []},
])
A.orders.insert_many([{"_id": 10, "user": 1, "item": "book"}, {"_id": 11, "user": 2, "item": "pen"}])

# admin sees clear values
docs = list(A.users.find({}).sort("_id", 1))
assert docs[0]["email"] == "s3cr3t.alice@example.com" and docs[0]["contacts"][1]["phone"] == "555-0102", docs
# analyst: masked strings, nested arrays, non-string -> null, getMore batches
for bs in [0, 1]:
    cur = U.users.find({}).sort("_id", 1)
    if bs: cur = cur.batch_size(1)
    got = list(cur)
    assert len(got) == 3 and not leaks(got), got
    assert got[0]["email"] == "s***@example.com", got
    assert got[0]["contacts"][0] == {"kind": "home", "phone": "[REDACTED]"}, got
    assert got[2]["email"] is None, got
    assert got[1]["name"] == "bob"
v = U.users.find_one_and_update({"_id": 1}, {"$set": {"age": 31}}, return_document=True)
assert v["email"] == "s***@example.com" and v["age"] == 31, v
assert not leaks(U.users.distinct("email"))
# change streams: events carry masked fullDocument / updatedFields (if the server has them)
try:
    with U.users.watch(full_document="updateLookup", max_await_time_ms=500) as cs:
        A.users.insert_one({"_id": 9, "email": "s3cr3t.new@example.com", "contacts": [{"phone": "555-0999"}]})
        A.users.update_one({"_id": 9}, {"$set": {"email": "s3cr3t.upd@example.com"}})
        evs = [cs.try_next() or cs.try_next() for _ in range(2)]
    evs = [e for e in evs if e]
    assert evs and not leaks(evs), evs
    print("CHANGE STREAM OK", len(evs))
except OperationFailure as e:
    print("CHANGE STREAM unsupported by the server:", e)
A.users.delete_one({"_id": 9})
print("MASKING OK")

# denied drop, connection still usable
try:
    U.users.drop(); raise SystemExit("drop was not refused")
except OperationFailure as e:
    assert e.code == 13 and "analysts never drop" in str(e), e
assert U.users.count_documents({}) == 3
assert A.users.count_documents({}) == 3
print("DENY OK")

P = lambda *st: (lambda: list(U.users.aggregate(list(st))))
O = lambda *st: (lambda: list(U.orders.aggregate(list(st))))
fn = {"$function": {"body": "function(e){return e}", "args": ["$email"], "lang": "js"}}
corpus = [
  ("rename", P({"$project": {"e": "$email"}})),
  ("addFields rename", P({"$addFields": {"e": "$email", "p": "$contacts.phone"}})),
  ("set concat", P({"$set": {"x": {"$concat": ["$email", "!"]}}})),
  ("toUpper", P({"$project": {"x": {"$toUpper": "$email"}}})),
  ("substr", P({"$project": {"x": {"$substr": ["$email", 0, 6]}}})),
  ("substrCP", P({"$project": {"x": {"$substrCP": ["$email", 0, 6]}}})),
  ("arrayElemAt", P({"$project": {"x": {"$arrayElemAt": ["$contacts.phone", 0]}}})),
  ("ifNull", P({"$project": {"x": {"$ifNull": ["$email", "none"]}}})),
  ("getField", P({"$project": {"x": {"$getField": "email"}}})),
  ("objectToArray ROOT", P({"$project": {"x": {"$objectToArray": "$$ROOT"}}})),
  ("facet rename", P({"$facet": {"f": [{"$project": {"e": "$email"}}]}})),
  ("facet concat", P({"$facet": {"f": [{"$project": {"e": {"$concat": ["$email"]}}}]}})),
  ("replaceRoot literal doc", P({"$replaceRoot": {"newRoot": {"e": "$email", "c": "$contacts"}}})),
  ("replaceRoot ROOT", P({"$replaceRoot": {"newRoot": "$$ROOT"}})),
  ("replaceWith mergeObjects", P({"$replaceWith": {"$mergeObjects": ["$$ROOT", {"z": 1}]}})),
  ("group by email", P({"$group": {"_id": "$email"}})),
  ("group push", P({"$group": {"_id": None, "all": {"$push": "$email"}}})),
  ("group push ROOT", P({"$group": {"_id": None, "all": {"$push": "$$ROOT"}}})),
  ("group max", P({"$group": {"_id": None, "m": {"$max": "$email"}}})),
  ("group addToSet toLower", P({"$group": {"_id": None, "s": {"$addToSet": {"$toLower": "$email"}}}})),
  ("sortByCount", P({"$sortByCount": "$email"})),
  ("bucketAuto", P({"$bucketAuto": {"groupBy": "$email", "buckets": 2}})),
  ("unwind + rename phone", P({"$unwind": "$contacts"}, {"$project": {"p": "$contacts.phone"}})),
  ("lookup join", O({"$lookup": {"from": "users", "localField": "user", "foreignField": "_id", "as": "u"}})),
  ("lookup pipeline rename", O({"$lookup": {"from": "users", "pipeline": [{"$project": {"e": "$email"}}], "as": "u"}})),
  ("lookup let", P({"$lookup": {"from": "orders", "let": {"e": "$email"}, "pipeline": [{"$match": {}}], "as": "o"}})),
  ("unionWith rename", O({"$unionWith": {"coll": "users", "pipeline": [{"$project": {"e": "$email"}}]}})),
  ("graphLookup", O({"$graphLookup": {"from": "users", "startWith": "$user", "connectFromField": "_id", "connectToField": "_id", "as": "g"}})),
  ("out", P({"$out": "stolen"})),
  ("merge", P({"$merge": {"into": "stolen2"}})),
  ("facet out", P({"$facet": {"a": [{"$match": {}}]}}, {"$out": "stolen3"})),
  ("where", lambda: list(U.users.find({"$where": "this.email.length > 0"}))),
  ("function", P({"$project": {"x": fn}})),
  ("expr function", P({"$match": {"$expr": fn}})),
  ("accumulator", P({"$group": {"_id": None, "x": {"$accumulator": {"init": "function(){return 0}", "accumulate": "function(s,e){return e}", "accumulateArgs": ["$email"], "merge": "function(a,b){return a}", "lang": "js"}}}})),
  ("mapReduce", lambda: U.command("mapReduce", "users", map="function(){emit(this.email,1)}", reduce="function(k,v){return 1}", out={"inline": 1})),
  ("find projection rename", lambda: list(U.users.find({}, {"e": "$email"}))),
  ("find positional", lambda: list(U.users.find({"contacts.kind": "home"}, {"contacts.$": 1}))),
  ("find elemMatch", lambda: list(U.users.find({}, {"contacts": {"$elemMatch": {"kind": "home"}}}))),
  ("find slice", lambda: list(U.users.find({}, {"contacts": {"$slice": 1}, "email": 1}))),
  ("distinct email", lambda: U.users.distinct("email")),
  ("distinct contacts", lambda: U.users.distinct("contacts")),
  ("distinct phone", lambda: U.users.distinct("contacts.phone")),
  ("findAndModify projection", lambda: U.users.find_one_and_update({"_id": 2}, {"$set": {"t": 1}}, projection={"e": "$email"})),
  ("view on masked", lambda: U.command("create", "v_users", viewOn="users", pipeline=[{"$project": {"e": "$email"}}])),
  ("update pipeline copy", lambda: U.users.update_many({}, [{"$set": {"copy": "$email"}}]).raw_result),
  ("rename field", lambda: U.users.update_many({}, {"$rename": {"email": "copy2"}}).raw_result),
  ("literal is not a reference", P({"$project": {"e": {"$literal": "$email"}}})),
]
denied, masked, server_err = [], [], []
for name, f in corpus:
    try:
        r = f()
    except OperationFailure as e:
        if e.code == 13 and "dgf:" in str(e) and "rule" in str(e):
            denied.append(name); continue
        server_err.append("%s: %s" % (name, e)); continue
    bad = leaks(r)
    assert not bad, "LEAK %s: %s -> %r" % (name, bad, r)
    masked.append(name)
print("DENIED", denied)
print("MASKED", masked)
print("SERVER", server_err)
# nothing was copied anywhere, the data is intact
after = list(U.users.find({}))
assert not leaks(after), after
assert A.users.count_documents({"copy": {"$exists": True}}) == 0, list(A.users.find({}))
assert A.users.count_documents({"copy2": {"$exists": True}}) == 0, list(A.users.find({}))
names = A.list_collection_names()
assert "stolen" not in names and "stolen2" not in names and "v_users" not in names, names
assert A.users.find_one({"_id": 1})["email"] == "s3cr3t.alice@example.com"
print("CORPUS", len(corpus), "denied", len(denied), "masked", len(masked), "server errors", len(server_err))
"#;

#[test]
fn masking_denials_bypass_corpus_and_audit() {
    let Stack { server: _server, port, dgf, audit, _dir, .. } = stack();
    let out = python(&SCRIPT.replace("PORT", &port.to_string()), &[]).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    println!("{out}");
    assert!(out.contains("MASKING OK") && out.contains("DENY OK"), "{out}");
    let line = out.lines().find(|l| l.starts_with("CORPUS")).expect("corpus line");
    let n: Vec<usize> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert!(n[0] >= 30, "{line}");
    assert!(n[1] >= 20, "at least the computing tricks are refused: {out}");
    assert_eq!(n[1] + n[2] + n[3], n[0]);
    for must in [
        "\"update pipeline copy\"",
        "\"rename field\"",
        "\"view on masked\"",
        "\"out\"",
        "\"merge\"",
        "\"where\"",
        "\"function\"",
        "\"mapReduce\"",
        "\"toUpper\"",
        "\"lookup let\"",
    ] {
        let denied = out.lines().find(|l| l.starts_with("DENIED")).unwrap();
        assert!(denied.contains(&must.replace('"', "'")), "{must} not refused: {out}");
    }

    // Audit: one record per command, values stripped, chain verifies.
    drop(dgf);
    let text = std::fs::read_to_string(&audit).expect("audit file");
    assert!(!text.to_lowercase().contains("s3cr3t"), "audit carries values");
    let recs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(recs.len() > 60, "{}", recs.len());
    assert!(recs.iter().all(|r| r["protocol"] == "mongodb"));
    let drop_rec = recs
        .iter()
        .find(|r| r["user"] == "analyst" && r["fingerprint"].as_str().unwrap_or("").starts_with("{drop:"))
        .expect("audit of the denied drop");
    assert_eq!(drop_rec["decision"], "deny");
    assert_eq!(drop_rec["kind"], "ddl");
    assert!(drop_rec["rules"].to_string().contains("analysts never drop"), "{drop_rec}");
    let find = recs
        .iter()
        .find(|r| r["user"] == "analyst" && r["fingerprint"].as_str().unwrap_or("").starts_with("{find:\"users\""))
        .expect("audit of the analyst find");
    assert_eq!(find["decision"], "mask", "{find}");
    assert_eq!(find["rows"], 3, "{find}");
    assert_eq!(find["objects"][0], "mongodb:app.users");
    assert!(recs.iter().any(|r| r["user"] == "admin" && r["decision"] == "allow" && r["rows"] == 3));
    let report = dgf_rules::audit::verify(std::slice::from_ref(&audit)).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_error);
}

const RELOAD_SCRIPT: &str = r#"
import os, urllib.request, pymongo
from pymongo.errors import OperationFailure
import time
ad = pymongo.MongoClient("mongodb://admin:admin-pw@127.0.0.1:PORT/?directConnection=true")
direct = pymongo.MongoClient("mongodb://127.0.0.1:UPSTREAM/?directConnection=true", maxPoolSize=1)
def open_cursors():
    return direct.admin.command("serverStatus")["metrics"]["cursor"]["open"]["total"]
U = ad.app.users_reload
U.drop()
U.insert_many([{"_id": i, "email": "clear%d@s3cr3t.com" % i} for i in range(6)])
base = open_cursors()
cur = U.find({}, batch_size=2).sort("_id", 1)
first = [next(cur), next(cur)]
assert all("s3cr3t" in d["email"] for d in first), first
with open(os.environ["CFG"], "w") as f:
    f.write(os.environ["NEWCFG"])
req = urllib.request.Request("http://%s/reload" % os.environ["ADMIN"], method="POST")
assert urllib.request.urlopen(req).status == 200
after = []
try:
    for d in cur:
        after.append(d)
    outcome = "ITERATED"
except OperationFailure as e:
    outcome = "ERROR %s" % e.code
leaked = [d for d in after if "s3cr3t" in d["email"]]
print("AFTER", outcome, len(after), "LEAKED", len(leaked))
# dgf killed the ended cursor on the server; it does not wait there for a timeout.
for _ in range(50):
    if open_cursors() == base:
        break
    time.sleep(0.1)
print("SERVER CURSORS", open_cursors() - base)
again = list(U.find({}).sort("_id", 1))
print("AGAIN", len(again), "LEAKED", len([d for d in again if "s3cr3t" in d["email"]]))
U.drop()
"#;

/// A private MongoDB-wire server and dgf in front of it with [`config`], auditing to a file
/// in a temporary directory.
struct Stack {
    server: MongoServer,
    port: u16,
    cfg: String,
    dgf: Dgf,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn stack() -> Stack {
    let server = MongoServer::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let cfg = config(port, server.port, &audit.display().to_string());
    let dgf = Dgf::start(&cfg, &[port]);
    Stack { server, port, cfg, dgf, audit, _dir: dir }
}

/// A cursor opened before a reload must not keep serving batches under the old mask plan: the
/// reload below starts masking emails for admins while an admin iterates a cursor.
#[test]
fn reload_ends_cursors_opened_under_the_old_policy() {
    let Stack { server, port, cfg, dgf, _dir, .. } = stack();
    let tightened = format!(
        "{cfg}\n[[labels]]\nname = \"reload email\"\nmatch = [\"mongodb:app.users_reload.email\"]\n\n\
         [[rules]]\nname = \"mask email for admins too\"\nroles = [\"admin\"]\naction = \"mask\"\nlabels = [\"reload email\"]\nwith = \"redact\"\n"
    )
    .replace("{admin}", &dgf.admin.to_string());
    let env = [("CFG", dgf.config.display().to_string()), ("NEWCFG", tightened), ("ADMIN", dgf.admin.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let script = RELOAD_SCRIPT.replace("UPSTREAM", &server.port.to_string()).replace("PORT", &port.to_string());
    let out = python(&script, &env).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    // The open cursor ends with CursorNotFound (what drivers resume change streams after);
    // the query run again gets the new policy's masking.
    assert!(out.contains("AFTER ERROR 43 0 LEAKED 0\nSERVER CURSORS 0\nAGAIN 6 LEAKED 0"), "{out}");
}

const NOOP_RELOAD_SCRIPT: &str = r#"
import os, urllib.request, pymongo
from pymongo.errors import OperationFailure
an = pymongo.MongoClient("mongodb://analyst:analyst-pw@127.0.0.1:PORT/?directConnection=true")
direct = pymongo.MongoClient("mongodb://127.0.0.1:UPSTREAM/?directConnection=true")
direct.app.users.drop()
direct.app.users.insert_many([{"_id": i, "email": "clear%d@s3cr3t.com" % i} for i in range(12)])
def reload(text):
    with open(os.environ["CFG"], "w") as f:
        f.write(text)
    req = urllib.request.Request("http://%s/reload" % os.environ["ADMIN"], method="POST")
    assert urllib.request.urlopen(req).status == 200
def take(cur, n):
    try:
        return [next(cur) for _ in range(n)]
    except OperationFailure as e:
        return "ERROR %s" % e.code
def more(n):
    r = take(cur, n)
    if isinstance(r, str):
        print("ENDED", r)
        raise SystemExit(0)
    return r
cur = an.app.users.find({}, batch_size=2).sort("_id", 1)
got = more(2)
for _ in range(5):
    reload(os.environ["SAME"])
got += more(2)
reload(os.environ["UNRELATED"])
got += more(2)
print("KEPT", len(got), "LEAKED", len([d for d in got if "clear" in d["email"]]))
reload(os.environ["AFFECTING"])
print("AFTER", take(cur, 6))
"#;

/// A reload that changes nothing for a user (the same file, or a rule for another role) keeps
/// that user's open cursors, with their mask plan; a reload that changes the user's rules still
/// ends them with CursorNotFound (43). Before, every reload ended every masked user's cursors.
#[test]
fn reload_keeps_cursors_whose_rules_did_not_change() {
    let Stack { server, port, cfg, dgf, _dir, .. } = stack();
    let cfg = cfg.replace("{admin}", &dgf.admin.to_string());
    let unrelated = format!(
        "{cfg}\n[[rules]]\nname = \"admins never drop\"\nroles = [\"admin\"]\naction = \"deny\"\nstatements = [\"drop\"]\n"
    );
    let affecting = format!(
        "{cfg}\n[[rules]]\nname = \"analysts read 100\"\nroles = [\"analyst\"]\naction = \"limit\"\nstatements = [\"read\"]\nmax_rows = 100\n"
    );
    let env = [
        ("CFG", dgf.config.display().to_string()),
        ("ADMIN", dgf.admin.to_string()),
        ("SAME", cfg.clone()),
        ("UNRELATED", unrelated),
        ("AFFECTING", affecting),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let script = NOOP_RELOAD_SCRIPT.replace("UPSTREAM", &server.port.to_string()).replace("PORT", &port.to_string());
    let out = python(&script, &env).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    assert!(out.contains("KEPT 6 LEAKED 0\nAFTER ERROR 43"), "{out}");
}

const JOIN_SCRIPT: &str = r#"
import pymongo
from pymongo.errors import OperationFailure
ad = pymongo.MongoClient("mongodb://admin:admin-pw@127.0.0.1:PORT/?directConnection=true")
direct = pymongo.MongoClient("mongodb://127.0.0.1:UPSTREAM/?directConnection=true")
direct.app.payroll.drop()
direct.app.payroll.insert_one({"_id": 1, "salary": 987654})
U = ad.app.users_join
U.drop()
U.insert_many([{"_id": i, "n": i} for i in range(3)])
def attempt(label, f):
    try:
        out = f()
        print(label, "RAN", "987654" in repr(out))
    except OperationFailure as e:
        # The message names the collection the rule matched, not the aggregated one.
        print(label, "DENIED", e.code, "on mongodb:app.payroll is not allowed" in str(e))
attempt("find", lambda: list(ad.app.payroll.find()))
attempt("lookup-doc", lambda: list(U.aggregate([{"$lookup": {"from": {"db": "app", "coll": "payroll"}, "pipeline": [], "as": "j"}}])))
attempt("lookup", lambda: list(U.aggregate([{"$lookup": {"from": "payroll", "localField": "_id", "foreignField": "_id", "as": "j"}}])))
attempt("lookup-pipeline", lambda: list(U.aggregate([{"$lookup": {"from": "payroll", "pipeline": [], "as": "j"}}])))
attempt("unionWith", lambda: list(U.aggregate([{"$unionWith": "payroll"}])))
attempt("facet", lambda: list(U.aggregate([{"$facet": {"f": [{"$lookup": {"from": "payroll", "pipeline": [], "as": "j"}}]}}])))
attempt("out", lambda: list(U.aggregate([{"$out": "payroll"}])))
attempt("view", lambda: ad.app.command("create", "v_pay", viewOn="payroll", pipeline=[]))
attempt("rename", lambda: ad.admin.command("renameCollection", "app.payroll", to="app.pay2"))
attempt("plain", lambda: list(U.aggregate([{"$match": {}}])))
print("PAYROLL", direct.app.payroll.count_documents({}))
U.drop()
direct.app.payroll.drop()
"#;

/// A deny rule on a collection also covers the collections an aggregation joins, unions or
/// writes (`$lookup`, `$graphLookup`, `$unionWith`, `$out`, `$merge`, in `$facet` and
/// sub-pipelines), a view's source and both sides of a rename: before, an admin kept out of
/// `payroll` read it through `$lookup`. The refusal names the collection the rule matched
/// (`payroll`), also for `{from: {db, coll}}`, not the aggregated one.
#[test]
fn collection_rules_cover_joined_collections() {
    let Stack { server, port, dgf, _dir, .. } = stack();
    let script = JOIN_SCRIPT.replace("UPSTREAM", &server.port.to_string()).replace("PORT", &port.to_string());
    let out = python(&script, &[]).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    for label in ["find", "lookup", "lookup-doc", "lookup-pipeline", "unionWith", "facet", "out", "view", "rename"] {
        assert!(out.contains(&format!("{label} DENIED 13 True")), "{label} not refused: {out}");
    }
    assert!(out.contains("plain RAN False") && out.contains("PAYROLL 1"), "{out}");
}

const VIEWS_SCRIPT: &str = r#"
import pymongo
from pymongo.errors import OperationFailure
an = pymongo.MongoClient("mongodb://analyst:analyst-pw@127.0.0.1:PORT/?directConnection=true")
ad = pymongo.MongoClient("mongodb://admin:admin-pw@127.0.0.1:PORT/?directConnection=true")
direct = pymongo.MongoClient("mongodb://127.0.0.1:UPSTREAM/?directConnection=true")
D = direct.app
for c in ["users", "payroll", "teams", "v_plain", "v_contacts", "v_nested", "v_names", "v_pay", "v_join"]:
    D.drop_collection(c)
D.users.insert_many([{"_id": 1, "n": "alice", "email": "s3cr3t.alice@example.com"}])
D.payroll.insert_one({"_id": 1, "salary": 987654})
D.teams.insert_one({"_id": 1, "t": "core"})
# Views made by the owner, behind dgf's back, before any client connects.
D.command("create", "v_plain", viewOn="users", pipeline=[])
D.command("create", "v_contacts", viewOn="users", pipeline=[{"$project": {"contact": "$email", "n": 1}}])
D.command("create", "v_nested", viewOn="v_contacts", pipeline=[{"$match": {}}])
D.command("create", "v_names", viewOn="users", pipeline=[{"$project": {"n": 1}}])
D.command("create", "v_pay", viewOn="payroll", pipeline=[])
D.command("create", "v_join", viewOn="teams", pipeline=[{"$lookup": {"from": "payroll", "pipeline": [], "as": "p"}}])
def attempt(label, f):
    try:
        out = f()
        print(label, "RAN", "s3cr3t" in repr(out) or "987654" in repr(out), repr(out))
    except OperationFailure as e:
        print(label, "DENIED", e.code, repr(str(e)))
A = an.app
attempt("an-plain", lambda: list(A.v_plain.find()))
attempt("an-contacts", lambda: list(A.v_contacts.find()))
attempt("an-contacts-agg", lambda: list(A.v_contacts.aggregate([{"$project": {"c": "$contact"}}])))
attempt("an-nested", lambda: list(A.v_nested.find({}, {"contact": 1})))
attempt("an-names", lambda: list(A.v_names.find()))
attempt("an-lookup-view", lambda: list(A.teams.aggregate([{"$lookup": {"from": "v_contacts", "pipeline": [], "as": "j"}}])))
M = ad.app
attempt("ad-pay", lambda: list(M.v_pay.find()))
attempt("ad-join", lambda: list(M.v_join.find()))
attempt("ad-contacts", lambda: list(M.v_contacts.find()))
# A view made behind dgf's back after dgf listed the views is seen on the first command on it.
D.command("create", "v_late", viewOn="users", pipeline=[{"$project": {"contact": "$email", "n": 1}}])
attempt("an-late", lambda: list(A.v_late.find()))
# A view created through dgf (by a role that may) is seen at once: the cached list is dropped.
A.command("create", "v_pay2", viewOn="payroll", pipeline=[])
attempt("ad-pay2", lambda: list(M.v_pay2.find()))
for c in ["users", "payroll", "teams", "v_plain", "v_contacts", "v_nested", "v_names", "v_pay", "v_join", "v_pay2", "v_late"]:
    D.drop_collection(c)
"#;

/// Rules on a collection reach the views over it, made before dgf saw them: masks follow the
/// view's pipeline (a `$project` that renames `email` is masked under its new name), deny rules
/// cover every collection a view reads. Before, an analyst read clear emails through a view
/// the owner had made, and an admin kept out of `payroll` read it through `v_pay`.
#[test]
fn rules_reach_views_over_governed_collections() {
    let Stack { server, port, dgf, _dir, .. } = stack();
    let script = VIEWS_SCRIPT.replace("UPSTREAM", &server.port.to_string()).replace("PORT", &port.to_string());
    let out = python(&script, &[]).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    for label in ["an-plain", "an-contacts", "an-contacts-agg", "an-nested", "an-lookup-view", "an-late"] {
        assert!(out.contains(&format!("{label} RAN False")), "{label} leaked or failed: {out}");
    }
    assert!(out.contains("an-contacts RAN False [{'_id': 1, 'n': 'alice', 'contact': 's"), "masked: {out}");
    assert!(out.contains("an-late RAN False [{'_id': 1, 'n': 'alice', 'contact': 's"), "masked: {out}");
    assert!(out.contains("an-names RAN False [{'_id': 1, 'n': 'alice'}]"), "{out}");
    for label in ["ad-pay", "ad-join", "ad-pay2"] {
        assert!(out.contains(&format!("{label} DENIED 13")) && out.contains("payroll"), "{label} not refused: {out}");
    }
    assert!(out.contains("ad-contacts RAN True"), "admins read views in the clear: {out}");
}

/// Python prelude of the bypass tests below: the tester's data, written directly upstream, an
/// admin and an analyst through dgf, and `attempt(label, f)` printing `label RAN leaked repr` or
/// `label DENIED code leaked message` (leaked: a clear email, phone or salary is in it).
const BYPASS_PRELUDE: &str = r#"
import pymongo
from pymongo.errors import OperationFailure
ad = pymongo.MongoClient("mongodb://admin:admin-pw@127.0.0.1:PORT/?directConnection=true")
an = pymongo.MongoClient("mongodb://analyst:analyst-pw@127.0.0.1:PORT/?directConnection=true")
direct = pymongo.MongoClient("mongodb://127.0.0.1:UPSTREAM/?directConnection=true")
D = direct.app
for c in ["users", "orders", "payroll"]:
    D.drop_collection(c)
D.users.insert_one({"_id": 1, "email": "s3cr3t.alice@example.com", "contacts": [{"phone": "555-0101"}, {"phone": "555-0102"}]})
D.orders.insert_one({"_id": 10, "user": 1})
D.payroll.insert_one({"_id": 1, "salary": 987654})
def leaked(x):
    s = repr(x)
    return any(k in s for k in ["s3cr3t", "555-01", "987654"])
def attempt(label, f):
    try:
        out = f()
        print(label, "RAN", leaked(out), repr(out)[:400])
    except OperationFailure as e:
        print(label, "DENIED", e.code, leaked(str(e)), repr(str(e))[:400])
"#;

fn run_bypass(script: &str) -> (String, Stack) {
    let st = stack();
    let full = format!("{BYPASS_PRELUDE}{script}")
        .replace("UPSTREAM", &st.server.port.to_string())
        .replace("PORT", &st.port.to_string());
    let out = python(&full, &[]).unwrap_or_else(|e| panic!("{e}\n{}", st.dgf.logs()));
    println!("{out}");
    (out, st)
}

/// The audit records once `done` holds for them (records are written in the background; dgf
/// is killed, not stopped, at the end of a test), or after 10 s.
fn audit_records(st: &Stack, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&st.audit).unwrap_or_default();
        let recs: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if done(&recs) || std::time::Instant::now() > deadline {
            return recs;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A BSON document of string elements, in order, duplicates allowed (no driver sends those).
fn raw_strings(elems: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in elems {
        body.push(0x02);
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(&(v.len() as i32 + 1).to_le_bytes());
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    let mut out = (body.len() as i32 + 5).to_le_bytes().to_vec();
    out.extend(body);
    out.push(0);
    out
}

/// A command whose command field appears twice (`{find: "orders", find: "users"}`) was checked
/// against the first value while the server ran the last: the analyst read clear emails, the
/// admin read `payroll`. It is refused for every role with BadValue (code 2), audited, and the
/// connection stays usable.
#[test]
fn duplicate_command_fields_are_refused() {
    let (_, st) = run_bypass("print('SEEDED')");
    let port = st.port;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use mongodb::bson::{doc, Document, RawDocumentBuf};
        use mongodb::error::ErrorKind;
        for (user, pw, second) in [("analyst", "analyst-pw", "users"), ("admin", "admin-pw", "payroll")] {
            let uri = format!("mongodb://{user}:{pw}@127.0.0.1:{port}/?directConnection=true");
            let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
            let db = client.database("app");
            let raw = RawDocumentBuf::from_bytes(raw_strings(&[("find", "orders"), ("find", second)])).unwrap();
            let r = db.run_raw_command(raw).await;
            let err = match r {
                Ok(d) => panic!("{user}: a duplicated find ran: {d}"),
                Err(e) => e,
            };
            match *err.kind {
                ErrorKind::Command(ref c) => {
                    assert_eq!(c.code, 2, "{user}: {c:?}");
                    assert!(c.message.contains("'find'") && c.message.contains("more than once"), "{c:?}");
                }
                ref other => panic!("{user}: {other:?}"),
            }
            // The connection stays usable, and governed.
            let got = db.collection::<Document>("users").find_one(doc! {}).await.expect("find after the refusal");
            let email = got.expect("a user").get_str("email").unwrap_or("").to_owned();
            assert_eq!(email.contains("s3cr3t"), user == "admin", "{user}: {email}");
        }
    });
    let refusal = |r: &&serde_json::Value| r["error"] == "2" && r["decision"] == "deny";
    let recs = audit_records(&st, |recs| recs.iter().filter(refusal).count() >= 2);
    let refused: Vec<_> = recs.iter().filter(refusal).collect();
    assert_eq!(refused.len(), 2, "{recs:?}");
    assert!(refused.iter().any(|r| r["user"] == "analyst") && refused.iter().any(|r| r["user"] == "admin"));
}

/// The profiler records every client's commands, literals included (all reach the server as
/// the route's user): a masked role may neither turn it on nor read `system.profile`.
#[test]
fn profiler_is_refused_for_masked_roles() {
    let (out, _st) = run_bypass(
        r#"
attempt("profile-on", lambda: an.app.command("profile", 2))
D.command("profile", 2)
ad.app.users.find_one({"email": "s3cr3t.alice@example.com"})
attempt("profile-find", lambda: list(an.app["system.profile"].find()))
attempt("profile-agg", lambda: list(an.app["system.profile"].aggregate([])))
attempt("profile-union", lambda: list(an.app.orders.aggregate([{"$unionWith": "system.profile"}])))
attempt("profile-level", lambda: an.app.command("profile", -1))
attempt("admin-profile-find", lambda: list(ad.app["system.profile"].find()))
D.command("profile", 0)
"#,
    );
    for label in ["profile-on", "profile-find", "profile-agg", "profile-union"] {
        assert!(out.contains(&format!("{label} DENIED 13 False")), "{label} not refused: {out}");
    }
    assert!(out.contains("profile-level RAN False"), "{out}");
    assert!(out.contains("admin-profile-find RAN True"), "the profile holds the literals: {out}");
}

/// `explain` runs its command's query (`executionStats.nReturned` answers a filter over a
/// denied collection): it is decided and audited as the command it wraps.
#[test]
fn explain_is_governed_as_its_command() {
    let (out, st) = run_bypass(
        r#"
ex = lambda db, c: db.command("explain", c, verbosity="executionStats")
attempt("explain-find", lambda: ex(ad.app, {"find": "payroll", "filter": {"salary": {"$gte": 900000}}}))
attempt("explain-union", lambda: ex(ad.app, {"aggregate": "users", "pipeline": [{"$unionWith": "payroll"}], "cursor": {}}))
attempt("explain-users", lambda: ex(ad.app, {"find": "users", "filter": {}}))
attempt("an-explain-toint", lambda: ex(an.app, {"find": "users", "filter": {"$expr": {"$eq": [{"$toInt": "$email"}, 1]}}}))
attempt("an-explain-upper", lambda: ex(an.app, {"aggregate": "users", "pipeline": [{"$project": {"x": {"$toUpper": "$email"}}}], "cursor": {}}))
"#,
    );
    for label in ["explain-find", "explain-union", "an-explain-toint", "an-explain-upper"] {
        assert!(out.contains(&format!("{label} DENIED 13 False")), "{label} not refused: {out}");
    }
    assert!(out.contains("explain-users RAN"), "{out}");
    let explain = |r: &serde_json::Value| {
        r["user"] == "admin" && r["fingerprint"].as_str().unwrap_or("").starts_with("{explain:{find:\"payroll\"")
    };
    let recs = audit_records(&st, |recs| recs.iter().any(explain));
    let rec = recs.iter().find(|r| explain(r)).unwrap_or_else(|| panic!("no audit of the explain: {recs:?}"));
    assert_eq!(rec["decision"], "deny", "{rec}");
    assert_eq!(rec["objects"], serde_json::json!(["mongodb:app.payroll"]), "{rec}");
}

/// Array positions in a path (`contacts.0.phone`) are masked like the labelled path.
#[test]
fn array_positions_stay_masked() {
    let (out, _st) = run_bypass(
        r#"
U = an.app.users
attempt("distinct-0", lambda: U.distinct("contacts.0.phone"))
attempt("distinct-1-phone", lambda: U.distinct("contacts.1.phone"))
attempt("distinct-1", lambda: U.distinct("contacts.1"))
attempt("projection-0", lambda: list(U.find({}, {"contacts.0.phone": 1})))
attempt("admin-distinct-0", lambda: ad.app.users.distinct("contacts.0.phone"))
"#,
    );
    for label in ["distinct-0", "distinct-1-phone", "distinct-1", "projection-0"] {
        assert!(out.contains(&format!("{label} RAN False")), "{label} leaked or failed: {out}");
    }
    assert!(out.contains("admin-distinct-0 RAN True"), "{out}");
}

/// Operator expressions over masked fields in `$expr` make the server quote the clear value in
/// its error ("Failed to parse number '...'"): refused in every filter, as in `$project`.
#[test]
fn expr_over_masked_fields_is_refused_in_filters() {
    let (out, _st) = run_bypass(
        r#"
U = an.app.users
q = {"$expr": {"$eq": [{"$toInt": "$email"}, 1]}}
attempt("find", lambda: list(U.find(q)))
attempt("find-or", lambda: list(U.find({"$or": [{"_id": 5}, q]})))
attempt("match", lambda: list(U.aggregate([{"$match": q}])))
attempt("count", lambda: an.app.command("count", "users", query=q))
attempt("distinct", lambda: U.distinct("_id", q))
attempt("update", lambda: U.update_one(q, {"$set": {"x": 1}}).raw_result)
attempt("delete", lambda: U.delete_one(q).raw_result)
attempt("findAndModify", lambda: U.find_one_and_update(q, {"$set": {"x": 1}}))
attempt("lookup", lambda: list(an.app.orders.aggregate([{"$lookup": {"from": "users", "pipeline": [{"$match": q}], "as": "u"}}])))
attempt("phone", lambda: list(U.find({"$expr": {"$gt": [{"$toDouble": {"$arrayElemAt": ["$contacts.phone", 0]}}, 0]}})))
attempt("compare", lambda: list(U.find({"$expr": {"$eq": ["$email", "nobody"]}})))
attempt("admin", lambda: list(ad.app.users.find(q)))
"#,
    );
    for label in
        ["find", "find-or", "match", "count", "distinct", "update", "delete", "findAndModify", "lookup", "phone"]
    {
        assert!(format!("\n{out}").contains(&format!("\n{label} DENIED 13 False")), "{label} not refused: {out}");
    }
    assert!(out.contains("compare RAN False []"), "{out}");
    assert!(out.contains("admin DENIED 241 True"), "the server quotes the value: {out}");
}

/// A refusal inside a multi-document transaction fails the transaction, as a failed statement
/// does: before, the commit that followed committed the other statements. A refused first
/// statement leaves nothing upstream, and the transaction fails all the same.
#[test]
fn refusal_inside_a_transaction_aborts_it() {
    let (out, _st) = run_bypass(
        r#"
s = an.start_session()
s.start_transaction()
an.app.orders.insert_one({"_id": 77}, session=s)
try:
    list(an.app.users.aggregate([{"$project": {"x": {"$toUpper": "$email"}}}], session=s))
    print("REFUSAL RAN")
except OperationFailure as e:
    print("REFUSED", e.code, e.details.get("errorLabels"))
try:
    s.commit_transaction()
    print("COMMIT OK")
except OperationFailure as e:
    print("COMMIT FAILED", e.code)
s.end_session()
print("VISIBLE", D.orders.count_documents({"_id": 77}))
# The connection and later transactions work.
with an.start_session() as s2:
    with s2.start_transaction():
        an.app.orders.insert_one({"_id": 78}, session=s2)
print("LATER", D.orders.count_documents({"_id": 78}))
# The refused statement is the transaction's first: nothing runs upstream in it.
s3 = an.start_session()
s3.start_transaction()
try:
    an.app.users.find_one({"$expr": {"$toInt": "$email"}}, session=s3)
    print("FIRST RAN")
except OperationFailure as e:
    print("FIRST REFUSED", e.code)
try:
    an.app.orders.insert_one({"_id": 79}, session=s3)
    s3.commit_transaction()
    print("FIRST COMMIT OK")
except OperationFailure as e:
    print("FIRST COMMIT FAILED", e.code)
print("FIRST VISIBLE", D.orders.count_documents({"_id": 79}))
"#,
    );
    assert!(out.contains("REFUSED 13 None"), "{out}");
    assert!(out.contains("COMMIT FAILED 251"), "{out}");
    assert!(out.contains("\nVISIBLE 0") && out.contains("LATER 1"), "{out}");
    assert!(out.contains("FIRST REFUSED 13\nFIRST COMMIT FAILED 251\nFIRST VISIBLE 0"), "{out}");
}
