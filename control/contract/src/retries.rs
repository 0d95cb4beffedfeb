//! Retries: an order's `retry` policy — which outcomes run it again, how many times, and
//! how long to wait before each further attempt.
//!
//! The delay before attempt k+1 is min(`max_backoff`, `backoff`·2^(k−1)), jittered to
//! between half and all of it (so orders failing together do not retry together). Each
//! attempt is a new attempt id with its own log; only the last decides the order, and a
//! retry never goes past the job's deadline.

use serde::{Deserialize, Serialize};

use crate::OrderStatus;

/// Most further attempts a policy may allow.
pub const MAX_RETRY_LIMIT: u32 = 10;
/// Default first delay, milliseconds.
pub const DEFAULT_BACKOFF_MS: u64 = 1_000;
/// Default longest delay, milliseconds.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 300_000;
/// Longest delay a policy may ask for, seconds (a day).
pub const MAX_BACKOFF_SECONDS: f64 = 86_400.0;

/// The outcomes a retry policy can name (`on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The order failed (a command exited non-zero, the module trapped, …).
    Failed,
    /// The order ran past its timeout.
    TimedOut,
}

/// An order's validated retry policy, as its row keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Further attempts allowed (1 to [`MAX_RETRY_LIMIT`]).
    pub limit: u32,
    /// The first delay, milliseconds.
    pub backoff_ms: u64,
    /// The longest delay, milliseconds.
    pub max_backoff_ms: u64,
    /// Which outcomes retry.
    pub on: Vec<RetryOn>,
    /// When not empty, a `failed` outcome retries only if its failing command exited with
    /// one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
}

impl RetryPolicy {
    /// Whether attempt number `attempt` (1 for the first), which ended `status` with
    /// `exit_code`, is followed by another.
    pub fn retries(&self, attempt: u32, status: OrderStatus, exit_code: Option<i32>) -> bool {
        if attempt > self.limit {
            return false;
        }
        match status {
            OrderStatus::Failed => {
                self.on.contains(&RetryOn::Failed)
                    && (self.exit_codes.is_empty()
                        || exit_code.is_some_and(|code| self.exit_codes.contains(&code)))
            }
            OrderStatus::TimedOut => self.on.contains(&RetryOn::TimedOut),
            _ => false,
        }
    }

    /// The delay before the attempt after attempt number `attempt`, milliseconds, with
    /// `jitter` (0 to 1) choosing between half and all of it.
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let doublings = attempt.saturating_sub(1).min(63);
        let full = self
            .backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms);
        let jitter = jitter.clamp(0.0, 1.0);
        full / 2 + ((full - full / 2) as f64 * jitter).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            limit: 3,
            backoff_ms: 1_000,
            max_backoff_ms: 3_000,
            on: vec![RetryOn::Failed, RetryOn::TimedOut],
            exit_codes: Vec::new(),
        }
    }

    #[test]
    fn delays_double_up_to_the_longest_and_jitter_between_half_and_all() {
        let policy = policy();
        assert_eq!(policy.delay_ms(1, 1.0), 1_000);
        assert_eq!(policy.delay_ms(2, 1.0), 2_000);
        assert_eq!(policy.delay_ms(3, 1.0), 3_000, "capped");
        assert_eq!(policy.delay_ms(9, 1.0), 3_000);
        assert_eq!(policy.delay_ms(1, 0.0), 500);
        assert_eq!(policy.delay_ms(2, 0.5), 1_500);
        assert_eq!(policy.delay_ms(u32::MAX, 1.0), 3_000, "no overflow");
    }

    #[test]
    fn retries_follow_the_outcomes_exit_codes_and_limit() {
        let mut policy = policy();
        assert!(policy.retries(1, OrderStatus::Failed, Some(1)));
        assert!(policy.retries(3, OrderStatus::TimedOut, None));
        assert!(
            !policy.retries(4, OrderStatus::Failed, Some(1)),
            "limit reached"
        );
        assert!(!policy.retries(1, OrderStatus::Succeeded, Some(0)));
        assert!(!policy.retries(1, OrderStatus::Cancelled, None));
        policy.exit_codes = vec![75];
        assert!(policy.retries(1, OrderStatus::Failed, Some(75)));
        assert!(!policy.retries(1, OrderStatus::Failed, Some(1)));
        assert!(!policy.retries(1, OrderStatus::Failed, None));
        assert!(
            policy.retries(1, OrderStatus::TimedOut, None),
            "exit codes narrow failures"
        );
        policy.on = vec![RetryOn::Failed];
        assert!(!policy.retries(1, OrderStatus::TimedOut, None));
    }
}
