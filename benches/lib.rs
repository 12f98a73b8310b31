//! Shared inputs for dgf's criterion benchmarks (see benches/benches/).

use bytes::{BufMut, BytesMut};

/// A server response to `SELECT abalance FROM pgbench_accounts WHERE aid = $1`: RowDescription,
/// one DataRow, CommandComplete, ReadyForQuery; repeated `n` times.
pub fn pgbench_select_responses(n: usize) -> BytesMut {
    let mut b = BytesMut::new();
    for _ in 0..n {
        b.put_slice(b"T\0\0\0\x21\0\x01abalance\0\0\0\x40\x0f\0\x03\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0");
        b.put_slice(b"D\0\0\0\x0b\0\x01\0\0\0\x011");
        b.put_slice(b"C\0\0\0\x0dSELECT 1\0");
        b.put_slice(b"Z\0\0\0\x05I");
    }
    b
}
