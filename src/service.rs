//! `vigie run`: wires the Kafka source, the pipeline, the outbox worker, the HTTP server
//! and the rule reloader together, and shuts them down in order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::config::{resolve_secret, ChannelKind, Config, ConfigError};
use crate::engine::{Engine, EngineSettings};
use crate::http::{AppState, Readiness, ReloadFn};
use crate::matcher::{Matcher, MatcherOptions};
use crate::pipeline::{ClockMode, LoopSettings, Processor};
use crate::rules::RuleSet;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::sink::outbox::OutboxWorker;
use crate::sink::retry::RetryPolicy;
use crate::sink::Notifier;
use crate::source::kafka::{KafkaDeadLetters, KafkaSource};
use crate::state::Store;
use crate::telemetry as m;

/// Loads and validates rules and entities and builds their matcher.
pub fn load_matcher(dir: &Path, config: &Config) -> Result<Matcher, Vec<ConfigError>> {
    let set = RuleSet::load(dir, &config.channel_names())?;
    let opts = MatcherOptions {
        surname_only: config.matching.surname_only,
        gazetteer: true,
    };
    Matcher::new(set.rules, set.entities, &opts).map_err(|e| {
        vec![ConfigError {
            file: None,
            line: None,
            column: None,
            message: e.to_string(),
        }]
    })
}

/// The event kinds each configured channel is told of (`[channels.X] events`).
fn channel_events(config: &Config) -> HashMap<String, Vec<crate::detect::EventKind>> {
    (config.channels.iter())
        .map(|(name, c)| (name.clone(), c.events.clone()))
        .collect()
}

/// Builds one notifier per configured channel (plus `log`).
pub fn notifiers(config: &Config) -> Result<HashMap<String, Arc<dyn Notifier>>, String> {
    let mut out: HashMap<String, Arc<dyn Notifier>> = HashMap::new();
    out.insert("log".into(), Arc::new(crate::sink::log::LogNotifier));
    for (name, ch) in &config.channels {
        let n: Arc<dyn Notifier> = match ch.kind {
            ChannelKind::Log => Arc::new(crate::sink::log::LogNotifier),
            ChannelKind::Webhook => {
                let secret = resolve_secret(
                    &ch.secret,
                    &ch.secret_file,
                    &ch.secret_env,
                    &format!("channel {name} secret"),
                )
                .map_err(|e| e.to_string())?;
                let url = ch
                    .url
                    .clone()
                    .ok_or_else(|| format!("channel `{name}` needs `url`"))?;
                Arc::new(
                    crate::sink::webhook::WebhookNotifier::new(
                        url,
                        secret,
                        ch.headers.clone(),
                        ch.preset.clone(),
                        Duration::from_secs(ch.timeout_secs),
                        ch.danger_accept_invalid_certs,
                    )
                    .map_err(|e| format!("channel `{name}`: {e}"))?
                    .with_templates(ch.templates.clone()),
                )
            }
            ChannelKind::Email => {
                let smtp = config
                    .smtp
                    .as_ref()
                    .ok_or_else(|| format!("channel `{name}` needs an [smtp] section"))?;
                let password = resolve_secret(
                    &smtp.password,
                    &smtp.password_file,
                    &smtp.password_env,
                    "smtp password",
                )
                .map_err(|e| e.to_string())?;
                Arc::new(
                    crate::sink::email::EmailNotifier::new(
                        smtp,
                        password,
                        &ch.to,
                        ch.templates.clone(),
                    )
                    .map_err(|e| format!("channel `{name}`: {e}"))?,
                )
            }
        };
        out.insert(name.clone(), n);
    }
    Ok(out)
}

