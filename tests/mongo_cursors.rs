//! End-to-end: cursors under governance on the MongoDB route. Change streams through dgf
//! against a one-node replica-set secantusdb (dgf still answers `hello` as a standalone): an
//! analyst's events come back masked (fullDocument, fullDocumentBeforeChange, every spelling of
//! updatedFields) while an admin's do not, with both streams and the writes sharing a pool of
//! one connection. Cursors belong to the dgf user that opened them and keep their mask plan on
//! any client connection. `limit` rules cap documents across firstBatch and nextBatch, close
//! the client cursor and kill the server one. findAndModify results and client bulkWrite.

mod common;
use common::mongo::{python, MongoServer};
use common::*;

fn config(port: u16, upstream: u16, size: usize) -> String {
    format!(
        r#"
[admin]
listen = "{{admin}}"

[[users]]
name = "analyst"
password = "analyst-pw"
roles = ["analyst"]

[[users]]
name = "analyst2"
password = "analyst2-pw"
roles = ["analyst"]

[[users]]
name = "admin"
password = "admin-pw"
roles = ["admin"]

[[users]]
name = "capped"
password = "capped-pw"
roles = ["capped"]

[[routes]]
name = "docs"
protocol = "mongodb"
listen = "127.0.0.1:{port}"
upstream = "mongodb://127.0.0.1:{upstream}/?directConnection=true"
pool = {{ size = {size}, wait_timeout_ms = 20000 }}

[[labels]]
name = "email"
match = ["mongodb:app.users.email"]

[[labels]]
name = "phone"
match = ["mongodb:app.users.contacts.phone"]

[[rules]]
name = "mask email"
roles = ["analyst", "capped"]
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
name = "five documents per read"
roles = ["capped"]
action = "limit"
statements = ["read"]
max_rows = 5
"#
    )
}

const PRELUDE: &str = r#"
import pymongo, json, threading, time
from bson.int64 import Int64
from pymongo.errors import OperationFailure
SECRETS = ["s3cr3t", "555-"]
def leaks(x):
    s = json.dumps(x, default=str).lower()
    return [k for k in SECRETS if k in s]
def client(user):
    return pymongo.MongoClient("mongodb://%s:%s-pw@127.0.0.1:PORT/?directConnection=true" % (user, user))
direct = pymongo.MongoClient("mongodb://127.0.0.1:UPSTREAM/?directConnection=true", maxPoolSize=1, serverMonitoringMode="poll")
def open_cursors():
    return direct.admin.command("serverStatus")["metrics"]["cursor"]["open"]["total"]
def server_connections():
    return direct.admin.command("serverStatus")["connections"]["current"]
"#;

fn run(script: &str, port: u16, upstream: u16, dgf: &Dgf) -> String {
    let s = format!("{PRELUDE}{script}").replace("UPSTREAM", &upstream.to_string()).replace("PORT", &port.to_string());
    let out = python(&s, &[]).unwrap_or_else(|e| panic!("{e}\n--- dgf ---\n{}", dgf.logs()));
    println!("{out}");
    out
}

