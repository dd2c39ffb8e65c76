//! Quiet hours: the recurring times when a channel is not to be notified.
//!
//! A desk editor wants the night's alerts in the morning, not at 03:00; a pager rota has its
//! weekends. A [silence](crate::silence) is a one-off span for some rules; quiet hours are a
//! property of a channel, repeating by the week, in the channel's own time zone:
//!
//! ```toml
//! [channels.desk]
//! type = "email"
//! to = ["desk@example.org"]
//! timezone = "Europe/Paris"
//! quiet_hours = ["20:00-07:30", "sat,sun"]
//! quiet_action = "hold"        # or "drop"
//! ```
//!
//! Semantics, which [`crate::sink::outbox`] implements:
//!
//! * A window is `[DAYS] [HH:MM-HH:MM]`: days alone are whole days; times alone are every
//!   day; a window whose end is not after its start runs past midnight, and its days are
//!   the days it *starts* on (`fri 22:00-07:00` is Friday night into Saturday morning).
//!   `24:00` is the end of a day. Times are the channel's local wall-clock times, so a
//!   window follows daylight-saving changes.
//! * Windows that overlap or touch make one quiet period: with `["20:00-07:30", "sat,sun"]`
//!   the period that starts on Friday evening ends on Monday at 07:30, not on Saturday
//!   morning.
//! * The decision is taken when a delivery falls due, like a silence's (silences are
//!   applied first). With `hold` (the default), a delivery falling due in a quiet period
//!   waits until it ends; all the deliveries released then go out as one notification
//!   per channel (a digest), and their retries, should the receiver be down at that moment,
//!   are counted from the release, not from the event. With `drop`, it is marked
//!   `silenced` and never sent.
//! * Nothing upstream changes: rules count, alerts start and resolve, events are stored and
//!   listed, whatever the hour.
//!
//! A schedule that leaves no time at all in the week is refused: the channel would never
//! deliver (remove it from the rules' `notify` for that).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const ALL_DAYS: u8 = 0b111_1111;
const DAY_MINUTES: u16 = 24 * 60;

/// One recurring window of a channel's quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuietWindow {
    /// The days it starts on, Monday in bit 0.
    days: u8,
    /// Start, in minutes after local midnight.
    from: u16,
    /// End, in minutes after local midnight (1..=1440); at or before `from`, the next day's.
    to: u16,
}

impl QuietWindow {
    /// The window's occurrences that start on `date` or the day before (the only ones
    /// that can contain a time on `date`), as local start and end.
    fn around(&self, date: NaiveDate) -> impl Iterator<Item = (NaiveDateTime, NaiveDateTime)> + '_ {
        [date.pred_opt(), Some(date)]
            .into_iter()
            .flatten()
            .filter(|d| self.days & (1 << d.weekday().num_days_from_monday()) != 0)
            .map(|d| {
                let midnight = d.and_time(chrono::NaiveTime::MIN);
                let start = midnight + Duration::minutes(self.from.into());
                let mut end = midnight + Duration::minutes(self.to.into());
                if self.to <= self.from {
                    end += Duration::days(1);
                }
                (start, end)
            })
    }
}

/// Why a window could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quiet hours `{text}`: {reason} (write `[DAYS] [HH:MM-HH:MM]`, e.g. `22:00-07:00`, `mon-fri 19:00-08:00`, `sat,sun`)")]
pub struct WindowError {
    text: String,
    reason: String,
}

/// A day by its English name or its first three letters (chrono reads both).
fn parse_day(s: &str) -> Option<u32> {
    chrono::Weekday::from_str(s.trim())
        .ok()
        .map(|d| d.num_days_from_monday())
}

