//! Reply framing: the length of the next complete RESP2/RESP3 reply, for every type including
//! push (`>`), attributes (`|`, which precede the value they annotate), streamed strings
//! (`$?` + `;n` chunks) and streamed aggregates (`*?` ... `.`). Iterative, so hostile nesting
//! costs no stack; capped by [`Limits`].

use super::{find_crlf, parse_int, Limits, RespError};

/// What one element header turned out to be.
enum Elem {
    /// A complete scalar ending before this offset.
    Done(usize),
    /// An aggregate header: `count` children follow (`None` = streamed until `.`).
    Agg { count: Option<u64>, attr: bool, next: usize },
    /// The end marker `.` of a streamed aggregate.
    End(usize),
}

/// One open aggregate: children still expected (`u64::MAX` = streamed), and whether it is an
/// attribute (which does not count as its parent's child).
#[derive(Clone, Copy)]
struct Level {
    left: u64,
    attr: bool,
}

const STREAMED: u64 = u64::MAX;

/// Length of the complete reply at the start of `buf`, `Ok(None)` when more bytes are needed.
pub fn reply_len(buf: &[u8], lim: &Limits) -> Result<Option<usize>, RespError> {
    let (mut pos, first) = match element(buf, 0, lim)? {
        None => return Ok(None),
        Some(Elem::Done(n)) => return Ok(Some(n)),
        Some(Elem::End(_)) => return Err(RespError::Malformed("unexpected end marker")),
        Some(Elem::Agg { count, attr, next }) => (next, Level { left: count.unwrap_or(STREAMED), attr }),
    };
    if lim.max_depth == 0 {
        return Err(RespError::TooDeep { max: 0 });
    }
    // The outermost value is a virtual level expecting one child.
    let mut small = [Level { left: 0, attr: false }; 8];
    let mut spill: Vec<Level> = Vec::new();
    small[0] = Level { left: 1, attr: false };
    small[1] = first;
    let mut depth = 2usize;
    let mut aggs = 1usize; // open aggregates, for the depth cap
    loop {
        // Close every finished level.
        loop {
            let top = if depth <= small.len() { small[depth - 1] } else { spill[depth - 1 - small.len()] };
            if top.left != 0 {
                break;
            }
            if depth > small.len() {
                spill.pop();
            }
            depth -= 1;
            if depth == 0 {
                return Ok(Some(pos));
            }
            aggs -= 1;
            if !top.attr {
                child_done(&mut small, &mut spill, depth);
            }
            if depth == 1 {
                let outer = small[0];
                if outer.left == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        match element(buf, pos, lim)? {
            None => return Ok(None),
            Some(Elem::Done(n)) => {
                pos = n;
                child_done(&mut small, &mut spill, depth);
            }
            Some(Elem::End(n)) => {
                let top =
                    if depth <= small.len() { &mut small[depth - 1] } else { &mut spill[depth - 1 - small.len()] };
                if top.left != STREAMED {
                    return Err(RespError::Malformed("end marker outside a streamed aggregate"));
                }
                top.left = 0;
                pos = n;
            }
            Some(Elem::Agg { count, attr, next }) => {
                pos = next;
                aggs += 1;
                if aggs > lim.max_depth {
                    return Err(RespError::TooDeep { max: lim.max_depth });
                }
                let lvl = Level { left: count.unwrap_or(STREAMED), attr };
                if depth < small.len() {
                    small[depth] = lvl;
                } else {
                    spill.push(lvl);
                }
                depth += 1;
            }
        }
    }
}

fn child_done(small: &mut [Level; 8], spill: &mut [Level], depth: usize) {
    let top = if depth <= small.len() { &mut small[depth - 1] } else { &mut spill[depth - 1 - small.len()] };
    if top.left != STREAMED {
        top.left -= 1;
    }
}

fn line(buf: &[u8], pos: usize, max: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    Ok(find_crlf(buf, pos + 1, max)?.map(|cr| (&buf[pos + 1..cr], cr + 2)))
}

fn count(buf: &[u8], pos: usize, lim: &Limits, pairs: bool) -> Result<Option<Elem>, RespError> {
    let Some((l, next)) = line(buf, pos, 32)? else { return Ok(None) };
    let attr = buf[pos] == b'|';
    if l == b"?" {
        return Ok(Some(Elem::Agg { count: None, attr, next }));
    }
    let n = parse_int(l)?;
    if n < 0 {
        // RESP2 null array.
        return if n == -1 { Ok(Some(Elem::Done(next))) } else { Err(RespError::Malformed("negative length")) };
    }
    let total = if pairs { (n as u64).saturating_mul(2) } else { n as u64 };
    if total > lim.max_array as u64 {
        return Err(RespError::ArrayTooLong { len: n, max: lim.max_array });
    }
    Ok(Some(Elem::Agg { count: Some(total), attr, next }))
}

fn bulk(buf: &[u8], pos: usize, lim: &Limits) -> Result<Option<Elem>, RespError> {
    let Some((l, next)) = line(buf, pos, 32)? else { return Ok(None) };
    if l == b"?" && buf[pos] == b'$' {
        return streamed_string(buf, next, lim);
    }
    let n = parse_int(l)?;
    if n < 0 {
        return if n == -1 && buf[pos] == b'$' {
            Ok(Some(Elem::Done(next)))
        } else {
            Err(RespError::Malformed("negative length"))
        };
    }
    if n as u64 > lim.max_bulk as u64 {
        return Err(RespError::BulkTooLong { len: n, max: lim.max_bulk });
    }
    let end = next + n as usize;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(RespError::Malformed("bulk string not terminated by CRLF"));
    }
    Ok(Some(Elem::Done(end + 2)))
}

fn streamed_string(buf: &[u8], mut pos: usize, lim: &Limits) -> Result<Option<Elem>, RespError> {
    let mut total = 0u64;
    loop {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b';') => {}
            Some(_) => return Err(RespError::Malformed("expected ';' chunk in streamed string")),
        }
        let Some((l, next)) = line(buf, pos, 32)? else { return Ok(None) };
        let n = parse_int(l)?;
        if n < 0 {
            return Err(RespError::Malformed("negative chunk length"));
        }
        if n == 0 {
            return Ok(Some(Elem::Done(next)));
        }
        total += n as u64;
        if total > lim.max_bulk as u64 {
            return Err(RespError::BulkTooLong { len: total as i64, max: lim.max_bulk });
        }
        let end = next + n as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(RespError::Malformed("chunk not terminated by CRLF"));
        }
        pos = end + 2;
    }
}

