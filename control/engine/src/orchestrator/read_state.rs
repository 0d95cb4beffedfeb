//! read_state: the run's orders as they are now, with every result that arrived applied.
//!
//! Incremental by construction: one query for the run's orders, one LIST of the run's
//! callback prefix, and a GET only for results of orders still waiting for one
//! (`dispatching` or `running`), and only of their current attempt: a result a worker of an
//! earlier attempt reports late lies under that attempt's key and is never read. When the
//! notifications name the results, or when reading every waiting order's result costs no
//! more requests than the LIST would (a chain: one order in flight; a local folder, where
//! a listing visits every result's file), there is no LIST. The GETs
//! run side by side, and the results a step read are applied together
//! (`Engine::move_orders`). Applying a result is a conditional transition, so a result
//! that arrives twice, or late after a timeout, never changes a terminal status.

use futures::stream::{self, StreamExt};
use sluice_contract::events::OrderEmitted;
use sluice_contract::result::{
    AttemptRecord, MALFORMED_RESULT, MAX_REASON_BYTES, MAX_RESULT_BYTES, bounded, parse_result,
};
use sluice_contract::{OrderStatus, RunId, keys};

use super::taking::TakeLock;
use super::{Arrivals, Moved, put_back};
use crate::engine::Engine;
use crate::error::{EngineError, StoreError};
use crate::ports::{OrderEvent, OrderRecord, Transition};

/// Most bytes of an ended attempt's reason its row keeps.
const MAX_ATTEMPT_REASON_BYTES: usize = 1024;

/// The event of an attempt that ended and is followed by a retry (instead of the order's
/// end): its detail says how the attempt ended and when the next starts.
pub const RETRYING_EVENT: &str = "retrying";

/// A result read and not yet written: its order's row as stored, the change it makes, and
/// what the order's events will say.
#[derive(Debug)]
pub(crate) struct ReadResult {
    pub(crate) row: OrderRecord,
    pub(crate) change: Transition,
    detail: serde_json::Value,
    emitted: Vec<OrderEmitted>,
}

impl Engine {
    /// Reads the run's orders and applies the results that arrived (see the module docs):
    /// those `known` names, or, when it is `None`, every result of an order in flight (found
    /// by a LIST of the run's callbacks, or by reading each when that is cheaper).
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub async fn read_state(
        &self,
        run_id: &RunId,
        known: Option<&Arrivals>,
    ) -> Result<Vec<OrderRecord>, EngineError> {
        let (mut orders, results) = self.read_results(run_id, known, None, None).await?;
        self.write_results(&mut orders, results).await?;
        Ok(orders)
    }

