//! Exit codes of the `sluice` CLI, as documented constants.
//!
//! Scripts and CI systems branch on these, so they are part of the contract: a job's status
//! maps to one code, and everything that is the caller's fault (a bad job file, a bad flag)
//! has its own.

use crate::status::JobStatus;

/// The job ran and every `must_succeed` order succeeded.
pub const SUCCEEDED: i32 = 0;
/// The job ran and a `must_succeed` order failed.
pub const FAILED: i32 = 1;
/// The job ran and a `must_succeed` order timed out, or the job exceeded `job_timeout`.
pub const TIMED_OUT: i32 = 2;
/// The job file is invalid (not JSON, unknown field, a validation rule) or the command line is.
pub const INVALID_INPUT: i32 = 3;
/// Sluice itself could not do its work (state directory unwritable, storage error).
pub const INTERNAL_ERROR: i32 = 4;
/// The job was cancelled (`sluice cancel`) before it ended.
pub const CANCELLED: i32 = 5;
/// The run was stopped by Ctrl-C (128 + SIGINT, as shells report it) in the `sluice` that
/// carried it.
pub const INTERRUPTED: i32 = 130;
/// The run was stopped by SIGTERM (128 + 15).
pub const TERMINATED: i32 = 143;

/// The exit code that reports a finished job's status.
pub fn for_job_status(status: JobStatus) -> i32 {
    match status {
        JobStatus::Succeeded => SUCCEEDED,
        JobStatus::Failed => FAILED,
        JobStatus::TimedOut => TIMED_OUT,
        JobStatus::Cancelled => CANCELLED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_status_has_its_own_code() {
        assert_eq!(for_job_status(JobStatus::Succeeded), 0);
        assert_eq!(for_job_status(JobStatus::Failed), 1);
        assert_eq!(for_job_status(JobStatus::TimedOut), 2);
        assert_eq!(for_job_status(JobStatus::Cancelled), 5);
        assert_eq!(INVALID_INPUT, 3);
    }
}
