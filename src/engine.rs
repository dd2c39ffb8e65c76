//! The deterministic core shared by `vigie run` and `vigie backtest`.
//!
//! The engine is driven by event time only: it never reads a clock. Callers feed it
//! matched articles ([`Engine::ingest`]) and move its watermark ([`Engine::advance`]); it
//! answers with alert events. Running the same articles with the same watermarks gives the
//! same events, which is what makes backtests honest.
//!
//! State is kept per rule id ([`RuleState`]) so that a rule's counts, baseline and alert
//! lifecycle can be persisted, reloaded and — later — moved to another process.
//!
//! Counting rules:
//! * An article lands in the bucket of its `published_at` (clamped to `now` when the caller
//!   gives one, so a wrong future date cannot pre-fill buckets).
//! * An article older than `watermark - allowed_lateness` is *late*: counted in a metric
//!   only, because its bucket has already been learned by the baseline.
//! * Per rule and bucket: articles, stories and distinct sources. Near-duplicate copies
//!   (64-bit SimHash or the same title, within `story_window`) form one story, and a rule
//!   counts a story once, in the bucket of the earliest copy *it* matches: so the count is
//!   a function of the rule's own articles, not of which copy the feed delivered first, nor
//!   of the order partitions were read in.
//! * The count of a batch, and what is learned and judged, do not depend on how the
//!   articles were cut into batches: a backlog read a thousand at a time decides what a
//!   replay a minute at a time decides (see `Engine::advance`), but for the moments at
//!   which alerts are judged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use rayon::prelude::*;
// The engine hashes rule ids, bucket times and story hashes for every matched article: Fx
// hashing instead of SipHash, which was 8% of samples at 10,000 rules. The keys are rule
// ids from the configuration and hashes the engine computed itself, not strings a feed
// chooses, so there is no flooding attack to defend against.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::article::Article;
use crate::detect::{
    self, Baseline, CountUnit, DetectorConfig, DetectorKind, EventKind, Lifecycle, Season,
    WindowView,
};
use crate::matcher::{ArticleMatch, Matcher};
use crate::normalize::{self, Normalized};
use crate::rules::Rule;

/// A [`Learner`] over an engine's shared state. A macro, not a method: its borrows stay
/// per field, so the rules' states can be borrowed mutably beside it.
macro_rules! learner {
    ($engine:expr, $sums:expr) => {
        Learner {
            settings: &$engine.settings,
            feed: &$engine.feed,
            feed_after: &$engine.feed_after,
            volume: &$engine.volume,
            volume_sums: $sums,
            earliest: $engine.earliest,
        }
    };
}

/// Engine settings, in seconds.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub bucket_secs: i64,
    pub lateness_secs: i64,
    pub story_window_secs: i64,
    /// How much bucket history stays in memory (for windows and charts).
    pub memory_secs: i64,
    pub detector: DetectorConfig,
}

impl EngineSettings {
    /// The last bucket final at `point` (older than the allowed lateness): the feed and
    /// every rule have learned up to it when `point` is judged.
    fn final_until(&self, point: i64) -> i64 {
        let bs = self.bucket_secs;
        (point - self.lateness_secs).div_euclid(bs) * bs - bs
    }

    pub fn from_config(c: &crate::config::Config) -> Self {
        EngineSettings {
            bucket_secs: c.engine.bucket_minutes as i64 * 60,
            lateness_secs: c.engine.allowed_lateness_minutes as i64 * 60,
            story_window_secs: c.engine.story_window_hours as i64 * 3600,
            memory_secs: 49 * 3600,
            detector: c.detector.clone(),
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings::from_config(&crate::config::Config::default())
    }
}

/// Counts of one rule in one bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    pub articles: u32,
    pub stories: u32,
    /// Hashes of the distinct sources seen (bounded by the bucket's article count). Inline
    /// up to two: in the benchmark's 10,000 rules most buckets hold one article, and a heap
    /// list per bucket was an allocation to make, copy for the store and free again.
    pub sources: SmallVec<[u64; 2]>,
}

impl Bucket {
    /// The count a detector with this unit sees.
    pub fn count(&self, unit: CountUnit) -> u32 {
        match unit {
            CountUnit::Stories => self.stories,
            CountUnit::Articles => self.articles,
        }
    }
}

/// A short reference to a matched article, kept as alert evidence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArticleRef {
    pub id: String,
    pub title: String,
    pub url: Option<String>,
    pub source: Option<String>,
    pub published_at: DateTime<Utc>,
    #[serde(default)]
    pub entities: Vec<String>,
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub terms: Vec<String>,
    /// First article of its story (not a syndicated copy).
    #[serde(default)]
    pub new_story: bool,
}

/// Everything the engine knows about one rule. Keyed by rule id; serializable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleState {
    /// Recent buckets by start (unix seconds); older ones live only in the state file.
    #[serde(skip)]
    pub buckets: BTreeMap<i64, Bucket>,
    pub baseline: Baseline,
    pub lifecycle: Lifecycle,
    /// Start of the last bucket the baseline has learned.
    pub learned_until: i64,
    /// Definition hash; a changed rule starts afresh.
    pub fingerprint: u64,
    /// A few matched articles per recent bucket, for alert evidence. Persisted as rows
    /// (see [`Changes::evidence`]), not with the rest of the state.
    #[serde(skip)]
    /// Shared: one article matched by many rules is one allocation, not one per rule.
    pub recent: BTreeMap<i64, Evidence>,
    /// The rule's index in the live rule set; `None` for a rule no longer in it (its state
    /// stays in case it comes back). Kept by [`Engine::set_matcher`] and
    /// [`Engine::restore`], so the loops over every rule read it instead of hashing each
    /// id: at 10,000 rules those lookups were an eighth of a backtest's time.
    #[serde(skip)]
    pub slot: Option<usize>,
}

impl RuleState {
    /// Whether the rule has never counted an article up to `until` (inclusive) and has
    /// nothing open: its baseline is then all zeros but for `buckets_seen`, and learning more
    /// empty buckets changes only that count and `learned_until`. Such a state restored
    /// from any older copy catches up to exactly the same state, so it need not be written
    /// with the quiet rules (see [`QUIET_PERSIST_SECS`]).
    fn is_pristine(&self, until: i64) -> bool {
        self.baseline.level == 0.0
            && self.baseline.sq_resid == 0.0
            && self.baseline.forecasts.is_empty()
            && self.lifecycle.active.is_none()
            && self.buckets.range(..=until).next().is_none()
    }
}

/// Matched articles kept per rule and bucket as evidence.
const EVIDENCE_PER_BUCKET: usize = 5;

/// One rule's evidence in one bucket: inline up to two references, like
/// [`Bucket::sources`], and for the same reason.
pub type Evidence = SmallVec<[Arc<ArticleRef>; 2]>;

/// Most bucket boundaries evaluated in one advance (a week of 5-minute buckets).
const MAX_STEPS: i64 = 7 * 288;

/// How often (event time) the state of rules that saw no article is written. A restart
/// re-learns at most this much of empty buckets per quiet rule, which costs microseconds.
/// Writing them is not free: at every bucket, 10,000 quiet rules dominated replays; hourly,
/// their 376-byte states were still the largest part of the state file's writes at 10,000
/// rules (2.2 million rows over nine days of feed).
const QUIET_PERSIST_SECS: i64 = 6 * 3600;

/// An alert event: a lifecycle transition with the evidence behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertEvent {
    /// Unique and stable: `<rule>:<onset>:<kind>[:<n>]`. Used as the Idempotency-Key.
    pub event_id: String,
    /// Shared by the started/updated/resolved events of one onset.
    pub alert_id: String,
    pub rule: String,
    pub rule_name: String,
    pub kind: EventKind,
    /// Event time of the decision.
    pub at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub detector: DetectorKind,
    /// Stories in the window.
    pub observed: u64,
    /// Expected stories in the window (or the threshold / previous window for the simpler detectors).
    pub expected: f64,
    pub ratio: f64,
    /// Upper-tail probability of `observed` under the baseline (NaN when not applicable).
    #[serde(with = "nan_as_null")]
    pub p_value: f64,
    /// How busy the rest of the feed was against its own baseline over the window; the
    /// expectation was multiplied by it (share-of-volume correction). 1 when not applied.
    #[serde(default = "one")]
    pub feed_factor: f64,
    /// Articles (including syndicated copies) and distinct sources in the window.
    pub articles: u64,
    pub sources: u64,
    pub top_articles: Vec<ArticleRef>,
    pub top_entities: Vec<(String, u32)>,
    pub top_countries: Vec<(String, u32)>,
    pub top_keywords: Vec<(String, u32)>,
    /// Channels to notify.
    pub notify: Vec<String>,
    /// The rule's last 48 hours, for charts.
    #[serde(default)]
    pub chart: ChartSeries,
    /// The rule's own templates, if it has any (not sent in webhooks).
    #[serde(
        default,
        skip_serializing_if = "crate::sink::render::Templates::is_empty"
    )]
    pub templates: crate::sink::render::Templates,
    /// Set per channel as the event goes out, never stored: an `updated` or `resolved`
    /// event whose channel was not told of the alert's start (its `started` was silenced,
    /// dropped in quiet hours, given up on, or is not among the channel's `events`). The
    /// bodies then say when the alert started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unannounced: bool,
    /// Set as the event goes out, never stored: the rule's page on the dashboard, when
    /// `[alerts] dashboard_url` says where people reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// The whole feed's learned volume (articles per bucket), for the share-of-volume
/// correction. Serializable: it lives in the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FeedState {
    pub baseline: Baseline,
    /// Start of the last bucket learned; `None` before the first.
    pub learned_until: Option<i64>,
}

/// A rule's recent coverage: one value per bucket from `start`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChartSeries {
    pub start: i64,
    pub bucket_secs: i64,
    pub stories: Vec<u32>,
    /// Expected stories per bucket from the baseline.
    pub expected: Vec<f32>,
}

/// Hours of history in [`ChartSeries`].
const CHART_HOURS: i64 = 48;

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// What changed since the last [`Engine::take_changes`]: exactly what must be persisted.
///
/// Rows that hold a current value (buckets, rule states, volume) are unique per key in the
/// changes of one batch. After [`Changes::merge`] a key may appear more than once, the
/// later row holding the value to keep; the writer asks for the rows to write through
/// [`Changes::latest_buckets`], [`Changes::latest_rules`] and [`Changes::latest_volume`].
#[derive(Debug, Default)]
pub struct Changes {
    /// (rule, bucket start, counts). The rule id is shared by the rows of one rule: one
    /// allocation per rule and hand-over, not one per row (6,000–10,000 rows a batch at
    /// 10,000 rules).
    pub buckets: Vec<(Arc<str>, i64, Bucket)>,
    pub rules: Vec<(String, RuleState)>,
    pub stories: Vec<StoryRow>,
    pub volume: Vec<(i64, u64)>,
    pub events: Vec<AlertEvent>,
    /// New evidence rows: (rule, bucket, article).
    /// The rule id is shared by the rows of one rule and hand-over, as in `buckets`: at
    /// 10,000 rules a batch of 1,000 articles keeps about 10,000 evidence rows.
    pub evidence: Vec<(Arc<str>, i64, Arc<ArticleRef>)>,
    /// The feed's volume baseline, when it learned something.
    pub feed: Option<FeedState>,
    pub watermark: i64,
    /// Whether other changes were folded in, so that a key may repeat (see above).
    pub folded: bool,
}

/// The rows of `rows` that no later row with the same key replaces, in order. Without
/// `folded` every key is unique already and all rows are kept.
fn last_of_each<'a, T, K: std::hash::Hash + Eq>(
    rows: &'a [T],
    folded: bool,
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    if !folded {
        return rows.iter().collect();
    }
    let mut seen: HashSet<K> = HashSet::default();
    seen.reserve(rows.len());
    let mut out: Vec<&T> = rows.iter().rev().filter(|r| seen.insert(key(r))).collect();
    out.reverse();
    out
}

impl Changes {
    /// Folds the changes of a later batch into these, as if both had been taken at once:
    /// rows that hold a current value (buckets, rule states, volume, the feed, the
    /// watermark) keep the later one; rows that are added (stories, evidence, events) are
    /// all kept, in order. Writing the result leaves the state file as writing the two in
    /// turn would.
    ///
    /// Folding only appends: the later value of a repeated key is picked once, when the
    /// rows are written (`latest_*`). Picking it here rebuilt an index of every row
    /// already folded at each merge, 6% of the CPU at 10,000 rules.
    pub fn merge(&mut self, later: Changes) {
        self.buckets.extend(later.buckets);
        self.rules.extend(later.rules);
        self.volume.extend(later.volume);
        self.stories.extend(later.stories);
        self.evidence.extend(later.evidence);
        self.events.extend(later.events);
        if later.feed.is_some() {
            self.feed = later.feed;
        }
        self.watermark = self.watermark.max(later.watermark);
        self.folded = true;
    }

    /// The bucket rows to write: the last value of each (rule, bucket), in key order (rows
    /// of one rule sit together in the table, so a batch's rows are written page by page).
    /// The sort is stable, so of a key's rows the last is the latest folded in.
    pub fn latest_buckets(&self) -> Vec<&(Arc<str>, i64, Bucket)> {
        let mut rows: Vec<&(Arc<str>, i64, Bucket)> = self.buckets.iter().collect();
        rows.sort_by(|x, y| (&*x.0, x.1).cmp(&(&*y.0, y.1)));
        rows.dedup_by(|later, kept| {
            let same = (&*later.0, later.1) == (&*kept.0, kept.1);
            if same {
                *kept = *later;
            }
            same
        });
        rows
    }

    /// The rule states to write: the last of each rule.
    pub fn latest_rules(&self) -> Vec<&(String, RuleState)> {
        last_of_each(&self.rules, self.folded, |(r, _)| r.as_str())
    }

    /// The volume rows to write: the last of each bucket.
    pub fn latest_volume(&self) -> Vec<&(i64, u64)> {
        last_of_each(&self.volume, self.folded, |(b, _)| *b)
    }
}

/// What identifies an article's story: a SimHash of its text and, for titles of four words
/// or more, a hash of the normalized title (wire copies keep the title, change the tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoryKey {
    pub simhash: u64,
    pub title: Option<u64>,
    pub at: i64,
}

/// A story row of the state file: an article's key and the rules that counted its story
/// with it, so a restart knows which rules have already counted each recent story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoryRow {
    pub key: StoryKey,
    /// [`rule_key`]s.
    pub counted_by: Vec<u64>,
}

/// Near-duplicate index over recent articles, by 64-bit SimHash split in four 16-bit bands:
/// two hashes within Hamming distance 3 share at least one band exactly. Exact title
/// hashes are indexed beside.
///
/// Copies are grouped into stories, each with an id, and each story remembers which rules
/// have counted it, and in which bucket. A rule counts a story once, in the bucket of the
/// earliest of its copies the rule matches: a wire copy with another tail may match rules
/// the first copy did not, and it is a new story *for them*. When an earlier copy arrives
/// after a later one (partitions read at different paces, a backlog), the story's count
/// moves back to the earlier copy's bucket, so the counts do not depend on the order the
/// copies were read in (see [`StoryCount`]). (Crediting only the first copy in the feed made a
/// rule's story count depend on which copy happened to arrive first: over 25 runs of the
/// same topic at 1,000 rules the summed story counts ranged from 71k to 82k, with
/// identical article counts. It would also have tied the count to one process seeing the
/// whole feed.)
#[derive(Debug, Default)]
pub struct StoryIndex {
    /// (hash, time, story, title hash) of every entry kept, in insertion order: the order
    /// they are pruned in.
    entries: VecDeque<(u64, i64, u64, Option<u64>)>,
    /// Title hash → (time, story) of the entries with that title, in insertion order, as
    /// in `bands`. (Keeping only the last time seen made the answer depend on arrival
    /// order: an older copy arriving late replaced a newer time, and the next copy could
    /// fall out of the window.)
    titles: HashMap<u64, VecDeque<(i64, u64)>>,
    /// Per band, the entries with each band value, in insertion order. Entries are held
    /// here by value, not by a reference into `entries`: a lookup reads one list in
    /// order instead of jumping to each entry (it was 5–6% of the CPU at 1,000 rules).
    /// Since entries are pruned oldest first, the entry being pruned is always the first
    /// of each of its four lists.
    bands: [HashMap<u16, VecDeque<Kept>>; 4],
    /// Story id → the newest time of its copies and the rules (by [`rule_key`]) that have
    /// counted it. Keys rather than indices into the rule set: they survive a reload and
    /// a restart, and an edited rule (new fingerprint) starts with no stories counted.
    stories: HashMap<u64, Story>,
    /// The next story id. Ids only need to be distinct within this process: a restart
    /// re-groups the stored copies and numbers them afresh.
    next_id: u64,
}

