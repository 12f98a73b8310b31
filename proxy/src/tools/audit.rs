//! `dgf audit verify` (hash-chain check across rotated files) and `dgf audit tail` (pretty
//! printing, optionally following the live file across rotations).

use super::{Outcome, ToolError};
use dgf_rules::audit::{discover, pretty, verify_with, VerifyStart};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often `tail -f` looks for new records.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The files to verify: as given, or — for a single path — the path and its rotated siblings,
/// oldest first (see [`discover`]).
pub fn chain_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ToolError> {
    match paths {
        [] => Err(ToolError::Usage("give at least one audit file".into())),
        [one] => {
            let found = discover(one)?;
            if found.is_empty() {
                return Err(ToolError::Io {
                    path: one.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such audit file or rotated sibling"),
                });
            }
            Ok(found)
        }
        many => Ok(many.to_vec()),
    }
}

/// Where `dgf audit verify` starts: `--any-start` accepts a chain that does not begin at
/// genesis (older files removed by retention); `--after SEQ:HASH` starts right after an
/// anchored record.
pub fn start_from(any_start: bool, after: Option<&str>) -> Result<VerifyStart, ToolError> {
    let Some(after) = after else {
        return Ok(if any_start { VerifyStart::Any } else { VerifyStart::Genesis });
    };
    let bad = || ToolError::Usage(format!("--after takes SEQ:HASH (a seq and its 64-hex-digit hash), not `{after}`"));
    let (seq, hash) = after.split_once(':').ok_or_else(bad)?;
    let seq = seq.parse::<u64>().map_err(|_| bad())?;
    if hash.len() != 64 || !hash.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    Ok(VerifyStart::After { seq, hash: hash.to_owned() })
}

/// `dgf audit verify`: verifies the chain across `paths` (in order) from `start` and reports the
/// result.
pub fn verify_cmd(paths: &[PathBuf], start: &VerifyStart, out: &mut dyn Write) -> Result<Outcome, ToolError> {
    let files = chain_files(paths)?;
    let report = verify_with(&files, start)?;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(ToolError::stdout);
    let listed: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    w(out, format!("files: {}", listed.join(" ")))?;
    let range = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..{b}"),
        _ => "no records".to_owned(),
    };
    let last_hash = report.last_hash.as_deref().unwrap_or("-");
    match &report.first_error {
        None => {
            w(
                out,
                format!("OK: {} record(s) in {} file(s), {range}, last hash {last_hash}", report.records, report.files),
            )?;
            Ok(Outcome::Ok)
        }
        Some(e) => {
            let seq = e.seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
            w(out, format!("BROKEN: {}:{}: seq {seq}: {}", e.file.display(), e.line, e.reason))?;
            w(
                out,
                format!(
                    "{} intact record(s) before it ({range}, last intact hash {last_hash}); \
                     nothing after this point is trusted",
                    report.records
                ),
            )?;
            Ok(Outcome::Failed)
        }
    }
}

/// Reads the last `n` complete lines of `f` (of at most `end` bytes), reading backwards in chunks.
fn last_lines(f: &mut File, end: u64, n: usize) -> std::io::Result<Vec<String>> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = end;
    // n lines need n+1 newlines before them (or the start of the file).
    while pos > 0 && buf.iter().filter(|b| **b == b'\n').count() <= n {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; usize::try_from(pos - start).unwrap_or(0)];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if pos > 0 && !lines.is_empty() {
        lines.remove(0); // partial first line
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

/// Length up to and including the last newline (a record being written is not shown yet).
fn complete_len(f: &mut File, len: u64) -> std::io::Result<u64> {
    let mut pos = len;
    let mut byte = [0u8; 1];
    while pos > 0 {
        f.seek(SeekFrom::Start(pos - 1))?;
        f.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            return Ok(pos);
        }
        pos -= 1;
    }
    Ok(0)
}

