//! Criterion: SQL fingerprinting and analysis (cold parse vs cached), the per-statement policy cost.

use criterion::{criterion_group, criterion_main, Criterion};
use dgf_rules::sql::{analyze, fingerprint, Analyzer, Dialect};
use std::hint::black_box;

const POINT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const POINT_BIND: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const JOIN: &str = "SELECT c.id, lower(c.email) AS email, o.total, o.created_at \
     FROM public.customers c JOIN orders o ON o.customer_id = c.id \
     WHERE c.region = 'eu' AND o.created_at > now() - interval '7 days' ORDER BY o.total DESC LIMIT 20";
const JOIN_BIND: &str = "SELECT c.id, lower(c.email) AS email, o.total, o.created_at \
     FROM public.customers c JOIN orders o ON o.customer_id = c.id \
     WHERE c.region = $1 AND o.created_at > now() - $2::interval ORDER BY o.total DESC LIMIT $3";

fn rules_analysis(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules_analysis");
    g.bench_function("fingerprint pgbench point select", |b| {
        b.iter(|| fingerprint(black_box(POINT), Dialect::Postgres))
    });
    g.bench_function("analyze cold pgbench point select", |b| b.iter(|| analyze(black_box(POINT), Dialect::Postgres)));
    g.bench_function("analyze cold join (parse + lineage)", |b| b.iter(|| analyze(black_box(JOIN), Dialect::Postgres)));
    let cache = Analyzer::new(10_000);
    for q in [POINT, POINT_BIND, JOIN, JOIN_BIND] {
        let _ = cache.analyze_cached(q, Dialect::Postgres);
    }
    // Literal values other than the warm-up's: a shape hit (normalise, then look up).
    let point = POINT.replace("48213", "7");
    let join = JOIN.replace("'eu'", "'us'");
    g.bench_function("analyze_cached point select, new literal (shape hit)", |b| {
        b.iter(|| cache.analyze_cached(black_box(&point), Dialect::Postgres))
    });
    g.bench_function("analyze_cached join, new literals (shape hit)", |b| {
        b.iter(|| cache.analyze_cached(black_box(&join), Dialect::Postgres))
    });
    // Bind parameters (extended protocol, ORMs): the text repeats verbatim.
    g.bench_function("classify point select with $1 (exact hit)", |b| {
        b.iter(|| cache.classify(black_box(POINT_BIND), Dialect::Postgres))
    });
    g.bench_function("classify join with $n (exact hit)", |b| {
        b.iter(|| cache.classify(black_box(JOIN_BIND), Dialect::Postgres))
    });
    g.bench_function("classify join, new literals (fingerprint + shape hit)", |b| {
        b.iter(|| cache.classify(black_box(&join), Dialect::Postgres))
    });
    g.finish();
    assert_eq!(cache.misses(), 4, "benchmark inputs must hit the cache");
}

criterion_group!(benches, rules_analysis);
criterion_main!(benches);
