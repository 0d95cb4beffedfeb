//! Backoff for transient failures: how often and how long the engine waits before calling
//! a backend again within one invocation.
//!
//! Retries inside an invocation are short on purpose (seconds, well inside the lock's lease
//! and a Lambda's time): a longer outage is outlived by the run's watch, which kicks a new
//! pass until the run is finalized.

use std::time::Duration;

/// Exponential backoff with jitter (each delay 50–100 % of the nominal one), for a bounded
/// number of retries.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    retries_left: u32,
    next: Duration,
}

impl Backoff {
    /// Up to `retries` retries, the first after about `first`, each nominal delay double the
    /// one before.
    pub(crate) fn new(first: Duration, retries: u32) -> Self {
        Backoff {
            first,
            retries_left: retries,
            next: first,
        }
    }

    /// The wait before the next retry, or `None` when none is left.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        if self.retries_left == 0 {
            return None;
        }
        self.retries_left -= 1;
        let nominal = self.next;
        self.next = nominal.saturating_mul(2);
        Some(nominal.mul_f64(0.5 + fastrand::f64() / 2.0))
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self, retries: u32) {
        self.retries_left = retries;
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_run_out() {
        let mut backoff = Backoff::new(Duration::from_millis(400), 3);
        let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay()).collect();
        assert_eq!(delays.len(), 3);
        for (delay, nominal) in delays.iter().zip([400, 800, 1600]) {
            let ms = delay.as_millis() as u64;
            assert!((nominal / 2..=nominal).contains(&ms), "{ms} for {nominal}");
        }
        backoff.reset(1);
        assert!(backoff.next_delay().unwrap() <= Duration::from_millis(400));
        assert_eq!(backoff.next_delay(), None);
    }
}
