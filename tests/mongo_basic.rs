//! End-to-end: the MongoDB route with pymongo (sync and async) and the Rust driver against a
//! real MongoDB-wire server (secantusdb): CRUD, cursors with getMore across many clients
//! sharing a pool of 2, transactions, unacknowledged writes, both client URI forms, and
//! cleanup of cursors left open by a departed client.

mod common;
use bson::doc;
use common::mongo::{python, MongoServer};
use common::*;

fn config(port: u16, upstream_port: u16, size: usize) -> String {
    // The configuration of issue 6 (minus labels, which the policy engine will enforce).
    format!(
        r#"
[admin]
listen = "{{admin}}"

[[routes]]
name = "docs"
protocol = "mongodb"
listen = "127.0.0.1:{port}"
upstream = "mongodb://127.0.0.1:{upstream_port}/?directConnection=true"
pool = {{ size = {size}, wait_timeout_ms = 20000 }}
"#
    )
}

#[test]
fn pymongo_crud_cursors_transactions_through_a_pool_of_two() {
    let server = MongoServer::start();
    let port = free_port();
    let dgf = Dgf::start(&config(port, server.port, 2), &[port]);
    let db = unique("dgfm");
    let script = format!(
        r#"
import pymongo, threading, time
from pymongo import WriteConcern
for uri in ["mongodb://127.0.0.1:{port}/?directConnection=true", "mongodb://127.0.0.1:{port}"]:
    c = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
    col = c["{db}"].items
    col.drop()
    col.insert_many([{{"i": i, "email": "u%d@example.com" % i}} for i in range(200)])
    assert col.count_documents({{}}) == 200
    assert col.find_one({{"i": 7}})["email"] == "u7@example.com"
    col.update_one({{"i": 7}}, {{"$set": {{"v": 1}}}})
    assert col.find_one({{"i": 7}})["v"] == 1
    col.delete_one({{"i": 8}})
    assert col.count_documents({{}}) == 199
    agg = list(col.aggregate([{{"$match": {{"i": {{"$lt": 5}}}}}}, {{"$group": {{"_id": None, "n": {{"$sum": 1}}}}}}]))
    assert agg[0]["n"] == 5, agg
    # transaction: committed and aborted
    with c.start_session() as s:
        with s.start_transaction():
            col.insert_one({{"txn": "commit"}}, session=s)
            col.update_one({{"i": 1}}, {{"$set": {{"txn": 1}}}}, session=s)
    assert col.count_documents({{"txn": "commit"}}) == 1
    with c.start_session() as s:
        s.start_transaction()
        col.insert_one({{"txn": "abort"}}, session=s)
        s.abort_transaction()
    assert col.count_documents({{"txn": "abort"}}) == 0
    # unacknowledged write (moreToCome)
    col.with_options(write_concern=WriteConcern(w=0)).insert_one({{"w0": 1}})
    for _ in range(100):
        if col.count_documents({{"w0": 1}}) == 1: break
        time.sleep(0.02)
    assert col.count_documents({{"w0": 1}}) == 1
    col.delete_many({{"w0": 1}})
    col.delete_many({{"txn": "commit"}})
    c.close()

# many clients, each with its own connections to dgf, iterating cursors with small batches
errors = []
def worker(k):
    try:
        cl = pymongo.MongoClient("mongodb://127.0.0.1:{port}", maxPoolSize=2)
        col = cl["{db}"].items
        for _ in range(3):
            got = [d["i"] for d in col.find({{}}, batch_size=9).sort("i", 1)]
            assert len(got) == 199, len(got)
        cl.close()
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
assert not errors, errors
c = pymongo.MongoClient("mongodb://127.0.0.1:{port}")
c.drop_database("{db}")
print("ok")
"#
    );
    // Count the upstream sockets dgf itself holds (its file descriptors), sampled every 5 ms:
    // the server's own connection count lags closes and would blame dgf for them.
    let watch = SocketWatch::start(dgf.pid(), server.port);
    let out = python(&script, &[]).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    let max = watch.finish();
    assert!(out.contains("ok"), "{out}");
    assert!(max <= 2, "dgf held {max} connections to the server (pool size 2)");
    assert!(max >= 1, "the sampler saw no upstream connection from dgf at all");
    let (_, pools) = dgf.admin("GET", "/pools");
    assert!(pools.contains("\"max\":2"), "{pools}");
}

