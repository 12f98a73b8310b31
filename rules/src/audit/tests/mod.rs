//! Audit writer and verifier tests: tampering of every kind, backpressure, raw batches, priorities
//! (files, rotation and restarts in files.rs).

use super::*;
use dgf_config::{AuditConfig, AuditOverflow};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod files;

fn cfg(path: &Path, queue: usize, max: u64, overflow: AuditOverflow) -> AuditConfig {
    AuditConfig {
        path: Some(path.display().to_string()),
        sink: None,
        overflow,
        include_literals: false,
        max_file_bytes: Some(max),
        keep_rotated: None,
        queue: Some(queue),
        fingerprint_key: None,
        writer_priority: Default::default(),
    }
}

fn ev(i: usize) -> AuditEvent {
    AuditEvent {
        protocol: "postgres".into(),
        route: "pg".into(),
        client: "10.0.0.1:5555".into(),
        user: format!("u{i}"),
        roles: vec!["analyst".into()],
        database: "app".into(),
        kind: "select".into(),
        fingerprint: "SELECT * FROM t WHERE id = $1".into(),
        statement: Some(format!("SELECT * FROM t WHERE id = {i}")),
        objects: vec!["public.t".into()],
        decision: "allow".into(),
        rules: vec![],
        rows: Some(i as u64),
        bytes: Some(10),
        duration_us: Some(100),
        error: None,
        ..AuditEvent::default()
    }
}

