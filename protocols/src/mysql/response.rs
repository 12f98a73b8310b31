//! The response tracker: follows the packets a server sends for one command, says where the
//! response ends, and translates between the upstream's framing (classic EOF packets, session
//! tracking on) and the client's (CLIENT_DEPRECATE_EOF or not, no session tracking).
//!
//! States of a result-set response (text or binary):
//! ```text
//! Start --OK(no MORE_RESULTS)/ERR--> Done
//! Start --OK(MORE_RESULTS)--> Start
//! Start --column count n--> Columns(n) --n defs--> ColumnsEof --EOF--> Rows
//! Rows --row--> Rows;  Rows --EOF/ERR--> Done (or Start with MORE_RESULTS_EXISTS)
//! ColumnsEof --EOF with CURSOR_EXISTS--> Done (rows come with COM_STMT_FETCH)
//! ```
//! For a client with CLIENT_DEPRECATE_EOF the EOF after column definitions is dropped and the
//! terminal EOF becomes an OK packet with header 0xFE. Frames of a packet of 16 MiB or more
//! are passed through without interpretation.

use super::consts::{cap, status};
use super::error::MyProtoError;
use super::frame::MAX_PAYLOAD;
use super::packets::{eof_status, eof_warnings, is_eof, is_err, ErrPacket, OkPacket, PrepareOk, Reader};
use bytes::BytesMut;

/// What kind of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A single OK / ERR (or EOF for COM_SET_OPTION).
    Ok,
    /// One or more result sets (COM_QUERY, COM_STMT_EXECUTE).
    ResultSet,
    /// COM_STMT_PREPARE.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to EOF.
    FieldList,
    /// COM_STMT_FETCH: rows up to EOF.
    Fetch,
    /// COM_STATISTICS: one string packet.
    Raw,
}

/// What to do with the packet just fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Forward it unchanged (apart from the sequence id).
    Pass,
    /// Leave it out.
    Drop,
    /// Send this payload instead.
    Rewrite(Vec<u8>),
}

/// What the packet just fed was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// Anything else (EOF after definitions, prepare OK, statistics, ...).
    #[default]
    Other,
    /// Column count of a result set.
    ColumnCount,
    /// A column definition of a result set.
    ColumnDef,
    /// A row (first frame, when it spans several).
    Row,
    /// A later frame of a packet of 16 MiB or more.
    Continuation,
    /// End of a result set (EOF / OK 0xFE).
    ResultEnd,
    /// OK packet.
    Ok,
    /// ERR packet.
    Err,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Start,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepParams(u16, u16),
    PrepParamsEof(u16),
    PrepColumns(u16),
    PrepColumnsEof,
    FieldDefs,
    Done,
}

/// Follows one command's response.
#[derive(Debug, Clone)]
pub struct Tracker {
    expect: Expect,
    st: St,
    server_caps: u32,
    client_caps: u32,
    continuation: bool,
    /// Status flags of the last OK / EOF.
    pub status: Option<u16>,
    /// The last OK packet (decoded).
    pub last_ok: Option<OkPacket>,
    /// The error that ended the response, if any.
    pub error: Option<ErrPacket>,
    /// COM_STMT_PREPARE_OK, once seen.
    pub prepare_ok: Option<PrepareOk>,
    /// Whether any OK / EOF reported SERVER_SESSION_STATE_CHANGED.
    pub state_changed: bool,
    /// Schema changes reported by session tracking (last wins).
    pub schema: Option<String>,
    /// Result sets seen.
    pub result_sets: u32,
    /// Rows seen.
    pub rows: u64,
    /// What the last packet fed was.
    pub last: Kind,
}

impl Tracker {
    /// Track a response of kind `expect` on an upstream with `server_caps` for a client with
    /// `client_caps`.
    pub fn new(expect: Expect, server_caps: u32, client_caps: u32) -> Self {
        Self {
            expect,
            st: St::Start,
            server_caps,
            client_caps,
            continuation: false,
            status: None,
            last_ok: None,
            error: None,
            prepare_ok: None,
            state_changed: false,
            schema: None,
            result_sets: 0,
            rows: 0,
            last: Kind::Other,
        }
    }

    /// Whether the response is complete.
    pub fn done(&self) -> bool {
        self.st == St::Done
    }

    fn client_deprecate_eof(&self) -> bool {
        self.client_caps & cap::DEPRECATE_EOF != 0
    }

