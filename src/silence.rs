//! Silences: mute a rule's notifications for a while without touching the rule.
//!
//! A newsroom that already knows a story is running ("yes, Kazakhstan is on fire, we have
//! three reporters on it") wants the mail to stop for a few days, not a rule edited and
//! re-edited (an edited rule starts its counts and baseline afresh, docs/rules.md).
//!
//! A silence names rules by id or by a shell-style pattern (`kazakh*`, `*`; `*` is any run
//! of characters, `?` one), optionally one channel, a span of wall-clock time and a
//! comment saying why. Semantics, which [`crate::sink::outbox`] implements:
//!
//! * The decision is taken when a delivery falls due, by the outbox worker: a due row whose
//!   event's rule and channel an active silence matches is marked `silenced` (with the
//!   silence's id) instead of sent. So a silence also stops the retries of deliveries
//!   already pending when it was made, and a row that falls due after the silence ended
//!   goes out.
//! * Nothing upstream changes: the rule keeps counting, its detector keeps its lifecycle,
//!   events are stored and listed by `/api/alerts` as ever. When the silence ends, the
//!   rule's next event (an `updated`, or the `resolved`) is delivered as usual, marked
//!   `unannounced` (see [`crate::engine::AlertEvent::unannounced`]) so the receiver knows
//!   it belongs to an alert it was not told about.
//! * Silences live in the state file: they survive restarts, and `vigie silence` can add
//!   one from another process while the service runs (the worker reads the active ones at
//!   every round, at least once a second).
//!
//! Time here is wall-clock time, not event time: a silence is about when people are told.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::config::parse_span;

/// Longest silence accepted: long enough for any holiday, short enough that a forgotten
/// silence does not mute a rule for good (delete the rule for that).
pub const MAX_SPAN_SECS: i64 = 90 * 86_400;

/// How long an ended silence stays listed (`?expired=true`, `--expired`) before the
/// housekeeping deletes it.
pub const KEPT_AFTER_END_MS: i64 = 30 * 86_400_000;

/// Rules a silence's description names; `*` over 10,000 rules would otherwise list them
/// all in every answer.
pub const LISTED_RULES: usize = 100;

/// A stored silence: what was asked for, with its id and when it was made.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Silence {
    pub id: i64,
    #[serde(flatten)]
    pub spec: SilenceSpec,
    pub created_at: DateTime<Utc>,
}

/// Where a silence stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    pub fn state(&self, now: DateTime<Utc>) -> SilenceState {
        if now < self.spec.starts_at {
            SilenceState::Pending
        } else if now < self.spec.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// The silence as the API and `vigie silence` show it: the stored fields, its state at
    /// `now`, and how many and which of `rule_ids` (the rules in force) it covers, the
    /// first [`LISTED_RULES`] by name — a pattern that covers none is allowed, since the
    /// rule may be added later.
    pub fn describe(&self, now: DateTime<Utc>, rule_ids: &[String]) -> serde_json::Value {
        let covered: Vec<&String> = (rule_ids.iter())
            .filter(|id| rule_matches(&self.spec.rule, id))
            .collect();
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["state"] = serde_json::json!(self.state(now));
        v["rules_covered"] = serde_json::json!(covered.len());
        v["rules"] = serde_json::json!(covered.iter().take(LISTED_RULES).collect::<Vec<_>>());
        v
    }

    /// Whether this silence mutes a delivery of `rule`'s event on `channel` at `now`.
    pub fn mutes(&self, rule: &str, channel: &str, now: DateTime<Utc>) -> bool {
        self.state(now) == SilenceState::Active
            && self.spec.channel.as_deref().is_none_or(|c| c == channel)
            && rule_matches(&self.spec.rule, rule)
    }
}

/// Whether a silence's rule pattern covers rule `id`.
pub fn rule_matches(pattern: &str, id: &str) -> bool {
    WildMatch::new(pattern).matches(id)
}

/// The first of `silences` (oldest first) that mutes this delivery.
pub fn muting<'a>(
    silences: &'a [Silence],
    rule: &str,
    channel: &str,
    now: DateTime<Utc>,
) -> Option<&'a Silence> {
    silences.iter().find(|s| s.mutes(rule, channel, now))
}

/// A silence as asked for (the body of `POST /api/silences`, or `vigie silence add`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    pub rule: String,
    #[serde(default)]
    pub channel: Option<String>,
    /// RFC 3339; default now.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// RFC 3339. Exactly one of `ends_at` and `duration`.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// From `starts_at`: `90m`, `36h`, `3d`.
    #[serde(default)]
    pub duration: Option<String>,
    pub comment: String,
    #[serde(default)]
    pub created_by: Option<String>,
}

