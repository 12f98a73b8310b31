//! Real client libraries through the Redis route: redis-py (RESP3 via HELLO 3, pipelines,
//! pub/sub) and ioredis (installed with npm into a cache folder; skipped only without npm).

mod common;

use common::redis::{cleanup, start};
use common::unique;
use std::path::PathBuf;
use std::process::Command;

fn venv_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash").arg(root.join("scripts/py-venv.sh")).output().expect("py-venv.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/python")
}

const PY: &str = r#"
import sys, redis
port, prefix = int(sys.argv[1]), sys.argv[2]
for proto in (None, 2, 3):
    kw = {} if proto is None else {"protocol": proto}
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, **kw)
    k = f"{prefix}:{proto}"
    assert r.ping()
    r.hset(k + ":h", mapping={"a": "1", "email": "x@y.z"})
    assert r.hgetall(k + ":h") == {"a": "1", "email": "x@y.z"}, r.hgetall(k + ":h")
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.set(f"{k}:{i}", i); p.get(f"{k}:{i}")
    res = p.execute()
    assert res[1::2] == [str(i) for i in range(100)]
    with r.pipeline(transaction=True) as t:
        t.incr(k + ":n"); t.incr(k + ":n")
        assert t.execute() == [1, 2]
    assert r.client_id() > 0
    r.client_setname("py")
    assert r.client_getname() == "py"
    ps = r.pubsub()
    ps.subscribe(k + ":ch")
    assert ps.get_message(timeout=2)["type"] == "subscribe"
    assert r.publish(k + ":ch", "hi") == 1
    m = ps.get_message(timeout=2)
    assert m and m["data"] == "hi", m
    ps.close()
    keys = list(r.scan_iter(match=prefix + "*"))
    r.delete(*keys)
    print("ok", proto, r.connection_pool.connection_kwargs.get("protocol"))
"#;

#[test]
fn redis_py_resp2_and_resp3() {
    let py = venv_python();
    let r = start(4, "");
    let p = unique("dgft_py");
    let out = Command::new("timeout")
        .arg("120")
        .arg(py)
        .arg("-c")
        .arg(PY)
        .arg(r.port.to_string())
        .arg(&p)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok")).count(), 3, "{stdout}");
    cleanup(&p);
}

const JS: &str = r#"
const Redis = require("ioredis");
const [port, prefix] = process.argv.slice(2);
(async () => {
  const r = new Redis({ host: "127.0.0.1", port: +port, lazyConnect: true });
  await r.connect();
  await r.set(prefix + ":a", "1");
  if (await r.get(prefix + ":a") !== "1") throw new Error("get");
  const res = await r.pipeline().incr(prefix + ":n").incr(prefix + ":n").exec();
  if (res[1][1] !== 2) throw new Error("pipeline " + JSON.stringify(res));
  const tx = await r.multi().set(prefix + ":b", "2").get(prefix + ":b").exec();
  if (tx[1][1] !== "2") throw new Error("multi " + JSON.stringify(tx));
  const sub = new Redis({ host: "127.0.0.1", port: +port });
  await sub.subscribe(prefix + ":ch");
  const got = new Promise((ok) => sub.on("message", (_c, m) => ok(m)));
  await r.publish(prefix + ":ch", "hello");
  if (await got !== "hello") throw new Error("pubsub");
  await r.del(prefix + ":a", prefix + ":n", prefix + ":b");
  sub.disconnect(); r.disconnect();
  console.log("ok");
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[test]
fn ioredis_works() {
    if Command::new("npm").arg("--version").output().is_err() {
        eprintln!("SKIP ioredis_works: npm is not installed");
        return;
    }
    let dir = dirs_cache().join("npm-ioredis");
    std::fs::create_dir_all(&dir).unwrap();
    if !dir.join("node_modules/ioredis").exists() {
        let st = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("ioredis@5")
            .status()
            .expect("npm install");
        assert!(st.success(), "npm install ioredis failed");
    }
    let r = start(4, "");
    let p = unique("dgft_js");
    let script = dir.join("t.js");
    std::fs::write(&script, JS).unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg("node")
        .arg(&script)
        .arg(r.port.to_string())
        .arg(&p)
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    cleanup(&p);
}

fn dirs_cache() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache/dgf")
}
