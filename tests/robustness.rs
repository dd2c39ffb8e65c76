//! No panic on any input: seeded random and mutated inputs for the article parser, the
//! raw-text parser, the query parser and the matcher, plus pathological rules.
//!
//! Coverage-guided fuzzing is `scripts/fuzz.sh` (cargo fuzz, targets in fuzz/); these
//! bounded, deterministic runs are its quick companion in every test run, and the last test
//! replays the fuzzers' saved inputs (docs/RELIABILITY.md). Each starts from real inputs —
//! the seed articles in ../shared/seeds and the example rules — and mutates them.

use std::time::{Duration, Instant};

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use vigie::article::{self, ParseContext};

fn seeds() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .expect("the seed articles are expected in ../shared/seeds")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

/// One random edit of `bytes`: flip, insert, delete, duplicate or splice a slice.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>, donor: &[u8]) {
    const SPICE: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\\u0000",
        b"\\ud800",
        b"\xff",
        b"\xc3",
        b"\x00",
        b"\n",
        b"1e999",
        b"-0",
        b"null",
        b"true",
        b"\"published_at\"",
        b"\"title\"",
        b"\"body\"",
        b"\"entities\"",
        b"Publi\xc3\xa9 le",
        b"http://",
        b"2022-01-07",
        b"\xe2\x80\xae",
        b"AND",
        b"NEAR/",
        b"(",
        b")",
        b"NOT ",
        b"-",
        b"title:",
        b"\"",
    ];
    let len = bytes.len();
    match rng.gen_range(0..6) {
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            bytes[i] ^= 1 << rng.gen_range(0..8);
        }
        1 => {
            let i = rng.gen_range(0..=len);
            let s = SPICE[rng.gen_range(0..SPICE.len())];
            bytes.splice(i..i, s.iter().copied());
        }
        2 if len > 0 => {
            let a = rng.gen_range(0..len);
            let b = (a + rng.gen_range(0..64)).min(len);
            bytes.drain(a..b);
        }
        3 if len > 0 => {
            let a = rng.gen_range(0..len);
            let b = (a + rng.gen_range(0..256)).min(len);
            let copy = bytes[a..b].to_vec();
            let at = rng.gen_range(0..=bytes.len());
            bytes.splice(at..at, copy);
        }
        4 if !donor.is_empty() => {
            let a = rng.gen_range(0..donor.len());
            let b = (a + rng.gen_range(0..512)).min(donor.len());
            let at = rng.gen_range(0..=bytes.len());
            bytes.splice(at..at, donor[a..b].iter().copied());
        }
        _ => {
            let n = rng.gen_range(0..16);
            for _ in 0..n {
                bytes.push(rng.gen());
            }
        }
    }
}