    /// Reads the run's orders and the results that arrived, as [`Engine::read_state`],
    /// without applying them: a pass writes them with the first moves they lead to. A step
    /// that is to take the lock with those (`take`) writes nothing here: it is refused when a
    /// result must be recorded first. The rows are read unless the caller has them as they
    /// stand (`rows`: left by the release the step takes the lock from, which its taking
    /// checks, or by the step before under the lock held since).
    pub(crate) async fn read_results(
        &self,
        run_id: &RunId,
        known: Option<&Arrivals>,
        take: Option<&TakeLock>,
        rows: Option<Vec<OrderRecord>>,
    ) -> Result<(Vec<OrderRecord>, Vec<ReadResult>), EngineError> {
        let mut orders = match rows {
            Some(rows) => rows,
            None => self.ports.orders.run_orders(run_id).await?,
        };
        if let Some(take) = take
            && !take.follows_its_release(&orders)
        {
            take.refuse_unproven();
            return Ok((orders, Vec::new()));
        }
        let in_flight = |order: &&OrderRecord| {
            matches!(
                order.status,
                OrderStatus::Dispatching | OrderStatus::Running
            ) && order.attempt.is_some()
        };
        let listed;
        let arrived = match known {
            Some(known) => Some(known),
            None => {
                let in_flight_now = orders.iter().filter(in_flight).count();
                listed = self.listed_results(&orders, in_flight_now).await?;
                // `None`: every order in flight's result is read, found or not.
                listed.as_ref()
            }
        };
        let waiting: Vec<OrderRecord> = orders
            .iter()
            .filter(in_flight)
            .filter(|order| {
                arrived.is_none_or(|arrived| {
                    (order.attempt.clone())
                        .is_some_and(|attempt| arrived.contains(&(order.plan.order_num, attempt)))
                })
            })
            .cloned()
            .collect();
        let read: Vec<_> = stream::iter(waiting)
            .map(|order| async move {
                let read = self.read_result(&order).await;
                read.map(|bytes| (order, bytes))
            })
            .buffer_unordered(self.config.dispatch_parallelism.max(1))
            .collect()
            .await;
        let now = self.now_ms();
        let mut results = Vec::new();
        for read in read {
            let (order, bytes) = read?;
            let Some(bytes) = bytes else { continue };
            // A result for an order still `dispatching` means its orchestrator stopped
            // between starting the worker and recording it: record it now, then apply it.
            let order = if order.status == OrderStatus::Dispatching {
                if let Some(take) = take {
                    take.refuse(&"a result arrived for an order not recorded running");
                    return Ok((orders, Vec::new()));
                }
                let row = (self.move_order(&order, &Transition::to(OrderStatus::Running)))
                    .await?
                    .row();
                put_back(&mut orders, row.clone());
                row
            } else {
                order
            };
            if order.status == OrderStatus::Running {
                results.push(self.result_change(order, &bytes, now));
            }
        }
        Ok((orders, results))
    }

    /// The results of the run of `orders` that a LIST of its callbacks finds, as
    /// `(order, attempt)`; `None`, without listing, when looking for the own result of each
    /// of the `in_flight` attempts takes no more requests than the LIST would: one per page
    /// of the keys of the run's attempts so far (an order's results lie under its attempts'
    /// keys). The caller then looks for each.
    pub(crate) async fn listed_results(
        &self,
        orders: &[OrderRecord],
        in_flight: usize,
    ) -> Result<Option<Arrivals>, EngineError> {
        let attempted = orders.iter().filter(|o| o.attempt.is_some()).count();
        let listing_requests = attempted
            .div_ceil(self.ports.internal.keys_per_listing().max(1))
            .max(1);
        if in_flight <= listing_requests {
            return Ok(None);
        }
        let run_id = &orders[0].run_id;
        let keys = self
            .ports
            .internal
            .list(&keys::run_callbacks(run_id))
            .await?;
        Ok(Some(
            keys.iter()
                .filter_map(|key| keys::parse_result(key))
                .map(|key| (key.order_num, key.attempt))
                .collect(),
        ))
    }

    /// Writes `results` (see [`Engine::move_orders`]) into `orders`, recording the events
    /// of those applied; says whether every one was (none was moved by someone else first).
    pub(crate) async fn write_results(
        &self,
        orders: &mut [OrderRecord],
        results: Vec<ReadResult>,
    ) -> Result<bool, EngineError> {
        let moves = (results.iter())
            .map(|r| (r.row.clone(), r.change.clone()))
            .collect();
        let mut all_applied = true;
        for (moved, result) in self.move_orders(moves).await?.into_iter().zip(results) {
            all_applied &= matches!(moved, Moved::Applied(_));
            put_back(orders, self.settle_result(moved, &result, false));
        }
        Ok(all_applied)
    }

    /// The row a result's move left, its events recorded when the move was this pass's
    /// (and not `written` already, with the move).
    pub(crate) fn settle_result(
        &self,
        moved: Moved,
        result: &ReadResult,
        written: bool,
    ) -> OrderRecord {
        match moved {
            Moved::Applied(updated) => {
                tracing::info!(order_num = %updated.plan.order_num, status = %updated.status, "order finished");
                self.schedule_retry_timer(&updated);
                if !written {
                    for event in self.result_events(&updated, result) {
                        self.record(event);
                    }
                }
                updated
            }
            // Someone else applied it (or the job timed it out) first: theirs stands.
            Moved::Lost(current) => current,
        }
    }

