//! How good is the spike detector? Labelled synthetic streams, the engine run over them, and
//! a scorer.
//!
//! A [`Stream`] is a feed of many topics with known truth: every topic has its own rate,
//! the newsroom's diurnal and weekly rhythm, overdispersed noise (gamma-distributed daily and
//! hourly intensity), syndicated copies, and days when the whole feed swings (a big news day
//! elsewhere, an outage). On top come *bursts* — the labels — of heights 1.5× to 20×, three
//! shapes and three lengths, and unlabelled *wire reprints* (one story copied dozens of times
//! within an hour), which a detector should not take for a spike.
//!
//! [`run`] pushes the stream through the same [`Matcher`] and [`Engine`] as `vigie run`, in
//! one-minute batches, and keeps the `started` events. [`score`] compares them with the
//! labels, in the manner of the Numenta Anomaly Benchmark: each burst has a window from its
//! onset; the first detection in the window scores on a sigmoid, more the earlier it comes;
//! a burst with none costs a miss; each start outside every burst costs a false alarm. Plain
//! figures come with it: recall by height, delay from onset to `started`, and false alerts
//! per topic per 30 days.
//!
//! Everything is deterministic for a seed, so a table in the docs can be reproduced exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, Poisson};
use serde::Serialize;
use statrs::distribution::DiscreteCDF;

use crate::article::{Article, DateOrigin};
use crate::detect::{DetectorConfig, EventKind};
use crate::engine::{ts, AlertEvent, Engine, EngineSettings};
use crate::generate::{SOURCES_EN, SOURCES_FR};
use crate::matcher::{ArticleMatch, Matcher, MatcherOptions};
use crate::rules::Rule;

/// Burst heights: multipliers of the topic's rate.
pub const HEIGHTS: &[f64] = &[1.5, 2.0, 3.0, 5.0, 10.0, 20.0];

/// How a synthetic stream is made.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub seed: u64,
    pub days: u32,
    /// Topics watched (one keyword rule each).
    pub topics: usize,
    /// Articles per hour matching no rule: they only make up the feed's volume.
    pub background_per_hour: f64,
    /// A burst raises a topic's rate to `height ×` its rate, counted from at least this many
    /// stories per hour: a 3× burst of a topic seen twice a week would be no event at all.
    pub burst_floor_per_hour: f64,
    /// First instant of the stream (unix seconds).
    pub start: i64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            seed: 1,
            days: 90,
            topics: 40,
            background_per_hour: 60.0,
            burst_floor_per_hour: 2.0,
            // Monday 2026-01-05T00:00:00Z.
            start: 1_767_571_200,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Jumps to full height and stays there.
    Step,
    /// Rises linearly over the first quarter of its length (at most an hour).
    Ramp,
    /// Jumps to full height, then decays exponentially (time constant a third of its length).
    Decay,
}

impl Shape {
    /// The share of its full height a burst has `x` seconds into its `len` seconds.
    fn intensity(self, x: f64, len: f64) -> f64 {
        match self {
            Shape::Step => 1.0,
            Shape::Ramp => (x / (len / 4.0).min(3600.0)).min(1.0),
            Shape::Decay => (-x / (len / 3.0)).exp(),
        }
    }
}

/// A topic's stories per hour at `t` before noise, swings and bursts: its rate shaped by
/// the newsroom's day and its weekend factor.
fn seasonal_rate(topic: &Topic, t: i64) -> f64 {
    let dt = ts(t);
    let weekly = if dt.weekday().number_from_monday() >= 6 {
        topic.weekend
    } else {
        1.0
    };
    topic.rate * diurnal(dt.hour()) * weekly
}

/// One watched topic of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct Topic {
    pub id: String,
    /// The word its articles carry and its rule looks for.
    pub keyword: String,
    /// Mean stories per hour over a week.
    pub rate: f64,
    /// Weekend activity relative to weekdays.
    pub weekend: f64,
}

/// A burst injected into a topic: the truth a detector is scored against.
#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub topic: String,
    /// The topic's mean stories per hour outside bursts.
    pub topic_rate: f64,
    pub onset: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub height: f64,
    pub shape: Shape,
    pub hours: u32,
}

