#![allow(dead_code)] // each target uses one body
//! What each fuzz target does with one input. Shared by the cargo fuzz targets
//! (fuzz/fuzz_targets/) and by tests/robustness.rs, which replays every saved input in
//! fuzz/regressions/ through the same code, so a crash once found stays a test.
//!
//! Each body asserts the invariants of its parser, not only "no panic": a refused article
//! has a reason code, a parsed one an id; a raw page always becomes a JSON object; a query
//! that parses compiles into a matcher and can be matched.

use chrono::{TimeZone, Utc};
use vigie::article::{self, ParseContext};

/// A fixed clock, so a saved input replays the same way on any day.
fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()
}

/// The feed contract: JSON bytes from Kafka.
pub fn article(data: &[u8]) {
    match article::parse(data, &ParseContext::new(now())) {
        Ok(a) => assert!(!a.id.is_empty(), "a parsed article has an id"),
        Err(e) => assert!(!e.code().is_empty(), "a refusal has a reason"),
    }
}

/// Scraped pages as `vigie publish` reads them, then the article they become.
pub fn rawtext(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let v = vigie::rawtext::parse(&text, Some(now()), "fuzz");
    assert!(v.is_object(), "a page always becomes a JSON object");
    let bytes = serde_json::to_vec(&v).expect("serializable");
    article(&bytes);
}

/// The rule query language; a query that parses must compile and match.
pub fn query(data: &[u8]) {
    query_against(data, &sample_article());
}

/// A rule with this id and query, as a rule file would give it.
fn rule(id: &str, query: vigie::rules::Query) -> vigie::rules::Rule {
    vigie::rules::Rule {
        id: id.into(),
        name: id.into(),
        query,
        notify: vec![],
        spike: Default::default(),
        templates: Default::default(),
        file: "fuzz".into(),
        line: 1,
        fingerprint: 1,
    }
}

/// [`query`], matching against `a`.
pub fn query_against(data: &[u8], a: &article::Article) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = vigie::rules::parse_query(q) else {
        return;
    };
    let rule = rule("r", query);
    let options = vigie::matcher::MatcherOptions {
        gazetteer: false,
        ..Default::default()
    };
    // A query may be refused here too (no usable term), with an error, not a panic.
    if let Ok(m) = vigie::matcher::Matcher::new(vec![rule], vec![], &options) {
        let _ = m.match_article(a);
        let _ = m.explain(a);
    }
}

/// Article text through a matcher with the built-in gazetteer: every place-name path
/// (case checks, names that run into a capitalized word, "New", regions, set phrases,
/// languages) on any text. The first line is the title, the rest the body; the first
/// byte picks the language tag. Every piece of evidence must quote its field at its
/// offset, and matching must not depend on whether evidence is asked for.
pub fn text(data: &[u8]) {
    use std::sync::OnceLock;
    use vigie::matcher::{Matcher, MatcherOptions};
    static MATCHER: OnceLock<Matcher> = OnceLock::new();
    let m = MATCHER.get_or_init(|| {
        let rule = |id, q| rule(id, vigie::rules::parse_query(q).expect("a valid query"));
        let rules = vec![
            rule("kz", "country:KZ OR (kazakhstan NEAR/5 protest*)"),
            rule("us", "country:US AND NOT country:GB"),
            rule("gb", "country:GB"),
        ];
        Matcher::new(rules, vec![], &MatcherOptions::default()).expect("a matcher")
    });
    let text = String::from_utf8_lossy(data);
    let (title, body) = text.split_once('\n').unwrap_or(("", &text));
    let languages = [
        None,
        Some("fr"),
        Some("en"),
        Some("de"),
        Some("es"),
        Some("xx"),
    ];
    let language = languages[usize::from(data.first().copied().unwrap_or(0)) % languages.len()];
    let a = article::Article {
        id: "fuzz".into(),
        url: None,
        title: title.into(),
        body: body.into(),
        published_at: now(),
        date_origin: Default::default(),
        source: None,
        language: language.map(String::from),
        entities: vec![],
        countries: vec![],
        extra: Default::default(),
    };
    let plain = m.match_article(&a);
    let explained = m.explain(&a);
    assert_eq!(
        plain.rule_indices, explained.rule_indices,
        "explain matches the same rules"
    );
    assert_eq!(
        plain.countries, explained.countries,
        "and the same countries"
    );
    for e in &explained.evidence {
        let field = match e.field {
            "title" => title,
            "body" => body,
            other => panic!("evidence from an unknown field {other}"),
        };
        assert_eq!(
            field.get(e.offset..e.offset + e.surface.len()),
            Some(e.surface.as_str()),
            "evidence quotes its field at its offset"
        );
    }
}

