//! `mongodb+srv://` seed lists: the hosts from the DNS SRV records `_mongodb._tcp.<name>` (each
//! resolved to an address by the same resolver) and default options from the TXT record of
//! `<name>`, looked up when a pool connection is made and kept for a minute.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a lookup is reused.
const KEEP: Duration = Duration::from_secs(60);

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
    cache: Mutex<Option<(Instant, Seeds)>>,
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

    /// The seed list, from the cache when it is younger than a minute.
    pub async fn seeds(&self) -> Result<Seeds, String> {
        if let Some((at, s)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if at.elapsed() < KEEP {
                return Ok(s.clone());
            }
        }
        let seeds = self.lookup().await?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), seeds.clone()));
        Ok(seeds)
    }

    async fn lookup(&self) -> Result<Seeds, String> {
        let resolver = resolver(&self.dns)?;
        let srv_name = format!("_mongodb._tcp.{}.", self.name);
        let found = resolver.srv_lookup(srv_name.as_str()).await.map_err(|e| format!("DNS SRV {srv_name}: {e}"))?;
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
        Ok(Seeds { hosts, replica_set, auth_source })
    }
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
        Resolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        )
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
    use super::same_domain;

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