/// A labelled stream: articles in event-time order, the topics and the bursts.
pub struct Stream {
    pub options: StreamOptions,
    pub topics: Vec<Topic>,
    pub labels: Vec<Label>,
    pub articles: Vec<Article>,
    /// Wire reprint episodes injected (not labels: they are not spikes of coverage).
    pub reprints: usize,
    /// Days on which the whole feed's volume was scaled, and by how much.
    pub swings: Vec<(u32, f64)>,
}

/// Newsroom rhythm by hour of day (UTC), mean about 1 over a day.
fn diurnal(hour: u32) -> f64 {
    match (hour + 1) % 24 {
        0..=5 => 0.25,
        6..=8 => 0.9,
        9..=18 => 1.5,
        19..=21 => 1.0,
        _ => 0.5,
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ru", "ten", "sa", "vor", "pe", "li", "du", "ran", "ge", "zo", "bi", "fa",
    "nu", "cho", "ter", "pol", "ma", "den", "os", "tur", "bel", "ni", "ste", "gra", "mon",
];

/// Letters for topic number `i`: a, b, …, z, ba, bb, …
fn letters(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (i % 26) as u8);
        i /= 26;
        if i == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

struct Gen {
    rng: StdRng,
    vocab: Vec<String>,
    /// Publishers stories and their copies come from.
    sources: Vec<&'static str>,
    articles: Vec<Article>,
    n: u64,
}

impl Gen {
    fn words(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| self.vocab[self.rng.gen_range(0..self.vocab.len())].clone())
            .collect()
    }

    /// One story (and its syndicated copies, `copies` of them within `spread` seconds).
    fn story(&mut self, keyword: Option<&str>, t: i64, copies: usize, spread: i64) {
        let mut title = self.words(6);
        let mut body = self.words(24);
        if let Some(k) = keyword {
            let at = self.rng.gen_range(0..=title.len());
            title.insert(at, k.to_string());
            let at = self.rng.gen_range(0..=body.len());
            body.insert(at, k.to_string());
        }
        let title = title.join(" ");
        let body = body.join(" ");
        let first = self.rng.gen_range(0..self.sources.len());
        for c in 0..=copies {
            let at = if c == 0 {
                t
            } else {
                t + self.rng.gen_range(0..spread.max(1))
            };
            let source = self.sources[(first + c) % self.sources.len()];
            self.n += 1;
            self.articles.push(Article {
                id: format!("e{}", self.n),
                url: Some(format!("https://{source}/a/{}", self.n)),
                title: title.clone(),
                // Copies add their own tail, as wire reprints do.
                body: if c == 0 {
                    body.clone()
                } else {
                    format!("{body} ({source})")
                },
                published_at: ts(at),
                date_origin: DateOrigin::Field,
                source: Some(source.to_string()),
                language: Some("fr".into()),
                entities: vec![],
                countries: vec![],
                extra: Default::default(),
            });
        }
    }

    /// Syndicated copies of an ordinary story: none for half, one for a quarter, …
    fn copies(&mut self) -> usize {
        let mut c = 0;
        while c < 6 && self.rng.gen_bool(0.5) {
            c += 1;
        }
        c
    }
}