/// Writes `n` events to `path` and returns the writer's stats.
fn write_n(path: &Path, n: usize, max: u64) -> AuditStats {
    let w = AuditWriter::start(&cfg(path, 64, max, AuditOverflow::Block), "test-1").unwrap();
    for i in 0..n {
        w.record(ev(i)).unwrap();
    }
    w.shutdown()
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn put_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn first_error(paths: &[PathBuf]) -> VerifyError {
    let r = verify(paths).unwrap();
    match r.first_error {
        Some(e) => e,
        None => panic!("chain should be broken: {} records verified", r.records),
    }
}

fn setup(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let stats = write_n(&path, n, DEFAULT_MAX_FILE_BYTES);
    assert_eq!((stats.written, stats.dropped, stats.last_seq), (n as u64, 0, n as u64));
    (dir, path)
}

#[test]
fn written_chain_verifies_and_records_are_complete() {
    let (_dir, path) = setup(200);
    let r = verify(std::slice::from_ref(&path)).unwrap();
    assert!(r.is_ok(), "{:?}", r.first_error);
    assert_eq!((r.records, r.files, r.first_seq, r.last_seq), (200, 1, Some(1), Some(200)));
    let all = lines(&path);
    let mut prev = GENESIS_HASH.to_owned();
    for (i, l) in all.iter().enumerate() {
        let e: AuditEvent = serde_json::from_str(l).unwrap();
        assert_eq!(e.seq, i as u64 + 1);
        // Only a file's first record names the hash it links to; the others chain to the line
        // before them.
        if i == 0 {
            assert_eq!(e.prev_hash, prev);
        } else {
            assert!(e.prev_hash.is_empty() && !l.contains("prev_hash"), "{l}");
        }
        let body = format!("{}}}", &l[..l.len() - 75]);
        assert_eq!(chain::chain_hash(&prev, body.as_bytes()), e.hash);
        assert_eq!(e.instance, "test-1");
        assert_eq!(e.user, format!("u{i}"));
        assert_eq!(e.statement, None, "literals are off by default");
        assert!(e.time.len() == 24 && e.time.ends_with('Z'), "{}", e.time);
        assert!(!l.contains("\"statement\""));
        prev = e.hash;
    }
    assert_eq!(r.last_hash, Some(prev));
}

#[test]
fn edited_field_is_reported_at_its_line() {
    let (_dir, path) = setup(50);
    let mut all = lines(&path);
    all[36] = all[36].replacen("\"decision\":\"allow\"", "\"decision\":\"deny\"", 1);
    put_lines(&path, &all);
    let e = first_error(std::slice::from_ref(&path));
    assert_eq!((e.file, e.line, e.seq, e.reason), (path, 37, Some(37), VerifyReason::HashMismatch));
}

#[test]
fn rehashed_edit_breaks_the_next_link() {
    let (_dir, path) = setup(20);
    let mut all = lines(&path);
    // A forger who recomputes the edited record's own hash still breaks the next link: the
    // next record chains to the hash the edited one had.
    let mut e: AuditEvent = serde_json::from_str(&all[9]).unwrap();
    let ninth: AuditEvent = serde_json::from_str(&all[8]).unwrap();
    e.user = "mallory".into();
    let (line, _) = chain::seal(&mut e, &ninth.hash).unwrap();
    all[9] = String::from_utf8(line).unwrap().trim_end().to_owned();
    put_lines(&path, &all);
    let e = first_error(std::slice::from_ref(&path));
    assert_eq!((e.line, e.seq, e.reason), (11, Some(11), VerifyReason::HashMismatch));

    // A record that names its prev_hash (a file's first, or any of an older file) reports the
    // broken link as such.
    let mut all = lines(&path);
    let mut e: AuditEvent = serde_json::from_str(&all[10]).unwrap();
    e.prev_hash = GENESIS_HASH.into();
    let (line, _) = chain::seal(&mut e, GENESIS_HASH).unwrap();
    all[10] = String::from_utf8(line).unwrap().trim_end().to_owned();
    put_lines(&path, &all);
    let e = first_error(&[path]);
    assert_eq!((e.line, e.seq), (11, Some(11)));
    assert!(matches!(e.reason, VerifyReason::PrevHashMismatch { .. }), "{e}");
}

#[test]
fn deleted_line_is_a_gap_at_its_place() {
    let (_dir, path) = setup(50);
    let mut all = lines(&path);
    all.remove(19);
    put_lines(&path, &all);
    let e = first_error(&[path]);
    assert_eq!((e.line, e.seq, &e.reason), (20, Some(21), &VerifyReason::SeqGap { expected: 20, found: 21 }));
    assert!(e.to_string().contains(":20: seq 21: seq 21 where 20 was expected"), "{e}");
}

#[test]
fn deleted_first_line_is_reported() {
    let (_dir, path) = setup(5);
    let mut all = lines(&path);
    let first: AuditEvent = serde_json::from_str(&all.remove(0)).unwrap();
    put_lines(&path, &all);
    let e = first_error(std::slice::from_ref(&path));
    assert_eq!((e.line, e.reason), (1, VerifyReason::SeqGap { expected: 1, found: 2 }));
    // Starting anywhere needs the hash the new first line chains to: retention removes whole
    // files, whose first lines carry it, not single lines.
    let r = verify_with(std::slice::from_ref(&path), &VerifyStart::Any).unwrap();
    assert_eq!(r.first_error.map(|e| (e.line, e.reason)), Some((1, VerifyReason::NoPrevHash)));
    let r = verify_with(&[path], &VerifyStart::After { seq: 1, hash: first.hash }).unwrap();
    assert!(r.is_ok() && r.records == 4 && r.first_seq == Some(2), "{r:?}");
}

#[test]
fn swapped_lines_are_reported() {
    let (_dir, path) = setup(50);
    let mut all = lines(&path);
    all.swap(29, 30);
    put_lines(&path, &all);
    let e = first_error(&[path]);
    assert_eq!((e.line, e.reason), (30, VerifyReason::SeqGap { expected: 30, found: 31 }));
}

#[test]
fn record_moved_back_is_reported_as_backwards() {
    let (_dir, path) = setup(10);
    let mut all = lines(&path);
    let dup = all[2].clone();
    all.insert(6, dup); // replayed record
    put_lines(&path, &all);
    let e = first_error(&[path]);
    assert_eq!((e.line, e.reason), (7, VerifyReason::SeqBackwards { expected: 7, found: 3 }));
}

#[test]
fn truncated_last_line_is_reported() {
    let (_dir, path) = setup(30);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let e = first_error(&[path]);
    assert_eq!((e.line, e.reason), (30, VerifyReason::Truncated));
    // Cut in the middle of the JSON too.
    let (_dir2, path2) = setup(30);
    let bytes = fs::read(&path2).unwrap();
    let cut = bytes.len() - 150;
    fs::write(&path2, &bytes[..cut]).unwrap();
    assert_eq!(first_error(&[path2]).reason, VerifyReason::Truncated);
}

#[test]
fn garbage_line_is_malformed() {
    let (_dir, path) = setup(5);
    let mut all = lines(&path);
    all.insert(2, "hello".into());
    put_lines(&path, &all);
    let e = first_error(&[path]);
    assert_eq!(e.line, 3);
    assert!(matches!(e.reason, VerifyReason::Malformed(_)), "{e}");
}

#[test]
fn block_mode_loses_nothing_under_contention_and_really_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = Arc::new(AuditWriter::start(&cfg(&path, 2, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block), "t").unwrap());
    let (threads, per) = (8, 250);
    let pause = w.pause();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (w, done) = (Arc::clone(&w), Arc::clone(&done));
            std::thread::spawn(move || {
                for i in 0..per {
                    w.record(ev(t * 1000 + i)).unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 0, "callers must wait while the queue is full");
    assert_eq!(w.written(), 0);
    drop(pause);
    for h in handles {
        h.join().unwrap();
    }
    let w = Arc::into_inner(w).unwrap();
    let stats = w.shutdown();
    assert_eq!((stats.written, stats.dropped), ((threads * per) as u64, 0));
    let r = verify(std::slice::from_ref(&path)).unwrap();
    assert!(r.is_ok() && r.records == (threads * per) as u64, "{r:?}");
    // Every caller's events are there, each exactly once.
    let mut users: Vec<String> =
        lines(&path).iter().map(|l| serde_json::from_str::<AuditEvent>(l).unwrap().user).collect();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), threads * per);
}

