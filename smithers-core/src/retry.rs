//! How long to wait before retrying a failed attempt: exponential backoff with jitter, never
//! shorter than the wait a rate limit asked for ([`crate::TaskError::retry_after`]).
//!
//! A policy is set on a task (`<Task retry_policy={..}>`), as the workflow's default
//! (`<Workflow retry_policy={..}>`), or engine-wide ([`crate::engine::EngineOptions`]). Only
//! retryable errors are retried, within the task's `retries`; terminal ones fail the task at once.

use std::hash::{Hash, Hasher};
use std::time::Duration;

/// Exponential backoff with jitter between the attempts of a task.
///
/// The wait before the attempt after the `n`-th failure is `initial × factor^(n-1)`, at most
/// `max`, spread by ± `jitter` (a fraction), and at least the rate limit's `retry_after`.
///
/// ```
/// use std::time::Duration;
/// use smithers_core::RetryPolicy;
/// let p = RetryPolicy::exponential(Duration::from_secs(2)).max_delay(Duration::from_secs(30)).jitter(0.0);
/// assert_eq!(p.delay(1, 0, None), Duration::from_secs(2));
/// assert_eq!(p.delay(3, 0, None), Duration::from_secs(8));
/// assert_eq!(p.delay(9, 0, None), Duration::from_secs(30));
/// // A rate limit that asks for a minute gets it.
/// assert_eq!(p.delay(1, 0, Some(Duration::from_secs(60))), Duration::from_secs(60));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct RetryPolicy {
    /// The wait after the first failure.
    pub initial: Duration,
    /// Growth per further failure.
    pub factor: f64,
    /// The longest wait (a rate limit's `retry_after` may exceed it).
    pub max: Duration,
    /// Spread of each wait, as a fraction (0.2: ± 20 %), so parallel tasks do not retry in step.
    pub jitter: f64,
}

impl RetryPolicy {
    /// Backoff from `initial`, doubling, at most 5 minutes, ± 20 % jitter.
    pub fn exponential(initial: Duration) -> Self {
        RetryPolicy {
            initial,
            factor: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }

    /// Retry at once (still waiting what a rate limit asks for).
    pub fn immediate() -> Self {
        RetryPolicy {
            initial: Duration::ZERO,
            factor: 1.0,
            max: Duration::ZERO,
            jitter: 0.0,
        }
    }

    /// The growth per failure.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The longest wait.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The spread, a fraction from 0 to 1.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before the attempt after `failures` failed ones (from 1). `seed` picks the
    /// jitter (the engine derives it from the run, node, iteration and failure count, so a
    /// decision is reproducible); `retry_after` is the rate limit's own wait.
    pub fn delay(&self, failures: u32, seed: u64, retry_after: Option<Duration>) -> Duration {
        let exp = failures.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let base = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        // A fraction in [-1, 1) from the seed.
        let unit = (splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let spread = (base * (1.0 + jitter * unit)).max(0.0);
        let wait = if spread.is_finite() {
            Duration::from_secs_f64(spread)
        } else {
            self.max
        };
        wait.max(retry_after.unwrap_or_default())
    }
}

/// The seed of a task's jitter: its run, node, iteration and failure count.
pub(crate) fn seed(run_id: &str, node_id: &str, iteration: u32, failures: u32) -> u64 {
    // `DefaultHasher::new()` has fixed keys: the same inputs give the same seed.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (run_id, node_id, iteration, failures).hash(&mut h);
    h.finish()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_spread_and_differs_between_tasks() {
        let p = RetryPolicy::exponential(Duration::from_secs(10)).jitter(0.2);
        let waits: Vec<Duration> = (0..50)
            .map(|i| p.delay(1, seed("r", &format!("t{i}"), 0, 1), None))
            .collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_secs(8) && *w <= Duration::from_secs(12)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 40, "{waits:?}");
        assert_eq!(
            p.delay(1, seed("r", "t", 0, 1), None),
            p.delay(1, seed("r", "t", 0, 1), None),
            "reproducible"
        );
    }

    #[test]
    fn immediate_retries_at_once_unless_rate_limited() {
        let p = RetryPolicy::immediate();
        assert_eq!(p.delay(5, 1, None), Duration::ZERO);
        assert_eq!(
            p.delay(5, 1, Some(Duration::from_millis(1500))),
            Duration::from_millis(1500)
        );
    }
}