/// A whole rule file, as hot reload reads it: every error names the file and a line.
pub fn rule_file(data: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/r.toml"), data).unwrap();
    if let Err(errors) = vigie::rules::RuleSet::load(dir.path(), &["ops".to_string()]) {
        assert!(!errors.is_empty());
        for e in errors {
            let shown = e.to_string();
            assert!(
                shown.contains("r.toml"),
                "the error names the file: {shown}"
            );
            assert!(e.line.is_some(), "the error names a line: {shown}");
        }
    }
}

fn sample_article() -> article::Article {
    let json = br#"{"title":"Kazakhstan : manifestations a Almaty","body":"Le president Tokaiev a decrete l'etat d'urgence. Kazakhstan, Almaty, Russie, OTSC.","url":"https://example.org/a","source":"example.org","published_at":"2026-01-15T10:00:00Z"}"#;
    article::parse(json, &ParseContext::new(now())).expect("the sample article parses")
}

/// A silence request (`POST /api/silences`, `vigie silence add`): refused with a reason or
/// accepted as a silence that ends after it starts, in the future, within the longest span.
/// The same bytes as a window of quiet hours (`quiet_hours`): refused, or written back as
/// a window that reads the same, and a quiet period that ends after the time asked about.
pub fn silence(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = vigie::config::parse_span(&text);
    quiet_window(&text);
    digest_time(&text);
    let Ok(asked) = serde_json::from_slice::<vigie::silence::NewSilence>(data) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp(1_641_600_000, 0).unwrap();
    let channels = ["newsroom".to_string(), "log".to_string()];
    if let Ok(spec) = asked.check(now, &channels) {
        assert!(spec.ends_at > spec.starts_at && spec.ends_at > now);
        assert!((spec.ends_at - spec.starts_at).num_seconds() <= vigie::silence::MAX_SPAN_SECS);
        assert!(!spec.comment.is_empty());
        let s = vigie::silence::Silence {
            id: 1,
            spec,
            created_at: now,
        };
        let _ = s.describe(now, &["kazakhstan".to_string()]);
        let _ = s.mutes("kazakhstan", "log", now);
    }
}

/// A digest time reads back as written, and its next time is always after now, within a
/// week and a day, around clock changes too.
fn digest_time(text: &str) {
    let Ok(d) = text.parse::<vigie::quiet::DigestTime>() else {
        return;
    };
    let shown = d.to_string();
    assert_eq!(shown.parse::<vigie::quiet::DigestTime>(), Ok(d), "{shown}");
    for tz in [
        chrono_tz::UTC,
        chrono_tz::Europe::Paris,
        chrono_tz::Pacific::Chatham,
    ] {
        let digest = vigie::quiet::Digest { times: vec![d], tz };
        for t in [1_774_744_200, 1_792_888_200, 1_775_309_400, 1_768_478_400] {
            let now = chrono::DateTime::from_timestamp(t, 0).unwrap();
            let next = digest
                .next(now)
                .unwrap_or_else(|| panic!("{shown}: no next time"));
            assert!(
                next > now && next - now <= chrono::Duration::days(8),
                "{shown} at {now}: {next}"
            );
        }
    }
}

fn quiet_window(text: &str) {
    let Ok(w) = text.parse::<vigie::quiet::QuietWindow>() else {
        return;
    };
    let shown = w.to_string();
    assert_eq!(shown.parse::<vigie::quiet::QuietWindow>(), Ok(w), "{shown}");
    for tz in [
        chrono_tz::UTC,
        chrono_tz::Europe::Paris,
        chrono_tz::Pacific::Chatham,
    ] {
        let q = vigie::quiet::QuietHours {
            windows: vec![w],
            tz,
            action: Default::default(),
        };
        let whole_week = q.check().is_err();
        // Around Paris's clock changes of 2026 (Chatham's end of summer time is on
        // 2026-04-05 at 14:45 UTC), and an ordinary day.
        for t in [1_774_744_200, 1_792_888_200, 1_775_309_400, 1_768_478_400] {
            let now = chrono::DateTime::from_timestamp(t, 0).unwrap();
            if let Some(end) = q.until(now) {
                assert!(end > now, "{shown} at {now}: {end}");
                assert!(
                    whole_week || q.until(end).is_none(),
                    "{shown} at {now}: still quiet at {end}"
                );
            }
        }
    }
}