#[test]
fn change_streams_are_masked_per_role_on_a_pool_of_one() {
    let server = MongoServer::start_replica_set();
    let port = free_port();
    let dgf = Dgf::start(&config(port, server.port, 1), &[port]);
    let script = r#"
server_connections(); time.sleep(0.3)
base = server_connections()
most = [0]
done = threading.Event()
def sample():
    while not done.is_set():
        most[0] = max(most[0], server_connections() - base)
        time.sleep(0.01)
sampler = threading.Thread(target=sample); sampler.start()
ad, an = client("admin"), client("analyst")
A, U = ad.app.users, an.app.users
A.drop()
A.insert_one({"_id": 1, "name": "alice", "email": "s3cr3t.alice@example.com", "contacts": [{"kind": "home", "phone": "555-0101"}]})
ad.app.command("collMod", "users", changeStreamPreAndPostImages={"enabled": True})
events = {"admin": [], "analyst": []}
started = threading.Barrier(3)
def watch(name, col):
    with col.watch(full_document="updateLookup", full_document_before_change="whenAvailable", max_await_time_ms=200) as cs:
        started.wait()
        deadline = time.time() + 30
        while len(events[name]) < 6 and time.time() < deadline:
            e = cs.try_next()
            if e:
                events[name].append(e)
ts = [threading.Thread(target=watch, args=("admin", A)), threading.Thread(target=watch, args=("analyst", U))]
for t in ts: t.start()
started.wait()
# Writes from the main thread while both streams poll the one server connection.
A.insert_one({"_id": 2, "name": "bob", "email": "s3cr3t.bob@example.org", "contacts": [{"kind": "work", "phone": "555-0201"}]})
A.update_one({"_id": 1}, {"$set": {"email": "s3cr3t.new@example.com", "name": "alicia"}})
A.update_one({"_id": 1}, {"$set": {"contacts.0.phone": "555-0102"}})
A.update_one({"_id": 1}, {"$set": {"contacts.1": {"kind": "cell", "phone": "555-0103"}}})
A.replace_one({"_id": 2}, {"name": "bob", "email": "s3cr3t.bob2@example.org"})
A.delete_one({"_id": 2})
for t in ts: t.join()
done.set(); sampler.join()
assert most[0] == 1, "dgf used %d server connections for a pool of one" % most[0]
kinds = lambda evs: [e["operationType"] for e in evs]
print("ADMIN", kinds(events["admin"]))
print("ANALYST", kinds(events["analyst"]))
assert kinds(events["admin"]) == ["insert", "update", "update", "update", "replace", "delete"], events["admin"]
assert kinds(events["analyst"]) == kinds(events["admin"]), events["analyst"]
assert leaks(events["admin"]), "the admin sees clear values"
assert not leaks(events["analyst"]), events["analyst"]
ins, upd, pos, sub = events["analyst"][:4]
assert ins["fullDocument"]["email"] == "s***@example.org" and ins["fullDocument"]["name"] == "bob", ins
assert ins["fullDocument"]["contacts"][0] == {"kind": "work", "phone": "[REDACTED]"}, ins
assert upd["updateDescription"]["updatedFields"] == {"email": "s***@example.com", "name": "alicia"}, upd
assert upd["fullDocumentBeforeChange"]["email"] == "s***@example.com", upd
assert pos["updateDescription"]["updatedFields"] == {"contacts.0.phone": "[REDACTED]"}, pos
assert sub["updateDescription"]["updatedFields"] == {"contacts.1": {"kind": "cell", "phone": "[REDACTED]"}}, sub
assert events["admin"][3]["updateDescription"]["updatedFields"]["contacts.1"]["phone"] == "555-0103"
print("CHANGE STREAMS OK")
"#;
    let out = run(script, port, server.port, &dgf);
    assert!(out.contains("CHANGE STREAMS OK"), "{out}");
}

#[test]
fn cursors_belong_to_their_user_and_keep_their_mask() {
    let server = MongoServer::start();
    let port = free_port();
    let dgf = Dgf::start(&config(port, server.port, 2), &[port]);
    let script = r#"
ad, an, an_b, an2 = client("admin"), client("analyst"), client("analyst"), client("analyst2")
A = ad.app.users
A.drop()
A.insert_many([{"_id": i, "email": "s3cr3t%d@example.com" % i} for i in range(10)])
cur = an.app.users.find({}).sort("_id", 1).batch_size(2)
first = [next(cur), next(cur)]
cid = cur.cursor_id
assert cid and not leaks(first), first
# Another client connection of the same dgf user continues the cursor: still masked.
r = an_b.app.command("getMore", Int64(cid), collection="users", batchSize=3)
assert len(r["cursor"]["nextBatch"]) == 3 and not leaks(r["cursor"]["nextBatch"]), r
# Another user (even with the same role) may neither read nor kill it.
for other in (ad, an2):
    for cmd in (lambda: other.app.command("getMore", Int64(cid), collection="users"),
                lambda: other.app.command("killCursors", "users", cursors=[Int64(cid)])):
        try:
            cmd(); raise SystemExit("foreign cursor use accepted")
        except OperationFailure as e:
            assert e.code == 13 and "not created by the authenticated user" in str(e), e
rest = list(cur)
assert len(rest) == 5 and not leaks(rest), rest
print("OWNERSHIP OK")
"#;
    let out = run(script, port, server.port, &dgf);
    assert!(out.contains("OWNERSHIP OK"), "{out}");
}

