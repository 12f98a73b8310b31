//! Spelling rules the lexer needs: MySQL numbers versus digit-led identifiers, and Postgres
//! `U&"..."` Unicode escapes.

/// Does a MySQL run of identifier characters starting with a digit denote a number?
pub(crate) fn mysql_numeric_prefix(run: &str, next: Option<u8>, next2: Option<u8>) -> bool {
    let b = run.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if let Some(hex) = run.strip_prefix("0x") {
        return !hex.is_empty() && hex.bytes().all(|c| c.is_ascii_hexdigit());
    }
    if let Some(bin) = run.strip_prefix("0b") {
        return !bin.is_empty() && bin.bytes().all(|c| c == b'0' || c == b'1');
    }
    // 1e5, 1e+5 (the run stops at the sign).
    if let Some(p) = b.iter().position(|c| *c == b'e' || *c == b'E') {
        let (m, e) = (&b[..p], &b[p + 1..]);
        if !m.is_empty() && m.iter().all(u8::is_ascii_digit) {
            if !e.is_empty() && e.iter().all(u8::is_ascii_digit) {
                return true;
            }
            if e.is_empty() && matches!(next, Some(b'+' | b'-')) && next2.is_some_and(|c| c.is_ascii_digit()) {
                return true;
            }
        }
    }
    false
}

/// Decode a Postgres `U&"..."` body with the default escape character `\`.
pub(crate) fn decode_uescape(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut it = body.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let n = match it.peek() {
            Some('\\') => {
                it.next();
                out.push('\\');
                continue;
            }
            Some('+') => {
                it.next();
                6
            }
            _ => 4,
        };
        let hex: String = (0..n).filter_map(|_| it.next()).collect();
        if hex.len() != n {
            return None;
        }
        let cp = u32::from_str_radix(&hex, 16).ok()?;
        out.push(char::from_u32(cp).filter(|c| *c != '\0')?);
    }
    Some(out)
}