/// (SimHash, time, story) of one copy in a band list.
type Kept = (u64, i64, u64);

/// One rule's articles in a batch (indices into the first pass's list), each with what it
/// does to the rule's story count.
type RuleHits = Vec<(u32, StoryCount)>;

/// What one matched copy does to its rule's story count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoryCount {
    /// The rule's first copy of the story: one more story in the copy's bucket.
    First,
    /// Earlier than the copy the rule counted the story with: the story moves from that
    /// copy's bucket to this one's. `from` is a bucket number (start / bucket length), as
    /// the story index keeps buckets.
    Moved { from: i64 },
    /// The rule has counted the story already, in this bucket or an earlier one.
    Again,
}

/// What the index keeps of a story while any of its copies is kept.
#[derive(Debug, Default)]
struct Story {
    /// The newest time of its copies: the story goes when the copies do.
    newest: i64,
    /// [`rule_key`]s of the rules that have counted it. A handful per story: a list scanned
    /// in place is cheaper than a set.
    counted_by: Vec<u64>,
    /// Beside each of `counted_by`, the bucket the rule counted the story in (the bucket
    /// of the earliest copy it matched so far). A second list rather than pairs: 12 bytes
    /// a rule instead of 16, and at 10,000 rules a story is counted by dozens.
    counted_in: Vec<i32>,
}

/// Where [`StoryIndex::place`] put an article.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The story the article belongs to.
    pub story: u64,
    /// Whether it is the first copy of its story in the index.
    pub new: bool,
}

/// Max Hamming distance between SimHashes of the same story.
const SAME_STORY_BITS: u32 = 3;

/// How a rule is named in the story index and the state file's story rows: its id and
/// definition together, so an edited rule counts stories afresh, as its buckets do.
pub fn rule_key(id: &str, fingerprint: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), fingerprint)
}

impl StoryIndex {
    /// Records a story key; returns true when it starts a new story.
    #[cfg(test)]
    pub fn insert(&mut self, key: StoryKey, window: i64) -> bool {
        self.place(key, window).new
    }

    /// Records a story key and says which story it belongs to.
    pub fn place(&mut self, key: StoryKey, window: i64) -> Placed {
        let (hash, t) = (key.simhash, key.at);
        let mut found = None;
        if let Some(kept) = key.title.and_then(|title| self.titles.get(&title)) {
            found = (kept.iter())
                .find(|&&(at, _)| (at - t).abs() <= window)
                .map(|&(_, story)| story);
        }
        if found.is_none() {
            found = self.bands.iter().enumerate().find_map(|(i, band)| {
                band.get(&((hash >> (16 * i)) as u16)).and_then(|kept| {
                    kept.iter()
                        .find(|&&(h, at, _)| {
                            (h ^ hash).count_ones() <= SAME_STORY_BITS && (at - t).abs() <= window
                        })
                        .map(|&(_, _, story)| story)
                })
            });
        }
        let placed = match found {
            Some(story) => Placed { story, new: false },
            None => {
                self.next_id += 1;
                Placed {
                    story: self.next_id,
                    new: true,
                }
            }
        };
        let story = placed.story;
        if let Some(title) = key.title {
            self.titles.entry(title).or_default().push_back((t, story));
        }
        // A story found through an entry exists until its last entry is pruned.
        let s = self.stories.entry(story).or_default();
        s.newest = s.newest.max(t);
        self.entries.push_back((hash, t, story, key.title));
        for (i, band) in self.bands.iter_mut().enumerate() {
            band.entry((hash >> (16 * i)) as u16)
                .or_default()
                .push_back((hash, t, story));
        }
        placed
    }

    /// Records that the rule keyed `rule` matched a copy of `story` in `bucket` (a bucket
    /// number: its start over the bucket length) and says what that does to the rule's
    /// story count.
    pub fn count(&mut self, story: u64, rule: u64, bucket: i32) -> StoryCount {
        let s = self.stories.entry(story).or_default();
        match s.counted_by.iter().position(|&r| r == rule) {
            None => {
                s.counted_by.push(rule);
                s.counted_in.push(bucket);
                StoryCount::First
            }
            Some(i) if bucket < s.counted_in[i] => {
                let from = std::mem::replace(&mut s.counted_in[i], bucket);
                StoryCount::Moved {
                    from: i64::from(from),
                }
            }
            Some(_) => StoryCount::Again,
        }
    }

    /// Drops entries recorded before `cutoff` (in insertion order), and the stories whose
    /// copies are all older than it.
    pub fn prune(&mut self, cutoff: i64) {
        while let Some(&(hash, t, story, title)) = self.entries.front() {
            if t >= cutoff {
                break;
            }
            self.entries.pop_front();
            for (i, band) in self.bands.iter_mut().enumerate() {
                let key = (hash >> (16 * i)) as u16;
                if let Some(kept) = band.get_mut(&key) {
                    // The oldest entry of the list (see `bands`).
                    kept.pop_front();
                    if kept.is_empty() {
                        band.remove(&key);
                    }
                }
            }
            if let Some(title) = title {
                if let Some(kept) = self.titles.get_mut(&title) {
                    kept.pop_front();
                    if kept.is_empty() {
                        self.titles.remove(&title);
                    }
                }
            }
            // Checked whenever one of its entries goes: the last to go finds it stale.
            if self.stories.get(&story).is_some_and(|s| s.newest < cutoff) {
                self.stories.remove(&story);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Hash of a normalized title of at least four words (shorter ones collide too often).
pub fn title_hash(title: &str) -> Option<u64> {
    title_hash_of(&normalize::normalize(title))
}

/// [`title_hash`] of a title already normalized (the matcher's path).
pub fn title_hash_of(title: &Normalized) -> Option<u64> {
    (title.words.len() >= 4).then(|| xxhash_rust::xxh3::xxh3_64(title.text.as_bytes()))
}

/// What story counting needs from an article's text: its [`simhash`] and [`title_hash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoryHashes {
    pub simhash: u64,
    pub title: Option<u64>,
}

impl StoryHashes {
    /// From the normalized title and body, as the matcher has them.
    pub fn of_normalized(title: &Normalized, body: &Normalized) -> StoryHashes {
        StoryHashes {
            simhash: simhash_of(title, body),
            title: title_hash_of(title),
        }
    }

    /// From the original text, for a match built without them.
    pub fn of_text(title: &str, body: &str) -> StoryHashes {
        StoryHashes {
            simhash: simhash(title, body),
            title: title_hash(title),
        }
    }
}

/// 64-bit SimHash of an article's normalized words (two-word shingles).
pub fn simhash(title: &str, body: &str) -> u64 {
    // Only the opening counts (see below): normalize a generous prefix, not a whole
    // megabyte of body. Four times the bound leaves room for what normalization removes.
    let mut cut = body.len().min(4 * SIMHASH_BODY_BYTES);
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    simhash_normalized(
        &normalize::normalize_str(title),
        &normalize::normalize_str(&body[..cut]),
    )
}

/// How much of the body identifies a story: its opening. Copies differ mostly in their
/// tails (footers, "read more"), and a bound keeps the cost per article flat.
const SIMHASH_BODY_BYTES: usize = 3000;

/// The hash of the two-word shingle `a b` from the words' own hashes: each word is hashed
/// once, not twice (as the second word of one shingle and the first of the next), and no
/// shingle is copied out to be hashed. It was 15% of samples at 1,000 rules. The mix is
/// splitmix64's finalizer, whose output bits each depend on every input bit, which SimHash
/// needs; the multiplication makes it order-sensitive (`a b` ≠ `b a`).
fn shingle_hash(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// [`simhash`] over text that is already normalized (lower case, words separated by one
/// space), as the matcher has it.
pub fn simhash_normalized<'a>(title: &'a str, body: &'a str) -> u64 {
    let mut cut = body.len().min(SIMHASH_BODY_BYTES);
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    let ranges = |text: &'a str| {
        text.split(' ').filter(|w| !w.is_empty()).map(move |w| {
            let s = w.as_ptr() as usize - text.as_ptr() as usize;
            (text.as_bytes(), s, s + w.len())
        })
    };
    simhash_words(ranges(title).chain(ranges(&body[..cut])))
}

/// [`simhash_normalized`] from the word lists [`crate::normalize::normalize`] recorded, so
/// the text is not split again (the matcher's path). Same result: the body's words up to
/// `SIMHASH_BODY_BYTES`, the last one cut there.
pub fn simhash_of(title: &Normalized, body: &Normalized) -> u64 {
    let cut = SIMHASH_BODY_BYTES;
    let title_words = title
        .word_ranges()
        .map(|(s, e)| (title.text.as_bytes(), s, e));
    let body_words = body
        .word_ranges()
        .take_while(|&(s, _)| s < cut)
        .map(|(s, e)| (body.text.as_bytes(), s, e.min(cut)));
    simhash_words(title_words.chain(body_words))
}

fn simhash_words<'a>(words: impl Iterator<Item = (&'a [u8], usize, usize)>) -> u64 {
    // Per bit, how many shingles have it set; a bit of the result is set when most do.
    // The counting is SWAR: `SPREAD[b]` puts bit k of byte b into byte k of a u64, so one
    // addition counts eight bits at once in eight 8-bit lanes; lanes are emptied into
    // `ones` before they can overflow (255 shingles). Eight additions per shingle instead
    // of sixty-four.
    let mut ones = [0u32; 64];
    let mut lanes = [0u64; 8];
    let mut in_lanes = 0u32;
    let mut shingles = 0u32;
    let mut prev: Option<u64> = None;
    let flush = |lanes: &mut [u64; 8], ones: &mut [u32; 64]| {
        for (j, lane) in lanes.iter_mut().enumerate() {
            for (k, byte) in lane.to_le_bytes().iter().enumerate() {
                ones[j * 8 + k] += u32::from(*byte);
            }
            *lane = 0;
        }
    };
    for (text, s, e) in words {
        let hw = word_hash(text, s, e);
        if let Some(hp) = prev {
            let h = shingle_hash(hp, hw);
            for (j, lane) in lanes.iter_mut().enumerate() {
                *lane += SPREAD[((h >> (8 * j)) & 0xff) as usize];
            }
            shingles += 1;
            in_lanes += 1;
            if in_lanes == 255 {
                flush(&mut lanes, &mut ones);
                in_lanes = 0;
            }
        }
        prev = Some(hw);
    }
    if shingles == 0 {
        // One word or none: that word's hash, mixed, is the fingerprint (a packed word's
        // bits are its letters, near in Hamming distance for words that share letters).
        return shingle_hash(0, prev.unwrap_or(0));
    }
    flush(&mut lanes, &mut ones);
    ones.iter().enumerate().fold(0u64, |acc, (bit, &o)| {
        if 2 * o > shingles {
            acc | (1 << bit)
        } else {
            acc
        }
    })
}

/// A word's hash for [`simhash_words`]: a number for `text[s..e]`, distinct for distinct
/// words; the shingle hash does the mixing. A word of up to eight bytes (most words) is its
/// own bytes, packed as the phrase index packs them ([`crate::phrase::pack_short_at`]); a
/// longer one goes through xxh3. xxh3 of every word, with
/// its branches by length, was a quarter of the fingerprint's time (criterion
/// `story_hashes`: 2.25 ms against 1.66 ms per 500 articles). Folding words of 9 to 16
/// bytes from two loads instead measured no faster. Words are ASCII, so a packed word
/// never has the top bit set; the longer ones always do.
fn word_hash(text: &[u8], s: usize, e: usize) -> u64 {
    crate::phrase::pack_short_at(text, s, e)
        .unwrap_or_else(|| xxhash_rust::xxh3::xxh3_64(&text[s..e]) | 1 << 63)
}

/// Byte `b` spread over a u64: bit k of `b` becomes the lowest bit of byte k.
const SPREAD: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut k = 0;
        while k < 8 {
            if b & (1 << k) != 0 {
                t[b] |= 1 << (8 * k);
            }
            k += 1;
        }
        b += 1;
    }
    t
};

/// The threads the engine's per-rule work runs on: a pool of its own, not rayon's global
/// one. The pipeline parses and matches the next batch on the global pool while the engine
/// applies the current one (see `pipeline`, "Overlap"); work the engine handed to that pool
/// queued behind the whole next batch, so the engine, the pipeline's critical path, waited
/// for matching it did not need.
fn engine_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name(|i| format!("vigie-engine-{i}"))
            .build()
            .expect("engine thread pool")
    })
}

/// What the first pass of [`Engine::ingest_batch`] decided about one counted article.
struct Counted<'a> {
    article: &'a Article,
    matched: &'a ArticleMatch,
    /// Event time, clamped.
    t: i64,
    bucket: i64,
    /// The bucket of the earliest event time seen up to and including this article.
    earliest_bucket: i64,
    new_story: bool,
    source_hash: u64,
    /// The evidence reference, made once for all the rules that keep it (rules update in
    /// parallel, so the first to need it makes it).
    evidence: std::sync::OnceLock<Arc<ArticleRef>>,
}

impl Counted<'_> {
    fn evidence(&self) -> Arc<ArticleRef> {
        self.evidence
            .get_or_init(|| {
                let (a, m) = (self.article, self.matched);
                Arc::new(ArticleRef {
                    id: a.id.clone(),
                    title: a.title.chars().take(300).collect(),
                    url: a.url.clone(),
                    source: a.source.clone(),
                    published_at: ts(self.t),
                    entities: m.entities.clone(),
                    countries: m.countries.clone(),
                    terms: m.terms.clone(),
                    new_story: self.new_story,
                })
            })
            .clone()
    }
}

/// What counting its articles changed in one rule, for the hand-over to the store.
struct RuleCounts {
    /// Buckets touched, each once, in the order first touched.
    buckets: Vec<i64>,
    /// Articles kept as evidence, by bucket.
    evidence: Vec<(i64, Arc<ArticleRef>)>,
}

/// Counts the articles `arts` (indices into `counted`, in feed order) into one rule's
/// buckets and evidence.
/// Each article comes with what it does to the rule's story count ([`StoryCount`]).
fn count_rule(
    st: &mut RuleState,
    arts: &[(u32, StoryCount)],
    counted: &[Counted],
    bs: i64,
) -> RuleCounts {
    let mut out = RuleCounts {
        buckets: Vec::new(),
        evidence: Vec::new(),
    };
    for &(k, effect) in arts {
        let c = &counted[k as usize];
        let b = c.bucket;
        let new_story = effect != StoryCount::Again;
        if let StoryCount::Moved { from } = effect {
            let from = from * bs;
            if let Some(old) = st.buckets.get_mut(&from) {
                old.stories = old.stories.saturating_sub(1);
            }
            if !out.buckets.contains(&from) {
                out.buckets.push(from);
            }
        }
        if st.learned_until == i64::MIN
            || (st.baseline.buckets_seen == 0 && b - bs < st.learned_until)
        {
            // Until it has learned anything, the baseline starts just before the earliest
            // article this engine has seen (batches arrive in any order, and a backlog may
            // be read before the watermark first moves).
            st.learned_until = b.min(c.earliest_bucket) - bs;
        }
        let bucket = st.buckets.entry(b).or_default();
        bucket.articles += 1;
        if new_story {
            bucket.stories += 1;
        }
        if !bucket.sources.contains(&c.source_hash) {
            bucket.sources.push(c.source_hash);
        }
        let kept = st.recent.entry(b).or_default();
        // Keep the first articles of new stories; copies only while there is room.
        if kept.len() < EVIDENCE_PER_BUCKET && (new_story || kept.len() < EVIDENCE_PER_BUCKET - 1) {
            let r = c.evidence();
            kept.push(r.clone());
            out.evidence.push((b, r));
        }
        if !out.buckets.contains(&b) {
            out.buckets.push(b);
        }
    }
    out
}

