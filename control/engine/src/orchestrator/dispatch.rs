//! dispatch: fail what cannot run, start what can, and retry starts that were interrupted.
//!
//! Starting an order is idempotent: `queued → dispatching` is a conditional write that also
//! records a fresh attempt id, then the attempt's payload is made (the order's key derived
//! from the run's, read once per pass — see [`crate::run_key`] — and a presigned URL
//! minted for each object the attempt touches: workers hold no credentials),
//! then the worker is started (the run's watch, started before the run's rows, watches
//! it: nothing runs unwatched), then `dispatching → running`. An order found `dispatching`
//! longer than the dispatch lease (its orchestrator crashed mid-start) is started again with
//! the same attempt id; the worker claims the attempt before running anything, so the order
//! still runs at most once. A start that fails transiently (throttled, timed out) is
//! retried a few times in the pass, then left `dispatching` for that later retry; only a
//! permanent failure fails the order (`dispatch_failed`).

use std::time::Duration;

use futures::stream::{self, StreamExt};
use sluice_contract::dispatch::{Capability, DispatchPayload, OrderIdentity};
use sluice_contract::result::{DEPENDENCY_CANCELLED, DEPENDENCY_FAILED};
use sluice_contract::validate::{MAX_PRESIGN_EXPIRY, PRESIGN_MARGIN};
use sluice_contract::{AttemptId, OrderStatus, keys};

use super::Moved;
use super::evaluate::{Node, evaluate};
use crate::engine::{Engine, millis};
use crate::error::{EngineError, ErrorKind, StoreError};
use crate::ports::{DispatchError, OrderRecord, Presigned, Transition};
use crate::retry::{Backoff, while_transient};
use crate::run_key::order_identity;

/// The keys a pass read, by path: the stored value, or why it could not be read.
type StoredKeys = std::collections::HashMap<String, Result<String, StoreError>>;

/// Retries of a start that failed transiently within one pass, and the first wait.
const START_RETRIES: u32 = 2;
const START_RETRY_FIRST: Duration = Duration::from_secs(1);

