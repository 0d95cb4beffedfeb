//! Stopping a run: every order that has not ended becomes `cancelled`.
//!
//! Results that already arrived are applied first (an order that finished keeps its
//! status); then each unfinished order — queued, being dispatched, running — is moved to
//! `cancelled` by a conditional write, so nothing more is dispatched and a result its
//! worker still sends changes nothing. With every order ended, the next pass writes the
//! done document, whose status is `cancelled`. Stopping the workers' processes is the
//! caller's part (locally: SIGTERM, the grace period, SIGKILL).

use std::time::Duration;

use sluice_contract::{OrderStatus, RunId};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::ports::OrderRecord;
use crate::retry::{Backoff, while_transient};

/// Retries of a cancel that failed transiently, and the first wait (about 7 s in all).
const CANCEL_RETRIES: u32 = 4;
const CANCEL_RETRY_FIRST: Duration = Duration::from_millis(500);

impl Engine {
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
        cancelled
    }

    async fn cancel_once(
        &self,
        run_id: &RunId,
        reason: &str,
    ) -> Result<Vec<OrderRecord>, EngineError> {
        let orders = self.read_state(run_id, None).await?;
        if orders.is_empty() {
            return Err(EngineError::UnknownRun(run_id.to_string()));
        }
        let now = self.now_ms();
        let mut settled = Vec::with_capacity(orders.len());
        for order in &orders {
            settled.push(
                self.settle(order, OrderStatus::Cancelled, reason, now)
                    .await?,
            );
        }
        tracing::info!(run_id = %run_id, reason, "run cancelled");
        Ok(settled)
    }
}