/// Generates a labelled stream.
pub fn synthesize(o: &StreamOptions) -> Stream {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut vocab = Vec::with_capacity(6000);
    while vocab.len() < 6000 {
        let n = rng.gen_range(2..=4);
        let w: String = (0..n)
            .map(|_| *SYLLABLES.choose(&mut rng).unwrap_or(&"ka"))
            .collect();
        vocab.push(w);
    }
    vocab.sort();
    vocab.dedup();
    let mut g = Gen {
        rng: StdRng::seed_from_u64(o.seed ^ 0x5eed),
        vocab,
        sources: SOURCES_FR.iter().chain(SOURCES_EN).copied().collect(),
        articles: Vec::new(),
        n: 0,
    };

    // Topics: one in eight sparse (twice a week to once a day), the rest log-uniform
    // between 0.3 and 12 stories an hour.
    let topics: Vec<Topic> = (0..o.topics)
        .map(|i| {
            let rate = if i % 8 == 7 {
                rng.gen_range(2.0f64 / 168.0..1.0 / 24.0)
            } else {
                (rng.gen_range(0.3f64.ln()..12f64.ln())).exp()
            };
            Topic {
                id: format!("t{i:02}"),
                keyword: format!("vigiesujet{}", letters(i)),
                rate,
                weekend: rng.gen_range(0.4..1.1),
            }
        })
        .collect();

    // Whole-feed swings: busy days (1.6–2.5×) and thin days (0.4–0.6×).
    let mut swing = vec![1.0; o.days as usize];
    let mut swings = Vec::new();
    for (d, s) in swing.iter_mut().enumerate().skip(1) {
        let u: f64 = rng.gen();
        if u < 0.06 {
            *s = rng.gen_range(1.6..2.5);
        } else if u < 0.09 {
            *s = rng.gen_range(0.4..0.6);
        }
        if *s != 1.0 {
            swings.push((d as u32, *s));
        }
    }

    // Bursts: from day 8 on, every 6 to 14 days per topic, heights taken in turn.
    let end = o.start + o.days as i64 * 86_400;
    let mut labels = Vec::new();
    let mut bursts: Vec<Vec<(i64, i64, f64, Shape)>> = vec![Vec::new(); o.topics];
    for (i, topic) in topics.iter().enumerate() {
        let mut t = o.start + 7 * 86_400 + rng.gen_range(0..4 * 86_400);
        let mut k = i;
        loop {
            let hours = *[2u32, 6, 24].choose(&mut rng).unwrap_or(&6);
            let shape = *[Shape::Step, Shape::Ramp, Shape::Decay]
                .choose(&mut rng)
                .unwrap_or(&Shape::Step);
            let stop = t + hours as i64 * 3600;
            if stop > end {
                break;
            }
            let height = HEIGHTS[k % HEIGHTS.len()];
            k += 1;
            bursts[i].push((t, stop, height, shape));
            labels.push(Label {
                topic: topic.id.clone(),
                topic_rate: topic.rate,
                onset: ts(t),
                end: ts(stop),
                height,
                shape,
                hours,
            });
            t = stop + rng.gen_range(6 * 86_400..14 * 86_400);
        }
    }

    // Intensity noise: gamma-distributed per topic-day (CV ≈ 0.29) and per topic-hour
    // (CV ≈ 0.2), so counts are overdispersed as real coverage is. With these, an hour at
    // twice a topic's usual intensity happens by chance about 1.2% of the time, and one at
    // three times about 0.014% (one hour in 7,000).
    let day_noise = Gamma::new(12.0, 1.0 / 12.0).expect("valid gamma");
    let hour_noise = Gamma::new(25.0, 1.0 / 25.0).expect("valid gamma");
    let slice = 300i64;
    let mut reprints = 0;
    for (i, topic) in topics.iter().enumerate() {
        let mut day_factor = 1.0;
        let mut hour_factor = 1.0;
        let mut t = o.start;
        while t < end {
            if t % 86_400 == 0 {
                day_factor = day_noise.sample(&mut rng);
            }
            if t % 3600 == 0 {
                hour_factor = hour_noise.sample(&mut rng);
            }
            let day = ((t - o.start) / 86_400) as usize;
            let seasonal = seasonal_rate(topic, t);
            let base = seasonal * day_factor * hour_factor;
            let mut rate = base;
            for &(on, off, h, shape) in &bursts[i] {
                if t >= on && t < off {
                    let m = shape.intensity((t - on) as f64, (off - on) as f64);
                    rate += (h - 1.0) * seasonal.max(o.burst_floor_per_hour) * m;
                }
            }
            let mean = rate * swing[day] * slice as f64 / 3600.0;
            let n = if mean > 0.0 {
                Poisson::new(mean).map_or(0.0, |p| p.sample(&mut rng)) as usize
            } else {
                0
            };
            for _ in 0..n {
                let at = t + rng.gen_range(0..slice);
                let copies = g.copies();
                g.story(Some(&topic.keyword), at, copies, 5400);
            }
            // Wire reprints: about once in 20 days, one story copied 15–40 times in an hour.
            if rng.gen_bool((slice as f64 / (20.0 * 86_400.0)).min(1.0)) && day >= 3 {
                let copies = rng.gen_range(15..=40);
                g.story(Some(&topic.keyword), t, copies, 3600);
                reprints += 1;
            }
            t += slice;
        }
    }
    // Background: the rest of the feed, with its own copies.
    let mut t = o.start;
    while t < end {
        let dt = ts(t);
        let day = ((t - o.start) / 86_400) as usize;
        let weekly = if dt.weekday().number_from_monday() >= 6 {
            0.6
        } else {
            1.0
        };
        let mean = o.background_per_hour * diurnal(dt.hour()) * weekly * swing[day] * slice as f64
            / 3600.0;
        let n = Poisson::new(mean).map_or(0.0, |p| p.sample(&mut rng)) as usize;
        for _ in 0..n {
            let at = t + rng.gen_range(0..slice);
            let copies = g.copies();
            g.story(None, at, copies, 5400);
        }
        t += slice;
    }
    let mut articles = g.articles;
    articles.retain(|a| a.published_at.timestamp() < end);
    articles.sort_by(|a, b| a.published_at.cmp(&b.published_at).then(a.id.cmp(&b.id)));
    Stream {
        options: o.clone(),
        topics,
        labels,
        articles,
        reprints,
        swings,
    }
}

