//! Spike detectors and the alert lifecycle.
//!
//! A detector sees one rule's bucketed story counts and answers, at an event time `t`,
//! whether the rule is surging. Three kinds exist:
//!
//! * `baseline` (default): expected count per bucket = level × hour-of-day factor ×
//!   day-of-week factor, all learned online with exponential moving averages from finished
//!   buckets, clipped so a surge does not teach the baseline that surges are normal, with an
//!   overdispersion estimate. A window is surging when the smoothed ratio
//!   `(observed + s) / (expected + s)` passes `ratio`, the negative-binomial upper tail
//!   probability of the observed count is below `p_value / number of rules` (Bonferroni), and
//!   at least `min_count` stories were seen.
//! * `threshold`: at least `threshold` stories in the window.
//! * `ratio`: the window against the window before it, as ElastAlert's spike rule, but with
//!   `min_count` on the current window and `min_previous` on the previous one so 0-vs-0
//!   (or 1-vs-0) never fires.
//!
//! The lifecycle is the same for all: `started` once per onset, `updated` when the window
//! count has grown by `update_factor` since the last notice, `resolved` once the condition
//! has stayed false for `resolve_after_minutes`, then `cooldown_minutes` before a new onset.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use statrs::distribution::{DiscreteCDF, NegativeBinomial, Poisson};

/// What a detector counts per bucket.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CountUnit {
    /// Distinct stories: syndicated copies of one article count once. A single wire story
    /// reprinted forty times is one story, not a spike.
    #[default]
    Stories,
    /// Every matching article, copies included (what ElastAlert's spike rule counts).
    Articles,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    #[default]
    Baseline,
    Threshold,
    Ratio,
}

/// The significance gate is shared by at least this many rules, however few are loaded.
///
/// Sharing `p_value` among the rules (Bonferroni) keeps the false alerts of the whole
/// deployment about constant as rules are added, so each rule's own rate falls as 1/rules;
/// without a floor a deployment of five rules would see each rule start a false alert every
/// few days. With it, a rule's false-alert rate is at most what it is among 50 rules (about
/// one a month at the defaults, see docs/DETECTION.md) and only falls below as rules are added.
pub const MIN_FAMILY: usize = 50;

/// Service-wide detector defaults (`[detector]` in vigie.toml).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    pub kind: DetectorKind,
    /// What is counted: stories (default) or articles.
    pub count: CountUnit,
    /// Length of the alert window.
    pub window_minutes: u32,
    /// `baseline` detector: a shorter window also tested, so a sharp onset is caught
    /// within minutes instead of waiting for the alert window to fill (0 = off).
    pub fast_window_minutes: u32,
    /// `baseline` detector: a longer window also tested, so a moderate surge that lasts
    /// is caught even when no single hour is conclusive (0 = off). The significance gate is
    /// divided by the number of windows tested.
    pub slow_window_minutes: u32,
    /// Minimum smoothed observed/expected ratio.
    pub ratio: f64,
    /// Additive smoothing in the ratio, so tiny expectations do not give huge ratios.
    pub smoothing: f64,
    /// Significance level before the correction for the number of rules.
    pub p_value: f64,
    /// Minimum stories in the window.
    pub min_count: u64,
    /// `ratio` detector: minimum stories in the previous window.
    pub min_previous: u64,
    /// `threshold` detector: stories in the window that fire.
    pub threshold: u64,
    /// Send `updated` when the window count grows by this factor since the last notice.
    pub update_factor: f64,
    pub resolve_after_minutes: u32,
    pub cooldown_minutes: u32,
    /// No `baseline` alerts before this much history has been seen.
    pub warmup_hours: u32,
    /// Half-life of the baseline level's moving average.
    pub halflife_hours: f64,
    /// Scale the expectation by the feed's own volume swing (`baseline` detector): when the
    /// whole feed doubles (a big news day elsewhere, a new source), a rule's expected count
    /// doubles with it, so only a rising *share* of coverage is a spike.
    pub share_of_volume: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            kind: DetectorKind::Baseline,
            count: CountUnit::Stories,
            window_minutes: 60,
            fast_window_minutes: 15,
            slow_window_minutes: 240,
            ratio: 2.0,
            smoothing: 1.0,
            p_value: 0.02,
            min_count: 3,
            min_previous: 3,
            threshold: 20,
            update_factor: 2.0,
            resolve_after_minutes: 120,
            cooldown_minutes: 360,
            warmup_hours: 48,
            halflife_hours: 72.0,
            share_of_volume: true,
        }
    }
}

