//! What dgf answers itself: `hello` / `isMaster` as a standalone server (limits copied from
//! the upstream), and the client's SCRAM-SHA-256 / SCRAM-SHA-1 conversation (`saslStart`,
//! `saslContinue`, speculative authentication inside `hello`) against dgf users.

use super::backend::Limits;
use crate::live::User;
use bson::{doc, Binary, Bson, Document, RawDocument};
use dgf_protocols::mongodb::sasl;
use dgf_protocols::mongodb::scram_sha1::{self, Sha1Server, Sha1Verifier};
use dgf_protocols::postgres::auth::PasswordSecret;
use dgf_protocols::postgres::scram::{ScramError, ScramServer, ScramVerifier};
use std::collections::HashMap;
use std::sync::Arc;

/// Mechanisms dgf offers to clients.
pub const MECHANISMS: &[&str] = &["SCRAM-SHA-256", scram_sha1::MECHANISM];

/// Users by name.
pub type Users = HashMap<String, Arc<User>>;

/// The mechanisms `user` can authenticate with (SCRAM-SHA-1 needs the plaintext password;
/// unknown users look like users with a plaintext password).
pub fn mechanisms_of(user: Option<&User>) -> Vec<&'static str> {
    match user.and_then(|u| u.secret.as_ref()) {
        None if user.is_some() => Vec::new(),
        None | Some(PasswordSecret::Plain(_)) => MECHANISMS.to_vec(),
        Some(PasswordSecret::Scram(_)) => vec!["SCRAM-SHA-256"],
        Some(PasswordSecret::Md5(_)) => Vec::new(),
    }
}

/// The SCRAM server of one mechanism.
enum Scram {
    Sha256(ScramServer),
    Sha1(Sha1Server),
}

impl Scram {
    fn client_first(&mut self, m: &[u8]) -> Result<Vec<u8>, ScramError> {
        match self {
            Scram::Sha256(s) => s.handle_client_first(m),
            Scram::Sha1(s) => s.handle_client_first(m),
        }
    }
    fn client_final(&mut self, m: &[u8]) -> Result<Vec<u8>, ScramError> {
        match self {
            Scram::Sha256(s) => s.handle_client_final(m),
            Scram::Sha1(s) => s.handle_client_final(m),
        }
    }
}

/// An authentication conversation in progress.
pub struct Conversation {
    server: Scram,
    user_name: String,
    user: Option<Arc<User>>,
    skip_empty: bool,
    /// Waiting for the empty final saslContinue (client did not ask to skip it).
    pending_user: Option<Arc<User>>,
}

/// Outcome of one SASL step.
pub enum Step {
    /// Send this reply (not yet authenticated).
    Reply(Document),
    /// Authenticated as this user; send this reply.
    Done(Arc<User>, Document),
    /// Authentication failed (wrong password, unknown user or malformed exchange); the
    /// client is told only "Authentication failed.".
    Failed(String),
    /// Authentication cannot work for this user and mechanism; the client is told why.
    Refused(String),
}

fn binary(b: Vec<u8>) -> Bson {
    Bson::Binary(Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: b })
}

fn payload_of(cmd: &RawDocument) -> Option<Vec<u8>> {
    cmd.get_binary("payload").ok().map(|b| b.bytes.to_vec())
}

