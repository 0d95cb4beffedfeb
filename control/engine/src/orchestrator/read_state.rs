//! read_state: the run's orders as they are now, with every result that arrived applied.
//!
//! Incremental by construction: one query for the run's orders, one LIST of the run's
//! callback prefix, and a GET only for results of orders still waiting for one
//! (`dispatching` or `running`), and only of their current attempt: a result a worker of an
//! earlier attempt reports late lies under that attempt's key and is never read. Applying a
//! result is a conditional transition, so a result that arrives twice, or late after a
//! timeout, never changes a terminal status.

use sluice_contract::events::OrderEmitted;
use sluice_contract::result::{MALFORMED_RESULT, MAX_RESULT_BYTES, parse_result};
use sluice_contract::{OrderStatus, RunId, keys};

use super::{Arrivals, Moved};
use crate::engine::Engine;
use crate::error::{EngineError, StoreError};
use crate::ports::{OrderRecord, Transition};

impl Engine {
    /// Reads the run's orders and applies the results that arrived (see the module docs):
    /// those `known` names, or, when it is `None`, those a LIST of the run's callbacks
    /// finds.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub async fn read_state(
        &self,
        run_id: &RunId,
        known: Option<&Arrivals>,
    ) -> Result<Vec<OrderRecord>, EngineError> {
        let mut orders = self.ports.orders.run_orders(run_id).await?;
        let listed;
        let arrived = match known {
            Some(known) => known,
            None => {
                listed = self
                    .ports
                    .internal
                    .list(&keys::run_callbacks(run_id))
                    .await?
                    .iter()
                    .filter_map(|key| keys::parse_result(key))
                    .map(|key| (key.order_num, key.attempt))
                    .collect();
                &listed
            }
        };
        for order in orders.iter_mut() {
            let waiting = matches!(
                order.status,
                OrderStatus::Dispatching | OrderStatus::Running
            );
            let Some(attempt) = order.attempt.clone() else {
                continue;
            };
            if waiting && arrived.contains(&(order.plan.order_num, attempt)) {
                *order = self.apply_result(order).await?;
            }
        }
        Ok(orders)
    }

    /// Reads one order's result and moves the order to the status it reports.
    async fn apply_result(&self, order: &OrderRecord) -> Result<OrderRecord, EngineError> {
        let Some(attempt) = &order.attempt else {
            return Err(EngineError::Store(StoreError::Backend {
                what: format!("order {}", order.pk()),
                message: "in flight without an attempt id".to_owned(),
            }));
        };
        let key = keys::result(&order.run_id, order.plan.order_num, attempt);
        // Bounded: a worker (or whoever holds its URL) may have written any size; one larger
        // than a result can be is malformed, and is never loaded whole.
        let bytes = match self
            .ports
            .internal
            .get_prefix(&key, MAX_RESULT_BYTES as u64)
            .await
        {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => return Ok(order.clone()),
            Err(other) => return Err(other.into()),
        };
        // A result for an order still `dispatching` means its orchestrator stopped between
        // starting the worker and recording it: record it now, then apply the result.
        let order = if order.status == OrderStatus::Dispatching {
            self.move_order(order, &Transition::to(OrderStatus::Running))
                .await?
                .row()
        } else {
            order.clone()
        };
        if order.status != OrderStatus::Running {
            return Ok(order);
        }
        let order = &order;
        let now = self.now_ms();
        let fallback_duration = order.dispatched_at_ms.map(|t| now.saturating_sub(t));
        let mut emitted = Vec::new();
        let (change, detail) = match parse_result(&bytes) {
            Ok(doc) => {
                emitted = doc.events.clone();
                let mut change = Transition::to(doc.status);
                change.exit_code = doc.exit_code;
                change.reason = doc.reason.clone();
                change.duration_ms = doc.duration_ms().or(fallback_duration);
                let detail = serde_json::json!({
                    "exit_code": doc.exit_code, "reason": doc.reason, "attempt": doc.attempt,
                    "log_bytes": doc.log_bytes, "log_truncated": doc.log_truncated,
                });
                (change, detail)
            }
            Err(malformed) => {
                tracing::warn!(order_num = %order.plan.order_num, error = %malformed, "malformed result");
                let mut change = Transition::to(OrderStatus::Failed).reason(MALFORMED_RESULT);
                change.duration_ms = fallback_duration;
                (
                    change,
                    serde_json::json!({ "reason": MALFORMED_RESULT, "error": malformed.to_string() }),
                )
            }
        };
        let mut change = change;
        change.finished_at_ms = Some(now);
        match self.move_order(order, &change).await? {
            Moved::Applied(updated) => {
                tracing::info!(order_num = %order.plan.order_num, status = %updated.status, "order finished");
                self.record_emitted(&updated, emitted);
                self.record_event(&updated, updated.status.as_str(), detail);
                Ok(updated)
            }
            // Someone else applied it (or the job timed it out) first: theirs stands.
            Moved::Lost(current) => Ok(current),
        }
    }

    /// Records the events an order emitted (carried in its result) as `emitted:<kind>` rows.
    /// Their times are made strictly increasing, so two events of one millisecond keep
    /// distinct keys and their order.
    fn record_emitted(&self, order: &OrderRecord, emitted: Vec<OrderEmitted>) {
        let mut last_ms: u64 = 0;
        for event in emitted {
            let at_ms = event
                .at_ms
                .unwrap_or_else(|| self.now_ms())
                .max(last_ms.saturating_add(1));
            last_ms = at_ms;
            let detail = serde_json::json!({ "message": event.message, "data": event.data });
            self.record_event_at(order, at_ms, &format!("emitted:{}", event.kind), detail);
        }
    }

    /// Records an order event, written with the rest of the step's (see
    /// [`Engine::write_events`]).
    pub(crate) fn record_event(&self, order: &OrderRecord, event: &str, detail: serde_json::Value) {
        self.record_event_at(order, self.now_ms(), event, detail);
    }

    fn record_event_at(
        &self,
        order: &OrderRecord,
        epoch_ms: u64,
        event: &str,
        detail: serde_json::Value,
    ) {
        self.record(crate::ports::OrderEvent {
            trace_id: order.trace_id.clone(),
            order_name: order.plan.order_name.clone(),
            epoch_ms,
            event: event.to_owned(),
            run_id: order.run_id.clone(),
            detail,
        });
    }
}