/// Per-rule overrides (`[rule.spike]`); every field optional.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectorOverrides {
    pub kind: Option<DetectorKind>,
    pub count: Option<CountUnit>,
    pub window_minutes: Option<u32>,
    pub fast_window_minutes: Option<u32>,
    pub slow_window_minutes: Option<u32>,
    pub ratio: Option<f64>,
    pub smoothing: Option<f64>,
    pub p_value: Option<f64>,
    pub min_count: Option<u64>,
    pub min_previous: Option<u64>,
    pub threshold: Option<u64>,
    pub update_factor: Option<f64>,
    pub resolve_after_minutes: Option<u32>,
    pub cooldown_minutes: Option<u32>,
    pub warmup_hours: Option<u32>,
    pub halflife_hours: Option<f64>,
    pub share_of_volume: Option<bool>,
}

impl DetectorConfig {
    pub fn with(&self, o: &DetectorOverrides) -> DetectorConfig {
        DetectorConfig {
            kind: o.kind.unwrap_or(self.kind),
            count: o.count.unwrap_or(self.count),
            window_minutes: o.window_minutes.unwrap_or(self.window_minutes),
            fast_window_minutes: o.fast_window_minutes.unwrap_or(self.fast_window_minutes),
            slow_window_minutes: o.slow_window_minutes.unwrap_or(self.slow_window_minutes),
            ratio: o.ratio.unwrap_or(self.ratio),
            smoothing: o.smoothing.unwrap_or(self.smoothing),
            p_value: o.p_value.unwrap_or(self.p_value),
            min_count: o.min_count.unwrap_or(self.min_count),
            min_previous: o.min_previous.unwrap_or(self.min_previous),
            threshold: o.threshold.unwrap_or(self.threshold),
            update_factor: o.update_factor.unwrap_or(self.update_factor),
            resolve_after_minutes: o
                .resolve_after_minutes
                .unwrap_or(self.resolve_after_minutes),
            cooldown_minutes: o.cooldown_minutes.unwrap_or(self.cooldown_minutes),
            warmup_hours: o.warmup_hours.unwrap_or(self.warmup_hours),
            halflife_hours: o.halflife_hours.unwrap_or(self.halflife_hours),
            share_of_volume: o.share_of_volume.unwrap_or(self.share_of_volume),
        }
    }
}

/// The learned baseline of one rule. Serializable: it lives in the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// Mean stories per bucket, de-seasonalized.
    pub level: f64,
    /// Mean squared residual, for the overdispersion estimate.
    pub sq_resid: f64,
    /// Multiplicative hour-of-day factors (mean 1).
    pub hour: Vec<f64>,
    /// Multiplicative day-of-week factors (mean 1), Monday first.
    pub dow: Vec<f64>,
    /// Finished buckets learned from.
    pub buckets_seen: u64,
    /// Overdispersion of whole alert windows: their variance is `mean + phi × mean²`.
    /// Learned from window sums, not single buckets, because real coverage varies by hour
    /// and by day, so the buckets of one window are not independent.
    #[serde(default = "default_phi")]
    pub phi: f64,
    /// Windows learned from (for `phi`).
    #[serde(default)]
    pub windows_seen: u64,
    /// Forecasts of windows not yet finished: (last bucket of the window, expected
    /// stories), each made before the window's first bucket was learned. `phi` is learned
    /// against them, out of sample, as alerts are judged.
    #[serde(default)]
    pub forecasts: VecDeque<(i64, f64)>,
}

