//! End-to-end: governance on the MongoDB route with pymongo against secantusdb. The route and
//! label of issue 6 as written (only the ports differ), masking for an analyst vs clear values
//! for an admin (cursor batches, getMore, findAndModify, distinct, nested and array paths,
//! non-string values), a denied `drop` on a still-usable connection, a corpus of aggregation
//! and projection bypass attempts that must be refused or come back masked, and the audit
//! chain (one record per command, fingerprints without values, verifies).

mod common;
use common::mongo::python;
use common::mongo_gov::*;

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
    // `bytes`: the (masked) reply the client got, an OP_MSG holding three documents; a refused
    // command never reached the server.
    assert!(find["bytes"].as_u64().is_some_and(|b| b > 100), "{find}");
    assert!(drop_rec.get("bytes").is_none(), "{drop_rec}");
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
