//! Moving rules' state from one state file to another (`vigie state export` and
//! `vigie state import`).
//!
//! Per-rule state is keyed by rule id, so a rule can change hands. Today a deployment that
//! outgrows one instance splits its rules over several, each its own consumer group over
//! the same topic; moving a rule from one to another should not cost it weeks of learning
//! (its baseline's half-life is three days, its seasonal factors take a week). An export
//! carries, per rule:
//!
//! * its state: baseline, hour-of-day and day-of-week factors, overdispersion, lifecycle
//!   (an open alert stays open, a cooldown runs on) and the fingerprint of its definition;
//! * its buckets and evidence of the engine's memory (the last 49 hours), so its windows
//!   and charts go on as before;
//! * the stories it counted within the story window, so the new owner does not count
//!   again a story the old one already counted, when both read the same articles around
//!   the hand-over.
//!
//! * its open alert, if it has one: the alert's events and which channels were told of
//!   each (sent, or still pending on the old owner, which sends it). The new owner's
//!   `updated` and `resolved` then go out as to a channel that knows the alert (not marked
//!   `unannounced`), a channel's floor sends the end where the start went, and the new
//!   owner's API and dashboard show the alert from its start.
//!
//! Not carried: ended alerts' events and deliveries, which stay with the old owner.
//!
//! The import writes into a state file that no running vigie holds the rule of: stop the
//! target, import, add the rule (same definition, or the fingerprint differs and the state
//! is set aside as for any edited rule) and start it. It refuses, unless told:
//!
//! * a rule the target already has state for (`replace`): its buckets would mix with the
//!   imported ones;
//! * an export whose state has learned less than [`MAX_GAP_SECS`] before the target's
//!   watermark (`force`): the rule would learn the hours in between as empty, which drags
//!   its baseline down. Export again, just before the import.
//!
//! An export is JSON lines, one rule per line, with a `format` number.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::{
    rule_key, AlertEvent, ArticleRef, Bucket, Changes, RuleState, StoryKey, StoryRow,
};
use crate::state::{StateError, Store};

/// The export format this version writes and reads.
pub const FORMAT: u32 = 1;

/// How far behind the target's watermark an imported state may have learned (see the
/// module docs): a few hours of a rule learned as empty shift its level by a few percent
/// (half-life 72 hours); a day would shift it by a fifth.
pub const MAX_GAP_SECS: i64 = 6 * 3600;

/// One rule's state as exported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleExport {
    pub format: u32,
    pub rule: String,
    pub exported_at: DateTime<Utc>,
    /// The source state file's watermark (event time, unix seconds).
    pub watermark: Option<i64>,
    pub state: RuleState,
    /// (bucket start, counts), oldest first.
    pub buckets: Vec<(i64, Bucket)>,
    /// (bucket start, article) kept as evidence.
    pub evidence: Vec<(i64, ArticleRef)>,
    /// Stories the rule counted: (SimHash, title hash, event time of the copy that counts).
    pub stories: Vec<(u64, Option<u64>, i64)>,
    /// The rule's open alert, if any. (Absent from exports of earlier versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_alert: Option<OpenAlert>,
}

/// An open alert as carried to the new owner: its events so far and, per event, the
/// channels told of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenAlert {
    pub events: Vec<AlertEvent>,
    /// (event id, channel): deliveries sent, or pending on the old owner.
    pub told: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no rule in the state file matches `{0}`")]
    NoMatch(String),
    #[error("line {line}: not a rule export: {message}")]
    Format { line: usize, message: String },
    #[error("rule `{0}` already has state here (import with --replace to overwrite it)")]
    Exists(String),
    #[error(
        "rule `{rule}`: its state has learned up to {hours:.1} hours before this state file's \
         watermark, and would learn those hours as empty; export it again just before \
         importing (or import with --force)"
    )]
    Behind { rule: String, hours: f64 },
}