/// A silence checked and ready to store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceSpec {
    /// Rule id or pattern (`*` any run of characters, `?` one character).
    pub rule: String,
    /// The one channel muted; `None` mutes every channel.
    pub channel: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Why: required, so that whoever finds the silence later knows whether to lift it.
    pub comment: String,
    pub created_by: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SilenceError {
    #[error(
        "rule: `{0}` is not a rule id or pattern (letters, digits, - _ . and the wildcards * ?)"
    )]
    BadRule(String),
    #[error("comment: say why the rule is silenced")]
    NoComment,
    #[error("{field}: `{value}` is not an RFC 3339 time")]
    BadTime { field: &'static str, value: String },
    #[error("duration: `{0}` is not a span like 90m, 36h or 3d")]
    BadDuration(String),
    #[error("give either ends_at or duration, not both")]
    BothEnds,
    #[error("give ends_at or duration")]
    NoEnd,
    #[error("ends_at must be after starts_at and in the future")]
    EndsTooSoon,
    #[error("a silence may last at most 90 days")]
    TooLong,
    #[error("channel: `{0}` is not a configured channel (configured: {1})")]
    UnknownChannel(String, String),
    #[error("no silence {0}")]
    NotFound(i64),
}

fn parse_time(field: &'static str, v: &str) -> Result<DateTime<Utc>, SilenceError> {
    DateTime::parse_from_rfc3339(v.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| SilenceError::BadTime {
            field,
            value: v.to_string(),
        })
}