/// The rules of a stream: one keyword rule per topic, rule id = topic id.
pub fn rules(stream: &Stream) -> Vec<Rule> {
    stream
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| Rule {
            id: t.id.clone(),
            name: format!("topic {}", t.id),
            query: crate::rules::parse_query(&t.keyword).expect("a plain keyword parses"),
            notify: vec![],
            spike: Default::default(),
            templates: Default::default(),
            file: "evaluation".into(),
            line: i + 1,
            fingerprint: i as u64 + 1,
        })
        .collect()
}

/// A stream matched once, to be run through several detectors.
pub struct Prepared<'a> {
    pub stream: &'a Stream,
    pub matcher: Arc<Matcher>,
    pub matches: Vec<ArticleMatch>,
}

/// Matches every article of the stream against its rules (without the gazetteer: the
/// rules are keywords).
pub fn prepare(stream: &Stream) -> Prepared<'_> {
    use rayon::prelude::*;
    let matcher = Arc::new(
        Matcher::new(
            rules(stream),
            vec![],
            &MatcherOptions {
                gazetteer: false,
                ..Default::default()
            },
        )
        .expect("generated rules build"),
    );
    let matches = stream
        .articles
        .par_iter()
        .map(|a| matcher.match_article(a))
        .collect();
    Prepared {
        stream,
        matcher,
        matches,
    }
}

/// Runs the engine over a prepared stream with this detector, in one-minute batches as a
/// live feed would arrive; returns the `started` events.
pub fn run(p: &Prepared<'_>, detector: &DetectorConfig) -> Vec<AlertEvent> {
    let settings = EngineSettings {
        detector: detector.clone(),
        ..EngineSettings::default()
    };
    let mut engine = Engine::new(settings, p.matcher.clone());
    let mut started = Vec::new();
    let mut batch_minute = i64::MIN;
    let mut last = i64::MIN;
    let flush = |engine: &mut Engine, to: i64, started: &mut Vec<AlertEvent>| {
        let events = engine.advance(to);
        started.extend(events.into_iter().filter(|e| e.kind == EventKind::Started));
        // Nothing is persisted here; drop what a store would have written.
        drop(engine.take_changes());
    };
    for (a, m) in p.stream.articles.iter().zip(&p.matches) {
        let t = a.published_at.timestamp();
        if t / 60 != batch_minute && last != i64::MIN {
            flush(&mut engine, last, &mut started);
        }
        batch_minute = t / 60;
        engine.ingest(a, m, None);
        last = t;
    }
    if last != i64::MIN {
        let end = p.stream.options.start + p.stream.options.days as i64 * 86_400;
        flush(&mut engine, end, &mut started);
    }
    started
}

/// Minutes after the onset within which a detection scores (the NAB window).
pub const SCORE_WINDOW_MINUTES: i64 = 120;
/// After a burst ends, starts are neither hits nor false alarms for this long.
const GRACE_SECS: i64 = 2 * 3600;
/// NAB "standard" profile weights.
const A_TP: f64 = 1.0;
const A_FP: f64 = 0.11;
const A_FN: f64 = 1.0;