/// The engine.
pub struct Engine {
    pub settings: EngineSettings,
    matcher: Arc<Matcher>,
    pub rules: HashMap<String, RuleState>,
    stories: StoryIndex,
    /// Total articles per bucket, for share-of-volume and the API.
    volume: BTreeMap<i64, u64>,
    /// What the feed's volume usually is, learned from `volume`.
    feed: FeedState,
    /// The feed's state as it stood right after learning each bucket it learned since the
    /// last housekeeping (oldest first), for [`Learner::feed_at`]: a rule learns bucket `b`,
    /// and a window is judged, against the feed as it stood once `b` was learned, so one
    /// large batch (a backlog after an outage) decides exactly what many small ones would.
    /// Emptied once every rule has learned those buckets.
    feed_after: VecDeque<(i64, FeedState)>,
    feed_dirty: bool,
    watermark: i64,
    /// By index in the matcher: each rule's [`rule_key`], as the story index knows it.
    rule_keys: Vec<u64>,
    /// Which rules (by index in the matcher) have articles in each recent bucket.
    activity: BTreeMap<i64, HashSet<usize>>,
    /// Rules (by index) with an open alert: evaluated at every step.
    alerting: HashSet<usize>,
    /// Evaluations (rules × points) from which an advance evaluates rules in parallel;
    /// below it the pool's overhead costs more than it saves (one article's advance in a
    /// test or a quiet live feed). A field so tests can force either path.
    parallel_from: usize,
    /// The widest alert window of any rule, seconds.
    widest_window: i64,
    /// How long matched articles stay in memory as evidence: the widest window any rule
    /// can alert on, plus lateness. (Keeping them as long as the buckets, two days, cost
    /// hundreds of megabytes at 10,000 rules.)
    evidence_secs: i64,
    /// Event time when every rule's state was last handed to the store. Rules that saw no
    /// article are persisted only every [`QUIET_PERSIST_SECS`]: their baseline is a
    /// deterministic catch-up from `learned_until` over empty buckets, so a restart that
    /// restores an older copy learns the same gap again.
    persisted_all: i64,
    /// Bucket at which quiet rules last learned and memory was last pruned.
    housekept: i64,
    /// Earliest event time ingested since start (not persisted).
    earliest: Option<i64>,
    /// Buckets changed since the last hand-over, per rule id (looked up by `&str`, so the
    /// hot path allocates an id only for a rule's first change).
    dirty_buckets: HashMap<String, HashSet<i64>>,
    dirty_rules: HashSet<String>,
    dirty_volume: HashSet<i64>,
    /// Dirty buckets and volumes that left memory before they were handed to the store:
    /// handed over with the next changes (see `advance`).
    pruned_buckets: Vec<(Arc<str>, i64, Bucket)>,
    pruned_volume: Vec<(i64, u64)>,
    new_stories: Vec<StoryRow>,
    new_evidence: Vec<(Arc<str>, i64, Arc<ArticleRef>)>,
    events: Vec<AlertEvent>,
    /// Articles dropped as too late since start (for metrics).
    pub late_total: u64,
}

/// What happened to one ingested article.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Counted { new_story: bool },
    Late,
}

impl Engine {
    pub fn new(settings: EngineSettings, matcher: Arc<Matcher>) -> Engine {
        let mut e = Engine {
            settings,
            matcher: matcher.clone(),
            rules: HashMap::default(),
            stories: StoryIndex::default(),
            volume: BTreeMap::new(),
            feed: FeedState::default(),
            feed_after: VecDeque::new(),
            feed_dirty: false,
            watermark: i64::MIN,
            rule_keys: Vec::new(),
            activity: BTreeMap::new(),
            alerting: HashSet::default(),
            parallel_from: 64,
            widest_window: 3600,
            evidence_secs: 6 * 3600,
            housekept: i64::MIN,
            persisted_all: i64::MIN,
            earliest: None,
            dirty_buckets: HashMap::default(),
            dirty_rules: HashSet::default(),
            dirty_volume: HashSet::default(),
            pruned_buckets: Vec::new(),
            pruned_volume: Vec::new(),
            new_stories: Vec::new(),
            new_evidence: Vec::new(),
            events: Vec::new(),
            late_total: 0,
        };
        e.set_matcher(matcher);
        e
    }

    pub fn matcher(&self) -> &Arc<Matcher> {
        &self.matcher
    }

    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        (self.watermark != i64::MIN).then(|| ts(self.watermark))
    }

    fn bucket_of(&self, t: i64) -> i64 {
        t.div_euclid(self.settings.bucket_secs) * self.settings.bucket_secs
    }

    /// The number of the bucket holding `t` (its start over the bucket length), as the
    /// story index keeps it. Saturates: only the order of numbers matters there.
    fn bucket_number(&self, t: i64) -> i32 {
        let n = t.div_euclid(self.settings.bucket_secs);
        n.clamp(i32::MIN.into(), i32::MAX.into()) as i32
    }

    /// Installs a new rule set. Unchanged rules keep their state; changed ones start afresh;
    /// removed ones keep theirs (in memory and in the state file) in case they come back.
    pub fn set_matcher(&mut self, matcher: Arc<Matcher>) {
        for r in &matcher.rules {
            let start = if self.watermark == i64::MIN {
                i64::MIN
            } else {
                self.bucket_of(self.watermark)
            };
            let st = self.rules.entry(r.id.clone()).or_insert_with(|| {
                // A new rule is written at once, so a restart resumes its warm-up where
                // it was (quiet rules that never matched are not rewritten later).
                self.dirty_rules.insert(r.id.clone());
                RuleState {
                    learned_until: start,
                    fingerprint: r.fingerprint,
                    ..Default::default()
                }
            });
            if st.fingerprint != r.fingerprint {
                *st = RuleState {
                    learned_until: start,
                    fingerprint: r.fingerprint,
                    ..Default::default()
                };
                self.dirty_rules.insert(r.id.clone());
            }
        }
        self.matcher = matcher;
        self.rebuild_activity();
    }

    fn rebuild_activity(&mut self) {
        for st in self.rules.values_mut() {
            st.slot = None;
        }
        for (i, r) in self.matcher.rules.iter().enumerate() {
            if let Some(st) = self.rules.get_mut(&r.id) {
                st.slot = Some(i);
            }
        }
        self.rule_keys = (self.matcher.rules.iter())
            .map(|r| rule_key(&r.id, r.fingerprint))
            .collect();
        self.evidence_secs = self
            .matcher
            .rules
            .iter()
            .map(|r| {
                let c = self.settings.detector.with(&r.spike);
                c.window_minutes
                    .max(c.slow_window_minutes)
                    .max(c.fast_window_minutes) as i64
                    * 60
            })
            .max()
            .unwrap_or(3600)
            + self.settings.lateness_secs
            + 2 * self.settings.bucket_secs;
        self.widest_window = self
            .matcher
            .rules
            .iter()
            .map(|r| self.settings.detector.with(&r.spike).window_minutes as i64 * 60)
            .max()
            .unwrap_or(3600);
        self.alerting = self
            .matcher
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                self.rules
                    .get(&r.id)
                    .is_some_and(|st| st.lifecycle.active.is_some())
            })
            .map(|(i, _)| i)
            .collect();
        self.activity.clear();
        for (idx, r) in self.matcher.rules.iter().enumerate() {
            if let Some(st) = self.rules.get(&r.id) {
                for &b in st.buckets.keys() {
                    self.activity.entry(b).or_default().insert(idx);
                }
            }
        }
    }

    /// Restores persisted state (called once at start, before any ingest).
    pub fn restore(
        &mut self,
        rules: Vec<(String, RuleState)>,
        buckets: Vec<(String, i64, Bucket)>,
        evidence: Vec<(String, i64, Arc<ArticleRef>)>,
        stories: Vec<StoryRow>,
        volume: Vec<(i64, u64)>,
        watermark: Option<i64>,
    ) {
        for (id, mut st) in rules {
            if let Some(cur) = self.rules.get(&id) {
                if cur.fingerprint != st.fingerprint {
                    continue; // the rule changed while we were down: start afresh
                }
            }
            st.buckets.clear();
            self.rules.insert(id, st);
        }
        for (id, b, bucket) in buckets {
            if let Some(st) = self.rules.get_mut(&id) {
                st.buckets.insert(b, bucket);
            }
        }
        for (id, b, r) in evidence {
            if let Some(st) = self.rules.get_mut(&id) {
                st.recent.entry(b).or_default().push(r);
            }
        }
        let mut stories = stories;
        stories.sort_by_key(|s| s.key.at);
        for row in stories {
            let placed = self.stories.place(row.key, self.settings.story_window_secs);
            // Rows come oldest first, so each rule's first row is its earliest copy: later
            // rows naming it again (written before an earlier copy took the count) are
            // `Again`.
            let bucket = self.bucket_number(row.key.at);
            for rk in row.counted_by {
                self.stories.count(placed.story, rk, bucket);
            }
        }
        self.volume.extend(volume);
        if let Some(w) = watermark {
            self.watermark = w;
        }
        self.rebuild_activity();
    }

    /// Restores the feed's volume baseline (called once at start, with [`Engine::restore`]).
    pub fn restore_feed(&mut self, feed: FeedState) {
        self.feed = feed;
        self.feed_after.clear();
    }

    /// Counts one matched article. `now` (unix seconds) clamps future dates when given.
    pub fn ingest(&mut self, a: &Article, m: &ArticleMatch, now: Option<i64>) -> Ingested {
        self.ingest_batch(&[(a, m)], now)[0]
    }

    /// Counts a batch of matched articles, in order; the same as [`Engine::ingest`] on each
    /// in turn.
    ///
    /// It runs in two passes. The first, over the articles in order, decides what is
    /// shared by all rules: whether the article is late, which story it belongs to and which
    /// of its rules count that story for the first time (the story index is one for the
    /// whole feed), the feed's volume. The second updates each
    /// matched rule's own counts from its articles, in their order, rules in parallel: at
    /// 10,000 rules an article matches a hundred of them, and updating them one after the
    /// other was most of the engine's time. Each rule's update reads only its own state and
    /// what the first pass decided, so the rules are independent (the same keying that
    /// lets rule state move between machines).
    pub fn ingest_batch(
        &mut self,
        batch: &[(&Article, &ArticleMatch)],
        now: Option<i64>,
    ) -> Vec<Ingested> {
        let bs = self.settings.bucket_secs;
        let mut out = Vec::with_capacity(batch.len());
        let mut counted: Vec<Counted> = Vec::with_capacity(batch.len());
        // Rule index → the articles (by index in `counted`) it matched, in order.
        // With each, whether it is a new story for that rule.
        let mut hits: HashMap<usize, RuleHits> = HashMap::default();
        for &(a, m) in batch {
            let mut t = a.published_at.timestamp();
            if let Some(now) = now {
                t = t.min(now);
            }
            if self.watermark != i64::MIN && t < self.watermark - self.settings.lateness_secs {
                self.late_total += 1;
                out.push(Ingested::Late);
                continue;
            }
            let earliest = self.earliest.map_or(t, |e| e.min(t));
            self.earliest = Some(earliest);
            let story = m
                .story
                .unwrap_or_else(|| StoryHashes::of_text(&a.title, &a.body));
            let key = StoryKey {
                simhash: story.simhash,
                title: story.title,
                at: t,
            };
            let placed = self.stories.place(key, self.settings.story_window_secs);
            let new_story = placed.new;
            let mut row = StoryRow {
                key,
                counted_by: Vec::new(),
            };
            let b = self.bucket_of(t);
            *self.volume.entry(b).or_default() += 1;
            self.dirty_volume.insert(b);
            let k = counted.len() as u32;
            let number = self.bucket_number(t);
            for &ri in &m.rule_indices {
                let rk = self.rule_keys[ri];
                let effect = self.stories.count(placed.story, rk, number);
                if effect != StoryCount::Again {
                    // This copy now holds the rule's count: its row names the rule.
                    row.counted_by.push(rk);
                }
                hits.entry(ri).or_default().push((k, effect));
            }
            self.new_stories.push(row);
            counted.push(Counted {
                article: a,
                matched: m,
                t,
                bucket: b,
                earliest_bucket: earliest.div_euclid(bs) * bs,
                new_story,
                source_hash: xxhash_rust::xxh3::xxh3_64(
                    a.source.as_deref().unwrap_or("").as_bytes(),
                ),
                evidence: std::sync::OnceLock::new(),
            });
            out.push(Ingested::Counted { new_story });
        }
        if hits.is_empty() {
            return out;
        }
        // The rules' own updates. Small batches (backtests feed a minute at a time) are
        // not worth the threads.
        let total: usize = hits.values().map(Vec::len).sum();
        let mut results: Vec<(usize, RuleCounts)> = if total < 256 {
            let mut v = Vec::with_capacity(hits.len());
            for (&ri, arts) in &hits {
                if let Some(st) = self.rules.get_mut(&self.matcher.rules[ri].id) {
                    v.push((ri, count_rule(st, arts, &counted, bs)));
                }
            }
            v
        } else {
            let work: Vec<(usize, &mut RuleState, &RuleHits)> = self
                .rules
                .values_mut()
                .filter_map(|st| {
                    let ri = st.slot?;
                    Some((ri, st, hits.get(&ri)?))
                })
                .collect();
            engine_pool().install(|| {
                work.into_par_iter()
                    .map(|(ri, st, arts)| (ri, count_rule(st, arts, &counted, bs)))
                    .collect()
            })
        };
        // Hand-over bookkeeping, in rule order so the state file sees the same rows in the
        // same order on every run.
        results.sort_unstable_by_key(|(ri, _)| *ri);
        for (ri, r) in results {
            let id = &self.matcher.rules[ri].id;
            for &b in &r.buckets {
                self.activity.entry(b).or_default().insert(ri);
            }
            match self.dirty_buckets.get_mut(id.as_str()) {
                Some(set) => set.extend(r.buckets),
                None => {
                    self.dirty_buckets
                        .insert(id.clone(), r.buckets.into_iter().collect());
                }
            }
            if !r.evidence.is_empty() {
                let rule: Arc<str> = id.as_str().into();
                self.new_evidence
                    .extend(r.evidence.into_iter().map(|(b, a)| (rule.clone(), b, a)));
            }
            if !self.dirty_rules.contains(id.as_str()) {
                self.dirty_rules.insert(id.clone());
            }
        }
        out
    }

    /// Moves the watermark to `wm` (never backwards), lets baselines learn the buckets that
    /// are now final, and evaluates the detectors. Returns the events decided.
    ///
    /// The detectors are evaluated at every bucket boundary the watermark passes, then at
    /// `wm` itself, so the events do not depend on how articles were batched: a backlog
    /// consumed in one large batch gives the same decisions as a live trickle.
    pub fn advance(&mut self, wm: i64) -> Vec<AlertEvent> {
        // The first advance starts from the earliest article counted, not from nowhere: a
        // backlog whose first watermark comes only after most of it is read (a live
        // consumer holds the watermark until every partition has spoken) is evaluated at
        // each bucket it spans, as a backtest of the same articles is.
        let from = match (self.watermark, self.earliest) {
            (i64::MIN, Some(e)) => e - 1,
            (w, _) => w,
        };
        let target = wm.max(from);
        if target == i64::MIN {
            return Vec::new();
        }
        let bs = self.settings.bucket_secs;
        // The points evaluated: the last second of each bucket passed (bounded on gaps),
        // then the watermark itself, which also counts the bucket after it (`lead`).
        let mut points = Vec::new();
        if from != i64::MIN {
            let mut end = self.bucket_of(from) + bs;
            let last = self.bucket_of(target);
            if (last - end) / bs > MAX_STEPS {
                end = last - MAX_STEPS * bs;
            }
            while end <= last {
                if end - 1 > from {
                    points.push((end - 1, false));
                }
                end += bs;
            }
        }
        points.push((target, true));
        // The feed learns first, every bucket final by the last point, keeping its state
        // after each: rules then learn and are judged at each point against the feed as it
        // stood there (`Learner::feed_at`), whatever the size of the batch.
        self.learn_feed(target);
        let out = self.evaluate_points(&points);
        self.watermark = target;
        // Housekeeping once per bucket, not per call: quiet rules learn that quiet is
        // normal, and old buckets leave memory.
        if self.bucket_of(target) <= self.housekept {
            self.events.extend(out.iter().cloned());
            return out;
        }
        self.housekept = self.bucket_of(target);
        self.learn_all(target);
        // Every rule has now learned every bucket final at `target`.
        self.feed_after.clear();
        if self.persisted_all == i64::MIN || target - self.persisted_all >= QUIET_PERSIST_SECS {
            // Never-matched rules are left out, except the first time after a start (so
            // every rule has a copy): restored from an older copy they catch up to the
            // same state (see `RuleState::is_pristine`), and at 10,000 rules they are most
            // of the rows. A copy more than 35 days old catches up 35 days only, as after
            // any long gap; by then `buckets_seen` is far past every warm-up that reads it.
            let first = self.persisted_all == i64::MIN;
            let never = |st: &RuleState| st.is_pristine(i64::MAX) && st.lifecycle.onsets == 0;
            self.dirty_rules.extend(
                (self.rules.iter())
                    .filter(|(_, st)| first || !never(st))
                    .map(|(id, _)| id.clone()),
            );
            self.persisted_all = target;
        }
        let memory_from = self.bucket_of(target - self.settings.memory_secs);
        let evidence_from = self.bucket_of(target - self.evidence_secs);
        for (id, st) in self.rules.iter_mut() {
            while let Some((&b, _)) = st.buckets.first_key_value() {
                if b >= memory_from {
                    break;
                }
                let gone = st.buckets.pop_first();
                // A bucket counted in this batch and already past the memory (the watermark
                // moved more than `memory_secs` at once: a sparse backlog, or a partition
                // catching up days) still goes to the state file with its final count.
                let dirty = (self.dirty_buckets.get_mut(id.as_str())).is_some_and(|d| d.remove(&b));
                if let (true, Some((b, bucket))) = (dirty, gone) {
                    self.pruned_buckets.push((id.as_str().into(), b, bucket));
                }
            }
            while let Some((&b, _)) = st.recent.first_key_value() {
                if b >= evidence_from {
                    break;
                }
                st.recent.pop_first();
            }
        }
        while let Some((&b, _)) = self.activity.first_key_value() {
            if b >= memory_from {
                break;
            }
            self.activity.pop_first();
        }
        self.stories
            .prune(target - self.settings.story_window_secs - self.settings.lateness_secs);
        while let Some((&b, _)) = self.volume.first_key_value() {
            if b >= memory_from {
                break;
            }
            let gone = self.volume.pop_first();
            if let (true, Some(v)) = (self.dirty_volume.remove(&b), gone) {
                self.pruned_volume.push(v);
            }
        }
        self.events.extend(out.iter().cloned());
        out
    }

    /// Rules with articles in the widest window before `point`, sorted.
    fn active_at(&self, point: i64) -> Vec<usize> {
        let bs = self.settings.bucket_secs;
        let end = self.bucket_of(point);
        let mut v: Vec<usize> = (self.activity.range(end - self.widest_window..=end + bs))
            .flat_map(|(_, rules)| rules.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Evaluates, at each of `points` in turn, every rule alerting or recently active
    /// there; returns the events in that order (by point, then by rule index).
    ///
    /// A rule's evaluation reads only its own state and the feed's, which stay fixed
    /// during an advance, so when there is enough work the rules go in parallel, each
    /// taking every point in order for itself: whether a rule is a candidate at a point
    /// depends on its own alert (started or resolved at an earlier point) and on the
    /// activity, which an advance does not change. The result is that of the serial loop.
    fn evaluate_points(&mut self, points: &[(i64, bool)]) -> Vec<AlertEvent> {
        let active: Vec<Vec<usize>> = points.iter().map(|&(p, _)| self.active_at(p)).collect();
        let work: usize = active.iter().map(Vec::len).sum::<usize>() + self.alerting.len();
        if work < self.parallel_from {
            let mut out = Vec::new();
            for (&(point, lead), active) in points.iter().zip(active) {
                self.watermark = point;
                // Rules worth evaluating: those with articles in the window (or the bucket
                // after it), and those with an open alert (as of the points before).
                let mut candidates = active;
                candidates.extend(&self.alerting);
                candidates.sort_unstable();
                candidates.dedup();
                for idx in candidates {
                    out.extend(self.evaluate(idx, point, lead));
                }
            }
            return out;
        }
        let mut visit = vec![false; self.matcher.rules.len()];
        for &i in active.iter().flatten().chain(&self.alerting) {
            if let Some(v) = visit.get_mut(i) {
                *v = true;
            }
        }
        let mut states: Vec<(usize, &mut RuleState)> = (self.rules.values_mut())
            .filter_map(|st| {
                let i = st.slot?;
                visit[i].then_some((i, st))
            })
            .collect();
        // The span of buckets the rules read at these points, summed once (see `Prefix`).
        let bs = self.settings.bucket_secs;
        let first = points.iter().map(|p| p.0).min().unwrap_or(0);
        let last = points.iter().map(|p| p.0).max().unwrap_or(0);
        let (lo, hi) = (
            first - PREFIX_LOOKBACK_SECS - self.settings.lateness_secs,
            last + 2 * bs,
        );
        let volume_sums = Prefix::of(&self.volume, lo, hi, bs, |&v| v);
        let learner = learner!(self, Some(&volume_sums));
        let (rules, alerting) = (&self.matcher.rules, &self.alerting);
        let n_rules = rules.len().max(detect::MIN_FAMILY);
        // Per rule: whether it learned, its events with the index of their point, and
        // whether it is alerting at the end.
        type Outcome = (usize, bool, Vec<(usize, AlertEvent)>, bool);
        let outcomes: Vec<Outcome> = engine_pool().install(|| {
            states
                .par_iter_mut()
                .map(|(idx, st)| {
                    let (idx, rule) = (*idx, &rules[*idx]);
                    let mut alerting_now = alerting.contains(&idx);
                    let mut learned = false;
                    let mut events = Vec::new();
                    // Neither learning nor judging changes the rule's buckets.
                    let sums = RuleSums::build(&st.buckets, lo, hi, bs);
                    for (k, &(point, lead)) in points.iter().enumerate() {
                        if !alerting_now && active[k].binary_search(&idx).is_err() {
                            continue;
                        }
                        learned |= learner.learn(rule, st, point, Some(&sums));
                        if let Some(e) = learner.judge(rule, st, point, lead, n_rules, Some(&sums))
                        {
                            match e.kind {
                                EventKind::Started => alerting_now = true,
                                EventKind::Resolved => alerting_now = false,
                                EventKind::Updated => {}
                            }
                            events.push((k, e));
                        }
                    }
                    (idx, learned, events, alerting_now)
                })
                .collect()
        });
        let mut out: Vec<(usize, usize, AlertEvent)> = Vec::new();
        for (idx, learned, events, alerting_now) in outcomes {
            if learned || !events.is_empty() {
                self.dirty_rules.insert(self.matcher.rules[idx].id.clone());
            }
            if alerting_now {
                self.alerting.insert(idx);
            } else {
                self.alerting.remove(&idx);
            }
            out.extend(events.into_iter().map(|(k, e)| (k, idx, e)));
        }
        out.sort_by_key(|(k, idx, _)| (*k, *idx));
        out.into_iter().map(|(_, _, e)| e).collect()
    }

    /// Lets the feed's volume baseline learn every bucket final at `point`.
    fn learn_feed(&mut self, point: i64) {
        let bs = self.settings.bucket_secs;
        let final_until = self.settings.final_until(point);
        let mut learned = match (self.feed.learned_until, self.earliest) {
            (Some(learned), _) => learned,
            // The feed starts from the bucket before the earliest article, once that bucket
            // is final: no article can come earlier then (it would be late), so a backlog
            // read in one batch starts where one read a minute at a time does.
            (None, Some(t)) if self.bucket_of(t) - bs <= final_until => self.bucket_of(t) - bs,
            (None, Some(_)) => return,
            (None, None) => final_until,
        };
        learned = learned.max(final_until - 35 * 86_400);
        let per_day = 86_400.0 / bs as f64;
        let halflife = self.settings.detector.halflife_hours;
        while learned < final_until {
            learned += bs;
            let count = self.volume.get(&learned).copied().unwrap_or(0) as f64;
            self.feed
                .baseline
                .learn(count, Season::of(learned), per_day, halflife, None, false);
            self.feed.learned_until = Some(learned);
            self.feed_after.push_back((learned, self.feed.clone()));
            self.feed_dirty = true;
        }
        self.feed.learned_until = Some(learned);
    }

    /// Lets every rule's baseline learn the buckets final at `point`, rules in parallel:
    /// at each bucket every rule learns, and at 10,000 rules that was the largest part of
    /// the engine's time. Each rule's learning reads only its own state and the feed's, so
    /// the rules are independent (the same keying that lets rule state move between
    /// machines).
    fn learn_all(&mut self, point: i64) {
        let learner = learner!(self, None);
        let rules = &self.matcher.rules;
        let dirty: Vec<String> = engine_pool().install(|| {
            self.rules
                .par_iter_mut()
                .filter_map(|(id, st)| {
                    let i = st.slot?;
                    learner
                        .learn(&rules[i], st, point, None)
                        .then(|| id.clone())
                })
                .collect()
        });
        self.dirty_rules.extend(dirty);
    }
}

/// The shared, read-only half of what a rule's baseline learns from: the settings, the
/// feed's volume and its baseline. Borrowed beside a rule's own mutable state, so rules can
/// learn in parallel.
/// The windows a rule is judged on at one point ([`Learner::windows`]).
struct Windows {
    /// The rule's detector settings, defaults filled in.
    cfg: DetectorConfig,
    /// Start of the bucket holding the point.
    end: i64,
    /// Tests the significance gate is shared by (rules × windows per rule).
    tests: usize,
    /// The feed's swing and the topic's momentum, both already in each view's expectation.
    feed_factor: f64,
    momentum: f64,
    /// (window start, view), the alert window first. Inline: judging is on the hot path,
    /// and a rule has at most three windows.
    views: smallvec::SmallVec<[(i64, WindowView); 3]>,
}

/// What would start an alert of a rule now ([`Engine::gate`]): for each window it is
/// judged on, the count against the expectation and the fewest stories that would pass
/// every gate. It answers "why has it not alerted?" in the detector's own numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gate {
    /// No new alert starts before this time (the cooldown after the last one), if later
    /// than the watermark.
    pub cooldown_until: Option<DateTime<Utc>>,
    /// The feed's swing in the expectations (1 when not applied).
    pub feed_factor: f64,
    /// The topic's momentum in the expectations (1 for an open alert, judged against the
    /// long-run baseline).
    pub momentum: f64,
    /// The alert window first, then the fast and slow ones.
    pub windows: Vec<GateWindow>,
}

