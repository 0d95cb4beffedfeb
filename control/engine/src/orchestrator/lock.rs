//! The per-run lock protocol, over the [`OrderStore`](crate::OrderStore)'s conditional writes.
//!
//! The lock counts wake-ups (`marks`). Acquire is one decision: take the lock if it is
//! absent, released, or held with an ended lease; otherwise add one to its marks and leave.
//! The holder remembers the count it has accounted for; release is conditional on
//! `owner = me AND marks = seen`, and when it fails because marks grew, the holder loops
//! once more: it renews its lease, whose answer is the count then, looks for every result,
//! and releases with that count (every wake-up counted before the renewal had its result
//! written before it was counted, so the step has seen it).
//! No wake-up is lost: an event that arrives at any moment either finds the lock free (and
//! runs) or is counted before the holder's conditional release (which then fails and loops).
//! (A step may also take a released lock with its first writes, conditional on the count
//! its release left — see `taking.rs`; refused, it acquires as here.)
//! An event that finds the lock held costs one write, and a holder's release one write,
//! however many events arrived. An acquire that takes the lock over from a holder whose
//! lease ended says so (`missed`): that holder may have left marks unread, so the new
//! holder looks for every result rather than its own. A holder that fails gives the lock
//! back by ending its lease ([`abandon`]), which keeps that signal.

use sluice_contract::RunId;

use crate::engine::{Engine, millis};
use crate::error::StoreError;
use crate::ports::{AcquireOutcome, ReleaseOutcome, StepWrites};
use crate::retry::{Backoff, while_transient};

/// What trying to take the lock led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAttempt {
    /// The caller holds the lock; as in [`AcquireOutcome::Acquired`].
    Acquired {
        /// Whether results may have arrived that no pass has read.
        missed: bool,
        /// The wake-up count the caller has accounted for.
        marks: u64,
    },
    /// Another holder will process the event (its wake-up was counted on the lock).
    Deferred,
    /// The run is finalized.
    Completed,
}

/// What releasing led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Released; the run waits for its next event.
    Released,
    /// Events arrived meanwhile: the holder must loop (and release with the count its
    /// renewal then answers, at least this one).
    Dirty {
        /// The lock's wake-up count now.
        marks: u64,
    },
    /// The lock was no longer ours.
    Lost,
}

/// Retries of an acquire refused for now, and the first wait.
const ACQUIRE_RETRIES: u32 = 3;
const ACQUIRE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);

/// Takes the lock, or counts the event for the current holder.
///
/// # Errors
///
/// A backend failure.
pub async fn acquire(
    engine: &Engine,
    run_id: &RunId,
    owner: &str,
) -> Result<LockAttempt, StoreError> {
    // An acquire refused for now (throttled, or the lock's item is in a release
    // transaction) counted no wake-up: it is made again, or the error goes back to the
    // event's source, which retries the invocation.
    let store = &engine.ports.orders;
    let acquired = while_transient(
        engine.ports.clock.as_ref(),
        Backoff::new(ACQUIRE_RETRY_FIRST, ACQUIRE_RETRIES),
        "taking a run's lock",
        StoreError::kind,
        || {
            let now = engine.now_ms();
            let lease_until = now + millis(engine.config.lock_lease);
            store.acquire_lock(run_id, owner, now, lease_until)
        },
    );
    Ok(match acquired.await? {
        AcquireOutcome::Acquired { missed, marks } => LockAttempt::Acquired { missed, marks },
        AcquireOutcome::Marked => LockAttempt::Deferred,
        AcquireOutcome::Completed => LockAttempt::Completed,
    })
}

/// Releases the lock if no event arrived since the holder accounted for `seen_marks` (see
/// [`Release`]).
///
/// # Errors
///
/// A backend failure.
pub async fn release(
    engine: &Engine,
    run_id: &RunId,
    owner: &str,
    seen_marks: u64,
) -> Result<Release, StoreError> {
    let store = &engine.ports.orders;
    match (store.release_lock(run_id, owner, seen_marks, &StepWrites::default())).await {
        Ok(ReleaseOutcome::Released) => Ok(Release::Released),
        Ok(ReleaseOutcome::Marked { marks }) => Ok(Release::Dirty { marks }),
        Err(StoreError::ConditionFailed { .. }) => Ok(Release::Lost),
        Err(other) => Err(other),
    }
}

/// Gives the lock back after an error: its lease is ended now, its marks kept. The
/// caller reports the error and is retried (Lambda retries failed async invocations; the
/// local event bus too), and the retry must find the lock free rather than wait out the
/// lease; whoever takes it over next learns that wake-ups may be unread (an ended lease
/// reads as a takeover), so it looks for every result that arrived.
///
/// # Errors
///
/// A backend failure.
pub async fn abandon(engine: &Engine, run_id: &RunId, owner: &str) -> Result<(), StoreError> {
    match engine.ports.orders.renew_lock(run_id, owner, 0).await {
        Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(other) => Err(other),
    }
}
