//! RESP2/RESP3 (Redis serialization protocol): request framing, reply framing, a small
//! borrowed value decoder and reply encoders. No I/O; every parser enforces [`Limits`].

pub mod error;
pub mod reply;
pub mod request;
pub mod value;

pub use error::RespError;
pub use reply::reply_len;
pub use request::{parse_request, Request};
pub use value::{decode, Value};

/// Hard caps applied while framing. A frame over a cap is an error, never a large allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (Redis's own `proto-max-bulk-len` default is 512 MiB).
    pub max_bulk: usize,
    /// Most elements in one array / map / set (maps count pairs twice).
    pub max_array: usize,
    /// Deepest nesting of aggregates (requests are always depth 1).
    pub max_depth: usize,
    /// Longest inline command or simple line (Redis: 64 KiB).
    pub max_inline: usize,
}

impl Limits {
    /// Defaults for client requests: 64 MiB bulk, 1M arguments, 64 KiB inline.
    pub const CLIENT: Limits = Limits { max_bulk: 64 << 20, max_array: 1 << 20, max_depth: 1, max_inline: 64 << 10 };
    /// Defaults for server replies: 512 MiB bulk, 16M elements, depth 64.
    pub const SERVER: Limits = Limits { max_bulk: 512 << 20, max_array: 16 << 20, max_depth: 64, max_inline: 1 << 20 };
}

/// Find `\r\n` at or after `from`; the index of `\r`.
#[inline]
pub(crate) fn find_crlf(buf: &[u8], from: usize, max: usize) -> Result<Option<usize>, RespError> {
    let end = buf.len().min(from.saturating_add(max).saturating_add(2));
    let hay = buf.get(from..end).unwrap_or(&[]);
    match hay.iter().position(|&b| b == b'\n') {
        Some(i) => {
            if i == 0 || hay[i - 1] != b'\r' {
                return Err(RespError::Malformed("line not terminated by CRLF"));
            }
            Ok(Some(from + i - 1))
        }
        None if hay.len() > max + 1 => Err(RespError::LineTooLong { max }),
        None => Ok(None),
    }
}

/// Parse a signed decimal integer as Redis writes it (no `+`, no spaces).
#[inline]
pub(crate) fn parse_int(s: &[u8]) -> Result<i64, RespError> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(RespError::Malformed("bad integer"));
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::Malformed("bad integer"));
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add((d - b'0') as i64))
            .ok_or(RespError::Malformed("integer overflow"))?;
    }
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod proptests;