/// Window overdispersion assumed before any is learned: a coefficient of variation of
/// about 30% on top of Poisson noise.
fn default_phi() -> f64 {
    0.1
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline {
            level: 0.0,
            sq_resid: 0.0,
            hour: vec![1.0; 24],
            dow: vec![1.0; 7],
            buckets_seen: 0,
            phi: default_phi(),
            windows_seen: 0,
            forecasts: VecDeque::new(),
        }
    }
}

/// Seasonal position of a bucket.
#[derive(Debug, Clone, Copy)]
pub struct Season {
    pub hour: usize,
    pub dow: usize,
}

impl Season {
    pub fn of(unix: i64) -> Season {
        let days = unix.div_euclid(86_400);
        Season {
            hour: (unix.rem_euclid(86_400) / 3600) as usize,
            // 1970-01-01 was a Thursday (index 3 with Monday = 0).
            dow: ((days + 3).rem_euclid(7)) as usize,
        }
    }
}

impl Baseline {
    /// Expected stories in one bucket at `season`.
    pub fn expected(&self, season: Season) -> f64 {
        self.level * self.hour[season.hour] * self.dow[season.dow]
    }

    /// Expected stories in the `n` buckets of `bucket_secs` starting at `from`: the sum of
    /// [`Baseline::expected`] over them, taken an hour at a time (the factors only change on
    /// the hour), so a six-hour sum of 5-minute buckets costs 7 products instead of 72. It
    /// runs for every rule at every bucket, which made the per-bucket sum a tenth of the
    /// engine's time at 10,000 rules.
    pub fn expected_sum(&self, from: i64, n: i64, bucket_secs: i64) -> f64 {
        let bs = bucket_secs.max(1);
        let (mut t, end) = (from, from + n.max(0) * bs);
        let mut sum = 0.0;
        while t < end {
            // Bucket starts in [t, next hour), each counted at the season of its start.
            let next_hour = (t.div_euclid(3600) + 1) * 3600;
            let k = ((next_hour.min(end) - t) + bs - 1) / bs;
            let s = Season::of(t);
            sum += k as f64 * self.hour[s.hour] * self.dow[s.dow];
            t += k * bs;
        }
        self.level * sum
    }

