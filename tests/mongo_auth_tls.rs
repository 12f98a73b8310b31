//! End-to-end: MongoDB route with client SCRAM-SHA-256 against dgf users (including
//! speculative authentication), TLS on both hops (upstream verified against its CA), upstream
//! SCRAM with the route's credentials, and refusals: wrong password, no credentials.

mod common;
use common::mongo::{python, self_signed, MongoOpts, MongoServer};
use common::*;

#[test]
fn scram_and_tls_on_both_sides() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let server = MongoServer::start_with(MongoOpts {
        auth: Some(("dgfsvc".into(), "upstream-secret".into())),
        tls: Some((cert.clone(), key.clone())),
        ..MongoOpts::default()
    });
    let port = free_port();
    let cfg = format!(
        r#"
[admin]
listen = "{{admin}}"

[[users]]
name = "alice"
password = "alice-pw"
roles = ["analyst"]

[[routes]]
name = "docs"
protocol = "mongodb"
listen = "127.0.0.1:{port}"
upstream = "mongodb://dgfsvc:upstream-secret@127.0.0.1:{up}/?directConnection=true&tls=true&tlsCAFile={ca}&authSource=admin"
pool = {{ size = 2 }}
tls = {{ cert = "{cert}", key = "{key}" }}
"#,
        up = server.port,
        ca = cert.display(),
        cert = cert.display(),
        key = key.display()
    );
    let dgf = Dgf::start(&cfg, &[port]);
    let db = unique("dgfs");
    let script = format!(
        r#"
import pymongo
from pymongo.errors import OperationFailure
tls = "tls=true&tlsCAFile={ca}"
ok = pymongo.MongoClient("mongodb://alice:alice-pw@127.0.0.1:{port}/?directConnection=true&" + tls)
ok["{db}"].c.insert_one({{"a": 1}})
assert ok["{db}"].c.find_one()["a"] == 1
# explicit mechanism, no speculative shortcut in the URI
ok2 = pymongo.MongoClient("mongodb://alice:alice-pw@127.0.0.1:{port}/?authMechanism=SCRAM-SHA-256&" + tls)
assert ok2["{db}"].c.count_documents({{}}) == 1
try:
    bad = pymongo.MongoClient("mongodb://alice:wrong@127.0.0.1:{port}/?" + tls, serverSelectionTimeoutMS=3000)
    bad["{db}"].c.find_one()
    raise SystemExit("wrong password accepted")
except OperationFailure as e:
    assert e.code == 18, e.details
try:
    anon = pymongo.MongoClient("mongodb://127.0.0.1:{port}/?" + tls, serverSelectionTimeoutMS=3000)
    anon["{db}"].c.find_one()
    raise SystemExit("unauthenticated find accepted")
except OperationFailure as e:
    assert e.code == 13, e.details
ok.drop_database("{db}")
print("ok")
"#,
        ca = cert.display()
    );
    let out = python(&script, &[]).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    assert!(out.contains("ok"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use mongodb::bson::doc;
        let uri = format!("mongodb://alice:alice-pw@127.0.0.1:{port}/?tls=true&tlsCAFile={}", cert.display());
        let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
        let col = client.database(&db).collection::<mongodb::bson::Document>("r");
        col.insert_one(doc! { "x": 1 }).await.expect("insert via Rust driver");
        assert_eq!(col.count_documents(doc! {}).await.unwrap(), 1);
        client.database(&db).drop().await.unwrap();
        let bad = format!("mongodb://alice:nope@127.0.0.1:{port}/?tls=true&tlsCAFile={}", cert.display());
        let client = mongodb::Client::with_uri_str(&bad).await.expect("client");
        let err = client.database(&db).collection::<mongodb::bson::Document>("r").find_one(doc! {}).await;
        assert!(err.is_err(), "wrong password must fail");
    });
}