/// One window of a [`Gate`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateWindow {
    pub minutes: i64,
    pub observed: u64,
    pub expected: f64,
    /// The fewest stories in this window that would start an alert now, the rest as it
    /// is; None when no count would (a baseline still warming up; a `ratio` rule whose
    /// previous window holds fewer than `min_previous`).
    pub needed: Option<u64>,
}

/// The fewest stories in `view`'s window that pass every gate of `cfg`, by bisection (each
/// gate only gets easier with more stories). None when the detector cannot fire yet.
fn fewest_that_surge(cfg: &DetectorConfig, view: &WindowView, tests: usize) -> Option<u64> {
    if cfg.kind == DetectorKind::Baseline && !view.warmed_up {
        return None;
    }
    let surges = |n: u64| {
        let v = WindowView {
            observed: n,
            ..*view
        };
        detect::evaluate(cfg, &v, tests).surging
    };
    if surges(0) {
        return Some(0);
    }
    let (mut lo, mut hi) = (0u64, 1u64);
    while !surges(hi) {
        if hi >= 1 << 30 {
            return None;
        }
        (lo, hi) = (hi, hi * 2);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if surges(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

struct Learner<'a> {
    settings: &'a EngineSettings,
    /// The feed's state now, and as it stood after each recent bucket (`Engine::feed_after`).
    feed: &'a FeedState,
    feed_after: &'a VecDeque<(i64, FeedState)>,
    volume: &'a BTreeMap<i64, u64>,
    /// The volume summed once for an advance (see [`Prefix`]), when the caller has it.
    volume_sums: Option<&'a Prefix>,
    earliest: Option<i64>,
}

impl Learner<'_> {
    /// The feed's volume, from the advance's sums when there are.
    fn volume(&self) -> Volume<'_> {
        Volume {
            map: self.volume,
            sums: self.volume_sums,
        }
    }

    /// The feed as it stood right after it learned bucket `b`; the feed now when `b` is not
    /// among the recent buckets (a rule restored from an older copy catching up, or `b`
    /// not learned yet).
    fn feed_at(&self, b: i64) -> &FeedState {
        let i = self.feed_after.partition_point(|(at, _)| *at < b);
        match self.feed_after.get(i) {
            Some((at, feed)) if *at == b => feed,
            _ => self.feed,
        }
    }

    /// Lets `rule`'s baseline learn every bucket final at `point`. Returns whether the rule
    /// saw articles or has an alert open, i.e. must be persisted now rather than with the quiet ones.
    /// `sums`: the rule's counts summed for the advance, when the caller has them.
    fn learn(&self, rule: &Rule, st: &mut RuleState, point: i64, sums: Option<&RuleSums>) -> bool {
        let bs = self.settings.bucket_secs;
        let final_until = self.settings.final_until(point);
        if st.learned_until == i64::MIN {
            // A rule with no article yet learns from the earliest event time this engine has
            // seen, so a backlog read in large batches warms it up as a backtest would.
            // Not from before it (a minute-by-minute replay would learn empty buckets before
            // the stream began, a large batch would not), so possibly past `final_until`:
            // it then waits, and an earlier article of the rule still moves it back
            // (`count_rule`).
            let from = self
                .earliest
                .map_or(final_until, |t| t.div_euclid(bs) * bs - bs);
            st.learned_until = from;
        }
        // A long gap is skipped, not replayed as zeros forever.
        if final_until - st.learned_until > 35 * 86_400 {
            st.learned_until = final_until - 35 * 86_400;
        }
        if st.learned_until >= final_until {
            return false;
        }
        if st.is_pristine(final_until) {
            // A rule that has never counted anything learns nothing from more empty
            // buckets but their number: its level and residuals stay exactly 0, its
            // seasonal factors move only while the level is positive, and it makes no
            // forecasts. The loop below would arrive at exactly this state, one bucket at
            // a time; at 10,000 rules most rules are like this, and that loop was a tenth
            // of the engine's time.
            st.baseline.buckets_seen += ((final_until - st.learned_until) / bs) as u64;
            st.learned_until = final_until;
            return false;
        }
        // Read only now: at 10,000 rules the rule's own settings are a cache miss per rule
        // and bucket, most of what learning a pristine rule cost.
        let per_day = 86_400.0 / bs as f64;
        let cfg = self.settings.detector.with(&rule.spike);
        let (halflife, unit) = (cfg.halflife_hours, cfg.count);
        // With the share-of-volume correction the baseline learns counts divided by the
        // feed's swing, i.e. the rule's usual share, which `evaluate` scales back up.
        let share = cfg.kind == DetectorKind::Baseline && cfg.share_of_volume;
        let n = (cfg.window_minutes as i64 * 60 / bs).max(1);
        let mut saw_articles = false;
        let (volume, series) = (self.volume(), Series::of(&st.buckets, sums));
        while st.learned_until < final_until {
            st.learned_until += bs;
            let b = st.learned_until;
            let feed = self.feed_at(b);
            let first = b - (n - 1) * bs;
            let mut count = st.buckets.get(&b).map_or(0, |b| b.count(unit)) as f64;
            let mut window = series.sum(unit, first, b + 1) as f64;
            if share && window > 0.0 {
                let f = feed_factor(feed, volume, series, bs, b, n);
                count /= f;
                window /= f;
            }
            saw_articles |= window > 0.0;
            let season = Season::of(b);
            // While an alert is open the surge is not "normal": the baseline learns slowly
            // and not the spread of its windows. (Learning `min(count, expected)` instead
            // would bias it low, since small counts are mostly 0 or above the mean.)
            let alerting = st.lifecycle.active.is_some();
            // The spread of windows is learned against the forecast made before any of the
            // window's buckets was learned, as `evaluate` sees it: measured against an
            // expectation that has already adapted to the window's own counts (the
            // hour-of-day factors move a third of the way in a day's hour), the spread
            // comes out too small and the tail too thin.
            let forecasts = &mut st.baseline.forecasts;
            while forecasts.front().is_some_and(|&(end, _)| end < b) {
                forecasts.pop_front();
            }
            if let Some(&(end, expected)) = forecasts.front() {
                if end == b {
                    forecasts.pop_front();
                    if !alerting {
                        st.baseline
                            .learn_window(window, expected, bs as f64 / 3600.0, halflife);
                    }
                }
            }
            let mut forecast = st.baseline.expected_sum(b, n, bs);
            // Windows expected under one story teach nothing (see `learn_window`); skip
            // the momentum sum for them.
            if forecast * 1.5 >= 1.0 {
                let swing = if share {
                    feed_factor(feed, volume, series, bs, b - bs, RECENT_HOURS * 3600 / bs)
                } else {
                    1.0
                };
                forecast *= recent_factor(series, &st.baseline, unit, bs, b, swing);
                st.baseline
                    .forecasts
                    .push_back((b + (n - 1) * bs, forecast));
            }
            st.baseline.learn(
                count,
                season,
                per_day,
                halflife,
                Some(&feed.baseline),
                alerting,
            );
        }
        // Quiet rules are persisted less often (see `persisted_all`).
        saw_articles || st.lifecycle.active.is_some()
    }

    /// The windows `rule` is judged on at event time `point`: each length's view of the
    /// counts against the expectation (the feed's swing and the topic's momentum in it),
    /// the alert window first. `lead` counts the bucket after the watermark's too.
    fn windows(
        &self,
        rule: &Rule,
        st: &RuleState,
        point: i64,
        lead: bool,
        n_rules: usize,
        sums: Option<&RuleSums>,
    ) -> Windows {
        let bs = self.settings.bucket_secs;
        let end = point.div_euclid(bs) * bs;
        let cfg = self.settings.detector.with(&rule.spike);
        let n = (cfg.window_minutes as i64 * 60 / bs).max(1);
        let feed = self.feed_at(self.settings.final_until(point));
        let (volume, series) = (self.volume(), Series::of(&st.buckets, sums));
        // Share of volume: the feed's swing over the last n complete buckets (the bucket
        // holding `point` is complete only at its last second).
        let factor = if cfg.kind == DetectorKind::Baseline && cfg.share_of_volume {
            let last = (point + 1).div_euclid(bs) * bs - bs;
            feed_factor(feed, volume, series, bs, last, n)
        } else {
            1.0
        };
        // The windows tested: the alert window first, then the fast and slow ones.
        let mut lengths = vec![n];
        if cfg.kind == DetectorKind::Baseline {
            for m in [cfg.fast_window_minutes, cfg.slow_window_minutes] {
                let m = m as i64 * 60 / bs;
                if m > 0 && !lengths.contains(&m) {
                    lengths.push(m);
                }
            }
        }
        let warmed_up =
            st.baseline.buckets_seen as f64 >= cfg.warmup_hours as f64 * 3600.0 / bs as f64;
        let tests = n_rules * lengths.len();
        // An open alert is judged against the long-run baseline only, or a lasting surge
        // would soon explain itself away.
        // One momentum factor for all windows: the hours before the alert window.
        let recent = if st.lifecycle.active.is_none() && cfg.kind == DetectorKind::Baseline {
            let first = end - (n - 1) * bs;
            let swing = if cfg.share_of_volume {
                feed_factor(
                    feed,
                    volume,
                    series,
                    bs,
                    first - bs,
                    RECENT_HOURS * 3600 / bs,
                )
            } else {
                1.0
            };
            recent_factor(series, &st.baseline, cfg.count, bs, first, swing)
        } else {
            1.0
        };
        let views = (lengths.iter())
            .map(|&m| {
                let start = end - (m - 1) * bs;
                let observed = series.sum(cfg.count, start, if lead { end + bs } else { end } + 1);
                let previous = series.sum(cfg.count, start - m * bs, start);
                let expected = factor * recent * st.baseline.expected_sum(start, m, bs);
                let view = WindowView {
                    observed,
                    expected,
                    variance: st.baseline.window_variance(expected),
                    previous,
                    warmed_up,
                };
                (start, view)
            })
            .collect();
        Windows {
            cfg,
            end,
            tests,
            feed_factor: factor,
            momentum: recent,
            views,
        }
    }

    /// Evaluates `rule` at event time `point` (after it has learned), moving its alert
    /// lifecycle on; returns the event, if any. `lead` counts the bucket after the
    /// watermark's too. `n_rules`: the family size for the significance correction.
    fn judge(
        &self,
        rule: &Rule,
        st: &mut RuleState,
        point: i64,
        lead: bool,
        n_rules: usize,
        sums: Option<&RuleSums>,
    ) -> Option<AlertEvent> {
        let Windows {
            cfg,
            end,
            tests,
            feed_factor: factor,
            views,
            ..
        } = self.windows(rule, st, point, lead, n_rules, sums);
        let bs = self.settings.bucket_secs;
        let mut chosen: Option<(i64, detect::Verdict, f64)> = None;
        for (start, view) in views {
            let v = detect::evaluate(&cfg, &view, tests);
            match &mut chosen {
                None => chosen = Some((start, v, view.variance)),
                // Another window that surges while the alert window does not decides (and is
                // what the event reports); the alert window's hysteresis still holds.
                Some((s, main, variance)) if v.surging && !main.surging => {
                    *s = start;
                    *main = detect::Verdict {
                        elevated: true,
                        ..v
                    };
                    *variance = view.variance;
                }
                Some(_) => {}
            }
        }
        let (start, verdict, variance) = chosen?;
        let window = start..=if lead { end + bs } else { end };
        let tr = st.lifecycle.step(&rule.id, &cfg, &verdict, point)?;
        let verdict = match cfg.kind {
            DetectorKind::Baseline => verdict.with_tail(variance),
            _ => verdict,
        };
        let recent: Vec<&ArticleRef> = st
            .recent
            .range(window.clone())
            .flat_map(|(_, v)| v.iter().map(|r| &**r))
            .collect();
        let articles: u64 = st
            .buckets
            .range(window.clone())
            .map(|(_, b)| b.articles as u64)
            .sum();
        let mut sources: HashSet<u64> = HashSet::default();
        for (_, b) in st.buckets.range(window.clone()) {
            sources.extend(&b.sources);
        }
        let chart_end = *window.end();
        let chart_start = chart_end - CHART_HOURS * 3600 + bs;
        let chart = ChartSeries {
            start: chart_start,
            bucket_secs: bs,
            stories: (0..CHART_HOURS * 3600 / bs)
                .map(|i| {
                    st.buckets
                        .get(&(chart_start + i * bs))
                        .map_or(0, |b| b.count(cfg.count))
                })
                .collect(),
            expected: (0..CHART_HOURS * 3600 / bs)
                .map(|i| st.baseline.expected(Season::of(chart_start + i * bs)) as f32)
                .collect(),
        };
        let event = AlertEvent {
            event_id: tr.event_id,
            alert_id: tr.alert_id,
            rule: rule.id.clone(),
            rule_name: rule.name.clone(),
            kind: tr.kind,
            at: ts(tr.at),
            started_at: ts(tr.started_at),
            window_start: ts(start),
            window_end: ts(*window.end() + bs),
            detector: cfg.kind,
            observed: verdict.observed,
            expected: (verdict.expected * 1000.0).round() / 1000.0,
            ratio: (verdict.ratio * 1000.0).round() / 1000.0,
            p_value: verdict.p_value,
            feed_factor: (factor * 1000.0).round() / 1000.0,
            articles,
            sources: sources.len() as u64,
            top_articles: recent
                .iter()
                .rev()
                .filter(|r| r.new_story)
                .take(5)
                .map(|r| (*r).clone())
                .collect(),
            top_entities: top(recent.iter().flat_map(|r| r.entities.iter())),
            top_countries: top(recent.iter().flat_map(|r| r.countries.iter())),
            top_keywords: top(recent.iter().flat_map(|r| r.terms.iter())),
            notify: rule.notify.clone(),
            chart,
            templates: rule.templates.clone(),
            unannounced: false,
            link: None,
        };
        Some(event)
    }
}

