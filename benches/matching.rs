//! Micro-benchmarks of the per-article hot path: parse, normalize, match (full gazetteer,
//! entities, 10 / 1,000 / 10,000 rules), count and detect.
//!
//!     cargo bench --bench matching
//!
//! Figures and how to read them: docs/BENCHMARKS.md.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigie::article::{self, Article, ParseContext};
use vigie::engine::{Engine, EngineSettings};
use vigie::matcher::{Matcher, MatcherOptions};
use vigie::rules::RuleSet;

/// Articles of about 3 KB from the scenario generator (French and English).
fn corpus(n: usize) -> Vec<Vec<u8>> {
    let opts = vigie::generate::GenerateOptions {
        seed: 42,
        end: Utc.with_ymd_and_hms(2022, 1, 8, 12, 0, 0).unwrap(),
        days: 4,
        rate: 60.0,
        body_bytes: 3000,
        ..Default::default()
    };
    let mut out = Vec::new();
    vigie::generate::generate(&opts, &mut |a| {
        if out.len() < n {
            out.push(serde_json::to_vec(&a).unwrap())
        }
    })
    .unwrap();
    out
}

/// `n` rules like a newsroom's watch list: each rule has its own subject (here unique
/// made-up words, so they do not match by accident), and one rule in a hundred each of a
/// common news word, a country, and an entity query, so about 3% of rules match often.
fn rules_toml(n: usize) -> String {
    const WORDS: &[&str] = &[
        "budget",
        "inflation",
        "tennis",
        "rugby",
        "climat",
        "énergie",
        "sécheresse",
        "cyberattaque",
        "smartphone",
        "assemblée",
        "municipales",
        "coalition",
        "logement",
        "protests",
        "emergency",
        "troops",
        "airport",
        "blackout",
        "grain",
        "forum",
    ];
    let mut s = String::new();
    for i in 0..n {
        let w = WORDS[(i / 100) % WORDS.len()];
        let rule = match i % 100 {
            0 => format!("keywords = [\"{w}\", \"zq{i}x\"]"),
            1 => format!(
                "countries = [\"{}\"]",
                ["KZ", "FR", "DE", "US", "RU", "UA", "CN", "TR"][(i / 100) % 8]
            ),
            2 => format!("query = 'entity:tokayev OR \"{w} zq{i}\"'"),
            k if k % 3 == 0 => format!("query = '(zq{i}a OR \"zq{i}b zq{i}c\") AND NOT zq{i}d'"),
            _ => format!("keywords = [\"zq{i}x\", \"zq{i}y zq{i}z\"]"),
        };
        s.push_str(&format!("[[rule]]\nid = \"r{i}\"\n{rule}\n\n"));
    }
    s
}

fn matcher(n: usize) -> Matcher {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("rules")).unwrap();
    std::fs::create_dir_all(d.path().join("entities")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/entities/people.toml"),
        d.path().join("entities/people.toml"),
    )
    .unwrap();
    std::fs::write(d.path().join("rules/bench.toml"), rules_toml(n)).unwrap();
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
