//! Upstream URLs: `postgres://user:pass@host:5432/db?sslmode=require` and friends, parsed into
//! [`Upstream`], plus Postgres `sslmode` handling.

use crate::model::{Protocol, RouteConfig};
use std::collections::BTreeMap;
use std::fmt;

/// A parsed upstream URL. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Lower-case scheme as written: postgres, postgresql, mysql, redis, rediss or mongodb.
    pub scheme: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port; the protocol's default port when the URL has none.
    pub port: u16,
    /// Percent-decoded user name; `None` when absent or empty.
    pub user: Option<String>,
    /// Percent-decoded password; `None` when absent.
    pub password: Option<String>,
    /// Percent-decoded path without the leading `/` (database, Redis db number or Mongo auth
    /// database); `None` when empty.
    pub database: Option<String>,
    /// Percent-decoded query parameters.
    pub params: BTreeMap<String, String>,
    /// The other hosts of a MongoDB seed list (`mongodb://a:27017,b:27017,c:27017/...`), after
    /// `host:port`.
    pub more_hosts: Vec<(String, u16)>,
}

/// Postgres `sslmode` of an upstream connection (libpq semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Try TLS, fall back to plaintext if the server refuses it (also what `allow` means here).
    #[default]
    Prefer,
    /// Require TLS, do not verify the certificate.
    Require,
    /// Require TLS and a certificate chain that verifies against the CA (`sslrootcert` or the
    /// system roots), without a host name check.
    VerifyCa,
    /// Require TLS, a verified chain and a certificate that names the host.
    VerifyFull,
}

impl SslMode {
    /// Parses a libpq `sslmode` value. `allow` maps to [`SslMode::Prefer`].
    pub fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => {
                Err(format!("sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"))
            }
        }
    }
}

/// MySQL `ssl-mode` of an upstream connection (MySQL client semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MySslMode {
    /// Never use TLS.
    Disabled,
    /// Use TLS when the server offers it (the default).
    #[default]
    Preferred,
    /// Require TLS, do not verify the certificate.
    Required,
    /// Require TLS and a chain that verifies against `ssl-ca` (or the system roots).
    VerifyCa,
    /// Require TLS, a verified chain and a certificate that names the host.
    VerifyIdentity,
}

impl MySslMode {
    /// Parses an `ssl-mode` value (case-insensitive, `-` or `_`).
    pub fn parse(value: &str) -> Result<MySslMode, String> {
        match value.to_ascii_uppercase().replace('-', "_").as_str() {
            "DISABLED" => Ok(MySslMode::Disabled),
            "PREFERRED" => Ok(MySslMode::Preferred),
            "REQUIRED" => Ok(MySslMode::Required),
            "VERIFY_CA" => Ok(MySslMode::VerifyCa),
            "VERIFY_IDENTITY" => Ok(MySslMode::VerifyIdentity),
            _ => Err(format!(
                "ssl-mode `{value}` is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
            )),
        }
    }
}

impl Upstream {
    /// The MySQL `ssl-mode` parameter (also accepted as `sslmode` / `ssl_mode`); PREFERRED when absent.
    pub fn my_ssl_mode(&self) -> Result<MySslMode, String> {
        self.param("ssl-mode")
            .or_else(|| self.param("ssl_mode"))
            .or_else(|| self.param("sslmode"))
            .map_or(Ok(MySslMode::Preferred), MySslMode::parse)
    }

    /// The MySQL CA file parameter (`ssl-ca`, also `sslca` / `ssl_ca`).
    pub fn my_ssl_ca(&self) -> Option<&str> {
        self.param("ssl-ca").or_else(|| self.param("ssl_ca")).or_else(|| self.param("sslca"))
    }

    /// A query parameter, if present.
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    /// The Postgres `sslmode` parameter; `prefer` when absent.
    pub fn ssl_mode(&self) -> Result<SslMode, String> {
        self.param("sslmode").map_or(Ok(SslMode::Prefer), SslMode::parse)
    }
}

