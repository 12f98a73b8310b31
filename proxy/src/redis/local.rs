//! Commands dgf answers itself: AUTH, HELLO, CLIENT, QUIT, RESET, PING while subscribed, and
//! the pub/sub subscription commands (served by the route's shared subscriber connection).

use super::check_password;
use super::pubsub::Kind;
use super::session::Session;
use dgf_protocols::redis::value::enc;

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

impl Session {
    /// Answer a local command into `cout`.
    pub(super) fn local(&mut self, name: &[u8], argv: &[&[u8]]) {
        match name {
            b"AUTH" => self.auth(argv),
            b"HELLO" => self.hello(argv),
            b"CLIENT" => self.client(argv),
            b"QUIT" => {
                enc::simple(&mut self.cout, "OK");
                self.closing = true;
            }
            b"RESET" => {
                self.reset_state();
                enc::simple(&mut self.cout, "RESET");
            }
            b"PING" => {
                enc::push(&mut self.cout, self.proto, 2);
                enc::bulk(&mut self.cout, b"pong");
                enc::bulk(&mut self.cout, argv.get(1).copied().unwrap_or_default());
            }
            b"SUBSCRIBE" => self.subscribe(Kind::Channel, argv),
            b"PSUBSCRIBE" => self.subscribe(Kind::Pattern, argv),
            b"SSUBSCRIBE" => self.subscribe(Kind::Shard, argv),
            b"UNSUBSCRIBE" => self.unsubscribe(Kind::Channel, argv),
            b"PUNSUBSCRIBE" => self.unsubscribe(Kind::Pattern, argv),
            b"SUNSUBSCRIBE" => self.unsubscribe(Kind::Shard, argv),
            other => enc::error(
                &mut self.cout,
                &format!("ERR dgf: {} is not supported through the proxy", String::from_utf8_lossy(other)),
            ),
        }
    }

    /// Verify credentials; `Err(error reply)` on failure (counted by the login throttle).
    fn login(&mut self, user: &str, password: &[u8]) -> Result<(), String> {
        let snap = self.shared.live.load_full();
        let srv = &snap.config.server;
        let ip = self.peer.ip();
        if !self.shared.auth_limiter.allowed(ip, srv.auth_failure_burst, srv.auth_failure_refill_secs) {
            return Err("ERR too many failed login attempts from this address; try again later".into());
        }
        match check_password(&snap, user, password) {
            Some(u) => {
                self.user = Some(u);
                self.authed = true;
                self.refresh_gov();
                Ok(())
            }
            None => {
                self.shared.auth_limiter.failed(ip, srv.auth_failure_burst, srv.auth_failure_refill_secs);
                self.route.metrics.login_failures.inc();
                tracing::info!(user, "authentication failed");
                Err(WRONGPASS.into())
            }
        }
    }

    fn auth(&mut self, argv: &[&[u8]]) {
        let (user, pass) = match argv {
            [_, p] => ("default".to_owned(), *p),
            [_, u, p] => (String::from_utf8_lossy(u).into_owned(), *p),
            _ => return enc::error(&mut self.cout, "ERR syntax error"),
        };
        if self.shared.live.load().users.is_empty() {
            let msg = if argv.len() == 2 {
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
            } else {
                WRONGPASS
            };
            return enc::error(&mut self.cout, msg);
        }
        match self.login(&user, pass) {
            Ok(()) => enc::simple(&mut self.cout, "OK"),
            Err(e) => enc::error(&mut self.cout, &e),
        }
    }

