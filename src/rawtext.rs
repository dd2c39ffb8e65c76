//! Raw scraped text → an article of the feed contract.
//!
//! Scrapers hand over pages as they were: a URL line (or `date … URL`), the title (often
//! repeated, sometimes one word per line), metadata lines (dates, tags, XPath, image URLs),
//! the article's paragraphs, then reader comments and footer junk. This parser keeps the
//! URL, the first meaningful line as title, the paragraphs as body, and drops the rest.
//!
//! Dates are taken only where the page states one: an ISO date-time line, `14.01.2022`
//! beside the lead, `Publié le 7 janvier 2022`, or a date in the URL path. Otherwise the
//! caller's fallback (the file time) is used and the article is flagged with
//! `"date_source": "file_time"` — a date is never guessed from the prose.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use crate::normalize::normalize_str;

/// Lines that open the reader-comment or footer part of a page: everything after is dropped.
const STOP_MARKERS: &[&str] = &[
    "pour poster un commentaire",
    "commentaires",
    "reagir a cet article",
    "quelques regles de bonne conduite",
    "follow us on",
    "suivez nous",
    "abonnez vous a notre newsletter",
    "prev ",
    "lire aussi les commentaires",
    "comments",
    "leave a comment",
];

/// Lines that are boilerplate wherever they appear.
fn is_junk(line: &str, norm: &str) -> bool {
    line.starts_with("/html")
        || line.contains("@content")
        || (line.starts_with("http") && !line.contains(' '))
        || line.contains('@')
            && line.contains('.')
            && line.split_whitespace().any(|w| w.contains('@'))
        || norm == "prev"
        || norm == "next"
        || norm.starts_with("next ")
        || norm.starts_with("publie mis a jour")
        || norm.starts_with("ce qu il faut savoir")
        || norm.chars().all(|c| c.is_ascii_digit() || c == ' ')
}

const FRENCH_MONTHS: &[&str] = &[
    "janvier",
    "fevrier",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "aout",
    "septembre",
    "octobre",
    "novembre",
    "decembre",
];

/// Finds an explicitly written date in a line: an ISO date(-time) standing alone,
/// `dd.mm.yyyy`, or `Publié le 7 janvier 2022`.
fn written_date(line: &str) -> Option<DateTime<Utc>> {
    let t = line.trim();
    if t.len() <= 32 && t.as_bytes().first().is_some_and(|b| b.is_ascii_digit()) {
        if let Some(d) = crate::article::parse_date(t) {
            return Some(d);
        }
    }
    // dd.mm.yyyy anywhere in a short metadata-like context.
    for w in t.split(|c: char| c.is_whitespace() || c == ',') {
        let parts: Vec<&str> = w.split('.').collect();
        if parts.len() == 3 && parts[0].len() == 2 && parts[1].len() == 2 && parts[2].len() == 4 {
            if let (Ok(d), Ok(m), Ok(y)) = (parts[0].parse(), parts[1].parse(), parts[2].parse()) {
                if let Some(date) = NaiveDate::from_ymd_opt(y, m, d) {
                    return date.and_hms_opt(0, 0, 0).map(|x| Utc.from_utc_datetime(&x));
                }
            }
        }
    }
    // `Publié le mardi 7 janvier 2022 à 10h`, `Mis à jour 8 janvier 2022`: a day, a French
    // month and a year within the few words after the marker.
    let n = normalize_str(t);
    for marker in ["publie ", "mis a jour ", "published "] {
        let Some(at) = n.find(marker) else { continue };
        let words: Vec<&str> = n[at + marker.len()..].split(' ').take(8).collect();
        for w in words.windows(3) {
            let day = w[0].parse::<u32>();
            let month = FRENCH_MONTHS.iter().position(|m| *m == w[1]);
            if let (Ok(d), Some(m), Ok(y)) = (day, month, w[2].parse::<i32>()) {
                if let Some(date) = NaiveDate::from_ymd_opt(y, m as u32 + 1, d) {
                    return date.and_hms_opt(0, 0, 0).map(|x| Utc.from_utc_datetime(&x));
                }
            }
        }
    }
    None
}

/// A date in a URL path: `/20220114/` or `/2022/01/14/`.
fn url_date(url: &str) -> Option<DateTime<Utc>> {
    let path = url.split_once("://").map_or(url, |(_, r)| r);
    let segs: Vec<&str> = path.split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y%m%d") {
                return d.and_hms_opt(0, 0, 0).map(|x| Utc.from_utc_datetime(&x));
            }
        }
        if s.len() == 4 && i + 2 < segs.len() {
            if let (Ok(y), Ok(m), Ok(d)) = (
                s.parse::<i32>(),
                segs[i + 1].parse::<u32>(),
                segs[i + 2].parse::<u32>(),
            ) {
                if (1990..2100).contains(&y) {
                    if let Some(date) = NaiveDate::from_ymd_opt(y, m, d) {
                        return date.and_hms_opt(0, 0, 0).map(|x| Utc.from_utc_datetime(&x));
                    }
                }
            }
        }
    }
    None
}

/// A body paragraph: prose, not a tag, caption-less menu item or related-article link.
fn is_paragraph(line: &str) -> bool {
    let len = line.chars().count();
    len >= 80 || (len >= 25 && line.trim_end().ends_with(['.', '!', '?', '»', '"', '…']))
}

