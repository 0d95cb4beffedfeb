//! Time, as a port, so the watchdog, lease and retry logic can be tested at any instant —
//! and the randomness that spreads retries over time, so a simulated run replays exactly
//! from its seed.

use std::fmt::Debug;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

/// A source of wall-clock time, of waiting, and of the jitter between retries.
#[async_trait]
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Waits for `duration` (a retry's backoff). A test clock moves itself forward instead.
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// A fraction in `[0, 1)` that spreads retries (jitter). A test clock draws it from its
    /// seed.
    fn jitter(&self) -> f64 {
        fastrand::f64()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}
