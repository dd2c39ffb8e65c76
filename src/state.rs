//! The state file: one SQLite database (WAL mode) holding everything that must survive a
//! restart — consumed offsets, per-rule counts and detector state, the story index, alert
//! events and the delivery outbox.
//!
//! The central invariant: [`Store::commit`] writes a batch's counts, detector state, alert
//! events, outbox rows *and the offsets of the records that produced them* in one
//! transaction. After a crash, the consumer resumes from the stored offsets, so every
//! record is reflected exactly once in the counts, whatever happened to Kafka's own
//! committed offsets.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::engine::{
    AlertEvent, ArticleRef, Bucket, Changes, FeedState, RuleState, StoryKey, StoryRow,
};
use crate::silence::Silence;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state file: cannot create directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "state file {path} is read-only (a read-only mount, or a disk the kernel made read-only \
         after an error); vigie will not consume what it cannot record"
    )]
    ReadOnly { path: String },
    #[error("state file: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS buckets (
    rule TEXT NOT NULL, bucket INTEGER NOT NULL, articles INTEGER NOT NULL, stories INTEGER NOT NULL,
    sources BLOB NOT NULL, PRIMARY KEY (rule, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rule_state (rule TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stories (hash INTEGER NOT NULL, title INTEGER, at INTEGER NOT NULL, rules BLOB);
CREATE INDEX IF NOT EXISTS stories_at ON stories (at);
CREATE TABLE IF NOT EXISTS evidence (rule TEXT NOT NULL, bucket INTEGER NOT NULL, article TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS evidence_bucket ON evidence (bucket);
CREATE TABLE IF NOT EXISTS evidence_articles (
    id INTEGER PRIMARY KEY, bucket INTEGER NOT NULL, article TEXT NOT NULL, rules TEXT);
CREATE INDEX IF NOT EXISTS evidence_articles_bucket ON evidence_articles (bucket);
CREATE TABLE IF NOT EXISTS evidence_refs (
    rule TEXT NOT NULL, bucket INTEGER NOT NULL, article INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS evidence_refs_bucket ON evidence_refs (bucket);
CREATE TABLE IF NOT EXISTS volume (bucket INTEGER PRIMARY KEY, articles INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alert_events (
    event_id TEXT PRIMARY KEY, alert_id TEXT NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL,
    at INTEGER NOT NULL, created_at INTEGER NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alert_events_created ON alert_events (created_at);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id);
CREATE INDEX IF NOT EXISTS alert_events_at ON alert_events (at);
CREATE INDEX IF NOT EXISTS alert_events_rule ON alert_events (rule, at);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, channel TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, done_ms INTEGER,
    last_error TEXT, held_ms INTEGER, UNIQUE (event_id, channel));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_ms);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, channel TEXT,
    starts_ms INTEGER NOT NULL, ends_ms INTEGER NOT NULL, comment TEXT NOT NULL,
    created_by TEXT, created_ms INTEGER NOT NULL);
"#;

/// A connection to the state file. Each task that needs one opens its own: SQLite in WAL
/// mode lets readers run beside the single writer; writers wait on `busy_timeout`.
pub struct Store {
    conn: Connection,
}

/// A row of the outbox that is due for delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub channel: String,
    pub attempts: u32,
    pub created_ms: i64,
    /// Until when quiet hours held it back (ms since the epoch), if they did
    /// ([`crate::quiet`]): released rows go out together, and retry from then.
    pub held_ms: Option<i64>,
    pub event: AlertEvent,
}

impl Delivery {
    /// Since when the row has been trying to go out: the retry policy's age counts from
    /// here, so a night's hold does not use up the time to keep trying.
    pub fn trying_since_ms(&self) -> i64 {
        self.held_ms
            .map_or(self.created_ms, |h| h.max(self.created_ms))
    }
}

/// One channel's delivery of one event, as `GET /api/alerts` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryStatus {
    pub channel: String,
    /// `pending` (not yet sent, or to be retried), `sent`, `dead` or `silenced`.
    pub status: String,
    pub attempts: u32,
    /// The last failure, or which silence held it back.
    pub last_error: Option<String>,
    /// When the channel's quiet hours held it until, if they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until: Option<DateTime<Utc>>,
}

/// Outbox counts by status.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutboxStats {
    pub pending: i64,
    pub sent: i64,
    pub dead: i64,
    /// Not sent because a silence covered them when they fell due (`crate::silence`), or
    /// quiet hours with `quiet_action = "drop"` (`crate::quiet`).
    pub silenced: i64,
    /// Of the pending rows, those waiting for their channel's quiet hours to end or for
    /// its next digest.
    pub held: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Appends to an outbox query's `WHERE` the rows and channels to leave out, as numbered
/// parameters after those in `args` (`prefix`: the outbox table's alias with its dot).
fn not_in(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    prefix: &str,
    busy: &[i64],
    full: &[String],
) {
    let lists: [(&str, Vec<rusqlite::types::Value>); 2] = [
        ("id", busy.iter().map(|&id| id.into()).collect()),
        ("channel", full.iter().map(|c| c.clone().into()).collect()),
    ];
    for (column, values) in lists {
        if values.is_empty() {
            continue;
        }
        let marks: Vec<String> = (args.len() + 1..=args.len() + values.len())
            .map(|i| format!("?{i}"))
            .collect();
        sql.push_str(&format!(
            " AND {prefix}{column} NOT IN ({})",
            marks.join(", ")
        ));
        args.extend(values);
    }
}

/// Rows written by one statement when a commit writes many of a kind (see [`write_rows`]).
const ROWS_PER_STATEMENT: usize = 32;

/// Writes `rows` with `INSERT {head} VALUES (…), (…), …`, [`ROWS_PER_STATEMENT`] rows to a
/// statement and the remainder one at a time; `bind` binds one row's `cols` values from
/// the 1-based parameter index it is given. At 10,000 rules a backlog's write holds tens
/// of thousands of bucket rows, and every statement executed carries its own binding,
/// stepping and resetting. Eight alternated runs at 10,000 rules, bucket rows 32 to a
/// statement: CPU per article 57.8–63.9 µs against 59.3–65.3 with a statement per row
/// (lower in seven of eight).
fn write_rows<T>(
    tx: &rusqlite::Transaction,
    head: &str,
    cols: usize,
    rows: &[T],
    mut bind: impl FnMut(&mut rusqlite::CachedStatement, usize, &T) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let sql = |n: usize| {
        let row = format!("({})", vec!["?"; cols].join(", "));
        format!("INSERT {head} VALUES {}", vec![row; n].join(", "))
    };
    let mut chunks = rows.chunks_exact(ROWS_PER_STATEMENT);
    if chunks.len() > 0 {
        let mut many = tx.prepare_cached(&sql(ROWS_PER_STATEMENT))?;
        for chunk in &mut chunks {
            for (i, row) in chunk.iter().enumerate() {
                bind(&mut many, i * cols + 1, row)?;
            }
            many.raw_execute()?;
        }
    }
    let mut one = tx.prepare_cached(&sql(1))?;
    for row in chunks.remainder() {
        bind(&mut one, 1, row)?;
        one.raw_execute()?;
    }
    Ok(())
}

