//! Client side of the Postgres handshake: TLS negotiation, startup, authentication against dgf
//! users, and the first ParameterStatus / BackendKeyData / ReadyForQuery.

use super::SessionError;
use crate::live::{Route, User};
use crate::shared::Shared;
use crate::stream::Stream;
use bytes::BytesMut;
use dgf_config::AuthMethod;
use dgf_protocols::postgres::messages::{self, tag, ErrorFields};
use dgf_protocols::postgres::scram::{ScramServer, ScramVerifier};
use dgf_protocols::postgres::startup::{parse_startup, StartupMessage, StartupRequest};
use dgf_protocols::postgres::{auth, frame};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Cap on messages during authentication.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// Outcome of the startup phase.
pub enum Startup {
    /// A client that wants a session.
    Session(Stream, StartupMessage),
    /// A cancel request (already handled); close the socket.
    Cancelled,
}

/// Read packets until a StartupMessage, upgrading to TLS when asked and possible.
pub async fn negotiate(tcp: TcpStream, route: &Route, shared: &Shared) -> Result<Startup, SessionError> {
    let mut stream = Stream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(512);
    loop {
        let req = loop {
            match parse_startup(&mut buf) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                // Like Postgres: a bad startup packet gets a FATAL with the SQLSTATE, then close.
                Err(e) => return Err(fatal(&mut stream, e.sqlstate(), format!("invalid startup packet: {e}")).await),
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(SessionError::ClientGone);
            }
        };
        match req {
            StartupRequest::Ssl | StartupRequest::GssEnc if !buf.is_empty() => {
                // Bytes pipelined after an encryption request would bypass TLS (CVE-2021-23222).
                return Err(SessionError::Protocol("data after encryption request".into()));
            }
            StartupRequest::Ssl => match (&route.tls, stream) {
                (Some(acceptor), Stream::Plain(mut tcp)) => {
                    tcp.write_all(b"S").await?;
                    let tls = acceptor.accept(tcp).await.map_err(|e| SessionError::Tls(e.to_string()))?;
                    stream = Stream::Tls(Box::new(tls.into()));
                }
                (_, mut s) => {
                    s.write_all(b"N").await?;
                    stream = s;
                }
            },
            StartupRequest::GssEnc => stream.write_all(b"N").await?,
            StartupRequest::Cancel { pid, secret } => {
                shared.cancels.cancel(pid, secret).await;
                return Ok(Startup::Cancelled);
            }
            StartupRequest::Startup(m) => return Ok(Startup::Session(stream, m)),
        }
    }
}

/// Send a FATAL error and give up on the client.
pub async fn fatal(stream: &mut Stream, code: &str, message: impl Into<String>) -> SessionError {
    let mut out = BytesMut::new();
    let f = ErrorFields::new("FATAL", code, message);
    f.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
    SessionError::Refused(f)
}

async fn read_auth_message(stream: &mut Stream, buf: &mut BytesMut) -> Result<frame::Frame, SessionError> {
    loop {
        if let Some(f) = frame::split_frame(buf, MAX_AUTH_MESSAGE)? {
            if f.tag() != tag::PASSWORD {
                return Err(SessionError::Protocol(format!("expected a password message, got {:?}", f.tag() as char)));
            }
            return Ok(f);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(SessionError::ClientGone);
        }
    }
}

/// Authenticate the client as a dgf user. `Ok(true)` on success; `Ok(false)` when the
/// credentials were wrong (the caller reports 28P01 and counts the failure).
pub async fn authenticate(
    stream: &mut Stream,
    user_name: &str,
    user: Option<&Arc<User>>,
) -> Result<bool, SessionError> {
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let method = user.map(|u| u.auth).unwrap_or(AuthMethod::ScramSha256);
    match method {
        AuthMethod::Trust => Ok(user.is_some()),
        AuthMethod::Md5 => {
            let salt: [u8; 4] = rand::random();
            messages::put_auth(&mut out, 5, &salt);
            stream.write_all(&out).await?;
            let f = read_auth_message(stream, &mut buf).await?;
            let given = messages::password(f.body())?;
            Ok(match user.and_then(|u| u.secret.as_ref()) {
                Some(secret) => auth::verify_md5(given, secret, user_name, salt),
                None => false,
            })
        }
        AuthMethod::ScramSha256 => {
            let verifier = match user.and_then(|u| u.scram.clone()) {
                Some(v) => v,
                None => ScramVerifier::mock(user_name, b"dgf-mock-secret"),
            };
            messages::put_auth_sasl(&mut out, &["SCRAM-SHA-256"]);
            stream.write_all(&out).await?;
            out.clear();
            let f = read_auth_message(stream, &mut buf).await?;
            let (mech, data) = messages::sasl_initial_response(f.body())?;
            if mech != "SCRAM-SHA-256" {
                return Err(SessionError::Protocol(format!("unsupported SASL mechanism {mech:?}")));
            }
            let mut server = ScramServer::new(verifier);
            let first = server
                .handle_client_first(data.unwrap_or_default())
                .map_err(|e| SessionError::Protocol(format!("SCRAM: {e}")))?;
            messages::put_auth(&mut out, 11, &first);
            stream.write_all(&out).await?;
            out.clear();
            let f = read_auth_message(stream, &mut buf).await?;
            match server.handle_client_final(f.body()) {
                Ok(fin) if user.is_some() => {
                    messages::put_auth(&mut out, 12, &fin);
                    stream.write_all(&out).await?;
                    Ok(true)
                }
                Ok(_) => Ok(false),
                Err(e) if e.is_protocol_violation() => Err(SessionError::Protocol(format!("SCRAM: {e}"))),
                Err(_) => Ok(false),
            }
        }
    }
}

/// Run-time parameters a client asked for in its startup packet (GUCs and `-c` options).
pub fn requested_params(m: &StartupMessage) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in &m.params {
        match k.as_str() {
            "user" | "database" | "replication" => {}
            "options" => {
                let mut words = v.split_whitespace();
                while let Some(w) = words.next() {
                    let kv =
                        if w == "-c" { words.next() } else { w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) };
                    if let Some((k, v)) = kv.and_then(|kv| kv.split_once('=')) {
                        out.push((k.replace('-', "_"), v.to_owned()));
                    }
                }
            }
            k if k.starts_with("_pq_.") => {}
            _ => out.push((k.clone(), v.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_split_into_gucs() {
        let m = StartupMessage {
            minor: 0,
            params: vec![
                ("user".into(), "u".into()),
                ("application_name".into(), "psql".into()),
                ("options".into(), "-c search_path=app -c statement-timeout=5s --work_mem=4MB".into()),
            ],
        };
        let p = requested_params(&m);
        assert_eq!(
            p,
            vec![
                ("application_name".into(), "psql".into()),
                ("search_path".into(), "app".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "4MB".into()),
            ]
        );
    }
}