#[test]
fn drop_mode_counts_every_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = Arc::new(AuditWriter::start(&cfg(&path, 4, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Drop), "t").unwrap());
    let pause = w.pause();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || (0..250).for_each(|i| w.record(ev(t * 1000 + i)).unwrap()))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // The stalled writer holds at most one message and the queue four.
    assert!(w.dropped() >= 995, "dropped {}", w.dropped());
    drop(pause);
    let stats = Arc::into_inner(w).unwrap().shutdown();
    assert_eq!(stats.written + stats.dropped, 1000, "{stats:?}");
    assert!(stats.written >= 4, "{stats:?}");
    let r = verify(&[path]).unwrap();
    assert!(r.is_ok() && r.records == stats.written, "{r:?}");
}

#[test]
fn flushes_within_the_interval_without_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = AuditWriter::start(&cfg(&path, 8, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block), "t").unwrap();
    w.record(ev(1)).unwrap();
    std::thread::sleep(FLUSH_INTERVAL * 4);
    assert_eq!(lines(&path).len(), 1);
    assert_eq!(w.written(), 1);
    assert_eq!(w.tip().0, 1);
}

#[test]
fn literals_are_kept_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut c = cfg(&path, 8, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block);
    c.include_literals = true;
    let w = AuditWriter::start(&c, "t").unwrap();
    w.record(ev(7)).unwrap();
    w.shutdown();
    let e: AuditEvent = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(e.statement.as_deref(), Some("SELECT * FROM t WHERE id = 7"));
    assert!(verify(&[path]).unwrap().is_ok());
}

#[test]
fn writer_failure_is_reported_and_every_event_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = AuditWriter::start(&cfg(&path, 8, 300, AuditOverflow::Block), "t").unwrap();
    fs::remove_file(&path).unwrap(); // the next rotation's rename fails
    let mut errors = 0u64;
    for i in 0..100 {
        if w.record(ev(i)).is_err() {
            errors += 1;
        }
        if i == 50 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(errors > 0);
    assert!(w.failure().is_some());
    let stats = w.shutdown();
    assert!(stats.failure.unwrap().contains("audit.jsonl"));
    assert_eq!(stats.written + stats.dropped, 100, "written {} dropped {}", stats.written, stats.dropped);
}