    fn hello(&mut self, argv: &[&[u8]]) {
        let mut proto = self.proto;
        if let Some(v) = argv.get(1) {
            match std::str::from_utf8(v).ok().and_then(|s| s.parse::<u8>().ok()) {
                Some(p @ (2 | 3)) => proto = p,
                Some(_) => return enc::error(&mut self.cout, "NOPROTO unsupported protocol version"),
                None => return enc::error(&mut self.cout, "ERR Protocol version is not an integer or out of range"),
            }
        }
        let mut i = 2;
        let mut setname = None;
        let mut creds = None;
        while i < argv.len() {
            let opt = argv[i].to_ascii_uppercase();
            match (opt.as_slice(), argv.get(i + 1), argv.get(i + 2)) {
                (b"AUTH", Some(u), Some(p)) => {
                    creds = Some((String::from_utf8_lossy(u).into_owned(), *p));
                    i += 3;
                }
                (b"SETNAME", Some(n), _) => {
                    setname = Some(n.to_vec());
                    i += 2;
                }
                _ => {
                    let msg = format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(argv[i]));
                    return enc::error(&mut self.cout, &msg);
                }
            }
        }
        if let Some((u, p)) = creds {
            if let Err(e) = self.login(&u, p) {
                return enc::error(&mut self.cout, &e);
            }
        }
        if !self.authed {
            return enc::error(
                &mut self.cout,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        if let Some(n) = setname {
            self.name = Some(n);
        }
        self.proto = proto;
        let version = self.rr.version.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let out = &mut self.cout;
        enc::map(out, proto, 7);
        enc::bulk(out, b"server");
        enc::bulk(out, b"redis");
        enc::bulk(out, b"version");
        enc::bulk(out, version.as_bytes());
        enc::bulk(out, b"proto");
        enc::int(out, proto as i64);
        enc::bulk(out, b"id");
        enc::int(out, self.id as i64);
        enc::bulk(out, b"mode");
        enc::bulk(out, b"standalone");
        enc::bulk(out, b"role");
        enc::bulk(out, b"master");
        enc::bulk(out, b"modules");
        enc::array(out, 0);
    }

    fn info_line(&self) -> String {
        format!(
            "id={} addr={} laddr={} fd=0 name={} db={} sub={} psub={} ssub={} multi={} resp={} user={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.route.listen,
            String::from_utf8_lossy(self.name.as_deref().unwrap_or_default()),
            self.db,
            self.subs.iter().filter(|s| s.0 == Kind::Channel).count(),
            self.subs.iter().filter(|s| s.0 == Kind::Pattern).count(),
            self.subs.iter().filter(|s| s.0 == Kind::Shard).count(),
            if self.in_multi { 0 } else { -1 },
            self.proto,
            self.user.as_ref().map_or("default", |u| u.name.as_str()),
            self.lib.0.as_deref().unwrap_or(""),
            self.lib.1.as_deref().unwrap_or(""),
        )
    }

    fn client(&mut self, argv: &[&[u8]]) {
        let sub = argv.get(1).map(|s| s.to_ascii_uppercase()).unwrap_or_default();
        match (sub.as_slice(), argv.len()) {
            (b"ID", 2) => enc::int(&mut self.cout, self.id as i64),
            (b"GETNAME", 2) => match &self.name {
                Some(n) => enc::bulk(&mut self.cout, n),
                None => enc::null(&mut self.cout, self.proto),
            },
            (b"SETNAME", 3) => {
                if argv[2].iter().any(|b| *b <= b' ' || *b > b'~') {
                    return enc::error(
                        &mut self.cout,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!argv[2].is_empty()).then(|| argv[2].to_vec());
                enc::simple(&mut self.cout, "OK");
            }
            (b"SETINFO", 4) => {
                let v = String::from_utf8_lossy(argv[3]).into_owned();
                match argv[2].to_ascii_uppercase().as_slice() {
                    b"LIB-NAME" => self.lib.0 = Some(v),
                    b"LIB-VER" => self.lib.1 = Some(v),
                    _ => return enc::error(&mut self.cout, "ERR Unrecognized option"),
                }
                enc::simple(&mut self.cout, "OK");
            }
            (b"INFO", 2) | (b"LIST", _) => {
                let line = self.info_line();
                enc::bulk(&mut self.cout, line.as_bytes());
            }
            (b"NO-EVICT" | b"NO-TOUCH", 3) => enc::simple(&mut self.cout, "OK"),
            _ => {
                let msg = format!(
                    "ERR dgf: CLIENT {} is not supported through the proxy",
                    String::from_utf8_lossy(argv.get(1).copied().unwrap_or_default())
                );
                enc::error(&mut self.cout, &msg);
            }
        }
    }

    fn count(&self, kind: Kind) -> i64 {
        let shard = kind == Kind::Shard;
        self.subs.iter().filter(|(k, _)| (*k == Kind::Shard) == shard).count() as i64
    }

    fn confirmation(&self, what: &[u8], name: Option<&[u8]>, count: i64) -> Vec<u8> {
        let mut out = Vec::new();
        enc::push(&mut out, self.proto, 3);
        enc::bulk(&mut out, what);
        match name {
            Some(n) => enc::bulk(&mut out, n),
            None => enc::null(&mut out, self.proto),
        }
        enc::int(&mut out, count);
        out
    }

    fn confirm(&mut self, what: &[u8], name: Option<&[u8]>, count: i64) {
        let c = self.confirmation(what, name, count);
        self.cout.extend_from_slice(&c);
    }

    fn subscribe(&mut self, kind: Kind, argv: &[&[u8]]) {
        if argv.len() < 2 {
            let msg = format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(argv[0]).to_lowercase()
            );
            return enc::error(&mut self.cout, &msg);
        }
        let what: &[u8] = match kind {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
            Kind::Shard => b"ssubscribe",
        };
        for ch in &argv[1..] {
            self.subs.insert((kind, ch.to_vec()));
            let n = self.count(kind);
            let c = self.confirmation(what, Some(ch), n);
            // The hub sends the confirmation once the upstream subscription is active.
            self.rr.hub.subscribe(kind, ch, self.id, &self.tx, self.proto, c);
            self.outstanding += 1;
        }
    }

    fn unsubscribe(&mut self, kind: Kind, argv: &[&[u8]]) {
        let what: &[u8] = match kind {
            Kind::Channel => b"unsubscribe",
            Kind::Pattern => b"punsubscribe",
            Kind::Shard => b"sunsubscribe",
        };
        let names: Vec<Vec<u8>> = if argv.len() > 1 {
            argv[1..].iter().map(|c| c.to_vec()).collect()
        } else {
            self.subs.iter().filter(|(k, _)| *k == kind).map(|(_, n)| n.clone()).collect()
        };
        if names.is_empty() {
            let n = self.count(kind);
            return self.confirm(what, None, n);
        }
        for ch in names {
            if self.subs.remove(&(kind, ch.clone())) {
                self.rr.hub.unsubscribe(kind, &ch, self.id);
            }
            let n = self.count(kind);
            self.confirm(what, Some(&ch), n);
        }
    }
}