impl Engine {
    /// What would start an alert of `rule_id` at the watermark, as the next evaluation
    /// would judge it (before it learns the buckets finished since the last). None for a
    /// rule not loaded or before the first article.
    pub fn gate(&self, rule_id: &str) -> Option<Gate> {
        let rule = self.matcher.rules.iter().find(|r| r.id == rule_id)?;
        let st = self.rules.get(rule_id)?;
        if self.watermark == i64::MIN {
            return None;
        }
        let learner = learner!(self, None);
        let n_rules = self.matcher.rules.len().max(detect::MIN_FAMILY);
        let w = learner.windows(rule, st, self.watermark, true, n_rules, None);
        let bs = self.settings.bucket_secs;
        let windows = (w.views.iter())
            .map(|(start, view)| GateWindow {
                minutes: ((w.end - start) / bs + 1) * bs / 60,
                observed: view.observed,
                expected: view.expected,
                needed: fewest_that_surge(&w.cfg, view, w.tests),
            })
            .collect();
        Some(Gate {
            cooldown_until: (st.lifecycle.cooldown_until > self.watermark)
                .then(|| ts(st.lifecycle.cooldown_until)),
            feed_factor: w.feed_factor,
            momentum: w.momentum,
            windows,
        })
    }

    /// Learns, then evaluates rule `idx` at event time `point`. `lead` counts the bucket
    /// after the watermark's too (live feeds, where partitions run seconds apart).
    fn evaluate(&mut self, idx: usize, point: i64, lead: bool) -> Option<AlertEvent> {
        let rule = &self.matcher.rules[idx];
        let st = self.rules.get_mut(&rule.id)?;
        let learner = learner!(self, None);
        let n_rules = self.matcher.rules.len().max(detect::MIN_FAMILY);
        let learned = learner.learn(rule, st, point, None);
        let event = learner.judge(rule, st, point, lead, n_rules, None);
        self.note_evaluation(idx, learned, event.as_ref());
        event
    }

    /// What an evaluation changes outside the rule's own state: the rule is to be
    /// persisted, and the set of alerting rules follows its alert.
    fn note_evaluation(&mut self, idx: usize, learned: bool, event: Option<&AlertEvent>) {
        if learned || event.is_some() {
            self.dirty_rules.insert(self.matcher.rules[idx].id.clone());
        }
        match event.map(|e| e.kind) {
            Some(EventKind::Started) => {
                self.alerting.insert(idx);
            }
            Some(EventKind::Resolved) => {
                self.alerting.remove(&idx);
            }
            _ => {}
        }
    }

    /// Hands over everything changed since the last call, for the state store.
    pub fn take_changes(&mut self) -> Changes {
        let mut c = Changes {
            watermark: self.watermark,
            buckets: std::mem::take(&mut self.pruned_buckets),
            volume: std::mem::take(&mut self.pruned_volume),
            ..Default::default()
        };
        for (id, buckets) in self.dirty_buckets.drain() {
            let Some(st) = self.rules.get(&id) else {
                continue;
            };
            let id: Arc<str> = id.into();
            for b in buckets {
                if let Some(bucket) = st.buckets.get(&b) {
                    c.buckets.push((id.clone(), b, bucket.clone()));
                }
            }
        }
        for id in self.dirty_rules.drain() {
            if let Some(st) = self.rules.get(&id) {
                // Only what is persisted with the rule: buckets and evidence go as rows.
                let persisted = RuleState {
                    buckets: BTreeMap::new(),
                    recent: BTreeMap::new(),
                    baseline: st.baseline.clone(),
                    lifecycle: st.lifecycle.clone(),
                    learned_until: st.learned_until,
                    fingerprint: st.fingerprint,
                    slot: None,
                };
                c.rules.push((id, persisted));
            }
        }
        for b in self.dirty_volume.drain() {
            if let Some(v) = self.volume.get(&b) {
                c.volume.push((b, *v));
            }
        }
        c.stories = std::mem::take(&mut self.new_stories);
        c.evidence = std::mem::take(&mut self.new_evidence);
        c.events = std::mem::take(&mut self.events);
        if std::mem::take(&mut self.feed_dirty) {
            c.feed = Some(self.feed.clone());
        }
        c
    }

    /// Current window count and expectation of a rule, for the API.
    pub fn window_figures(&self, rule_id: &str, window_minutes: u32) -> Option<(u64, f64)> {
        let st = self.rules.get(rule_id)?;
        if self.watermark == i64::MIN {
            return Some((0, 0.0));
        }
        let bs = self.settings.bucket_secs;
        let n = (window_minutes as i64 * 60 / bs).max(1);
        let end = self.bucket_of(self.watermark);
        let start = end - (n - 1) * bs;
        let observed = st
            .buckets
            .range(start..=end + bs)
            .map(|(_, b)| b.stories as u64)
            .sum();
        let expected = st.baseline.expected_sum(start, n, bs);
        Some((observed, expected))
    }
}

/// A rule's id, its whole series and its alerts as (start, end).
pub type RuleHistory = (String, ChartSeries, Vec<(i64, i64)>);

/// A record of every rule's finished buckets and alerts over a whole run, for the charts of
/// `vigie backtest --chart` (the engine itself keeps only two days in memory).
#[derive(Debug, Default)]
pub struct History {
    /// Next bucket to record.
    next: Option<i64>,
    bucket_secs: i64,
    /// Per rule and bucket: stories and the baseline's expectation when the bucket closed.
    rows: BTreeMap<String, BTreeMap<i64, (u32, f32)>>,
    /// Open alerts: rule → start.
    open: HashMap<String, i64>,
    /// Closed alerts per rule: (start, end).
    spans: BTreeMap<String, Vec<(i64, i64)>>,
}

impl History {
    /// Records the buckets the watermark has closed and the alerts of `events`.
    pub fn record(&mut self, e: &Engine, events: &[AlertEvent]) {
        for ev in events {
            match ev.kind {
                EventKind::Started => {
                    self.open.insert(ev.rule.clone(), ev.at.timestamp());
                }
                EventKind::Resolved => {
                    if let Some(start) = self.open.remove(&ev.rule) {
                        let span = (start, ev.at.timestamp());
                        self.spans.entry(ev.rule.clone()).or_default().push(span);
                    }
                }
                EventKind::Updated => {}
            }
        }
        if e.watermark != i64::MIN {
            let last = e.bucket_of(e.watermark) - e.settings.bucket_secs;
            self.take(e, last);
        }
    }

    /// Records up to the watermark's own bucket and closes open alerts there.
    pub fn finish(&mut self, e: &Engine) {
        if e.watermark == i64::MIN {
            return;
        }
        self.take(e, e.bucket_of(e.watermark));
        for (rule, start) in self.open.drain() {
            self.spans
                .entry(rule)
                .or_default()
                .push((start, e.watermark));
        }
    }

