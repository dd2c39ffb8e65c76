//! The article feed contract (see `docs/feed-format.md`).
//!
//! One JSON object per message. Recognised fields and their aliases:
//!
//! | field          | aliases                         | type                         |
//! |----------------|---------------------------------|------------------------------|
//! | `id`           | `article_id`                    | string or integer            |
//! | `url`          | `link`                          | string                       |
//! | `title`        | `headline`                      | string                       |
//! | `body`         | `text`, `content`               | string                       |
//! | `published_at` | `date`, `published`, `pub_date` | RFC 3339 string or unix secs |
//! | `source`       | `site`, `domain`                | string                       |
//! | `language`     | `lang`                          | string (ISO 639-1 preferred) |
//! | `entities`     |                                 | array of strings             |
//! | `countries`    |                                 | array of strings (alpha-2)   |
//!
//! Anything else is kept verbatim in [`Article::extra`]. Parsing never panics: every
//! input either becomes an [`Article`] or a [`Reject`] naming the reason, which the
//! pipeline sends to the dead-letter topic.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Default limit on a message's size, in bytes (1 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A validated article, ready for matching and counting.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Article {
    /// Stable identity: given upstream, else derived from the URL or the content, so that
    /// a re-published copy of the same message gets the same id.
    pub id: String,
    /// Canonical link; quoted in alerts so people can read the article.
    pub url: Option<String>,
    pub title: String,
    pub body: String,
    /// Event time: what the counts and the detector are driven by.
    pub published_at: DateTime<Utc>,
    /// Where the event time came from, so alerts and the API can flag guessed dates.
    #[serde(default)]
    pub date_origin: DateOrigin,
    /// Publisher (usually a domain); used for `source:` filters and distinct-source counts.
    pub source: Option<String>,
    /// ISO 639-1 code when known (given or detected).
    pub language: Option<String>,
    /// Entity ids supplied by an upstream tagger; matched like entities found in the text.
    #[serde(default)]
    pub entities: Vec<String>,
    /// ISO 3166-1 alpha-2 codes supplied upstream.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Fields this contract does not know, kept so nothing upstream sends is lost.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// Where an article's `published_at` came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DateOrigin {
    /// The message carried a date.
    #[default]
    Field,
    /// No date in the message: the Kafka record timestamp was used.
    RecordTimestamp,
    /// Neither: the time the message was processed (or the file time for raw files).
    Ingested,
}

/// Why a message was refused. The `code` goes in the dead-letter header `vigie.reason`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("empty message")]
    Empty,
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("message is not valid UTF-8 (first bad byte at {at})")]
    InvalidUtf8 { at: usize },
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("message is a JSON {0}, expected an object")]
    NotAnObject(&'static str),
    #[error("field `{field}` should be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("article has neither a title nor a body")]
    NoText,
    #[error("field `{field}` holds an unreadable date: {value:?}")]
    BadDate { field: &'static str, value: String },
}

impl Reject {
    /// Short, stable reason code for headers and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::Empty => "empty",
            Reject::TooLarge { .. } => "too_large",
            Reject::InvalidUtf8 { .. } => "invalid_utf8",
            Reject::InvalidJson(_) => "invalid_json",
            Reject::NotAnObject(_) => "not_an_object",
            Reject::WrongType { .. } => "wrong_type",
            Reject::NoText => "no_text",
            Reject::BadDate { .. } => "bad_date",
        }
    }
}

/// Context that the message itself does not carry.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext {
    /// Largest accepted payload in bytes.
    pub max_bytes: usize,
    /// The Kafka record timestamp, used when the message has no date.
    pub record_time: Option<DateTime<Utc>>,
    /// Processing time; the last resort for the event time.
    pub now: DateTime<Utc>,
}

impl ParseContext {
    pub fn new(now: DateTime<Utc>) -> Self {
        ParseContext {
            max_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            record_time: None,
            now,
        }
    }
}