/// Start a conversation from a `saslStart` (or the `speculativeAuthenticate` document).
pub fn start(cmd: &RawDocument, users: &Users) -> (Option<Conversation>, Step) {
    let mech = cmd.get_str("mechanism").unwrap_or("");
    if !MECHANISMS.contains(&mech) {
        let why = format!("Received authentication for mechanism {mech} which is not enabled");
        return (None, Step::Refused(format!("dgf: {why}; use SCRAM-SHA-256 or SCRAM-SHA-1")));
    }
    let Some(first) = payload_of(cmd) else { return (None, Step::Failed("saslStart without payload".into())) };
    let Some(user_name) = sasl::scram_username(&first) else {
        return (None, Step::Failed("malformed SCRAM client-first message".into()));
    };
    let user = users.get(&user_name).cloned();
    let mut server = if mech == scram_sha1::MECHANISM {
        let verifier = match &user {
            None => Sha1Verifier::mock(&user_name, b"dgf-mongo"),
            Some(u) => match u.scram_sha1() {
                Some(v) => v.clone(),
                None => {
                    let why = format!(
                        "dgf: SCRAM-SHA-1 needs the plaintext password of user \"{user_name}\", which dgf stores only \
                         as a verifier; authenticate with SCRAM-SHA-256 (authMechanism=SCRAM-SHA-256)"
                    );
                    return (None, Step::Refused(why));
                }
            },
        };
        Scram::Sha1(Sha1Server::new(verifier))
    } else {
        let verifier = user
            .as_ref()
            .and_then(|u| u.scram.clone())
            .unwrap_or_else(|| ScramVerifier::mock(&user_name, b"dgf-mongo"));
        Scram::Sha256(ScramServer::new(verifier))
    };
    let skip_empty =
        cmd.get_document("options").ok().and_then(|o| o.get_bool("skipEmptyExchange").ok()).unwrap_or(false);
    match server.client_first(&first) {
        Ok(server_first) => {
            let reply = doc! { "conversationId": 1, "done": false, "payload": binary(server_first), "ok": 1.0 };
            (Some(Conversation { server, user_name, user, skip_empty, pending_user: None }), Step::Reply(reply))
        }
        Err(e) => (None, Step::Failed(e.to_string())),
    }
}

impl Conversation {
    /// Handle a `saslContinue`. Returns the step and whether the conversation continues.
    pub fn next(&mut self, cmd: &RawDocument) -> (Step, bool) {
        if let Some(u) = self.pending_user.take() {
            return (
                Step::Done(u, doc! { "conversationId": 1, "done": true, "payload": binary(vec![]), "ok": 1.0 }),
                false,
            );
        }
        let Some(fin) = payload_of(cmd) else { return (Step::Failed("saslContinue without payload".into()), false) };
        match self.server.client_final(&fin) {
            Ok(v) => {
                let Some(user) = self.user.clone() else {
                    return (Step::Failed(format!("unknown user {}", self.user_name)), false);
                };
                let reply = doc! { "conversationId": 1, "done": self.skip_empty, "payload": binary(v), "ok": 1.0 };
                if self.skip_empty {
                    (Step::Done(user, reply), false)
                } else {
                    self.pending_user = Some(user);
                    (Step::Reply(reply), true)
                }
            }
            Err(e) => (Step::Failed(e.to_string()), false),
        }
    }
}

/// The `hello` / `isMaster` reply of a standalone server with the upstream's limits.
pub fn reply(cmd: &RawDocument, legacy_name: bool, limits: &Limits, connection_id: i32, users: &Users) -> Document {
    let mut d = Document::new();
    if cmd.get("helloOk").ok().flatten().is_some() {
        d.insert("helloOk", true);
    }
    if legacy_name {
        d.insert("ismaster", true);
    } else {
        d.insert("isWritablePrimary", true);
    }
    d.insert("maxBsonObjectSize", limits.max_bson);
    d.insert("maxMessageSizeBytes", limits.max_message);
    d.insert("maxWriteBatchSize", limits.max_write_batch);
    d.insert("localTime", bson::DateTime::now());
    if let Some(t) = limits.session_timeout {
        d.insert("logicalSessionTimeoutMinutes", t);
    }
    d.insert("connectionId", connection_id);
    d.insert("minWireVersion", limits.min_wire);
    d.insert("maxWireVersion", limits.max_wire);
    d.insert("readOnly", false);
    if let Ok(principal) = cmd.get_str("saslSupportedMechs") {
        // "<db>.<user>": dgf users are not per database.
        let name = principal.split_once('.').map_or(principal, |(_, u)| u);
        let mechs = mechanisms_of(users.get(name).map(|u| &**u));
        d.insert("saslSupportedMechs", mechs.into_iter().map(|m| Bson::String(m.into())).collect::<Vec<_>>());
    }
    d
}