    fn take(&mut self, e: &Engine, last: i64) {
        let bs = e.settings.bucket_secs;
        self.bucket_secs = bs;
        let first = match self.next {
            Some(n) => n,
            None => e
                .rules
                .values()
                .filter_map(|st| st.buckets.keys().next().copied())
                .min()
                .unwrap_or(last),
        };
        let mut b = first;
        while b <= last {
            for r in &e.matcher.rules {
                if let Some(st) = e.rules.get(&r.id) {
                    let stories = st.buckets.get(&b).map_or(0, |x| x.stories);
                    let expected = st.baseline.expected(Season::of(b)) as f32;
                    self.rows
                        .entry(r.id.clone())
                        .or_default()
                        .insert(b, (stories, expected));
                }
            }
            b += bs;
        }
        self.next = Some(b.max(first));
    }

    /// One series per rule with its alert spans.
    pub fn series(&self) -> Vec<RuleHistory> {
        self.rows
            .iter()
            .filter_map(|(rule, rows)| {
                let (&start, _) = rows.first_key_value()?;
                let series = ChartSeries {
                    start,
                    bucket_secs: self.bucket_secs,
                    stories: rows.values().map(|v| v.0).collect(),
                    expected: rows.values().map(|v| v.1).collect(),
                };
                let spans = self.spans.get(rule).cloned().unwrap_or_default();
                Some((rule.clone(), series, spans))
            })
            .collect()
    }
}

/// Sums over runs of buckets from prefix sums: `sums[i]` is the total of the first `i`
/// buckets from `lo` (a bucket start), one bucket every `bs` seconds. Judging a rule at the
/// points of an advance reads the same few hours of its buckets at every point (window,
/// previous window, momentum, the feed's swing, about 250 buckets a point); walking the map
/// each time was a tenth of the CPU of a 10,000-rule backlog. The map's counts do not change
/// during an advance, so they are summed once.
#[derive(Debug, Default)]
struct Prefix {
    lo: i64,
    bs: i64,
    sums: Vec<u64>,
}

impl Prefix {
    /// Zeros for the buckets of times `lo..=hi`: from the bucket holding `lo`, at most
    /// [`PREFIX_MAX_BUCKETS`] of them. Filled with [`Prefix::add`], then [`Prefix::total`].
    fn zeros(lo: i64, hi: i64, bs: i64) -> Prefix {
        let lo = lo.div_euclid(bs) * bs;
        let len = ((hi - lo) / bs + 1).clamp(0, PREFIX_MAX_BUCKETS) as usize;
        Prefix {
            lo,
            bs,
            sums: vec![0; len + 1],
        }
    }

    /// Where the buckets summed end (exclusive).
    fn end(&self) -> i64 {
        self.lo + (self.sums.len() as i64 - 1) * self.bs
    }

    /// Adds `v` to the bucket starting at `k` (within `lo..end()`).
    fn add(&mut self, k: i64, v: u64) {
        self.sums[((k - self.lo) / self.bs) as usize + 1] += v;
    }

    /// Turns the per-bucket values into running totals.
    fn total(mut self) -> Prefix {
        for i in 1..self.sums.len() {
            self.sums[i] += self.sums[i - 1];
        }
        self
    }

    /// Sums `map`'s values per bucket for times `lo..=hi` (see [`Prefix::zeros`]).
    fn of<V>(
        map: &BTreeMap<i64, V>,
        lo: i64,
        hi: i64,
        bs: i64,
        value: impl Fn(&V) -> u64,
    ) -> Prefix {
        let mut p = Prefix::zeros(lo, hi, bs);
        for (&k, v) in map.range(p.lo..p.end()) {
            p.add(k, value(v));
        }
        p.total()
    }

    /// The total of the buckets starting in `[from, to)`, or None when that is not all
    /// within the buckets summed (the caller then walks its map).
    fn sum(&self, from: i64, to: i64) -> Option<u64> {
        if to <= from {
            return Some(0);
        }
        // Bucket starts from `lo` before a time: the index of the first at or after it.
        let index = |t: i64| -(-(t - self.lo)).div_euclid(self.bs);
        let (a, b) = (index(from), index(to));
        let len = self.sums.len() as i64 - 1;
        (a >= 0 && b <= len).then(|| self.sums[b as usize] - self.sums[a as usize])
    }
}

/// Most buckets an advance sums ahead for one rule (about three and a half days of 5-minute
/// buckets): a batch spanning more (a sparse backlog) reads the rest from the map, so the
/// memory per rule stays bounded.
const PREFIX_MAX_BUCKETS: i64 = 1024;

/// How far before the first point of an advance a rule's windows reach: the momentum's
/// hours before the alert window, the slow window and the one before it, the allowed
/// lateness behind which learning runs. Further reads fall back to the map.
const PREFIX_LOOKBACK_SECS: i64 = 14 * 3600;

/// One rule's counts, summed once for an advance (see [`Prefix`]).
#[derive(Debug, Default)]
struct RuleSums {
    articles: Prefix,
    stories: Prefix,
}

impl RuleSums {
    /// Both counts in one walk of the map.
    fn build(buckets: &BTreeMap<i64, Bucket>, lo: i64, hi: i64, bs: i64) -> RuleSums {
        let (mut articles, mut stories) = (Prefix::zeros(lo, hi, bs), Prefix::zeros(lo, hi, bs));
        for (&k, b) in buckets.range(articles.lo..articles.end()) {
            articles.add(k, b.articles as u64);
            stories.add(k, b.stories as u64);
        }
        RuleSums {
            articles: articles.total(),
            stories: stories.total(),
        }
    }
}

/// A rule's buckets as the detector reads them: sums over time ranges, from the advance's
/// [`RuleSums`] when it covers the range, else by walking the map. Both give the same
/// integers.
#[derive(Clone, Copy)]
struct Series<'a> {
    buckets: &'a BTreeMap<i64, Bucket>,
    sums: Option<&'a RuleSums>,
}

impl<'a> Series<'a> {
    fn of(buckets: &'a BTreeMap<i64, Bucket>, sums: Option<&'a RuleSums>) -> Series<'a> {
        Series { buckets, sums }
    }

    /// Count of the buckets starting in `[from, to)`.
    fn sum(&self, unit: CountUnit, from: i64, to: i64) -> u64 {
        let prefix = self.sums.map(|s| match unit {
            CountUnit::Articles => &s.articles,
            CountUnit::Stories => &s.stories,
        });
        sum_or_walk(prefix, self.buckets, from, to, |b| b.count(unit) as u64)
    }
}

/// The whole feed's volume read the same way (one [`Prefix`] per advance, for all rules).
#[derive(Clone, Copy)]
struct Volume<'a> {
    map: &'a BTreeMap<i64, u64>,
    sums: Option<&'a Prefix>,
}

impl Volume<'_> {
    /// Articles in the buckets starting in `[from, to)`.
    fn sum(&self, from: i64, to: i64) -> u64 {
        sum_or_walk(self.sums, self.map, from, to, |&v| v)
    }
}

/// The total of `map`'s values in the buckets starting in `[from, to)`: from `prefix` when
/// it covers the range, else by walking the map.
fn sum_or_walk<V>(
    prefix: Option<&Prefix>,
    map: &BTreeMap<i64, V>,
    from: i64,
    to: i64,
    value: impl Fn(&V) -> u64,
) -> u64 {
    if let Some(v) = prefix.and_then(|p| p.sum(from, to)) {
        return v;
    }
    if to <= from {
        return 0;
    }
    map.range(from..to).map(|(_, v)| value(v)).sum()
}

/// Hours before a window whose coverage tells how busy the topic is today.
const RECENT_HOURS: i64 = 6;
/// Stories' worth of "as expected" the momentum factor is shrunk with: a topic needs about
/// this many stories in its last hours before they move its expectation much.
const RECENT_PRIOR: f64 = 10.0;
/// The feed's swing is measured over at least this many hours: swings (a big news day
/// elsewhere, a source down) last hours, and over one hour the feed's own clumpiness
/// (syndicated copies, other topics' surges) made the factor noisy, which lowered
/// expectations at random and started false alerts.
const FEED_HOURS: i64 = 3;

/// How the topic's last hours compare with its baseline: observed over expected stories in
/// the `RECENT_HOURS` before `first`, shrunk toward 1 (as if `RECENT_PRIOR` more stories had
/// come as expected) and clamped to [2/3, 3/2]. News has momentum: on a day a topic runs at
/// 1.4×, the next hour is more likely 1.4× than 1×; scaling by it removes the day-to-day
/// swing from the noise a surge must stand out of.
///
/// `swing` is the feed's swing over the same hours (1 without the share-of-volume
/// correction): the baseline is in the feed's usual terms, so the hours are compared with
/// the expectation the swing implies. Compared with the bare baseline, the feed's swing was
/// counted twice (once here, once by the caller's own factor).
fn recent_factor(
    series: Series,
    baseline: &Baseline,
    unit: CountUnit,
    bs: i64,
    first: i64,
    swing: f64,
) -> f64 {
    let from = first - RECENT_HOURS * 3600;
    let observed = series.sum(unit, from, first) as f64;
    let expected = swing * baseline.expected_sum(from, RECENT_HOURS * 3600 / bs, bs);
    ((observed + RECENT_PRIOR) / (expected + RECENT_PRIOR)).clamp(2.0 / 3.0, 1.5)
}

/// How much busier than usual the feed was over the `n` buckets (at least `FEED_HOURS`)
/// ending with `last`: observed articles, less the rule's own (`buckets`, so a topic's surge
/// cannot explain itself away), over the volume baseline's expectation. Shrunk toward 1 when volumes are small and
/// clamped to [1/3, 3]; exactly 1 until the volume baseline has seen a week.
fn feed_factor(
    feed: &FeedState,
    volume: Volume,
    series: Series,
    bs: i64,
    last: i64,
    n: i64,
) -> f64 {
    // The volume's own hour-of-day and weekday rhythm takes about a week to learn; before
    // that, a swing could not be told from an unlearned rhythm.
    if (feed.baseline.buckets_seen as i64) < 7 * 86_400 / bs {
        return 1.0;
    }
    let n = n.max(FEED_HOURS * 3600 / bs);
    let first = last - (n - 1) * bs;
    let own = series.sum(CountUnit::Articles, first, last + 1);
    let observed = volume.sum(first, last + 1);
    let expected = feed.baseline.expected_sum(first, n, bs);
    let rest = observed.saturating_sub(own) as f64;
    let prior = 10.0 + 0.1 * expected;
    ((rest + prior) / (expected + prior)).clamp(1.0 / 3.0, 3.0)
}

