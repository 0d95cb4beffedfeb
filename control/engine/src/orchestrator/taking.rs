//! Taking a run's lock with a step's first writes rather than before its reads: a call less
//! per hop of a chain.
//!
//! A warm process remembers the runs whose lock it last released with one order in flight,
//! and the lock's wake-up count then ([`LastReleases`]). The next notification of such a run
//! most likely names that order's result and finds the lock as it was left: its step reads
//! the rows and the result without the lock, plans, and writes the result and the moves it
//! leads to in one all-or-none write that also takes the lock, on the condition that the
//! lock is still released with that count ([`OrderStore::take_lock_with`](crate::OrderStore::take_lock_with)).
//! Every acquire adds one to the count, so an equal count means nobody held the lock since
//! that release and no step wrote the rows since they were read (a write made without the
//! lock, as a local cancel's, is conditional on the order's status, as the step's are). A
//! take whose answer was lost is told by the lock: held by the step's owner, it was made.
//! From the taking on, the step is an ordinary one under the lock (its launches, PR comment
//! and events are ordered before any finalize, as every step's).
//!
//! When anything says otherwise — the count moved (another invocation, the watch), a row
//! is not as read, a result must be recorded first, the job's deadline passed — the step
//! writes nothing ([`TakeLock::refuse`]) and the invocation takes the lock as usual: a
//! stale memory costs one refused write, never a wrong one.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use sluice_contract::RunId;

/// The runs this process released the lock of with one order in flight, and the lock's
/// wake-up count then (at most [`LastReleases::RUNS`], newest last).
#[derive(Debug, Default)]
pub(crate) struct LastReleases {
    runs: Mutex<VecDeque<(RunId, u64)>>,
}

impl LastReleases {
    /// How many runs are remembered.
    const RUNS: usize = 256;

    fn runs(&self) -> MutexGuard<'_, VecDeque<(RunId, u64)>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers that this process released `run_id`'s lock with `marks` counted (the
    /// higher count, when another of its invocations released it later and remembered
    /// first).
    pub(crate) fn remember(&self, run_id: &RunId, marks: u64) {
        let mut runs = self.runs();
        let marks = match runs.iter().position(|(run, _)| run == run_id) {
            Some(index) => runs
                .remove(index)
                .map_or(marks, |(_, later)| later.max(marks)),
            None => marks,
        };
        if runs.len() == Self::RUNS {
            runs.pop_front();
        }
        runs.push_back((run_id.clone(), marks));
    }

    /// The count `run_id`'s lock was last released with by this process, forgotten as it
    /// is told: whatever the invocation asking does next moves the count or leaves it to
    /// be remembered again.
    pub(crate) fn take(&self, run_id: &RunId) -> Option<u64> {
        let mut runs = self.runs();
        let index = runs.iter().position(|(run, _)| run == run_id)?;
        runs.remove(index).map(|(_, marks)| marks)
    }
}

/// Where a step that takes the lock with its first writes is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taking {
    /// Nothing written yet.
    Pending,
    /// Taken; the wake-up count the step has accounted for.
    Taken(u64),
    /// Not taken, nothing written: the invocation takes the lock as usual.
    Refused,
}

/// A step's taking of the lock with its first writes, for `owner`, from the release that
/// left `released_marks`.
#[derive(Debug)]
pub(crate) struct TakeLock {
    pub(crate) owner: String,
    pub(crate) released_marks: u64,
    state: Mutex<Taking>,
}

impl TakeLock {
    pub(crate) fn new(owner: &str, released_marks: u64) -> Self {
        TakeLock {
            owner: owner.to_owned(),
            released_marks,
            state: Mutex::new(Taking::Pending),
        }
    }

    fn state(&self) -> MutexGuard<'_, Taking> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the step has written nothing yet and may still take the lock.
    pub(crate) fn is_pending(&self) -> bool {
        *self.state() == Taking::Pending
    }

    /// Whether the step was refused (it wrote nothing and holds nothing).
    pub(crate) fn is_refused(&self) -> bool {
        *self.state() == Taking::Refused
    }

    /// The count the step accounted for when it took the lock; `None` until then.
    pub(crate) fn taken(&self) -> Option<u64> {
        match *self.state() {
            Taking::Taken(marks) => Some(marks),
            Taking::Pending | Taking::Refused => None,
        }
    }

    /// The step took the lock, having accounted for `marks` wake-ups.
    pub(crate) fn took(&self, marks: u64) {
        *self.state() = Taking::Taken(marks);
    }

    /// The step will not take the lock (`why`, for the debug log): it must write nothing.
    pub(crate) fn refuse(&self, why: &dyn std::fmt::Display) {
        tracing::debug!(%why, "not taking the lock with the step's first writes");
        *self.state() = Taking::Refused;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_told_once_and_the_oldest_runs_are_forgotten() {
        let releases = LastReleases::default();
        let run = RunId::generate();
        releases.remember(&run, 5);
        releases.remember(&run, 3);
        assert_eq!(
            releases.take(&run),
            Some(5),
            "the latest release: the higher count"
        );
        assert_eq!(releases.take(&run), None, "told once");
        let runs: Vec<RunId> = (0..=LastReleases::RUNS)
            .map(|_| RunId::generate())
            .collect();
        for (marks, run) in runs.iter().enumerate() {
            releases.remember(run, marks as u64);
        }
        assert_eq!(releases.take(&runs[0]), None, "the oldest is pushed out");
        assert_eq!(
            releases.take(&runs[LastReleases::RUNS]),
            Some(LastReleases::RUNS as u64)
        );
    }
}