/// Parses one message payload into an article.
pub fn parse(payload: &[u8], ctx: &ParseContext) -> Result<Article, Reject> {
    if payload.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Reject::Empty);
    }
    if payload.len() > ctx.max_bytes {
        return Err(Reject::TooLarge {
            size: payload.len(),
            limit: ctx.max_bytes,
        });
    }
    let text = simdutf8::compat::from_utf8(payload).map_err(|e| Reject::InvalidUtf8 {
        at: e.valid_up_to(),
    })?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| Reject::InvalidJson(e.to_string()))?;
    match value {
        Value::Object(map) => from_map(map, ctx),
        other => Err(Reject::NotAnObject(json_kind(&other))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Removes the first present key among `names` and returns its value (null counts as absent).
fn take(map: &mut Map<String, Value>, names: &[&str]) -> Option<Value> {
    let mut found = None;
    for name in names {
        if let Some(v) = map.remove(*name) {
            if found.is_none() && !v.is_null() {
                found = Some(v);
            }
        }
    }
    found
}

fn take_string(
    map: &mut Map<String, Value>,
    field: &'static str,
    aliases: &[&str],
) -> Result<Option<String>, Reject> {
    let mut names = vec![field];
    names.extend_from_slice(aliases);
    match take(map, &names) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reject::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn take_string_list(
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Vec<String>, Reject> {
    let wrong = Reject::WrongType {
        field,
        expected: "an array of strings",
    };
    match take(map, &[field]) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(wrong.clone()),
            })
            .collect(),
        Some(_) => Err(wrong),
    }
}

fn from_map(mut map: Map<String, Value>, ctx: &ParseContext) -> Result<Article, Reject> {
    let id = match take(&mut map, &["id", "article_id"]) {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::String(_)) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(Reject::WrongType {
                field: "id",
                expected: "a string or an integer",
            })
        }
    };
    let url = take_string(&mut map, "url", &["link"])?.filter(|u| !u.trim().is_empty());
    let title = take_string(&mut map, "title", &["headline"])?.unwrap_or_default();
    let body = take_string(&mut map, "body", &["text", "content"])?.unwrap_or_default();
    if title.trim().is_empty() && body.trim().is_empty() {
        return Err(Reject::NoText);
    }
    let (published_at, date_origin) =
        match take(&mut map, &["published_at", "date", "published", "pub_date"]) {
            Some(v) => (parse_date_value(&v)?, DateOrigin::Field),
            None => match ctx.record_time {
                Some(t) => (t, DateOrigin::RecordTimestamp),
                None => (ctx.now, DateOrigin::Ingested),
            },
        };
    let source = take_string(&mut map, "source", &["site", "domain"])?;
    let language = take_string(&mut map, "language", &["lang"])?
        .and_then(|l| language_code(&l).map(Cow::into_owned))
        .or_else(|| detect_language(&title, &body));
    let entities = take_string_list(&mut map, "entities")?;
    let countries = take_string_list(&mut map, "countries")?
        .into_iter()
        .map(|c| c.trim().to_ascii_uppercase())
        .collect();
    let id = id.unwrap_or_else(|| derive_id(url.as_deref(), &title, &body));
    let source = source.or_else(|| url.as_deref().and_then(host_of));
    Ok(Article {
        id,
        url,
        title,
        body,
        published_at,
        date_origin,
        source,
        language,
        entities,
        countries,
        extra: map,
    })
}

fn parse_date_value(v: &Value) -> Result<DateTime<Utc>, Reject> {
    match v {
        Value::String(s) => parse_date(s).ok_or_else(|| Reject::BadDate {
            field: "published_at",
            value: s.chars().take(64).collect(),
        }),
        Value::Number(n) => {
            // Unix time; values past year 5000 in seconds are taken as milliseconds.
            let secs = n.as_f64().unwrap_or(f64::NAN);
            let secs = if secs.abs() > 95_617_584_000.0 {
                secs / 1000.0
            } else {
                secs
            };
            if !secs.is_finite() {
                return Err(Reject::BadDate {
                    field: "published_at",
                    value: n.to_string(),
                });
            }
            Utc.timestamp_opt(secs.trunc() as i64, 0)
                .single()
                .ok_or_else(|| Reject::BadDate {
                    field: "published_at",
                    value: n.to_string(),
                })
        }
        _ => Err(Reject::WrongType {
            field: "published_at",
            expected: "an RFC 3339 string or a unix time",
        }),
    }
}