#[test]
fn async_pymongo_and_departed_cursor_cleanup() {
    let server = MongoServer::start();
    let port = free_port();
    let dgf = Dgf::start(&config(port, server.port, 3), &[port]);
    let db = unique("dgfa");
    let script = format!(
        r#"
import asyncio, pymongo
from pymongo import AsyncMongoClient
async def main():
    c = AsyncMongoClient("mongodb://127.0.0.1:{port}/?directConnection=true")
    col = c["{db}"].a
    await col.insert_many([{{"i": i}} for i in range(50)])
    n = 0
    async for d in col.find({{}}, batch_size=4):
        n += 1
    assert n == 50, n
    assert (await col.find_one({{"i": 3}}))["i"] == 3
    await c.close()
asyncio.run(main())
print("ok")
"#
    );
    let out = python(&script, &[]).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    assert!(out.contains("ok"));

    // A raw client opens a cursor and vanishes without killCursors: dgf kills it upstream
    // and releases the pinned connection.
    let find = doc! { "find": "a", "filter": {}, "batchSize": 2, "$db": db.as_str() };
    let reply = raw_command(port, &find);
    let cursor = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(cursor, 0, "{reply}");
    let mut held = String::new();
    for _ in 0..100 {
        let (_, pools) = dgf.admin("GET", "/pools");
        if pools.contains("\"active\":0") {
            held.clear();
            break;
        }
        held = pools;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(held.is_empty(), "connection still pinned after the client left: {held}");
    let more = doc! { "getMore": cursor, "collection": "a", "$db": db.as_str() };
    let reply = raw_command(port, &more);
    assert_ne!(reply.get_f64("ok").unwrap_or(1.0), 1.0, "cursor must be gone: {reply}");
}

/// One OP_MSG command over a fresh socket (no driver); the socket is closed afterwards.
fn raw_command(port: u16, cmd: &bson::Document) -> bson::Document {
    use dgf_protocols::mongodb::{frame, msg, OpMsg};
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut out = bytes::BytesMut::new();
    msg::put_msg(&mut out, 1, 0, 0, &cmd.to_vec().unwrap(), &[]);
    s.write_all(&out).unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(m) = frame::split_frame(&mut buf, 1 << 26).unwrap() {
            let op = OpMsg::parse(&m.header, &m.body, None).unwrap();
            return bson::Document::from_reader(op.body).unwrap();
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "dgf closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_driver_crud_and_cursors() {
    use futures_util::TryStreamExt;
    use mongodb::bson::doc;
    let server = MongoServer::start();
    let port = free_port();
    let _dgf = Dgf::start(&config(port, server.port, 2), &[port]);
    let db = unique("dgfr");
    for uri in [format!("mongodb://127.0.0.1:{port}/?directConnection=true"), format!("mongodb://127.0.0.1:{port}")] {
        let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
        let col = client.database(&db).collection::<mongodb::bson::Document>("r");
        col.drop().await.expect("drop");
        let docs: Vec<_> = (0..120).map(|i| doc! { "i": i, "name": format!("n{i}") }).collect();
        col.insert_many(docs).await.expect("insert");
        let all: Vec<_> = col.find(doc! {}).batch_size(10).await.expect("find").try_collect().await.expect("cursor");
        assert_eq!(all.len(), 120);
        let one = col.find_one(doc! { "i": 42 }).await.expect("find_one").expect("doc");
        assert_eq!(one.get_str("name").unwrap(), "n42");
        let r = col.update_many(doc! { "i": { "$lt": 10 } }, doc! { "$set": { "low": true } }).await.expect("update");
        assert_eq!(r.modified_count, 10);
        assert_eq!(col.count_documents(doc! { "low": true }).await.unwrap(), 10);
        let mut session = client.start_session().await.expect("session");
        session.start_transaction().await.expect("start");
        col.insert_one(doc! { "in_txn": 1 }).session(&mut session).await.expect("txn insert");
        session.commit_transaction().await.expect("commit");
        assert_eq!(col.count_documents(doc! { "in_txn": 1 }).await.unwrap(), 1);
        client.database(&db).drop().await.expect("drop db");
    }
}

/// What a [`FakeSecondary`] plays.
const SECONDARY: u8 = 0;
/// A primary that has just stepped down: its `hello` still says primary, every other command
/// fails with NotWritablePrimary (10107).
const STEPPING_DOWN: u8 = 1;
/// A primary: `hello` says so, every other command answers `{ok: 1}`.
const PRIMARY: u8 = 2;

/// A replica-set member played by the test, in the role `role` holds (it can change while
/// connections are open). `SECONDARY`: answers every message with a `hello` reply naming
/// `primary`. `Drop` stops it.
struct FakeSecondary {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    role: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

impl FakeSecondary {
    fn start(set: &str, primary: &str) -> FakeSecondary {
        Self::start_as(set, primary, SECONDARY)
    }

    fn set_role(&self, role: u8) {
        self.role.store(role, std::sync::atomic::Ordering::SeqCst);
    }

    fn start_as(set: &str, primary: &str, role: u8) -> FakeSecondary {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let role = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(role));
        let (stopped, set, primary, playing) = (stop.clone(), set.to_owned(), primary.to_owned(), role.clone());
        let serve = move |mut s: std::net::TcpStream| {
            let _ = s.set_nonblocking(false);
            let mut header = [0u8; 16];
            while s.read_exact(&mut header).is_ok() {
                let len = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
                let mut body = vec![0u8; len.saturating_sub(16)];
                if s.read_exact(&mut body).is_err() {
                    break;
                }
                let cmd = body.get(5..).and_then(|d| bson::Document::from_reader(d).ok());
                let name = cmd.as_ref().and_then(|d| d.keys().next().cloned()).unwrap_or_default();
                let role = playing.load(std::sync::atomic::Ordering::SeqCst);
                let writable = role != SECONDARY;
                let reply = if role == PRIMARY && !matches!(name.as_str(), "hello" | "isMaster" | "ismaster") {
                    doc! { "ok": 1.0 }
                } else if !writable || name == "hello" || name == "isMaster" || name == "ismaster" {
                    doc! {
                        "isWritablePrimary": writable, "secondary": !writable, "setName": set.as_str(),
                        "hosts": [primary.as_str(), format!("127.0.0.1:{port}")], "primary": primary.as_str(),
                        "maxBsonObjectSize": 16777216, "maxMessageSizeBytes": 48000000,
                        "maxWriteBatchSize": 100000, "minWireVersion": 0, "maxWireVersion": 21, "ok": 1.0,
                    }
                } else {
                    doc! { "ok": 0.0, "errmsg": "not primary", "code": 10107, "codeName": "NotWritablePrimary" }
                };
                let doc = reply.to_vec().unwrap();
                let mut out = ((16 + 4 + 1 + doc.len()) as i32).to_le_bytes().to_vec();
                out.extend_from_slice(&7i32.to_le_bytes());
                out.extend_from_slice(&header[4..8]);
                out.extend_from_slice(&2013i32.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.push(0);
                out.extend_from_slice(&doc);
                if s.write_all(&out).is_err() {
                    break;
                }
            }
        };
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let serve = serve.clone();
                        std::thread::spawn(move || serve(s));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        FakeSecondary { port, stop, role }
    }
}

impl Drop for FakeSecondary {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A seed list (`mongodb://a,b/?replicaSet=...`): dgf connects to the replica set's primary,
/// not to the first host. The only reachable seed is a member that is not primary; dgf follows
/// the `primary` its `hello` names to the real server, where the writes land. With no primary
/// to be found, a client's command fails with an error naming the problem and the session
/// stays usable.
#[test]
fn a_seed_list_leads_to_the_primary() {
    let server = MongoServer::start_replica_set();
    let set = python(
        &format!(
            "import pymongo\nprint(pymongo.MongoClient('mongodb://127.0.0.1:{}/?directConnection=true').admin.command('hello').get('setName', ''))",
            server.port
        ),
        &[],
    )
    .expect("hello");
    let set = set.trim().to_owned();
    let fake = FakeSecondary::start(&set, &format!("127.0.0.1:{}", server.port));
    let dead = free_port();
    assert!(!set.is_empty(), "a replica-set member reports its set name");
    let set_param = format!("?replicaSet={set}");
    let upstream = format!("mongodb://127.0.0.1:{dead},127.0.0.1:{}/{set_param}", fake.port);
    let port = free_port();
    let toml = config(port, 1, 2).replace("mongodb://127.0.0.1:1/?directConnection=true", &upstream);
    let dgf = Dgf::start(&toml, &[port]);
    // Cold (no pooled connection yet), the first seed down, the other a secondary: the
    // primary it names answers `hello` as primary, so ready.
    let (status, body) = dgf.admin("GET", "/ready");
    assert_eq!(status, 200, "{body}");
    let db = unique("dgfseed");
    let script = format!(
        r#"
import pymongo
c = pymongo.MongoClient("mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=10000)
c["{db}"].t.insert_one({{"seed": 1}})
print("via dgf:", c["{db}"].t.count_documents({{}}))
d = pymongo.MongoClient("mongodb://127.0.0.1:{real}/?directConnection=true")
print("on the primary:", d["{db}"].t.count_documents({{"seed": 1}}))
d.drop_database("{db}")
"#,
        real = server.port
    );
    let out = python(&script, &[]).expect("pymongo through a seed list");
    assert!(out.contains("via dgf: 1") && out.contains("on the primary: 1"), "{out}");
    // Warm: the pooled connection to the primary passes the pool's `hello` check.
    let (status, body) = dgf.admin("GET", "/ready");
    assert_eq!(status, 200, "{body}");

    // No primary anywhere: the fake names a primary that is down.
    let lost = FakeSecondary::start(&set, &format!("127.0.0.1:{dead}"));
    let upstream = format!("mongodb://127.0.0.1:{}/{set_param}", lost.port);
    let port = free_port();
    let toml = config(port, 1, 2).replace("mongodb://127.0.0.1:1/?directConnection=true", &upstream);
    let dgf2 = Dgf::start(&toml, &[port]);
    // The member answers, but no primary does: not ready, and /ready says why.
    let (status, body) = dgf2.admin("GET", "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no primary found") && body.contains("is not the primary"), "{body}");
    let script = format!(
        r#"
import pymongo
c = pymongo.MongoClient("mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=1500)
for _ in range(2):
    try:
        c["{db}"].t.find_one()
        print("NO ERROR")
    except pymongo.errors.PyMongoError as e:
        print("FAILED:", e)
"#
    );
    let out = python(&script, &[]).expect("pymongo");
    assert_eq!(out.matches("FAILED: ").count(), 2, "{out}");
    assert!(out.contains("no primary found") && out.contains("is not the primary"), "{out}");
}

/// A fake member of replica set `rs0` playing `role` (naming a dead primary), and a dgf route
/// with a pool of `size` in front of it: (fake, dgf, route port).
fn behind_fake(role: u8, size: usize) -> (FakeSecondary, Dgf, u16) {
    let fake = FakeSecondary::start_as("rs0", "127.0.0.1:1", role);
    let port = free_port();
    let upstream = format!("mongodb://127.0.0.1:{}/?replicaSet=rs0", fake.port);
    let toml = config(port, 1, size).replace("mongodb://127.0.0.1:1/?directConnection=true", &upstream);
    let dgf = Dgf::start(&toml, &[port]);
    (fake, dgf, port)
}

/// A failover: the primary steps down and answers commands with NotWritablePrimary (10107).
/// dgf passes the error on and closes that connection instead of pooling it, so the next
/// command gets a new connection (which would find the new primary). Before, a pool of 2
/// kept handing out its 2 stale connections forever.
#[test]
fn a_not_primary_reply_closes_its_connection() {
    let (_fake, dgf, port) = behind_fake(STEPPING_DOWN, 2);
    let script = format!(
        r#"
import pymongo
c = pymongo.MongoClient("mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=3000, retryReads=False)
for _ in range(5):
    try:
        c.db.t.find_one()
        print("NO ERROR")
    except pymongo.errors.PyMongoError as e:
        details = getattr(e, "details", None) or {{}}
        print("FAILED:", details.get("code"), type(e).__name__)
"#
    );
    let out = python(&script, &[]).expect("pymongo");
    assert_eq!(out.matches("FAILED: 10107").count(), 5, "{out}");
    let (_, body) = dgf.admin("GET", "/pools");
    let pools: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (opened, closed) = (pools[0]["opened_total"].as_u64().unwrap(), pools[0]["closed_total"].as_u64().unwrap());
    assert!(opened >= 5 && closed >= 5, "each failed command's connection must be closed: {body}");
}

/// A pooled connection left on a member that stepped down is not counted as ready: the pool's
/// check asks `hello` (the old `ping` check passed on a secondary), closes that connection,
/// and `/ready` finds no primary among the members.
#[test]
fn a_pooled_connection_to_a_former_primary_is_not_ready() {
    let (fake, dgf, port) = behind_fake(PRIMARY, 1);
    let r = raw_command(port, &doc! { "count": "t", "$db": "app" });
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    let (status, body) = dgf.admin("GET", "/ready");
    assert_eq!(status, 200, "{body}");
    assert_eq!(pools(&dgf)[0]["idle"].as_u64(), Some(1), "the connection is pooled");

    fake.set_role(SECONDARY);
    let (status, body) = dgf.admin("GET", "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no primary found") && body.contains("is not the primary"), "{body}");
    let p = pools(&dgf);
    assert_eq!((p[0]["idle"].as_u64(), p[0]["closed_total"].as_u64()), (Some(0), Some(1)), "{p}");

    fake.set_role(PRIMARY);
    let (status, body) = dgf.admin("GET", "/ready");
    assert_eq!(status, 200, "back once a primary answers: {body}");
}

/// The heartbeat: with nobody sending commands, a member that steps down has every pooled
/// connection to it retired within one heartbeat (10 s), not one failed client command per
/// connection later. Two idle connections (`min_idle = 2`); the heartbeat asks one of them
/// `hello`, finds it no longer primary, and retires both.
#[test]
fn a_stepped_down_primary_has_its_pooled_connections_retired_by_the_heartbeat() {
    let (fake, dgf, _port) = two_idle_behind_a_primary();
    // Still the primary: heartbeats leave the pool alone.
    std::thread::sleep(std::time::Duration::from_secs(11));
    let p = pools(&dgf);
    assert_eq!((p[0]["idle"].as_u64(), p[0]["closed_total"].as_u64()), (Some(2), Some(0)), "{p}");

    fake.set_role(SECONDARY);
    let p = until_pools(&dgf, "the heartbeat retires both", |p| p[0]["closed_total"].as_u64() >= Some(2));
    assert!(p[0]["opened_total"].as_u64() >= Some(2), "{p}");
    // A primary again: fresh connections replace the retired ones.
    fake.set_role(PRIMARY);
    until_pools(&dgf, "min_idle reopens two", |p| {
        p[0]["idle"].as_u64() == Some(2) && p[0]["opened_total"].as_u64() >= Some(4)
    });
}

/// A primary that is stepping down still says primary to `hello`, so the heartbeat keeps its
/// connections; the first NotWritablePrimary reply retires them all at once. A pool of two
/// idle connections: one client command fails (passed on as 10107), and both connections are
/// closed, the idle one included, instead of each failing a command of its own. A second
/// failure, from a fresh connection, retires the fresh generation too.
#[test]
fn a_not_primary_reply_retires_every_pooled_connection_at_once() {
    let (fake, dgf, port) = two_idle_behind_a_primary();

    fake.set_role(STEPPING_DOWN);
    let r = raw_command(port, &doc! { "count": "t", "$db": "app" });
    assert_eq!(r.get_i32("code").ok(), Some(10107), "{r}");
    let p = until_pools(&dgf, "both retired", |p| p[0]["closed_total"].as_u64() >= Some(2));
    assert_eq!(p[0]["closed_total"].as_u64(), Some(2), "one retirement, not a cascade: {p}");
    assert!(dgf.logs().contains("no longer a writable primary"), "{}", dgf.logs());

    // min_idle reopens two (hello still says primary); the next failure retires those.
    until_pools(&dgf, "min_idle reopens two", |p| p[0]["idle"].as_u64() == Some(2));
    let r = raw_command(port, &doc! { "count": "t", "$db": "app" });
    assert_eq!(r.get_i32("code").ok(), Some(10107), "{r}");
    until_pools(&dgf, "the fresh ones retired", |p| p[0]["closed_total"].as_u64() >= Some(4));
}

/// A fake primary of replica set `rs0` and a dgf route in front of it whose pool keeps two
/// idle connections (`size = 2, min_idle = 2`), once both are open: (fake, dgf, route port).
fn two_idle_behind_a_primary() -> (FakeSecondary, Dgf, u16) {
    let fake = FakeSecondary::start_as("rs0", "127.0.0.1:1", PRIMARY);
    let port = free_port();
    let upstream = format!("mongodb://127.0.0.1:{}/?replicaSet=rs0", fake.port);
    let toml = config(port, 1, 2)
        .replace("mongodb://127.0.0.1:1/?directConnection=true", &upstream)
        .replace("size = 2,", "size = 2, min_idle = 2,");
    let dgf = Dgf::start(&toml, &[port]);
    until_pools(&dgf, "min_idle opens two connections", |p| p[0]["idle"].as_u64() == Some(2));
    (fake, dgf, port)
}

fn pools(dgf: &Dgf) -> serde_json::Value {
    serde_json::from_str(&dgf.admin("GET", "/pools").1).unwrap()
}

/// `/pools` once `f` holds for it (25 s at most).
fn until_pools(dgf: &Dgf, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    loop {
        let p = pools(dgf);
        if f(&p) {
            return p;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {p}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A DNS server on UDP for `mongodb+srv://` tests: SRV `_mongodb._tcp.db.dgf.test.` lists
/// `srv` (target, port), TXT `db.dgf.test.` is `txt`, and every `*.dgf.test.` A query is
/// 127.0.0.1. Returns its port; it stops with the test process.
fn fake_dns(srv: Vec<(&'static str, u16)>, txt: &'static str) -> u16 {
    use hickory_resolver::proto::op::Message;
    use hickory_resolver::proto::rr::rdata::{A, SRV, TXT};
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.metadata.authoritative = true;
            for query in &q.queries {
                r.add_query(query.clone());
                let name = query.name().clone();
                match query.query_type() {
                    RecordType::SRV if name.to_ascii().starts_with("_mongodb._tcp.db.dgf.test") => {
                        for (target, p) in &srv {
                            let data = RData::SRV(SRV::new(0, 0, *p, Name::from_ascii(target).unwrap()));
                            r.add_answer(Record::from_rdata(name.clone(), 60, data));
                        }
                    }
                    RecordType::TXT if name.to_ascii().starts_with("db.dgf.test") => {
                        r.add_answer(Record::from_rdata(name.clone(), 60, RData::TXT(TXT::new(vec![txt.to_owned()]))));
                    }
                    RecordType::A if name.to_ascii().ends_with("dgf.test.") => {
                        r.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A::new(127, 0, 0, 1))));
                    }
                    _ => {}
                }
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, from);
            }
        }
    });
    port
}

/// `mongodb+srv://`: the seed list comes from DNS (SRV for the hosts, TXT for `replicaSet` and
/// `authSource`), asked of `[server] dns_servers`. One target is a member that is not primary,
/// the other the real primary; writes through dgf land on the primary. A TXT record naming
/// another set leaves no primary, and clients hear so.
#[test]
fn mongodb_srv_seeds_come_from_dns() {
    let server = MongoServer::start_replica_set();
    let fake = FakeSecondary::start("secantus", &format!("127.0.0.1:{}", server.port));
    let targets = vec![("a.dgf.test.", fake.port), ("b.dgf.test.", server.port)];
    let good = fake_dns(targets.clone(), "replicaSet=secantus&authSource=admin");
    let wrong_set = fake_dns(targets, "replicaSet=other");
    let db = unique("dgfsrv");
    for (dns, works) in [(good, true), (wrong_set, false)] {
        let port = free_port();
        let toml = config(port, 1, 2)
            .replace("mongodb://127.0.0.1:1/?directConnection=true", "mongodb+srv://db.dgf.test/?tls=false")
            + &format!("\n[server]\ndns_servers = [\"127.0.0.1:{dns}\"]\n");
        let dgf = Dgf::start(&toml, &[port]);
        let script = format!(
            r#"
import pymongo
c = pymongo.MongoClient("mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=1500)
try:
    c["{db}"].t.insert_one({{"srv": 1}})
    print("via dgf:", c["{db}"].t.count_documents({{}}))
    d = pymongo.MongoClient("mongodb://127.0.0.1:{real}/?directConnection=true")
    print("on the primary:", d["{db}"].t.count_documents({{"srv": 1}}))
    d.drop_database("{db}")
except pymongo.errors.PyMongoError as e:
    print("FAILED:", e)
"#,
            real = server.port
        );
        let out = python(&script, &[]).expect("pymongo");
        if works {
            assert!(out.contains("via dgf: 1") && out.contains("on the primary: 1"), "{out}\n{}", dgf.logs());
            assert_eq!(dgf.admin("GET", "/ready").0, 200);
        } else {
            assert!(out.contains("FAILED:") && out.contains("no primary found"), "{out}");
        }
    }
}
