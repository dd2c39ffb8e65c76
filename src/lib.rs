//! vigie watches a news-article feed on Kafka and raises alerts when coverage of
//! a watched topic spikes.
//!
//! # Map of the crate
//!
//! The pipeline reads left to right; each box is a module.
//!
//! ```text
//! source::{kafka,file} ─▶ article ─▶ normalize ─▶ matcher ─▶ engine ─▶ state ─▶ sink::outbox
//!      (records)          (parse,    (one text     (rules,     (event-time   (SQLite:    (email,
//!                          validate)  function)     entities,   counts,       counts,     webhook,
//!                                                   countries)  detector)     offsets,    log)
//!                                                                             outbox)
//! ```
//!
//! * [`config`]    — `vigie.toml` with `VIGIE_SECTION__KEY` overrides, errors with file and line.
//! * [`rules`]     — watch rules and named entities from `rules/*.toml` and `entities/*.toml`.
//! * [`article`]   — the feed contract: parse one message into an [`article::Article`] or a
//!   [`article::Reject`] reason that goes to the dead-letter topic.
//! * [`rawtext`]   — turns raw scraped text files into articles (for `match` and `publish`).
//! * [`normalize`] — the one normalization used for both patterns and article text.
//! * [`gazetteer`] — built-in country names, capitals, cities and demonyms.
//! * [`phrase`]    — whole-word phrase search: the text tokenized once, each word looked up.
//! * [`matcher`]   — one phrase index over every surface form plus a rule index.
//! * [`engine`]    — the deterministic, event-time core shared by `run` and `backtest`:
//!   bucketed counts per rule, story de-duplication and spike detection.
//! * [`detect`]    — spike detectors (baseline, threshold, ratio) and the alert lifecycle.
//! * [`state`]     — the SQLite state file: counts, detector state, offsets, alert events, outbox.
//! * [`pipeline`]  — glues a [`source::Source`] to the engine and the state store with the
//!   delivery semantics documented there.
//! * [`source`]    — where records come from (Kafka, files, memory).
//! * [`sink`]      — where alerts go (email, webhook, log) and the outbox worker that sends them.
//! * [`silence`]   — silences: a rule's notifications muted for a while, rule untouched.
//! * [`quiet`]     — quiet hours: a channel's recurring times to hold (or drop) notifications.
//! * [`http`]      — health, readiness, Prometheus metrics and the JSON API.
//! * [`dashboard`] — HTML pages over the same state: what is alerting, charts, alerts.
//! * [`telemetry`] — metric names and logging setup.
//! * [`generate`]  — synthetic scenario feeds for demos, tests and benchmarks.
//! * [`evaluation`] — labelled synthetic streams and a NAB-style scorer for the detectors.
//! * [`shutdown`]  — the shutdown signal passed into every long-running task.
//! * [`transfer`]  — a rule's state exported from one state file and imported into another.

pub mod article;
pub mod config;
pub mod dashboard;
pub mod detect;
pub mod engine;
pub mod evaluation;
pub mod gazetteer;
pub mod generate;
pub mod http;
pub mod matcher;
pub mod normalize;
pub mod phrase;
pub mod pipeline;
pub mod quiet;
pub mod rawtext;
pub mod rules;
pub mod service;
pub mod shutdown;
pub mod silence;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod transfer;
