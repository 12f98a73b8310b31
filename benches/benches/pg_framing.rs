//! Criterion: cost of splitting Postgres server responses into messages (the relay's hot loop).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dgf_protocols::postgres::frame::frame_len;

fn framing(c: &mut Criterion) {
    let input = dgf_benches::pgbench_select_responses(1000);
    let mut g = c.benchmark_group("pg_framing");
    g.throughput(Throughput::Elements(4000));
    g.bench_function("split 4000 messages", |b| {
        b.iter(|| {
            let mut pos = 0;
            let mut n = 0;
            while let Ok(Some(len)) = frame_len(&input[pos..], 1 << 20) {
                pos += len;
                n += 1;
            }
            assert_eq!(n, 4000);
        })
    });
    g.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
