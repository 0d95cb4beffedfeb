//! Backoff for transient failures: how often and how long the engine waits before calling
//! a backend again within one invocation.
//!
//! Retries inside an invocation are short on purpose (seconds, well inside the lock's lease
//! and a Lambda's time): a longer outage is outlived by the run's watch, which kicks a new
//! pass until the run is finalized.

use std::future::Future;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::ports::Clock;

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

    /// The wait before the next retry (jittered by `clock`), or `None` when none is left.
    pub(crate) fn next_delay(&mut self, clock: &dyn Clock) -> Option<Duration> {
        if self.retries_left == 0 {
            return None;
        }
        self.retries_left -= 1;
        let nominal = self.next;
        self.next = nominal.saturating_mul(2);
        Some(nominal.mul_f64(0.5 + clock.jitter() / 2.0))
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self, retries: u32) {
        self.retries_left = retries;
        self.next = self.first;
    }
}

/// Calls `call` until it succeeds, fails permanently (`kind_of` says which), or `backoff`
/// has no retry left; waits through `clock` between tries, logging each transient failure
/// as `what`.
pub(crate) async fn while_transient<T, E, F, Fut>(
    clock: &dyn Clock,
    mut backoff: Backoff,
    what: &str,
    kind_of: impl Fn(&E) -> ErrorKind,
    mut call: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match call().await {
            Err(error) if kind_of(&error) == ErrorKind::Transient => {
                let Some(delay) = backoff.next_delay(clock) else {
                    return Err(error);
                };
                tracing::warn!(%error, ?delay, "{what} failed transiently; retrying");
                clock.sleep(delay).await;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_run_out() {
        let clock = crate::ports::SystemClock;
        let mut backoff = Backoff::new(Duration::from_millis(400), 3);
        let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay(&clock)).collect();
        assert_eq!(delays.len(), 3);
        for (delay, nominal) in delays.iter().zip([400, 800, 1600]) {
            let ms = delay.as_millis() as u64;
            assert!((nominal / 2..=nominal).contains(&ms), "{ms} for {nominal}");
        }
        backoff.reset(1);
        assert!(backoff.next_delay(&clock).unwrap() <= Duration::from_millis(400));
        assert_eq!(backoff.next_delay(&clock), None);
    }
}