/// Opens the state file and builds an engine restored from it.
pub fn restored_engine(
    config: &Config,
    matcher: Arc<Matcher>,
    store: &Store,
) -> anyhow::Result<Engine> {
    let settings = EngineSettings::from_config(config);
    let mut engine = Engine::new(settings.clone(), matcher);
    let wm = store.watermark()?;
    let since = wm.unwrap_or(0) - settings.memory_secs;
    engine.restore(
        store.rule_states()?,
        store.buckets_since(since)?,
        store.evidence_since(since)?,
        store
            .stories_since(wm.unwrap_or(0) - settings.story_window_secs - settings.lateness_secs)?,
        store.volume_since(since)?,
        wm,
    );
    if let Some(feed) = store.feed_state()? {
        engine.restore_feed(feed);
    }
    Ok(engine)
}

/// Replays the topic's history from `from` into a fresh state file, in event-time order,
/// through the same engine, so the baselines start warm; then the consumer goes on from the
/// offsets it reached. Events older than an hour are recorded but not sent.
///
/// A crash during the warm-up leaves a partly warmed state whose offsets are ahead of some
/// unprocessed history: delete the state file and start again.
fn warm_up(config: &Config, matcher: Arc<Matcher>, from: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let now = chrono::Utc::now();
    let from_ms = crate::source::kafka::parse_history_start(from, now)
        .map_err(|e| anyhow::anyhow!("--warmup-from {e}"))?;
    let records = crate::source::kafka::read_history(
        &config.kafka,
        &config.kafka.topic,
        from_ms,
        Duration::from_secs(30),
    )
    .context("reading the topic's history for the warm-up")?;
    let store = Store::open(&config.state.path)?;
    let engine = Engine::new(EngineSettings::from_config(config), matcher);
    let mut p = Processor::new(
        engine,
        Some(store),
        config.alerts.default_notify.clone(),
        ClockMode::EventTime,
        config.kafka.max_message_bytes,
    );
    p.notify_after = Some(now.timestamp() - 3600);
    p.channel_events = channel_events(config);
    let rows = p.parse_in_event_time_order(records, now);
    let (mut articles, mut rejected, mut events) = (0, 0, 0);
    for chunk in rows.chunks(1000) {
        let (records, parsed): (Vec<_>, Vec<_>) = chunk.iter().cloned().unzip();
        let report = p.apply(&records, parsed, now)?;
        articles += report.articles;
        rejected += report.rejected;
        events += report.events.len();
    }
    tracing::info!(
        articles,
        rejected,
        events,
        seconds = started.elapsed().as_secs_f64(),
        "warm-up from history done"
    );
    Ok(())
}