impl NewSilence {
    /// Checks the request against the clock and the configured `channels`.
    pub fn check(
        self,
        now: DateTime<Utc>,
        channels: &[String],
    ) -> Result<SilenceSpec, SilenceError> {
        let rule = self.rule.trim().to_string();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.*?".contains(c);
        if rule.is_empty() || rule.len() > 200 || !rule.chars().all(allowed) {
            return Err(SilenceError::BadRule(self.rule));
        }
        let comment = self.comment.trim().to_string();
        if comment.is_empty() {
            return Err(SilenceError::NoComment);
        }
        let channel = self.channel.map(|c| c.trim().to_string());
        if let Some(c) = &channel {
            if !channels.contains(c) {
                return Err(SilenceError::UnknownChannel(c.clone(), channels.join(", ")));
            }
        }
        let starts_at = match &self.starts_at {
            Some(v) => parse_time("starts_at", v)?,
            None => now,
        };
        let ends_at = match (&self.ends_at, &self.duration) {
            (Some(_), Some(_)) => return Err(SilenceError::BothEnds),
            (None, None) => return Err(SilenceError::NoEnd),
            (Some(v), None) => parse_time("ends_at", v)?,
            (None, Some(d)) => {
                let secs = (parse_span(d).filter(|&s| s > 0))
                    .ok_or_else(|| SilenceError::BadDuration(d.clone()))?;
                if secs > MAX_SPAN_SECS {
                    return Err(SilenceError::TooLong);
                }
                starts_at + chrono::Duration::seconds(secs)
            }
        };
        if ends_at <= starts_at || ends_at <= now {
            return Err(SilenceError::EndsTooSoon);
        }
        if (ends_at - starts_at).num_seconds() > MAX_SPAN_SECS {
            return Err(SilenceError::TooLong);
        }
        Ok(SilenceSpec {
            rule,
            channel,
            starts_at,
            ends_at,
            comment,
            created_by: self
                .created_by
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ask(rule: &str) -> NewSilence {
        NewSilence {
            rule: rule.into(),
            channel: None,
            starts_at: None,
            ends_at: None,
            duration: Some("3d".into()),
            comment: "known story".into(),
            created_by: None,
        }
    }

    fn silence(rule: &str, channel: Option<&str>) -> Silence {
        Silence {
            id: 1,
            spec: SilenceSpec {
                rule: rule.into(),
                channel: channel.map(String::from),
                starts_at: at("2022-01-05T00:00:00Z"),
                ends_at: at("2022-01-08T00:00:00Z"),
                comment: "known".into(),
                created_by: None,
            },
            created_at: at("2022-01-05T00:00:00Z"),
        }
    }

    #[test]
    fn a_silence_mutes_its_rules_and_channel_only_while_active() {
        let s = silence("kazakh*", Some("newsroom"));
        let during = at("2022-01-06T12:00:00Z");
        assert!(s.mutes("kazakhstan", "newsroom", during));
        assert!(s.mutes("kazakh", "newsroom", during));
        // Another rule, another channel, before and after (the end is exclusive).
        assert!(!s.mutes("ukraine", "newsroom", during));
        assert!(!s.mutes("the-kazakh-story", "newsroom", during));
        assert!(!s.mutes("kazakhstan", "ops", during));
        assert!(!s.mutes("kazakhstan", "newsroom", at("2022-01-04T23:59:59Z")));
        assert!(!s.mutes("kazakhstan", "newsroom", at("2022-01-08T00:00:00Z")));
        assert_eq!(s.state(at("2022-01-04T00:00:00Z")), SilenceState::Pending);
        assert_eq!(s.state(at("2022-01-09T00:00:00Z")), SilenceState::Expired);
        // Every channel, every rule; `?` is one character.
        let all = silence("*", None);
        assert!(all.mutes("anything", "ops", during));
        assert!(rule_matches("energy-price?", "energy-prices"));
        assert!(!rule_matches("energy-price?", "energy-price"));
        // Patterns are matched whole and case-sensitively, as rule ids are compared.
        assert!(!rule_matches("kazakhstan", "Kazakhstan"));
    }

    #[test]
    fn a_description_counts_every_rule_covered_and_names_the_first_hundred() {
        let mut ids: Vec<String> = (0..150).map(|i| format!("r{i:03}")).collect();
        ids.push("kazakhstan".into());
        let now = at("2022-01-06T00:00:00Z");
        let all = silence("*", None).describe(now, &ids);
        assert_eq!(all["rules_covered"], 151);
        assert_eq!(all["rules"].as_array().unwrap().len(), LISTED_RULES);
        assert_eq!(all["state"], "active");
        let one = silence("kaz*", None).describe(now, &ids);
        assert_eq!(one["rules"], serde_json::json!(["kazakhstan"]));
        assert_eq!(
            one["comment"], "known",
            "the stored fields are flattened in"
        );
    }

    #[test]
    fn the_first_matching_silence_is_named() {
        let mut a = silence("ukraine", None);
        a.id = 3;
        let mut b = silence("*", None);
        b.id = 4;
        let list = [a, b];
        let during = at("2022-01-06T00:00:00Z");
        assert_eq!(muting(&list, "ukraine", "x", during).map(|s| s.id), Some(3));
        assert_eq!(
            muting(&list, "kazakhstan", "x", during).map(|s| s.id),
            Some(4)
        );
        assert_eq!(muting(&list[..1], "kazakhstan", "x", during), None);
    }

    #[test]
    fn requests_are_checked_with_a_reason() {
        let now = at("2022-01-05T10:00:00Z");
        let channels = vec!["newsroom".to_string(), "ops".to_string()];
        let ok = ask("kazakh*").check(now, &channels).unwrap();
        assert_eq!(ok.starts_at, now);
        assert_eq!(ok.ends_at, at("2022-01-08T10:00:00Z"));

        let check = |f: &dyn Fn(&mut NewSilence)| {
            let mut r = ask("kazakhstan");
            f(&mut r);
            r.check(now, &channels).unwrap_err()
        };
        assert!(matches!(
            check(&|r| r.rule = "kaz akh".into()),
            SilenceError::BadRule(_)
        ));
        assert!(matches!(
            check(&|r| r.rule = " ".into()),
            SilenceError::BadRule(_)
        ));
        assert!(matches!(
            check(&|r| r.rule = "[ab]".into()),
            SilenceError::BadRule(_)
        ));
        assert_eq!(check(&|r| r.comment = "  ".into()), SilenceError::NoComment);
        assert!(matches!(
            check(&|r| r.channel = Some("pager".into())),
            SilenceError::UnknownChannel(..)
        ));
        assert_eq!(
            check(&|r| r.ends_at = Some("2022-01-06T00:00:00Z".into())),
            SilenceError::BothEnds
        );
        assert_eq!(check(&|r| r.duration = None), SilenceError::NoEnd);
        for bad in ["3", "d", "3w", "-3d", "0h", "3é", "é", "99999999999999999d"] {
            assert!(
                matches!(
                    check(&|r| r.duration = Some(bad.into())),
                    SilenceError::BadDuration(_)
                ),
                "{bad}"
            );
        }
        assert_eq!(
            check(&|r| r.duration = Some("91d".into())),
            SilenceError::TooLong
        );
        assert!(matches!(
            check(&|r| r.starts_at = Some("tomorrow".into())),
            SilenceError::BadTime {
                field: "starts_at",
                ..
            }
        ));
        // An end already past, or before the start.
        let past = |r: &mut NewSilence| {
            r.duration = None;
            r.ends_at = Some("2022-01-05T09:00:00Z".into());
        };
        assert_eq!(check(&past), SilenceError::EndsTooSoon);
        // A silence set for later is fine.
        let mut later = ask("ukraine");
        later.starts_at = Some("2022-01-10T00:00:00Z".into());
        later.duration = Some("36h".into());
        let s = later.check(now, &channels).unwrap();
        assert_eq!(s.ends_at, at("2022-01-11T12:00:00Z"));
        // Unknown fields are refused rather than ignored (a typo in `duration` would
        // otherwise give a silence that never ends being refused for another reason).
        assert!(serde_json::from_str::<NewSilence>(
            r#"{"rule":"x","comment":"c","durration":"3d"}"#
        )
        .is_err());
    }
}