#[test]
fn limit_rules_cap_documents_across_batches_and_kill_the_cursor() {
    let server = MongoServer::start();
    let port = free_port();
    let dgf = Dgf::start(&config(port, server.port, 2), &[port]);
    let script = r#"
ad, cp = client("admin"), client("capped")
A, C = ad.app.users, cp.app.users
A.drop()
A.insert_many([{"_id": i, "email": "s3cr3t%d@example.com" % i, "g": i % 3} for i in range(20)])
base = open_cursors()
for bs in (1, 2, 3, 5, 100):
    got = list(C.find({}).sort("_id", 1).batch_size(bs))
    assert [d["_id"] for d in got] == [0, 1, 2, 3, 4], (bs, got)
    assert not leaks(got), got
    got = list(C.aggregate([{"$sort": {"_id": -1}}], batchSize=bs))
    assert [d["_id"] for d in got] == [19, 18, 17, 16, 15], (bs, got)
assert len(list(C.find({}).limit(3))) == 3
assert len(list(C.find({"g": 0}))) == 5
assert len(C.distinct("_id")) == 5
assert C.count_documents({}) == 20, "counts are not documents"
assert len(list(A.find({}).batch_size(2))) == 20, "the admin is not capped"
# The cut cursors were killed server-side, not left to time out.
time.sleep(0.2)
assert open_cursors() == base, (open_cursors(), base)
print("LIMITS OK")
"#;
    let out = run(script, port, server.port, &dgf);
    assert!(out.contains("LIMITS OK"), "{out}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use futures_util::TryStreamExt;
        use mongodb::bson::{doc, Document};
        let uri = format!("mongodb://capped:capped-pw@127.0.0.1:{port}/?directConnection=true");
        let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
        let col = client.database("app").collection::<Document>("users");
        let docs: Vec<Document> = col.find(doc! {}).batch_size(2).await.unwrap().try_collect().await.unwrap();
        assert_eq!(docs.len(), 5, "{docs:?}");
        assert!(docs.iter().all(|d| d.get_str("email").is_ok_and(|e| e.starts_with("s***@"))), "{docs:?}");
    });
}

/// A row cap counts documents, so a pipeline that packs many documents into one result would
/// get around it: `$group {all: {$push: "$$ROOT"}}` returned all 50 documents to a role capped
/// at 5. For a capped role such pipelines (gathering accumulators and window functions,
/// `$facet`, `$lookup`, `$graphLookup`, also inside `$unionWith` and in the pipeline of a view
/// it reads) and `mapReduce` are refused with code 13 naming the limit rule.
#[test]
fn limit_rules_refuse_pipelines_that_gather_documents() {
    let server = MongoServer::start();
    let port = free_port();
    let dgf = Dgf::start(&config(port, server.port, 2), &[port]);
    let script = r#"
ad, cp = client("admin"), client("capped")
A, C = ad.app.gather, cp.app.gather
A.drop()
ad.app.drop_collection("v_gather")
A.insert_many([{"_id": i, "g": i % 2} for i in range(50)])
ad.app.command("create", "v_gather", viewOn="gather", pipeline=[{"$group": {"_id": None, "all": {"$push": "$$ROOT"}}}])
ad.other.drop_collection("v_gather")
ad.other.command("create", "v_gather", viewOn="gather", pipeline=[{"$group": {"_id": None, "all": {"$push": "$$ROOT"}}}])
ad.other.gather.insert_many([{"_id": i} for i in range(50)])
def attempt(label, f):
    try:
        out = f()
        print(label, "RAN", len(json.dumps(out, default=str)))
    except OperationFailure as e:
        print(label, "DENIED", e.code, "five documents per read" in str(e))
W = {"documents": ["unbounded", "unbounded"]}
for label, p in [
    ("push", [{"$group": {"_id": None, "all": {"$push": "$$ROOT"}}}]),
    ("addToSet", [{"$group": {"_id": "$g", "all": {"$addToSet": "$_id"}}}]),
    ("topN", [{"$group": {"_id": None, "t": {"$topN": {"n": 50, "sortBy": {"_id": 1}, "output": "$$ROOT"}}}}]),
    ("mergeObjects", [{"$group": {"_id": None, "m": {"$mergeObjects": {"$arrayToObject": [[["$$ROOT._id", 1]]]}}}}]),
    ("bucket", [{"$bucket": {"groupBy": "$_id", "boundaries": [0, 100], "output": {"d": {"$push": "$$ROOT"}}}}]),
    ("bucketAuto", [{"$bucketAuto": {"groupBy": "$_id", "buckets": 1, "output": {"d": {"$push": "$_id"}}}}]),
    ("window", [{"$setWindowFields": {"sortBy": {"_id": 1}, "output": {"w": {"$push": "$_id", "window": W}}}}]),
    ("facet", [{"$facet": {"a": [{"$match": {}}]}}]),
    ("lookup", [{"$limit": 1}, {"$lookup": {"from": "gather", "pipeline": [], "as": "j"}}]),
    ("graphLookup", [{"$graphLookup": {"from": "gather", "startWith": "$g", "connectFromField": "g", "connectToField": "g", "as": "j"}}]),
    ("unionWith", [{"$unionWith": {"coll": "gather", "pipeline": [{"$group": {"_id": None, "a": {"$push": "$_id"}}}]}}]),
    ("unionWith-view", [{"$limit": 1}, {"$unionWith": "v_gather"}]),
    ("unionWith-other-db", [{"$limit": 1}, {"$unionWith": {"coll": {"db": "other", "coll": "v_gather"}, "pipeline": []}}]),
]:
    attempt(label, lambda: list(C.aggregate(p)))
attempt("view", lambda: list(cp.app.v_gather.find()))
attempt("mapReduce", lambda: cp.app.command("mapReduce", "gather", map="function(){emit(1,this._id)}", reduce="function(k,v){return v.join()}", out={"inline": 1}))
# Pipelines that do not gather still run, capped.
ok = list(C.aggregate([{"$group": {"_id": "$_id", "n": {"$sum": 1}, "f": {"$first": "$$ROOT"}}}]))
print("GROUPS", len(ok))
# The admin has no cap: gathering runs.
print("ADMIN", len(list(A.aggregate([{"$group": {"_id": None, "all": {"$push": "$$ROOT"}}}]))[0]["all"]))
A.drop()
ad.app.drop_collection("v_gather")
ad.drop_database("other")
"#;
    let out = run(script, port, server.port, &dgf);
    for label in [
        "push",
        "addToSet",
        "topN",
        "mergeObjects",
        "bucket",
        "bucketAuto",
        "window",
        "facet",
        "lookup",
        "graphLookup",
        "unionWith",
        "unionWith-view",
        "unionWith-other-db",
        "view",
        "mapReduce",
    ] {
        assert!(out.lines().any(|l| l == format!("{label} DENIED 13 True")), "{label} not refused: {out}");
    }
    assert!(out.contains("GROUPS 5\nADMIN 50"), "{out}");
}