/// Detection figures for one detector over one stream.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub detector: String,
    pub bursts: usize,
    /// (detected, total) by height.
    pub by_height: Vec<(f64, usize, usize)>,
    /// Share of bursts of 3× or more with a `started` during the burst.
    pub recall_3x: f64,
    /// Minutes from onset to `started`, bursts of 3× or more that were detected.
    pub median_delay_3x: Option<f64>,
    pub p90_delay_3x: Option<f64>,
    pub false_alerts: usize,
    pub false_per_topic_30d: f64,
    /// NAB-style score: 100 = every burst caught at its onset, 0 = none caught, no alarms.
    pub nab: f64,
}

/// The NAB sigmoid: a detection at relative position `y` in the window (−1 at its start,
/// 0 at its end) scores close to 1 at the start and 0 at the end.
fn sigmoid(y: f64) -> f64 {
    2.0 / (1.0 + (5.0 * y).exp()) - 1.0
}

/// Scores `started` events against the stream's labels.
pub fn score(stream: &Stream, name: &str, started: &[AlertEvent]) -> Score {
    let mut by_topic: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for e in started {
        by_topic
            .entry(e.rule.as_str())
            .or_default()
            .push(e.at.timestamp());
    }
    let w = SCORE_WINDOW_MINUTES * 60;
    let mut raw = 0.0;
    let mut perfect = 0.0;
    let mut delays = Vec::new();
    let mut n3 = 0;
    let mut hit3 = 0;
    let mut by_height: Vec<(f64, usize, usize)> = HEIGHTS.iter().map(|h| (*h, 0, 0)).collect();
    for l in &stream.labels {
        let (on, off) = (l.onset.timestamp(), l.end.timestamp());
        let starts = by_topic.get(l.topic.as_str()).map_or(&[][..], |v| &v[..]);
        let first = starts.iter().copied().find(|&t| t >= on && t <= off);
        perfect += A_TP * sigmoid(-1.0);
        match starts.iter().copied().find(|&t| t >= on && t <= on + w) {
            Some(t) => raw += A_TP * sigmoid((t - (on + w)) as f64 / w as f64),
            None => raw -= A_FN,
        }
        if let Some(slot) = by_height.iter_mut().find(|(h, _, _)| *h == l.height) {
            slot.2 += 1;
            if first.is_some() {
                slot.1 += 1;
            }
        }
        if l.height >= 3.0 {
            n3 += 1;
            if let Some(t) = first {
                hit3 += 1;
                delays.push((t - on) as f64 / 60.0);
            }
        }
    }
    let mut false_alerts = 0;
    for (topic, starts) in &by_topic {
        for &t in starts {
            let explained = stream.labels.iter().any(|l| {
                l.topic == *topic && t >= l.onset.timestamp() && t <= l.end.timestamp() + GRACE_SECS
            });
            if !explained {
                false_alerts += 1;
                raw -= A_FP;
            }
        }
    }
    let null = -A_FN * stream.labels.len() as f64;
    let nab = if perfect - null > 0.0 {
        100.0 * (raw - null) / (perfect - null)
    } else {
        0.0
    };
    delays.sort_by(f64::total_cmp);
    let pct = |q: f64| -> Option<f64> {
        if delays.is_empty() {
            None
        } else {
            let i = ((delays.len() as f64 - 1.0) * q).round() as usize;
            Some(delays[i])
        }
    };
    let topic_months = stream.topics.len() as f64 * stream.options.days as f64 / 30.0;
    Score {
        detector: name.to_string(),
        bursts: stream.labels.len(),
        by_height,
        recall_3x: if n3 == 0 {
            0.0
        } else {
            hit3 as f64 / n3 as f64
        },
        median_delay_3x: pct(0.5),
        p90_delay_3x: pct(0.9),
        false_alerts,
        false_per_topic_30d: false_alerts as f64 / topic_months.max(1e-9),
        nab,
    }
}

