//! Semantic validation of a typed [`Config`]: every problem is collected, none stops the rest.
//!
//! Paths in errors use the positions elements had in the file, even when an earlier element
//! failed to deserialise (see [`Indices`]).

use crate::mask::parse_mask_spec;
use crate::model::{AuthMethod, Config, Protocol, RuleAction, TlsFiles};
use crate::parse::{Indices, Locator};
use crate::password::PasswordForm;
use crate::ConfigError;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Provider profiles a route may name.
pub const PROVIDERS: &[&str] = &[
    "supabase",
    "neon",
    "planetscale",
    "turso",
    "mongodb_atlas",
    "redis_cloud",
    "cosmos",
    "azure_blob",
    "firestore",
    "dynamodb",
    "cockroachdb",
];

/// Validates `cfg`. `check_refs` is false when some element failed to deserialise, so that
/// references to it are not reported as dangling.
pub(crate) fn validate(cfg: &Config, at: &Locator, idx: &Indices, check_refs: bool) -> Vec<ConfigError> {
    let mut v = Validator { cfg, at, idx, check_refs, errors: Vec::new() };
    v.server();
    v.listeners();
    if let Some(tls) = &cfg.tls {
        v.tls_files(tls, "tls");
    }
    v.users();
    v.routes();
    v.labels();
    v.rules();
    v.audit();
    v.errors
}

struct Validator<'a> {
    cfg: &'a Config,
    at: &'a Locator,
    idx: &'a Indices,
    check_refs: bool,
    errors: Vec<ConfigError>,
}

/// Path of element `i` of a list, using its position in the file.
fn elem(list: &str, positions: &[usize], i: usize) -> String {
    format!("{list}[{}]", positions.get(i).copied().unwrap_or(i))
}

