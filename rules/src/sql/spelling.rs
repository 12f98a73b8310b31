//! Spelling rules the lexer needs: MySQL numbers versus digit-led identifiers, Postgres
//! `U&"..."` Unicode escapes, and case-folded keys of short words.

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

/// [`wkey`](super::lexer::wkey) a word at a time (the lexer's hot path): the bytes in one `u64`, ASCII capitals
/// found with the usual carry tricks and lowered by setting their 0x20 bit.
#[inline]
pub(crate) fn wkey_fast(w: &str) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let b = w.as_bytes();
    if b.len() > 8 {
        return 0;
    }
    let mut buf = [0u8; 8];
    buf[..b.len()].copy_from_slice(b);
    let x = u64::from_le_bytes(buf);
    let low7 = x & !HIGH;
    // High bit of each byte: at least b'A', above b'Z', and was ASCII to begin with.
    let ge_a = low7 + ONES * (0x80 - u64::from(b'A'));
    let gt_z = low7 + ONES * (0x7f - u64::from(b'Z'));
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}
