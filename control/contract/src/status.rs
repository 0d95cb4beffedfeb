//! Order and job statuses, the transitions an order may make, and the job-status rule.
//!
//! Every store applies a transition as a conditional write from the expected previous
//! status; [`OrderStatus::can_become`] is the single list of the transitions that exist, so
//! a late or duplicate result can never overwrite a terminal status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Waiting for its dependencies or for dispatch.
    Queued,
    /// Claimed by an orchestrator that is starting its worker.
    Dispatching,
    /// Its worker was started; a result is expected.
    Running,
    /// Finished with success.
    Succeeded,
    /// Finished with failure (non-zero exit, failed dependency, malformed result...).
    Failed,
    /// Its deadline or the job's passed.
    TimedOut,
    /// The run was stopped (Ctrl-C, SIGTERM) before the order ended, whatever its
    /// process did when it was stopped.
    Cancelled,
    /// Never run: its `depends` condition was false, or an order it depends on was
    /// skipped. Never fails the job.
    Skipped,
}

impl OrderStatus {
    /// Every status, in life order.
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::Queued,
        OrderStatus::Dispatching,
        OrderStatus::Running,
        OrderStatus::Succeeded,
        OrderStatus::Failed,
        OrderStatus::TimedOut,
        OrderStatus::Cancelled,
        OrderStatus::Skipped,
    ];

    /// Whether the order is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Succeeded
                | OrderStatus::Failed
                | OrderStatus::TimedOut
                | OrderStatus::Cancelled
                | OrderStatus::Skipped
        )
    }

    /// Whether `self -> next` is an allowed transition.
    ///
    /// `queued -> dispatching -> running -> terminal`; `queued -> failed` (a dependency
    /// failed), `-> skipped` (its condition was false, or a dependency was skipped) or
    /// `-> timed_out` (the job timed out); `dispatching -> queued` (the worker could
    /// not be started and the order is given back) and `dispatching -> terminal` (the job
    /// timed out, or the target refused the order); `running -> queued` (a local run resumed
    /// after the process running it died: the attempt died with it, and the order gets a new
    /// one); any unfinished status `-> cancelled` (the run was stopped). Nothing leaves a
    /// terminal status.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (
                Queued,
                Dispatching | Failed | TimedOut | Cancelled | Skipped
            ) | (
                Dispatching,
                Running | Queued | Failed | TimedOut | Cancelled
            ) | (Running, Succeeded | Failed | TimedOut | Queued | Cancelled)
        )
    }

    /// The status as written in rows and documents.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Queued => "queued",
            OrderStatus::Dispatching => "dispatching",
            OrderStatus::Running => "running",
            OrderStatus::Succeeded => "succeeded",
            OrderStatus::Failed => "failed",
            OrderStatus::TimedOut => "timed_out",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not an order status ([`OrderStatus::as_str`] of none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownStatus(text.to_owned()))
    }
}

/// A finished job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Every `must_succeed` order succeeded (or was skipped: its condition was false).
    Succeeded,
    /// A `must_succeed` order failed (and none timed out).
    Failed,
    /// A `must_succeed` order timed out, or the job exceeded `job_timeout`.
    TimedOut,
    /// The run was stopped before it ended (an order was cancelled).
    Cancelled,
}

impl JobStatus {
    /// The job-status rule: a run with a cancelled order (any) was stopped: cancelled.
    /// Otherwise, among `must_succeed` orders, any timed out makes the job timed out, else
    /// any failed makes it failed, else it succeeded (a skipped order counts as neither). Orders with `must_succeed = false` are
    /// reported but never decide. A job past its `job_timeout` is timed out whatever its
    /// orders say.
    pub fn decide(
        orders: impl IntoIterator<Item = (OrderStatus, bool)>,
        job_timeout_exceeded: bool,
    ) -> JobStatus {
        let orders: Vec<(OrderStatus, bool)> = orders.into_iter().collect();
        if orders.iter().any(|(s, _)| *s == OrderStatus::Cancelled) {
            return JobStatus::Cancelled;
        }
        if job_timeout_exceeded {
            return JobStatus::TimedOut;
        }
        let mut status = JobStatus::Succeeded;
        for (order_status, must_succeed) in orders {
            if !must_succeed {
                continue;
            }
            match order_status {
                OrderStatus::TimedOut => return JobStatus::TimedOut,
                OrderStatus::Failed => status = JobStatus::Failed,
                _ => {}
            }
        }
        status
    }

    /// The status as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    #[test]
    fn terminal_statuses_never_change() {
        for from in [Succeeded, Failed, TimedOut, Cancelled, Skipped] {
            for to in OrderStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn running_is_reached_only_through_dispatching() {
        let sources: Vec<_> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.can_become(Running))
            .collect();
        assert_eq!(sources, vec![Dispatching]);
    }

    #[test]
    fn status_text_round_trips() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>(), Ok(s));
        }
        assert!("done".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn job_status_rule() {
        assert_eq!(
            JobStatus::decide([(Succeeded, true)], false),
            JobStatus::Succeeded
        );
        assert_eq!(
            JobStatus::decide([(Failed, false)], false),
            JobStatus::Succeeded
        );
        assert_eq!(
            JobStatus::decide([(Failed, true), (Succeeded, true)], false),
            JobStatus::Failed
        );
        assert_eq!(
            JobStatus::decide([(Failed, true), (TimedOut, true)], false),
            JobStatus::TimedOut
        );
        assert_eq!(
            JobStatus::decide([(TimedOut, false)], false),
            JobStatus::Succeeded
        );
        assert_eq!(
            JobStatus::decide([(Succeeded, true)], true),
            JobStatus::TimedOut
        );
    }
}