/// Runs the service until `shutdown` fires or a fatal error occurs.
pub async fn run(dir: PathBuf, config: Config, trigger: ShutdownTrigger) -> anyhow::Result<()> {
    let shutdown = trigger.signal();
    let prometheus = m::prometheus();
    let matcher = Arc::new(load_matcher(&dir, &config).map_err(|errs| {
        for e in &errs {
            tracing::error!(error = %e, "invalid rules");
        }
        anyhow::anyhow!("{} error(s) in rules or entities", errs.len())
    })?);
    metrics::gauge!(m::RULES_LOADED).set(matcher.rules.len() as f64);
    tracing::info!(
        rules = matcher.rules.len(),
        entities = matcher.entities().len(),
        "rules loaded"
    );

    let store = Store::open(&config.state.path)
        .with_context(|| format!("opening state file {}", config.state.path.display()))?;
    if let Some(from) = config.kafka.warmup_from.clone() {
        if store.offsets()?.is_empty() {
            let (cfg, m) = (config.clone(), matcher.clone());
            tokio::task::spawn_blocking(move || warm_up(&cfg, m, &from))
                .await
                .context("warm-up task")??;
        } else {
            tracing::info!("state file has offsets; warm-up skipped");
        }
    }
    let engine = restored_engine(&config, matcher, &store)?;
    let offsets = store.offsets()?;
    let processor = Arc::new(Mutex::new(Processor::new(
        engine,
        Some(store),
        config.alerts.default_notify.clone(),
        ClockMode::Live {
            idle_after: Duration::from_secs(10),
        },
        config.kafka.max_message_bytes,
    )));

    if let Err(e) =
        crate::source::kafka::ensure_topic(&config.kafka, &config.kafka.dlq_topic(), 1).await
    {
        tracing::warn!(error = %e, topic = %config.kafka.dlq_topic(), "cannot create the dead-letter topic; it must exist");
    }
    let mut source =
        KafkaSource::new(&config.kafka, offsets).context("creating the kafka consumer")?;
    let dead = KafkaDeadLetters::new(&config.kafka).context("creating the dead-letter producer")?;

    if let Ok(mut p) = processor.lock() {
        p.assigned = Some(source.assigned());
        p.channel_events = channel_events(&config);
    }
    let readiness = Arc::new(Readiness {
        assigned: Some(source.assigned()),
        ..Default::default()
    });
    readiness.rules_loaded.store(true, Ordering::Relaxed);
    readiness.state_ok.store(true, Ordering::Relaxed);
    readiness.broker_ok.store(true, Ordering::Relaxed);

    // Outbox worker with its own state connection.
    let wake = Arc::new(Notify::new());
    let senders = notifiers(&config).map_err(|e| anyhow::anyhow!(e))?;
    let outbox_store = Arc::new(Mutex::new(Store::open(&config.state.path)?));
    let outputs = Arc::new(arc_swap::ArcSwap::from_pointee(crate::http::Outputs {
        config: config.channels.clone(),
        notifiers: senders.clone(),
    }));
    let live = Arc::new(tokio::sync::Mutex::new(Live {
        worker: RunningWorker::start(outbox_worker(
            &config,
            outbox_store.clone(),
            wake.clone(),
            senders,
        )),
        delivery: delivery_settings(&config),
        config: config.clone(),
    }));

    // Reloads: file changes, SIGHUP and the API all come here.
    let reload: ReloadFn = {
        let (dir, processor, outputs, live) = (
            dir.clone(),
            processor.clone(),
            outputs.clone(),
            live.clone(),
        );
        let (store, wake) = (outbox_store.clone(), wake.clone());
        Arc::new(move || {
            let (dir, processor, outputs, live) = (
                dir.clone(),
                processor.clone(),
                outputs.clone(),
                live.clone(),
            );
            let (store, wake) = (store.clone(), wake.clone());
            Box::pin(async move {
                // On a task of its own: a caller that goes away (an HTTP client hanging up)
                // must not cut a reload off between stopping the old worker and starting
                // the new one.
                let result = tokio::spawn(async move {
                    reload(&dir, &processor, &outputs, &live, store, wake).await
                })
                .await
                .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]));
                if let Err(errs) = &result {
                    metrics::counter!(m::RELOAD_FAILURES).increment(1);
                    for e in errs {
                        tracing::error!(error = %e, "reload refused, keeping the previous rules and channels");
                    }
                }
                result
            })
        })
    };
    let reloader = tokio::spawn(watch_rules(dir.clone(), reload.clone(), shutdown.clone()));

    // HTTP.
    let http_task = if config.http.listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("binding http.listen {}", config.http.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "http server listening");
        let api_token = resolve_secret(
            &config.http.api_token,
            &config.http.api_token_file,
            &None,
            "api token",
        )?;
        let state = AppState {
            processor: processor.clone(),
            store: Arc::new(Mutex::new(Store::open(&config.state.path)?)),
            readiness: readiness.clone(),
            prometheus,
            api_token,
            reload: reload.clone(),
            outputs: outputs.clone(),
        };
        Some(tokio::spawn(crate::http::serve(
            listener,
            state,
            shutdown.clone(),
        )))
    };

    // Pruning of the state file, hourly.
    let prune_task = {
        let path = config.state.path.clone();
        let settings = EngineSettings::from_config(&config);
        let retention = config.engine.retention_days as i64 * 86_400;
        let mut s = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.recv() => return,
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                }
                let path = path.clone();
                let (evidence, stories) = (
                    settings.memory_secs,
                    settings.story_window_secs + settings.lateness_secs,
                );
                match tokio::task::spawn_blocking(move || {
                    Store::open(&path)?.prune(retention, evidence, stories)
                })
                .await
                {
                    Ok(Ok(n)) => tracing::debug!(rows = n, "state file pruned"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the state file"),
                    Err(e) => tracing::warn!(error = %e, "prune task failed"),
                }
            }
        })
    };

    // Broker reachability and lag, beside the pipeline. While no broker answers, the
    // consumer waits and retries by itself (librdkafka reconnects); we only report it.
    let probe = source.probe();
    let lag_shutdown = shutdown.clone();
    let (lag_readiness, lag_topic) = (readiness.clone(), config.kafka.topic.clone());
    let lag_task = tokio::spawn(async move {
        let mut s = lag_shutdown;
        loop {
            let (p, topic) = (probe.clone(), lag_topic.clone());
            let up =
                tokio::task::spawn_blocking(move || p.reachable(&topic, Duration::from_secs(3)))
                    .await
                    .unwrap_or(false);
            let was = lag_readiness.broker_ok.swap(up, Ordering::Relaxed);
            metrics::gauge!(m::KAFKA_UP).set(if up { 1.0 } else { 0.0 });
            if was && !up {
                tracing::warn!("kafka broker unreachable; not ready, waiting for it");
            } else if !was && up {
                tracing::info!("kafka broker reachable again; resuming");
            }
            if !up {
                tokio::select! {
                    _ = s.recv() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                continue;
            }
            let p = probe.clone();
            if let Ok(lag) = tokio::task::spawn_blocking(move || p.lag()).await {
                for (partition, l) in lag {
                    metrics::gauge!(m::CONSUMER_LAG, "partition" => partition.to_string())
                        .set(l as f64);
                }
            }
            tokio::select! {
                _ = s.recv() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });

    tracing::info!(topic = %config.kafka.topic, group = %config.kafka.group_id, brokers = %config.kafka.brokers, "consuming");
    let settings = LoopSettings {
        batch_size: config.kafka.batch_size,
        poll: Duration::from_millis(500),
    };
    let wake2 = wake.clone();
    let result = crate::pipeline::run(
        &mut source,
        &dead,
        processor.clone(),
        settings,
        shutdown.clone(),
        move |_| wake2.notify_one(),
    )
    .await;
    if let Err(e) = &result {
        readiness.state_ok.store(false, Ordering::Relaxed);
        tracing::error!(error = %e, "pipeline stopped");
    }
    // Orderly stop: everything processed is already durable; tell Kafka, leave the group,
    // give the outbox a moment to finish what it is sending, stop the rest.
    trigger.fire();
    let final_commit = tokio::task::spawn_blocking(move || {
        source.commit_sync();
        source.close();
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), final_commit).await;
    reloader.abort();
    let worker = std::mem::replace(&mut live.lock().await.worker, RunningWorker::none());
    worker.stop().await;
    if let Some(h) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
    lag_task.abort();
    prune_task.abort();
    tracing::info!("stopped");
    result.map(|_| ()).map_err(Into::into)
}

/// The outbox worker that runs, so that a reload that changes the channels can replace it.
struct RunningWorker {
    trigger: Option<ShutdownTrigger>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningWorker {
    fn start(worker: OutboxWorker) -> RunningWorker {
        let (trigger, shutdown) = crate::shutdown::channel();
        RunningWorker {
            trigger: Some(trigger),
            task: Some(tokio::spawn(worker.run(shutdown))),
        }
    }

    fn none() -> RunningWorker {
        RunningWorker {
            trigger: None,
            task: None,
        }
    }

    /// Stops it: sends in flight get the worker's grace to end; rows not settled stay
    /// pending in the state file and go again, under the same Idempotency-Key.
    async fn stop(self) {
        if let (Some(trigger), Some(task)) = (self.trigger, self.task) {
            trigger.fire();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// What a reload works from: the settings in force and the worker built from them.
struct Live {
    config: Config,
    /// `delivery_settings` of `config` when its senders were built: compared with the
    /// file's on reload. Kept, not recomputed, since a secret file may have changed since.
    delivery: serde_json::Value,
    worker: RunningWorker,
}

/// The outbox worker for `config`'s channels.
fn outbox_worker(
    config: &Config,
    store: Arc<Mutex<Store>>,
    wake: Arc<Notify>,
    notifiers: HashMap<String, Arc<dyn Notifier>>,
) -> OutboxWorker {
    OutboxWorker {
        store,
        notifiers,
        policy: RetryPolicy {
            give_up_after: Duration::from_secs(config.alerts.give_up_after_hours as u64 * 3600),
            max: Duration::from_secs(config.alerts.retry_max_secs.max(1)),
            ..Default::default()
        },
        wake,
        group_wait: (config.channels.iter())
            .map(|(name, c)| (name.clone(), Duration::from_secs(c.group_wait_secs)))
            .collect(),
        quiet: (config.channels.iter())
            .filter_map(|(name, c)| Some((name.clone(), c.quiet()?)))
            .collect(),
        floors: (config.channels.iter())
            .filter_map(|(name, c)| Some((name.clone(), c.floor()?)))
            .collect(),
        digests: (config.channels.iter())
            .filter_map(|(name, c)| Some((name.clone(), c.digest()?)))
            .collect(),
        dashboard_url: config.alerts.dashboard_url.clone(),
    }
}

/// The parts of vigie.toml a reload applies: who is told of what, and how. Compared as
/// values (secrets included, in memory only).
///
/// The contents of the secret files they name count too (as digests, never in the clear):
/// a secret rotated in place, same path, new contents, must rebuild the senders on the
/// next reload. Reads files: call it off the async threads.
fn delivery_settings(c: &Config) -> serde_json::Value {
    use sha2::Digest;
    let files = (c.smtp.iter().filter_map(|s| s.password_file.as_ref()))
        .chain(c.channels.values().filter_map(|ch| ch.secret_file.as_ref()));
    let secrets: Vec<String> = files
        .map(|path| match std::fs::read(path) {
            Ok(bytes) => hex::encode(sha2::Sha256::digest(&bytes)),
            Err(e) => format!("unreadable: {e}"),
        })
        .collect();
    serde_json::json!({
        "alerts": c.alerts, "smtp": c.smtp, "channels": c.channels, "secret_files": secrets,
    })
}

/// The sections of vigie.toml read at start only, by name, that differ between `a` and `b`.
fn start_only_changes(a: &Config, b: &Config) -> Vec<&'static str> {
    let sections = |c: &Config| {
        let mut kafka = c.kafka.clone();
        kafka.warmup_from = None; // a command-line option, not the file's
        [
            ("kafka", serde_json::to_value(kafka).ok()),
            ("http", serde_json::to_value(&c.http).ok()),
            ("state", serde_json::to_value(&c.state).ok()),
            ("engine", serde_json::to_value(&c.engine).ok()),
            ("detector", serde_json::to_value(&c.detector).ok()),
            ("matching", serde_json::to_value(&c.matching).ok()),
        ]
    };
    (sections(a).into_iter().zip(sections(b)))
        .filter(|((_, x), (_, y))| x != y)
        .map(|((name, _), _)| name)
        .collect()
}

/// Reloads rules, entities and the delivery settings of vigie.toml (`[alerts]`, `[smtp]`,
/// `[channels]`), all or nothing: any error keeps everything as it was. Changed channels
/// get a new outbox worker (the old one stops as at shutdown; nothing pending is lost).
/// Other sections take effect at the next start, which the log says.
async fn reload(
    dir: &Path,
    processor: &Arc<Mutex<Processor>>,
    outputs: &arc_swap::ArcSwap<crate::http::Outputs>,
    live: &tokio::sync::Mutex<Live>,
    store: Arc<Mutex<Store>>,
    wake: Arc<Notify>,
) -> Result<usize, Vec<String>> {
    let mut live = live.lock().await; // one reload at a time
    let d = dir.to_path_buf();
    let fresh = tokio::task::spawn_blocking(move || Config::load(&d))
        .await
        .map_err(|e| vec![e.to_string()])?
        .map_err(|e| vec![e.to_string()])?;
    for section in start_only_changes(&live.config, &fresh) {
        tracing::warn!(section, "config change not applied until the next start");
    }
    let mut next = live.config.clone();
    (next.alerts, next.smtp, next.channels) = (fresh.alerts, fresh.smtp, fresh.channels);
    let cfg = next.clone();
    let delivery = tokio::task::spawn_blocking(move || delivery_settings(&cfg))
        .await
        .map_err(|e| vec![e.to_string()])?;
    let changed = delivery != live.delivery;
    let senders = match changed {
        true => Some(notifiers(&next).map_err(|e| vec![e])?),
        false => None,
    };
    let (d, cfg) = (dir.to_path_buf(), next.clone());
    let matcher = tokio::task::spawn_blocking(move || load_matcher(&d, &cfg))
        .await
        .map_err(|e| vec![e.to_string()])?
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    let n = matcher.rules.len();
    let matcher = Arc::new(matcher);
    let (p, cfg) = (processor.clone(), next.clone());
    tokio::task::spawn_blocking(move || {
        if let Ok(mut p) = p.lock() {
            p.engine.set_matcher(matcher);
            if changed {
                p.set_notify(cfg.alerts.default_notify.clone(), channel_events(&cfg));
            }
        }
        // The old matcher is gone now (the lock excluded any batch still using it).
        release_freed_memory();
    })
    .await
    .map_err(|e| vec![e.to_string()])?;
    metrics::gauge!(m::RULES_LOADED).set(n as f64);
    tracing::info!(rules = n, "rules reloaded");
    if let Some(senders) = senders {
        outputs.store(Arc::new(crate::http::Outputs {
            config: next.channels.clone(),
            notifiers: senders.clone(),
        }));
        let old = std::mem::replace(&mut live.worker, RunningWorker::none());
        old.stop().await;
        live.worker = RunningWorker::start(outbox_worker(&next, store, wake, senders));
        tracing::info!(channels = next.channels.len(), "channels reloaded");
    }
    live.config = next;
    live.delivery = delivery;
    Ok(n)
}

/// Index of `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (include/mimalloc.h):
/// libmimalloc-sys names only the options whose index mimalloc 2 and 3 share. A unit test
/// checks that it still names the purge delay.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets up the allocators for a long-running service. Called once at start, before the
/// runtime's threads.
///
/// Rust's allocations go to mimalloc (the binary's global allocator, see `main.rs`): CPU
/// per 100,000 articles 10–14% lower than with glibc's malloc at 1,000 and 10,000 rules,
/// builds alternated (docs/BENCHMARKS.md, 2026-12-04). Its defaults keep memory for reuse,
/// which took peak RSS at 10,000 rules from about 240 to 325–380 MB. Two settings bring it
/// to about 255 MB at the same speed: arenas committed on demand rather than whole (a
/// build-time default, set in `.cargo/config.toml`, since the first arena exists before
/// `main`) and freed pages purged after 100 ms instead of a second (set here).
///
/// The C libraries (librdkafka, SQLite) still allocate through glibc. Its trim threshold is
/// fixed at 16 MiB instead of letting it grow: by default every large block freed raises
/// the mmap threshold (up to 32 MiB) and the trim threshold with it, so batch-sized buffers
/// end up on the heaps and their pages stay resident.
pub fn tune_allocator() {
    // SAFETY: mi_option_set takes two integers and only changes the allocator's parameters.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only changes the allocator's parameters.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// Nice value of the threads that parse and match the next batch (rayon's global pool).
///
/// `vigie run` keeps three stages busy on the machine's cores: the next batch parsed and
/// matched, the current one applied to the engine, the previous one's state write
/// (src/pipeline.rs, "Overlap"). The apply is the chain every batch waits on; parsing and
/// matching runs ahead of it and is rarely waited for (`prepare_wait` 0.4 s against
/// `apply_wait` 3.3 s per 100,000 articles at 10,000 rules). At equal priority the
/// scheduler gives the two matching threads as much of the cores as the apply and the
/// write, and the apply waits for a core for about half its wall time. At the lowest
/// priority they take what the others leave: 1.6–6.5% more articles a second at 10,000
/// rules, faster in 8 of 8 alternated runs, and within noise at 1,000 (docs/BENCHMARKS.md,
/// "What changed").
///
/// Where the service has its own scheduling group (a systemd unit's or a container's
/// cgroup with the CPU controller, or its own session under autogroup), nice values weigh
/// its threads only against one another, so this orders vigie's own stages. Where it
/// shares one with other busy processes, its matching also yields to them.
const MATCH_THREAD_NICE: i32 = 19;

/// Builds rayon's global pool, where batches are parsed and matched, with its threads at
/// [`MATCH_THREAD_NICE`]. Called once at start of `vigie run`, before anything uses the
/// pool; if something already has, the pool stays as it is (and at normal priority).
pub fn start_match_pool() {
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("vigie-match-{i}"))
        .start_handler(|_| lower_this_threads_priority(MATCH_THREAD_NICE))
        .build_global();
}

/// Sets the calling thread's nice value (on Linux, PRIO_PROCESS with a thread id names that
/// thread alone). Raising it needs no privilege; failure leaves the thread as it was.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority(nice: i32) {
    // SAFETY: gettid and setpriority take and return integers only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority(_nice: i32) {}

/// Gives freed memory back to the operating system. A matcher is megabytes (the gazetteer's
/// phrase index) built on a blocking-pool thread; without this, each reload left the
/// previous one's pages with the allocator and resident memory stepped up with every
/// reload (79 → 134 MB over eight reloads in tests/soak.rs, measured with glibc).
fn release_freed_memory() {
    // Returns what this thread's heap and abandoned heaps hold free (the thread where the
    // old matcher is usually dropped; freed blocks of other threads go back with theirs).
    // SAFETY: mi_collect takes a flag and only walks mimalloc's own free lists.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reloads rules and channels on changes under `rules/` and `entities/` (debounced) and
/// on SIGHUP (vigie.toml is read again at each reload, see [`reload`]).
async fn watch_rules(dir: PathBuf, reload: ReloadFn, mut shutdown: Shutdown) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = {
        let tx = tx.clone();
        notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        })
    };
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch rule files; use SIGHUP or POST /api/reload");
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        for sub in ["rules", "entities"] {
            let p = dir.join(sub);
            if p.exists() {
                if let Err(e) = w.watch(&p, RecursiveMode::NonRecursive) {
                    tracing::warn!(error = %e, path = %p.display(), "cannot watch");
                }
            }
        }
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let hup_fut = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = hup_fut => { tracing::info!("SIGHUP: reloading rules and channels"); }
            Some(()) = rx.recv() => {
                // Debounce: editors write files in several steps.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while rx.try_recv().is_ok() {}
                tracing::info!("rule files changed: reloading");
            }
        }
        let _ = reload().await;
    }
}

#[cfg(test)]
mod tests {
    /// `tune_allocator` sets mimalloc's purge delay by its index in mimalloc 3's option
    /// enum; if an upgrade moved it, the index would now name another option. The purge
    /// delay is the option whose default is 1,000 ms.
    #[test]
    fn the_purge_delay_index_names_the_purge_delay() {
        // SAFETY: mi_option_get takes an integer and reads the allocator's parameters.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000);
    }
}