/// A yardstick for recall: the share of bursts of 3× or more that a detector told each
/// topic's true seasonal rate (it need not learn anything) could catch at significance
/// `gate` per test, with at least `min_count` stories, allowing `phi` window overdispersion
/// (0.04 is the generator's hour-to-hour noise alone: the yardstick is also told each day's
/// intensity).
///
/// Per burst it tries windows of 15 minutes, 1 hour and 4 hours starting every 15 minutes
/// of the burst, takes the count a window must reach to pass the gate, and the chance that
/// the burst's Poisson count reaches it; the burst's figure is the best window's, picked
/// in hindsight. It is an estimate, not a bound, but a generous one: a real detector also
/// faces the day and hour noise, swings and reprints, and must pick its windows in advance.
pub fn recall_yardstick(stream: &Stream, gate: f64, phi: f64, min_count: u64) -> f64 {
    const SLICE: i64 = 300;
    let o = &stream.options;
    let swing = |t: i64| {
        let day = ((t - o.start) / 86_400) as u32;
        stream
            .swings
            .iter()
            .find(|(d, _)| *d == day)
            .map_or(1.0, |(_, s)| *s)
    };
    let mut sum = 0.0;
    let mut bursts = 0;
    for label in stream.labels.iter().filter(|l| l.height >= 3.0) {
        let Some(topic) = stream.topics.iter().find(|t| t.id == label.topic) else {
            continue;
        };
        let (on, off) = (label.onset.timestamp(), label.end.timestamp());
        let slices = (off - on) / SLICE;
        // Expected stories per slice without and with the burst, past its end by 4 hours.
        let (base, burst): (Vec<f64>, Vec<f64>) = (0..slices + 48)
            .map(|i| {
                let t = on + i * SLICE;
                let seasonal = seasonal_rate(topic, t);
                let extra = if t < off {
                    let m = label.shape.intensity((t - on) as f64, (off - on) as f64);
                    (label.height - 1.0) * seasonal.max(o.burst_floor_per_hour) * m
                } else {
                    0.0
                };
                let per_slice = swing(t) * SLICE as f64 / 3600.0;
                (seasonal * per_slice, (seasonal + extra) * per_slice)
            })
            .unzip();
        let mut best: f64 = 0.0;
        for len in [3usize, 12, 48] {
            for start in (0..slices as usize).step_by(3) {
                let mean: f64 = base[start..start + len].iter().sum();
                let with_burst: f64 = burst[start..start + len].iter().sum();
                let needed = passing_count(mean, mean + phi * mean * mean, gate, min_count);
                let p = statrs::distribution::Poisson::new(with_burst)
                    .map_or(0.0, |d| d.sf(needed.saturating_sub(1)));
                best = best.max(p);
            }
        }
        sum += best;
        bursts += 1;
    }
    if bursts == 0 {
        return f64::NAN;
    }
    sum / bursts as f64
}

