//! Inputs shared by the criterion benchmarks and the end-to-end harness, so both measure
//! the same articles and the same rule sets.
#![allow(dead_code)] // each bench uses part of it

use chrono::{DateTime, TimeZone, Utc};

/// `n` articles of about 3 KB from the scenario generator (French and English), ending at
/// `end`, as feed JSON.
pub fn corpus_until(n: usize, end: DateTime<Utc>) -> Vec<Vec<u8>> {
    // The generator spreads `rate` articles an hour over `days`; ask for enough.
    let days = 4u32.max((n as f64 / (400.0 * 24.0)).ceil() as u32 + 1);
    let opts = vigie::generate::GenerateOptions {
        seed: 42,
        end,
        days,
        rate: (n as f64 / (f64::from(days) * 24.0) * 1.3).max(60.0),
        body_bytes: 3000,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(n);
    vigie::generate::generate(&opts, &mut |a| {
        if out.len() < n {
            out.push(serde_json::to_vec(&a).unwrap())
        }
    })
    .unwrap();
    out
}

/// The criterion corpus: a fixed end date, so every run sees the same articles.
pub fn corpus(n: usize) -> Vec<Vec<u8>> {
    corpus_until(n, Utc.with_ymd_and_hms(2022, 1, 8, 12, 0, 0).unwrap())
}

/// `n` rules like a newsroom's watch list, as a rule file, and every keyword and phrase the
/// rules name (for the harness's bare Aho-Corasick ceiling). Each rule has its own subject
/// (unique made-up words, so they do not match by accident), and one rule in a hundred each
/// of a common news word, a country, and an entity query, so about 3% of rules match often.
pub fn rules_toml(n: usize) -> (String, Vec<String>) {
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
    const COUNTRIES: &[(&str, &str)] = &[
        ("KZ", "Kazakhstan"),
        ("FR", "France"),
        ("DE", "Allemagne"),
        ("US", "États-Unis"),
        ("RU", "Russie"),
        ("UA", "Ukraine"),
        ("CN", "Chine"),
        ("TR", "Turquie"),
    ];
    let mut s = String::new();
    let mut words = Vec::new();
    for i in 0..n {
        let w = WORDS[(i / 100) % WORDS.len()];
        let rule = match i % 100 {
            0 => {
                words.extend([w.to_string(), format!("zq{i}x")]);
                format!("keywords = [\"{w}\", \"zq{i}x\"]")
            }
            1 => {
                let (code, name) = COUNTRIES[(i / 100) % COUNTRIES.len()];
                words.push(name.to_string());
                format!("countries = [\"{code}\"]")
            }
            2 => {
                words.extend(["Tokaïev".to_string(), format!("{w} zq{i}")]);
                format!("query = 'entity:tokayev OR \"{w} zq{i}\"'")
            }
            k if k % 3 == 0 => {
                words.extend([
                    format!("zq{i}a"),
                    format!("zq{i}b zq{i}c"),
                    format!("zq{i}d"),
                ]);
                format!("query = '(zq{i}a OR \"zq{i}b zq{i}c\") AND NOT zq{i}d'")
            }
            _ => {
                words.extend([format!("zq{i}x"), format!("zq{i}y zq{i}z")]);
                format!("keywords = [\"zq{i}x\", \"zq{i}y zq{i}z\"]")
            }
        };
        s.push_str(&format!("[[rule]]\nid = \"r{i}\"\n{rule}\n\n"));
    }
    words.sort();
    words.dedup();
    (s, words)
}

/// `n` distinct made-up words built of consonant-vowel syllables ("dorame", "vistelu"…),
/// for a second compute ceiling. The rule sets' own subjects (`zq123x`) all begin with
/// the same two letters, which ordinary text almost never contains, so a DFA of them sits
/// in its start state and stays in cache; words like these share their first letters with
/// ordinary text, as a newsroom's real subjects (names, places) do, so the automaton walks
/// into its states as it would with real keywords.
pub fn word_like(n: usize) -> Vec<String> {
    const ONSETS: &[&str] = &[
        "b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "tr", "pl", "br",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ou", "é", "an", "on"];
    let mut seen = std::collections::HashSet::new();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64: deterministic, so every run measures the same words.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while seen.len() < n {
        let syllables = 2 + next() % 3;
        let mut w = String::new();
        for _ in 0..syllables {
            w.push_str(ONSETS[(next() % ONSETS.len() as u64) as usize]);
            w.push_str(VOWELS[(next() % VOWELS.len() as u64) as usize]);
        }
        seen.insert(w);
    }
    let mut v: Vec<String> = seen.into_iter().collect();
    v.sort();
    v
}
