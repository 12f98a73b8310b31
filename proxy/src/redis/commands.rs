//! How the session routes each command: answered by dgf, multiplexed on a shared connection,
//! or run on a connection pinned for its duration (transactions, blocking commands).

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// dgf answers (AUTH, HELLO, CLIENT ..., QUIT, RESET, pub/sub subscriptions, refusals).
    Local,
    /// Database switch: forwarded alone, the reply decides the client's db.
    Select,
    /// Any shared connection.
    Shared,
    /// Starts or continues a pinned section (MULTI, WATCH, blocking commands).
    Pinned,
}

/// Uppercase `name` into `buf`; `None` when longer than the buffer (no Redis command is).
pub fn upper<'a>(name: &[u8], buf: &'a mut [u8; 32]) -> Option<&'a [u8]> {
    let b = buf.get_mut(..name.len())?;
    for (d, s) in b.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    Some(b)
}

/// Commands that block the connection until data arrives.
pub fn is_blocking(name: &[u8], args: &[&[u8]]) -> bool {
    match name {
        b"BLPOP" | b"BRPOP" | b"BRPOPLPUSH" | b"BLMOVE" | b"BLMPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BZMPOP"
        | b"WAIT" | b"WAITAOF" => true,
        b"XREAD" | b"XREADGROUP" => args
            .iter()
            .skip(1)
            .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
            .any(|a| a.eq_ignore_ascii_case(b"BLOCK")),
        _ => false,
    }
}

/// Route a command (name already uppercased) for a client that is not inside a pinned section.
pub fn route(name: &[u8], args: &[&[u8]]) -> Where {
    match name {
        b"AUTH" | b"HELLO" | b"CLIENT" | b"QUIT" | b"RESET" | b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE"
        | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE" | b"SUNSUBSCRIBE" | b"MONITOR" | b"SYNC" | b"PSYNC" => Where::Local,
        b"SELECT" => Where::Select,
        b"MULTI" | b"WATCH" => Where::Pinned,
        _ if is_blocking(name, args) => Where::Pinned,
        _ => Where::Shared,
    }
}

/// Commands a RESP2 client may send while subscribed.
pub fn allowed_while_subscribed(name: &[u8]) -> bool {
    matches!(
        name,
        b"SUBSCRIBE"
            | b"PSUBSCRIBE"
            | b"SSUBSCRIBE"
            | b"UNSUBSCRIBE"
            | b"PUNSUBSCRIBE"
            | b"SUNSUBSCRIBE"
            | b"PING"
            | b"QUIT"
            | b"RESET"
    )
}

/// Commands allowed before authentication.
pub fn allowed_before_auth(name: &[u8]) -> bool {
    matches!(name, b"AUTH" | b"HELLO" | b"QUIT" | b"RESET")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing() {
        assert_eq!(route(b"GET", &[b"GET", b"k"]), Where::Shared);
        assert_eq!(route(b"MULTI", &[b"MULTI"]), Where::Pinned);
        assert_eq!(route(b"BLPOP", &[b"BLPOP", b"k", b"0"]), Where::Pinned);
        assert_eq!(route(b"XREAD", &[b"XREAD", b"COUNT", b"1", b"STREAMS", b"s", b"0"]), Where::Shared);
        assert_eq!(route(b"XREAD", &[b"XREAD", b"block", b"0", b"STREAMS", b"s", b"$"]), Where::Pinned);
        assert_eq!(route(b"XREAD", &[b"XREAD", b"STREAMS", b"block", b"0"]), Where::Shared);
        assert_eq!(route(b"SELECT", &[b"SELECT", b"1"]), Where::Select);
        assert_eq!(route(b"CLIENT", &[b"CLIENT", b"ID"]), Where::Local);
        let mut b = [0u8; 32];
        assert_eq!(upper(b"get", &mut b), Some(&b"GET"[..]));
    }
}
