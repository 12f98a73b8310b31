//! One-screen summary of a valid config, as printed by `dgf check` (never shows secrets).

use crate::model::{Config, PoolMode, RouteConfig};
use std::fmt::Write as _;

impl Config {
    /// What `dgf check` prints after `FILE: ok`: listeners, upstreams (passwords hidden),
    /// users, labels, rules and audit, one item per line.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "admin   {}", self.admin.listen);
        for r in &self.routes {
            let _ = writeln!(out, "route   {}", route_line(r));
        }
        let users: Vec<String> = self
            .users
            .iter()
            .map(|u| {
                let auth = match u.auth {
                    crate::AuthMethod::ScramSha256 => "scram-sha-256",
                    crate::AuthMethod::Md5 => "md5",
                    crate::AuthMethod::Trust => "trust",
                };
                format!("{} ({auth})", u.name)
            })
            .collect();
        let _ = writeln!(out, "users   {}", list(&users));
        let labels: Vec<String> = self.labels.iter().map(|l| l.name.clone()).collect();
        let _ = writeln!(out, "labels  {}", list(&labels));
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|r| {
                let action = format!("{:?}", r.action).to_ascii_lowercase();
                let shadow = if r.mode == crate::RuleMode::Shadow { ", shadow" } else { "" };
                format!("{} ({action}{shadow})", r.name)
            })
            .collect();
        let _ = writeln!(out, "rules   {}", list(&rules));
        let audit = match &self.audit {
            None => "off".to_owned(),
            Some(a) => {
                let sink = match (a.sink.as_deref(), a.path.as_deref()) {
                    (Some("stdout"), _) | (_, Some("-")) | (_, None) => "stdout".to_owned(),
                    (_, Some(p)) => p.to_owned(),
                };
                let overflow = match a.overflow {
                    crate::AuditOverflow::Block => "block",
                    crate::AuditOverflow::Drop => "drop",
                };
                format!("{sink} (overflow {overflow})")
            }
        };
        let _ = writeln!(out, "audit   {audit}");
        out
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn route_line(r: &RouteConfig) -> String {
    let upstream = r.upstream().map_or_else(|_| "<invalid upstream>".to_owned(), |u| u.to_string());
    let mode = match r.pool.mode {
        PoolMode::Session => "session",
        PoolMode::Transaction => "transaction",
    };
    let tls = if r.require_tls {
        ", tls required"
    } else if r.tls.is_some() {
        ", tls"
    } else {
        ""
    };
    let shaping = r.shaping.as_ref().map(|s| format!(", {} ops/s", s.ops_per_sec)).unwrap_or_default();
    let memory = r.memory_budget.as_ref().map(|m| format!(", memory budget {} bytes", m.max_bytes)).unwrap_or_default();
    format!(
        "{} {} {} -> {upstream} ({mode} pool, size {}{tls}{shaping}{memory})",
        r.name, r.protocol, r.listen, r.pool.size
    )
}
