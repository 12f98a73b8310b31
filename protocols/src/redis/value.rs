//! A borrowed RESP value tree for the few replies the proxy must look inside (HELLO, pub/sub
//! messages, masked replies), and encoders that write RESP2 or RESP3 as the client speaks.

use super::{find_crlf, parse_int, reply_len, Limits, RespError};

/// One decoded RESP2/RESP3 value, borrowing from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `+...`
    Simple(&'a [u8]),
    /// `-...`
    Error(&'a [u8]),
    /// `:n`
    Int(i64),
    /// `$n` (None: RESP2 null bulk).
    Bulk(Option<&'a [u8]>),
    /// `*n` (None: RESP2 null array).
    Array(Option<Vec<Value<'a>>>),
    /// `_`
    Null,
    /// `#t` / `#f`
    Bool(bool),
    /// `,` (kept as text).
    Double(&'a [u8]),
    /// `(` (kept as text).
    BigNumber(&'a [u8]),
    /// `!n`
    BulkError(&'a [u8]),
    /// `=n`, format and text together (`txt:...`).
    Verbatim(&'a [u8]),
    /// `%n`
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// `~n`
    Set(Vec<Value<'a>>),
    /// `>n`
    Push(Vec<Value<'a>>),
    /// `|n` followed by the value it annotates.
    Attributed(Vec<(Value<'a>, Value<'a>)>, Box<Value<'a>>),
}

/// Decode the complete reply at the start of `buf` (framed first with [`reply_len`], so the
/// caps apply and streamed types are checked). Streamed strings and aggregates are not
/// decoded (`Malformed`): Redis does not send them today.
pub fn decode<'a>(buf: &'a [u8], lim: &Limits) -> Result<Option<(Value<'a>, usize)>, RespError> {
    let Some(n) = reply_len(buf, lim)? else { return Ok(None) };
    let (v, used) = value(&buf[..n], 0)?;
    debug_assert_eq!(used, n);
    Ok(Some((v, used)))
}

fn line(buf: &[u8], pos: usize) -> Result<(&[u8], usize), RespError> {
    let cr = find_crlf(buf, pos + 1, buf.len())?.ok_or(RespError::Malformed("truncated"))?;
    Ok((&buf[pos + 1..cr], cr + 2))
}

fn value(buf: &[u8], pos: usize) -> Result<(Value<'_>, usize), RespError> {
    let t = *buf.get(pos).ok_or(RespError::Malformed("truncated"))?;
    let (l, next) = line(buf, pos)?;
    if l == b"?" {
        return Err(RespError::Malformed("streamed values are framed but not decoded"));
    }
    Ok(match t {
        b'+' => (Value::Simple(l), next),
        b'-' => (Value::Error(l), next),
        b':' => (Value::Int(parse_int(l)?), next),
        b'_' => (Value::Null, next),
        b'#' => (Value::Bool(l == b"t"), next),
        b',' => (Value::Double(l), next),
        b'(' => (Value::BigNumber(l), next),
        b'$' | b'!' | b'=' => {
            let n = parse_int(l)?;
            if n < 0 {
                return Ok((Value::Bulk(None), next));
            }
            let body = buf.get(next..next + n as usize).ok_or(RespError::Malformed("truncated"))?;
            let v = match t {
                b'$' => Value::Bulk(Some(body)),
                b'!' => Value::BulkError(body),
                _ => Value::Verbatim(body),
            };
            (v, next + n as usize + 2)
        }
        b'*' | b'~' | b'>' => {
            let n = parse_int(l)?;
            if n < 0 {
                return Ok((Value::Array(None), next));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut p = next;
            for _ in 0..n {
                let (v, q) = value(buf, p)?;
                items.push(v);
                p = q;
            }
            let v = match t {
                b'*' => Value::Array(Some(items)),
                b'~' => Value::Set(items),
                _ => Value::Push(items),
            };
            (v, p)
        }
        b'%' | b'|' => {
            let n = parse_int(l)?;
            let mut pairs = Vec::with_capacity((n.max(0) as usize).min(1024));
            let mut p = next;
            for _ in 0..n {
                let (k, q) = value(buf, p)?;
                let (v, q) = value(buf, q)?;
                pairs.push((k, v));
                p = q;
            }
            if t == b'%' {
                (Value::Map(pairs), p)
            } else {
                let (inner, q) = value(buf, p)?;
                (Value::Attributed(pairs, Box::new(inner)), q)
            }
        }
        other => return Err(RespError::UnknownType(other)),
    })
}

impl Value<'_> {
    /// Encode exactly as decoded (RESP3 types stay RESP3).
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn head(out: &mut Vec<u8>, t: u8, n: usize) {
            out.push(t);
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        fn text(out: &mut Vec<u8>, t: u8, l: &[u8]) {
            out.push(t);
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
        }
        match self {
            Value::Simple(l) => text(out, b'+', l),
            Value::Error(l) => text(out, b'-', l),
            Value::Int(i) => text(out, b':', i.to_string().as_bytes()),
            Value::Null => out.extend_from_slice(b"_\r\n"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::Double(l) => text(out, b',', l),
            Value::BigNumber(l) => text(out, b'(', l),
            Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Value::Bulk(Some(b)) | Value::BulkError(b) | Value::Verbatim(b) => {
                let t = match self {
                    Value::Bulk(_) => b'$',
                    Value::BulkError(_) => b'!',
                    _ => b'=',
                };
                head(out, t, b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(Some(items)) | Value::Set(items) | Value::Push(items) => {
                let t = match self {
                    Value::Array(_) => b'*',
                    Value::Set(_) => b'~',
                    _ => b'>',
                };
                head(out, t, items.len());
                for i in items {
                    i.encode(out);
                }
            }
            Value::Map(pairs) | Value::Attributed(pairs, _) => {
                head(out, if matches!(self, Value::Map(_)) { b'%' } else { b'|' }, pairs.len());
                for (k, v) in pairs {
                    k.encode(out);
                    v.encode(out);
                }
                if let Value::Attributed(_, inner) = self {
                    inner.encode(out);
                }
            }
        }
    }

    /// Bytes of a simple or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(Some(b)) | Value::Verbatim(b) => Some(b),
            _ => None,
        }
    }
}

/// Reply encoders for the protocol version a client negotiated (2 or 3).
pub mod enc {
    fn head(out: &mut Vec<u8>, t: u8, n: usize) {
        out.push(t);
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    /// `+s`
    pub fn simple(out: &mut Vec<u8>, s: &str) {
        out.push(b'+');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    /// `-msg` (CR/LF in the message become spaces).
    pub fn error(out: &mut Vec<u8>, msg: &str) {
        out.push(b'-');
        out.extend(msg.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
        out.extend_from_slice(b"\r\n");
    }
    /// `:n`
    pub fn int(out: &mut Vec<u8>, n: i64) {
        out.push(b':');
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    /// `$n`
    pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
        head(out, b'$', b.len());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }
    /// Null: `$-1` in RESP2, `_` in RESP3.
    pub fn null(out: &mut Vec<u8>, proto: u8) {
        out.extend_from_slice(if proto >= 3 { b"_\r\n" } else { b"$-1\r\n" });
    }
    /// Array header.
    pub fn array(out: &mut Vec<u8>, n: usize) {
        head(out, b'*', n);
    }
    /// Map header (`%n` in RESP3, `*2n` in RESP2).
    pub fn map(out: &mut Vec<u8>, proto: u8, n: usize) {
        if proto >= 3 {
            head(out, b'%', n)
        } else {
            head(out, b'*', 2 * n)
        }
    }
    /// Push header (`>n` in RESP3, `*n` in RESP2).
    pub fn push(out: &mut Vec<u8>, proto: u8, n: usize) {
        head(out, if proto >= 3 { b'>' } else { b'*' }, n)
    }
}
