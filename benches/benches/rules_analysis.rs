//! Criterion: SQL fingerprinting and analysis (cold parse vs cached), the per-statement policy cost.

use criterion::{criterion_group, criterion_main, Criterion};
use dgf_rules::policy::{check_sql, check_sql_cached};
use dgf_rules::sql::{analyze, fingerprint, Analyzer, Dialect};
use dgf_rules::Policy;
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
    // The whole per-statement decision with 20 rules and 3 masked labels (what the proxy runs).
    let policy = twenty_rules();
    let view = policy.view("bench", &["app".to_owned()]);
    g.bench_function("decide point select, new literal (classify + 20-rule verdict)", |b| {
        b.iter(|| {
            let (_fp, a) = cache.classify(black_box(&point), Dialect::Postgres);
            check_sql_cached(&view, &a)
        })
    });
    g.bench_function("decide join with $n (classify + 20-rule verdict)", |b| {
        b.iter(|| {
            let (_fp, a) = cache.classify(black_box(JOIN_BIND), Dialect::Postgres);
            check_sql_cached(&view, &a)
        })
    });
    g.bench_function("verdict only, 20 rules, uncached", |b| {
        let a = cache.analyze_cached(JOIN_BIND, Dialect::Postgres);
        b.iter(|| check_sql(&view, black_box(&a)))
    });
    g.finish();
    assert_eq!(cache.misses(), 4, "benchmark inputs must hit the cache");
}

/// The governance benchmark's policy: 3 masked columns, 2 statement rules, 18 table rules.
fn twenty_rules() -> Policy {
    let mut toml = String::from(
        "[[labels]]\nname = \"pii\"\nmatch = [\"public.customers.email\", \"public.customers.ssn\", \"public.customers.card\"]\n\
         [[rules]]\nname = \"mask pii\"\nroles = [\"app\"]\naction = \"mask\"\nlabels = [\"pii\"]\nwith = \"redact\"\n\
         [[rules]]\nname = \"no drop\"\naction = \"deny\"\nstatements = [\"drop\", \"truncate\"]\n",
    );
    for i in 1..=18 {
        toml.push_str(&format!(
            "[[rules]]\nname = \"deny t{i}\"\nroles = [\"app\"]\naction = \"deny\"\ntables = [\"secret_{i}\"]\n"
        ));
    }
    let cfg = dgf_config::parse_str(&toml, "bench.toml", &|_| None).expect("bench policy config");
    Policy::from_config(&cfg).expect("bench policy")
}

criterion_group!(benches, rules_analysis);
criterion_main!(benches);