    fn note_status(&mut self, st: u16) {
        self.status = Some(st);
        if st & status::SESSION_STATE_CHANGED != 0 {
            self.state_changed = true;
        }
    }

    fn ok(&mut self, payload: &[u8]) -> Result<Out, MyProtoError> {
        let ok = OkPacket::parse(payload, self.server_caps)?;
        self.note_status(ok.status);
        if let Some(s) = ok.schema_change() {
            self.schema = Some(s);
        }
        self.st = if ok.status & status::MORE_RESULTS_EXISTS != 0 { St::Start } else { St::Done };
        let same = self.server_caps & cap::SESSION_TRACK == self.client_caps & cap::SESSION_TRACK;
        let out = if same {
            Out::Pass
        } else {
            let mut b = BytesMut::with_capacity(payload.len());
            ok.encode(&mut b, payload[0], self.client_caps);
            Out::Rewrite(b.to_vec())
        };
        self.last_ok = Some(ok);
        Ok(out)
    }

    fn err(&mut self, payload: &[u8]) -> Out {
        self.error = ErrPacket::parse(payload).ok();
        self.st = St::Done;
        Out::Pass
    }

    /// The terminal EOF of a result set / field list, in the client's form.
    fn end_eof(&mut self, payload: &[u8], more_possible: bool) -> Out {
        let st = eof_status(payload);
        self.note_status(st);
        self.st = if more_possible && st & status::MORE_RESULTS_EXISTS != 0 { St::Start } else { St::Done };
        if self.client_deprecate_eof() && self.server_caps & cap::DEPRECATE_EOF == 0 {
            let ok = OkPacket { status: st, warnings: eof_warnings(payload), ..Default::default() };
            let mut b = BytesMut::new();
            ok.encode(&mut b, 0xfe, self.client_caps);
            Out::Rewrite(b.to_vec())
        } else {
            Out::Pass
        }
    }

    /// An intermediate EOF (after definitions): dropped for DEPRECATE_EOF clients.
    fn mid_eof(&mut self, payload: &[u8]) -> Out {
        self.note_status(eof_status(payload));
        if self.client_deprecate_eof() {
            Out::Drop
        } else {
            Out::Pass
        }
    }

    /// Feed the next frame payload from the server.
    pub fn feed(&mut self, payload: &[u8]) -> Result<Out, MyProtoError> {
        let before = self.st;
        let was_continuation = self.continuation;
        let out = self.feed_inner(payload)?;
        let after = self.st;
        let head = payload.first().copied();
        self.last = if was_continuation {
            Kind::Continuation
        } else if head == Some(0xff) && self.error.is_some() {
            Kind::Err
        } else {
            match (self.expect, before, after) {
                (Expect::ResultSet, St::Start, St::Columns(_) | St::ColumnsEof) => Kind::ColumnCount,
                (Expect::ResultSet, St::Start, _) => Kind::Ok,
                (Expect::ResultSet, St::Columns(_), _) => Kind::ColumnDef,
                (Expect::ResultSet | Expect::Fetch, St::Rows | St::Start, St::Rows) => Kind::Row,
                (Expect::ResultSet | Expect::Fetch, St::Rows, _) => Kind::ResultEnd,
                _ => Kind::Other,
            }
        };
        Ok(out)
    }

