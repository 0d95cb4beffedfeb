//! Starting workers (Lambda, CodeBuild, in-process) and their watchdogs (Step Functions,
//! local timers).

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_contract::dispatch::{CompileRequest, DispatchPayload};
use sluice_contract::{AttemptId, ExecutionTarget, OrderNum, RunId};

use crate::ErrorKind;

/// A worker or a watchdog could not be started.
///
/// A [`ErrorKind::Transient`] failure (throttled, timed out on our side) may have been
/// accepted all the same: the orchestrator starts the same attempt again later, and the
/// worker's claim makes a duplicate start harmless. A permanent one fails the order.
#[derive(Debug, thiserror::Error)]
#[error("starting the {what} for order {order_num} of run {run_id} failed: {message}")]
pub struct DispatchError {
    /// Whether starting again later may succeed.
    pub kind: ErrorKind,
    /// What was being started (`lambda worker`, `codebuild worker`, `watchdog`).
    pub what: String,
    /// The run.
    pub run_id: RunId,
    /// The order.
    pub order_num: OrderNum,
    /// The backend's message.
    pub message: String,
}

/// Starts a worker for one order attempt.
#[async_trait]
pub trait Dispatcher: Send + Sync + Debug {
    /// Starts (or queues the start of) a worker for `payload` on `target` and returns once the
    /// start is accepted; the worker runs on its own and reports through the callback.
    /// `timeout` is the order's: a backend with its own time limit (a CodeBuild build) sets
    /// it to let the worker enforce the order's timeout and report.
    ///
    /// Starting the same attempt twice is allowed (a retry after a crash): the worker claims
    /// the attempt before running anything, so the order runs at most once.
    async fn start(
        &self,
        target: ExecutionTarget,
        timeout: Duration,
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError>;

    /// Stops what still runs of `run_id`'s workers on a backend whose workers may not
    /// notice a cancel soon (a CodeBuild build waiting in its queue, or wedged): the run
    /// was cancelled. Returns how many were stopped. A backend whose workers all look for
    /// the cancel themselves has nothing to stop.
    ///
    /// # Errors
    ///
    /// [`DispatchError`] when the builds cannot be listed; one that cannot be stopped is
    /// logged and skipped.
    async fn stop_builds(&self, run_id: &RunId) -> Result<usize, DispatchError> {
        let _ = run_id;
        Ok(0)
    }

    /// Whether [`Dispatcher::compile`] can start compilations (a deployment with a compile
    /// function).
    fn compiles_modules(&self) -> bool {
        false
    }

    /// Starts (or queues the start of) compiling one WebAssembly module of a run for its
    /// workers, which have no compiler (AWS: the compile function, invoked asynchronously);
    /// returns once the start is accepted. `order_num` is the first order running the
    /// module, for the error. Starting it twice is harmless: the code is stored only where
    /// none is. A backend whose workers compile for themselves (the local one) has none:
    /// its engine never asks.
    async fn compile(
        &self,
        order_num: OrderNum,
        request: &CompileRequest,
    ) -> Result<(), DispatchError> {
        Err(DispatchError {
            kind: ErrorKind::Permanent,
            what: "compile function".to_owned(),
            run_id: request.run_id.clone(),
            order_num,
            message: "this backend has no compile function: its workers compile".to_owned(),
        })
    }
}

/// What a watchdog needs to follow one order attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogInput {
    /// The run.
    pub run_id: RunId,
    /// The order.
    pub order_num: OrderNum,
    /// The attempt being watched.
    pub attempt: AttemptId,
    /// The order's timeout, seconds.
    pub timeout: u64,
    /// When the order was dispatched, seconds since the epoch.
    pub start_time: u64,
    /// When the whole job times out, seconds since the epoch.
    pub job_deadline: u64,
    /// The internal bucket holding the result.
    pub internal_bucket: String,
    /// Which execution of this watch this is: a watch that lives long (a run's, for up to
    /// 30 days) is carried on by a fresh execution before a Step Functions history fills.
    #[serde(default, skip_serializing_if = "is_first")]
    pub generation: u32,
    /// On AWS, how long the watch waits before its first check, seconds: a check at once
    /// finds a run that has only just started, and costs a read of the lock and of the
    /// rows. (The state machine carries each check's answer in the same field, the wait
    /// before the next check.) Absent: check at once. Locally, where a check costs nothing,
    /// the first comes after a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u64>,
    /// A retry's timer (attempt [`AttemptId::retry_timer`]): one check at this moment, ms
    /// since the epoch, which kicks the run if the order's retry is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at_ms: Option<u64>,
}

fn is_first(generation: &u32) -> bool {
    *generation == 0
}

/// Starts a watchdog that calls `Engine::watchdog_check` (`sluice-engine`) until it reports done.
#[async_trait]
pub trait WatchdogStarter: Send + Sync + Debug {
    /// Starts watching; returns once the watchdog is running. Starting the same attempt's
    /// watchdog twice is harmless.
    async fn start(&self, input: &WatchdogInput) -> Result<(), DispatchError>;
}