impl fmt::Display for Upstream {
    /// The URL with the password (and any parameter whose name contains `pass`) shown as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if self.user.is_some() || self.password.is_some() {
            f.write_str(self.user.as_deref().unwrap_or(""))?;
            if self.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        let hosts = std::iter::once((&self.host, self.port)).chain(self.more_hosts.iter().map(|(h, p)| (h, *p)));
        for (i, (host, port)) in hosts.enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if self.scheme == "mongodb+srv" {
                write!(f, "{host}")?;
            } else if host.contains(':') {
                write!(f, "[{host}]:{port}")?;
            } else {
                write!(f, "{host}:{port}")?;
            }
        }
        match &self.database {
            Some(db) => write!(f, "/{db}")?,
            None if !self.params.is_empty() => f.write_str("/")?,
            None => {}
        }
        for (i, (k, v)) in self.params.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            if k.to_ascii_lowercase().contains("pass") {
                write!(f, "{sep}{k}=***")?;
            } else {
                write!(f, "{sep}{k}={v}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("params", &self.params)
            .field("more_hosts", &self.more_hosts)
            .finish()
    }
}

impl RouteConfig {
    /// Parses this route's `upstream` URL against its protocol.
    pub fn upstream(&self) -> Result<Upstream, String> {
        parse_upstream(&self.upstream, self.protocol)
    }
}

impl Protocol {
    /// The protocol's standard server port.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Postgres => 5432,
            Protocol::Mysql => 3306,
            Protocol::Redis => 6379,
            Protocol::Mongodb => 27017,
        }
    }

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Redis => "redis",
            Protocol::Mongodb => "mongodb",
        }
    }

    fn schemes(self) -> &'static [&'static str] {
        match self {
            Protocol::Postgres => &["postgres", "postgresql"],
            Protocol::Mysql => &["mysql"],
            Protocol::Redis => &["redis", "rediss"],
            Protocol::Mongodb => &["mongodb", "mongodb+srv"],
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const ENCODING_HINT: &str =
    "percent-encode special characters in the user name and password (`@` as %40, `#` as %23, `/` as %2F, `:` as %3A)";

/// Parses an upstream URL for `protocol`. Error messages never contain the URL (it may hold a
/// password).
pub fn parse_upstream(url: &str, protocol: Protocol) -> Result<Upstream, String> {
    let expected = protocol.schemes().iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(" or ");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("expected a URL starting with {expected}"));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !protocol.schemes().contains(&scheme.as_str()) {
        return Err(format!("scheme `{scheme}` does not match protocol {protocol} (expected {expected})"));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host_part = rest[..authority_end].rsplit('@').next().unwrap_or("");
    let mut more_hosts = Vec::new();
    let single;
    let url = if host_part.contains(',') {
        if scheme != "mongodb" {
            return Err("more than one host is not supported: give a single host:port".into());
        }
        // A MongoDB seed list: the URL is parsed with its first host; the others are kept.
        let mut hosts = host_part.split(',');
        let first = hosts.next().unwrap_or("");
        for h in hosts {
            more_hosts.push(seed_host(h, protocol.default_port())?);
        }
        let at = authority_end - host_part.len();
        single = format!("{scheme}://{}{first}{}", &rest[..at], &rest[authority_end..]);
        single.as_str()
    } else {
        url
    };
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL: {e}; {ENCODING_HINT}"))?;
    if parsed.fragment().is_some() {
        return Err(format!("a URL fragment (`#...`) is not allowed; {ENCODING_HINT}"));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => percent_decode(d, "host")?,
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => String::new(),
    };
    if host.is_empty() {
        return Err(format!("missing host (expected {scheme}://host:port)"));
    }
    if scheme == "mongodb+srv" && parsed.port().is_some() {
        return Err("mongodb+srv:// takes a DNS name without a port (the SRV records give the ports)".into());
    }
    let port = parsed.port().unwrap_or(protocol.default_port());
    if port == 0 {
        return Err("port 0 is not a valid upstream port".into());
    }
    let user = match parsed.username() {
        "" => None,
        u => Some(percent_decode(u, "user name")?),
    };
    let password = parsed.password().map(|p| percent_decode(p, "password")).transpose()?;
    let database = match parsed.path().trim_start_matches('/') {
        "" => None,
        p if p.contains('/') => return Err("the URL path must be a single database name".into()),
        p => Some(percent_decode(p, "database name")?),
    };
    if scheme.starts_with("redis") {
        if let Some(db) = &database {
            if db.parse::<u32>().is_err() {
                return Err(format!("redis database `{db}` must be a number (e.g. redis://host:6379/0)"));
            }
        }
    }
    let mut params = BTreeMap::new();
    for pair in parsed.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, "parameter name")?;
        let v = percent_decode(v, "parameter value")?;
        if params.insert(k.clone(), v).is_some() {
            return Err(format!("parameter `{k}` is given twice"));
        }
    }
    Ok(Upstream { scheme, host, port, user, password, database, params, more_hosts })
}