fn parse_days(s: &str) -> Result<u8, String> {
    let mut days = 0u8;
    for part in s.split(',') {
        let unknown = |d: &str| {
            format!(
                "`{}` is not a day (mon, tue, wed, thu, fri, sat, sun)",
                d.trim()
            )
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let a = parse_day(a).ok_or_else(|| unknown(a))?;
                let b = parse_day(b).ok_or_else(|| unknown(b))?;
                // A range may wrap past Sunday: `fri-mon`.
                let mut d = a;
                loop {
                    days |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << parse_day(part).ok_or_else(|| unknown(part))?,
        }
    }
    Ok(days)
}

/// `HH:MM` in minutes after midnight; `24:00` allowed when `end`.
fn parse_time(s: &str, end: bool) -> Result<u16, String> {
    let bad = || format!("`{s}` is not a time of day (HH:MM)");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && (m > 0 || !end)) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl FromStr for QuietWindow {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| WindowError {
            text: text.to_string(),
            reason,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(err("it is empty".into()));
        }
        // The times, if any, are the last word (the one with digits); the days come before.
        let timelike = |w: &str| w.contains(|c: char| c.is_ascii_digit());
        let (days, times) = match t.rsplit_once(char::is_whitespace) {
            Some((d, h)) if timelike(h) => (d.trim(), Some(h)),
            None if timelike(t) => ("", Some(t)),
            _ => (t, None),
        };
        let days = match days {
            "" => ALL_DAYS,
            d => parse_days(&d.split_whitespace().collect::<String>()).map_err(err)?,
        };
        let (from, to) = match times {
            Some(h) => {
                let (a, b) = h
                    .split_once('-')
                    .ok_or_else(|| err(format!("`{h}` is not a span of time (HH:MM-HH:MM)")))?;
                let from = parse_time(a, false).map_err(err)?;
                let to = parse_time(b, true).map_err(err)?;
                if from == to {
                    // A whole day or nothing? Whole days are said with the days alone.
                    return Err(err(
                        "it starts and ends at the same time; for whole days give the days alone"
                            .into(),
                    ));
                }
                (from, to)
            }
            None => (0, DAY_MINUTES),
        };
        Ok(QuietWindow { days, from, to })
    }
}

impl TryFrom<String> for QuietWindow {
    type Error = WindowError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<QuietWindow> for String {
    fn from(w: QuietWindow) -> String {
        w.to_string()
    }
}

/// Days as written back: `mon,tue,sat`.
fn day_names(days: u8) -> String {
    let names: Vec<&str> = (0..7)
        .filter(|d| days & (1 << d) != 0)
        .map(|d| DAY_NAMES[d])
        .collect();
    names.join(",")
}

impl fmt::Display for QuietWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days != ALL_DAYS {
            f.write_str(&day_names(self.days))?;
            if (self.from, self.to) == (0, DAY_MINUTES) {
                return Ok(());
            }
            f.write_str(" ")?;
        }
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.from), hm(self.to))
    }
}

/// What becomes of a delivery that falls due in quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuietAction {
    /// Sent when the quiet period ends, with the others held, as one notification.
    #[default]
    Hold,
    /// Marked `silenced`; never sent.
    Drop,
}

/// A channel's quiet hours.
#[derive(Debug, Clone, PartialEq)]
pub struct QuietHours {
    pub windows: Vec<QuietWindow>,
    pub tz: Tz,
    pub action: QuietAction,
}

/// How far [`QuietHours::until`] follows windows that touch: past a week, a schedule
/// covers all the time there is.
const LONGEST_PERIOD_DAYS: i64 = 8;

impl QuietHours {
    /// The end of the quiet period `local` (wall-clock time in the channel's zone) falls
    /// in, windows that overlap or touch taken together; `local` itself when it is not
    /// quiet. Stops after [`LONGEST_PERIOD_DAYS`].
    fn end_from(&self, local: NaiveDateTime) -> NaiveDateTime {
        let limit = local + Duration::days(LONGEST_PERIOD_DAYS);
        let mut t = local;
        while t < limit {
            let end = (self.windows.iter())
                .flat_map(|w| w.around(t.date()))
                .filter(|&(start, end)| start <= t && t < end)
                .map(|(_, end)| end)
                .max();
            match end {
                Some(end) => t = end,
                None => break,
            }
        }
        t
    }