/// A bucket's counts from the columns `articles, stories, sources` starting at `at`.
fn bucket_at(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Bucket> {
    Ok(Bucket {
        articles: r.get(at)?,
        stories: r.get(at + 1)?,
        sources: decode_hashes(&r.get::<_, Vec<u8>>(at + 2)?),
    })
}

/// A list of 64-bit hashes (sources of a bucket, rules of a story row) as a blob.
fn encode_hashes(s: &[u64]) -> Vec<u8> {
    s.iter().flat_map(|h| h.to_le_bytes()).collect()
}

fn decode_hashes<C: FromIterator<u64>>(b: &[u8]) -> C {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        // SQLite quietly falls back to a read-only handle when the file cannot be opened for
        // writing; the first commit would then fail after a batch had been consumed. Every
        // caller of `open` writes, so refuse at once and name the file.
        if conn.is_readonly(rusqlite::DatabaseName::Main)? {
            return Err(StateError::ReadOnly {
                path: path.display().to_string(),
            });
        }
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed transaction survives power loss, which is what lets us store
        // offsets only after effects are durable.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // An 8 MiB page cache (the default is 2 MiB): at 10,000 rules a backlog's write
        // rewrites thousands of bucket rows spread over tens of MiB of table. 32 MiB saved
        // 2–4% of the CPU of a 10,000-rule backlog at 20–30 MB more peak RSS
        // (docs/BENCHMARKS.md, "What changed"), the memory a larger write fold spends better.
        conn.pragma_update(None, "cache_size", -8192)?;
        conn.execute_batch(SCHEMA)?;
        // Files from before evidence rows named their rules: add the column (old rows keep
        // NULL there and are read through `evidence_refs`).
        let has_rules: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('evidence_articles') WHERE name = 'rules'")?
            .exists([])?;
        if !has_rules {
            conn.execute_batch("ALTER TABLE evidence_articles ADD COLUMN rules TEXT")?;
        }
        // Files from before story rows named the rules that counted them: add the column
        // (old rows keep NULL: those stories read back as counted by no rule yet).
        let has_story_rules: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('stories') WHERE name = 'rules'")?
            .exists([])?;
        if !has_story_rules {
            conn.execute_batch("ALTER TABLE stories ADD COLUMN rules BLOB")?;
        }
        // Files from before quiet hours: add the column (NULL: never held).
        let has_held: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('outbox') WHERE name = 'held_ms'")?
            .exists([])?;
        if !has_held {
            conn.execute_batch("ALTER TABLE outbox ADD COLUMN held_ms INTEGER")?;
        }
        Ok(Store { conn })
    }

    /// Checks that the file can be written (for readiness).
    pub fn writable(&self) -> bool {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?1)",
                params![now_ms().to_string()],
            )
            .is_ok()
    }

    /// Writes one batch's effects and the offsets that produced them, atomically.
    /// `deliveries` are (event id, channel) rows for the outbox.
    pub fn commit(
        &mut self,
        c: &Changes,
        offsets: &[(String, i32, i64)],
        deliveries: &[(String, String)],
    ) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        write_changes(&tx, c, offsets, deliveries)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces everything stored of rules `ids` (state and buckets) by `c`'s rows, in one
    /// transaction (`vigie state import`, [`crate::transfer`]).
    ///
    /// `told` are deliveries made by the state's previous owner (event id, channel): written
    /// as `sent`, so that nothing sends them again and the channels count as told of their
    /// alerts.
    pub fn replace_rules(
        &mut self,
        ids: &[String],
        c: &Changes,
        told: &[(String, String)],
    ) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.execute("DELETE FROM buckets WHERE rule = ?1", [id])?;
            tx.execute("DELETE FROM rule_state WHERE rule = ?1", [id])?;
            // The rule's evidence goes too, or its alerts would list each top article
            // twice: once as counted here, once as imported. An article other rules
            // keep stays, without this rule in its list.
            tx.execute("DELETE FROM evidence WHERE rule = ?1", [id])?;
            tx.execute("DELETE FROM evidence_refs WHERE rule = ?1", [id])?;
            tx.execute(
                "UPDATE evidence_articles SET rules = \
                 (SELECT json_group_array(value) FROM json_each(rules) WHERE value <> ?1) \
                 WHERE rules IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(rules) WHERE value = ?1)",
                [id],
            )?;
        }
        tx.execute("DELETE FROM evidence_articles WHERE rules = '[]'", [])?;
        write_changes(&tx, c, &[], &[])?;
        let now = now_ms();
        for (event, channel) in told {
            tx.execute(
                "INSERT OR IGNORE INTO outbox (event_id, channel, status, next_attempt_ms, created_ms, done_ms) \
                 VALUES (?1, ?2, 'sent', ?3, ?3, ?3)",
                params![event, channel, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// One rule's buckets from `since` on, oldest first, with their sources.
    pub fn rule_buckets(&self, rule: &str, since: i64) -> Result<Vec<(i64, Bucket)>, StateError> {
        let mut st = self.conn.prepare(
            "SELECT bucket, articles, stories, sources FROM buckets \
             WHERE rule = ?1 AND bucket >= ?2 ORDER BY bucket",
        )?;
        let rows = st.query_map(params![rule, since], |r| Ok((r.get(0)?, bucket_at(r, 1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Writes one batch's (or fold's) changes, its offsets and its outbox rows in `tx`.
fn write_changes(
    tx: &rusqlite::Transaction,
    c: &Changes,
    offsets: &[(String, i32, i64)],
    deliveries: &[(String, String)],
) -> Result<(), StateError> {
    write_rows(
        tx,
        "OR REPLACE INTO buckets (rule, bucket, articles, stories, sources)",
        5,
        &c.latest_buckets(),
        |st, at, (rule, b, bucket)| {
            st.raw_bind_parameter(at, &**rule)?;
            st.raw_bind_parameter(at + 1, b)?;
            st.raw_bind_parameter(at + 2, bucket.articles)?;
            st.raw_bind_parameter(at + 3, bucket.stories)?;
            st.raw_bind_parameter(at + 4, encode_hashes(&bucket.sources))?;
            Ok(())
        },
    )?;
    let mut put_rule =
        tx.prepare_cached("INSERT OR REPLACE INTO rule_state (rule, state) VALUES (?1, ?2)")?;
    for (rule, st) in c.latest_rules() {
        put_rule.execute(params![rule, serde_json::to_string(st)?])?;
    }
    write_rows(
        tx,
        "INTO stories (hash, title, at, rules)",
        4,
        &c.stories,
        |st, at, row| {
            let k = &row.key;
            let rules = (!row.counted_by.is_empty()).then(|| encode_hashes(&row.counted_by));
            st.raw_bind_parameter(at, k.simhash as i64)?;
            st.raw_bind_parameter(at + 1, k.title.map(|t| t as i64))?;
            st.raw_bind_parameter(at + 2, k.at)?;
            st.raw_bind_parameter(at + 3, rules)?;
            Ok(())
        },
    )?;
    // Evidence: one row per article, naming the rules that keep it. (One row per
    // rule with the article's JSON made the evidence most of what a batch wrote:
    // an article matched by 35 rules was serialized and stored 35 times. A row per
    // rule referring to the article was still a million rows per 100,000 articles
    // at 10,000 rules, more than the buckets.)
    let mut order: Vec<(i64, &Arc<ArticleRef>, Vec<&str>)> = Vec::new();
    let mut seen: HashMap<*const ArticleRef, usize> = HashMap::new();
    for (rule, b, a) in &c.evidence {
        let i = *seen.entry(Arc::as_ptr(a)).or_insert_with(|| {
            order.push((*b, a, Vec::new()));
            order.len() - 1
        });
        order[i].2.push(&**rule);
    }
    write_rows(
        tx,
        "INTO evidence_articles (bucket, article, rules)",
        3,
        &order,
        |st, at, (b, a, rules)| {
            st.raw_bind_parameter(at, b)?;
            st.raw_bind_parameter(at + 1, serde_json::to_string(&***a)?)?;
            st.raw_bind_parameter(at + 2, serde_json::to_string(rules)?)?;
            Ok(())
        },
    )?;
    let mut put_volume =
        tx.prepare_cached("INSERT OR REPLACE INTO volume (bucket, articles) VALUES (?1, ?2)")?;
    for (b, n) in c.latest_volume() {
        put_volume.execute(params![b, *n as i64])?;
    }
    let now = now_ms();
    let mut put_event = tx.prepare_cached("INSERT OR IGNORE INTO alert_events (event_id, alert_id, rule, kind, at, created_at, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
    for e in &c.events {
        put_event.execute(params![
            e.event_id,
            e.alert_id,
            e.rule,
            e.kind.as_str(),
            e.at.timestamp(),
            now,
            serde_json::to_string(e)?
        ])?;
    }
    let mut put_outbox = tx.prepare_cached("INSERT OR IGNORE INTO outbox (event_id, channel, next_attempt_ms, created_ms) VALUES (?1, ?2, ?3, ?3)")?;
    for (event, channel) in deliveries {
        put_outbox.execute(params![event, channel, now])?;
    }
    let mut put_offset = tx.prepare_cached("INSERT INTO offsets (topic, partition, next_offset) VALUES (?1, ?2, ?3) ON CONFLICT (topic, partition) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)")?;
    for (topic, partition, next) in offsets {
        put_offset.execute(params![topic, partition, next])?;
    }
    if let Some(feed) = &c.feed {
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('feed', ?1)",
            params![serde_json::to_string(feed)?],
        )?;
    }
    if c.watermark != i64::MIN {
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('watermark', ?1)",
            params![c.watermark.to_string()],
        )?;
    }
    Ok(())
}

impl Store {
    /// Stored next offsets by (topic, partition).
    pub fn offsets(&self) -> Result<HashMap<(String, i32), i64>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT topic, partition, next_offset FROM offsets")?;
        let rows = st.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, i32>(1)?),
                r.get::<_, i64>(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn watermark(&self) -> Result<Option<i64>, StateError> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'watermark'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    /// The feed's volume baseline, if one was saved.
    pub fn feed_state(&self) -> Result<Option<FeedState>, StateError> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'feed'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(match v {
            Some(json) => Some(serde_json::from_str(&json)?),
            None => None,
        })
    }

    /// Rule states.
    pub fn rule_states(&self) -> Result<Vec<(String, RuleState)>, StateError> {
        let mut st = self.conn.prepare("SELECT rule, state FROM rule_state")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            out.push((id, serde_json::from_str(&json)?));
        }
        Ok(out)
    }

    /// Buckets of all rules from `since` on.
    pub fn buckets_since(&self, since: i64) -> Result<Vec<(String, i64, Bucket)>, StateError> {
        let mut st = self.conn.prepare(
            "SELECT rule, bucket, articles, stories, sources FROM buckets WHERE bucket >= ?1",
        )?;
        let rows = st.query_map([since], |r| Ok((r.get(0)?, r.get(1)?, bucket_at(r, 2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One rule's buckets from `since` on: (start, articles, stories).
    pub fn rule_series(&self, rule: &str, since: i64) -> Result<Vec<(i64, u32, u32)>, StateError> {
        let mut st = self.conn.prepare("SELECT bucket, articles, stories FROM buckets WHERE rule = ?1 AND bucket >= ?2 ORDER BY bucket")?;
        let rows = st.query_map(params![rule, since], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Story rows from `since` on, in the order they were written.
    pub fn stories_since(&self, since: i64) -> Result<Vec<StoryRow>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT hash, title, at, rules FROM stories WHERE at >= ?1 ORDER BY rowid")?;
        let rows = st.query_map([since], |r| {
            Ok(StoryRow {
                key: StoryKey {
                    simhash: r.get::<_, i64>(0)? as u64,
                    title: r.get::<_, Option<i64>>(1)?.map(|t| t as u64),
                    at: r.get(2)?,
                },
                counted_by: r
                    .get::<_, Option<Vec<u8>>>(3)?
                    .map_or_else(Vec::new, |b| decode_hashes(&b)),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Evidence from `since` on, each article read once and shared by the rules that kept
    /// it. Rows of the two older layouts (a reference row per rule; a copy per rule) are
    /// still read, so an upgrade keeps the evidence of open alerts.
    pub fn evidence_since(
        &self,
        since: i64,
    ) -> Result<Vec<(String, i64, Arc<ArticleRef>)>, StateError> {
        let mut out = Vec::new();
        let mut st = self.conn.prepare(
            "SELECT bucket, article, rules FROM evidence_articles \
             WHERE bucket >= ?1 AND rules IS NOT NULL ORDER BY bucket, id",
        )?;
        let rows = st.query_map([since], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (b, json, rules) = row?;
            let article = Arc::new(serde_json::from_str::<ArticleRef>(&json)?);
            for rule in serde_json::from_str::<Vec<String>>(&rules)? {
                out.push((rule, b, article.clone()));
            }
        }
        // The two older layouts: a reference row per rule, and a copy per rule.
        let mut st = self.conn.prepare(
            "SELECT r.rule, r.bucket, a.id, a.article FROM evidence_refs r \
             JOIN evidence_articles a ON a.id = r.article WHERE r.bucket >= ?1 \
             UNION ALL SELECT rule, bucket, NULL, article FROM evidence WHERE bucket >= ?1",
        )?;
        let rows = st.query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut read: HashMap<i64, Arc<ArticleRef>> = HashMap::new();
        for row in rows {
            let (rule, b, id, json) = row?;
            let article = match id.and_then(|id| read.get(&id)) {
                Some(a) => a.clone(),
                None => {
                    let a = Arc::new(serde_json::from_str::<ArticleRef>(&json)?);
                    if let Some(id) = id {
                        read.insert(id, a.clone());
                    }
                    a
                }
            };
            out.push((rule, b, article));
        }
        Ok(out)
    }

    pub fn volume_since(&self, since: i64) -> Result<Vec<(i64, u64)>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT bucket, articles FROM volume WHERE bucket >= ?1")?;
        let rows = st.query_map([since], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The alert events a query's rows hold (its one column: the stored payload).
    fn events_where(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<AlertEvent>, StateError> {
        let mut st = self.conn.prepare_cached(sql)?;
        let rows = st.query_map(params, |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// Alert events recorded at or after `since_ms` (processing time), oldest first.
    pub fn alerts_since(&self, since_ms: i64, limit: usize) -> Result<Vec<AlertEvent>, StateError> {
        self.events_where(
            "SELECT payload FROM alert_events WHERE created_at >= ?1 ORDER BY created_at, at LIMIT ?2",
            params![since_ms, limit as i64],
        )
    }

    /// Alert events whose event time is at or after `since` (unix seconds), oldest first.
    pub fn alerts_at_since(&self, since: i64, limit: usize) -> Result<Vec<AlertEvent>, StateError> {
        self.events_where(
            "SELECT payload FROM alert_events WHERE at >= ?1 ORDER BY at, created_at LIMIT ?2",
            params![since, limit as i64],
        )
    }

    /// A rule's alert events decided at or after `since` (event time, unix seconds), in the
    /// order decided, at most `limit` of the newest.
    pub fn alert_events_of_rule(
        &self,
        rule: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<AlertEvent>, StateError> {
        self.events_where(
            "SELECT payload FROM (SELECT payload, at, created_at FROM alert_events \
             WHERE rule = ?1 AND at >= ?2 ORDER BY at DESC, created_at DESC LIMIT ?3) \
             ORDER BY at, created_at",
            params![rule, since, limit as i64],
        )
    }

    /// The newest `limit` alert events decided at or after `since` (event time), newest
    /// first: what the dashboard lists, without reading a busy week's every event.
    pub fn latest_alerts(&self, since: i64, limit: usize) -> Result<Vec<AlertEvent>, StateError> {
        self.events_where(
            "SELECT payload FROM alert_events WHERE at >= ?1 ORDER BY at DESC, created_at DESC LIMIT ?2",
            params![since, limit as i64],
        )
    }

    /// The events of one alert (its onset, growth and end), in the order decided.
    pub fn alert_events_of(&self, alert_id: &str) -> Result<Vec<AlertEvent>, StateError> {
        self.events_where(
            "SELECT payload FROM alert_events WHERE alert_id = ?1 ORDER BY at, created_at",
            [alert_id],
        )
    }

    /// Where each channel's delivery of each of `event_ids` stands, by event id, each
    /// event's channels by name. One query for the lot.
    pub fn deliveries_of(
        &self,
        event_ids: &[&str],
    ) -> Result<HashMap<String, Vec<DeliveryStatus>>, StateError> {
        let mut st = self.conn.prepare_cached(
            "SELECT event_id, channel, status, attempts, last_error, held_ms FROM outbox \
             WHERE event_id IN (SELECT value FROM json_each(?1)) ORDER BY event_id, channel",
        )?;
        let ids = serde_json::to_string(event_ids)?;
        let rows = st.query_map([ids], |r| {
            Ok((
                r.get::<_, String>(0)?,
                DeliveryStatus {
                    channel: r.get(1)?,
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                    held_until: (r.get::<_, Option<i64>>(5)?)
                        .and_then(DateTime::<Utc>::from_timestamp_millis),
                },
            ))
        })?;
        let mut out: HashMap<String, Vec<DeliveryStatus>> = HashMap::new();
        for row in rows {
            let (event, d) = row?;
            out.entry(event).or_default().push(d);
        }
        Ok(out)
    }

    /// Outbox rows due now, oldest first, leaving out the rows `busy` (being sent) and the
    /// channels `full` (with as many sends in flight as they may have): so rows a hung
    /// receiver cannot take do not fill the `limit` and starve the other channels.
    pub fn due(
        &self,
        now_ms: i64,
        limit: usize,
        busy: &[i64],
        full: &[String],
    ) -> Result<Vec<Delivery>, StateError> {
        let mut sql = String::from(
            "SELECT o.id, o.event_id, o.channel, o.attempts, o.created_ms, e.payload, o.held_ms, \
             (SELECT s.status FROM outbox s WHERE s.event_id = e.alert_id || ':started' AND s.channel = o.channel) \
             FROM outbox o JOIN alert_events e ON e.event_id = o.event_id \
             WHERE o.status = 'pending' AND o.next_attempt_ms <= ?1",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![now_ms.into(), (limit as i64).into()];
        not_in(&mut sql, &mut args, "o.", busy, full);
        sql.push_str(" ORDER BY o.next_attempt_ms, o.id LIMIT ?2");
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, event_id, channel, attempts, created_ms, payload, held_ms, start) = row?;
            let mut event: AlertEvent = serde_json::from_str(&payload)?;
            // Told of the start: it went out, or it is still to go (in this round, or
            // held with this row for the same release).
            event.unannounced = event.kind != crate::detect::EventKind::Started
                && !matches!(start.as_deref(), Some("sent" | "pending"));
            out.push(Delivery {
                id,
                event_id,
                channel,
                attempts,
                created_ms,
                held_ms,
                event,
            });
        }
        Ok(out)
    }

    /// Earliest time a pending row becomes due, leaving out the rows `busy` (being sent)
    /// and the channels `full` (see [`Store::due`]).
    pub fn next_due_ms(&self, busy: &[i64], full: &[String]) -> Result<Option<i64>, StateError> {
        let mut sql =
            String::from("SELECT MIN(next_attempt_ms) FROM outbox WHERE status = 'pending'");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        not_in(&mut sql, &mut args, "", busy, full);
        Ok(self
            .conn
            .query_row(&sql, rusqlite::params_from_iter(args), |r| r.get(0))?)
    }

    pub fn mark_sent(&self, id: i64) -> Result<(), StateError> {
        self.conn.execute("UPDATE outbox SET status = 'sent', attempts = attempts + 1, done_ms = ?2, last_error = NULL WHERE id = ?1", params![id, now_ms()])?;
        Ok(())
    }

    pub fn mark_retry(&self, id: i64, next_ms: i64, error: &str) -> Result<(), StateError> {
        self.conn.execute("UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3 WHERE id = ?1", params![id, next_ms, error])?;
        Ok(())
    }

    /// Whether another event of alert `alert_id` than row `except` went, or is still to
    /// go, to `channel`: a channel with a floor is told an alert ended only if it was told
    /// of the alert.
    pub fn told_of_alert(
        &self,
        alert_id: &str,
        channel: &str,
        except: i64,
    ) -> Result<bool, StateError> {
        Ok(self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox o JOIN alert_events e ON e.event_id = o.event_id \
             WHERE e.alert_id = ?1 AND o.channel = ?2 AND o.id <> ?3 AND o.status IN ('sent', 'pending'))",
        )?
        .query_row(params![alert_id, channel, except], |r| r.get(0))?)
    }

    /// Holds a due row back until `until_ms`, when its channel's quiet hours end.
    pub fn hold(&self, id: i64, until_ms: i64) -> Result<(), StateError> {
        self.conn.execute("UPDATE outbox SET next_attempt_ms = ?2, held_ms = ?2 WHERE id = ?1 AND status = 'pending'", params![id, until_ms])?;
        Ok(())
    }

    /// Marks a due row `silenced`, not to be sent, for `why` (a silence, a channel's floor,
    /// quiet hours that drop), kept as its last error.
    pub fn mark_silenced(&self, id: i64, why: &str) -> Result<(), StateError> {
        self.conn.execute("UPDATE outbox SET status = 'silenced', done_ms = ?2, last_error = ?3 WHERE id = ?1 AND status = 'pending'", params![id, now_ms(), why])?;
        Ok(())
    }

    /// Stores a checked silence; returns it with its id.
    pub fn add_silence(&self, s: &crate::silence::SilenceSpec) -> Result<Silence, StateError> {
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO silences (rule, channel, starts_ms, ends_ms, comment, created_by, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![s.rule, s.channel, s.starts_at.timestamp_millis(), s.ends_at.timestamp_millis(), s.comment, s.created_by, now],
        )?;
        let id = self.conn.last_insert_rowid();
        Ok(self.silence(id)?.expect("the row just inserted"))
    }

    /// One silence by id.
    pub fn silence(&self, id: i64) -> Result<Option<Silence>, StateError> {
        Ok(self.silences_where("id = ?1", params![id])?.pop())
    }

    /// Silences that have not ended by `now_ms` (active or still to come), oldest first;
    /// with `ended_since`, also those that ended after it.
    pub fn silences(
        &self,
        now_ms: i64,
        ended_since: Option<i64>,
    ) -> Result<Vec<Silence>, StateError> {
        self.silences_where(
            "ends_ms > ?1",
            params![ended_since.unwrap_or(now_ms).min(now_ms)],
        )
    }

    /// Ends a silence now, or cancels one still to come (either stays listed as expired).
    /// False if there is no such silence or it had already ended.
    pub fn expire_silence(&self, id: i64) -> Result<bool, StateError> {
        let now = now_ms();
        let n = self.conn.execute(
            "UPDATE silences SET ends_ms = ?2, starts_ms = min(starts_ms, ?2) WHERE id = ?1 AND ends_ms > ?2",
            params![id, now],
        )?;
        Ok(n > 0)
    }

    fn silences_where(
        &self,
        cond: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<Silence>, StateError> {
        let ms = |v: i64| chrono::DateTime::from_timestamp_millis(v).unwrap_or_default();
        let mut st = self.conn.prepare(&format!(
            "SELECT id, rule, channel, starts_ms, ends_ms, comment, created_by, created_ms FROM silences WHERE {cond} ORDER BY id"
        ))?;
        let rows = st.query_map(args, |r| {
            Ok(Silence {
                id: r.get(0)?,
                spec: crate::silence::SilenceSpec {
                    rule: r.get(1)?,
                    channel: r.get(2)?,
                    starts_at: ms(r.get(3)?),
                    ends_at: ms(r.get(4)?),
                    comment: r.get(5)?,
                    created_by: r.get(6)?,
                },
                created_at: ms(r.get(7)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn mark_dead(&self, id: i64, error: &str) -> Result<(), StateError> {
        self.conn.execute("UPDATE outbox SET status = 'dead', attempts = attempts + 1, done_ms = ?2, last_error = ?3 WHERE id = ?1", params![id, now_ms(), error])?;
        Ok(())
    }

    pub fn outbox_stats(&self) -> Result<OutboxStats, StateError> {
        let mut total = OutboxStats::default();
        for s in self.outbox_stats_by_channel()?.values() {
            total.pending += s.pending;
            total.sent += s.sent;
            total.dead += s.dead;
            total.silenced += s.silenced;
            total.held += s.held;
        }
        Ok(total)
    }

    /// Outbox counts by status, per channel (`GET /api/channels`).
    pub fn outbox_stats_by_channel(&self) -> Result<HashMap<String, OutboxStats>, StateError> {
        let mut out: HashMap<String, OutboxStats> = HashMap::new();
        let mut st = self.conn.prepare_cached(
            "SELECT channel, status, COUNT(*), COUNT(CASE WHEN held_ms > ?1 THEN 1 END) \
             FROM outbox GROUP BY channel, status",
        )?;
        let rows = st.query_map([now_ms()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (channel, status, n, held) = row?;
            let s = out.entry(channel).or_default();
            match status.as_str() {
                "pending" => {
                    s.pending = n;
                    s.held = held;
                }
                "sent" => s.sent = n,
                "silenced" => s.silenced = n,
                _ => s.dead += n,
            }
        }
        Ok(out)
    }

    /// Dead-lettered deliveries with their last error, newest first.
    pub fn dead_deliveries(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>, StateError> {
        let mut st = self.conn.prepare("SELECT event_id, channel, COALESCE(last_error, '') FROM outbox WHERE status = 'dead' ORDER BY done_ms DESC LIMIT ?1")?;
        let rows = st.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes what no longer serves: buckets and volume older than `retention` before the
    /// watermark, evidence older than `evidence` (it only explains recent alerts), story
    /// hashes older than `stories`, finished outbox rows older than a week and silences that
    /// ended more than 30 days ago.
    pub fn prune(&self, retention: i64, evidence: i64, stories: i64) -> Result<usize, StateError> {
        let Some(wm) = self.watermark()? else {
            return Ok(0);
        };
        let mut n = 0;
        n += self
            .conn
            .execute("DELETE FROM buckets WHERE bucket < ?1", [wm - retention])?;
        n += self
            .conn
            .execute("DELETE FROM volume WHERE bucket < ?1", [wm - retention])?;
        for table in ["evidence", "evidence_refs", "evidence_articles"] {
            n += self.conn.execute(
                &format!("DELETE FROM {table} WHERE bucket < ?1"),
                [wm - evidence],
            )?;
        }
        n += self
            .conn
            .execute("DELETE FROM stories WHERE at < ?1", [wm - stories])?;
        n += self.conn.execute(
            "DELETE FROM outbox WHERE status != 'pending' AND done_ms < ?1",
            [now_ms() - 7 * 86_400_000],
        )?;
        n += self.conn.execute(
            "DELETE FROM silences WHERE ends_ms < ?1",
            [now_ms() - crate::silence::KEPT_AFTER_END_MS],
        )?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An evidence article published at t=300, first of its story.
    fn article(id: &str, title: &str) -> Arc<ArticleRef> {
        Arc::new(ArticleRef {
            id: id.into(),
            title: title.into(),
            url: None,
            source: None,
            published_at: chrono::DateTime::from_timestamp(300, 0).unwrap(),
            entities: vec![],
            countries: vec![],
            terms: vec![],
            new_story: true,
        })
    }

    /// Everything a state file holds that a batch's changes touch, in a comparable form.
    fn contents(s: &Store) -> String {
        let mut buckets = s.buckets_since(i64::MIN).unwrap();
        buckets.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut rules: Vec<(String, String)> = (s.rule_states().unwrap().into_iter())
            .map(|(id, st)| (id, serde_json::to_string(&st).unwrap()))
            .collect();
        rules.sort();
        let mut offsets: Vec<_> = s.offsets().unwrap().into_iter().collect();
        offsets.sort();
        let evidence: Vec<(String, i64, String)> = (s.evidence_since(i64::MIN).unwrap())
            .into_iter()
            .map(|(r, b, a)| (r, b, a.id.clone()))
            .collect();
        format!(
            "{buckets:?}\n{rules:?}\n{:?}\n{:?}\n{evidence:?}\n{offsets:?}\n{:?}\n{:?}",
            s.stories_since(i64::MIN).unwrap(),
            s.volume_since(i64::MIN).unwrap(),
            s.watermark().unwrap(),
            s.feed_state().unwrap().map(|f| f.learned_until),
        )
    }

    #[test]
    fn the_latest_alerts_come_newest_first_and_a_rules_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&d.path().join("s.db")).unwrap();
        let ev = |rule: &str, t: i64| {
            let mut e = crate::sink::test_event(chrono::DateTime::from_timestamp(t, 0).unwrap());
            (e.rule, e.event_id) = (rule.into(), format!("{rule}:{t}"));
            e
        };
        let changes = Changes {
            events: vec![
                ev("kz", 3000),
                ev("ua", 1000),
                ev("kz", 2000),
                ev("kz", 500),
            ],
            ..Default::default()
        };
        s.commit(&changes, &[], &[]).unwrap();
        let ids = |v: Vec<AlertEvent>| v.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.latest_alerts(900, 2).unwrap()),
            ["kz:3000", "kz:2000"]
        );
        assert_eq!(
            ids(s.latest_alerts(900, 10).unwrap()),
            ["kz:3000", "kz:2000", "ua:1000"]
        );
        assert_eq!(
            ids(s.alert_events_of_rule("kz", 0, 2).unwrap()),
            ["kz:2000", "kz:3000"]
        );
        assert_eq!(
            ids(s.alert_events_of_rule("kz", 0, 9).unwrap()),
            ["kz:500", "kz:2000", "kz:3000"]
        );
    }

    #[test]
    fn replacing_a_rule_drops_its_evidence_and_keeps_the_others() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&d.path().join("s.db")).unwrap();
        let shared = article("shared", "both rules keep it");
        let own = article("own", "only kz keeps it");
        let here = Changes {
            evidence: vec![
                ("kz".into(), 300, shared.clone()),
                ("almaty".into(), 300, shared),
                ("kz".into(), 300, own),
            ],
            ..Default::default()
        };
        s.commit(&here, &[], &[]).unwrap();
        let imported = Changes {
            evidence: vec![("kz".into(), 300, article("moved", "from the old owner"))],
            ..Default::default()
        };
        s.replace_rules(&["kz".into()], &imported, &[]).unwrap();
        let mut kept: Vec<(String, String)> = (s.evidence_since(i64::MIN).unwrap())
            .into_iter()
            .map(|(r, _, a)| (r, a.id.clone()))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                ("almaty".into(), "shared".into()),
                ("kz".into(), "moved".into())
            ]
        );
        let rows: i64 = (s.conn)
            .query_row("SELECT count(*) FROM evidence_articles", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2, "the article no rule keeps is deleted");
    }

    #[test]
    fn merged_changes_write_what_their_batches_write_in_turn() {
        let bucket = |articles: u32, sources: Vec<u64>| Bucket {
            articles,
            stories: articles,
            sources: sources.into(),
        };
        let rule = |learned: i64| RuleState {
            learned_until: learned,
            ..Default::default()
        };
        let batches = || {
            vec![
                Changes {
                    buckets: vec![
                        ("kz".into(), 300, bucket(1, vec![1])),
                        ("kz".into(), 600, bucket(1, vec![1])),
                    ],
                    rules: vec![("kz".into(), rule(0))],
                    stories: vec![StoryRow {
                        key: StoryKey {
                            simhash: 1,
                            title: None,
                            at: 300,
                        },
                        counted_by: vec![],
                    }],
                    volume: vec![(300, 4)],
                    evidence: vec![("kz".into(), 300, article("a", "title a"))],
                    feed: Some(FeedState {
                        learned_until: Some(0),
                        ..Default::default()
                    }),
                    watermark: 650,
                    ..Default::default()
                },
                Changes {
                    // The same bucket and rule again, with later values, and new ones.
                    buckets: vec![
                        ("kz".into(), 600, bucket(3, vec![1, 2])),
                        ("uz".into(), 600, bucket(1, vec![5])),
                    ],
                    rules: vec![("kz".into(), rule(300)), ("uz".into(), rule(300))],
                    stories: vec![StoryRow {
                        key: StoryKey {
                            simhash: 2,
                            title: Some(9),
                            at: 600,
                        },
                        counted_by: vec![4, 5],
                    }],
                    volume: vec![(300, 5), (600, 2)],
                    evidence: vec![
                        ("kz".into(), 600, article("b", "title b")),
                        ("uz".into(), 600, article("c", "title c")),
                    ],
                    feed: None,
                    watermark: 900,
                    ..Default::default()
                },
                Changes {
                    buckets: vec![("kz".into(), 900, bucket(1, vec![3]))],
                    volume: vec![(900, 1)],
                    watermark: 1000,
                    ..Default::default()
                },
            ]
        };
        let offsets = [
            vec![("a".to_string(), 0, 10), ("a".to_string(), 1, 4)],
            vec![("a".to_string(), 0, 12)],
            vec![("a".to_string(), 1, 7), ("b".to_string(), 0, 1)],
        ];
        let d = tempfile::tempdir().unwrap();
        let mut one_by_one = Store::open(&d.path().join("a.db")).unwrap();
        for (c, o) in batches().iter().zip(&offsets) {
            one_by_one.commit(c, o, &[]).unwrap();
        }
        let mut merged = batches().into_iter();
        let mut all = merged.next().unwrap();
        for c in merged {
            all.merge(c);
        }
        let mut all_offsets: Vec<(String, i32, i64)> = Vec::new();
        for (t, p, o) in offsets.iter().flatten().cloned() {
            match all_offsets.iter_mut().find(|x| x.0 == t && x.1 == p) {
                Some(x) => x.2 = x.2.max(o),
                None => all_offsets.push((t, p, o)),
            }
        }
        let mut at_once = Store::open(&d.path().join("b.db")).unwrap();
        at_once.commit(&all, &all_offsets, &[]).unwrap();
        let (a, b) = (contents(&one_by_one), contents(&at_once));
        assert!(
            a.contains("uz") && a.contains("[1, 2]"),
            "the comparison sees the rows: {a}"
        );
        assert_eq!(a, b);
    }

    #[test]
    fn bucket_rows_past_one_statement_are_all_written_with_their_latest_values() {
        // More rows than one statement takes (ROWS_PER_STATEMENT), and not a multiple of it, so
        // both the full statements and the remainder run; a folded later value of some of
        // them must win wherever its row lands.
        let rows = 2 * ROWS_PER_STATEMENT + 7;
        let bucket = |articles: u32, source: u64| Bucket {
            articles,
            stories: articles,
            sources: smallvec::smallvec![source],
        };
        let mut c = Changes {
            buckets: (0..rows)
                .map(|i| {
                    let rule: Arc<str> = format!("r{}", i % 5).into();
                    (rule, 300 * i as i64, bucket(1, i as u64))
                })
                .collect(),
            ..Default::default()
        };
        c.merge(Changes {
            buckets: (0..rows)
                .step_by(3)
                .map(|i| (format!("r{}", i % 5).into(), 300 * i as i64, bucket(9, 0)))
                .collect(),
            ..Default::default()
        });
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&d.path().join("s.db")).unwrap();
        s.commit(&c, &[], &[]).unwrap();
        let mut back = s.buckets_since(0).unwrap();
        back.sort_by_key(|(_, b, _)| *b);
        assert_eq!(back.len(), rows);
        for (i, (rule, b, got)) in back.iter().enumerate() {
            assert_eq!(
                (rule.as_str(), *b),
                (format!("r{}", i % 5).as_str(), 300 * i as i64)
            );
            let want = if i % 3 == 0 {
                bucket(9, 0)
            } else {
                bucket(1, i as u64)
            };
            assert_eq!(
                (got.articles, &got.sources[..]),
                (want.articles, &want.sources[..]),
                "row {i}"
            );
        }
    }

    #[test]
    fn commit_is_atomic_and_reloads() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s/state.db");
        let mut s = Store::open(&path).unwrap();
        let c = Changes {
            buckets: vec![(
                "kz".into(),
                300,
                Bucket {
                    articles: 3,
                    stories: 1,
                    // More than a bucket holds inline.
                    sources: smallvec::smallvec![7, 9, 11],
                },
            )],
            rules: vec![("kz".into(), RuleState::default())],
            stories: vec![StoryRow {
                key: StoryKey {
                    simhash: u64::MAX,
                    title: Some(3),
                    at: 300,
                },
                counted_by: vec![u64::MAX, 1],
            }],
            volume: vec![(300, 5)],
            events: vec![],
            evidence: vec![],
            feed: Some(FeedState {
                learned_until: Some(300),
                ..Default::default()
            }),
            watermark: 600,
            folded: false,
        };
        s.commit(&c, &[("articles".into(), 0, 42)], &[]).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.offsets().unwrap()[&("articles".to_string(), 0)], 42);
        assert_eq!(s.buckets_since(0).unwrap()[0].2.sources[..], [7, 9, 11]);
        assert_eq!(
            s.stories_since(0).unwrap(),
            vec![StoryRow {
                key: StoryKey {
                    simhash: u64::MAX,
                    title: Some(3),
                    at: 300
                },
                counted_by: vec![u64::MAX, 1],
            }]
        );
        assert_eq!(s.watermark().unwrap(), Some(600));
        assert_eq!(s.feed_state().unwrap().unwrap().learned_until, Some(300));
        assert!(s.writable());
        // Watermark 600: a retention of 200 s drops the bucket at 300, keeps nothing older.
        assert_eq!(s.prune(1000, 1000, 1000).unwrap(), 0);
        assert!(s.prune(200, 200, 200).unwrap() >= 3);
        assert!(s.buckets_since(0).unwrap().is_empty());
    }

    /// A state file from before evidence rows named their rules gets the column on open and
    /// takes new evidence.
    #[test]
    fn an_old_evidence_table_is_upgraded_on_open() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE evidence_articles (id INTEGER PRIMARY KEY, bucket INTEGER NOT NULL, article TEXT NOT NULL)",
            )
            .unwrap();
        let mut s = Store::open(&path).unwrap();
        let a = article("a1", "t");
        let c = Changes {
            evidence: vec![("kz".into(), 300, a.clone()), ("asia".into(), 300, a)],
            watermark: 600,
            ..Default::default()
        };
        s.commit(&c, &[], &[]).unwrap();
        let rules: Vec<String> = s
            .evidence_since(0)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(rules, ["kz", "asia"]);
        drop(s);
        Store::open(&path).unwrap(); // opening again finds the column and leaves it
    }

    /// An outbox from before quiet hours gains `held_ms` on open; its rows read as never
    /// held, and can be held.
    #[test]
    fn an_old_outbox_is_upgraded_on_open() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE outbox (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, channel TEXT NOT NULL,
                    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, done_ms INTEGER,
                    last_error TEXT, UNIQUE (event_id, channel))",
            )
            .unwrap();
        let mut s = Store::open(&path).unwrap();
        let e = crate::sink::test_event(Utc::now());
        let c = Changes {
            events: vec![e.clone()],
            watermark: i64::MIN,
            ..Default::default()
        };
        s.commit(&c, &[], &[(e.event_id.clone(), "desk".into())])
            .unwrap();
        let due = s.due(now_ms(), 10, &[], &[]).unwrap();
        assert_eq!((due.len(), due[0].held_ms), (1, None));
        let later = now_ms() + 60_000;
        s.hold(due[0].id, later).unwrap();
        assert!(s.due(now_ms(), 10, &[], &[]).unwrap().is_empty());
        assert_eq!(s.outbox_stats().unwrap().held, 1);
        assert_eq!(s.due(later, 10, &[], &[]).unwrap()[0].held_ms, Some(later));
        drop(s);
        Store::open(&path).unwrap();
    }

    fn of_rule(back: &[(String, i64, Arc<ArticleRef>)], rule: &str, id: &str) -> Arc<ArticleRef> {
        back.iter()
            .find(|(r, _, a)| r == rule && a.id == id)
            .map(|(_, _, a)| a.clone())
            .unwrap()
    }

    /// An article kept by several rules is stored once and comes back shared; rows of the
    /// two older layouts are still read after an upgrade.
    #[test]
    fn evidence_is_stored_once_per_article_and_read_back_shared() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&d.path().join("state.db")).unwrap();
        let article = |id: &str| ArticleRef {
            id: id.into(),
            title: format!("title {id}"),
            url: None,
            source: Some("example.org".into()),
            published_at: chrono::DateTime::from_timestamp(300, 0).unwrap(),
            entities: vec!["Tokaïev".into()],
            countries: vec!["KZ".into()],
            terms: vec!["kazakhstan".into()],
            new_story: true,
        };
        let shared = Arc::new(article("a1"));
        let c = Changes {
            evidence: vec![
                ("kz".into(), 300, shared.clone()),
                ("asia".into(), 300, shared.clone()),
                ("kz".into(), 300, Arc::new(article("a2"))),
            ],
            watermark: 600,
            ..Default::default()
        };
        s.commit(&c, &[], &[]).unwrap();
        s.conn
            .execute(
                "INSERT INTO evidence (rule, bucket, article) VALUES ('old', 300, ?1)",
                [serde_json::to_string(&article("a0")).unwrap()],
            )
            .unwrap();
        let stored: i64 = s
            .conn
            .query_row("SELECT count(*) FROM evidence_articles", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 2);
        // The reference-per-rule layout of the previous version.
        s.conn
            .execute(
                "INSERT INTO evidence_articles (id, bucket, article) VALUES (99, 300, ?1)",
                [serde_json::to_string(&article("a9")).unwrap()],
            )
            .unwrap();
        s.conn
            .execute_batch(
                "INSERT INTO evidence_refs (rule, bucket, article) VALUES ('ref', 300, 99)",
            )
            .unwrap();
        let back = s.evidence_since(0).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(*of_rule(&back, "ref", "a9"), article("a9"));
        let of = |rule: &str, id: &str| of_rule(&back, rule, id);
        assert!(Arc::ptr_eq(&of("kz", "a1"), &of("asia", "a1")));
        assert_eq!(*of("kz", "a1"), article("a1"));
        assert_eq!(*of("old", "a0"), article("a0"));
        assert!(s.prune(100, 100, 100).unwrap() >= 4);
        assert!(s.evidence_since(0).unwrap().is_empty());
    }

    #[test]
    fn silences_are_listed_until_they_end_and_one_to_come_can_be_cancelled() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        let now = chrono::Utc::now();
        let spec = |from_h: i64, to_h: i64| crate::silence::SilenceSpec {
            rule: "kz".into(),
            channel: None,
            starts_at: now + chrono::Duration::hours(from_h),
            ends_at: now + chrono::Duration::hours(to_h),
            comment: "why".into(),
            created_by: None,
        };
        let active = s.add_silence(&spec(-1, 2)).unwrap();
        let later = s.add_silence(&spec(5, 9)).unwrap();
        let ms = now.timestamp_millis();
        let ids = |list: Vec<Silence>| list.iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(s.silences(ms, None).unwrap()), [active.id, later.id]);
        // Cancelling one still to come ends it now: expired, not pending until it starts.
        assert!(s.expire_silence(later.id).unwrap());
        let after = chrono::Utc::now() + chrono::Duration::milliseconds(1);
        let cancelled = s.silence(later.id).unwrap().unwrap();
        assert_eq!(
            cancelled.state(after),
            crate::silence::SilenceState::Expired
        );
        assert_eq!(
            ids(s.silences(after.timestamp_millis(), None).unwrap()),
            [active.id]
        );
        let day_ago = ms - 86_400_000;
        assert_eq!(
            ids(s.silences(after.timestamp_millis(), Some(day_ago)).unwrap()),
            [active.id, later.id]
        );
        assert!(!s.expire_silence(later.id).unwrap());
        assert!(!s.expire_silence(12345).unwrap());
    }
}