#[test]
fn stdout_sink_and_config_errors() {
    let c = AuditConfig {
        path: None,
        sink: Some("stdout".into()),
        overflow: AuditOverflow::Block,
        include_literals: false,
        max_file_bytes: None,
        keep_rotated: None,
        queue: None,
        fingerprint_key: None,
        writer_priority: Default::default(),
    };
    let w = AuditWriter::start(&c, "t").unwrap();
    w.record(ev(1)).unwrap();
    assert_eq!(w.shutdown().written, 1);
    let bad = AuditConfig { sink: Some("syslog".into()), ..c.clone() };
    assert!(matches!(AuditWriter::start(&bad, "t"), Err(AuditError::Config(_))));
    let none = AuditConfig { sink: None, ..c.clone() };
    assert!(matches!(AuditWriter::start(&none, "t"), Err(AuditError::Config(_))));
    let zero_keep = AuditConfig { keep_rotated: Some(0), ..c.clone() };
    assert!(matches!(AuditWriter::start(&zero_keep, "t"), Err(AuditError::Config(_))));
    let zero = AuditConfig { queue: Some(0), ..c };
    assert!(matches!(AuditWriter::start(&zero, "t"), Err(AuditError::Config(_))));
}

#[test]
fn timestamps_are_rfc3339_utc_millis() {
    use std::time::UNIX_EPOCH;
    let at = |ms: u64| rfc3339_utc(UNIX_EPOCH + Duration::from_millis(ms));
    assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(at(1_738_324_800_999), "2025-01-31T12:00:00.999Z");
    assert_eq!(at(4_102_444_799_000), "2099-12-31T23:59:59.000Z");
    assert_eq!(file_stamp(UNIX_EPOCH + Duration::from_millis(1_738_324_800_999)), "20250131T120000.999Z");
    assert!(now_rfc3339().starts_with("20"));
}

/// `T=4 cargo test --release -p dgf-rules -- --ignored audit_throughput --nocapture` (T = producer
/// threads). On a 2-core box: ~150k records/s with one producer, ~100k/s with four.
#[test]
#[ignore = "measurement, not a check"]
fn audit_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = Arc::new(
        AuditWriter::start(&cfg(&path, DEFAULT_QUEUE, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block), "t").unwrap(),
    );
    let threads: usize = std::env::var("T").ok().and_then(|t| t.parse().ok()).unwrap_or(4);
    let per = 400_000 / threads;
    let t = std::time::Instant::now();
    let mut e = ev(1);
    e.prev_hash = GENESIS_HASH.into();
    for _ in 0..100_000 {
        std::hint::black_box(chain::seal(&mut e, GENESIS_HASH).unwrap());
    }
    println!("seal: {:.2}us", t.elapsed().as_secs_f64() * 10.0);
    let t0 = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || (0..per).for_each(|i| w.record(ev(t * per + i)).unwrap()))
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let stats = Arc::into_inner(w).unwrap().shutdown();
    let secs = t0.elapsed().as_secs_f64();
    println!("{} records in {secs:.2}s = {:.0}/s", stats.written, stats.written as f64 / secs);
    let t1 = std::time::Instant::now();
    let r = verify(&discover(&path).unwrap()).unwrap();
    assert!(r.is_ok(), "{:?}", r.first_error);
    println!("verify: {} records in {:.2}s", r.records, t1.elapsed().as_secs_f64());
}