    fn feed_inner(&mut self, payload: &[u8]) -> Result<Out, MyProtoError> {
        if self.continuation {
            self.continuation = payload.len() == MAX_PAYLOAD;
            return Ok(Out::Pass);
        }
        if payload.len() == MAX_PAYLOAD {
            // first frame of a huge row / definition: only rows and definitions get that big
            self.continuation = true;
            return match self.st {
                St::Rows | St::FieldDefs => {
                    self.rows += 1;
                    Ok(Out::Pass)
                }
                St::Columns(n) if n > 0 => {
                    self.st = if n == 1 { St::ColumnsEof } else { St::Columns(n - 1) };
                    Ok(Out::Pass)
                }
                _ => Err(MyProtoError::Malformed("oversized packet where none was expected")),
            };
        }
        let Some(&head) = payload.first() else { return Err(MyProtoError::Truncated("server response")) };
        match (self.expect, self.st) {
            (_, St::Done) => Err(MyProtoError::Malformed("packet after the end of the response")),
            (_, _) if head == 0xff && !matches!(self.st, St::Columns(_) | St::PrepParams(..) | St::PrepColumns(_)) => {
                Ok(self.err(payload))
            }
            (Expect::Raw, _) => {
                self.st = St::Done;
                Ok(Out::Pass)
            }
            (Expect::Ok, _) => {
                if is_eof(payload) {
                    self.note_status(eof_status(payload));
                    self.st = St::Done;
                    return Ok(Out::Pass);
                }
                self.ok(payload)
            }
            (Expect::ResultSet, St::Start) => match head {
                0x00 => self.ok(payload),
                0xfb => Err(MyProtoError::Malformed("LOCAL INFILE request from a server that was not offered it")),
                _ => {
                    let n = Reader::new(payload, "column count").lenenc()?;
                    if n == 0 || n > 4096 {
                        return Err(MyProtoError::Malformed("invalid column count"));
                    }
                    self.result_sets += 1;
                    self.st = St::Columns(n);
                    Ok(Out::Pass)
                }
            },
            (Expect::ResultSet, St::Columns(n)) => {
                self.st = if n == 1 { St::ColumnsEof } else { St::Columns(n - 1) };
                if self.server_caps & cap::DEPRECATE_EOF != 0 && n == 1 {
                    self.st = St::Rows;
                }
                Ok(Out::Pass)
            }
            (Expect::ResultSet, St::ColumnsEof) => {
                if !is_eof(payload) {
                    return Err(MyProtoError::Malformed("expected EOF after column definitions"));
                }
                let st = eof_status(payload);
                if st & status::CURSOR_EXISTS != 0 {
                    self.note_status(st);
                    self.st = St::Done;
                    return Ok(Out::Pass);
                }
                self.st = St::Rows;
                Ok(self.mid_eof(payload))
            }
            (Expect::ResultSet | Expect::Fetch, St::Rows | St::Start) => {
                if is_eof(payload) {
                    return Ok(self.end_eof(payload, self.expect == Expect::ResultSet));
                }
                if self.expect == Expect::Fetch && self.st == St::Start {
                    self.st = St::Rows;
                }
                self.rows += 1;
                Ok(Out::Pass)
            }
            (Expect::Prepare, St::Start) => {
                let p = PrepareOk::parse(payload)?;
                self.prepare_ok = Some(p);
                self.st = match (p.num_params, p.num_columns) {
                    (0, 0) => St::Done,
                    (0, c) => St::PrepColumns(c),
                    (n, c) => St::PrepParams(n, c),
                };
                Ok(Out::Pass)
            }
            (Expect::Prepare, St::PrepParams(n, c)) => {
                self.st = if n == 1 { St::PrepParamsEof(c) } else { St::PrepParams(n - 1, c) };
                Ok(Out::Pass)
            }
            (Expect::Prepare, St::PrepParamsEof(c)) => {
                if !is_eof(payload) {
                    return Err(MyProtoError::Malformed("expected EOF after parameter definitions"));
                }
                self.st = if c == 0 { St::Done } else { St::PrepColumns(c) };
                Ok(self.mid_eof(payload))
            }
            (Expect::Prepare, St::PrepColumns(c)) => {
                self.st = if c == 1 { St::PrepColumnsEof } else { St::PrepColumns(c - 1) };
                Ok(Out::Pass)
            }
            (Expect::Prepare, St::PrepColumnsEof) => {
                if !is_eof(payload) {
                    return Err(MyProtoError::Malformed("expected EOF after column definitions"));
                }
                self.st = St::Done;
                Ok(self.mid_eof(payload))
            }
            (Expect::FieldList, St::Start | St::FieldDefs) => {
                if is_eof(payload) {
                    return Ok(self.end_eof(payload, false));
                }
                self.st = St::FieldDefs;
                Ok(Out::Pass)
            }
            _ => Err(MyProtoError::Malformed("unexpected packet in response")),
        }
    }
}

