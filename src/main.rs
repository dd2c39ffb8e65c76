//! The `vigie` command line. Thin: each subcommand parses its arguments and calls the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};

use vigie::article::{self, ParseContext};
use vigie::config::{Config, KafkaConfig};
use vigie::engine::{Engine, EngineSettings};
use vigie::pipeline::{ClockMode, Processor};
use vigie::source::file;
use vigie::telemetry::{init_logging, LogFormat};

/// mimalloc rather than glibc's malloc: 10–14% less CPU per article in `vigie run` (the
/// engine allocates and frees per batch from several threads); tuned for memory in
/// `service::tune_allocator`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vigie",
    version,
    about = "Watches a news feed on Kafka and alerts when coverage of a topic spikes"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: consume the feed, detect spikes, send alerts.
    Run {
        /// Config directory (vigie.toml, rules/, entities/).
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        /// With a fresh state file, first replay the topic's history from this point (an age
        /// such as 7d, or an RFC 3339 time) so the baselines start warm. Alerts decided in
        /// that history are recorded but only those of the last hour are sent.
        #[arg(long, value_name = "WHEN")]
        warmup_from: Option<String>,
    },
    /// Validate the configuration, rules and entities; exit 1 on any error.
    Check {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
    },
    /// Match articles (JSON, JSONL or raw text files, or - for stdin) and print one JSON line each.
    Match {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        inputs: Vec<PathBuf>,
    },
    /// Replay historical articles through the same engine as `run`; print alert events.
    Backtest {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        /// Articles: file, directory, - (stdin), or `kafka://TOPIC?from=WHEN` to read the
        /// topic of `[kafka] brokers` by timestamp without joining the group (WHEN: earliest,
        /// an RFC 3339 time, or an age such as 7d).
        #[arg(long, short)]
        input: Vec<PathBuf>,
        /// Write one PNG per rule (stories per bucket, expected band, alerts shaded) here.
        #[arg(long)]
        chart: Option<PathBuf>,
    },
    /// Score the detectors on a labelled synthetic stream (bursts of known onset and height)
    /// and print a Markdown table; see docs/DETECTION.md.
    Evaluate {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Topics (one rule each).
        #[arg(long, default_value_t = 40)]
        topics: usize,
        /// Write the labels (one JSON line per burst) to this file.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Write the stream's articles as JSONL to this file (for `vigie backtest`).
        #[arg(long)]
        articles: Option<PathBuf>,
        /// Print the scores as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Write every detector's `started` events (JSON lines with a `detector_name` field) here.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Also score the default detector with these settings, as in `[rule.spike]`
        /// (repeatable: `--set p_value=0.05 --set window_minutes=30`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Write a synthetic scenario feed as JSONL.
    Generate {
        #[arg(long, default_value = "kazakhstan-unrest")]
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// End of the feed (RFC 3339); default now.
        #[arg(long)]
        end: Option<String>,
        #[arg(long, default_value_t = 10)]
        days: u32,
        /// Background articles per hour.
        #[arg(long, default_value_t = 30.0)]
        rate: f64,
        /// Hours of surge before the end.
        #[arg(long, default_value_t = 48)]
        surge_hours: u32,
        /// Pad article bodies to about this many bytes.
        #[arg(long, default_value_t = 0)]
        body_bytes: usize,
        /// Output file (default stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Publish articles (JSON, JSONL or raw text files, or - for stdin) to a Kafka topic.
    Publish {
        #[arg(long, env = "VIGIE_KAFKA__BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, env = "VIGIE_KAFKA__TOPIC", default_value = "articles")]
        topic: String,
        /// Partitions when the topic has to be created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// How long each article may take to be acknowledged before it counts as failed.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        inputs: Vec<PathBuf>,
    },
    /// Send a test notification through channels now, to check their settings and
    /// receivers (past the outbox, silences and quiet hours); exit 1 if any fails.
    NotifyTest {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        /// The channel to test (repeatable); default every configured channel.
        #[arg(long)]
        channel: Vec<String>,
    },
    /// Move rules' learned state between state files: export from one vigie, import into
    /// another (stopped) one (docs/operations.md, "Moving a rule").
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Mute rules' notifications for a while, list silences, end one (docs/alerts.md).
    /// Works on the state file, beside a running service or not.
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
    },
}

