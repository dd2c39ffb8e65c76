//! Service configuration: `DIR/vigie.toml`, overridable from the environment.
//!
//! Every key can be overridden as `VIGIE_<SECTION>__<KEY>` (double underscore between
//! levels, any depth: `VIGIE_KAFKA__PROPERTIES__SECURITY_PROTOCOL` is not supported for
//! dotted librdkafka names, use `VIGIE_KAFKA__PROPERTIES` with a TOML inline table instead).
//! Values are read as TOML when they parse (`5`, `true`, `["a"]`), else as strings.
//!
//! We read TOML with the `toml` crate directly rather than through figment because errors
//! must name the file, line and column of the offending key, which figment's merged
//! providers no longer know.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::{DetectorConfig, EventKind};

/// A problem with a configuration, rule or entity file, located when possible.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", location(.file, .line, .column))]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

fn location(file: &Option<PathBuf>, line: &Option<usize>, column: &Option<usize>) -> String {
    match (file, line, column) {
        (Some(f), Some(l), Some(c)) => format!("{}:{l}:{c}: ", f.display()),
        (Some(f), Some(l), None) => format!("{}:{l}: ", f.display()),
        (Some(f), None, _) => format!("{}: ", f.display()),
        _ => String::new(),
    }
}

impl ConfigError {
    pub fn in_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: Some(file.to_path_buf()),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// Locates `message` at byte `offset` of `text`.
    pub fn at_offset(file: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_col(text, offset);
        ConfigError {
            file: Some(file.to_path_buf()),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// Turns a `toml` error into a located one, with a "did you mean" hint for unknown keys.
    pub fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> Self {
        let message = with_hint(err.message());
        match err.span() {
            Some(span) => Self::at_offset(file, text, span.start, message),
            None => Self::in_file(file, message),
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Adds "did you mean `x`?" to serde's "unknown field `y`, expected one of ..." messages.
pub fn with_hint(message: &str) -> String {
    let message = message.trim_end().to_string();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((unknown, rest)) = rest.split_once('`') else {
        return message;
    };
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .map(|e| (strsim::jaro_winkler(unknown, e), *e))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, e)) => format!("{message}; did you mean `{e}`?"),
        None => message,
    }
}

/// A secret value: given inline, read from a file, or from the environment. Never printed.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Resolves a secret given inline, or as `<name>_file` (a path) or `<name>_env` (a variable).
pub fn resolve_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    env: &Option<String>,
    what: &str,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::in_file(path, format!("cannot read {what}: {e}")))?;
        return Ok(Some(Secret(
            text.trim_end_matches(['\n', '\r']).to_string(),
        )));
    }
    if let Some(var) = env {
        let v = std::env::var(var).map_err(|_| ConfigError {
            file: None,
            line: None,
            column: None,
            message: format!("{what}: environment variable {var} is not set"),
        })?;
        return Ok(Some(Secret(v)));
    }
    Ok(None)
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub http: HttpConfig,
    pub state: StateConfig,
    pub engine: EngineConfig,
    pub detector: DetectorConfig,
    pub matching: MatchingConfig,
    pub alerts: AlertsConfig,
    pub smtp: Option<SmtpConfig>,
    pub channels: BTreeMap<String, ChannelConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// The article topic.
    pub topic: String,
    pub group_id: String,
    /// Where a group with no stored offset starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Dead-letter topic; empty means `<topic>.dlq`.
    pub dlq_topic: String,
    /// Largest accepted message, bytes.
    pub max_message_bytes: usize,
    /// Records handled per state transaction (at most).
    pub batch_size: usize,
    /// How long a batch may wait to fill before it is processed anyway.
    pub batch_timeout_ms: u64,
    /// Passed verbatim to librdkafka (TLS, SASL, timeouts...).
    pub properties: BTreeMap<String, String>,
    /// With a fresh state file, first replay the topic's history from this point (an age
    /// such as `7d`, or a time) so the baselines start warm. `vigie run --warmup-from`.
    pub warmup_from: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "articles".into(),
            group_id: "vigie".into(),
            auto_offset_reset: "earliest".into(),
            dlq_topic: String::new(),
            max_message_bytes: crate::article::DEFAULT_MAX_MESSAGE_BYTES,
            batch_size: 1000,
            batch_timeout_ms: 100,
            warmup_from: None,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn dlq_topic(&self) -> String {
        if self.dlq_topic.is_empty() {
            format!("{}.dlq", self.topic)
        } else {
            self.dlq_topic.clone()
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the health/metrics/API server; empty disables it.
    pub listen: String,
    /// Bearer token required by `/api/*` when set.
    pub api_token: Option<Secret>,
    pub api_token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            api_token: None,
            api_token_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// The SQLite state file; relative paths are relative to the working directory.
    pub path: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: PathBuf::from("var/vigie.db"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Width of a count bucket.
    pub bucket_minutes: u32,
    /// Articles older than the watermark minus this are too late to count.
    pub allowed_lateness_minutes: u32,
    /// How long bucket counts are kept in the state file.
    pub retention_days: u32,
    /// Articles published within this many hours of each other with near-identical
    /// text count as one story.
    pub story_window_hours: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            bucket_minutes: 5,
            allowed_lateness_minutes: 60,
            retention_days: 35,
            story_window_hours: 48,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchingConfig {
    /// Match a person's surname alone (capitalized) as a mention.
    pub surname_only: bool,
}

impl Default for MatchingConfig {
    fn default() -> Self {
        MatchingConfig { surname_only: true }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Channels for rules that name none.
    pub default_notify: Vec<String>,
    /// Give up delivering after this long.
    pub give_up_after_hours: u32,
    /// Longest wait between two delivery attempts (backoff doubles from 0.5 s up to this).
    pub retry_max_secs: u64,
    /// Where people reach the dashboard (`https://vigie.example.org`, behind a proxy
    /// perhaps): alerts then link to their rule's page there.
    pub dashboard_url: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            default_notify: vec!["log".into()],
            give_up_after_hours: 24,
            retry_max_secs: 600,
            dashboard_url: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_smtp_tls")]
    pub tls: SmtpTls,
    pub from: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Accept invalid certificates (testing only).
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_tls() -> SmtpTls {
    SmtpTls::Starttls
}
fn default_timeout_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Email,
    Webhook,
    Log,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    /// Email recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Webhook endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// HMAC key for `X-Vigie-Signature`.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Body template preset: `vigie` (default JSON), `slack`, `teams`.
    #[serde(default)]
    pub preset: Option<String>,
    /// Accept invalid TLS certificates (testing only).
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
    /// Alert text overrides for this channel (a rule's own win).
    #[serde(default)]
    pub templates: crate::sink::render::Templates,
    /// Events arriving within this many seconds go out as one notification (0: each alone).
    #[serde(default)]
    pub group_wait_secs: u64,
    /// Which alert events this channel is told of: all three by default; `["started"]`
    /// for a pager that wants onsets only, `["started", "updated"]` to skip the resolved
    /// message (Alertmanager's `send_resolved = false`).
    #[serde(default = "all_event_kinds")]
    pub events: Vec<EventKind>,
    /// Recurring times when this channel is not notified (`crate::quiet`): deliveries
    /// falling due then wait for the end (`quiet_action = "hold"`) or are dropped.
    #[serde(default)]
    pub quiet_hours: Vec<crate::quiet::QuietWindow>,
    /// The time zone `quiet_hours` are read in (IANA name, e.g. `Europe/Paris`).
    #[serde(default)]
    pub timezone: Option<chrono_tz::Tz>,
    #[serde(default)]
    pub quiet_action: crate::quiet::QuietAction,
    /// Times of day (in `timezone`) this channel gets one notification of everything
    /// since the last (`crate::quiet::DigestTime`), instead of each event as it happens.
    #[serde(default)]
    pub digest: Vec<crate::quiet::DigestTime>,
    /// Only alerts at least this many times their expectation (`ratio`) reach this
    /// channel: a director told of the big surges only, beside an analyst told of all.
    #[serde(default)]
    pub min_ratio: Option<f64>,
    /// Only alerts with at least this many stories in their window reach this channel.
    #[serde(default)]
    pub min_stories: Option<u64>,
}

impl ChannelConfig {
    /// The channel's floor, when it has one.
    pub fn floor(&self) -> Option<crate::sink::outbox::Floor> {
        (self.min_ratio.is_some() || self.min_stories.is_some()).then_some(
            crate::sink::outbox::Floor {
                min_ratio: self.min_ratio,
                min_stories: self.min_stories,
            },
        )
    }

    /// The channel's digest schedule, when it has one.
    pub fn digest(&self) -> Option<crate::quiet::Digest> {
        (!self.digest.is_empty()).then(|| crate::quiet::Digest {
            times: self.digest.clone(),
            tz: self.timezone.unwrap_or(chrono_tz::UTC),
        })
    }

    /// The channel's quiet hours, when it has any.
    pub fn quiet(&self) -> Option<crate::quiet::QuietHours> {
        (!self.quiet_hours.is_empty()).then(|| crate::quiet::QuietHours {
            windows: self.quiet_hours.clone(),
            tz: self.timezone.unwrap_or(chrono_tz::UTC),
            action: self.quiet_action,
        })
    }
}

fn all_event_kinds() -> Vec<EventKind> {
    vec![EventKind::Started, EventKind::Updated, EventKind::Resolved]
}

impl Config {
    /// Loads `DIR/vigie.toml` (defaults when absent) and applies environment overrides.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(dir, &vars)
    }

    pub fn load_with_env(dir: &Path, vars: &[(String, String)]) -> Result<Config, ConfigError> {
        let file = dir.join("vigie.toml");
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ConfigError::in_file(&file, format!("cannot read: {e}"))),
        };
        // First pass on the text itself, for errors located by line.
        toml::from_str::<Config>(&text).map_err(|e| ConfigError::from_toml(&file, &text, &e))?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::from_toml(&file, &text, &e))?;
        let mut applied = Vec::new();
        for (name, value) in vars {
            let Some(path) = name.strip_prefix("VIGIE_") else {
                continue;
            };
            if !path.contains("__") {
                continue; // VIGIE_LOG and friends are not config keys.
            }
            let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
            set_path(&mut table, &keys, parse_env_value(value));
            applied.push(name.clone());
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError {
                    file: Some(file.clone()),
                    line: None,
                    column: None,
                    message: format!(
                        "after environment overrides ({}): {}",
                        applied.join(", "),
                        with_hint(e.message())
                    ),
                })?;
        config.validate(&file)?;
        Ok(config)
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError::in_file(file, m));
        if !matches!(
            self.kafka.auto_offset_reset.as_str(),
            "earliest" | "latest" | "smallest" | "largest"
        ) {
            return err(format!(
                "kafka.auto_offset_reset must be `earliest` or `latest`, not `{}`",
                self.kafka.auto_offset_reset
            ));
        }
        if self.engine.bucket_minutes == 0 || 1440 % self.engine.bucket_minutes != 0 {
            return err("engine.bucket_minutes must divide a day (1, 5, 10, 15, 30, 60...)".into());
        }
        if let Some(url) = &self.alerts.dashboard_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return err(format!(
                    "alerts.dashboard_url must be an http or https address, not `{url}`"
                ));
            }
        }
        for name in &self.alerts.default_notify {
            if name != "log" && !self.channels.contains_key(name) {
                return err(format!(
                    "alerts.default_notify names unknown channel `{name}`"
                ));
            }
        }
        for (name, ch) in &self.channels {
            match ch.kind {
                ChannelKind::Email if ch.to.is_empty() => {
                    return err(format!("channel `{name}`: an email channel needs `to`"))
                }
                ChannelKind::Email if self.smtp.is_none() => {
                    return err(format!(
                        "channel `{name}`: email channels need an [smtp] section"
                    ))
                }
                ChannelKind::Webhook if ch.url.is_none() => {
                    return err(format!("channel `{name}`: a webhook channel needs `url`"))
                }
                _ => {}
            }
            if let Err(e) = ch.templates.validate() {
                return err(format!("channel `{name}`: {e}"));
            }
            if ch.events.is_empty() {
                return err(format!(
                    "channel `{name}`: `events` is empty, so it would never be told anything (started, updated, resolved)"
                ));
            }
            if ch.min_ratio.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return err(format!(
                    "channel `{name}`: min_ratio must be a positive number"
                ));
            }
            if let Some(Err(e)) = ch.quiet().map(|q| q.check()) {
                return err(format!("channel `{name}`: {e}"));
            }
            if let Some(p) = &ch.preset {
                if !matches!(p.as_str(), "vigie" | "slack" | "teams") {
                    return err(format!(
                        "channel `{name}`: unknown preset `{p}` (vigie, slack, teams)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Channel names known to this config, `log` always included.
    pub fn channel_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.channels.keys().cloned().collect();
        if !names.iter().any(|n| n == "log") {
            names.push("log".into());
        }
        names
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // `toml` parses documents, not bare values; wrap it as one key.
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    let (first, rest) = keys
        .split_first()
        .expect("split on __ yields at least one key");
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return;
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(t) = entry {
        set_path(t, rest, value);
    }
}

/// Parses a span of time as the command line and the API write it: `90m`, `36h`, `3d` or
/// `30s`, into seconds. None for anything else (a negative or overflowing number too).
pub fn parse_span(v: &str) -> Option<i64> {
    let v = v.trim();
    let unit = v.chars().last()?;
    // Split after the last character, not its last byte: `7é` must be refused, not panic.
    let n: i64 = v[..v.len() - unit.len_utf8()].parse().ok()?;
    if n < 0 {
        return None;
    }
    match unit {
        'd' => n.checked_mul(86_400),
        'h' => n.checked_mul(3_600),
        'm' => n.checked_mul(60),
        's' => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(text: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vigie.toml"), text).unwrap();
        d
    }

    #[test]
    fn unknown_key_names_file_line_and_hint() {
        let d = dir_with("[kafka]\nbrokers = \"x:1\"\ntopik = \"a\"\n");
        let e = Config::load_with_env(d.path(), &[]).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("did you mean `topic`"), "{e}");
        assert!(e.to_string().contains("vigie.toml:3:"), "{e}");
    }

    #[test]
    fn env_overrides_apply_and_are_typed() {
        let d = dir_with("[kafka]\nbrokers = \"x:1\"\n");
        let vars = vec![
            ("VIGIE_KAFKA__BROKERS".to_string(), "y:2".to_string()),
            ("VIGIE_KAFKA__BATCH_SIZE".to_string(), "7".to_string()),
            ("VIGIE_STATE__PATH".to_string(), "/tmp/s.db".to_string()),
            ("VIGIE_LOG".to_string(), "debug".to_string()),
        ];
        let c = Config::load_with_env(d.path(), &vars).unwrap();
        assert_eq!(c.kafka.brokers, "y:2");
        assert_eq!(c.kafka.batch_size, 7);
        assert_eq!(c.state.path, PathBuf::from("/tmp/s.db"));
    }

    #[test]
    fn bad_env_override_is_reported() {
        let d = dir_with("");
        let vars = vec![("VIGIE_KAFKA__TOPIK".to_string(), "a".to_string())];
        let e = Config::load_with_env(d.path(), &vars).unwrap_err();
        assert!(e.message.contains("VIGIE_KAFKA__TOPIK"), "{e}");
        assert!(e.message.contains("did you mean `topic`"), "{e}");
    }

    #[test]
    fn a_channel_names_the_event_kinds_it_is_told_of() {
        let channel = |events: &str| {
            let d = dir_with(&format!(
                "[channels.pager]\ntype = \"webhook\"\nurl = \"http://x\"\n{events}"
            ));
            Config::load_with_env(d.path(), &[])
        };
        let all = channel("").unwrap();
        assert_eq!(all.channels["pager"].events.len(), 3);
        let onsets = channel("events = [\"started\"]\n").unwrap();
        assert_eq!(onsets.channels["pager"].events, [EventKind::Started]);
        let e = channel("events = [\"begun\"]\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("begun"), "{e}");
        let e = channel("events = []\n").unwrap_err();
        assert!(e.message.contains("never be told anything"), "{e}");
    }

    #[test]
    fn quiet_hours_are_read_in_the_channels_zone_and_errors_name_their_line() {
        let channel = |quiet: &str| {
            let d = dir_with(&format!(
                "[channels.desk]\ntype = \"webhook\"\nurl = \"http://x\"\n{quiet}"
            ));
            Config::load_with_env(d.path(), &[])
        };
        assert_eq!(channel("").unwrap().channels["desk"].quiet(), None);
        let c = channel(
            "timezone = \"Asia/Almaty\"\nquiet_hours = [\"22:00-07:00\", \"sat,sun\"]\nquiet_action = \"drop\"\n",
        )
        .unwrap();
        let q = c.channels["desk"].quiet().unwrap();
        assert_eq!(q.describe(), "22:00-07:00, sat,sun (Asia/Almaty)");
        assert_eq!(q.action, crate::quiet::QuietAction::Drop);
        // Without a zone, UTC.
        let q = channel("quiet_hours = [\"22:00-07:00\"]\n")
            .unwrap()
            .channels["desk"]
            .quiet()
            .unwrap();
        assert_eq!(
            (q.tz, q.action),
            (chrono_tz::UTC, crate::quiet::QuietAction::Hold)
        );
        let floor = channel("min_ratio = 5\nmin_stories = 10\n")
            .unwrap()
            .channels["desk"]
            .floor();
        assert_eq!(
            floor,
            Some(crate::sink::outbox::Floor {
                min_ratio: Some(5.0),
                min_stories: Some(10)
            })
        );
        assert_eq!(channel("").unwrap().channels["desk"].floor(), None);
        assert_eq!(channel("").unwrap().channels["desk"].digest(), None);
        let d = channel("timezone = \"Europe/Paris\"\ndigest = [\"08:00\", \"fri 17:00\"]\n")
            .unwrap()
            .channels["desk"]
            .digest()
            .unwrap();
        assert_eq!(d.describe(), "08:00, fri 17:00 (Europe/Paris)");
        for (bad, line, says) in [
            (
                "min_ratio = 0\n",
                None,
                "min_ratio must be a positive number",
            ),
            ("min_stories = -1\n", Some(4), "expected u64"),
            ("quiet_hours = [\"22h-7h\"]\n", Some(4), "not a time"),
            (
                "\nquiet_hours = [\"sat\", \"dimanche\"]\n",
                Some(5),
                "`dimanche` is not a day",
            ),
            ("timezone = \"Europe/Pariss\"\n", Some(4), "Pariss"),
            ("quiet_action = \"later\"\n", Some(4), "later"),
            ("digest = [\"8h\"]\n", Some(4), "digest time `8h`"),
            (
                "quiet_hours = [\"mon-fri\", \"sat,sun\"]\n",
                None,
                "never deliver",
            ),
        ] {
            let e = channel(bad).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
            if line.is_some() {
                assert_eq!(e.line, line, "{bad}: {e}");
            }
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn spans_parse_without_panicking_on_any_input() {
        assert_eq!(parse_span("90m"), Some(5_400));
        assert_eq!(parse_span(" 36h "), Some(129_600));
        assert_eq!(parse_span("30s"), Some(30));
        for bad in [
            "",
            "h",
            "1.5h",
            "1e3s",
            "½d",
            "3дн",
            "-1s",
            "7é",
            "é",
            "99999999999999999d",
        ] {
            assert_eq!(parse_span(bad), None, "{bad}");
        }
    }
}