/// Whether a payload is an ERR packet (re-exported for callers that peek).
pub fn is_error(payload: &[u8]) -> bool {
    is_err(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::packets::put_lenenc_bytes;

    fn coldef() -> Vec<u8> {
        let mut p = BytesMut::new();
        for s in [&b"def"[..], b"db", b"t", b"t", b"a", b"a"] {
            put_lenenc_bytes(&mut p, s);
        }
        p.extend_from_slice(&[0x0c, 45, 0, 0, 1, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        p.to_vec()
    }

    const EOF_MORE: [u8; 5] = [0xfe, 0, 0, 0x0a, 0]; // AUTOCOMMIT | MORE_RESULTS
    const EOF_END: [u8; 5] = [0xfe, 0, 0, 0x02, 0];

    #[test]
    fn multi_result_classic_client() {
        let mut t = Tracker::new(Expect::ResultSet, cap::SESSION_TRACK, 0);
        assert_eq!(t.feed(&[1]).unwrap(), Out::Pass);
        assert_eq!(t.feed(&coldef()).unwrap(), Out::Pass);
        assert_eq!(t.feed(&EOF_END).unwrap(), Out::Pass);
        assert_eq!(t.feed(&[1, b'x']).unwrap(), Out::Pass);
        assert_eq!(t.feed(&EOF_MORE).unwrap(), Out::Pass);
        assert!(!t.done());
        // second statement: OK packet with session state (status changed) rewritten without it
        let ok = [0x00, 0x01, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00, 0x07, 0x01, 0x05, 0x04, b't', b'e', b's', b't'];
        assert_eq!(t.feed(&ok).unwrap(), Out::Rewrite(vec![0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00]));
        assert!(t.done() && t.state_changed);
        assert_eq!(t.schema.as_deref(), Some("test"));
        assert_eq!((t.result_sets, t.rows), (1, 1));
    }

    #[test]
    fn packet_kinds() {
        let mut t = Tracker::new(Expect::ResultSet, 0, 0);
        t.feed(&[1]).unwrap();
        assert_eq!(t.last, Kind::ColumnCount);
        t.feed(&coldef()).unwrap();
        assert_eq!(t.last, Kind::ColumnDef);
        t.feed(&EOF_END).unwrap();
        assert_eq!(t.last, Kind::Other);
        t.feed(&[1, b'x']).unwrap();
        assert_eq!(t.last, Kind::Row);
        t.feed(&EOF_MORE).unwrap();
        assert_eq!(t.last, Kind::ResultEnd);
        t.feed(&[0, 0, 0, 2, 0, 0, 0]).unwrap();
        assert_eq!(t.last, Kind::Ok);
        let mut t = Tracker::new(Expect::ResultSet, 0, 0);
        t.feed(b"\xff\x10\x04#HY000x").unwrap();
        assert_eq!(t.last, Kind::Err);
    }

    #[test]
    fn deprecate_eof_client_translation() {
        let mut t = Tracker::new(Expect::ResultSet, 0, cap::DEPRECATE_EOF);
        t.feed(&[1]).unwrap();
        t.feed(&coldef()).unwrap();
        assert_eq!(t.feed(&EOF_END).unwrap(), Out::Drop);
        // a row that starts with 0xfe but is long is a row
        let mut row = vec![0xfe];
        row.extend_from_slice(&[0u8; 9]);
        assert_eq!(t.feed(&row).unwrap(), Out::Pass);
        assert_eq!(t.feed(&EOF_END).unwrap(), Out::Rewrite(vec![0xfe, 0, 0, 0x02, 0, 0, 0]));
        assert!(t.done());
    }

    #[test]
    fn error_mid_rows_and_prepare() {
        let mut t = Tracker::new(Expect::ResultSet, 0, 0);
        t.feed(&[1]).unwrap();
        t.feed(&coldef()).unwrap();
        t.feed(&EOF_END).unwrap();
        t.feed(b"\xff\x10\x04#HY000boom").unwrap();
        assert!(t.done());
        assert_eq!(t.error.as_ref().unwrap().errno, 1040);
        let mut t = Tracker::new(Expect::Prepare, 0, cap::DEPRECATE_EOF);
        t.feed(&[0, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]).unwrap();
        assert_eq!(t.prepare_ok.unwrap().num_params, 2);
        t.feed(&coldef()).unwrap();
        t.feed(&coldef()).unwrap();
        assert_eq!(t.feed(&EOF_END).unwrap(), Out::Drop);
        t.feed(&coldef()).unwrap();
        assert!(!t.done());
        assert_eq!(t.feed(&EOF_END).unwrap(), Out::Drop);
        assert!(t.done());
        assert!(t.feed(&EOF_END).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0u32..200 {
            let mut t = Tracker::new(Expect::ResultSet, u32::MAX, 0);
            for i in 0..20u32 {
                let n = ((seed * 31 + i * 7) % 12) as usize;
                let p: Vec<u8> = (0..n).map(|j| (seed as usize * 13 + j * 101 + i as usize) as u8).collect();
                if t.feed(&p).is_err() || t.done() {
                    break;
                }
            }
        }
    }
}
