//! The per-run lock protocol, over the [`OrderStore`](crate::OrderStore)'s conditional writes.
//!
//! Acquire: conditional on the lock being absent, released, or held with an expired lease.
//! Held by someone else with a live lease: set `dirty` on it and leave; if that finds the
//! lock released (or its lease ended) meanwhile, try to acquire again. Release: conditional
//! on `owner = me AND dirty = false`; when it fails because the lock is dirty, clear `dirty`
//! and loop once more. No wake-up is lost: an event that arrives at any moment either finds
//! the lock free (and runs) or marks it dirty before the holder's conditional release
//! (which then fails and loops). An acquire that takes the lock over from a holder whose
//! lease ended says so (`missed`): that holder may have left marks unread, and the takeover
//! resets them, so the new holder looks for every result rather than its own. A holder that
//! fails gives the lock back by ending its lease ([`abandon`]), which keeps that signal.

use sluice_contract::RunId;

use crate::engine::{Engine, millis};
use crate::error::StoreError;
use crate::ports::{AcquireOutcome, MarkDirtyOutcome};

/// What trying to take the lock led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAttempt {
    /// The caller holds the lock; `missed` as in [`AcquireOutcome::Acquired`].
    Acquired {
        /// Whether results may have arrived that no pass has read.
        missed: bool,
    },
    /// Another holder will process the event (lock marked dirty).
    Deferred,
    /// The run is finalized.
    Completed,
}

/// What releasing led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Released; the run waits for its next event.
    Released,
    /// An event arrived meanwhile; `dirty` was cleared and the holder must loop.
    Dirty,
    /// The lock was no longer ours.
    Lost,
}

/// How many times acquire and mark-dirty may chase each other before giving up.
const MAX_ACQUIRE_ROUNDS: usize = 100;

/// Takes the lock, or hands the event to the current holder.
///
/// # Errors
///
/// A backend failure, or a lock that changes hands more than 100 times while acquiring.
pub async fn acquire(
    engine: &Engine,
    run_id: &RunId,
    owner: &str,
) -> Result<LockAttempt, StoreError> {
    let store = &engine.ports.orders;
    for _ in 0..MAX_ACQUIRE_ROUNDS {
        let now = engine.now_ms();
        let lease_until = now + millis(engine.config.lock_lease);
        match store.acquire_lock(run_id, owner, now, lease_until).await? {
            AcquireOutcome::Acquired { missed } => return Ok(LockAttempt::Acquired { missed }),
            AcquireOutcome::Completed => return Ok(LockAttempt::Completed),
            AcquireOutcome::Held => match store.mark_dirty(run_id, now).await? {
                MarkDirtyOutcome::Marked => return Ok(LockAttempt::Deferred),
                MarkDirtyOutcome::Completed => return Ok(LockAttempt::Completed),
                MarkDirtyOutcome::NotHeld => continue,
            },
        }
    }
    Err(StoreError::Backend {
        what: format!("lock:{run_id}"),
        message: format!("the lock changed hands {MAX_ACQUIRE_ROUNDS} times while acquiring"),
    })
}

/// Releases the lock if no event arrived meanwhile (see [`Release`]).
///
/// # Errors
///
/// A backend failure.
pub async fn release(engine: &Engine, run_id: &RunId, owner: &str) -> Result<Release, StoreError> {
    let store = &engine.ports.orders;
    match store.release_lock(run_id, owner).await {
        Ok(()) => Ok(Release::Released),
        Err(StoreError::ConditionFailed { .. }) => match store.clear_dirty(run_id, owner).await {
            Ok(()) => Ok(Release::Dirty),
            Err(StoreError::ConditionFailed { .. }) => Ok(Release::Lost),
            Err(other) => Err(other),
        },
        Err(other) => Err(other),
    }
}

/// Gives the lock back after an error: its lease is ended now, its dirty flag kept. The
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
        Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(other) => Err(other),
    }
}
