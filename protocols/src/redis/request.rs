//! Client requests: arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline
//! commands (`GET k\r\n`). Framing records argument ranges into the caller's buffer, so a
//! command can be inspected and forwarded as raw bytes without copying.

use super::{find_crlf, parse_int, Limits, RespError};
use std::ops::Range;

/// One framed request: its length in the input and where its arguments are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes the request occupies at the start of the input.
    pub len: usize,
    /// Whether it was an inline command (must be re-encoded as RESP before forwarding).
    pub inline: bool,
}

/// Frame the request at the start of `buf`. On success, `args` holds one byte range per
/// argument (cleared first; empty for blank lines and `*0`, which Redis ignores). `Ok(None)`:
/// need more bytes.
pub fn parse_request(buf: &[u8], lim: &Limits, args: &mut Vec<Range<usize>>) -> Result<Option<Request>, RespError> {
    args.clear();
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, lim, args),
        Some(_) => parse_inline(buf, lim, args),
    }
}

fn parse_array(buf: &[u8], lim: &Limits, args: &mut Vec<Range<usize>>) -> Result<Option<Request>, RespError> {
    let Some(cr) = find_crlf(buf, 1, 32)? else { return Ok(None) };
    let n = parse_int(&buf[1..cr]).map_err(|_| RespError::Malformed("invalid multibulk length"))?;
    if n > lim.max_array as i64 {
        return Err(RespError::ArrayTooLong { len: n, max: lim.max_array });
    }
    let mut pos = cr + 2;
    if n <= 0 {
        return Ok(Some(Request { len: pos, inline: false }));
    }
    args.reserve(n as usize);
    for _ in 0..n {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(_) => return Err(RespError::Malformed("expected '$' in multibulk request")),
        }
        let Some(cr) = find_crlf(buf, pos + 1, 32)? else { return Ok(None) };
        let len = parse_int(&buf[pos + 1..cr]).map_err(|_| RespError::Malformed("invalid bulk length"))?;
        if len < 0 {
            return Err(RespError::Malformed("invalid bulk length"));
        }
        if len as u64 > lim.max_bulk as u64 {
            return Err(RespError::BulkTooLong { len, max: lim.max_bulk });
        }
        let start = cr + 2;
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(RespError::Malformed("bulk string not terminated by CRLF"));
        }
        args.push(start..end);
        pos = end + 2;
    }
    Ok(Some(Request { len: pos, inline: false }))
}

fn parse_inline(buf: &[u8], lim: &Limits, args: &mut Vec<Range<usize>>) -> Result<Option<Request>, RespError> {
    let scan = &buf[..buf.len().min(lim.max_inline + 1)];
    let Some(nl) = scan.iter().position(|&b| b == b'\n') else {
        if buf.len() > lim.max_inline {
            return Err(RespError::LineTooLong { max: lim.max_inline });
        }
        return Ok(None);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    let mut i = 0;
    while i < line_end {
        let b = buf[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b == b'"' || b == b'\'' {
            let start = i + 1;
            let close = buf[start..line_end].iter().position(|&c| c == b || (b == b'"' && c == b'\\'));
            match close {
                Some(off) if buf[start + off] == b => {
                    let end = start + off;
                    if end + 1 < line_end && !buf[end + 1].is_ascii_whitespace() {
                        return Err(RespError::Malformed("closing quote must be followed by a space"));
                    }
                    args.push(start..end);
                    i = end + 1;
                }
                Some(_) => return Err(RespError::Malformed("escapes in inline commands are not supported")),
                None => return Err(RespError::Malformed("unbalanced quotes in request")),
            }
        } else {
            let start = i;
            while i < line_end && !buf[i].is_ascii_whitespace() {
                i += 1;
            }
            args.push(start..i);
        }
        if args.len() > lim.max_array {
            return Err(RespError::ArrayTooLong { len: args.len() as i64, max: lim.max_array });
        }
    }
    Ok(Some(Request { len: nl + 1, inline: true }))
}

/// Append `args` as a RESP array of bulk strings (how inline commands are forwarded).
pub fn encode_command<'a>(out: &mut Vec<u8>, args: impl ExactSizeIterator<Item = &'a [u8]>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of<'a>(buf: &'a [u8], r: &[Range<usize>]) -> Vec<&'a [u8]> {
        r.iter().map(|r| &buf[r.clone()]).collect()
    }

    #[test]
    fn golden_array_request() {
        let buf = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nrest";
        let mut a = Vec::new();
        let r = parse_request(buf, &Limits::CLIENT, &mut a).unwrap().unwrap();
        assert_eq!(r, Request { len: 22, inline: false });
        assert_eq!(args_of(buf, &a), vec![&b"GET"[..], b"key"]);
        for cut in 0..22 {
            assert_eq!(parse_request(&buf[..cut], &Limits::CLIENT, &mut a).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn golden_inline() {
        let buf = b"SET  k \"a b\" 'c'\r\n";
        let mut a = Vec::new();
        let r = parse_request(buf, &Limits::CLIENT, &mut a).unwrap().unwrap();
        assert!(r.inline);
        assert_eq!(r.len, buf.len());
        assert_eq!(args_of(buf, &a), vec![&b"SET"[..], b"k", b"a b", b"c"]);
        let r = parse_request(b"PING\n", &Limits::CLIENT, &mut a).unwrap().unwrap();
        assert_eq!((r.len, a.len()), (5, 1));
        let r = parse_request(b"\r\n", &Limits::CLIENT, &mut a).unwrap().unwrap();
        assert_eq!((r.len, a.len()), (2, 0));
    }

    #[test]
    fn caps_and_malformed() {
        let mut a = Vec::new();
        let lim = Limits { max_bulk: 10, max_array: 3, max_depth: 1, max_inline: 8 };
        assert!(matches!(parse_request(b"*4\r\n", &lim, &mut a), Err(RespError::ArrayTooLong { .. })));
        assert!(matches!(parse_request(b"*1\r\n$11\r\n", &lim, &mut a), Err(RespError::BulkTooLong { .. })));
        assert!(matches!(parse_request(b"GET aaaaaaaaaaaa", &lim, &mut a), Err(RespError::LineTooLong { .. })));
        assert!(parse_request(b"*1\r\n:1\r\n", &lim, &mut a).is_err());
        assert!(parse_request(b"*x\r\n", &lim, &mut a).is_err());
        assert!(parse_request(b"*1\r\n$1\r\nab\r\n", &lim, &mut a).is_err());
        assert!(parse_request(b"GET \"a\r\n", &lim, &mut a).is_err());
        assert!(parse_request(b"*1\n", &lim, &mut a).is_err());
        assert!(parse_request(b"*1\r\n$-1\r\n", &lim, &mut a).is_err());
    }

    #[test]
    fn encode_then_parse() {
        let mut out = Vec::new();
        encode_command(&mut out, [&b"SET"[..], b"k", b""].into_iter());
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
