//! Calling back with retries: a result is the one thing a worker must deliver, and the
//! endpoint (S3 behind a presigned URL, a proxy on the way, a local disk) can fail for a
//! while.
//!
//! [`RetryPolicy::default`]: at least 4 attempts, each bounded by a timeout, with
//! exponential backoff and jitter in between (about 1, 2, 4, then at most 5 s, each randomly
//! between half and all of it, so the workers of a wide run that failed together do not
//! retry together), and more until the report deadline: the order's timeout plus the
//! report window (30 s) after the attempt started, which ends before the watchdog's (the
//! order's timeout plus its slack, 40 s or more, after the claim). So an outage that ends
//! in time costs nothing, and one that does not ends as the watchdog's time-out, not as a
//! result lost while the watchdog still waits. Only a delivered result is success (the
//! [`WorkerIo`] says so: a 2xx answer, or one saying the attempt already has a result). When the attempts and the time are spent the failure is logged
//! with the order's ids and returned.

use std::time::Duration;

use sluice_contract::dispatch::{Capability, DispatchPayload};
use tokio::time::Instant;

use crate::io::{Delivery, IoError, WorkerIo};

/// How a callback is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts made however soon the report deadline comes (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each later one, then jittered.
    pub first_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Longest one attempt may take.
    pub attempt_timeout: Duration,
    /// How long past the order's timeout (counted from the attempt's start) the worker
    /// keeps trying to report: less than the watchdog's slack.
    pub report_window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
            report_window: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (2-based: none before the first), jittered.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .first_backoff
            .saturating_mul(1 << (attempt - 2).min(16))
            .min(self.max_backoff);
        full.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// PUTs `body` to `url` until an attempt succeeds, or the policy's attempts are spent and
/// `report_by` has passed.
///
/// # Errors
///
/// The last attempt's [`IoError`] when none succeeded.
pub async fn call_back(
    io: &dyn WorkerIo,
    url: &Capability,
    body: &[u8],
    policy: RetryPolicy,
    payload: &DispatchPayload,
    report_by: Instant,
) -> Result<Delivery, IoError> {
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        let outcome =
            tokio::time::timeout(policy.attempt_timeout, io.put_if_absent(url, body.to_vec()))
                .await
                .unwrap_or_else(|_| {
                    Err(IoError::transient(
                        "calling back",
                        format!("no answer within {:?}", policy.attempt_timeout),
                    ))
                });
        let error = match outcome {
            Ok(delivery) => return Ok(delivery),
            Err(error) => error,
        };
        let wait = policy.backoff(attempt + 1);
        if attempt >= attempts && Instant::now() + wait >= report_by {
            tracing::error!(run_id = %payload.run_id, order_num = %payload.order_num, attempt = %payload.attempt, %error, tries = attempt, "callback failed for good: the watchdog will time the order out");
            return Err(error);
        }
        attempt += 1;
        tracing::warn!(run_id = %payload.run_id, order_num = %payload.order_num, %error, next_try = attempt, wait_ms = wait.as_millis() as u64, "callback failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Calls `call` again while it fails transiently (a throttled store, a network hiccup),
/// with the policy's backoff: at least the policy's attempts, and more until `give_up_by`;
/// a permanent failure returns at once.
///
/// # Errors
///
/// The last failure.
pub async fn while_transient<T, F, Fut>(
    policy: RetryPolicy,
    give_up_by: Instant,
    mut call: F,
) -> Result<T, IoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, IoError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(error) if error.transient => {
                let wait = policy.backoff(attempt + 1);
                if attempt >= policy.attempts.max(1) && Instant::now() + wait >= give_up_by {
                    return Err(error);
                }
                attempt += 1;
                tracing::warn!(%error, wait_ms = wait.as_millis() as u64, "failed transiently; trying again");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// [`while_transient`] until `patience`, the whole bounded by `by`: one stalled request
/// must not keep the worker (a billed build) for its transfer's time-out, several times
/// over. Past `by`, a transient failure of `what` (the URL's path), "not stored in time".
///
/// # Errors
///
/// The last failure, or the time running out.
pub async fn within<T, F, Fut>(
    policy: RetryPolicy,
    patience: Instant,
    by: Instant,
    what: &str,
    call: F,
) -> Result<T, IoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, IoError>>,
{
    match tokio::time::timeout_at(by, while_transient(policy, patience, call)).await {
        Ok(done) => done,
        Err(_late) => Err(IoError::transient(what, "not stored in time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_is_jittered_within_half_to_all() {
        let policy = RetryPolicy::default();
        for attempt in 2..=6 {
            let full = Duration::from_secs(1 << (attempt - 2)).min(policy.max_backoff);
            for _ in 0..50 {
                let wait = policy.backoff(attempt);
                assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
            }
        }
    }

    /// A step that fails transiently (S3 answering 503 SlowDown to a presigned GET) is
    /// tried the policy's attempts even when the deadline has passed: before, with no time
    /// left it was tried once, and one throttled request failed the order.
    #[tokio::test]
    async fn a_transient_failure_is_tried_the_policys_attempts_even_past_the_deadline() {
        let policy = RetryPolicy {
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        let tries = std::sync::atomic::AtomicU32::new(0);
        let result = while_transient(policy, Instant::now(), || async {
            match tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0..3 => Err(IoError::transient("GET bundle", "503 SlowDown")),
                _ => Ok("bundle"),
            }
        })
        .await;
        assert_eq!(result, Ok("bundle"));
        let permanent = while_transient(policy, Instant::now(), || async {
            Err::<(), _>(IoError::permanent("GET bundle", "403 Forbidden"))
        });
        assert!(!permanent.await.unwrap_err().transient);
    }
}