    /// Learns from one finished bucket. `count` is clipped to a robust upper bound first.
    ///
    /// `prior` is a seasonal profile to lean on (the whole feed's): a topic with a few
    /// stories an hour cannot learn its own hour-of-day rhythm from its counts in days, so
    /// its factors follow the prior in proportion to how little it has to learn from.
    ///
    /// `slow` quarters the learning rate: used while an alert is open, so a surge is not
    /// learned as normal within hours, yet a lasting change of level is, within days.
    pub fn learn(
        &mut self,
        count: f64,
        season: Season,
        buckets_per_day: f64,
        halflife_hours: f64,
        prior: Option<&Baseline>,
        slow: bool,
    ) {
        let expected = self.expected(season);
        let sd = (expected + self.overdispersion_var(expected)).sqrt();
        // During warm-up take counts as they are; later clip spikes to expected + 4 sd + 1.
        let x = if self.buckets_seen < buckets_per_day as u64 {
            count
        } else {
            count.min(expected + 4.0 * sd + 1.0)
        };
        let bucket_hours = 24.0 / buckets_per_day;
        let alpha = 1.0 - 0.5f64.powf(bucket_hours / halflife_hours.max(bucket_hours));
        // Faster learning at the start so the first days are usable.
        let alpha = alpha.max(1.0 / (self.buckets_seen as f64 + 1.0));
        let alpha = if slow { alpha / 4.0 } else { alpha };
        let season_factor = self.hour[season.hour] * self.dow[season.dow];
        let deseasonalized = if season_factor > 0.0 {
            x / season_factor
        } else {
            x
        };
        self.level += alpha * (deseasonalized - self.level);
        let resid = x - expected;
        self.sq_resid += alpha * (resid * resid - self.sq_resid);
        if self.level > 1e-9 && self.buckets_seen >= buckets_per_day as u64 {
            // Each hour-of-day factor is updated by the buckets of one hour a day, each
            // day-of-week factor by one day's buckets a week: rates chosen so both settle
            // within a few of their periods (about three days, about two weeks).
            let per_hour = buckets_per_day / 24.0;
            let gamma = (1.0 / (per_hour * 2.5)).min(0.2);
            let gamma_d = 1.0 / (buckets_per_day * 1.5);
            // Own evidence weighs fully from 4 stories an hour up.
            let own = match prior {
                Some(_) => (self.level * per_hour / 4.0).min(1.0),
                None => 1.0,
            };
            let target_h = x / (self.level * self.dow[season.dow]).max(1e-9);
            let (prior_h, prior_d) =
                prior.map_or((1.0, 1.0), |p| (p.hour[season.hour], p.dow[season.dow]));
            let h = &mut self.hour[season.hour];
            *h += own * gamma * (target_h.clamp(0.05, 20.0) - *h);
            *h = (*h + (1.0 - own) * gamma * (prior_h - *h)).clamp(0.05, 20.0);
            let target_d = x / (self.level * self.hour[season.hour]).max(1e-9);
            let d = &mut self.dow[season.dow];
            *d += own * gamma_d * (target_d.clamp(0.05, 20.0) - *d);
            *d = (*d + (1.0 - own) * gamma_d * (prior_d - *d)).clamp(0.05, 20.0);
            renormalize(&mut self.hour);
            renormalize(&mut self.dow);
        }
        self.buckets_seen += 1;
    }

    /// Learns window overdispersion from one complete window of `sum` stories where `mean`
    /// were expected. Windows expected to hold less than one story say nothing about it.
    pub fn learn_window(&mut self, sum: f64, mean: f64, bucket_hours: f64, halflife_hours: f64) {
        if mean < 1.0 {
            return;
        }
        // Spikes are clipped as in `learn`, so a surge does not teach that surges are noise.
        let sd = (mean + self.phi * mean * mean).sqrt();
        let x = sum.min(mean + 4.0 * sd + 1.0);
        // The moment estimate is often negative (a window close to its mean); keeping those
        // is what makes the average unbiased. Only the variance formula floors phi at 0.
        let estimate = (((x - mean).powi(2) - mean) / (mean * mean)).clamp(-2.0, 4.0);
        let alpha = 1.0 - 0.5f64.powf(bucket_hours / halflife_hours.max(bucket_hours));
        // Start from the prior and move off it as evidence comes in.
        let alpha = alpha.max(1.0 / (self.windows_seen as f64 + 10.0));
        self.phi += alpha * (estimate - self.phi);
        self.windows_seen += 1;
    }

    /// Variance in excess of Poisson per bucket with mean `expected`.
    fn overdispersion_var(&self, expected: f64) -> f64 {
        (self.sq_resid - self.level.max(expected)).max(0.0)
    }

    /// Variance of a window sum with total mean `mean` (negative-binomial form).
    pub fn window_variance(&self, mean: f64) -> f64 {
        mean + self.phi.max(0.0) * mean * mean
    }
}

fn renormalize(v: &mut [f64]) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    if mean > 0.0 {
        v.iter_mut().for_each(|x| *x /= mean);
    }
}