/// SCRAM-SHA-1 against dgf users (pymongo, the Rust driver and a hand-made speculative
/// exchange in `hello`), the mechanism list per user, a clear refusal for a user whose
/// password dgf holds only as a SCRAM-SHA-256 verifier, and SCRAM-SHA-1 upstream when the
/// route's user has only SCRAM-SHA-1 credentials there.
#[test]
fn scram_sha1_clients_speculative_and_upstream() {
    let server = MongoServer::start_with(MongoOpts {
        auth: Some(("legacy".into(), "legacy-secret".into())),
        mechanisms: vec!["SCRAM-SHA-1".into()],
        ..MongoOpts::default()
    });
    let vera = dgf_protocols::postgres::scram::ScramVerifier::from_password("vera-pw", b"0123456789abcdef", 4096);
    let (port, port2) = (free_port(), free_port());
    let cfg = format!(
        r#"
[admin]
listen = "{{admin}}"

[[users]]
name = "alice"
password = "alice-pw"
roles = ["analyst"]

[[users]]
name = "vera"
password = "{vera}"
roles = ["analyst"]

[[routes]]
name = "docs"
protocol = "mongodb"
listen = "127.0.0.1:{port}"
upstream = "mongodb://legacy:legacy-secret@127.0.0.1:{up}/?directConnection=true&authSource=admin"
pool = {{ size = 2 }}

[[routes]]
name = "docs-forced"
protocol = "mongodb"
listen = "127.0.0.1:{port2}"
upstream = "mongodb://legacy:legacy-secret@127.0.0.1:{up}/?authSource=admin&authMechanism=SCRAM-SHA-1"
pool = {{ size = 1 }}
"#,
        up = server.port,
    );
    let dgf = Dgf::start(&cfg, &[port, port2]);
    let db = unique("dgfsha1");
    let script = r#"
import pymongo, socket, struct, os, base64, hashlib, hmac, bson
from pymongo.errors import OperationFailure
def uri(user, pw, mech=None):
    m = "&authMechanism=" + mech if mech else ""
    return "mongodb://%s:%s@127.0.0.1:PORT/?directConnection=true%s" % (user, pw, m)
a1 = pymongo.MongoClient(uri("alice", "alice-pw", "SCRAM-SHA-1"))
a1["DB"].c.insert_one({"a": 1})
assert a1["DB"].c.find_one()["a"] == 1
a256 = pymongo.MongoClient(uri("alice", "alice-pw"))
assert a256["DB"].c.count_documents({}) == 1
mechs = lambda who: a256.admin.command("hello", saslSupportedMechs="admin." + who).get("saslSupportedMechs")
assert mechs("alice") == ["SCRAM-SHA-256", "SCRAM-SHA-1"], mechs("alice")
assert mechs("vera") == ["SCRAM-SHA-256"], mechs("vera")
v = pymongo.MongoClient(uri("vera", "vera-pw"))
assert v["DB"].c.count_documents({}) == 1, "vera negotiates SCRAM-SHA-256"
for bad, want in [(uri("vera", "vera-pw", "SCRAM-SHA-1"), "SCRAM-SHA-256"),
                  (uri("alice", "wrong", "SCRAM-SHA-1"), "Authentication failed."),
                  (uri("nobody", "x", "SCRAM-SHA-1"), "Authentication failed.")]:
    try:
        pymongo.MongoClient(bad, serverSelectionTimeoutMS=3000)["DB"].c.find_one()
        raise SystemExit("accepted: " + bad)
    except OperationFailure as e:
        assert e.code == 18 and want in str(e), e

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b)); assert c; b += c
    return b
def msg(s, doc, rid):
    body = struct.pack("<i", 0) + b"\x00" + bson.encode(doc)
    s.sendall(struct.pack("<iiii", 16 + len(body), rid, 0, 2013) + body)
    n = struct.unpack("<i", recvn(s, 16)[:4])[0]
    return bson.decode(recvn(s, n - 16)[5:])
user, pw = "alice", "alice-pw"
first_bare = "n=%s,r=%s" % (user, base64.b64encode(os.urandom(18)).decode())
s = socket.create_connection(("127.0.0.1", PORT))
spec = {"saslStart": 1, "mechanism": "SCRAM-SHA-1", "payload": ("n,," + first_bare).encode(), "db": "admin"}
h = msg(s, {"hello": 1, "$db": "admin", "speculativeAuthenticate": spec}, 1)
sa = h["speculativeAuthenticate"]
server_first = sa["payload"].decode()
at = dict(kv.split("=", 1) for kv in server_first.split(","))
assert int(at["i"]) >= 4096, at
digest = hashlib.md5(("%s:mongo:%s" % (user, pw)).encode()).hexdigest()
salted = hashlib.pbkdf2_hmac("sha1", digest.encode(), base64.b64decode(at["s"]), int(at["i"]))
ck = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
wop = "c=biws,r=" + at["r"]
am = ",".join([first_bare, server_first, wop]).encode()
proof = bytes(x ^ y for x, y in zip(ck, hmac.new(hashlib.sha1(ck).digest(), am, hashlib.sha1).digest()))
cont = lambda p, rid: msg(s, {"saslContinue": 1, "conversationId": sa["conversationId"], "payload": p, "$db": "admin"}, rid)
r = cont((wop + ",p=" + base64.b64encode(proof).decode()).encode(), 2)
sk = hmac.new(salted, b"Server Key", hashlib.sha1).digest()
assert r["payload"].decode() == "v=" + base64.b64encode(hmac.new(sk, am, hashlib.sha1).digest()).decode(), r
if not r["done"]:
    r = cont(b"", 3)
assert r["done"] and r["ok"] == 1.0, r
r = msg(s, {"count": "c", "$db": "DB"}, 4)
assert r["ok"] == 1.0 and r["n"] == 1, r
forced = pymongo.MongoClient("mongodb://alice:alice-pw@127.0.0.1:PORT2/?directConnection=true")
assert forced["DB"].c.count_documents({}) == 1, "route with authMechanism=SCRAM-SHA-1 upstream"
a1.drop_database("DB")
print("SHA1 OK")
"#
    .replace("PORT2", &port2.to_string())
    .replace("PORT", &port.to_string())
    .replace("DB", &db);
    let out = python(&script, &[]).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    assert!(out.contains("SHA1 OK"), "{out}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use mongodb::bson::doc;
        let uri = format!("mongodb://alice:alice-pw@127.0.0.1:{port}/?authMechanism=SCRAM-SHA-1");
        let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
        let col = client.database(&db).collection::<mongodb::bson::Document>("r");
        col.insert_one(doc! { "x": 1 }).await.expect("insert via the Rust driver with SCRAM-SHA-1");
        assert_eq!(col.count_documents(doc! {}).await.unwrap(), 1);
        client.database(&db).drop().await.unwrap();
        let uri = format!("mongodb://vera:vera-pw@127.0.0.1:{port}/?authMechanism=SCRAM-SHA-1");
        let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
        let err = client.database(&db).collection::<mongodb::bson::Document>("r").find_one(doc! {}).await;
        assert!(err.unwrap_err().to_string().contains("SCRAM-SHA-256"), "clear refusal for a verifier-only user");
    });
}