/// Parses the date forms seen in real feeds: RFC 3339, ISO 8601 without seconds or colon in
/// the offset (`2022-01-14T14:00+0100`), naive date-times (taken as UTC) and plain dates.
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.with_timezone(&Utc));
    }
    const WITH_OFFSET: &[&str] = &[
        "%Y-%m-%dT%H:%M%z",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%d %H:%M:%S%z",
        "%Y-%m-%d %H:%M%z",
    ];
    for f in WITH_OFFSET {
        if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    const NAIVE: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    for f in NAIVE {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| Utc.from_utc_datetime(&t));
    }
    None
}

/// A stable id: from the URL when there is one (so re-sends of a link collapse), else from
/// the text. Prefixes say which, to make collisions between the two kinds impossible.
pub fn derive_id(url: Option<&str>, title: &str, body: &str) -> String {
    let mut h = Sha256::new();
    let prefix = match url {
        Some(u) => {
            h.update(u.trim().trim_end_matches('/').as_bytes());
            "u"
        }
        None => {
            h.update(title.trim().as_bytes());
            h.update([0u8]);
            h.update(body.trim().as_bytes());
            "c"
        }
    };
    format!("{prefix}-{}", &hex::encode(h.finalize())[..20])
}

/// The host of a URL, without a leading `www.`.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(':').next()?.to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    (!host.is_empty()).then_some(host)
}

/// Detects the language of an article, returning an ISO 639-1 code when one exists.
pub fn detect_language(title: &str, body: &str) -> Option<String> {
    // whatlang is linear in the input; the first few kilobytes decide as well as the whole.
    let mut sample = String::with_capacity(2048);
    sample.push_str(title);
    sample.push('\n');
    for c in body.chars().take(2000) {
        sample.push(c);
    }
    let info = whatlang::detect(&sample)?;
    if !info.is_reliable() && sample.len() < 40 {
        return None;
    }
    Some(iso639_1(info.lang()).to_string())
}

/// The language code vigie keeps for a language tag: ISO 639-1 where the tag names a
/// language that has one, so that `fr`, `FR`, `fr-FR`, `fr_CA`, `fra` and `fre` all read
/// `fr`, in articles and in rules alike (a rule's `lang:fr` must match an article tagged
/// `fr-FR`). A three-letter code with no two-letter equivalent stays as it is, lower-cased.
/// `None` for a tag that is no language code at all (`""`, `french`, `x1`) or names no
/// particular language (`und`, `mul`): the parser then detects the language from the text,
/// and a rule names it as an error.
pub fn language_code(tag: &str) -> Option<Cow<'_, str>> {
    let base = tag.trim().split(['-', '_']).next()?;
    if !base.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    // ISO 639-2's codes for no particular language: undetermined, multiple, no linguistic
    // content, uncoded. The text says more.
    if ["und", "mul", "zxx", "mis"]
        .iter()
        .any(|c| base.eq_ignore_ascii_case(c))
    {
        return None;
    }
    match base.len() {
        2 if base.bytes().all(|b| b.is_ascii_lowercase()) => Some(Cow::Borrowed(base)),
        2 => Some(Cow::Owned(base.to_ascii_lowercase())),
        3 => {
            let lower = base.to_ascii_lowercase();
            let code = whatlang::Lang::from_code(&lower)
                .map(iso639_1)
                .or_else(|| bibliographic_639_2(&lower));
            Some(code.map_or(Cow::Owned(lower), Cow::Borrowed))
        }
        _ => None,
    }
}