fn element(buf: &[u8], pos: usize, lim: &Limits) -> Result<Option<Elem>, RespError> {
    let Some(&t) = buf.get(pos) else { return Ok(None) };
    match t {
        b'+' | b'-' | b'(' => Ok(line(buf, pos, lim.max_inline)?.map(|(_, n)| Elem::Done(n))),
        b':' => match line(buf, pos, 32)? {
            None => Ok(None),
            Some((l, n)) => parse_int(l).map(|_| Some(Elem::Done(n))),
        },
        b'_' | b'#' | b',' => match line(buf, pos, 512)? {
            None => Ok(None),
            Some((l, n)) => match (t, l) {
                (b'_', b"") | (b'#', b"t") | (b'#', b"f") => Ok(Some(Elem::Done(n))),
                (b',', l) if !l.is_empty() => Ok(Some(Elem::Done(n))),
                _ => Err(RespError::Malformed("bad null, boolean or double")),
            },
        },
        b'.' => match line(buf, pos, 0)? {
            None => Ok(None),
            Some((_, n)) => Ok(Some(Elem::End(n))),
        },
        b'$' | b'!' | b'=' => bulk(buf, pos, lim),
        b'*' | b'~' | b'>' => count(buf, pos, lim, false),
        b'%' | b'|' => count(buf, pos, lim, true),
        other => Err(RespError::UnknownType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(b: &[u8]) -> Result<Option<usize>, RespError> {
        reply_len(b, &Limits::SERVER)
    }

    #[test]
    fn golden_replies() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR unknown\r\n",
            b":-42\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",3.14\r\n",
            b",inf\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n",
            b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
            b"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n",
            b"*?\r\n:1\r\n:2\r\n*1\r\n:3\r\n.\r\n",
            b"%?\r\n+a\r\n:1\r\n.\r\n",
            b"*3\r\n*1\r\n*0\r\n%0\r\n|1\r\n+a\r\n+b\r\n:1\r\n",
        ];
        for c in cases {
            let mut v = c.to_vec();
            v.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(len(&v), Ok(Some(c.len())), "{}", String::from_utf8_lossy(c));
            for cut in 0..c.len() {
                assert_eq!(len(&c[..cut]), Ok(None), "{} cut {cut}", String::from_utf8_lossy(c));
            }
        }
    }

    #[test]
    fn rejects_malformed_and_oversized() {
        let lim = Limits { max_bulk: 4, max_array: 2, max_depth: 3, max_inline: 16 };
        assert!(matches!(reply_len(b"$5\r\n", &lim), Err(RespError::BulkTooLong { .. })));
        assert!(matches!(reply_len(b"*3\r\n", &lim), Err(RespError::ArrayTooLong { .. })));
        assert!(matches!(reply_len(b"%2\r\n", &lim), Err(RespError::ArrayTooLong { .. })));
        assert!(matches!(reply_len(b"*1\r\n*1\r\n*1\r\n*1\r\n", &lim), Err(RespError::TooDeep { .. })));
        assert!(matches!(reply_len(b"+aaaaaaaaaaaaaaaaaaaaaaaaa", &lim), Err(RespError::LineTooLong { .. })));
        assert!(matches!(reply_len(b"?x\r\n", &lim), Err(RespError::UnknownType(b'?'))));
        assert!(reply_len(b".\r\n", &lim).is_err());
        assert!(reply_len(b"*1\r\n.\r\n", &lim).is_err());
        assert!(reply_len(b"$1\r\nab\r\n", &lim).is_err());
        assert!(reply_len(b":1a\r\n", &lim).is_err());
        assert!(reply_len(b"#x\r\n", &lim).is_err());
        assert!(reply_len(b"$?\r\n;-1\r\n", &lim).is_err());
    }

    #[test]
    fn deep_nesting_is_iterative() {
        let mut v = Vec::new();
        for _ in 0..10_000 {
            v.extend_from_slice(b"*1\r\n");
        }
        v.extend_from_slice(b":1\r\n");
        let lim = Limits { max_depth: 20_000, ..Limits::SERVER };
        assert_eq!(reply_len(&v, &lim), Ok(Some(v.len())));
        assert!(matches!(reply_len(&v, &Limits::SERVER), Err(RespError::TooDeep { max: 64 })));
    }
}