/// The smallest count, at least `min_count`, whose upper tail under (`mean`, `variance`) is
/// at most `gate` (binary search: the tail falls as the count grows).
fn passing_count(mean: f64, variance: f64, gate: f64, min_count: u64) -> u64 {
    let (mut lo, mut hi) = (min_count.max(1), min_count.max(1));
    while crate::detect::upper_tail(hi, mean, variance) > gate {
        lo = hi + 1;
        hi = hi * 2 + 8;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if crate::detect::upper_tail(mid, mean, variance) > gate {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The detectors compared in docs/DETECTION.md: vigie's default, and ElastAlert's spike
/// rule as closely as the engine can express it (current hour against the previous hour,
/// articles counted, no smoothing, `threshold_cur` 5 and `threshold_ref` 3), plus the same
/// ratio rule counting stories.
pub fn contenders() -> Vec<(&'static str, DetectorConfig)> {
    use crate::detect::{CountUnit, DetectorKind};
    let base = DetectorConfig::default();
    let elastalert = DetectorConfig {
        kind: DetectorKind::Ratio,
        count: CountUnit::Articles,
        smoothing: 0.0,
        min_count: 5,
        ..base.clone()
    };
    let ratio_stories = DetectorConfig {
        kind: DetectorKind::Ratio,
        min_count: 5,
        ..base.clone()
    };
    vec![
        ("vigie baseline (default)", base),
        ("ElastAlert-style ratio (articles)", elastalert),
        ("ratio (stories)", ratio_stories),
    ]
}

/// The comparison table, in Markdown.
pub fn table(scores: &[Score]) -> String {
    let mut out = String::new();
    out.push_str("| detector | NAB score | recall ≥3× | median delay ≥3× (min) | p90 delay (min) | false alerts / topic / 30 d |");
    for h in HEIGHTS {
        out.push_str(&format!(" {h}× |"));
    }
    out.push('\n');
    out.push_str("|---|---:|---:|---:|---:|---:|");
    for _ in HEIGHTS {
        out.push_str("---:|");
    }
    out.push('\n');
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    for s in scores {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1}% | {} | {} | {:.2} |",
            s.detector,
            s.nab,
            s.recall_3x * 100.0,
            fmt(s.median_delay_3x),
            fmt(s.p90_delay_3x),
            s.false_per_topic_30d
        ));
        for (_, hit, n) in &s.by_height {
            out.push_str(&format!(" {hit}/{n} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_distinct() {
        let v: std::collections::HashSet<String> = (0..1000).map(letters).collect();
        assert_eq!(v.len(), 1000);
        assert_eq!(letters(0), "a");
        assert_eq!(letters(27), "bb");
    }

    #[test]
    fn sigmoid_rewards_early_detection() {
        assert!(sigmoid(-1.0) > 0.98);
        assert!(sigmoid(-0.5) > sigmoid(-0.1));
        assert!(sigmoid(0.0).abs() < 1e-12);
    }

    #[test]
    fn stream_is_deterministic_and_labelled() {
        let o = StreamOptions {
            days: 20,
            topics: 4,
            background_per_hour: 5.0,
            ..Default::default()
        };
        let a = synthesize(&o);
        let b = synthesize(&o);
        assert_eq!(a.articles.len(), b.articles.len());
        assert_eq!(a.articles[100].title, b.articles[100].title);
        assert!(!a.labels.is_empty());
        let first = a.options.start + 7 * 86_400;
        assert!(a.labels.iter().all(|l| l.onset.timestamp() >= first));
        assert!(a
            .articles
            .windows(2)
            .all(|w| w[0].published_at <= w[1].published_at));
    }

    #[test]
    fn syndicated_copies_collapse_into_one_story_each() {
        let o = StreamOptions {
            days: 6,
            topics: 6,
            ..Default::default()
        };
        let s = synthesize(&o);
        let p = prepare(&s);
        let mut engine = Engine::new(EngineSettings::default(), p.matcher.clone());
        for (a, m) in s.articles.iter().zip(&p.matches) {
            engine.ingest(a, m, None);
        }
        let matched: Vec<&Article> = s
            .articles
            .iter()
            .zip(&p.matches)
            .filter(|(_, m)| !m.rule_indices.is_empty())
            .map(|(a, _)| a)
            .collect();
        let titles: std::collections::HashSet<&str> =
            matched.iter().map(|a| a.title.as_str()).collect();
        let stories: u64 = engine
            .rules
            .values()
            .flat_map(|r| r.buckets.values())
            .map(|b| b.stories as u64)
            .sum();
        assert!(
            matched.len() > titles.len() * 3 / 2,
            "the stream has copies"
        );
        assert_eq!(stories, titles.len() as u64);
    }

    #[test]
    fn scorer_counts_hits_misses_and_false_alarms() {
        let o = StreamOptions {
            days: 20,
            topics: 2,
            background_per_hour: 1.0,
            ..Default::default()
        };
        let s = synthesize(&o);
        let l = &s.labels[0];
        let mut e = crate::sink::render::sample_event();
        e.rule = l.topic.clone();
        e.at = l.onset + chrono::Duration::minutes(5);
        let mut fa = e.clone();
        fa.at = l.onset - chrono::Duration::days(3);
        let sc = score(&s, "t", &[e, fa]);
        assert_eq!(sc.false_alerts, 1);
        assert_eq!(sc.median_delay_3x.is_some(), l.height >= 3.0);
        let hits: usize = sc.by_height.iter().map(|x| x.1).sum();
        assert_eq!(hits, 1);
        let none = score(&s, "none", &[]);
        assert!(none.nab.abs() < 1e-9);
        assert!(sc.nab > none.nab);
    }
}
