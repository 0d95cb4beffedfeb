//! Resuming a local run whose `sluice` process died (`kill -9`, a crash, a reboot).
//!
//! On AWS nothing needs resuming: workers, watchdogs and the run's watch live apart from
//! any orchestrator invocation. Locally they all lived in the dead process, so a run it left
//! has orders `dispatching` or `running` whose attempts died with it, a lock that may still
//! look held, and no watch. [`LocalRuntime::resume`] takes such a run over: it frees the
//! lock, applies the results that did arrive (an order that finished is never run again),
//! gives every order whose attempt was lost back to the queue (`running → queued`: it gets
//! a new attempt), starts the run's watch in this process and kicks a pass. The caller must
//! first make sure the dead process's orders are gone.
//!
//! Which process runs a run is said by [`RunOwnership`]: an exclusive lock on
//! `owners/<run_id>.lock` in the state folder, which `sluice run` takes once its run exists
//! and `sluice resume` before it takes one over. The kernel drops it when its process dies,
//! however it dies, so a run still carried by a live process is never resumed beside it.

use std::fs::{File, TryLockError};

use sluice_contract::{AttemptId, OrderNum, OrderStatus, RunId};

use super::LocalRuntime;
use crate::error::{EngineError, StoreError};
use crate::orchestrator::Moved;
use crate::ports::{Transition, WatchdogInput};

/// Folder of the state folder that holds the runs' ownership locks.
const OWNERS_FOLDER: &str = "owners";

/// This process's hold on a run (see the module docs); released when dropped.
#[derive(Debug)]
pub struct RunOwnership {
    _lock: File,
}

impl RunOwnership {
    /// Takes the hold on `run_id` in the state folder `state_dir`, unless a live process
    /// has it.
    ///
    /// # Errors
    ///
    /// [`OwnershipError::Busy`] when a live process holds it.
    pub fn take(state_dir: &std::path::Path, run_id: &RunId) -> Result<Self, OwnershipError> {
        let io = |cause| OwnershipError::Io {
            run_id: run_id.clone(),
            cause,
        };
        let folder = state_dir.join(OWNERS_FOLDER);
        std::fs::create_dir_all(&folder).map_err(io)?;
        let file = File::create(folder.join(format!("{run_id}.lock"))).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(RunOwnership { _lock: file }),
            Err(TryLockError::WouldBlock) => Err(OwnershipError::Busy(run_id.clone())),
            Err(TryLockError::Error(cause)) => Err(io(cause)),
        }
    }
}

/// A run could not be owned.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// Another live process carries the run.
    #[error(
        "run {0} is being run by another sluice process (its lock in the state folder is held)"
    )]
    Busy(RunId),
    /// The lock file could not be made or locked.
    #[error("locking run {run_id}: {cause}")]
    Io {
        /// The run.
        run_id: RunId,
        /// What failed.
        cause: std::io::Error,
    },
}

/// What [`LocalRuntime::resume`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// Orders whose lost attempt was given back to the queue.
    pub requeued: Vec<OrderNum>,
}

impl LocalRuntime {
    /// The runs of this state folder that are not finalized.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunId>, StoreError> {
        self.tables.unfinished_runs().await
    }

    /// Takes this process's hold on `run_id` (see the module docs).
    ///
    /// # Errors
    ///
    /// [`OwnershipError::Busy`] when a live process holds it.
    pub fn own(&self, run_id: &RunId) -> Result<RunOwnership, OwnershipError> {
        RunOwnership::take(&self.state_dir, run_id)
    }

    /// Takes over `run_id` (see the module docs).
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownRun`] when the run has no rows; a storage failure.
    pub async fn resume(&self, run_id: &RunId) -> Result<Resumed, EngineError> {
        let engine = &self.engine;
        self.tables.free_lock(run_id).await?;
        let orders = engine.read_state(run_id, None).await?;
        let Some(first) = orders.first() else {
            return Err(EngineError::UnknownRun(run_id.to_string()));
        };
        let watch = WatchdogInput {
            run_id: run_id.clone(),
            order_num: OrderNum::INIT,
            attempt: AttemptId::run_watch(),
            timeout: 0,
            start_time: first.created_at_ms / 1000,
            job_deadline: first.job_deadline_ms.div_ceil(1000),
            internal_bucket: engine.ports.internal.bucket().to_owned(),
            generation: 0,
            wait_seconds: None,
            wake_at_ms: None,
        };
        let mut requeued = Vec::new();
        for order in &orders {
            if !matches!(
                order.status,
                OrderStatus::Dispatching | OrderStatus::Running
            ) {
                continue;
            }
            let moved = engine
                .move_order(order, &Transition::to(OrderStatus::Queued))
                .await?;
            if let Moved::Applied(row) = moved {
                let detail = serde_json::json!({ "lost_attempt": order.attempt });
                engine.record_event(&row, "requeued", detail);
                requeued.push(order.plan.order_num);
            }
        }
        // Written without the lock: no step of this process plans from rows read before.
        engine.last_releases.rows_written_apart();
        engine.write_events().await;
        engine
            .ports
            .watchdog
            .start(&watch)
            .await
            .map_err(|error| EngineError::Start(Box::new(error)))?;
        self.kick(run_id);
        tracing::info!(run_id = %run_id, requeued = requeued.len(), "run resumed");
        Ok(Resumed { requeued })
    }
}
