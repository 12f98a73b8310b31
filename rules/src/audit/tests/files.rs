//! Audit file tests: rotation across files, `keep_rotated`, and restarts that continue the chain.

use super::*;

#[test]
fn rotation_spans_files_and_a_missing_middle_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    fs::write(dir.path().join("audit.jsonl.bak"), "not part of the chain\n").unwrap();
    let stats = write_n(&path, 300, 4096);
    assert_eq!(stats.written, 300);
    let files = discover(&path).unwrap();
    assert!(files.len() >= 5, "{files:?}");
    assert_eq!(files.last(), Some(&path));
    assert!(!files.iter().any(|f| f.to_string_lossy().ends_with(".bak")));
    for f in &files {
        let len = fs::metadata(f).unwrap().len();
        assert!(len <= 4096, "{} is {len} bytes", f.display());
    }
    // Each continuation file starts with the last hash of the previous one, and only its
    // first record names it.
    for pair in files.windows(2) {
        let last: AuditEvent = serde_json::from_str(lines(&pair[0]).last().unwrap()).unwrap();
        let first: AuditEvent = serde_json::from_str(&lines(&pair[1])[0]).unwrap();
        assert_eq!((first.prev_hash, first.seq), (last.hash, last.seq + 1));
        assert!(lines(&pair[1])[1..].iter().all(|l| !l.contains("prev_hash")));
    }
    // Every file can be checked on its own from its first line.
    for f in &files {
        let r = verify_with(std::slice::from_ref(f), &VerifyStart::Any).unwrap();
        assert!(r.is_ok() && r.records as usize == lines(f).len(), "{r:?}");
    }
    let r = verify(&files).unwrap();
    assert!(r.is_ok(), "{:?}", r.first_error);
    assert_eq!((r.records, r.files), (300, files.len()));

    let missing = files[2].clone();
    let expected_first_of_next: AuditEvent = serde_json::from_str(&lines(&files[3])[0]).unwrap();
    fs::remove_file(&missing).unwrap();
    let after = discover(&path).unwrap();
    assert_eq!(after.len(), files.len() - 1);
    let e = first_error(&after);
    assert_eq!((&e.file, e.line, e.seq), (&files[3], 1, Some(expected_first_of_next.seq)));
    assert!(matches!(e.reason, VerifyReason::SeqGap { .. }), "{e}");
}

#[test]
fn keep_rotated_deletes_the_oldest_rotated_files_and_the_kept_ones_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let other = dir.path().join("audit.jsonl.bak");
    fs::write(&other, "not part of the chain\n").unwrap();
    let keep = |n| AuditConfig { keep_rotated: Some(n), ..cfg(&path, 16, 4096, AuditOverflow::Block) };
    let w = AuditWriter::start(&keep(2), "t").unwrap();
    for i in 0..300 {
        w.record(ev(i)).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.written() < 300 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let removed = w.removed_files();
    assert_eq!(w.shutdown().last_seq, 300);
    let files = discover(&path).unwrap();
    assert_eq!(files.len(), 3, "two rotated files and the live one: {files:?}");
    assert_eq!(files.last(), Some(&path));
    assert!(other.exists(), "a file outside the chain's naming is never deleted");
    // 300 records of ~400 bytes in files of at most 4 KiB: many rotations, all but two gone.
    assert!(removed >= 20, "{removed} removed");
    let first: AuditEvent = serde_json::from_str(&lines(&files[0])[0]).unwrap();
    assert_eq!(first.seq, 300 - (lines(&files[0]).len() + lines(&files[1]).len() + lines(&path).len()) as u64 + 1);
    // What is kept verifies from its first record to the last...
    let r = verify_with(&files, &VerifyStart::Any).unwrap();
    assert!(r.is_ok(), "{:?}", r.first_error);
    assert_eq!((r.first_seq, r.last_seq), (Some(first.seq), Some(300)));
    // ...and a check from genesis says where the deleted part ends.
    let e = first_error(&files);
    assert_eq!((&e.file, e.line, e.seq), (&files[0], 1, Some(first.seq)));
    // A restart continues the chain and keeps pruning.
    let w = AuditWriter::start(&keep(2), "t").unwrap();
    for i in 0..100 {
        w.record(ev(i)).unwrap();
    }
    assert_eq!(w.shutdown().last_seq, 400);
    let files = discover(&path).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    let r = verify_with(&files, &VerifyStart::Any).unwrap();
    assert!(r.is_ok() && r.last_seq == Some(400), "{r:?}");
}

#[test]
fn restart_continues_the_chain_also_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_n(&path, 10, DEFAULT_MAX_FILE_BYTES);
    let stats = write_n(&path, 10, DEFAULT_MAX_FILE_BYTES);
    assert_eq!(stats.last_seq, 20);
    let r = verify(std::slice::from_ref(&path)).unwrap();
    assert!(r.is_ok() && r.records == 20, "{r:?}");

    write_n(&path, 40, 2048); // rotates on the way
                              // The live file may be empty or missing after a restart: continue from the newest sibling.
    fs::rename(&path, dir.path().join("audit.jsonl.20991231T000000.000Z")).unwrap();
    fs::write(&path, b"").unwrap();
    write_n(&path, 5, 2048);
    let files = discover(&path).unwrap();
    let r = verify(&files).unwrap();
    assert!(r.is_ok(), "{:?}", r.first_error);
    assert_eq!(r.records, 65);
}

#[test]
fn restart_after_a_torn_last_line_sets_the_file_aside_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_n(&path, 10, DEFAULT_MAX_FILE_BYTES);
    let before = lines(&path);
    let ninth: AuditEvent = serde_json::from_str(&before[8]).unwrap();
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();

    let w = AuditWriter::start(&cfg(&path, 8, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block), "test-2").unwrap();
    let notice = w.notice().unwrap().to_owned();
    assert!(notice.contains("truncated") && notice.contains("seq 9"), "{notice}");
    for i in 0..3 {
        w.record(ev(i)).unwrap();
    }
    assert_eq!(w.shutdown().written, 4, "marker + 3");

    let live = lines(&path);
    let marker: AuditEvent = serde_json::from_str(&live[0]).unwrap();
    assert_eq!((marker.kind.as_str(), marker.seq, &marker.prev_hash), ("audit.recover", 10, &ninth.hash));
    assert_eq!(marker.error.as_deref(), Some(notice.as_str()));
    assert_eq!(marker.objects.len(), 1);

    // The damaged file is kept and verification still points at the damage.
    let files = discover(&path).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].display().to_string(), marker.objects[0]);
    let e = first_error(&files);
    assert_eq!((&e.file, e.line, e.reason.clone()), (&files[0], 10, VerifyReason::Truncated));
    // From the last intact record on, the new file links up.
    let r = verify_with(&files[1..], &VerifyStart::After { seq: 9, hash: ninth.hash }).unwrap();
    assert!(r.is_ok() && r.records == 4, "{r:?}");
}

#[test]
fn restart_after_an_edited_last_line_is_not_silent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_n(&path, 5, DEFAULT_MAX_FILE_BYTES);
    let mut all = lines(&path);
    all[4] = all[4].replacen("\"u4\"", "\"u9\"", 1);
    put_lines(&path, &all);
    let w = AuditWriter::start(&cfg(&path, 8, DEFAULT_MAX_FILE_BYTES, AuditOverflow::Block), "t").unwrap();
    assert!(w.notice().unwrap().contains("does not match its hash"), "{:?}", w.notice());
    drop(w);
    let e = first_error(&discover(&path).unwrap());
    assert_eq!((e.line, e.reason), (5, VerifyReason::HashMismatch));
}