    /// The events of `result`, applied to its order (`updated`): what the order emitted,
    /// then its end, dated when the result was read — the same events however often they
    /// are made (a write whose answer was lost, made again apart, records them once).
    pub(crate) fn result_events(
        &self,
        updated: &OrderRecord,
        result: &ReadResult,
    ) -> Vec<OrderEvent> {
        let read_ms = (result.change.finished_at_ms)
            .or_else(|| result.change.ended_attempt.as_ref()?.finished_at_ms)
            .unwrap_or_else(|| self.now_ms());
        let mut events = Self::emitted_events(updated, &result.emitted, read_ms);
        let end = match updated.status {
            OrderStatus::Queued => RETRYING_EVENT,
            status => status.as_str(),
        };
        events.push(order_event(updated, read_ms, end, result.detail.clone()));
        events
    }

    /// Reads the result of `order`'s current attempt, bounded: a worker (or whoever holds
    /// its URL) may have written any size; one larger than a result can be is malformed,
    /// and is never loaded whole. `None` when there is none (yet).
    async fn read_result(&self, order: &OrderRecord) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(attempt) = &order.attempt else {
            return Err(EngineError::Store(StoreError::Backend {
                what: format!("order {}", order.pk()),
                message: "in flight without an attempt id".to_owned(),
            }));
        };
        let key = keys::result(&order.run_id, order.plan.order_num, attempt);
        match self
            .ports
            .internal
            .get_prefix(&key, MAX_RESULT_BYTES as u64)
            .await
        {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// What a result read for `order` (running) makes of it.
    fn result_change(&self, order: OrderRecord, bytes: &[u8], now: u64) -> ReadResult {
        let fallback_duration = order.dispatched_at_ms.map(|t| now.saturating_sub(t));
        let (mut change, detail, emitted) = match parse_result(bytes) {
            Ok(doc) => {
                let mut change = Transition::to(doc.status);
                change.exit_code = doc.exit_code;
                // Bounded: a row is an item of at most 400 KB, and a reason may quote what
                // the order wrote.
                let reason =
                    (doc.reason.as_deref()).map(|r| bounded(r, MAX_REASON_BYTES).into_owned());
                change.reason = reason.clone();
                change.duration_ms = doc.duration_ms().or(fallback_duration);
                // What the worker said of its log; nothing for the watch's time-out, which
                // knows nothing of it.
                change.log_stored = match (&doc.log_key, doc.log_in_result) {
                    (Some(_), _) => Some(true),
                    (None, true) => Some(false),
                    (None, false) => None,
                };
                // Where its outputs are: the attempt's own key, whatever the result says.
                change.outputs_key = (order.attempt.as_ref())
                    .filter(|_| doc.outputs > 0)
                    .map(|attempt| keys::outputs(&order.run_id, order.plan.order_num, attempt));
                change.ran_sandboxed = doc.sandbox;
                let detail = serde_json::json!({
                    "exit_code": doc.exit_code, "reason": reason, "attempt": doc.attempt,
                    "log_bytes": doc.log_bytes, "log_truncated": doc.log_truncated,
                    "outputs": doc.outputs,
                });
                (change, detail, doc.events)
            }
            Err(malformed) => {
                tracing::warn!(order_num = %order.plan.order_num, error = %malformed, "malformed result");
                let mut change = Transition::to(OrderStatus::Failed).reason(MALFORMED_RESULT);
                change.duration_ms = fallback_duration;
                let detail = serde_json::json!({ "reason": MALFORMED_RESULT, "error": malformed.to_string() });
                (change, detail, Vec::new())
            }
        };
        change.finished_at_ms = Some(now);
        let change = self.retried_or_ended(&order, change, now);
        let mut detail = detail;
        if let Some(retry_at_ms) = change.retry_at_ms {
            detail["retry_at_ms"] = retry_at_ms.into();
            detail["attempt_number"] = (order.attempts.len() + 1).into();
            detail["status"] = change
                .ended_attempt
                .as_ref()
                .map(|a| a.status.as_str())
                .into();
        }
        ReadResult {
            row: order,
            change,
            detail,
            emitted,
        }
    }

    /// `ended`, how `order`'s current attempt ended; or, when its retry policy calls for
    /// another attempt that can start before the job's deadline, the order queued again for
    /// it: the attempt recorded, the next attempt's log key, and when it may start.
    fn retried_or_ended(&self, order: &OrderRecord, ended: Transition, now: u64) -> Transition {
        let (Some(policy), Some(attempt)) = (&order.plan.retry, &order.attempt) else {
            return ended;
        };
        let number = order.attempts.len() as u32 + 1;
        if !policy.retries(number, ended.to, ended.exit_code) {
            return ended;
        }
        let retry_at_ms = now + policy.delay_ms(number, self.ports.clock.jitter());
        if retry_at_ms >= order.job_deadline_ms {
            return ended;
        }
        let record = AttemptRecord {
            number,
            attempt: attempt.clone(),
            status: ended.to,
            // A row keeps up to eleven: each reason bounded, within an item's 400 KB.
            reason: ended
                .reason
                .as_deref()
                .map(|r| bounded(r, MAX_ATTEMPT_REASON_BYTES).into_owned()),
            exit_code: ended.exit_code,
            dispatched_at_ms: order.dispatched_at_ms,
            finished_at_ms: ended.finished_at_ms,
            duration_ms: ended.duration_ms,
            // A log its result holds alone is in that attempt's result.
            log_key: (ended.log_stored != Some(false)).then(|| order.log_key.clone()),
        };
        Transition {
            log_key: Some(keys::attempt_log(
                &order.run_id,
                order.plan.order_num,
                number + 1,
            )),
            retry_at_ms: Some(retry_at_ms),
            ended_attempt: Some(record),
            ..Transition::to(OrderStatus::Queued)
        }
    }

    /// The events an order emitted (carried in its result), as `emitted:<kind>` rows dated
    /// as it dated them, else at `read_ms`. Their times are made strictly increasing, so two
    /// events of one millisecond keep distinct keys and their order.
    fn emitted_events(
        order: &OrderRecord,
        emitted: &[OrderEmitted],
        read_ms: u64,
    ) -> Vec<OrderEvent> {
        let mut last_ms: u64 = 0;
        (emitted.iter())
            .map(|event| {
                let at_ms = event
                    .at_ms
                    .unwrap_or(read_ms)
                    .max(last_ms.saturating_add(1));
                last_ms = at_ms;
                let detail = serde_json::json!({ "message": event.message, "data": event.data });
                order_event(order, at_ms, &format!("emitted:{}", event.kind), detail)
            })
            .collect()
    }

    /// Records an order event, written with the rest of the step's (see
    /// [`Engine::write_events`]).
    pub(crate) fn record_event(&self, order: &OrderRecord, event: &str, detail: serde_json::Value) {
        self.record(order_event(order, self.now_ms(), event, detail));
    }
}

/// `order`'s event named `event`, at `epoch_ms`.
pub(crate) fn order_event(
    order: &OrderRecord,
    epoch_ms: u64,
    event: &str,
    detail: serde_json::Value,
) -> OrderEvent {
    OrderEvent {
        trace_id: order.trace_id.clone(),
        order_name: order.plan.order_name.clone(),
        epoch_ms,
        event: event.to_owned(),
        run_id: order.run_id.clone(),
        detail,
    }
}
