//! The one retry policy every channel shares: exponential backoff with full jitter,
//! honouring a receiver's `Retry-After`, capped, and given up after a deadline.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Longest delay between two attempts.
    pub max: Duration,
    /// Give up this long after the first attempt.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt number `attempts + 1`, given the receiver's hint.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max);
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempts.min(20))
            .min(self.max);
        // Jitter between half and the full delay keeps a fleet of retries from aligning.
        let lo = exp.as_millis() as u64 / 2;
        let hi = exp.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(lo..=hi.max(lo)))
    }

    /// Whether a delivery first tried `age` ago should still be retried.
    pub fn keep_trying(&self, age: Duration) -> bool {
        age < self.give_up_after
    }
}

/// Parses a `Retry-After` header: delta seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (t.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_respect_hints() {
        let p = RetryPolicy::default();
        for attempt in 0..10 {
            let d = p.delay(attempt, None);
            let full = p.base.saturating_mul(1 << attempt).min(p.max);
            assert!(d <= full && d >= full / 2, "{attempt}: {d:?}");
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(7200))), p.max);
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert!(parse_retry_after("soon").is_none());
    }
}
