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
