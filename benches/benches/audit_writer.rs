//! Audit writer cost per record: Redis-sized raw records chained and written to a file.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dgf_config::{AuditConfig, AuditWriterPriority};
use dgf_rules::audit::{now_millis, AuditWriter, RawBatch};
use std::time::{Duration, Instant};

/// Records per measured run.
const RECORDS: usize = 1_000_000;
/// Records per batch, as a Redis session at pipeline depth 16 hands them over.
const BATCH: usize = 16;

/// The fields of a Redis GET record as the proxy renders them (compact form, hashed key).
const FIELDS: &[u8] = br#","protocol":"redis","route":"bench","client":"127.0.0.1:34242","user":"default","database":"0","kind":"read","fingerprint":"GET","objects":["redis:#3fa1e946d252223d"],"decision":"allow","bytes":9,"duration_us":1141"#;

fn write_records(dir: &std::path::Path, run: u64) -> Duration {
    let path = dir.join(format!("audit-{run}.jsonl"));
    let cfg = AuditConfig {
        path: Some(path.display().to_string()),
        writer_priority: AuditWriterPriority::Normal,
        max_file_bytes: Some(1 << 40),
        ..AuditConfig::default()
    };
    let start = Instant::now();
    let w = match AuditWriter::start(&cfg, "bench-1") {
        Ok(w) => w,
        Err(e) => panic!("audit writer: {e}"),
    };
    let millis = now_millis();
    for _ in 0..RECORDS / BATCH {
        let mut batch = RawBatch::with_capacity(BATCH * (FIELDS.len() + 16));
        for _ in 0..BATCH {
            batch.push(millis, &[FIELDS]);
        }
        if let Err(e) = w.record_batch(batch) {
            panic!("record_batch: {e}");
        }
    }
    // Until every record is handed to the OS (the last ones flushed within 100 ms, a bound
    // small against the run); the final fsync of shutdown is disk time, not the writer's.
    while w.written() < RECORDS as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = start.elapsed();
    let stats = w.shutdown();
    assert_eq!(stats.written, RECORDS as u64);
    let _ = std::fs::remove_file(&path);
    took
}

fn audit_writer(c: &mut Criterion) {
    // In memory where there is a tmpfs: the writer's CPU, not the disk, is measured.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let dir = base.join(format!("dgf-bench-audit-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{}: {e}", dir.display());
    }
    let mut g = c.benchmark_group("audit writer");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(10);
    let mut run = 0;
    g.bench_function("1M Redis GET records, batches of 16, to a file", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    write_records(&dir, run)
                })
                .sum()
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, audit_writer);
criterion_main!(benches);
