//! Stopping a run: every order that has not ended becomes `cancelled`.
//!
//! A cancel is asked for by storing the run's cancel request
//! ([`sluice_contract::cancel::CancelRequest`], if absent: the first to ask is who
//! cancelled) and writing its trigger, whose notification wakes a pass
//! ([`Engine::request_cancel`]); the pass, the run's watch (should that notification be
//! lost) and the `sluice` carrying a local run act on it ([`Engine::cancel_if_requested`]),
//! and running workers stop their orders when they find it.
//!
//! Results that already arrived are applied first (an order that finished keeps its
//! status); then each unfinished order — queued, being dispatched, running — is moved to
//! `cancelled` by a conditional write, so nothing more is dispatched and a result its
//! worker still sends changes nothing. With every order ended, the next pass writes the
//! done document, whose status is `cancelled`. Stopping the workers' processes is the
//! caller's part (locally: SIGTERM, the grace period, SIGKILL).

use std::time::Duration;

use sluice_contract::cancel::{
    CancelRequest, MAX_CANCEL_REQUEST_BYTES, check_cancelled_by, parse_cancel_request,
};
use sluice_contract::validate::Platform;
use sluice_contract::{ExecutionTarget, JobStatus, OrderStatus, RunId, keys};

use crate::engine::{Engine, to_json};
use crate::error::{EngineError, StoreError};
use crate::ports::OrderRecord;
use crate::retry::{Backoff, while_transient};

/// What became of a request to cancel a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelAnswer {
    /// The request is stored, and the run woken to act on it.
    Requested(CancelRequest),
    /// Someone asked first (this request, made again, is one of these too): theirs stands.
    AlreadyRequested(CancelRequest),
    /// The run had ended already, with this status.
    AlreadyEnded(JobStatus),
}

/// Retries of a cancel that failed transiently, and the first wait (about 7 s in all).
const CANCEL_RETRIES: u32 = 4;
const CANCEL_RETRY_FIRST: Duration = Duration::from_millis(500);