/// The state of the rules whose ids match `pattern` (`*` any run of characters, `?` one),
/// with their buckets and evidence since `memory_secs` and the stories they counted in the
/// last `story_secs` before the watermark.
pub fn export(
    store: &Store,
    pattern: &str,
    memory_secs: i64,
    story_secs: i64,
) -> Result<Vec<RuleExport>, TransferError> {
    let wanted = wildmatch::WildMatch::new(pattern);
    let mut rules: Vec<(String, RuleState)> = (store.rule_states()?.into_iter())
        .filter(|(id, _)| wanted.matches(id))
        .collect();
    if rules.is_empty() {
        return Err(TransferError::NoMatch(pattern.to_string()));
    }
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    let watermark = store.watermark()?;
    let wm = watermark.unwrap_or(0);
    let evidence = store.evidence_since(wm - memory_secs)?;
    let stories = store.stories_since(wm - story_secs)?;
    let now = Utc::now();
    let mut out = Vec::with_capacity(rules.len());
    for (id, state) in rules {
        let key = rule_key(&id, state.fingerprint);
        let open_alert = match state.lifecycle.active.as_ref() {
            Some(active) => Some(open_alert(store, &active.alert_id)?),
            None => None,
        };
        out.push(RuleExport {
            open_alert,
            format: FORMAT,
            buckets: store.rule_buckets(&id, wm - memory_secs)?,
            evidence: (evidence.iter())
                .filter(|(r, _, _)| *r == id)
                .map(|(_, b, a)| (*b, (**a).clone()))
                .collect(),
            stories: (stories.iter())
                .filter(|s| s.counted_by.contains(&key))
                .map(|s| (s.key.simhash, s.key.title, s.key.at))
                .collect(),
            rule: id,
            exported_at: now,
            watermark,
            state,
        });
    }
    Ok(out)
}

/// An open alert's events and the channels told of each.
fn open_alert(store: &Store, alert_id: &str) -> Result<OpenAlert, StateError> {
    let events = store.alert_events_of(alert_id)?;
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let mut told = Vec::new();
    for (event, deliveries) in store.deliveries_of(&ids)? {
        told.extend(
            (deliveries.into_iter())
                .filter(|d| d.status == "sent" || d.status == "pending")
                .map(|d| (event.clone(), d.channel)),
        );
    }
    told.sort();
    Ok(OpenAlert { events, told })
}

/// Reads an export: one [`RuleExport`] per non-empty line.
pub fn read(text: &str) -> Result<Vec<RuleExport>, TransferError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| TransferError::Format {
            line: i + 1,
            message,
        };
        let e: RuleExport = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if e.format != FORMAT {
            return Err(bad(format!(
                "format {} (this vigie reads format {FORMAT})",
                e.format
            )));
        }
        out.push(e);
    }
    Ok(out)
}

/// What [`import`] may overwrite or accept (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub replace: bool,
    pub force: bool,
}

/// Writes the exports into `store` in one transaction: all of them or, on any refusal,
/// none. Gives back the ids imported.
pub fn import(
    store: &mut Store,
    exports: &[RuleExport],
    opts: ImportOptions,
) -> Result<Vec<String>, TransferError> {
    let here: std::collections::HashSet<String> =
        store.rule_states()?.into_iter().map(|(id, _)| id).collect();
    let watermark = store.watermark()?;
    for e in exports {
        if here.contains(&e.rule) && !opts.replace {
            return Err(TransferError::Exists(e.rule.clone()));
        }
        if let Some(wm) = watermark.filter(|_| !opts.force) {
            let gap = wm - e.state.learned_until;
            if e.state.learned_until != i64::MIN && gap > MAX_GAP_SECS {
                return Err(TransferError::Behind {
                    rule: e.rule.clone(),
                    hours: gap as f64 / 3600.0,
                });
            }
        }
    }
    let mut changes = Changes {
        // Not a batch of the feed: the target's watermark and offsets stay as they are.
        watermark: i64::MIN,
        ..Default::default()
    };
    let mut told = Vec::new();
    for e in exports {
        if let Some(open) = &e.open_alert {
            changes.events.extend(open.events.iter().cloned());
            told.extend(open.told.iter().cloned());
        }
        let rule: Arc<str> = e.rule.as_str().into();
        let key = rule_key(&e.rule, e.state.fingerprint);
        changes.rules.push((e.rule.clone(), e.state.clone()));
        (changes.buckets).extend(e.buckets.iter().map(|(b, c)| (rule.clone(), *b, c.clone())));
        (changes.evidence)
            .extend((e.evidence.iter()).map(|(b, a)| (rule.clone(), *b, Arc::new(a.clone()))));
        changes
            .stories
            .extend(e.stories.iter().map(|&(simhash, title, at)| StoryRow {
                key: StoryKey { simhash, title, at },
                counted_by: vec![key],
            }));
    }
    let ids: Vec<String> = exports.iter().map(|e| e.rule.clone()).collect();
    store.replace_rules(&ids, &changes, &told)?;
    Ok(ids)
}