impl Validator<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(self.at.error(path, message));
    }

    fn at_least_one<T: PartialEq + Default>(&mut self, path: &str, value: T) {
        if value == T::default() {
            self.err(path, "must be >= 1");
        }
    }

    fn server(&mut self) {
        let s = &self.cfg.server;
        self.at_least_one("server.max_client_connections", s.max_client_connections);
        self.at_least_one("server.client_login_timeout_ms", s.client_login_timeout_ms);
        self.at_least_one("server.auth_failure_burst", s.auth_failure_burst);
        self.at_least_one("server.auth_failure_refill_secs", s.auth_failure_refill_secs);
        if let Err(e) = s.dns_addrs() {
            self.err("server.dns_servers", e);
        }
        if self.cfg.log.level.trim().is_empty() {
            self.err("log.level", "must not be empty (e.g. \"info\")");
        }
    }

    /// Listen addresses parse, and no two listeners collide.
    fn listeners(&mut self) {
        let mut seen: Vec<(String, SocketAddr)> = Vec::new();
        let mut all = vec![("admin.listen".to_owned(), self.cfg.admin.listen.clone())];
        for (i, r) in self.cfg.routes.iter().enumerate() {
            all.push((format!("{}.listen", elem("routes", &self.idx.routes, i)), r.listen.clone()));
        }
        for (path, listen) in all {
            let Ok(addr) = listen.parse::<SocketAddr>() else {
                self.err(
                    &path,
                    format!("`{listen}` is not an IP:port address (e.g. 127.0.0.1:6432; host names are not accepted)"),
                );
                continue;
            };
            let clash = seen.iter().find(|(_, other)| {
                addr.port() != 0
                    && addr.port() == other.port()
                    && (addr.ip() == other.ip() || addr.ip().is_unspecified() || other.ip().is_unspecified())
            });
            if let Some((other_path, other)) = clash {
                let msg = format!("listen address {addr} collides with {other_path} ({other})");
                self.err(&path, msg);
            }
            seen.push((path, addr));
        }
    }

    fn tls_files(&mut self, tls: &TlsFiles, path: &str) {
        self.file_exists(&format!("{path}.cert"), &tls.cert, "certificate");
        self.file_exists(&format!("{path}.key"), &tls.key, "private key");
    }

    fn file_exists(&mut self, path: &str, file: &str, what: &str) {
        match std::fs::metadata(file) {
            Ok(m) if m.is_file() => {}
            Ok(_) => self.err(path, format!("{what} `{file}` is not a file")),
            Err(e) => self.err(path, format!("cannot read {what} `{file}`: {e}")),
        }
    }

    fn users(&mut self) {
        let mut names: HashMap<&str, String> = HashMap::new();
        let exposed = self.cfg.routes.iter().enumerate().find_map(|(i, r)| {
            let addr = r.listen.parse::<SocketAddr>().ok()?;
            (!addr.ip().is_loopback()).then(|| format!("{}.listen = {addr}", elem("routes", &self.idx.routes, i)))
        });
        for (i, u) in self.cfg.users.iter().enumerate() {
            let p = elem("users", &self.idx.users, i);
            if u.name.trim().is_empty() {
                self.err(&format!("{p}.name"), "must not be empty");
            } else if let Some(first) = names.get(u.name.as_str()) {
                let msg = format!("user `{}` is already defined at {first}", u.name);
                self.err(&format!("{p}.name"), msg);
            } else {
                names.insert(&u.name, p.clone());
            }
            match (&u.password, u.auth) {
                (None, AuthMethod::Trust) => {
                    if let Some(route) = &exposed {
                        self.err(
                            &format!("{p}.auth"),
                            format!("auth = \"trust\" is only allowed when every route listens on a loopback address ({route})"),
                        );
                    }
                }
                (Some(_), AuthMethod::Trust) => self.err(
                    &format!("{p}.password"),
                    "auth = \"trust\" takes no password: remove the password or use auth = \"scram-sha-256\"",
                ),
                (None, _) => self.err(&format!("{p}.password"), "password is required unless auth = \"trust\""),
                (Some(_), method) => match u.password_form() {
                    Err(e) => self.err(&format!("{p}.password"), e),
                    Ok(Some(form)) if !form.supports(method) => {
                        let msg = match form {
                            PasswordForm::Md5(_) => "an md5 verifier only works with auth = \"md5\" (SCRAM needs the plaintext password or a SCRAM verifier)",
                            _ => "a SCRAM verifier only works with auth = \"scram-sha-256\" (md5 needs the plaintext password or an md5 verifier)",
                        };
                        self.err(&format!("{p}.password"), msg);
                    }
                    Ok(_) => {}
                },
            }
            for (j, role) in u.roles.iter().enumerate() {
                if role.trim().is_empty() {
                    self.err(&format!("{p}.roles[{j}]"), "role names must not be empty");
                }
            }
        }
    }

    fn routes(&mut self) {
        let mut names: HashMap<&str, String> = HashMap::new();
        for (i, r) in self.cfg.routes.iter().enumerate() {
            let p = elem("routes", &self.idx.routes, i);
            if r.name.trim().is_empty() {
                self.err(&format!("{p}.name"), "must not be empty");
            } else if let Some(first) = names.get(r.name.as_str()) {
                let msg = format!("route `{}` is already defined at {first}", r.name);
                self.err(&format!("{p}.name"), msg);
            } else {
                names.insert(&r.name, p.clone());
            }
            self.upstream(r, &p);
            let pool = &r.pool;
            self.at_least_one(&format!("{p}.pool.size"), pool.size);
            if pool.min_idle > pool.size {
                self.err(&format!("{p}.pool.min_idle"), format!("must be <= pool.size ({})", pool.size));
            }
            self.at_least_one(&format!("{p}.pool.wait_timeout_ms"), pool.wait_timeout_ms);
            self.at_least_one(&format!("{p}.pool.connect_timeout_ms"), pool.connect_timeout_ms);
            if let Some(tls) = &r.tls {
                self.tls_files(tls, &format!("{p}.tls"));
            }
            if r.require_tls && r.tls.is_none() && self.cfg.tls.is_none() {
                self.err(&format!("{p}.require_tls"), format!("require_tls needs a certificate: set {p}.tls or [tls]"));
            }
            if r.max_client_connections == Some(0) {
                self.err(&format!("{p}.max_client_connections"), "must be >= 1");
            }
            self.budgets(r, &p);
            if let Some(provider) = &r.provider {
                if !PROVIDERS.contains(&provider.as_str()) {
                    self.err(
                        &format!("{p}.provider"),
                        format!("unknown provider `{provider}` (expected one of {})", PROVIDERS.join(", ")),
                    );
                }
            }
        }
    }

    fn budgets(&mut self, r: &crate::model::RouteConfig, p: &str) {
        if let Some(s) = &r.shaping {
            self.at_least_one(&format!("{p}.shaping.ops_per_sec"), s.ops_per_sec);
            if s.burst == Some(0) {
                self.err(&format!("{p}.shaping.burst"), "must be >= 1");
            }
            if s.max_wait_ms > 600_000 {
                self.err(&format!("{p}.shaping.max_wait_ms"), "must be <= 600000 (10 minutes)");
            }
        }
        if let Some(m) = &r.memory_budget {
            if r.protocol != Protocol::Redis {
                self.err(&format!("{p}.memory_budget"), "memory_budget applies to redis routes only");
            }
            self.at_least_one(&format!("{p}.memory_budget.max_bytes"), m.max_bytes);
            if m.check_interval_ms < 100 {
                self.err(&format!("{p}.memory_budget.check_interval_ms"), "must be >= 100");
            }
        }
    }

    fn upstream(&mut self, r: &crate::model::RouteConfig, p: &str) {
        let path = format!("{p}.upstream");
        let u = match r.upstream() {
            Ok(u) => u,
            Err(e) => return self.err(&path, e),
        };
        if r.protocol == Protocol::Redis {
            return self.redis_upstream(&u, r, &path);
        }
        if r.protocol == Protocol::Mysql {
            if let Err(e) = u.my_ssl_mode() {
                self.err(&path, e);
            }
            if let Some(ca) = u.my_ssl_ca() {
                self.file_exists(&path, ca, "ssl-ca CA file");
            }
            for k in u.params.keys() {
                if !["ssl-mode", "ssl_mode", "sslmode", "ssl-ca", "ssl_ca", "sslca"].contains(&k.as_str()) {
                    self.err(&path, format!("unknown mysql upstream parameter `{k}` (expected ssl-mode, ssl-ca)"));
                }
            }
            return;
        }
        if r.protocol == Protocol::Mongodb {
            for e in crate::upstream::mongodb_problems(&u) {
                self.err(&path, e);
            }
            if let Some(ca) = u.param("tlsCAFile") {
                self.file_exists(&path, ca, "tlsCAFile CA file");
            }
            return;
        }
        if r.protocol != Protocol::Postgres {
            if u.param("sslmode").is_some() {
                self.err(&path, "sslmode applies to postgres upstreams only");
            }
            return;
        }
        if let Err(e) = u.ssl_mode() {
            self.err(&path, e);
        }
        if let Some(ca) = u.param("sslrootcert") {
            self.file_exists(&path, ca, "sslrootcert CA file");
        }
        if let Some(sni) = u.param("sslsni") {
            if sni != "0" && sni != "1" {
                self.err(&path, format!("sslsni must be 0 or 1, not `{sni}`"));
            }
        }
    }

    fn redis_upstream(&mut self, u: &crate::upstream::Upstream, r: &crate::model::RouteConfig, path: &str) {
        for k in u.params.keys() {
            match k.as_str() {
                "tls_ca" | "tls_verify" if u.scheme != "rediss" => {
                    self.err(path, format!("{k} needs a rediss:// (TLS) upstream"));
                }
                "tls_ca" | "tls_verify" => {}
                "sslmode" => self.err(path, "sslmode applies to postgres upstreams only (use rediss:// for TLS)"),
                other => {
                    self.err(path, format!("unknown redis upstream parameter `{other}` (expected tls_ca, tls_verify)"))
                }
            }
        }
        if let Some(v) = u.param("tls_verify") {
            if !matches!(v, "full" | "ca" | "none") {
                self.err(path, format!("tls_verify must be full, ca or none, not `{v}`"));
            }
        }
        if let Some(ca) = u.param("tls_ca") {
            self.file_exists(path, ca, "tls_ca CA file");
        }
        if u.password.is_none() && u.user.is_some() {
            self.err(path, "a redis ACL user needs a password (redis://user:password@host)");
        }
        if r.pool.size == 1 {
            let p = path.trim_end_matches(".upstream");
            self.err(
                &format!("{p}.pool.size"),
                "a redis route needs pool.size >= 2 (shared connections plus one for MULTI/blocking commands)",
            );
        }
    }

    fn labels(&mut self) {
        let mut names: HashMap<&str, String> = HashMap::new();
        for (i, l) in self.cfg.labels.iter().enumerate() {
            let p = elem("labels", &self.idx.labels, i);
            if l.name.trim().is_empty() {
                self.err(&format!("{p}.name"), "must not be empty");
            } else if let Some(first) = names.get(l.name.as_str()) {
                let msg = format!("label `{}` is already defined at {first}", l.name);
                self.err(&format!("{p}.name"), msg);
            } else {
                names.insert(&l.name, p.clone());
            }
            if l.matches.is_empty() {
                self.err(&format!("{p}.match"), "needs at least one pattern");
            }
            for (j, m) in l.matches.iter().enumerate() {
                if m.trim().is_empty() {
                    self.err(&format!("{p}.match[{j}]"), "patterns must not be empty");
                }
            }
        }
    }

    fn rules(&mut self) {
        let mut names: HashMap<&str, String> = HashMap::new();
        for (i, r) in self.cfg.rules.iter().enumerate() {
            let p = elem("rules", &self.idx.rules, i);
            if r.name.trim().is_empty() {
                self.err(&format!("{p}.name"), "must not be empty");
            } else if let Some(first) = names.get(r.name.as_str()) {
                let msg = format!("rule `{}` is already defined at {first}", r.name);
                self.err(&format!("{p}.name"), msg);
            } else {
                names.insert(&r.name, p.clone());
            }
            match (r.action, &r.with) {
                (RuleAction::Mask, None) => self.err(
                    &format!("{p}.with"),
                    "a mask rule needs `with` (redact | null | email | hash | partial(keep_last=4) | fixed(\"x\"))",
                ),
                (RuleAction::Mask, Some(spec)) => {
                    match parse_mask_spec(spec) {
                        Err(e) => self.err(&format!("{p}.with"), e),
                        Ok(crate::MaskSpec::Hash) => match &self.cfg.masking.hash_key {
                            None => self.err(
                                &format!("{p}.with"),
                                "`hash` needs a key: set [masking] hash_key = \"${DGF_MASK_KEY}\" (16+ bytes)",
                            ),
                            Some(k) if k.len() < 16 => self.err("masking.hash_key", "must be at least 16 bytes"),
                            Some(_) => {}
                        },
                        Ok(_) => {}
                    }
                    if r.labels.is_empty() && r.columns.is_empty() {
                        self.err(p.as_str(), "a mask rule needs `labels` or `columns` to say what to mask");
                    }
                }
                (_, Some(_)) => self.err(&format!("{p}.with"), "`with` only applies to action = \"mask\""),
                (_, None) => {}
            }
            match (r.action, r.max_rows) {
                (RuleAction::Limit, None) => self.err(p.as_str(), "a limit rule needs `max_rows`"),
                (RuleAction::Limit, Some(0)) => self.err(&format!("{p}.max_rows"), "must be >= 1"),
                (RuleAction::Limit, Some(_)) | (_, None) => {}
                (_, Some(_)) => self.err(&format!("{p}.max_rows"), "`max_rows` only applies to action = \"limit\""),
            }
            self.names_exist(&format!("{p}.labels"), &r.labels, "label", |c, n| c.labels.iter().any(|l| l.name == n));
            self.names_exist(&format!("{p}.routes"), &r.routes, "route", |c, n| c.routes.iter().any(|x| x.name == n));
        }
    }

    fn names_exist(&mut self, path: &str, names: &[String], what: &str, exists: impl Fn(&Config, &str) -> bool) {
        if !self.check_refs {
            return;
        }
        for (j, name) in names.iter().enumerate() {
            if !exists(self.cfg, name) {
                self.err(&format!("{path}[{j}]"), format!("unknown {what} `{name}`"));
            }
        }
    }

    fn audit(&mut self) {
        let Some(a) = &self.cfg.audit else { return };
        let to_stdout = match (a.sink.as_deref(), a.path.as_deref()) {
            (None | Some("file"), Some("-")) | (Some("stdout"), None | Some("-")) => true,
            (None | Some("file"), Some(_)) => false,
            (None | Some("file"), None) => {
                self.err("audit.path", "set audit.path = \"FILE\" (or sink = \"stdout\")");
                true
            }
            (Some("stdout"), Some(_)) => {
                self.err("audit.path", "sink = \"stdout\" takes no path (or use path = \"-\")");
                true
            }
            (Some(other), _) => {
                self.err("audit.sink", format!("sink `{other}` is not \"file\" or \"stdout\""));
                true
            }
        };
        if let (false, Some(path)) = (to_stdout, &a.path) {
            let dir = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir {
                if !dir.is_dir() {
                    self.err("audit.path", format!("directory `{}` of the audit file does not exist", dir.display()));
                }
            }
        }
        if a.queue == Some(0) {
            self.err("audit.queue", "must be >= 1");
        }
        if a.max_file_bytes == Some(0) {
            self.err("audit.max_file_bytes", "must be >= 1");
        }
        if a.keep_rotated == Some(0) {
            // The newest rotated file holds the chain's tip while the live file is empty.
            self.err("audit.keep_rotated", "must be >= 1 (leave it unset to keep every rotated file)");
        }
        if a.fingerprint_key.as_ref().is_some_and(|k| k.expose().len() < 16) {
            self.err("audit.fingerprint_key", "must be at least 16 bytes");
        }
    }
}