#[derive(Subcommand)]
enum StateAction {
    /// Write the state of the rules matching a pattern as JSON lines.
    Export {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        /// Rule id or pattern (`*` any run of characters, `?` one).
        #[arg(long)]
        rule: String,
        /// Output file (default stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read an export (file, or - for stdin) into this config's state file, all or nothing.
    Import {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        /// Overwrite the state of rules this state file already has.
        #[arg(long)]
        replace: bool,
        /// Import a state that has learned more than 6 hours less than this file's watermark.
        #[arg(long)]
        force: bool,
        #[arg(default_value = "-")]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
enum SilenceAction {
    /// Add a silence; prints it as JSON.
    Add {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        /// Rule id or pattern (`*` any run of characters, `?` one).
        #[arg(long)]
        rule: String,
        /// Mute only this channel (default: every channel).
        #[arg(long)]
        channel: Option<String>,
        /// How long, from the start: 90m, 36h, 3d.
        #[arg(long = "for", value_name = "SPAN", conflicts_with = "until")]
        duration: Option<String>,
        /// Until this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// From this RFC 3339 time (default now).
        #[arg(long)]
        from: Option<String>,
        /// Why (required).
        #[arg(long)]
        comment: String,
        /// Who.
        #[arg(long)]
        by: Option<String>,
    },
    /// List silences not yet ended (with --expired, also those ended in the last 30 days),
    /// one JSON line each.
    List {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        #[arg(long)]
        expired: bool,
    },
    /// End a silence now.
    Expire {
        #[arg(long, short, default_value = "config")]
        config: PathBuf,
        id: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Batch commands print their results on stdout; keep their logs to warnings unless asked.
    let quiet = !matches!(cli.command, Command::Run { .. });
    if quiet && std::env::var_os("VIGIE_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        // librdkafka reports every failed connection; the commands report failures themselves.
        std::env::set_var("VIGIE_LOG", "warn,librdkafka=off,rdkafka=off");
    }
    init_logging(cli.log_format);
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            warmup_from,
        } => {
            vigie::service::tune_allocator();
            vigie::service::start_match_pool();
            let mut cfg = Config::load(&config)?;
            if warmup_from.is_some() {
                cfg.kafka.warmup_from = warmup_from;
            }
            runtime()?.block_on(async move {
                let (trigger, _) = vigie::shutdown::channel();
                let signal_trigger = trigger.clone();
                tokio::spawn(vigie::shutdown::on_signals(signal_trigger));
                vigie::service::run(config, cfg, trigger).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => Ok(check(&config)),
        Command::Silence { action } => silence(action),
        Command::State { action } => state(action),
        Command::NotifyTest { config, channel } => notify_test(&config, channel),
        Command::Match { config, inputs } => {
            let (_, matcher) = load(&config)?;
            let inputs = if inputs.is_empty() {
                vec![PathBuf::from("-")]
            } else {
                inputs
            };
            let mut out = std::io::stdout().lock();
            let mut bad = 0;
            for path in file::expand_inputs(&inputs)? {
                for payload in file::read_payloads(&path)? {
                    match article::parse(&payload, &ParseContext::new(Utc::now())) {
                        Ok(a) => {
                            let m = matcher.explain(&a);
                            let line = serde_json::json!({
                                "id": a.id, "title": a.title, "language": a.language, "published_at": a.published_at,
                                "countries": m.countries, "entities": m.entities, "rules": m.rules, "evidence": m.evidence,
                                "file": path,
                            });
                            writeln!(out, "{line}")?;
                        }
                        Err(e) => {
                            bad += 1;
                            eprintln!("{}: refused ({}): {e}", path.display(), e.code());
                        }
                    }
                }
            }
            Ok(if bad > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Backtest {
            config,
            input,
            chart,
        } => backtest(&config, &input, chart.as_deref()),
        Command::Evaluate {
            seed,
            days,
            topics,
            labels,
            articles,
            json,
            events,
            set,
        } => evaluate(seed, days, topics, (labels, articles, events), json, &set),
        Command::Generate {
            scenario,
            seed,
            end,
            days,
            rate,
            surge_hours,
            body_bytes,
            output,
        } => {
            let end = match end {
                Some(s) => article::parse_date(&s)
                    .ok_or_else(|| anyhow::anyhow!("--end must be an RFC 3339 date, not {s:?}"))?,
                None => Utc::now(),
            };
            let opts = vigie::generate::GenerateOptions {
                scenario,
                seed,
                end,
                days,
                rate,
                surge_hours,
                body_bytes,
            };
            let mut w: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut err = None;
            let n = vigie::generate::generate(&opts, &mut |a| {
                if err.is_none() {
                    if let Err(e) = writeln!(w, "{a}") {
                        err = Some(e);
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!(e))?;
            if let Some(e) = err {
                return Err(e.into());
            }
            w.flush()?;
            eprintln!("generated {n} articles");
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            brokers,
            topic,
            partitions,
            timeout_ms,
            inputs,
        } => {
            let inputs = if inputs.is_empty() {
                vec![PathBuf::from("-")]
            } else {
                inputs
            };
            let mut items = Vec::new();
            for path in file::expand_inputs(&inputs)? {
                for payload in file::read_payloads(&path)? {
                    let key = article::parse(&payload, &ParseContext::new(Utc::now()))
                        .ok()
                        .map(|a| a.id);
                    items.push((key, payload));
                }
            }
            let total = items.len();
            let mut k = KafkaConfig {
                brokers,
                topic: topic.clone(),
                ..Default::default()
            };
            k.properties
                .insert("message.timeout.ms".into(), timeout_ms.to_string());
            runtime()?.block_on(async move {
                let probe = k.clone();
                let wait = std::time::Duration::from_millis(timeout_ms.min(10_000));
                if let Err(e) = tokio::task::spawn_blocking(move || {
                    vigie::source::kafka::reachable(&probe, wait)
                })
                .await?
                {
                    eprintln!("error: {e}; {total} article(s) not delivered");
                    return Ok(ExitCode::FAILURE);
                }
                if let Err(e) = vigie::source::kafka::ensure_topic(&k, &topic, partitions).await {
                    eprintln!("warning: {e}");
                }
                let started = std::time::Instant::now();
                let mut last = 0;
                let (ok, err) = vigie::source::kafka::publish(&k, &topic, items, |n| {
                    if n >= last + 10_000 {
                        last = n;
                        eprintln!("published {n}/{total}");
                    }
                })
                .await;
                eprintln!(
                    "published {ok}/{total} articles to {topic} in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                match err {
                    Some(e) => {
                        eprintln!("error: {} article(s) not delivered: {e}", total - ok);
                        Ok(ExitCode::FAILURE)
                    }
                    None => Ok(ExitCode::SUCCESS),
                }
            })
        }
    }
}

fn check(dir: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    match vigie::rules::RuleSet::load(dir, &cfg.channel_names()) {
        Ok(set) => println!(
            "ok: {} rules, {} entities, {} channels",
            set.rules.len(),
            set.entities.len(),
            cfg.channels.len()
        ),
        Err(errs) => {
            for e in errs {
                eprintln!("error: {e}");
            }
            failed = true;
        }
    }
    // Notifiers hold connection pools that need a runtime even to be built.
    let built = runtime()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(async { vigie::service::notifiers(&cfg).map(|_| ()) }));
    if let Err(e) = built {
        eprintln!("error: {e}");
        failed = true;
    }
    // What each channel will be told and when: the settings easiest to get wrong unseen.
    let now = Utc::now();
    for (name, ch) in &cfg.channels {
        let kinds: Vec<&str> = ch.events.iter().map(|k| k.as_str()).collect();
        let mut line = format!("channel {name}: {}", kinds.join(", "));
        if ch.group_wait_secs > 0 {
            line.push_str(&format!("; grouped within {} s", ch.group_wait_secs));
        }
        if let Some(r) = ch.min_ratio {
            line.push_str(&format!("; alerts of {r}× their expectation or more"));
        }
        if let Some(n) = ch.min_stories {
            line.push_str(&format!("; alerts of {n} stories or more"));
        }
        if let Some(d) = ch.digest() {
            line.push_str(&format!("; a digest at {}", d.describe()));
            if let Some(next) = d.next(now) {
                line.push_str(&format!(", next {}", next.to_rfc3339()));
            }
        }
        if let Some(q) = ch.quiet() {
            let action = match q.action {
                vigie::quiet::QuietAction::Hold => "held",
                vigie::quiet::QuietAction::Drop => "dropped",
            };
            line.push_str(&format!("; quiet {} ({action})", q.describe()));
            if let Some(until) = q.until(now) {
                line.push_str(&format!(", quiet now until {}", until.to_rfc3339()));
            }
        }
        println!("{line}");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `vigie notify-test`: one line per channel, `ok` with the time the receiver took or
/// `failed` with its error.
fn notify_test(dir: &std::path::Path, mut channels: Vec<String>) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(dir)?;
    if channels.is_empty() {
        channels = cfg.channels.keys().cloned().collect();
    }
    anyhow::ensure!(
        !channels.is_empty(),
        "no channels in {}: nothing to test",
        dir.join("vigie.toml").display()
    );
    runtime()?.block_on(async {
        let senders = vigie::service::notifiers(&cfg).map_err(|e| anyhow::anyhow!(e))?;
        let mut failed = 0;
        for name in &channels {
            let Some(n) = senders.get(name) else {
                anyhow::bail!(
                    "no channel `{name}` (configured: {})",
                    cfg.channel_names().join(", ")
                );
            };
            match vigie::sink::send_test(n.as_ref(), Utc::now()).await {
                Ok(took) => println!("ok: {name}: accepted in {} ms", took.as_millis()),
                Err(e) => {
                    failed += 1;
                    let again = match e {
                        vigie::sink::SendError::Retryable { .. } => "an outage, would be retried",
                        vigie::sink::SendError::Permanent(_) => "refused, would not be retried",
                    };
                    println!("failed: {name}: {e} ({again})");
                }
            }
        }
        Ok(if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// The config and the matcher of a config directory; every rule error on its own line.
fn load(dir: &std::path::Path) -> anyhow::Result<(Config, vigie::matcher::Matcher)> {
    let cfg = Config::load(dir)?;
    let matcher = vigie::service::load_matcher(dir, &cfg).map_err(rule_errors)?;
    Ok((cfg, matcher))
}

/// Rule and entity errors as one error, each on its own line.
fn rule_errors<E: std::fmt::Display>(errs: Vec<E>) -> anyhow::Error {
    anyhow::anyhow!(errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n"))
}

fn evaluate(
    seed: u64,
    days: u32,
    topics: usize,
    (labels, articles, events): (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
    json: bool,
    set: &[String],
) -> anyhow::Result<ExitCode> {
    use vigie::evaluation;
    let mut contenders = evaluation::contenders();
    if !set.is_empty() {
        let overrides: vigie::detect::DetectorOverrides = toml::from_str(&set.join("\n"))
            .context("--set takes KEY=VALUE pairs of [rule.spike]")?;
        contenders.push((
            "vigie baseline (--set)",
            vigie::detect::DetectorConfig::default().with(&overrides),
        ));
    }
    let started = std::time::Instant::now();
    let stream = evaluation::synthesize(&evaluation::StreamOptions {
        seed,
        days,
        topics,
        ..Default::default()
    });
    let write_lines = |path: &PathBuf, lines: &mut dyn Iterator<Item = String>| {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for l in lines {
            writeln!(f, "{l}")?;
        }
        f.flush()?;
        anyhow::Ok(())
    };
    if let Some(path) = &labels {
        write_lines(
            path,
            &mut stream
                .labels
                .iter()
                .map(|l| serde_json::to_string(l).unwrap_or_default()),
        )?;
    }
    if let Some(path) = &articles {
        write_lines(
            path,
            &mut stream
                .articles
                .iter()
                .map(|a| serde_json::to_string(a).unwrap_or_default()),
        )?;
    }
    let prepared = evaluation::prepare(&stream);
    let mut scores = Vec::new();
    let mut lines = Vec::new();
    for (name, detector) in contenders {
        let started = evaluation::run(&prepared, &detector);
        for e in &started {
            let mut v = serde_json::to_value(e)?;
            v["detector_name"] = name.into();
            if let Some(o) = v.as_object_mut() {
                o.remove("chart");
                o.remove("top_articles");
            }
            lines.push(v.to_string());
        }
        scores.push(evaluation::score(&stream, name, &started));
    }
    if let Some(path) = &events {
        write_lines(path, &mut lines.into_iter())?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&scores)?);
    } else {
        print!("{}", evaluation::table(&scores));
        // The gate vigie's default applies: p_value over rules × its three windows.
        let d = vigie::detect::DetectorConfig::default();
        let family = stream.topics.len().max(vigie::detect::MIN_FAMILY);
        let gate = d.p_value / (family * 3) as f64;
        println!(
            "\nYardstick: told each topic's true rate and each day's intensity, a detector at the \
             default gate ({gate:.1e} per test) would catch about {:.1}% of bursts of 3× or more.",
            100.0 * evaluation::recall_yardstick(&stream, gate, 0.04, d.min_count)
        );
        // The same at gates 2.5 and 5 times looser: how much recall the false-alert budget
        // could buy at best, for a detector whose forecasts were that good.
        for looser in [2.5, 5.0] {
            println!(
                "At a gate {looser}× looser ({:.1e}): about {:.1}%.",
                gate * looser,
                100.0 * evaluation::recall_yardstick(&stream, gate * looser, 0.04, d.min_count)
            );
        }
    }
    eprintln!(
        "evaluate: seed {seed}, {days} days, {} topics, {} articles, {} bursts, {} wire reprints, {} volume swings, {:.1} s",
        stream.topics.len(),
        stream.articles.len(),
        stream.labels.len(),
        stream.reprints,
        stream.swings.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Records for a backtest: files, stdin, or a Kafka topic's history.
fn backtest_records(cfg: &Config, input: &[PathBuf]) -> anyhow::Result<Vec<vigie::source::Record>> {
    let mut files = Vec::new();
    let mut records = Vec::new();
    for i in input {
        let s = i.to_string_lossy();
        let Some(rest) = s.strip_prefix("kafka://") else {
            files.push(i.clone());
            continue;
        };
        let (topic, query) = rest.split_once('?').unwrap_or((rest, ""));
        let topic = if topic.is_empty() {
            cfg.kafka.topic.as_str()
        } else {
            topic
        };
        let mut from = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("from", v)) => {
                    from = vigie::source::kafka::parse_history_start(v, Utc::now())
                        .map_err(|e| anyhow::anyhow!("{s}: {e}"))?
                }
                _ => anyhow::bail!("{s}: unknown parameter `{pair}` (only from=WHEN)"),
            }
        }
        let read = vigie::source::kafka::read_history(
            &cfg.kafka,
            topic,
            from,
            std::time::Duration::from_secs(15),
        )
        .with_context(|| format!("reading {s} from {}", cfg.kafka.brokers))?;
        records.extend(read);
    }
    if records.is_empty() && files.is_empty() {
        files.push(PathBuf::from("-"));
    }
    if !files.is_empty() {
        records.extend(file::records(&file::expand_inputs(&files)?, "backtest")?);
    }
    Ok(records)
}

fn backtest(
    config: &std::path::Path,
    input: &[PathBuf],
    chart: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let (cfg, matcher) = load(config)?;
    let matcher = Arc::new(matcher);
    let records = backtest_records(&cfg, input)?;
    let engine = Engine::new(EngineSettings::from_config(&cfg), matcher);
    let mut processor = Processor::new(
        engine,
        None,
        cfg.alerts.default_notify.clone(),
        ClockMode::EventTime,
        cfg.kafka.max_message_bytes,
    );
    let now = Utc::now();
    let rows = processor.parse_in_event_time_order(records, now);
    let mut out = std::io::stdout().lock();
    let (mut articles, mut rejected, mut late, mut events) = (0, 0, 0, 0);
    let mut per_kind = std::collections::BTreeMap::new();
    let mut charts = chart.map(|_| vigie::engine::History::default());
    // One batch per minute of event time, as `vigie evaluate` feeds the streams it scores
    // and as a live consumer polling a steady feed sees them: the detectors are judged at
    // each bucket's end and at the last article of each minute. (A batch per article
    // judged every active rule at every article: at 10,000 rules a backtest ran about ten
    // times slower per article than `vigie run`, and its events could start up to a
    // minute earlier than the scored figures of docs/DETECTION.md say.)
    let minute = |p: &Result<vigie::article::Article, _>| {
        p.as_ref()
            .ok()
            .map(|a| a.published_at.timestamp().div_euclid(60))
    };
    let mut batch: Vec<vigie::source::Record> = Vec::new();
    let mut parsed_batch = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while let Some((record, parsed)) = rows.next() {
        // Refused rows (no time; sorted first) go one per batch.
        let this = minute(&parsed);
        batch.push(record);
        parsed_batch.push(parsed);
        if this.is_some() && rows.peek().is_some_and(|(_, p)| minute(p) == this) {
            continue;
        }
        let report = processor.apply(&batch, std::mem::take(&mut parsed_batch), now)?;
        batch.clear();
        if let Some(h) = &mut charts {
            h.record(&processor.engine, &report.events);
        }
        articles += report.articles;
        rejected += report.rejected;
        late += report.late;
        for e in &report.events {
            events += 1;
            *per_kind.entry(e.kind.as_str()).or_insert(0) += 1;
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
    }
    eprintln!("backtest: {articles} articles, {rejected} refused, {late} late, {events} alert events {per_kind:?}");
    if let (Some(dir), Some(mut h)) = (chart, charts) {
        h.finish(&processor.engine);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (rule, series, spans) in h.series() {
            let width = (series.stories.len() as u32).clamp(720, 4000);
            let png = vigie::sink::chart::render(&series, &spans, width)
                .map_err(|e| anyhow::anyhow!("chart of {rule}: {e}"))?;
            let path = dir.join(format!("{rule}.png"));
            std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        }
        eprintln!("backtest: charts written to {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigie silence`: the same checks and store as `POST /api/silences`, on the state file
/// named by the config.
/// `vigie state export|import` ([`vigie::transfer`]). A refused import is exit code 2.
fn state(action: StateAction) -> anyhow::Result<ExitCode> {
    use vigie::transfer::{self, ImportOptions, TransferError};
    let open = |config: &PathBuf| -> anyhow::Result<vigie::state::Store> {
        let cfg = Config::load(config)?;
        vigie::state::Store::open(&cfg.state.path)
            .with_context(|| format!("opening state file {}", cfg.state.path.display()))
    };
    match action {
        StateAction::Export {
            config,
            rule,
            output,
        } => {
            let settings = vigie::engine::EngineSettings::from_config(&Config::load(&config)?);
            let store = open(&config)?;
            let story_secs = settings.story_window_secs + settings.lateness_secs;
            let exports = transfer::export(&store, &rule, settings.memory_secs, story_secs)?;
            let mut text = String::new();
            for e in &exports {
                text.push_str(&serde_json::to_string(e)?);
                text.push('\n');
            }
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            for e in &exports {
                eprintln!(
                    "exported {}: {} buckets, {} stories, {} evidence articles",
                    e.rule,
                    e.buckets.len(),
                    e.stories.len(),
                    e.evidence.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        StateAction::Import {
            config,
            replace,
            force,
            input,
        } => {
            let text = if input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin().lock())?
            } else {
                std::fs::read_to_string(&input)
                    .with_context(|| format!("reading {}", input.display()))?
            };
            let mut store = open(&config)?;
            let done = transfer::read(&text).and_then(|exports| {
                transfer::import(&mut store, &exports, ImportOptions { replace, force })
            });
            match done {
                Ok(ids) => {
                    for id in ids {
                        println!("imported {id}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ TransferError::State(_)) => Err(e.into()),
                Err(e) => {
                    eprintln!("error: {}: {e}", input.display());
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

fn silence(action: SilenceAction) -> anyhow::Result<ExitCode> {
    use vigie::silence::NewSilence;
    use vigie::state::Store;
    let open = |config: &PathBuf| -> anyhow::Result<(Config, Store)> {
        let cfg = Config::load(config)?;
        let store = Store::open(&cfg.state.path)
            .with_context(|| format!("opening state file {}", cfg.state.path.display()))?;
        Ok((cfg, store))
    };
    // The rule ids a silence is shown against: the rule files read, no matcher built.
    let rule_ids = |config: &PathBuf, cfg: &Config| -> anyhow::Result<Vec<String>> {
        let set = vigie::rules::RuleSet::load(config, &cfg.channel_names()).map_err(rule_errors)?;
        Ok(set.rules.into_iter().map(|r| r.id).collect())
    };
    let now = Utc::now();
    let mut out = std::io::stdout().lock();
    match action {
        SilenceAction::Add {
            config,
            rule,
            channel,
            duration,
            until,
            from,
            comment,
            by,
        } => {
            let (cfg, store) = open(&config)?;
            let ids = rule_ids(&config, &cfg)?;
            let asked = NewSilence {
                rule,
                channel,
                starts_at: from,
                ends_at: until,
                duration,
                comment,
                created_by: by,
            };
            let spec = match asked.check(now, &cfg.channel_names()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let s = store.add_silence(&spec)?;
            writeln!(out, "{}", s.describe(now, &ids))?;
        }
        SilenceAction::List { config, expired } => {
            let (cfg, store) = open(&config)?;
            let ids = rule_ids(&config, &cfg)?;
            let since = expired.then(|| now.timestamp_millis() - vigie::silence::KEPT_AFTER_END_MS);
            for s in store.silences(now.timestamp_millis(), since)? {
                writeln!(out, "{}", s.describe(now, &ids))?;
            }
        }
        SilenceAction::Expire { config, id } => {
            let (_, store) = open(&config)?;
            if !store.expire_silence(id)? {
                eprintln!("error: no silence {id} still in force");
                return Ok(ExitCode::from(2));
            }
            writeln!(out, "{}", serde_json::json!({ "ok": true, "id": id }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