/// Three-letter codes that whatlang's ISO 639-3 table does not know, with the 639-1 code
/// of each: the twenty ISO 639-2/B (bibliographic) codes, still found in feeds (`fre`,
/// `ger`), and the 639-2/T codes of macrolanguages, where whatlang names one member
/// (`zho` for its `cmn`). No crate in the tree maps them.
fn bibliographic_639_2(code: &str) -> Option<&'static str> {
    Some(match code {
        "alb" => "sq",
        "arm" => "hy",
        "baq" => "eu",
        "bur" => "my",
        "chi" => "zh",
        "cze" => "cs",
        "dut" => "nl",
        "fre" => "fr",
        "geo" => "ka",
        "ger" => "de",
        "gre" => "el",
        "ice" => "is",
        "mac" => "mk",
        "mao" => "mi",
        "may" => "ms",
        "per" => "fa",
        "rum" => "ro",
        "slo" => "sk",
        "tib" => "bo",
        "wel" => "cy",
        "zho" => "zh",
        "fas" => "fa",
        "nor" => "no",
        "msa" => "ms",
        _ => return None,
    })
}

pub(crate) fn iso639_1(lang: whatlang::Lang) -> &'static str {
    use whatlang::Lang::*;
    match lang {
        Eng => "en",
        Fra => "fr",
        Deu => "de",
        Spa => "es",
        Ita => "it",
        Por => "pt",
        Rus => "ru",
        Ukr => "uk",
        Pol => "pl",
        Nld => "nl",
        Tur => "tr",
        Ara => "ar",
        Cmn => "zh",
        Jpn => "ja",
        Kor => "ko",
        Swe => "sv",
        Dan => "da",
        Nob => "nb",
        Fin => "fi",
        Ces => "cs",
        Ron => "ro",
        Hun => "hu",
        Ell => "el",
        Bul => "bg",
        Bel => "be",
        Heb => "he",
        Pes => "fa",
        Hin => "hi",
        Srp => "sr",
        Hrv => "hr",
        Slk => "sk",
        Slv => "sl",
        Lit => "lt",
        Lav => "lv",
        Est => "et",
        Cat => "ca",
        Uzb => "uz",
        Aze => "az",
        Kat => "ka",
        Ind => "id",
        Vie => "vi",
        Tha => "th",
        other => other.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_read_as_one_code() {
        for (tag, code) in [
            ("fr", Some("fr")),
            (" FR ", Some("fr")),
            ("fr-FR", Some("fr")),
            ("fr_CA", Some("fr")),
            ("fra", Some("fr")),
            ("FRE", Some("fr")),
            ("ger", Some("de")),
            ("eng", Some("en")),
            ("zho", Some("zh")),
            ("zh-Hant-TW", Some("zh")),
            ("haw", Some("haw")),
            ("french", None),
            ("und", None),
            ("MUL", None),
            ("", None),
            ("-", None),
            ("x1", None),
            ("é", None),
        ] {
            assert_eq!(language_code(tag).as_deref(), code, "{tag:?}");
        }
    }

    fn ctx() -> ParseContext {
        ParseContext::new(Utc.with_ymd_and_hms(2022, 1, 20, 0, 0, 0).unwrap())
    }

    #[test]
    fn parses_full_article_and_keeps_unknown_fields() {
        let a = parse(
            br#"{"id":"a1","url":"https://www.lemonde.fr/x","title":"T","body":"Le Kazakhstan est un pays","published_at":"2022-01-05T10:00:00+01:00","language":"fr","extra_field":{"k":1}}"#,
            &ctx(),
        )
        .unwrap();
        assert_eq!(a.id, "a1");
        assert_eq!(a.source.as_deref(), Some("lemonde.fr"));
        assert_eq!(
            a.published_at,
            Utc.with_ymd_and_hms(2022, 1, 5, 9, 0, 0).unwrap()
        );
        assert_eq!(a.extra.get("extra_field").unwrap()["k"], 1);
    }

    #[test]
    fn aliases_and_derived_fields() {
        let mut c = ctx();
        c.record_time = Some(Utc.with_ymd_and_hms(2022, 1, 6, 0, 0, 0).unwrap());
        let a = parse(
            br#"{"link":"https://ex.org/a","content":"Les manifestations se poursuivent au Kazakhstan, selon les autorites locales qui parlent de troubles."}"#,
            &c,
        )
        .unwrap();
        assert!(a.id.starts_with("u-"));
        assert_eq!(a.date_origin, DateOrigin::RecordTimestamp);
        assert_eq!(a.published_at, c.record_time.unwrap());
        assert_eq!(a.language.as_deref(), Some("fr"));
        // A tag is kept as its code; what is no code gives way to detection.
        let body = "Les manifestations se poursuivent au Kazakhstan, selon les autorites locales.";
        for (tag, want) in [
            ("fr-FR", "fr"),
            ("fre", "fr"),
            ("French", "fr"),
            ("en-GB", "en"),
        ] {
            let msg = serde_json::json!({"title": "T", "body": body, "language": tag});
            let a = parse(msg.to_string().as_bytes(), &c).unwrap();
            assert_eq!(a.language.as_deref(), Some(want), "{tag}");
        }
        let b = parse(br#"{"text":"same","date":"2022-01-14T14:00+0100"}"#, &c).unwrap();
        assert!(b.id.starts_with("c-"));
        assert_eq!(
            b.published_at,
            Utc.with_ymd_and_hms(2022, 1, 14, 13, 0, 0).unwrap()
        );
        let again = parse(br#"{"text":"same","date":"2022-01-14"}"#, &c).unwrap();
        assert_eq!(b.id, again.id, "id derived from content is stable");
    }

    #[test]
    fn rejects_bad_messages_with_reasons() {
        let c = ctx();
        assert_eq!(parse(b"", &c).unwrap_err().code(), "empty");
        assert_eq!(parse(b"   \n", &c).unwrap_err().code(), "empty");
        assert_eq!(parse(b"{not json", &c).unwrap_err().code(), "invalid_json");
        assert_eq!(parse(b"[1,2]", &c).unwrap_err().code(), "not_an_object");
        assert_eq!(
            parse(b"{\"title\": 3}", &c).unwrap_err().code(),
            "wrong_type"
        );
        assert_eq!(
            parse(b"{\"title\": \"\"}", &c).unwrap_err().code(),
            "no_text"
        );
        assert_eq!(
            parse(b"{\"title\":\"a\",\"date\":\"yesterday\"}", &c)
                .unwrap_err()
                .code(),
            "bad_date"
        );
        assert_eq!(
            parse(b"{\"title\":\"\xff\xfe\"}", &c).unwrap_err().code(),
            "invalid_utf8"
        );
        // The position of the first bad byte, after valid multi-byte characters too: the
        // 22 bytes before it hold two of them (`ï`, two bytes, and U+FFFD, three).
        let mut bad = "{\"title\":\"Tokaïev \u{fffd}".as_bytes().to_vec();
        bad.extend_from_slice(b"\xc3\"}");
        assert!(matches!(
            parse(&bad, &c),
            Err(Reject::InvalidUtf8 { at: 22 })
        ));
        let mut small = c;
        small.max_bytes = 10;
        assert_eq!(
            parse(br#"{"title":"a long title"}"#, &small)
                .unwrap_err()
                .code(),
            "too_large"
        );
        let deep = "[".repeat(100_000);
        assert_eq!(
            parse(deep.as_bytes(), &c).unwrap_err().code(),
            "invalid_json"
        );
        assert_eq!(
            parse(br#"{"title":"a","entities":["x",1]}"#, &c)
                .unwrap_err()
                .code(),
            "wrong_type"
        );
    }

    #[test]
    fn host_extraction() {
        assert_eq!(
            host_of("https://www.Sputniknews.com/a?b").as_deref(),
            Some("sputniknews.com")
        );
        assert_eq!(
            host_of("http://user@h.example:8080/").as_deref(),
            Some("h.example")
        );
        assert_eq!(host_of("not a url"), None);
    }
}