fn top<'a>(items: impl Iterator<Item = &'a String>) -> Vec<(String, u32)> {
    let mut counts: HashMap<&String, u32> = HashMap::default();
    for i in items {
        *counts.entry(i).or_default() += 1;
    }
    let mut v: Vec<(String, u32)> = counts.into_iter().map(|(k, v)| (k.clone(), v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(5);
    v
}

pub fn ts(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> Arc<Matcher> {
        crate::matcher::testing::matcher(vec![crate::matcher::testing::rule("kz", "kazakhstan")])
    }

    fn article(i: usize, t: i64, text: &str) -> Article {
        Article {
            id: format!("a{i}"),
            url: None,
            title: format!("{text} {i}"),
            body: format!("story number {i} about {text} with words {}", i * 7919),
            published_at: ts(t),
            date_origin: Default::default(),
            source: Some(format!("s{}.example", i % 3)),
            language: Some("en".into()),
            entities: vec![],
            countries: vec![],
            extra: Default::default(),
        }
    }

    #[test]
    fn summed_series_equal_walking_the_map() {
        // Buckets of 300 s with gaps, some before and after the summed span; ranges with
        // aligned and unaligned ends, empty, inside, straddling and outside the span.
        let bs = 300;
        let mut buckets = BTreeMap::new();
        let mut volume = BTreeMap::new();
        let mut x: u64 = 7;
        for i in -40i64..120 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if x >> 62 == 0 {
                continue;
            }
            let b = Bucket {
                articles: (x >> 40) as u32 % 9 + 1,
                stories: (x >> 50) as u32 % 5,
                ..Default::default()
            };
            volume.insert(i * bs, (x >> 33) % 50);
            buckets.insert(i * bs, b);
        }
        let (lo, hi) = (-1000, 20_000);
        let sums = RuleSums::build(&buckets, lo, hi, bs);
        let vsums = Prefix::of(&volume, lo, hi, bs, |&v| v);
        let with = Series {
            buckets: &buckets,
            sums: Some(&sums),
        };
        let without = Series {
            buckets: &buckets,
            sums: None,
        };
        let (vwith, vwithout) = (
            Volume {
                map: &volume,
                sums: Some(&vsums),
            },
            Volume {
                map: &volume,
                sums: None,
            },
        );
        let (mut covered, mut walked) = (0, 0);
        for from in (-13_000..40_000).step_by(1_130) {
            for len in [0, 1, 299, 300, 301, 3_600, 14_400, 21_601, 50_000] {
                let to = from + len;
                for unit in [CountUnit::Articles, CountUnit::Stories] {
                    assert_eq!(
                        with.sum(unit, from, to),
                        without.sum(unit, from, to),
                        "{from}..{to}"
                    );
                }
                assert_eq!(vwith.sum(from, to), vwithout.sum(from, to), "{from}..{to}");
                match sums.articles.sum(from, to) {
                    Some(_) if len > 0 => covered += 1,
                    None => walked += 1,
                    _ => {}
                }
            }
        }
        assert!(
            covered > 50 && walked > 50,
            "both the sums and the map answer: {covered} and {walked}"
        );
    }

    #[test]
    fn simhash_swar_counting_equals_plain_counting() {
        // The plain definition: a bit is set when most word-pair hashes have it.
        assert_ne!(shingle_hash(1, 2), shingle_hash(2, 1));
        fn plain(text: &str) -> u64 {
            let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
            let mut ones = [0u32; 64];
            let hash = |w: &str| word_hash(w.as_bytes(), 0, w.len());
            for p in words.windows(2) {
                let h = shingle_hash(hash(p[0]), hash(p[1]));
                for (bit, o) in ones.iter_mut().enumerate() {
                    *o += ((h >> bit) & 1) as u32;
                }
            }
            let n = words.len().saturating_sub(1) as u32;
            (0..64).fold(
                0,
                |acc, b| if 2 * ones[b] > n { acc | (1 << b) } else { acc },
            )
        }
        // Long enough to flush the 8-bit lanes several times.
        let body: String = (0..700).map(|i| format!("w{} ", i % 97 * i % 13)).collect();
        let title = "kazakhstan tokayev asks csto for help";
        let mut cut = body.len().min(SIMHASH_BODY_BYTES);
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        let joined = format!("{title} {}", &body[..cut]);
        assert_eq!(simhash_normalized(title, &body), plain(&joined));
    }

    #[test]
    fn simhash_from_word_lists_equals_simhash_of_text() {
        // Bodies shorter than the bound, cut inside a word, cut on a space, empty, one word.
        let long = "Les manifestations s'étendent à Almaty; le président Tokaïev ".repeat(80);
        let bodies = [
            long.clone(),
            format!("x{long}"),
            format!("xy{long}"),
            "court".to_string(),
            String::new(),
        ];
        for title in ["Kazakhstan : état d'urgence", "", "un"] {
            for body in &bodies {
                let (t, b) = (normalize::normalize(title), normalize::normalize(body));
                assert_eq!(
                    simhash_of(&t, &b),
                    simhash_normalized(&t.text, &b.text),
                    "{title:?} / {} bytes",
                    body.len()
                );
            }
        }
    }

    #[test]
    fn fingerprints_of_distinct_texts_are_far_apart() {
        // A fingerprint's bits must look random across distinct texts, whatever the words'
        // own hashes are (short words are packed as their letters): distinct stories about
        // 32 bits apart, none within SAME_STORY_BITS, and one-word texts that share letters
        // no nearer than any others.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let vocab: Vec<String> = (0..400)
            .map(|i| {
                let len = 2 + i % 11;
                (0..len)
                    .map(|_| rng.gen_range(b'a'..=b'z') as char)
                    .collect()
            })
            .collect();
        let mut prints: Vec<u64> = (0..300)
            .map(|_| {
                let words: Vec<&str> = (0..rng.gen_range(8..400))
                    .map(|_| vocab[rng.gen_range(0..vocab.len())].as_str())
                    .collect();
                simhash_normalized(&words[..5].join(" "), &words[5..].join(" "))
            })
            .collect();
        prints.extend(
            ["a", "b", "ab", "ba", "abc", "abd", "un", "une"].map(|w| simhash_normalized(w, "")),
        );
        let mut sum = 0u64;
        let mut pairs = 0u64;
        for (i, a) in prints.iter().enumerate() {
            for b in &prints[i + 1..] {
                let d = (a ^ b).count_ones();
                assert!(d > SAME_STORY_BITS + 6, "two distinct texts {d} bits apart");
                sum += u64::from(d);
                pairs += 1;
            }
        }
        let mean = sum as f64 / pairs as f64;
        assert!((30.0..34.0).contains(&mean), "mean distance {mean}");
    }

    #[test]
    fn simhash_collapses_copies_not_distinct_stories() {
        let long = "The president of Kazakhstan asked the CSTO for help on Wednesday as protests spread to Almaty and other cities. ".repeat(5);
        let a = simhash("Kazakhstan: Tokayev asks CSTO for help", &long);
        let b = simhash(
            "Kazakhstan: Tokayev asks CSTO for help",
            &format!("{long} (AFP) Read more on our site"),
        );
        let c = simhash(
            "Football: results of the weekend",
            "Paris won again on Sunday while Lyon lost at home in a game marked by two red cards.",
        );
        assert!(
            (a ^ b).count_ones() <= SAME_STORY_BITS,
            "{}",
            (a ^ b).count_ones()
        );
        assert!((a ^ c).count_ones() > 10);
        let mut idx = StoryIndex::default();
        let title = title_hash("Kazakhstan: Tokayev asks CSTO for help");
        assert!(idx.insert(
            StoryKey {
                simhash: a,
                title,
                at: 0
            },
            3600
        ));
        // A short copy whose SimHash drifted still joins its story through the title.
        assert!(!idx.insert(
            StoryKey {
                simhash: !a,
                title,
                at: 60
            },
            3600
        ));
        assert!(idx.insert(
            StoryKey {
                simhash: c,
                title: None,
                at: 90
            },
            3600
        ));
    }

    #[test]
    fn story_index_decides_as_a_scan_of_every_entry_kept() {
        // The plain definition: an article is a copy when some entry still kept (not
        // pruned, in insertion order) is within 3 bits and the window, or has its title.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let stories: Vec<u64> = (0..300).map(|_| rng.gen()).collect();
        let mut idx = StoryIndex::default();
        let mut kept: VecDeque<(u64, i64, Option<u64>)> = VecDeque::new();
        let window = 900;
        let (mut copies, mut new) = (0, 0);
        for n in 0..20_000i64 {
            let t = n * 3 + rng.gen_range(0..600);
            let mut hash = stories[rng.gen_range(0..stories.len())];
            // Drift by up to five bits: copies within three, distinct stories beyond.
            for _ in 0..rng.gen_range(0..=5) {
                hash ^= 1 << rng.gen_range(0..64);
            }
            let title = (rng.gen_range(0..10) == 0).then(|| rng.gen_range(0..50u64));
            let dup = (kept.iter()).any(|&(h, at, x)| {
                let near =
                    (h ^ hash).count_ones() <= SAME_STORY_BITS || (title.is_some() && x == title);
                near && (at - t).abs() <= window
            });
            kept.push_back((hash, t, title));
            let key = StoryKey {
                simhash: hash,
                title,
                at: t,
            };
            assert_eq!(idx.insert(key, window), !dup, "article {n}");
            if dup {
                copies += 1
            } else {
                new += 1
            }
            if n % 97 == 0 {
                let cutoff = t - 2 * window;
                idx.prune(cutoff);
                while kept.front().is_some_and(|&(_, at, _)| at < cutoff) {
                    kept.pop_front();
                }
                assert_eq!(idx.len(), kept.len());
            }
        }
        // Both outcomes are common, so the comparison means something.
        assert!(copies > 2_000 && new > 2_000, "{copies} copies, {new} new");
    }

    /// Ten steady days (the topic 6 an hour in a feed of 66), then three hours in which the
    /// whole feed triples. Returns the `started` events of those three hours.
    fn feed_swing(share_of_volume: bool) -> Vec<AlertEvent> {
        let m = matcher();
        let mut s = EngineSettings::default();
        s.detector.share_of_volume = share_of_volume;
        let mut e = Engine::new(s, m.clone());
        let t0 = 1_640_995_200;
        let mut i = 0;
        let mut out = Vec::new();
        for h in 0..(10 * 24 + 3) {
            let scale = if h >= 240 { 3 } else { 1 };
            for k in 0..66 * scale {
                let t = t0 + h * 3600 + k * 3600 / (66 * scale);
                let text = if k % 11 == 0 { "Kazakhstan" } else { "weather" };
                let a = article(i, t, text);
                i += 1;
                e.ingest(&a, &m.match_article(&a), None);
            }
            let events = e.advance(t0 + (h + 1) * 3600 - 1);
            if h >= 240 {
                out.extend(events.into_iter().filter(|e| e.kind == EventKind::Started));
            }
        }
        out
    }

    #[test]
    fn a_swing_of_the_whole_feed_is_not_a_spike_of_one_topic() {
        let corrected = feed_swing(true);
        assert!(corrected.is_empty(), "{corrected:?}");
        let raw = feed_swing(false);
        assert_eq!(
            raw.len(),
            1,
            "without the correction the swing looks like a spike"
        );
    }

    #[test]
    fn quiet_then_surge_starts_one_alert_and_resolves() {
        let m = matcher();
        let mut s = EngineSettings::default();
        s.detector.warmup_hours = 24;
        let mut e = Engine::new(s, m.clone());
        let t0 = 1_640_995_200; // 2022-01-01
        let mut events = Vec::new();
        let mut i = 0;
        // Three quiet days: one article every 3 hours.
        for h in 0..72 {
            if h % 3 == 0 {
                let a = article(i, t0 + h * 3600, "Kazakhstan");
                let mm = m.match_article(&a);
                e.ingest(&a, &mm, None);
                i += 1;
            }
            events.extend(e.advance(t0 + h * 3600 + 1800));
        }
        assert!(events.is_empty(), "{events:?}");
        // Surge: 30 distinct stories in one hour.
        let surge = t0 + 72 * 3600;
        for k in 0..30 {
            let a = article(i, surge + k * 120, "Kazakhstan");
            let mm = m.match_article(&a);
            e.ingest(&a, &mm, None);
            i += 1;
            events.extend(e.advance(surge + k * 120));
        }
        let started: Vec<_> = events
            .iter()
            .filter(|e| e.kind == EventKind::Started)
            .collect();
        assert_eq!(started.len(), 1, "{events:?}");
        // It starts as soon as the gates allow, not later.
        let gates = DetectorConfig::default();
        assert!(started[0].observed >= gates.min_count && started[0].ratio >= gates.ratio);
        assert!(started[0].at < ts(surge + 20 * 60), "{:?}", started[0]);
        assert!(!started[0].top_articles.is_empty());
        // Quiet again for a day: resolves once.
        for h in 1..24 {
            events.extend(e.advance(surge + h * 3600));
        }
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == EventKind::Resolved)
                .count(),
            1,
            "{events:?}"
        );
        let c = e.take_changes();
        assert_eq!(c.events.len(), events.len());
    }

    /// The gate a quiet rule shows is the one its next evaluation applies: one story fewer
    /// than it says starts nothing, the number it says starts an alert.
    #[test]
    fn the_gate_shown_is_the_gate_applied() {
        let m = matcher();
        let mut s = EngineSettings::default();
        s.detector.warmup_hours = 24;
        let t0 = 1_640_995_200;
        let quiet = || {
            let mut e = Engine::new(s.clone(), m.clone());
            for h in 0..72 {
                if h % 3 == 0 {
                    let a = article(h as usize, t0 + h * 3600, "Kazakhstan");
                    e.ingest(&a, &m.match_article(&a), None);
                }
                assert!(e.advance(t0 + h * 3600 + 1800).is_empty());
            }
            e
        };
        let e = quiet();
        let gate = e.gate("kz").expect("a loaded rule after its first article");
        assert_eq!(
            gate.windows.iter().map(|w| w.minutes).collect::<Vec<_>>(),
            [60, 15, 240]
        );
        // Stories added now count in every window: the cheapest window decides.
        let extra = (gate.windows.iter())
            .map(|w| w.needed.unwrap() - w.observed)
            .min()
            .unwrap();
        assert!(extra >= s.detector.min_count, "{gate:?}");
        let now = t0 + 71 * 3600 + 1800;
        let started = |n: u64| {
            let mut e = quiet();
            for k in 0..n {
                let a = article(1000 + k as usize, now, "Kazakhstan");
                e.ingest(&a, &m.match_article(&a), None);
            }
            (e.advance(now + 1).into_iter()).any(|e| e.kind == EventKind::Started)
        };
        assert!(!started(extra - 1), "{gate:?}");
        assert!(started(extra), "{gate:?}");
        // Before the warm-up, no count would do.
        let mut young = Engine::new(s.clone(), m.clone());
        let a = article(0, t0, "Kazakhstan");
        young.ingest(&a, &m.match_article(&a), None);
        young.advance(t0 + 1);
        let g = young.gate("kz").unwrap();
        assert!(g.windows.iter().all(|w| w.needed.is_none()), "{g:?}");
        assert!(e.gate("nope").is_none());
    }

    /// A backlog whose first watermark arrives only once all of it is counted (a live
    /// consumer waits for every partition to speak) is judged at each bucket it spans,
    /// as one advanced article by article is: the surge starts an alert.
    #[test]
    fn a_first_advance_after_a_whole_backlog_still_sees_the_surge() {
        let m = matcher();
        let mut s = EngineSettings::default();
        s.detector.warmup_hours = 24;
        let t0 = 1_640_995_200;
        let mut articles = Vec::new();
        for h in (0..72).step_by(3) {
            articles.push(article(articles.len(), t0 + h * 3600, "Kazakhstan"));
        }
        let surge = t0 + 72 * 3600;
        for k in 0..30 {
            articles.push(article(articles.len(), surge + k * 120, "Kazakhstan"));
        }
        let last = surge + 29 * 120;
        let started = |events: &[AlertEvent]| -> Vec<DateTime<Utc>> {
            (events.iter())
                .filter(|e| e.kind == EventKind::Started)
                .map(|e| e.at)
                .collect()
        };
        let mut stepwise = Engine::new(s.clone(), m.clone());
        let mut events = Vec::new();
        for a in &articles {
            stepwise.ingest(a, &m.match_article(a), None);
            events.extend(stepwise.advance(a.published_at.timestamp()));
        }
        let mut backlog = Engine::new(s, m.clone());
        for a in &articles {
            backlog.ingest(a, &m.match_article(a), None);
        }
        let at_once = backlog.advance(last);
        // Stepwise, the alert starts at the article that tips it; at once, at the end of
        // that article's bucket (the points an advance evaluates).
        let bucket = |t: &DateTime<Utc>| t.timestamp().div_euclid(300);
        let (one, other) = (started(&events), started(&at_once));
        assert_eq!(one.len(), 1, "stepwise starts one alert: {one:?}");
        assert_eq!(other.len(), 1, "the backlog starts one alert: {other:?}");
        assert_eq!(
            bucket(&other[0]),
            bucket(&one[0]),
            "{other:?} against {one:?}"
        );
    }

    /// The window spread (`phi`) must come out near the truth: coverage whose hourly
    /// intensity varies by a gamma factor with a CV of 0.3 (phi 0.09 for a clock hour, about
    /// two thirds of that for windows that straddle two hours, plus the forecast's own
    /// error). Learned against a baseline that had already adapted to the window's own
    /// counts, it came out at 0.007: alerts' p-values were far too small.
    #[test]
    fn window_overdispersion_is_learned_out_of_sample() {
        use rand::{Rng, SeedableRng};
        use rand_distr::{Distribution, Gamma, Poisson};
        let m = matcher();
        let mut settings = EngineSettings::default();
        settings.detector.share_of_volume = false;
        let mut e = Engine::new(settings, m.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let hour_noise = Gamma::new(1.0 / 0.09, 0.09).unwrap();
        let t0 = 1_640_995_200;
        let mut i = 0;
        for h in 0..24 * 21 {
            let intensity = 12.0 * hour_noise.sample(&mut rng);
            let n = Poisson::new(intensity).unwrap().sample(&mut rng) as usize;
            for _ in 0..n {
                let words: Vec<String> = (0..40)
                    .map(|_| format!("w{}", rng.gen_range(0..100_000)))
                    .collect();
                let mut a = article(i, t0 + h * 3600 + rng.gen_range(0..3600), "Kazakhstan");
                a.body = words.join(" ");
                let mm = m.match_article(&a);
                e.ingest(&a, &mm, None);
                i += 1;
            }
            // The rest of the feed, which the share-of-volume correction measures.
            for _ in 0..60 {
                let a = article(i, t0 + h * 3600 + rng.gen_range(0..3600), "Weather");
                e.ingest(&a, &m.match_article(&a), None);
                i += 1;
            }
            e.advance(t0 + (h + 1) * 3600);
        }
        let phi = e.rules["kz"].baseline.phi;
        assert!((0.04..0.15).contains(&phi), "phi {phi}");
    }

    #[test]
    fn late_articles_are_not_counted() {
        let m = matcher();
        let mut e = Engine::new(EngineSettings::default(), m.clone());
        let t0 = 1_640_995_200;
        e.advance(t0 + 10 * 3600);
        let a = article(1, t0, "Kazakhstan");
        assert_eq!(e.ingest(&a, &m.match_article(&a), None), Ingested::Late);
        let b = article(2, t0 + 10 * 3600 - 600, "Kazakhstan");
        assert!(matches!(
            e.ingest(&b, &m.match_article(&b), None),
            Ingested::Counted { .. }
        ));
    }

    /// Stories each rule counted, summed over its buckets.
    fn stories_by_rule(e: &Engine) -> BTreeMap<String, u32> {
        (e.rules.iter())
            .map(|(id, st)| (id.clone(), st.buckets.values().map(|b| b.stories).sum()))
            .collect()
    }

    /// Two wire copies of one story (same title), the second with a tail about oil: the
    /// oil rule has seen the story once, whichever copy came first, and a third copy or a
    /// restart in between counts it for nobody again.
    #[test]
    fn a_copy_is_a_new_story_for_the_rules_that_had_not_counted_it() {
        use crate::matcher::testing::rule;
        let m =
            crate::matcher::testing::matcher(vec![rule("kz", "kazakhstan"), rule("oil", "oil")]);
        let t0 = 1_640_995_200;
        let copy = |i: usize, tail: &str| Article {
            title: "Kazakhstan protests spread to Almaty tonight".into(),
            body: format!("Protesters gathered in the square on Wednesday. {tail}"),
            ..article(i, t0 + 60 * i as i64, "unused")
        };
        let first = copy(0, "");
        let with_oil = copy(1, "Oil output in the west fell by a tenth.");
        let third = copy(2, "Oil prices rose. (AFP)");
        let run = |order: &[&Article]| {
            let mut e = Engine::new(EngineSettings::default(), m.clone());
            for a in order {
                e.ingest(a, &m.match_article(a), None);
            }
            stories_by_rule(&e)
        };
        let want: BTreeMap<String, u32> = [("kz".to_string(), 1), ("oil".to_string(), 1)].into();
        assert_eq!(run(&[&first, &with_oil]), want);
        assert_eq!(run(&[&with_oil, &first]), want);
        assert_eq!(run(&[&first, &with_oil, &third]), want);
        assert_eq!(run(&[&third, &with_oil, &first]), want);

        // A restart between the copies: the stored rows say who counted the story.
        let mut e = Engine::new(EngineSettings::default(), m.clone());
        e.ingest(&first, &m.match_article(&first), None);
        let c = e.take_changes();
        assert_eq!(c.stories.len(), 1);
        assert_eq!(c.stories[0].counted_by, vec![e.rule_keys[0]]);
        let mut r = Engine::new(EngineSettings::default(), m.clone());
        let buckets = (c.buckets.iter())
            .map(|(id, b, x)| (id.to_string(), *b, x.clone()))
            .collect();
        r.restore(vec![], buckets, vec![], c.stories, vec![], None);
        for a in [&with_oil, &third] {
            r.ingest(a, &m.match_article(a), None);
        }
        assert_eq!(stories_by_rule(&r), want);
    }

    fn three_rules() -> Arc<Matcher> {
        use crate::matcher::testing::rule;
        crate::matcher::testing::matcher(vec![
            rule("kz", "kazakhstan"),
            rule("asia", "kazakhstan OR china"),
            rule("never", "zzqxw"),
        ])
    }

    fn state_of(e: &Engine, id: &str) -> String {
        format!("{:?}", e.rules[id])
    }

    /// A batch counted at once (rules updated in parallel) leaves exactly the state that
    /// counting its articles one at a time does, and hands over the same changes.
    #[test]
    fn a_batch_counts_as_its_articles_one_at_a_time() {
        let m = three_rules();
        let mut batched = Engine::new(EngineSettings::default(), m.clone());
        let mut single = Engine::new(EngineSettings::default(), m.clone());
        let t0 = 1_640_995_200;
        let texts = ["Kazakhstan", "China", "Kazakhstan China", "weather"];
        let articles: Vec<Article> = (0..1500)
            .map(|i| {
                // Out of order within a batch, some copies of one story, some too late.
                let t = t0 + (i as i64) * 40 + if i % 7 == 0 { -900 } else { 0 };
                let t = if i % 250 == 249 { t - 8 * 3600 } else { t };
                let mut a = article(if i % 5 == 0 { i - i % 10 } else { i }, t, texts[i % 4]);
                a.id = format!("a{i}");
                a
            })
            .collect();
        let matches: Vec<ArticleMatch> = articles.iter().map(|a| m.match_article(a)).collect();
        let mut changes = (Vec::new(), Vec::new());
        for (chunk, mm) in articles.chunks(300).zip(matches.chunks(300)) {
            let batch: Vec<(&Article, &ArticleMatch)> = chunk.iter().zip(mm).collect();
            let hits: usize = mm.iter().map(|x| x.rule_indices.len()).sum();
            assert!(hits >= 256, "the batch must take the parallel path");
            let a = batched.ingest_batch(&batch, None);
            let b: Vec<Ingested> = batch
                .iter()
                .map(|(x, y)| single.ingest(x, y, None))
                .collect();
            assert_eq!(a, b);
            let wm = chunk
                .iter()
                .map(|a| a.published_at.timestamp())
                .max()
                .unwrap();
            assert_eq!(batched.advance(wm), single.advance(wm));
            for (e, out) in [
                (&mut batched, &mut changes.0),
                (&mut single, &mut changes.1),
            ] {
                let c = e.take_changes();
                let mut buckets: Vec<String> = c.buckets.iter().map(|b| format!("{b:?}")).collect();
                buckets.sort();
                let mut evidence: Vec<(String, i64, String)> = c
                    .evidence
                    .iter()
                    .map(|(r, b, a)| (r.to_string(), *b, a.id.clone()))
                    .collect();
                evidence.sort();
                let mut rules: Vec<String> = c.rules.iter().map(|r| format!("{r:?}")).collect();
                rules.sort();
                out.push((buckets, evidence, rules, c.stories.len()));
            }
        }
        assert!(
            batched.late_total > 0,
            "some articles must have come too late"
        );
        assert_eq!(batched.late_total, single.late_total);
        for id in ["kz", "asia", "never"] {
            assert_eq!(state_of(&batched, id), state_of(&single, id), "rule {id}");
        }
        assert_eq!(changes.0, changes.1);
        assert!(batched.rules["kz"].buckets.len() > 10);
    }

    /// Rules evaluated in parallel at an advance give the events, in the same order, and
    /// the states of the serial loop, through quiet spells, surges that start, update and
    /// resolve alerts, and advances that pass many buckets at once.
    #[test]
    fn an_advance_in_parallel_decides_as_the_serial_loop() {
        use crate::matcher::testing::rule;
        let rules: Vec<_> = (0..40)
            .map(|i| match i % 4 {
                0 => rule(&format!("kz{i}"), "kazakhstan"),
                1 => rule(&format!("cn{i}"), "china"),
                2 => rule(&format!("both{i}"), "kazakhstan OR china"),
                _ => rule(&format!("never{i}"), "zzqxw"),
            })
            .collect();
        let m = crate::matcher::testing::matcher(rules);
        let mut settings = EngineSettings::default();
        settings.detector.warmup_hours = 24;
        let mut parallel = Engine::new(settings.clone(), m.clone());
        parallel.parallel_from = 0;
        let mut serial = Engine::new(settings, m.clone());
        serial.parallel_from = usize::MAX;
        let t0 = 1_640_995_200;
        let mut i = 0;
        let mut events = Vec::new();
        // Hour by hour for five days: quiet coverage, then surges of each topic in turn,
        // advanced sometimes every hour, sometimes six hours at once.
        for h in 0..120i64 {
            let per_hour = match h {
                80..=83 => 25,
                95..=97 => 40,
                _ if h % 3 == 0 => 1,
                _ => 0,
            };
            let text = if h < 90 { "Kazakhstan" } else { "China" };
            let batch: Vec<Article> = (0..per_hour)
                .map(|k| {
                    i += 1;
                    article(i, t0 + h * 3600 + k * 3600 / per_hour.max(1), text)
                })
                .collect();
            let matches: Vec<ArticleMatch> = batch.iter().map(|a| m.match_article(a)).collect();
            let pairs: Vec<(&Article, &ArticleMatch)> = batch.iter().zip(&matches).collect();
            parallel.ingest_batch(&pairs, None);
            serial.ingest_batch(&pairs, None);
            if h % 6 == 5 || (78..100).contains(&h) {
                let wm = t0 + h * 3600 + 3599;
                let (a, b) = (parallel.advance(wm), serial.advance(wm));
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "hour {h}");
                events.extend(a);
            }
        }
        let kinds: HashSet<EventKind> = events.iter().map(|e| e.kind).collect();
        assert!(
            kinds.contains(&EventKind::Started) && kinds.contains(&EventKind::Resolved),
            "the feed must start and resolve alerts: {kinds:?}"
        );
        assert!(events.iter().any(|e| e.rule.starts_with("cn")));
        for r in &m.rules {
            assert_eq!(
                state_of(&parallel, &r.id),
                state_of(&serial, &r.id),
                "{}",
                r.id
            );
        }
        let (mut a, mut b) = (parallel.take_changes(), serial.take_changes());
        for c in [&mut a, &mut b] {
            c.rules.sort_by(|x, y| x.0.cmp(&y.0));
        }
        assert_eq!(format!("{:?}", a.rules), format!("{:?}", b.rules));
        assert_eq!(parallel.alerting, serial.alerting);
    }

    /// A rule that never matched is not rewritten with the quiet rules; restored from its
    /// older copy it catches up to exactly the state of an engine that never stopped.
    #[test]
    fn a_never_matched_rule_restored_from_an_old_copy_catches_up_exactly() {
        let m = three_rules();
        let mut e = Engine::new(EngineSettings::default(), m.clone());
        let t0 = 1_640_995_200;
        let mut stored: HashMap<String, RuleState> = HashMap::default();
        let mut restarted: Option<Engine> = None;
        for step in 0..(3 * 144) {
            let t = t0 + step * 600;
            let a = article(step as usize, t + 1, "Kazakhstan");
            let mm = m.match_article(&a);
            e.ingest(&a, &mm, None);
            e.advance(t + 2);
            if let Some(r) = restarted.as_mut() {
                r.ingest(&a, &mm, None);
                r.advance(t + 2);
            }
            for (id, st) in e.take_changes().rules {
                stored.insert(id, st);
            }
            if step == 2 * 144 {
                let mut r = Engine::new(EngineSettings::default(), m.clone());
                let rules = stored.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let buckets = (e.rules.iter())
                    .flat_map(|(id, st)| {
                        st.buckets.iter().map(|(b, x)| (id.clone(), *b, x.clone()))
                    })
                    .collect();
                r.restore(rules, buckets, vec![], vec![], vec![], Some(t + 2));
                r.restore_feed(e.feed.clone());
                r.earliest = e.earliest;
                r.housekept = e.housekept;
                restarted = Some(r);
            }
        }
        let r = restarted.unwrap();
        let (now, old) = (&e.rules["never"], &stored["never"]);
        assert!(
            now.learned_until - old.learned_until > 12 * 3600,
            "the never-matched rule was rewritten: {} vs {}",
            now.learned_until,
            old.learned_until
        );
        assert!(now.baseline.buckets_seen > 700);
        assert_eq!(
            format!("{:?}", (&now.baseline, now.learned_until)),
            format!(
                "{:?}",
                (&r.rules["never"].baseline, r.rules["never"].learned_until)
            )
        );
        // The rule that matched was written as it changed.
        assert!(stored["kz"].learned_until >= e.rules["kz"].learned_until - 600);
    }

    /// Feeds a synthetic stream through an engine in batches of `size` articles (0: one
    /// minute of event time per batch, as `vigie evaluate` and `backtest` do), advancing
    /// to each batch's last article; returns the engine and the ids of the alerts started.
    fn replay(
        p: &crate::evaluation::Prepared<'_>,
        detector: &crate::detect::DetectorConfig,
        size: usize,
    ) -> (Engine, Vec<String>) {
        let settings = EngineSettings {
            detector: detector.clone(),
            ..EngineSettings::default()
        };
        let mut e = Engine::new(settings, p.matcher.clone());
        let mut started = Vec::new();
        let pairs: Vec<(&Article, &ArticleMatch)> =
            p.stream.articles.iter().zip(&p.matches).collect();
        let mut batches: Vec<&[(&Article, &ArticleMatch)]> = Vec::new();
        if size == 0 {
            batches.extend(pairs.chunk_by(|x, y| {
                x.0.published_at.timestamp() / 60 == y.0.published_at.timestamp() / 60
            }));
        } else {
            batches.extend(pairs.chunks(size));
        }
        for batch in batches {
            e.ingest_batch(batch, None);
            let last = batch.iter().map(|(a, _)| a.published_at.timestamp()).max();
            for ev in e.advance(last.unwrap_or(i64::MIN)) {
                if ev.kind == EventKind::Started {
                    started.push(ev.alert_id);
                }
            }
            drop(e.take_changes());
        }
        (e, started)
    }

    /// A backlog read in large batches (after an outage, or a partition catching up) learns
    /// exactly what the same articles teach a minute at a time, and starts the same
    /// alerts: rules learn each bucket, and are judged, against the feed's volume baseline
    /// as it stood then, not as it stands at the end of the batch.
    #[test]
    fn large_batches_learn_and_alert_as_a_minute_at_a_time() {
        let stream = crate::evaluation::synthesize(&crate::evaluation::StreamOptions {
            seed: 3,
            days: 12,
            topics: 4,
            ..Default::default()
        });
        let p = crate::evaluation::prepare(&stream);
        // No alert can start, so no lifecycle (judged at other points in each case) sets
        // the learning rate: the baselines must come out identical.
        let quiet = crate::detect::DetectorConfig {
            ratio: 1e9,
            ..Default::default()
        };
        let (small, _) = replay(&p, &quiet, 0);
        let (large, _) = replay(&p, &quiet, 3000);
        assert!(
            small.feed.baseline.buckets_seen as i64 > 8 * 288,
            "the share of volume must be active"
        );
        assert_eq!(format!("{:?}", small.feed), format!("{:?}", large.feed));
        for t in &stream.topics {
            let (a, b) = (&small.rules[&t.id], &large.rules[&t.id]);
            assert!(a.baseline.level > 0.0, "{} learned nothing", t.id);
            assert_eq!(
                format!("{:?}", a.baseline),
                format!("{:?}", b.baseline),
                "{}",
                t.id
            );
        }
        // With the default detector the same alerts start (a large batch judges at the
        // end of each bucket rather than at each minute, so not always at the same second).
        let (_, a) = replay(&p, &Default::default(), 0);
        let (_, b) = replay(&p, &Default::default(), 3000);
        assert!(a.len() >= 3, "{a:?}");
        assert_eq!(a, b);
    }

    /// A rule counts a story in the bucket of the earliest copy it matched, whatever order
    /// the copies come in: partitions read at different paces deliver later copies first.
    #[test]
    fn story_counts_do_not_depend_on_the_order_copies_arrive() {
        let m = three_rules();
        let t0 = 1_640_995_200;
        // Three stories, each copied at 0, 20 and 40 minutes (one copy also naming China),
        // and single articles between.
        let mut articles = Vec::new();
        for s in 0..3 {
            for (c, minutes) in [0i64, 20, 40].into_iter().enumerate() {
                let text = if c == 2 {
                    "Kazakhstan China"
                } else {
                    "Kazakhstan"
                };
                let mut a = article(100 + s, t0 + s as i64 * 7200 + minutes * 60, text);
                // One title of four words or more makes one story of the copies.
                a.title = format!("Kazakhstan unrest story {s}");
                a.id = format!("s{s}c{c}");
                articles.push(a);
            }
        }
        for i in 0..20 {
            articles.push(article(i, t0 + i as i64 * 1000, "Kazakhstan"));
        }
        let counts = |order: &[Article]| {
            let mut e = Engine::new(EngineSettings::default(), m.clone());
            for a in order {
                let mm = m.match_article(a);
                assert!(!matches!(e.ingest(a, &mm, None), Ingested::Late));
            }
            let mut out: Vec<(String, i64, u32, u32)> = Vec::new();
            for id in ["kz", "asia"] {
                for (b, bucket) in &e.rules[id].buckets {
                    out.push((id.to_string(), *b, bucket.articles, bucket.stories));
                }
            }
            out
        };
        let mut in_time = articles.clone();
        in_time.sort_by_key(|a| a.published_at);
        let mut reversed = in_time.clone();
        reversed.reverse();
        let mut shuffled = in_time.clone();
        shuffled.sort_by_key(|a| xxhash_rust::xxh3::xxh3_64(a.id.as_bytes()));
        let expected = counts(&in_time);
        let stories: u32 = expected.iter().filter(|r| r.0 == "kz").map(|r| r.3).sum();
        assert_eq!(stories, 23, "3 stories of 3 copies and 20 single articles");
        assert_eq!(counts(&reversed), expected);
        assert_eq!(counts(&shuffled), expected);
    }

    /// When the watermark moves past the in-memory horizon within one batch (a sparse
    /// backlog), buckets counted in that batch leave memory before they are handed over:
    /// they must still reach the store, with their counts.
    #[test]
    fn buckets_that_leave_memory_in_their_batch_are_still_handed_over() {
        let m = matcher();
        let mut e = Engine::new(EngineSettings::default(), m.clone());
        let t0 = 1_640_995_200;
        let first = article(0, t0, "Kazakhstan");
        e.ingest(&first, &m.match_article(&first), None);
        e.advance(t0);
        drop(e.take_changes());
        // One batch: three articles just after t0, then one three days later.
        let late_days = t0 + 3 * 86_400;
        let batch: Vec<Article> = (1..4)
            .map(|i| article(i, t0 + 60 * i as i64, "Kazakhstan"))
            .chain([article(9, late_days, "Kazakhstan")])
            .collect();
        let matched: Vec<ArticleMatch> = batch.iter().map(|a| m.match_article(a)).collect();
        let pairs: Vec<(&Article, &ArticleMatch)> = batch.iter().zip(&matched).collect();
        e.ingest_batch(&pairs, None);
        e.advance(late_days);
        assert!(
            !e.rules["kz"].buckets.contains_key(&t0),
            "t0's bucket has left memory"
        );
        let c = e.take_changes();
        let row = c.latest_buckets().into_iter().find(|r| r.1 == t0).cloned();
        assert_eq!(row.map(|r| r.2.articles), Some(4), "{:?}", c.buckets);
        assert!(c.volume.contains(&(t0, 4)), "{:?}", c.volume);
    }
}