/// Upper tail probability P(X ≥ observed) under a negative binomial with this mean and
/// variance (Poisson when not overdispersed).
pub fn upper_tail(observed: u64, mean: f64, variance: f64) -> f64 {
    if observed == 0 {
        return 1.0;
    }
    let mean = mean.max(1e-6);
    if variance > mean * 1.05 {
        // NB with r successes: mean = r(1-p)/p, var = mean/p.
        let p = (mean / variance).clamp(1e-9, 1.0 - 1e-9);
        let r = mean * p / (1.0 - p);
        if let Ok(nb) = NegativeBinomial::new(r, p) {
            return nb.sf(observed - 1).clamp(0.0, 1.0);
        }
    }
    match Poisson::new(mean) {
        Ok(p) => p.sf(observed - 1).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// What the detector sees at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowView {
    /// Stories in the current window.
    pub observed: u64,
    /// Expected stories in the current window.
    pub expected: f64,
    /// Variance of the expected window sum.
    pub variance: f64,
    /// Stories in the window before (for the `ratio` detector).
    pub previous: u64,
    /// Whether the baseline has seen enough history.
    pub warmed_up: bool,
}

/// The figures behind a decision; carried by every alert event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// The window passes every gate: an alert may start.
    pub surging: bool,
    /// The window is still clearly above normal (relaxed gates): an open alert stays open.
    /// The gap between the two is hysteresis, so an alert does not flap at the threshold.
    pub elevated: bool,
    pub observed: u64,
    pub expected: f64,
    pub ratio: f64,
    pub p_value: f64,
}

/// Decides whether a window is surging. `tests` is the number of tests the significance
/// gate is shared by (rules × windows per rule).
pub fn evaluate(cfg: &DetectorConfig, w: &WindowView, tests: usize) -> Verdict {
    let relaxed_ratio = 1.0 + (cfg.ratio - 1.0) / 2.0;
    let (expected, ratio, p_value, surging, elevated) = match cfg.kind {
        DetectorKind::Baseline => {
            let ratio = (w.observed as f64 + cfg.smoothing) / (w.expected + cfg.smoothing);
            // The tail (an incomplete beta function, the costliest step here) matters only
            // when the cheap relaxed gates pass, and both verdicts need them; otherwise it
            // is left NaN, and [`Verdict::with_tail`] fills it in for an event.
            let could = w.observed * 2 >= cfg.min_count && ratio >= relaxed_ratio;
            let p = if could {
                upper_tail(w.observed, w.expected, w.variance)
            } else {
                f64::NAN
            };
            let gate = cfg.p_value / tests.max(1) as f64;
            let surging =
                w.warmed_up && w.observed >= cfg.min_count && ratio >= cfg.ratio && p <= gate;
            let elevated = could && p <= gate.sqrt();
            (w.expected, ratio, p, surging, elevated)
        }
        DetectorKind::Threshold => {
            let t = cfg.threshold.max(1);
            (
                t as f64,
                w.observed as f64 / t as f64,
                f64::NAN,
                w.observed >= t,
                w.observed * 2 >= t,
            )
        }
        DetectorKind::Ratio => {
            let prev = w.previous as f64;
            let ratio = (w.observed as f64 + cfg.smoothing) / (prev + cfg.smoothing);
            let surging =
                w.observed >= cfg.min_count && w.previous >= cfg.min_previous && ratio >= cfg.ratio;
            // Compared with the previous window, a sustained surge looks flat: once open,
            // the alert stays while the count holds at half its start level or more.
            let elevated = w.observed >= cfg.min_count && ratio >= 0.5;
            (prev, ratio, f64::NAN, surging, elevated)
        }
    };
    Verdict {
        surging,
        elevated,
        observed: w.observed,
        expected,
        ratio,
        p_value,
    }
}

impl Verdict {
    /// A `baseline` verdict with its tail probability computed if [`evaluate`] skipped it,
    /// for the figures of an event (`variance` as in the [`WindowView`] it came from).
    pub fn with_tail(self, variance: f64) -> Verdict {
        if !self.p_value.is_nan() {
            return self;
        }
        Verdict {
            p_value: upper_tail(self.observed, self.expected, variance),
            ..self
        }
    }
}