/// One `host[:port]` (or `[v6][:port]`) of a seed list.
fn seed_host(h: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = match h.strip_prefix('[') {
        Some(v6) => {
            let (a, rest) = v6.split_once(']').ok_or("a bracketed IPv6 host needs its `]`")?;
            (a, rest.strip_prefix(':'))
        }
        None => match h.rsplit_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (h, None),
        },
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return Err("an empty or malformed host in the seed list".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or("a seed list port must be 1-65535")?,
    };
    Ok((percent_decode(host, "host")?, port))
}

/// Problems with a `mongodb://` upstream's options: `directConnection=true` names exactly one
/// server; `tls`/`ssl` and the relaxing TLS flags take
/// `true`/`false`; only SCRAM-SHA-256 is spoken upstream; a password needs a user.
pub fn mongodb_problems(u: &Upstream) -> Vec<String> {
    let mut out = Vec::new();
    let boolean =
        ["tls", "ssl", "directConnection", "tlsInsecure", "tlsAllowInvalidCertificates", "tlsAllowInvalidHostnames"];
    for k in boolean {
        if let Some(v) = u.param(k) {
            if v != "true" && v != "false" {
                out.push(format!("{k} must be true or false, not `{v}`"));
            }
        }
    }
    if u.param("directConnection") == Some("true") && u.scheme == "mongodb+srv" {
        out.push("directConnection=true cannot be used with mongodb+srv://".into());
    }
    if u.param("directConnection") == Some("true") && !u.more_hosts.is_empty() {
        out.push(
            "directConnection=true names one server: list one host, or drop it to use the primary of the hosts listed"
                .into(),
        );
    }
    if u.param("loadBalanced") == Some("true") {
        out.push("loadBalanced=true is not supported".into());
    }
    if let Some(m) = u.param("authMechanism") {
        if m != "SCRAM-SHA-256" && m != "SCRAM-SHA-1" {
            out.push(format!("authMechanism `{m}` is not supported upstream (use SCRAM-SHA-256 or SCRAM-SHA-1)"));
        }
    }
    if u.param("authSource").is_some_and(str::is_empty) {
        out.push("authSource must not be empty".into());
    }
    if u.password.is_some() && u.user.is_none() {
        out.push("a password needs a user name (mongodb://user:password@host)".into());
    }
    if let Some(c) = u.param("compressors") {
        if !c.split(',').all(|x| matches!(x, "snappy" | "zlib" | "zstd" | "noop")) {
            out.push(format!("compressors `{c}`: expected a list of snappy, zlib, zstd"));
        }
    }
    out
}