/// Prints the complete lines `f` gained since `pos` (a trailing partial line waits in `pending`).
fn drain(f: &mut File, pos: &mut u64, pending: &mut Vec<u8>, out: &mut dyn Write) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(*pos))?;
    let mut fresh = Vec::new();
    *pos += f.read_to_end(&mut fresh)? as u64;
    pending.extend_from_slice(&fresh);
    while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = pending.drain(..=nl).collect();
        writeln!(out, "{}", pretty(&String::from_utf8_lossy(&line)))?;
    }
    out.flush()
}

/// `dgf audit tail`: pretty-prints the last `n` records of `path`. With `follow`, keeps printing
/// new records (following rotations: the live file being renamed and recreated) until `stop` is
/// set.
pub fn tail_cmd(
    path: &Path,
    n: usize,
    follow: bool,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<Outcome, ToolError> {
    let io = |e| ToolError::Io { path: path.to_path_buf(), source: e };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut pos = complete_len(&mut f, len).map_err(io)?;
    for line in last_lines(&mut f, pos, n).map_err(io)? {
        writeln!(out, "{}", pretty(&line)).map_err(ToolError::stdout)?;
    }
    out.flush().map_err(ToolError::stdout)?;
    if !follow {
        return Ok(Outcome::Ok);
    }
    let mut ino = f.metadata().map_err(io)?.ino();
    let mut pending: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        drain(&mut f, &mut pos, &mut pending, out).map_err(io)?;
        // Rotated (a new file at `path`) or truncated: finish the old file, then start over at
        // the beginning of the new one. (A file rotated away and replaced again within one poll
        // interval is not shown: read it with `dgf audit verify` / `less`.)
        match std::fs::metadata(path) {
            Ok(m) if m.ino() != ino || m.len() < pos => {
                if let Ok(nf) = File::open(path) {
                    drain(&mut f, &mut pos, &mut pending, out).map_err(io)?;
                    ino = nf.metadata().map_err(io)?.ino();
                    f = nf;
                    pos = 0;
                    pending.clear();
                    continue;
                }
            }
            _ => {}
        }
        std::thread::sleep(FOLLOW_POLL);
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dgf_config::{AuditConfig, AuditOverflow};
    use dgf_rules::audit::{AuditEvent, AuditWriter};
    use std::sync::Arc;

    fn write_chain(path: &Path, n: usize, max: u64) {
        let cfg = AuditConfig {
            path: Some(path.display().to_string()),
            sink: None,
            overflow: AuditOverflow::Block,
            include_literals: false,
            max_file_bytes: Some(max),
            keep_rotated: None,
            queue: Some(16),
            fingerprint_key: None,
            writer_priority: Default::default(),
        };
        let w = AuditWriter::start(&cfg, "t").unwrap();
        for i in 0..n {
            let ev = AuditEvent {
                protocol: "postgres".into(),
                user: format!("u{i}"),
                kind: "select".into(),
                fingerprint: format!("SELECT {i}"),
                decision: "allow".into(),
                ..AuditEvent::default()
            };
            w.record(ev).unwrap();
        }
        w.shutdown();
    }

    fn run_verify(paths: &[PathBuf]) -> (Outcome, String) {
        let mut out = Vec::new();
        let o = verify_cmd(paths, &VerifyStart::Genesis, &mut out).unwrap();
        (o, String::from_utf8(out).unwrap())
    }

    #[test]
    fn verify_reports_ok_and_the_first_broken_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        write_chain(&p, 5, 1 << 20);
        let (o, text) = run_verify(std::slice::from_ref(&p));
        assert_eq!(o, Outcome::Ok, "{text}");
        assert!(text.contains("OK: 5 record(s) in 1 file(s), seq 1..5"), "{text}");
        let mut lines: Vec<String> = std::fs::read_to_string(&p).unwrap().lines().map(str::to_owned).collect();
        lines.swap(1, 2);
        std::fs::write(&p, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let (o, text) = run_verify(std::slice::from_ref(&p));
        assert_eq!(o, Outcome::Failed, "{text}");
        assert!(text.contains(&format!("BROKEN: {}:2: seq 3:", p.display())), "{text}");
        assert!(text.contains("1 intact record(s)"), "{text}");
    }

    #[test]
    fn single_path_finds_rotated_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        write_chain(&p, 40, 2000);
        let files = chain_files(std::slice::from_ref(&p)).unwrap();
        assert!(files.len() > 1, "{files:?}");
        let (o, text) = run_verify(&[p]);
        assert_eq!(o, Outcome::Ok, "{text}");
        assert!(text.contains("OK: 40 record(s)"), "{text}");
        // The newest file alone does not start at genesis, unless asked to accept that.
        let last = files.last().unwrap().clone();
        let (o, _) = run_verify(&[last.clone(), last.clone()]);
        assert_eq!(o, Outcome::Failed);
        let mut out = Vec::new();
        assert_eq!(verify_cmd(std::slice::from_ref(&last), &VerifyStart::Any, &mut out).unwrap(), Outcome::Ok);
        // A file's later records chain to the line before them: from the middle, an anchor is
        // needed, and given one they verify.
        let text = std::fs::read_to_string(&last).unwrap();
        let rest: Vec<&str> = text.lines().skip(1).collect();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let cut = dir.path().join("cut.jsonl");
        std::fs::write(&cut, rest.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let mut out = Vec::new();
        assert_eq!(verify_cmd(std::slice::from_ref(&cut), &VerifyStart::Any, &mut out).unwrap(), Outcome::Failed);
        assert!(String::from_utf8_lossy(&out).contains("no prev_hash"), "{}", String::from_utf8_lossy(&out));
        let anchor = format!("{}:{}", first["seq"], first["hash"].as_str().unwrap());
        let start = start_from(false, Some(&anchor)).unwrap();
        assert_eq!(verify_cmd(&[cut], &start, &mut Vec::new()).unwrap(), Outcome::Ok);
        assert!(start_from(false, Some("12:abc")).is_err());
        assert!(start_from(false, Some(&format!("x:{}", "0".repeat(64)))).is_err());
        assert_eq!(start_from(true, None).unwrap(), VerifyStart::Any);
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = verify_cmd(&[dir.path().join("nope.jsonl")], &VerifyStart::Genesis, &mut Vec::new()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("nope.jsonl"), "{e}");
    }

    /// A writer the test can read while `tail -f` writes to it.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn wait_for(out: &Shared, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !out.text().contains(what) {
            assert!(std::time::Instant::now() < deadline, "`{what}` never showed up: {}", out.text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn tail_prints_the_last_records_and_follows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        write_chain(&p, 30, 1 << 20);
        let mut out = Vec::new();
        tail_cmd(&p, 3, false, &AtomicBool::new(false), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("#28 u27@") && lines[2].contains("#30 u29@"), "{text}");
        let mut out = Vec::new();
        tail_cmd(&p, 100, false, &AtomicBool::new(false), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 30);

        // Follow: records appended by a restarted writer show up; then stop.
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Shared::default();
        let (p2, stop2, mut out2) = (p.clone(), stop.clone(), seen.clone());
        let h = std::thread::spawn(move || tail_cmd(&p2, 1, true, &stop2, &mut out2).map(|_| ()));
        wait_for(&seen, "#30 ");
        write_chain(&p, 2, 1 << 20);
        wait_for(&seen, "#32 ");
        // One rotation while following: nothing lost, nothing repeated.
        let size = std::fs::metadata(&p).unwrap().len();
        write_chain(&p, 12, size + 1500);
        wait_for(&seen, "#44 ");
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap().unwrap();
        assert!(chain_files(std::slice::from_ref(&p)).unwrap().len() > 1, "rotated");
        let text = seen.text();
        assert!(text.contains("#31 u0@") && !text.contains("#29 "), "{text}");
        for seq in 30..=44 {
            assert_eq!(text.matches(&format!("#{seq} ")).count(), 1, "#{seq}: {text}");
        }
    }
}