/// `ev`'s fields from protocol to error, rendered with the raw-record functions.
fn raw_fields(e: &AuditEvent) -> Vec<u8> {
    use raw::*;
    let mut out = Vec::new();
    for (name, v) in [("protocol", &e.protocol), ("route", &e.route), ("client", &e.client), ("user", &e.user)] {
        field_str(&mut out, name, v);
    }
    field_strs_if_any(&mut out, "roles", e.roles.iter().map(String::as_str));
    for (name, v) in [("database", &e.database), ("kind", &e.kind), ("fingerprint", &e.fingerprint)] {
        field_str(&mut out, name, v);
    }
    field_strs(&mut out, "objects", e.objects.iter().map(String::as_str));
    field_str(&mut out, "decision", &e.decision);
    field_strs_if_any(&mut out, "rules", e.rules.iter().map(String::as_str));
    field_u64(&mut out, "rows", e.rows);
    field_u64(&mut out, "bytes", e.bytes);
    field_u64(&mut out, "duration_us", e.duration_us);
    field_opt_str(&mut out, "error", e.error.as_deref());
    out
}

#[test]
fn raw_batches_interleave_with_events_in_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = AuditWriter::start(&cfg(&path, 4, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block), "test-1").unwrap();
    let millis = now_millis();
    for round in 0..20 {
        w.record(ev(round * 10)).unwrap();
        let mut batch = RawBatch::new();
        for i in 1..=round % 4 {
            let mut e = ev(round * 10 + i);
            e.statement = None;
            batch.push(millis + i as u64, &[&raw_fields(&e)]);
        }
        w.record_batch(batch).unwrap();
    }
    let stats = w.shutdown();
    let want = 20 + (0..20).map(|r| r % 4).sum::<usize>() as u64;
    assert_eq!((stats.written, stats.dropped, stats.last_seq), (want, 0, want));
    let r = verify(std::slice::from_ref(&path)).unwrap();
    assert!(r.is_ok(), "{:?}", r.first_error);
    for (i, l) in lines(&path).iter().enumerate() {
        let got: AuditEvent = serde_json::from_str(l).unwrap();
        let n: usize = got.user[1..].parse().unwrap();
        let want = AuditEvent {
            time: got.time.clone(),
            seq: i as u64 + 1,
            instance: "test-1".into(),
            statement: None,
            prev_hash: got.prev_hash.clone(),
            hash: got.hash.clone(),
            ..ev(n)
        };
        assert_eq!(got, want);
        let i = n % 10;
        if i > 0 {
            let t = rfc3339_utc(std::time::UNIX_EPOCH + Duration::from_millis(millis + i as u64));
            assert_eq!(got.time, t);
        }
    }
}

#[test]
fn older_full_records_verify_and_the_writer_continues_them_compactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // The format before compact records: prev_hash on every line, null for unknown values.
    let mut prev = GENESIS_HASH.to_owned();
    let mut old = Vec::new();
    for i in 0..5 {
        let mut e = AuditEvent { seq: i + 1, prev_hash: prev.clone(), ..ev(i as usize) };
        let (line, _) = chain::seal(&mut e, &prev).unwrap();
        let text = String::from_utf8(line).unwrap();
        // Splice in the null the old format wrote (the hash covers exactly these bytes).
        let body = &text.trim_end()[..text.trim_end().len() - 75];
        let body = format!("{}}}", body.replacen(",\"prev_hash\"", ",\"error\":null,\"prev_hash\"", 1));
        let hash = chain::chain_hash(&prev, body.as_bytes());
        old.push(format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]));
        prev = hash;
    }
    put_lines(&path, &old);
    assert!(old.iter().all(|l| l.contains("\"error\":null") && l.contains("prev_hash")));
    assert!(verify(std::slice::from_ref(&path)).unwrap().is_ok());
    let stats = write_n(&path, 5, DEFAULT_MAX_FILE_BYTES);
    assert_eq!(stats.last_seq, 10);
    let all = lines(&path);
    assert!(all[5..].iter().all(|l| !l.contains("prev_hash") && !l.contains("null")), "{all:?}");
    let r = verify(std::slice::from_ref(&path)).unwrap();
    assert!(r.is_ok() && r.records == 10, "{r:?}");

    // A file whose head was cut off cannot be checked from a compact record without an anchor...
    put_lines(&path, &all[6..]);
    let e = verify_with(std::slice::from_ref(&path), &VerifyStart::Any).unwrap().first_error.unwrap();
    assert_eq!((e.line, e.seq, e.reason), (1, Some(7), VerifyReason::NoPrevHash));
    // ...and can with one.
    let sixth: AuditEvent = serde_json::from_str(&all[5]).unwrap();
    let r = verify_with(&[path], &VerifyStart::After { seq: 6, hash: sixth.hash }).unwrap();
    assert!(r.is_ok() && r.records == 4, "{r:?}");
}