impl Engine {
    /// Asks to cancel `run_id` as `by`: stores the run's cancel request (if none is there)
    /// and, on AWS, writes its trigger, which wakes a pass to cancel the run (a local run is
    /// cancelled by the `sluice` carrying it, which looks for the request).
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownRun`] when the run has neither rows nor a done document; a
    /// name that cannot be shown ([`StoreError::Backend`]); a backend failure.
    pub async fn request_cancel(
        &self,
        run_id: &RunId,
        by: &str,
    ) -> Result<CancelAnswer, EngineError> {
        check_cancelled_by(by).map_err(|message| StoreError::Backend {
            what: "the name of who cancels".to_owned(),
            message,
        })?;
        let view = self.run_view(run_id).await?;
        if let Some(done) = view.done {
            return Ok(CancelAnswer::AlreadyEnded(done.status));
        }
        let request = CancelRequest {
            by: by.to_owned(),
            at_ms: self.now_ms(),
        };
        let key = keys::cancel_request(run_id);
        let answer = match self
            .ports
            .internal
            .put_if_absent(&key, to_json(&request))
            .await
        {
            Ok(()) => CancelAnswer::Requested(request),
            Err(StoreError::ConditionFailed { .. }) => {
                let first = self.cancel_requested(run_id).await?;
                CancelAnswer::AlreadyRequested(first.unwrap_or(request))
            }
            Err(other) => return Err(other.into()),
        };
        // On AWS its notification wakes a pass. Locally no event crosses processes: the
        // `sluice` carrying the run looks for the request itself (a trigger written here
        // would wake this process's own pass, which would finalize the run while the other
        // one's orders still run).
        if self.config.platform == Platform::Aws {
            (self.ports.internal)
                .put(&keys::cancel_trigger(run_id), b"{}".to_vec())
                .await?;
        }
        Ok(answer)
    }

    /// The run's cancel request, when someone asked. A request that cannot be read (it
    /// is written only by `sluice cancel`, through the control plane's grants) still
    /// cancels: as asked by `unknown`.
    ///
    /// # Errors
    ///
    /// A backend failure reading it.
    pub async fn cancel_requested(
        &self,
        run_id: &RunId,
    ) -> Result<Option<CancelRequest>, EngineError> {
        let key = keys::cancel_request(run_id);
        let bytes = match (self.ports.internal)
            .get_prefix(&key, MAX_CANCEL_REQUEST_BYTES + 1)
            .await
        {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other.into()),
        };
        Ok(Some(parse_cancel_request(&bytes).unwrap_or_else(|error| {
            tracing::warn!(run_id = %run_id, %error, "an unreadable cancel request; cancelling all the same");
            CancelRequest::unreadable(self.now_ms())
        })))
    }

    /// Cancels `run_id` ([`Engine::cancel_run`]) when someone asked to; the request when
    /// so.
    ///
    /// Made without the run's lock, as every cancel: a pass holding it meanwhile may
    /// release it from rows read before (its moves, conditional on the statuses it read,
    /// are refused), so the caller runs a pass after, which finalizes the run.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub async fn cancel_if_requested(
        &self,
        run_id: &RunId,
    ) -> Result<Option<CancelRequest>, EngineError> {
        let Some(request) = self.cancel_requested(run_id).await? else {
            return Ok(None);
        };
        self.cancel_run(run_id, &request.reason()).await?;
        Ok(Some(request))
    }

    /// Cancels every unfinished order of `run_id` with `reason`; returns the orders as
    /// they are afterwards.
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownRun`] when the run has no orders; a backend failure.
    pub async fn cancel_run(
        &self,
        run_id: &RunId,
        reason: &str,
    ) -> Result<Vec<OrderRecord>, EngineError> {
        // Every step is safe to repeat: a transient failure is tried again (as a pass is).
        let backoff = Backoff::new(CANCEL_RETRY_FIRST, CANCEL_RETRIES);
        let cancelled = while_transient(
            self.ports.clock.as_ref(),
            backoff,
            "cancelling",
            EngineError::kind,
            || self.cancel_once(run_id, reason),
        )
        .await;
        // Rows this process's steps kept from before are not planned from again.
        self.last_releases.rows_written_apart();
        // Results applied on the way recorded their events.
        self.write_events().await;
        let (settled, builds_ran) = cancelled?;
        if builds_ran {
            self.stop_builds(run_id).await;
        }
        Ok(settled)
    }

    /// Stops the run's CodeBuild builds, which their workers would end only once they
    /// look (a build still in CodeBuild's queue looks when it starts); a failure is logged:
    /// the workers stop all the same.
    async fn stop_builds(&self, run_id: &RunId) {
        match self.ports.dispatcher.stop_builds(run_id).await {
            Ok(0) => {}
            Ok(stopped) => {
                tracing::info!(run_id = %run_id, stopped, "builds of the cancelled run stopped")
            }
            Err(error) => {
                tracing::warn!(run_id = %run_id, %error, "the builds of the cancelled run could not be listed; their workers stop them")
            }
        }
    }

    /// The orders as cancelled, and whether one of them was on CodeBuild until then.
    async fn cancel_once(
        &self,
        run_id: &RunId,
        reason: &str,
    ) -> Result<(Vec<OrderRecord>, bool), EngineError> {
        let orders = self.read_state(run_id, None).await?;
        if orders.is_empty() {
            return Err(EngineError::UnknownRun(run_id.to_string()));
        }
        let builds_ran = orders.iter().any(|order| {
            order.plan.execution_target == ExecutionTarget::Codebuild
                && matches!(
                    order.status,
                    OrderStatus::Dispatching | OrderStatus::Running
                )
        });
        let now = self.now_ms();
        let mut settled = Vec::with_capacity(orders.len());
        for order in &orders {
            settled.push(
                self.settle(order, OrderStatus::Cancelled, reason, now)
                    .await?,
            );
        }
        tracing::info!(run_id = %run_id, reason, "run cancelled");
        Ok((settled, builds_ran))
    }
}