/// Parses raw text. `fallback` is the time to use when the page states no date.
pub fn parse(text: &str, fallback: Option<DateTime<Utc>>, name: &str) -> Value {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let mut url = None;
    let mut date: Option<(DateTime<Utc>, &str)> = None;
    let mut title: Option<String> = None;
    let mut title_norm = String::new();
    let mut body: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut short_run = String::new();
    for line in lines {
        let norm = normalize_str(line);
        // URL lines: `https://…` or `date 2022-01 https://…`.
        if url.is_none() && line.split_whitespace().count() <= 3 {
            if let Some(u) = line
                .split_whitespace()
                .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            {
                if title.is_none() {
                    url = Some(u.to_string());
                    continue;
                }
            }
        }
        // Keep the first written date, unless a later one also gives the time of day.
        if date.is_none_or(|(d, _)| d.time() == chrono::NaiveTime::MIN) {
            if let Some(d) = written_date(line) {
                if date.is_none() || d.time() != chrono::NaiveTime::MIN {
                    date = Some((d, "text"));
                }
            }
        }
        if title.is_none() {
            if norm.is_empty()
                || is_junk(line, &norm)
                || written_date(line).is_some()
                || norm.starts_with("date ")
            {
                continue;
            }
            title = Some(line.to_string());
            title_norm = norm;
            continue;
        }
        if !body.is_empty()
            && STOP_MARKERS
                .iter()
                .any(|m| norm.starts_with(m) || norm.contains(&format!(" {m}")) && norm.len() < 120)
        {
            break;
        }
        if norm == title_norm || norm.is_empty() || is_junk(line, &norm) {
            continue;
        }
        if !is_paragraph(line) {
            // Titles split one word per line come back here; they are never body.
            short_run.push_str(&norm);
            short_run.push(' ');
            if short_run.trim() == title_norm {
                short_run.clear();
            }
            continue;
        }
        short_run.clear();
        if seen.insert(norm) {
            body.push(line.to_string());
        }
    }
    let (published_at, date_source) = match (date, url.as_deref().and_then(url_date)) {
        (Some((d, s)), _) => (Some(d), s),
        (None, Some(d)) => (Some(d), "url"),
        (None, None) => (fallback, "file_time"),
    };
    let title = title.unwrap_or_default();
    let body = body.join("\n\n");
    let mut v = json!({
        "id": crate::article::derive_id(url.as_deref(), &title, &body),
        "title": title,
        "body": body,
        "date_source": date_source,
        "raw_name": name,
    });
    if let Some(u) = &url {
        v["url"] = json!(u);
    }
    if let Some(d) = published_at {
        v["published_at"] = json!(d.to_rfc3339());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_title_date_body_and_comments() {
        let raw = " date 2022-01 https://ex.org/20220105/crise-1.html\n\nCrise kazakhe: Ankara suit de près\n\nCrise kazakhe: Ankara suit de près\n\nLes manifestations et la crise politique qui secouent le Kazakhstan préoccupent Ankara, a déclaré le ministère.\ntags\nPour poster un commentaire, merci de vous abonner.\nUn lecteur mécontent écrit un long commentaire qui ne doit jamais apparaître dans le corps.\n";
        let v = parse(raw, None, "t");
        assert_eq!(v["url"], "https://ex.org/20220105/crise-1.html");
        assert_eq!(v["title"], "Crise kazakhe: Ankara suit de près");
        assert_eq!(v["date_source"], "url");
        assert!(v["published_at"]
            .as_str()
            .unwrap()
            .starts_with("2022-01-05"));
        let body = v["body"].as_str().unwrap();
        assert!(body.starts_with("Les manifestations"));
        assert!(!body.contains("lecteur"));
    }

    #[test]
    fn missing_date_falls_back_and_is_flagged() {
        let fallback = Utc.with_ymd_and_hms(2024, 11, 2, 0, 0, 0).unwrap();
        let v = parse("Un titre\nLe chef de la diplomatie, lors d'une conférence le 7 janvier 2022, a parlé longuement de la crise.\n", Some(fallback), "t");
        assert_eq!(v["date_source"], "file_time");
        assert!(v["published_at"]
            .as_str()
            .unwrap()
            .starts_with("2024-11-02"));
    }

    #[test]
    fn written_dates_in_their_usual_forms() {
        let d = |s: &str| written_date(s).map(|d| d.format("%Y-%m-%d").to_string());
        assert_eq!(
            d("Publié le mardi 7 janvier 2022 à 10h").as_deref(),
            Some("2022-01-07")
        );
        assert_eq!(d("Publié 7 janvier 2022").as_deref(), Some("2022-01-07"));
        assert_eq!(
            d("Un lead, 14.01.2022, Sputnik France").as_deref(),
            Some("2022-01-14")
        );
        assert_eq!(d("2022-01-14T14:00+0100").as_deref(), Some("2022-01-14"));
        assert_eq!(
            d("lors d'une conférence le 7 janvier 2022"),
            None,
            "prose is not a date line"
        );
    }

    #[test]
    fn split_title_lines_are_not_body() {
        let v = parse("« La Russie est invincible »\n«\nLa\nRussie\nest\ninvincible\n»\nUn paragraphe suffisamment long pour être considéré comme faisant partie du corps de l'article.\n", None, "t");
        assert_eq!(v["title"], "« La Russie est invincible »");
        assert!(v["body"].as_str().unwrap().starts_with("Un paragraphe"));
    }
}
