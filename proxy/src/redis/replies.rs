//! Per-reply work while governance needs it: masking each reply and completing its audit
//! record, and the session's audit records, handed to the writer once per client batch.

use super::govern;
use super::session::Session;
use dgf_protocols::redis::Limits;

impl Session {
    /// Queue the record of a command answered without a reply to wait for: its check-time
    /// fields are in `part`.
    pub(super) fn audit_now(&mut self, a: govern::AuditPart, part: &[u8], error: Option<&str>) {
        self.audit_tail.clear();
        govern::audit_tail(&mut self.audit_tail, None, None, error);
        self.start_audit_batch();
        self.audit_out.push(a.millis, &[&self.audit_prefix, part, &self.audit_tail]);
    }

    /// Before the first record of a batch, take a buffer (a spare from the audit writer, sized
    /// like the last batch) if the session holds none.
    fn start_audit_batch(&mut self) {
        if self.audit_out.is_empty() && self.audit_out.capacity() == 0 {
            self.audit_out = self.shared.governance.audit_batch(self.audit_room.max(1024));
        }
    }

    /// Hand the queued audit records to the writer (one queue send).
    pub(super) fn flush_audit(&mut self) {
        if self.audit_out.is_empty() {
            return;
        }
        // The next batch is sized like this one (no regrowth while it fills), and taken only
        // when it starts: an idle session holds no buffer.
        self.audit_room = self.audit_out.bytes();
        let batch = std::mem::take(&mut self.audit_out);
        if !self.shared.governance.record_batch(batch) {
            self.route.metrics.error("dgf_audit");
        }
    }

    /// Mask and audit replies one by one (only while governance needs it).
    pub(super) fn per_reply_out(&mut self, mut b: &[u8], n: u32, now: std::time::Instant) {
        for _ in 0..n {
            let len = match dgf_protocols::redis::reply_len(b, &Limits::SERVER) {
                Ok(Some(l)) => l,
                _ => b.len(),
            };
            let (reply, rest) = b.split_at(len);
            b = rest;
            let Some(p) = self.pending.pop_front() else {
                self.cout.extend_from_slice(reply);
                continue;
            };
            let masked = p.plan.as_ref().and_then(|plan| govern::apply(plan, reply, self.proto));
            let out: &[u8] = masked.as_deref().unwrap_or(reply);
            self.cout.extend_from_slice(out);
            if let Some(a) = p.audit {
                let text = (reply.first() == Some(&b'-')).then(|| String::from_utf8_lossy(&reply[1..]));
                let error = text.as_deref().map(|t| t.split_whitespace().next().unwrap_or(""));
                let duration = now.saturating_duration_since(p.started).as_micros() as u64;
                self.audit_tail.clear();
                govern::audit_tail(&mut self.audit_tail, Some(out.len() as u64), Some(duration), error);
                self.start_audit_batch();
                let part = self.audit_fifo.get(self.audit_head..self.audit_head + a.len).unwrap_or_default();
                self.audit_out.push(a.millis, &[&self.audit_prefix, part, &self.audit_tail]);
                self.audit_head += a.len;
            }
        }
        self.cout.extend_from_slice(b);
        if self.pending.is_empty() {
            self.audit_fifo.clear();
            self.audit_head = 0;
        } else if self.audit_head > 64 * 1024 && self.audit_head * 2 > self.audit_fifo.len() {
            self.audit_fifo.drain(..self.audit_head);
            self.audit_head = 0;
        }
    }
}