    /// When the quiet period that `now` falls in ends, or None when `now` is not quiet.
    pub fn until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut local = now.with_timezone(&self.tz).naive_local();
        let mut until = None;
        // An end in the hour a spring change skips moves to a later time, which another
        // window may hold: go on from there.
        for _ in 0..4 {
            let end = self.end_from(local);
            if end <= local {
                break;
            }
            let at = self.to_utc(end);
            until = Some(at);
            local = at.with_timezone(&self.tz).naive_local();
            if local == end {
                break;
            }
        }
        until
    }

    fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        local_to_utc(self.tz, local)
    }

    /// Refuses a schedule with no time left in the week to deliver in.
    pub fn check(&self) -> Result<(), String> {
        // Any Monday midnight: if the period from there reaches the limit, no gap exists
        // (a gap anywhere in the week would have ended it before).
        let monday = NaiveDate::from_isoywd_opt(2026, 1, chrono::Weekday::Mon)
            .expect("a valid ISO week")
            .and_time(chrono::NaiveTime::MIN);
        let end = self.end_from(monday);
        if end >= monday + Duration::days(LONGEST_PERIOD_DAYS) {
            return Err(
                "quiet_hours leave no time in the week: the channel would never deliver".into(),
            );
        }
        Ok(())
    }

    /// The schedule as written, for logs and the API: `22:00-07:00, sat,sun (Europe/Paris)`.
    pub fn describe(&self) -> String {
        let w: Vec<String> = self.windows.iter().map(ToString::to_string).collect();
        format!("{} ({})", w.join(", "), self.tz)
    }
}

/// A local wall-clock time in `tz` as an instant. In the hour a clock repeats (autumn) the
/// first; in the hour a clock skips (spring), the first time that exists after it.
fn local_to_utc(tz: Tz, mut local: NaiveDateTime) -> DateTime<Utc> {
    for _ in 0..8 {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += Duration::minutes(30);
    }
    // No zone skips four hours; should one, read the time as UTC rather than fail.
    Utc.from_utc_datetime(&local)
}

/// One time of day a channel's digest goes out: `[DAYS] HH:MM` (`08:00`, `mon-fri 17:30`).
///
/// A channel with a digest (`digest = ["08:00"]`) is told of nothing as it happens: every
/// delivery that falls due waits for the next digest time, and all those waiting then go
/// out as one notification, each alert once with what happened to it since the last
/// digest (the worker's hold and release, the same as quiet hours that hold). Quiet hours
/// still apply at the digest time: a digest that falls in them waits for their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct DigestTime {
    /// The days it goes out on, Monday in bit 0.
    days: u8,
    /// Minutes after local midnight.
    at: u16,
}

/// Why a digest time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("digest time `{text}`: {reason} (write `[DAYS] HH:MM`, e.g. `08:00`, `mon-fri 17:30`)")]
pub struct DigestTimeError {
    text: String,
    reason: String,
}

impl FromStr for DigestTime {
    type Err = DigestTimeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| DigestTimeError {
            text: text.to_string(),
            reason,
        };
        let t = text.trim();
        let (days, time) = match t.rsplit_once(char::is_whitespace) {
            Some((d, h)) => (parse_days(&d.split_whitespace().collect::<String>()), h),
            None => (Ok(ALL_DAYS), t),
        };
        let at = parse_time(time, false).map_err(err)?;
        Ok(DigestTime {
            days: days.map_err(err)?,
            at,
        })
    }
}

impl TryFrom<String> for DigestTime {
    type Error = DigestTimeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DigestTime> for String {
    fn from(d: DigestTime) -> String {
        d.to_string()
    }
}

impl fmt::Display for DigestTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days != ALL_DAYS {
            write!(f, "{} ", day_names(self.days))?;
        }
        write!(f, "{:02}:{:02}", self.at / 60, self.at % 60)
    }
}

/// A channel's digest times, read in its time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    pub times: Vec<DigestTime>,
    pub tz: Tz,
}