#[test]
fn article_parser_never_panics_on_mutated_messages() {
    let seeds = seeds();
    let ctx = ParseContext::new(Utc::now());
    let mut rng = StdRng::seed_from_u64(1);
    let valid: Vec<Vec<u8>> = seeds
        .iter()
        .map(|s| {
            let raw = vigie::rawtext::parse(s, Some(Utc::now()), "seed");
            serde_json::to_vec(&raw).unwrap()
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for round in 0..4000 {
        let mut m = valid[round % valid.len()].clone();
        for _ in 0..rng.gen_range(1..8) {
            let donor = &valid[rng.gen_range(0..valid.len())];
            mutate(&mut rng, &mut m, donor);
        }
        match article::parse(&m, &ctx) {
            Ok(a) => {
                ok += 1;
                assert!(!a.id.is_empty());
            }
            Err(e) => {
                refused += 1;
                assert!(!e.code().is_empty());
            }
        }
    }
    // Both paths exercised.
    assert!(ok > 100 && refused > 100, "{ok} parsed, {refused} refused");
}

#[test]
fn raw_text_parser_never_panics_on_mutated_pages() {
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(2);
    for round in 0..600 {
        let mut page = seeds[round % seeds.len()].clone().into_bytes();
        for _ in 0..rng.gen_range(1..12) {
            let donor = seeds[rng.gen_range(0..seeds.len())].as_bytes();
            mutate(&mut rng, &mut page, donor);
        }
        let text = String::from_utf8_lossy(&page);
        let v = vigie::rawtext::parse(&text, None, "fuzz");
        assert!(v.is_object());
    }
    // Degenerate pages.
    for page in [
        "",
        "\n\n\n",
        "http://x",
        "Publié le",
        &"a\n".repeat(100_000),
    ] {
        assert!(vigie::rawtext::parse(page, None, "edge").is_object());
    }
}

#[test]
fn query_parser_and_matcher_never_panic_on_random_queries() {
    let mut rng = StdRng::seed_from_u64(3);
    let tokens = [
        "kazakhstan",
        "Almaty",
        "\"protests in\"",
        "AND",
        "OR",
        "NOT",
        "-",
        "(",
        ")",
        "NEAR/3",
        "NEAR/",
        "title:",
        "body:",
        "country:KZ",
        "entity:tokayev",
        "lang:fr",
        "source:",
        "\"",
        "é",
        "Қазақстан",
        "*",
        "NEAR/99999999999",
        "country:",
        "()",
        ":",
    ];
    let seeds = seeds();
    let article = article::parse(
        &serde_json::to_vec(&vigie::rawtext::parse(&seeds[0], Some(Utc::now()), "s")).unwrap(),
        &ParseContext::new(Utc::now()),
    )
    .unwrap();
    let mut parsed = 0;
    for _ in 0..3000 {
        let n = rng.gen_range(0..12);
        let q: Vec<&str> = (0..n)
            .map(|_| tokens[rng.gen_range(0..tokens.len())])
            .collect();
        let q = q.join(if rng.gen_bool(0.5) { " " } else { "" });
        if vigie::rules::parse_query(&q).is_ok() {
            parsed += 1;
        }
        // Parses, compiles and matches what parses (the cargo fuzz target's body).
        fuzz_bodies::query_against(q.as_bytes(), &article);
    }
    assert!(parsed > 100, "{parsed} queries parsed");
}

#[test]
fn pathological_queries_are_refused_quickly_with_a_reason() {
    let cases = [
        ("(".repeat(20_000) + "x" + &")".repeat(20_000), "deeper"),
        ("NOT ".repeat(15_000) + "x", "NOTs"),
        ("x OR ".repeat(20_000) + "x", "longer"),
        ("\"".repeat(3), "quote"),
    ];
    for (q, why) in cases {
        let started = Instant::now();
        let err = vigie::rules::parse_query(&q).expect_err(why);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{why}: {:?}",
            started.elapsed()
        );
        assert!(err.message.contains(why), "{} (wanted {why})", err.message);
    }
    // Wide but legal: thousands of alternatives still parse and match.
    let q = (0..3000)
        .map(|i| format!("term{i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    assert!(q.len() < 65_536);
    assert!(vigie::rules::parse_query(&q).is_ok());
}

/// The cargo fuzz targets' bodies (fuzz/bodies.rs), run here on every saved input in
/// fuzz/regressions/TARGET/ (crashes found by `scripts/fuzz.sh`, kept once fixed) and on
/// the real inputs the fuzzers start from, so the targets' invariants are checked in CI.
#[path = "../fuzz/bodies.rs"]
mod fuzz_bodies;

#[test]
fn fuzz_targets_hold_on_saved_inputs_and_real_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    type Body = fn(&[u8]);
    let targets: [(&str, Body); 6] = [
        ("article", fuzz_bodies::article),
        ("rawtext", fuzz_bodies::rawtext),
        ("query", fuzz_bodies::query),
        ("text", fuzz_bodies::text),
        ("rule_file", fuzz_bodies::rule_file),
        ("silence", fuzz_bodies::silence),
    ];
    let mut replayed = 0;
    for (name, body) in targets {
        let dir = root.join("fuzz/regressions").join(name);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            body(&std::fs::read(entry.path()).unwrap());
            replayed += 1;
        }
    }
    for seed in seeds() {
        fuzz_bodies::rawtext(seed.as_bytes());
        fuzz_bodies::text(seed.as_bytes());
    }
    for rules in std::fs::read_dir(root.join("config/rules"))
        .unwrap()
        .flatten()
    {
        fuzz_bodies::rule_file(&std::fs::read(rules.path()).unwrap());
    }
    for asked in [
        r#"{"rule": "kazakh*", "duration": "3d", "comment": "known story"}"#,
        r#"{"rule": "*", "channel": "newsroom", "ends_at": "2022-01-10T06:00:00Z", "comment": "x"}"#,
    ] {
        fuzz_bodies::silence(asked.as_bytes());
    }
    // Digest times, including one in the hour Paris skips in spring.
    for digest in [
        "08:00",
        "mon-fri 17:30",
        "sun 02:30",
        "fri-mon 00:00",
        "23:59",
    ] {
        fuzz_bodies::silence(digest.as_bytes());
    }
    eprintln!("{replayed} saved fuzz inputs replayed");
}