/// Alert lifecycle state of one rule. Serializable: it lives in the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Lifecycle {
    /// The open alert, if any.
    pub active: Option<ActiveAlert>,
    /// No new onset before this event time (unix seconds).
    pub cooldown_until: i64,
    /// Onsets so far; makes alert ids unique per rule.
    pub onsets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveAlert {
    /// `<rule>:<onset number>`; stable across restarts.
    pub alert_id: String,
    pub started_at: i64,
    /// Window count at the last notice (started or updated).
    pub last_notified: u64,
    pub peak: u64,
    /// Notices sent so far for this alert; numbers event ids.
    pub notices: u64,
    /// Since when the condition has been false, if it is.
    pub below_since: Option<i64>,
}

/// Ordered as an alert lives them: a start, growth, an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Started,
    Updated,
    Resolved,
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Updated => "updated",
            EventKind::Resolved => "resolved",
        }
    }
}

/// A lifecycle transition decided at event time `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub kind: EventKind,
    pub alert_id: String,
    pub event_id: String,
    pub started_at: i64,
    pub at: i64,
}

impl Lifecycle {
    /// Applies one verdict at event time `at`; returns the transition it causes, if any.
    pub fn step(
        &mut self,
        rule_id: &str,
        cfg: &DetectorConfig,
        v: &Verdict,
        at: i64,
    ) -> Option<Transition> {
        match &mut self.active {
            None => {
                if v.surging && at >= self.cooldown_until {
                    self.onsets += 1;
                    let alert_id = format!("{rule_id}:{}", self.onsets);
                    self.active = Some(ActiveAlert {
                        alert_id: alert_id.clone(),
                        started_at: at,
                        last_notified: v.observed,
                        peak: v.observed,
                        notices: 1,
                        below_since: None,
                    });
                    return Some(Transition {
                        kind: EventKind::Started,
                        event_id: format!("{alert_id}:started"),
                        alert_id,
                        started_at: at,
                        at,
                    });
                }
                None
            }
            Some(a) => {
                a.peak = a.peak.max(v.observed);
                if v.surging {
                    a.below_since = None;
                    if v.observed as f64 >= a.last_notified as f64 * cfg.update_factor
                        && v.observed > a.last_notified
                    {
                        a.last_notified = v.observed;
                        a.notices += 1;
                        return Some(Transition {
                            kind: EventKind::Updated,
                            event_id: format!("{}:updated:{}", a.alert_id, a.notices),
                            alert_id: a.alert_id.clone(),
                            started_at: a.started_at,
                            at,
                        });
                    }
                    return None;
                }
                if v.elevated {
                    a.below_since = None;
                    return None;
                }
                let since = *a.below_since.get_or_insert(at);
                if at - since >= cfg.resolve_after_minutes as i64 * 60 {
                    let t = Transition {
                        kind: EventKind::Resolved,
                        event_id: format!("{}:resolved", a.alert_id),
                        alert_id: a.alert_id.clone(),
                        started_at: a.started_at,
                        at,
                    };
                    self.active = None;
                    self.cooldown_until = at + cfg.cooldown_minutes as i64 * 60;
                    return Some(t);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_sum_equals_the_sum_of_buckets() {
        let b = Baseline {
            level: 1.7,
            hour: (0..24).map(|i| 0.5 + i as f64 / 24.0).collect(),
            dow: (0..7).map(|i| 0.6 + i as f64 / 10.0).collect(),
            ..Default::default()
        };
        // Bucket sizes that divide the hour and one that does not; starts on and off it.
        for bs in [60, 300, 420, 3600, 7200] {
            for from in [0, 299, 1_641_000_000, 1_641_001_234, -86_400 - 17] {
                for n in [0, 1, 3, 12, 48, 72, 500] {
                    let plain: f64 = (0..n).map(|i| b.expected(Season::of(from + i * bs))).sum();
                    let fast = b.expected_sum(from, n, bs);
                    assert!(
                        (plain - fast).abs() <= 1e-9 * plain.max(1.0),
                        "bs {bs} from {from} n {n}: {plain} vs {fast}"
                    );
                }
            }
        }
    }

    #[test]
    fn season_of_known_dates() {
        // 2022-01-05 was a Wednesday.
        let s = Season::of(1_641_384_000); // 2022-01-05T12:00:00Z
        assert_eq!((s.hour, s.dow), (12, 2));
    }

    #[test]
    fn upper_tail_is_small_for_surges_and_one_for_zero() {
        assert_eq!(upper_tail(0, 3.0, 3.0), 1.0);
        assert!(upper_tail(30, 3.0, 3.0) < 1e-10);
        assert!(upper_tail(3, 3.0, 3.0) > 0.3);
        // Overdispersion makes the same count less surprising.
        assert!(upper_tail(10, 3.0, 30.0) > upper_tail(10, 3.0, 3.0));
    }

    #[test]
    fn ratio_detector_never_fires_on_zero_vs_zero() {
        let cfg = DetectorConfig {
            kind: DetectorKind::Ratio,
            ..Default::default()
        };
        let w = WindowView {
            observed: 0,
            expected: 0.0,
            variance: 0.0,
            previous: 0,
            warmed_up: true,
        };
        assert!(!evaluate(&cfg, &w, 1).surging);
        let w = WindowView {
            observed: 4,
            previous: 0,
            ..w
        };
        assert!(!evaluate(&cfg, &w, 1).surging);
        let w = WindowView {
            observed: 40,
            previous: 4,
            ..w
        };
        assert!(evaluate(&cfg, &w, 1).surging);
    }

    #[test]
    fn baseline_learns_level_and_resists_spikes() {
        let mut b = Baseline::default();
        for i in 0..2000 {
            let t = i * 300;
            let count = if i == 1500 { 200.0 } else { 2.0 };
            b.learn(count, Season::of(t), 288.0, 72.0, None, false);
        }
        assert!((b.level - 2.0).abs() < 0.5, "level {}", b.level);
    }

    #[test]
    fn lifecycle_starts_once_updates_and_resolves() {
        let cfg = DetectorConfig {
            resolve_after_minutes: 60,
            cooldown_minutes: 60,
            ..Default::default()
        };
        let mut l = Lifecycle::default();
        let hot = |n| Verdict {
            surging: true,
            elevated: true,
            observed: n,
            expected: 1.0,
            ratio: n as f64,
            p_value: 0.0,
        };
        let warm = Verdict {
            surging: false,
            elevated: true,
            observed: 3,
            expected: 1.0,
            ratio: 2.0,
            p_value: 0.01,
        };
        let cold = Verdict {
            surging: false,
            elevated: false,
            observed: 0,
            expected: 1.0,
            ratio: 0.5,
            p_value: 1.0,
        };
        assert_eq!(
            l.step("r", &cfg, &hot(10), 0).unwrap().kind,
            EventKind::Started
        );
        assert!(l.step("r", &cfg, &hot(12), 300).is_none());
        assert_eq!(
            l.step("r", &cfg, &hot(25), 600).unwrap().kind,
            EventKind::Updated
        );
        // Still elevated for hours: stays open.
        assert!(l.step("r", &cfg, &warm, 700).is_none());
        assert!(l.step("r", &cfg, &warm, 700 + 5 * 3600).is_none());
        assert!(l.step("r", &cfg, &cold, 900).is_none());
        let r = l.step("r", &cfg, &cold, 900 + 3600).unwrap();
        assert_eq!(r.kind, EventKind::Resolved);
        assert_eq!(r.alert_id, "r:1");
        // Cooldown holds back a new onset.
        assert!(l.step("r", &cfg, &hot(50), 900 + 3600 + 60).is_none());
        assert_eq!(
            l.step("r", &cfg, &hot(50), 900 + 7200 + 60)
                .unwrap()
                .alert_id,
            "r:2"
        );
    }
}