/// Decodes `%XX` escapes (no `+` to space: libpq does not do that either).
fn percent_decode(s: &str, what: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => out.push(b),
                None => {
                    return Err(format!(
                    "bad percent-encoding in the {what} (`%` must be followed by two hex digits; write `%25` for `%`)"
                ))
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the {what} is not valid UTF-8 after percent-decoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_with_percent_encoded_password_and_params() {
        let u = parse_upstream(
            "postgresql://app%40corp:p%40ss%3Aw%2Frd%25@db.example.com:6543/my%20db?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=dgf",
            Protocol::Postgres,
        )
        .unwrap();
        assert_eq!(u.scheme, "postgresql");
        assert_eq!(u.host, "db.example.com");
        assert_eq!(u.port, 6543);
        assert_eq!(u.user.as_deref(), Some("app@corp"));
        assert_eq!(u.password.as_deref(), Some("p@ss:w/rd%"));
        assert_eq!(u.database.as_deref(), Some("my db"));
        assert_eq!(u.param("sslrootcert"), Some("/etc/ca.pem"));
        assert_eq!(u.param("application_name"), Some("dgf"));
        assert_eq!(u.param("nope"), None);
        assert_eq!(u.ssl_mode(), Ok(SslMode::VerifyFull));
    }

    #[test]
    fn default_ports() {
        let cases = [
            ("postgres://h", Protocol::Postgres, 5432),
            ("mysql://root@h", Protocol::Mysql, 3306),
            ("redis://h", Protocol::Redis, 6379),
            ("rediss://h", Protocol::Redis, 6379),
            ("mongodb://h/?directConnection=true", Protocol::Mongodb, 27017),
        ];
        for (url, proto, port) in cases {
            let u = parse_upstream(url, proto).unwrap();
            assert_eq!(u.port, port, "{url}");
            assert_eq!(u.host, "h", "{url}");
            assert_eq!(u.password, None);
        }
        let u = parse_upstream("mongodb://127.0.0.1:27017/?directConnection=true", Protocol::Mongodb).unwrap();
        assert_eq!(u.database, None);
        assert_eq!(u.param("directConnection"), Some("true"));
        assert_eq!(u.to_string(), "mongodb://127.0.0.1:27017/?directConnection=true");
    }

    #[test]
    fn redis_password_only_and_db_number() {
        let u = parse_upstream("redis://:s3cret@127.0.0.1:6380/2", Protocol::Redis).unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert_eq!(u.port, 6380);
        assert_eq!(u.database.as_deref(), Some("2"));
        let e = parse_upstream("redis://h/cache", Protocol::Redis).unwrap_err();
        assert!(e.contains("must be a number"), "{e}");
    }

    #[test]
    fn mongodb_seed_list() {
        let u = parse_upstream(
            "mongodb://u:p%40w@a.example.net:27017,b.example.net,[::1]:27019/app?replicaSet=rs0&tls=true",
            Protocol::Mongodb,
        )
        .unwrap();
        assert_eq!((u.host.as_str(), u.port, u.database.as_deref()), ("a.example.net", 27017, Some("app")));
        assert_eq!(u.more_hosts, [("b.example.net".to_owned(), 27017), ("::1".to_owned(), 27019)]);
        assert_eq!(u.password.as_deref(), Some("p@w"));
        assert!(mongodb_problems(&u).is_empty(), "{:?}", mongodb_problems(&u));
        assert_eq!(
            u.to_string(),
            "mongodb://u:***@a.example.net:27017,b.example.net:27017,[::1]:27019/app?replicaSet=rs0&tls=true"
        );
        let u = parse_upstream("mongodb://a,b/?directConnection=true", Protocol::Mongodb).unwrap();
        assert!(mongodb_problems(&u).iter().any(|p| p.contains("directConnection=true names one server")));
    }

    #[test]
    fn ipv6_host() {
        let u = parse_upstream("postgres://u:pw@[::1]:5433/db", Protocol::Postgres).unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 5433);
        assert_eq!(u.to_string(), "postgres://u:***@[::1]:5433/db");
    }

    #[test]
    fn errors() {
        let e = parse_upstream("postgres://", Protocol::Postgres).unwrap_err();
        assert!(e.contains("missing host"), "{e}");
        let e = parse_upstream("postgres:///db", Protocol::Postgres).unwrap_err();
        assert!(e.contains("missing host"), "{e}");
        let e = parse_upstream("mysql://h:3306", Protocol::Postgres).unwrap_err();
        assert!(e.contains("scheme `mysql` does not match protocol postgres"), "{e}");
        assert!(e.contains("postgres:// or postgresql://"), "{e}");
        let u = parse_upstream(
            "mongodb://u:p%40ss@db.example.net:27017/app?tls=true&authSource=admin&directConnection=true",
            Protocol::Mongodb,
        )
        .unwrap();
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref(), u.database.as_deref()),
            (Some("u"), Some("p@ss"), Some("app"))
        );
        assert!(mongodb_problems(&u).is_empty());
        let u = parse_upstream("mongodb://:p@h/?tls=yes&directConnection=false&authMechanism=PLAIN", Protocol::Mongodb)
            .unwrap();
        assert_eq!(mongodb_problems(&u).len(), 3, "{:?}", mongodb_problems(&u));
        for m in ["SCRAM-SHA-1", "SCRAM-SHA-256"] {
            let u = parse_upstream(&format!("mongodb://u:p@h/?authMechanism={m}"), Protocol::Mongodb).unwrap();
            assert!(mongodb_problems(&u).is_empty(), "{m}");
        }
        let u = parse_upstream("mongodb+srv://u:p@c.example.net/app?authSource=admin", Protocol::Mongodb).unwrap();
        assert_eq!((u.scheme.as_str(), u.host.as_str()), ("mongodb+srv", "c.example.net"));
        assert_eq!(u.to_string(), "mongodb+srv://u:***@c.example.net/app?authSource=admin");
        assert!(mongodb_problems(&u).is_empty());
        let e = parse_upstream("mongodb+srv://c.example.net:27017", Protocol::Mongodb).unwrap_err();
        assert!(e.contains("without a port"), "{e}");
        let e = parse_upstream("mongodb+srv://a.example.net,b.example.net", Protocol::Mongodb).unwrap_err();
        assert!(e.contains("more than one host"), "{e}");
        let u = parse_upstream("mongodb+srv://c.example.net/?directConnection=true", Protocol::Mongodb).unwrap();
        assert!(!mongodb_problems(&u).is_empty());
        let e = parse_upstream("localhost:5432", Protocol::Postgres).unwrap_err();
        assert!(e.contains("expected a URL starting with"), "{e}");
        let e = parse_upstream("postgres://a:1,b:2/db", Protocol::Postgres).unwrap_err();
        assert!(e.contains("more than one host"), "{e}");
        for bad in ["mongodb://a:1,/x", "mongodb://a:1,b:0/x", "mongodb://a,b:x/x", "mongodb://a,[::1/x"] {
            assert!(parse_upstream(bad, Protocol::Mongodb).is_err(), "{bad}");
        }
        let e = parse_upstream("postgres://u:p%zz@h", Protocol::Postgres).unwrap_err();
        assert!(e.contains("bad percent-encoding in the password"), "{e}");
        let e = parse_upstream("postgres://h:99999", Protocol::Postgres).unwrap_err();
        assert!(e.starts_with("invalid URL"), "{e}");
        let e = parse_upstream("postgres://h:0", Protocol::Postgres).unwrap_err();
        assert!(e.contains("port 0"), "{e}");
        let e = parse_upstream("postgres://h/?a=1&a=2", Protocol::Postgres).unwrap_err();
        assert!(e.contains("`a` is given twice"), "{e}");
    }

    #[test]
    fn errors_never_echo_the_password() {
        for url in ["postgres://u:hunter2@h:bad", "postgres://u:hunter2@h#x", "mysql://u:hunter2@"] {
            let e = parse_upstream(url, Protocol::Postgres).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            let e = parse_upstream(url, Protocol::Mysql).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn sslmode() {
        let mode = |url: &str| parse_upstream(url, Protocol::Postgres).unwrap().ssl_mode();
        assert_eq!(mode("postgres://h"), Ok(SslMode::Prefer));
        assert_eq!(mode("postgres://h?sslmode=allow"), Ok(SslMode::Prefer));
        assert_eq!(mode("postgres://h?sslmode=disable"), Ok(SslMode::Disable));
        assert_eq!(mode("postgres://h?sslmode=require"), Ok(SslMode::Require));
        assert_eq!(mode("postgres://h?sslmode=verify-ca"), Ok(SslMode::VerifyCa));
        assert!(mode("postgres://h?sslmode=always").unwrap_err().contains("`always`"));
    }

    #[test]
    fn mysql_ssl_mode() {
        let mode = |url: &str| parse_upstream(url, Protocol::Mysql).unwrap().my_ssl_mode();
        assert_eq!(mode("mysql://h"), Ok(MySslMode::Preferred));
        assert_eq!(mode("mysql://u:p@h:3306/db?ssl-mode=VERIFY_IDENTITY"), Ok(MySslMode::VerifyIdentity));
        assert_eq!(mode("mysql://h?ssl-mode=required"), Ok(MySslMode::Required));
        assert_eq!(mode("mysql://h?ssl-mode=verify-ca"), Ok(MySslMode::VerifyCa));
        assert_eq!(mode("mysql://h?sslmode=disabled"), Ok(MySslMode::Disabled));
        assert!(mode("mysql://h?ssl-mode=always").unwrap_err().contains("`always`"));
    }

    #[test]
    fn display_and_debug_redact() {
        let u =
            parse_upstream("postgres://bob:hunter2@h/db?sslmode=require&sslpassword=x1", Protocol::Postgres).unwrap();
        assert_eq!(u.to_string(), "postgres://bob:***@h:5432/db?sslmode=require&sslpassword=***");
        let dbg = format!("{u:?}");
        assert!(!dbg.contains("hunter2") && dbg.contains("***"), "{dbg}");
    }
}