#[test]
fn writer_priority_puts_the_writer_under_the_policy_asked_for() {
    use dgf_config::AuditWriterPriority as P;
    let dir = tempfile::tempdir().unwrap();
    let idle = if cfg!(target_os = "linux") { P::Idle } else { P::Normal };
    for (priority, want, rescuer) in [(P::Idle, idle, false), (P::Auto, idle, true), (P::Normal, P::Normal, false)] {
        let path = dir.path().join(format!("audit-{priority:?}.jsonl"));
        let c =
            AuditConfig { writer_priority: priority, ..cfg(&path, 8, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block) };
        let w = AuditWriter::start(&c, "t").unwrap();
        assert_eq!(w.wait_writer_priority(Duration::from_secs(5)), Some(want), "{priority:?}");
        assert_eq!(w.threads_for_test(), if rescuer { 2 } else { 1 }, "{priority:?}");
        // It still writes (the test machine has idle time).
        w.record(ev(1)).unwrap();
        assert_eq!(w.shutdown().written, 1);
    }
}

/// An idle writer that gets no CPU (stalled here by a test hook, as a host without idle time
/// would starve it) is rescued: the records are written and flushed anyway, in order.
#[cfg(target_os = "linux")]
#[test]
fn a_starved_idle_writer_is_rescued_at_normal_priority() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let c = AuditConfig {
        writer_priority: dgf_config::AuditWriterPriority::Auto,
        ..cfg(&path, 1024, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block)
    };
    let w = AuditWriter::start(&c, "t").unwrap();
    assert_eq!(w.wait_writer_priority(Duration::from_secs(5)), Some(dgf_config::AuditWriterPriority::Idle));
    w.stall_idle_writer(true);
    for i in 1..=200 {
        w.record(ev(i)).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.written() < 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (written, rescues) = (w.written(), w.rescues());
    // Unstall first: a failed assertion must not leave the writer stalled at shutdown.
    w.stall_idle_writer(false);
    assert_eq!(written, 200, "the rescuer wrote and flushed every record");
    assert!(rescues >= 1);
    w.record(ev(201)).unwrap();
    let stats = w.shutdown();
    assert_eq!((stats.written, stats.dropped, stats.last_seq), (201, 0, 201));
    assert!(verify(&[path]).unwrap().is_ok());
}

#[test]
fn written_batches_hand_their_buffers_back_for_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = AuditWriter::start(&cfg(&path, 16, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block), "test-1").unwrap();
    let fields = raw_fields(&ev(1));
    // A fresh writer has nothing spare: the batch is new, sized as asked.
    let mut first = w.batch(8 * fields.len());
    let room = first.capacity();
    for _ in 0..8 {
        first.push(now_millis(), &[&fields]);
    }
    // Too big to keep: freed, not hoarded.
    let mut big = w.batch(1 << 20);
    big.push(now_millis(), &[&fields]);
    w.record_batch(first).unwrap();
    w.record_batch(big).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.written() < 9 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(w.written(), 9);
    let again = w.batch(16);
    assert!(again.is_empty() && again.bytes() == 0 && again.capacity() >= room, "{}", again.capacity());
    assert!(again.capacity() < 1 << 20, "the 1 MiB buffer was kept");
    // Only one was kept: the next is new.
    assert_eq!(w.batch(16).capacity(), 16);
    let stats = w.shutdown();
    assert_eq!((stats.written, stats.dropped), (9, 0));
    assert!(verify(std::slice::from_ref(&path)).unwrap().is_ok());
}