impl Digest {
    /// The first digest time after `now`: when a delivery falling due now goes out.
    /// None only for a schedule with no day at all, which parsing does not give.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = now.with_timezone(&self.tz).date_naive();
        // A week and a day covers every schedule; the day before covers a local time
        // that a DST change puts after `now`.
        (-1..=8)
            .filter_map(|n| today.checked_add_signed(Duration::days(n)))
            .flat_map(|date| {
                (self.times.iter())
                    .filter(move |t| t.days & (1 << date.weekday().num_days_from_monday()) != 0)
                    .map(move |t| {
                        let local =
                            date.and_time(chrono::NaiveTime::MIN) + Duration::minutes(t.at.into());
                        local_to_utc(self.tz, local)
                    })
            })
            .filter(|&t| t > now)
            .min()
    }

    /// The schedule as written, for logs and the API: `08:00, mon-fri 17:30 (Europe/Paris)`.
    pub fn describe(&self) -> String {
        let t: Vec<String> = self.times.iter().map(ToString::to_string).collect();
        format!("{} ({})", t.join(", "), self.tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(windows: &[&str], tz: &str) -> QuietHours {
        QuietHours {
            windows: windows.iter().map(|w| w.parse().unwrap()).collect(),
            tz: tz.parse().unwrap(),
            action: QuietAction::Hold,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn windows_are_read_and_written_back() {
        for (text, shown) in [
            ("22:00-07:00", "22:00-07:00"),
            ("mon-fri 19:00-08:00", "mon,tue,wed,thu,fri 19:00-08:00"),
            ("sat,sun", "sat,sun"),
            ("Saturday, Sunday", "sat,sun"),
            ("fri-mon", "mon,fri,sat,sun"),
            ("sun 00:00-24:00", "sun"),
            ("12:30-13:15", "12:30-13:15"),
        ] {
            let w: QuietWindow = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(w.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("22:00", "span of time"),
            ("25:00-07:00", "`25:00` is not a time"),
            ("22:60-07:00", "not a time"),
            ("24:00-07:00", "not a time"),
            ("22:00-07:00-08:00", "not a time"),
            ("noon-07:00", "not a time"),
            ("funday 10:00-11:00", "`funday` is not a day"),
            ("mo 10:00-11:00", "`mo` is not a day"),
            ("sat,,sun", "`` is not a day"),
            ("10:00-10:00", "same time"),
            ("7é", "`7é` is not a span"),
            ("sat 7é", "`7é` is not a span"),
            ("é", "`é` is not a day"),
        ] {
            let e = text.parse::<QuietWindow>().unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_night_window_holds_until_the_morning_in_its_zone() {
        let q = hours(&["22:00-07:00"], "Europe/Paris");
        // 21:30 UTC in January is 22:30 in Paris: quiet until 07:00 Paris, 06:00 UTC.
        assert_eq!(
            q.until(at("2026-01-14T21:30:00Z")),
            Some(at("2026-01-15T06:00:00Z"))
        );
        // After midnight, the window that started the evening before.
        assert_eq!(
            q.until(at("2026-01-15T02:00:00Z")),
            Some(at("2026-01-15T06:00:00Z"))
        );
        // In July Paris is UTC+2.
        assert_eq!(
            q.until(at("2026-07-15T03:00:00Z")),
            Some(at("2026-07-15T05:00:00Z"))
        );
        // Daytime is not quiet; the window's end is not in it.
        assert_eq!(q.until(at("2026-01-15T12:00:00Z")), None);
        assert_eq!(q.until(at("2026-01-15T06:00:00Z")), None);
        assert_eq!(q.until(at("2026-01-15T20:59:59Z")), None);
    }

    #[test]
    fn a_window_runs_past_midnight_from_its_own_days_only() {
        let q = hours(&["fri 22:00-07:00"], "UTC");
        // Friday 2026-01-16 late, and early Saturday: quiet.
        assert_eq!(
            q.until(at("2026-01-16T23:00:00Z")),
            Some(at("2026-01-17T07:00:00Z"))
        );
        assert_eq!(
            q.until(at("2026-01-17T03:00:00Z")),
            Some(at("2026-01-17T07:00:00Z"))
        );
        // Early Friday belongs to Thursday's night, which is not listed.
        assert_eq!(q.until(at("2026-01-16T03:00:00Z")), None);
        assert_eq!(q.until(at("2026-01-18T03:00:00Z")), None);
    }

    #[test]
    fn windows_that_touch_make_one_period() {
        // Every night and the weekend: from Friday evening through Sunday night to Monday
        // 07:30.
        let q = hours(&["20:00-07:30", "sat,sun"], "UTC");
        assert_eq!(
            q.until(at("2026-01-16T21:00:00Z")),
            Some(at("2026-01-19T07:30:00Z"))
        );
        assert_eq!(
            q.until(at("2026-01-18T12:00:00Z")),
            Some(at("2026-01-19T07:30:00Z"))
        );
        // Weeknights only: Sunday night starts no window, so the period ends at midnight.
        let q = hours(&["mon-fri 20:00-07:30", "sat,sun"], "UTC");
        assert_eq!(
            q.until(at("2026-01-16T21:00:00Z")),
            Some(at("2026-01-19T00:00:00Z"))
        );
    }

    #[test]
    fn the_clocks_changing_moves_the_end_to_a_time_that_exists() {
        // Paris skips 02:00–03:00 on 2026-03-29: a window ending at 02:30 ends at 03:00
        // local, 01:00 UTC.
        let q = hours(&["sun 00:00-02:30"], "Europe/Paris");
        assert_eq!(
            q.until(at("2026-03-28T23:30:00Z")),
            Some(at("2026-03-29T01:00:00Z"))
        );
        // Paris repeats 02:00–03:00 on 2026-10-25: a window ending at 02:30 ends at the
        // first 02:30 (00:30 UTC).
        let q = hours(&["sun 00:00-02:30"], "Europe/Paris");
        assert_eq!(
            q.until(at("2026-10-24T23:00:00Z")),
            Some(at("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn an_end_moved_by_the_spring_change_into_another_window_goes_on() {
        // Sunday night's window ends at 02:30, which Paris skips on 2026-03-29; 03:00,
        // where it moves, is in the next window, which ends at 04:00 local (02:00 UTC).
        let q = hours(&["sat 23:00-02:30", "03:00-04:00"], "Europe/Paris");
        assert_eq!(
            q.until(at("2026-03-28T23:00:00Z")),
            Some(at("2026-03-29T02:00:00Z"))
        );
    }

    #[test]
    fn a_digest_goes_out_at_its_next_time_in_its_zone() {
        let digest = |times: &[&str], tz: &str| Digest {
            times: times.iter().map(|t| t.parse().unwrap()).collect(),
            tz: tz.parse().unwrap(),
        };
        // 2026-12-07 is a Monday. Paris is UTC+1 in winter.
        let d = digest(&["08:00", "mon-fri 17:30"], "Europe/Paris");
        assert_eq!(
            d.next(at("2026-12-07T06:00:00Z")),
            Some(at("2026-12-07T07:00:00Z"))
        );
        assert_eq!(
            d.next(at("2026-12-07T07:00:00Z")),
            Some(at("2026-12-07T16:30:00Z")),
            "strictly after"
        );
        assert_eq!(
            d.next(at("2026-12-07T20:00:00Z")),
            Some(at("2026-12-08T07:00:00Z"))
        );
        // Saturday evening: no 17:30 at weekends.
        assert_eq!(
            d.next(at("2026-12-12T10:00:00Z")),
            Some(at("2026-12-13T07:00:00Z"))
        );
        // Once a week, from just after it.
        let weekly = digest(&["mon 09:00"], "UTC");
        assert_eq!(
            weekly.next(at("2026-12-07T09:00:01Z")),
            Some(at("2026-12-14T09:00:00Z"))
        );
        // 02:30 does not exist in Paris on 2027-03-28: the first time after it that does.
        let night = digest(&["02:30"], "Europe/Paris");
        assert_eq!(
            night.next(at("2027-03-27T23:00:00Z")),
            Some(at("2027-03-28T01:00:00Z"))
        );
        assert_eq!(
            d.describe(),
            "08:00, mon,tue,wed,thu,fri 17:30 (Europe/Paris)"
        );
        assert_eq!(
            "sat,sun 10:15".parse::<DigestTime>().unwrap().to_string(),
            "sat,sun 10:15"
        );
        for (bad, says) in [
            ("8h", "not a time"),
            ("lundi 08:00", "not a day"),
            ("24:00", "not a time"),
            ("", "not a time"),
        ] {
            let e = bad.parse::<DigestTime>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_schedule_with_no_time_left_is_refused() {
        assert!(hours(&["mon-sun"], "UTC").check().is_err());
        assert!(hours(&["mon-fri", "sat,sun"], "UTC").check().is_err());
        assert!(hours(&["12:00-12:01", "12:01-12:00"], "UTC")
            .check()
            .is_err());
        assert!(hours(&["mon-sat", "sun 00:00-23:59"], "UTC")
            .check()
            .is_ok());
        assert!(hours(&["12:00-11:59"], "UTC").check().is_ok());
        assert!(hours(&["22:00-07:00", "sat,sun"], "Europe/Paris")
            .check()
            .is_ok());
        // Such a schedule, were it let through, would report the end of its search.
        let all = hours(&["mon-sun"], "UTC");
        let now = at("2026-01-14T12:00:00Z");
        assert!(all.until(now).unwrap() >= now + Duration::days(LONGEST_PERIOD_DAYS));
    }
}