#[test]
fn find_and_modify_results_and_bulk_writes_are_governed() {
    let server = MongoServer::start_replica_set();
    let port = free_port();
    let dgf = Dgf::start(&config(port, server.port, 2), &[port]);
    let script = r#"
from pymongo import ReturnDocument
from pymongo.operations import UpdateMany, InsertOne
ad, an = client("admin"), client("analyst")
A, U = ad.app.users, an.app.users
A.drop()
A.insert_many([{"_id": i, "email": "s3cr3t%d@example.com" % i, "contacts": [{"phone": "555-%d" % i}]} for i in range(4)])
results = [
    U.find_one_and_update({"_id": 0}, {"$set": {"a": 1}}),
    U.find_one_and_update({"_id": 0}, {"$set": {"a": 2}}, return_document=ReturnDocument.AFTER),
    U.find_one_and_update({"_id": 1}, {"$set": {"a": 1}}, projection={"email": 1}),
    U.find_one_and_replace({"_id": 2}, {"email": "s3cr3t-new@example.com", "contacts": [{"phone": "555-9"}]}, return_document=ReturnDocument.AFTER),
    U.find_one_and_delete({"_id": 3}),
    U.find_one_and_update({"_id": 99}, {"$set": {"email": "s3cr3t-up@example.com"}}, upsert=True, return_document=ReturnDocument.AFTER),
]
assert all(results) and not leaks(results), results
assert results[1]["email"] == "s***@example.com" and results[1]["a"] == 2, results
assert A.find_one({"_id": 2})["email"] == "s3cr3t-new@example.com"
assert A.find_one_and_update({"_id": 0}, {"$set": {"b": 1}})["email"] == "s3cr3t0@example.com"
print("FINDANDMODIFY OK")
try:
    an.bulk_write([UpdateMany({}, [{"$set": {"copy": "$email"}}], namespace="app.users")])
    raise SystemExit("bulkWrite copy accepted")
except pymongo.errors.ClientBulkWriteException as e:
    assert getattr(e.error, "code", None) == 13 and "dgf:" in str(e.error), e
assert A.count_documents({"copy": {"$exists": True}}) == 0
r = an.bulk_write([InsertOne({"_id": 50, "email": "x"}, namespace="app.users"), UpdateMany({"_id": 50}, {"$set": {"n": 1}}, namespace="app.users")])
assert r.inserted_count == 1 and r.modified_count == 1, r
print("BULKWRITE OK")
"#;
    let out = run(script, port, server.port, &dgf);
    assert!(out.contains("FINDANDMODIFY OK") && out.contains("BULKWRITE OK"), "{out}");
}
