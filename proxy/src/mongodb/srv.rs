//! `mongodb+srv://` seed lists: the hosts from the DNS SRV records `_mongodb._tcp.<name>` (each
//! resolved to an address by the same resolver) and default options from the TXT record of
//! `<name>`, looked up when a pool connection is made and kept for the SRV records' TTL (a
//! minute at least, as MongoDB drivers do). When the DNS fails, the last answer goes on
//! serving (retried every [`RETRY`]), so a resolver outage does not stop new connections to
//! hosts already known.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time a lookup is reused (MongoDB drivers rescan SRV records no more often).
const MIN_KEEP: Duration = Duration::from_secs(60);
/// After a failed lookup, how long the last good answer is used before DNS is asked again.
const RETRY: Duration = Duration::from_secs(10);
/// How long a lookup may take when an expired answer could serve instead.
const STALE_WAIT: Duration = Duration::from_secs(2);
/// Per-query timeout for the name servers of `[server] dns_servers`.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the DNS says about a `mongodb+srv://` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeds {
    /// SRV targets (host name, port, its address) in priority order.
    pub hosts: Vec<(String, u16, IpAddr)>,
    /// `replicaSet` from the TXT record.
    pub replica_set: Option<String>,
    /// `authSource` from the TXT record.
    pub auth_source: Option<String>,
}

/// A `mongodb+srv://` name and its cached lookup.
pub struct Srv {
    name: String,
    dns: Vec<SocketAddr>,
    cache: Mutex<Option<Cached>>,
}

/// A lookup and until when it is used without asking again.
#[derive(Debug, Clone)]
struct Cached {
    until: Instant,
    seeds: Seeds,
}

impl std::fmt::Debug for Srv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srv").field("name", &self.name).field("dns", &self.dns).finish_non_exhaustive()
    }
}

impl Srv {
    /// `name` from the URL; `dns`: name servers to ask (empty: the system's, /etc/resolv.conf).
    pub fn new(name: &str, dns: Vec<SocketAddr>) -> Self {
        Srv { name: name.trim_end_matches('.').to_ascii_lowercase(), dns, cache: Mutex::new(None) }
    }

    /// The seed list: cached while its TTL lasts, else looked up; the last good list when the
    /// lookup fails.
    pub async fn seeds(&self) -> Result<Seeds, String> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.until) {
            return Ok(c.seeds.clone());
        }
        // With an answer to fall back on, a slow DNS delays a new connection by STALE_WAIT at most.
        let looked = match &cached {
            Some(_) => tokio::time::timeout(STALE_WAIT, self.lookup())
                .await
                .unwrap_or_else(|_| Err(format!("DNS: no answer within {STALE_WAIT:?}"))),
            None => self.lookup().await,
        };
        let (result, until) = match looked {
            Ok((seeds, ttl)) => {
                let until = Instant::now() + keep_for(ttl);
                (Ok(seeds), until)
            }
            Err(e) => match cached {
                Some(c) => {
                    tracing::warn!(name = %self.name, error = %e, "DNS lookup failed; using the last seed list");
                    (Ok(c.seeds), Instant::now() + RETRY)
                }
                None => return Err(e),
            },
        };
        if let Ok(seeds) = &result {
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached { until, seeds: seeds.clone() });
        }
        result
    }

    /// Seeds the cache (tests).
    #[cfg(test)]
    fn prime(&self, seeds: Seeds, until: Instant) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached { until, seeds });
    }

    /// The seeds and the smallest TTL of the SRV records (seconds).
    async fn lookup(&self) -> Result<(Seeds, u32), String> {
        let resolver = resolver(&self.dns)?;
        let srv_name = format!("_mongodb._tcp.{}.", self.name);
        let found = resolver.srv_lookup(srv_name.as_str()).await.map_err(|e| format!("DNS SRV {srv_name}: {e}"))?;
        let ttl = found.answers().iter().filter(|r| matches!(r.data, RData::SRV(_))).map(|r| r.ttl).min();
        let mut targets: Vec<(u16, String, u16)> = found
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => {
                    Some((s.priority, s.target.to_utf8().trim_end_matches('.').to_ascii_lowercase(), s.port))
                }
                _ => None,
            })
            .collect();
        targets.sort();
        let mut hosts = Vec::new();
        for (_, host, port) in targets {
            if !same_domain(&self.name, &host) {
                return Err(format!("DNS SRV {srv_name}: {host} is not in the domain of {}", self.name));
            }
            let ips = resolver.lookup_ip(format!("{host}.").as_str()).await.map_err(|e| format!("DNS {host}: {e}"))?;
            if let Some(ip) = ips.iter().next() {
                hosts.push((host, port, ip));
            }
        }
        if hosts.is_empty() {
            return Err(format!("DNS SRV {srv_name}: no hosts"));
        }
        let (mut replica_set, mut auth_source) = (None, None);
        // A missing TXT record is normal; options other than these two are ignored.
        if let Ok(txt) = resolver.txt_lookup(format!("{}.", self.name).as_str()).await {
            for r in txt.answers() {
                let RData::TXT(t) = &r.data else { continue };
                let text: Vec<u8> = t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                for pair in String::from_utf8_lossy(&text).split('&') {
                    match pair.split_once('=') {
                        Some(("replicaSet", v)) => replica_set = Some(v.to_owned()),
                        Some(("authSource", v)) => auth_source = Some(v.to_owned()),
                        _ => {}
                    }
                }
            }
        }
        Ok((Seeds { hosts, replica_set, auth_source }, ttl.unwrap_or(0)))
    }
}