impl Engine {
    /// Evaluates the run and acts on the plan until nothing more can change without a
    /// worker's result; returns the orders as they are afterwards.
    ///
    /// An order whose start failed is `failed` at once, with no worker and so no result to
    /// wake the orchestrator again: the plan is evaluated once more, so its dependents fail
    /// (or, when they need not succeed, start) now rather than wait forever.
    ///
    /// Past the job's deadline nothing new is started: finalize times the rest out.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub(crate) async fn apply_plan(
        &self,
        mut orders: Vec<OrderRecord>,
    ) -> Result<Vec<OrderRecord>, EngineError> {
        loop {
            let failed_to_start;
            (orders, failed_to_start) = self.apply_plan_once(orders).await?;
            if !failed_to_start {
                return Ok(orders);
            }
        }
    }

    /// One evaluation and its actions; also says whether an order failed to start.
    async fn apply_plan_once(
        &self,
        mut orders: Vec<OrderRecord>,
    ) -> Result<(Vec<OrderRecord>, bool), EngineError> {
        let now = self.now_ms();
        if orders.iter().any(|o| now >= o.job_deadline_ms) {
            return Ok((orders, false));
        }
        let nodes: Vec<Node> = orders.iter().map(Node::from).collect();
        let plan = evaluate(&nodes);

        let ended_by_dependency = (plan.dependency_failed.iter())
            .map(|num| (num, OrderStatus::Failed, DEPENDENCY_FAILED))
            .chain(
                (plan.dependency_cancelled.iter())
                    .map(|num| (num, OrderStatus::Cancelled, DEPENDENCY_CANCELLED)),
            );
        for (num, status, reason) in ended_by_dependency {
            let index = num.index().expect("real order");
            let change = Transition {
                finished_at_ms: Some(now),
                ..Transition::to(status).reason(reason)
            };
            orders[index] = match self.move_order(&orders[index], &change).await? {
                Moved::Applied(updated) => {
                    let detail = serde_json::json!({ "reason": reason });
                    self.record_event(&updated, status.as_str(), detail);
                    updated
                }
                Moved::Lost(current) => current,
            };
        }

        let stale_before = now.saturating_sub(millis(self.config.dispatch_lease));
        let to_start: Vec<(usize, bool)> = plan
            .ready
            .iter()
            .map(|num| (num.index().expect("real order"), false))
            .chain(orders.iter().enumerate().filter_map(|(i, o)| {
                let stale = o.status == OrderStatus::Dispatching
                    && o.dispatched_at_ms.is_none_or(|t| t <= stale_before);
                stale.then_some((i, true))
            }))
            .collect();
        let stored_keys = self
            .read_keys(to_start.iter().map(|(index, _)| &orders[*index]))
            .await;
        let stored_keys = &stored_keys;
        let started: Vec<(usize, Result<OrderRecord, EngineError>)> = stream::iter(to_start)
            .map(|(index, retry)| {
                let order = orders[index].clone();
                async move { (index, self.start_order(order, retry, stored_keys).await) }
            })
            .buffer_unordered(self.config.dispatch_parallelism.max(1))
            .collect()
            .await;
        let mut failed_to_start = false;
        for (index, result) in started {
            orders[index] = result?;
            failed_to_start |= orders[index].status.is_terminal();
        }
        Ok((orders, failed_to_start))
    }

    /// Reads, once each, the keys the orders to start are derived from (one run key for a
    /// run queued since run keys; an order's own key for one queued before). A key that
    /// cannot be read is kept as its error, and fails only the orders that need it.
    async fn read_keys<'o>(&self, orders: impl Iterator<Item = &'o OrderRecord>) -> StoredKeys {
        let paths: std::collections::BTreeSet<&str> =
            orders.map(|order| order.key_path.as_str()).collect();
        let mut stored = StoredKeys::new();
        for path in paths {
            let read = while_transient(
                self.ports.clock.as_ref(),
                Backoff::new(START_RETRY_FIRST, START_RETRIES),
                "reading a run's key",
                StoreError::kind,
                || self.ports.keys.get_key(path),
            )
            .await;
            stored.insert(path.to_owned(), read);
        }
        stored
    }

    /// Starts the worker, retrying a transient failure a few times. The run's watch,
    /// started before the run's rows, watches it.
    async fn start_worker(
        &self,
        order: &OrderRecord,
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError> {
        let backoff = Backoff::new(START_RETRY_FIRST, START_RETRIES);
        let start = || {
            self.ports.dispatcher.start(
                order.plan.execution_target,
                Duration::from_secs(order.plan.timeout),
                payload,
            )
        };
        let kind_of = |error: &DispatchError| error.kind;
        while_transient(
            self.ports.clock.as_ref(),
            backoff,
            "starting",
            kind_of,
            start,
        )
        .await
    }

    /// What the worker of `attempt` is handed: a URL for each object the attempt reads or
    /// writes, minted now for this attempt's own keys, and the order's identity. Workers
    /// hold no credentials: a worker that cannot even read its bundle can still report
    /// through its callback URL, and a worker of an earlier attempt cannot overwrite this
    /// attempt's result. The URLs live as long as the attempt may report — until the job's
    /// deadline (a worker may wait in a queue before its timeout starts) — and a margin,
    /// within what a presigned URL can live.
    ///
    /// # Errors
    ///
    /// The order's key cannot be read (a transient failure after a few tries), or a URL
    /// cannot be signed.
    async fn attempt_payload(
        &self,
        order: &OrderRecord,
        attempt: &AttemptId,
        now: u64,
        stored_keys: &StoredKeys,
    ) -> Result<DispatchPayload, DispatchError> {
        let failed = |kind, message: String| DispatchError {
            kind,
            what: "worker".to_owned(),
            run_id: order.run_id.clone(),
            order_num: order.plan.order_num,
            message,
        };
        let until_deadline = order.job_deadline_ms.saturating_sub(now) / 1000;
        let expiry = Duration::from_secs(
            until_deadline
                .max(order.plan.timeout)
                .saturating_add(PRESIGN_MARGIN)
                .min(MAX_PRESIGN_EXPIRY),
        );
        let (run_id, num) = (&order.run_id, order.plan.order_num);
        let presign = |operation, key: String| async move {
            let url = self.ports.internal.presign(operation, &key, expiry).await;
            url.map(Capability::new)
                .map_err(|e| failed(e.kind(), format!("presigning its URLs: {e}")))
        };
        let stored = match stored_keys.get(&order.key_path) {
            Some(Ok(stored)) => stored,
            Some(Err(e)) => {
                let message = format!("its key {} cannot be read: {e}", order.key_path);
                return Err(failed(e.kind(), message));
            }
            None => {
                let message = format!("its key {} was not read", order.key_path);
                return Err(failed(ErrorKind::Transient, message));
            }
        };
        let identity = order_identity(stored, run_id, num).map_err(|e| {
            failed(
                ErrorKind::Permanent,
                format!("its key {}: {e}", order.key_path),
            )
        })?;
        Ok(DispatchPayload {
            run_id: run_id.clone(),
            order_num: num,
            attempt: attempt.clone(),
            bundle_url: presign(Presigned::Get, keys::exec_zip(run_id, num)).await?,
            claim_url: presign(Presigned::PutIfAbsent, keys::claim(run_id, num, attempt)).await?,
            claim_check_url: presign(Presigned::Get, keys::claim(run_id, num, attempt)).await?,
            log_url: presign(Presigned::Put, order.log_key.clone()).await?,
            callback_url: presign(Presigned::PutIfAbsent, keys::result(run_id, num, attempt))
                .await?,
            identity: OrderIdentity::new(identity),
        })
    }

    /// Starts one order (or restarts a stale start with the same attempt id).
    async fn start_order(
        &self,
        order: OrderRecord,
        retry: bool,
        stored_keys: &StoredKeys,
    ) -> Result<OrderRecord, EngineError> {
        let now = self.now_ms();
        let order = if retry {
            tracing::warn!(order_num = %order.plan.order_num, "retrying an interrupted dispatch");
            order
        } else {
            let change = Transition {
                attempt: Some(AttemptId::generate()),
                dispatched_at_ms: Some(now),
                ..Transition::to(OrderStatus::Dispatching)
            };
            match self.move_order(&order, &change).await? {
                Moved::Applied(updated) => updated,
                Moved::Lost(current) => return Ok(current),
            }
        };
        let attempt = order.attempt.clone().unwrap_or_else(AttemptId::generate);

        let started = match self
            .attempt_payload(&order, &attempt, now, stored_keys)
            .await
        {
            Ok(payload) => self.start_worker(&order, &payload).await,
            Err(error) => Err(error),
        };
        if let Err(error) = started {
            if error.kind == ErrorKind::Transient {
                // It may even have started. The order stays `dispatching`: once the dispatch
                // lease has passed, a pass (kicked by the run's watch) starts the same
                // attempt again, and the worker's claim makes a second start harmless.
                tracing::warn!(order_num = %order.plan.order_num, %error, "dispatch failed transiently; it will be retried");
                return Ok(order);
            }
            tracing::error!(order_num = %order.plan.order_num, %error, "dispatch failed");
            let change = Transition {
                finished_at_ms: Some(self.now_ms()),
                ..Transition::to(OrderStatus::Failed).reason(format!(
                    "dispatch_failed: starting the {}: {}",
                    error.what, error.message
                ))
            };
            return Ok(match self.move_order(&order, &change).await? {
                Moved::Applied(updated) => {
                    let detail = serde_json::json!({ "reason": updated.reason });
                    self.record_event(&updated, "failed", detail);
                    updated
                }
                Moved::Lost(current) => current,
            });
        }
        match self
            .move_order(&order, &Transition::to(OrderStatus::Running))
            .await?
        {
            Moved::Applied(updated) => {
                tracing::info!(order_num = %order.plan.order_num, %attempt, target = %order.plan.execution_target, "order dispatched");
                let detail = serde_json::json!({ "attempt": attempt, "target": order.plan.execution_target.to_string() });
                self.record_event(&updated, "dispatched", detail);
                Ok(updated)
            }
            // Its result was applied already (a very fast worker): fine.
            Moved::Lost(current) => Ok(current),
        }
    }
}
