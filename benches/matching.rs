//! Micro-benchmarks of the per-article hot path: parse, normalize, story hashes, match (full gazetteer,
//! entities, 10 / 1,000 / 10,000 rules), count and detect.
//!
//!     cargo bench --bench matching
//!
//! Figures and how to read them: docs/BENCHMARKS.md.

use std::sync::Arc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigie::article::{self, Article, ParseContext};
use vigie::engine::{Engine, EngineSettings};
use vigie::matcher::{Matcher, MatcherOptions};
use vigie::rules::RuleSet;

mod common;
use common::{corpus, rules_toml};

fn matcher(n: usize) -> Matcher {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("rules")).unwrap();
    std::fs::create_dir_all(d.path().join("entities")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/entities/people.toml"),
        d.path().join("entities/people.toml"),
    )
    .unwrap();
    std::fs::write(d.path().join("rules/bench.toml"), rules_toml(n).0).unwrap();
    let set = RuleSet::load(d.path(), &[]).unwrap();
    Matcher::new(set.rules, set.entities, &MatcherOptions::default()).unwrap()
}

fn parsed(raw: &[Vec<u8>]) -> Vec<Article> {
    let ctx = ParseContext::new(Utc::now());
    raw.iter()
        .map(|p| article::parse(p, &ctx).unwrap())
        .collect()
}

fn text_bytes(articles: &[Article]) -> u64 {
    articles
        .iter()
        .map(|a| (a.title.len() + a.body.len()) as u64)
        .sum()
}

fn bench(c: &mut Criterion) {
    let raw = corpus(500);
    let articles = parsed(&raw);
    let bytes = text_bytes(&articles);

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(raw.iter().map(|r| r.len() as u64).sum()));
    g.bench_function("json_contract", |b| b.iter(|| parsed(&raw)));
    g.finish();

    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("title_and_body", |b| {
        b.iter(|| {
            for a in &articles {
                std::hint::black_box(vigie::normalize::normalize(&a.title));
                std::hint::black_box(vigie::normalize::normalize(&a.body));
            }
        })
    });
    g.finish();

    // The story fingerprint alone (SimHash of the opening, title hash), from text the
    // matcher has already normalized: a fifth of `normalize_and_match` when first profiled.
    let normalized: Vec<_> = articles
        .iter()
        .map(|a| {
            (
                vigie::normalize::normalize(&a.title),
                vigie::normalize::normalize(&a.body),
            )
        })
        .collect();
    let mut g = c.benchmark_group("story_hashes");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("simhash_and_title", |b| {
        b.iter(|| {
            for (t, body) in &normalized {
                std::hint::black_box(vigie::engine::StoryHashes::of_normalized(t, body));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("normalize_and_match");
    g.throughput(Throughput::Bytes(bytes));
    for n in [10, 1_000, 10_000] {
        let started = std::time::Instant::now();
        let m = matcher(n);
        let matched: usize = articles
            .iter()
            .map(|a| m.match_article(a).rule_indices.len())
            .sum();
        eprintln!(
            "matcher with {n} rules: {} (built in {:?}); {:.2} rules matched per article",
            m.describe(),
            started.elapsed(),
            matched as f64 / articles.len() as f64
        );
        g.bench_with_input(BenchmarkId::new("rules", n), &m, |b, m| {
            b.iter(|| {
                for a in &articles {
                    std::hint::black_box(m.match_article(a));
                }
            })
        });
    }
    g.finish();

    let m = Arc::new(matcher(1_000));
    let matches: Vec<_> = articles.iter().map(|a| m.match_article(a)).collect();
    let mut g = c.benchmark_group("count_and_detect");
    g.throughput(Throughput::Elements(articles.len() as u64));
    g.bench_function("ingest_advance_1000_rules", |b| {
        b.iter(|| {
            let mut e = Engine::new(EngineSettings::default(), m.clone());
            for (a, mm) in articles.iter().zip(&matches) {
                e.ingest(a, mm, None);
                e.advance(a.published_at.timestamp());
            }
            std::hint::black_box(e.take_changes());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