/// How long an answer with this TTL is used: the TTL, and never less than [`MIN_KEEP`].
fn keep_for(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl)).max(MIN_KEEP)
}

fn resolver(dns: &[SocketAddr]) -> Result<TokioResolver, String> {
    let builder = if dns.is_empty() {
        Resolver::builder_tokio().map_err(|e| format!("DNS configuration: {e}"))?
    } else {
        let servers = dns
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut b = Resolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        );
        b.options_mut().timeout = QUERY_TIMEOUT;
        b
    };
    builder.build().map_err(|e| format!("DNS resolver: {e}"))
}

/// A SRV target must lie in the domain of the name it was listed under (its parent domain, or
/// below the name itself for names of fewer than three labels), so a DNS answer cannot send
/// credentials to any host it likes.
fn same_domain(name: &str, host: &str) -> bool {
    let parent = match name.split_once('.') {
        Some((_, p)) if name.split('.').count() >= 3 => p,
        _ => name,
    };
    host.len() > parent.len() + 1 && host.ends_with(parent) && host.as_bytes()[host.len() - parent.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_for_its_ttl_and_at_least_a_minute() {
        assert_eq!(keep_for(0), Duration::from_secs(60));
        assert_eq!(keep_for(59), Duration::from_secs(60));
        assert_eq!(keep_for(300), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn a_failed_lookup_serves_the_last_answer() {
        // A name server that is not there: every lookup fails.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let srv = Srv::new("cluster0.dgf.test", vec![dead]);
        let t0 = Instant::now();
        assert!(srv.seeds().await.is_err(), "no answer yet: the failure shows");
        let known = Seeds {
            hosts: vec![("a.dgf.test".into(), 27017, IpAddr::from([127, 0, 0, 1]))],
            replica_set: Some("rs0".into()),
            auth_source: None,
        };
        srv.prime(known.clone(), Instant::now() - Duration::from_secs(1));
        assert_eq!(srv.seeds().await.unwrap(), known, "expired, DNS down: the last answer");
        let until = srv.cache.lock().unwrap().as_ref().unwrap().until;
        assert!(until > Instant::now() && until <= Instant::now() + RETRY, "asked again after RETRY");
        // Asked again after RETRY, an expired answer is not held up by a silent DNS for long.
        srv.prime(known.clone(), Instant::now() - Duration::from_secs(1));
        let t1 = Instant::now();
        assert_eq!(srv.seeds().await.unwrap(), known);
        assert!(t1.elapsed() < STALE_WAIT + Duration::from_secs(1), "{:?}", t1.elapsed());
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    }

    #[test]
    fn srv_targets_stay_in_the_domain() {
        assert!(same_domain("cluster0.abc.mongodb.net", "ac-1-shard-00-00.abc.mongodb.net"));
        assert!(same_domain("db.dgf.test", "a.dgf.test"));
        assert!(same_domain("dgf.test", "a.dgf.test"));
        for bad in ["evil.net", "abc.mongodb.net.evil.net", "xabc.mongodb.net", "abc.mongodb.net", "mongodb.net"] {
            assert!(!same_domain("cluster0.abc.mongodb.net", bad), "{bad}");
        }
        assert!(!same_domain("dgf.test", "dgf.test"));
    }
}
