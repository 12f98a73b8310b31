//! Client-side helpers shared by the Postgres pooling tests: timeouts, SQLSTATEs, a direct
//! superuser connection, waiting for a statement to be active, and raw protocol messages.

use super::{PG_HOST, PG_PORT};
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub const POOL2: &str = r#"{ mode = "transaction", size = 2 }"#;

/// Await `f` for at most `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// The SQLSTATE of an error (or a description of the non-database error).
pub fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_else(|| format!("<no SQLSTATE: {e}>"))
}

/// The error of a request that must fail.
pub fn err<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> tokio_postgres::Error {
    match r {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    }
}

/// First column of each row of a simple query's result.
pub fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// Connect through dgf with extra conninfo; also returns the connection task (abort it to close
/// the socket abruptly, without a Terminate message).
pub async fn open(port: u16, db: &str, extra: &str) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let (c, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=app dbname={db} {extra}"), NoTls).await?;
    Ok((
        c,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    ))
}

/// A direct superuser connection to the shared Postgres (to watch pg_stat_activity).
pub async fn direct() -> Client {
    let (c, conn) =
        tokio_postgres::connect(&format!("host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"), NoTls)
            .await
            .expect("direct connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// Wait until a query matching `like` is active on `db`.
pub async fn wait_active(watcher: &Client, db: &str, like: &str) {
    within(10, &format!("waiting for `{like}` to run"), async {
        loop {
            let n: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE $2",
                    &[&db, &like],
                )
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

pub fn psql_conninfo(port: u16, db: &str) -> String {
    format!("host=127.0.0.1 port={port} user=app dbname={db}")
}

/// One frontend message: tag, length, body.
pub fn fe(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse, Bind and Execute of `sql` (unnamed statement and portal, no parameters).
pub fn extended(sql: &str) -> Vec<u8> {
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut out = fe(b'P', &parse);
    out.extend(fe(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
    out.extend(fe(b'E', &[0, 0, 0, 0, 0]));
    out
}

/// Read backend messages until one with tag `until`; returns the tags seen and its body.
pub fn read_until(s: &mut std::net::TcpStream, until: u8) -> (Vec<u8>, Vec<u8>) {
    use std::io::Read;
    let mut tags = Vec::new();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).expect("backend message");
        let mut body = vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4];
        s.read_exact(&mut body).unwrap();
        tags.push(head[0]);
        if head[0] == until {
            return (tags, body);
        }
    }
}
