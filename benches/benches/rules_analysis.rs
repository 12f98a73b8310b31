//! Criterion: SQL fingerprinting and analysis (cold parse vs cached), the per-statement policy cost.

use criterion::{criterion_group, criterion_main, Criterion};
use dgf_rules::sql::{analyze, fingerprint, Analyzer, Dialect};
use std::hint::black_box;

const POINT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const JOIN: &str = "SELECT c.id, lower(c.email) AS email, o.total, o.created_at \
     FROM public.customers c JOIN orders o ON o.customer_id = c.id \
     WHERE c.region = 'eu' AND o.created_at > now() - interval '7 days' ORDER BY o.total DESC LIMIT 20";

fn rules_analysis(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules_analysis");
    g.bench_function("fingerprint pgbench point select", |b| {
        b.iter(|| fingerprint(black_box(POINT), Dialect::Postgres))
    });
    g.bench_function("analyze cold join (parse + lineage)", |b| b.iter(|| analyze(black_box(JOIN), Dialect::Postgres)));
    g.bench_function("analyze cold pgbench point select", |b| b.iter(|| analyze(black_box(POINT), Dialect::Postgres)));
    let cache = Analyzer::new(10_000);
    let _ = cache.analyze_cached(POINT, Dialect::Postgres);
    let _ = cache.analyze_cached(JOIN, Dialect::Postgres);
    // Other literal values than the warm-up: still a hit.
    let point = POINT.replace("48213", "7");
    let join = JOIN.replace("'eu'", "'us'");
    g.bench_function("analyze_cached pgbench point select (hit)", |b| {
        b.iter(|| cache.analyze_cached(black_box(&point), Dialect::Postgres))
    });
    g.bench_function("analyze_cached join (hit)", |b| {
        b.iter(|| cache.analyze_cached(black_box(&join), Dialect::Postgres))
    });
    g.bench_function("classify join (fingerprint + cached analysis)", |b| {
        b.iter(|| cache.classify(black_box(&join), Dialect::Postgres))
    });
    g.finish();
    assert_eq!(cache.misses(), 2, "benchmark inputs must hit the cache");
}

criterion_group!(benches, rules_analysis);
criterion_main!(benches);
