//! finalize: once every order is terminal, or the job's deadline passed, publish the done
//! document exactly once.
//!
//! Past the deadline every unfinished order becomes `timed_out` (reason `job_timeout`) by a
//! conditional write from its current status. The orders' last events and the `_job`
//! `completed` event are written first (by the step's last moves when they ended the run:
//! see `run_end`), then the done document with a conditional put (if absent): that put
//! is the "exactly once" gate, so an orchestrator that crashed after it and is resumed does
//! not publish a second one. Then the run's keys deleted, and the lock marked `completed`
//! for good.

use sluice_contract::job::ExecutionTarget;
use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};
use sluice_contract::outputs::{is_output_name, parse_published};
use sluice_contract::result::{
    AttemptRecord, DoneDoc, DoneOrder, DoneSummary, JOB_TIMEOUT, MAX_DONE_OUTPUTS_BYTES,
};
use sluice_contract::{JobStatus, OrderStatus, RunId, keys};

use super::Moved;
use crate::engine::Engine;
use crate::engine::to_json;
use crate::error::{EngineError, ErrorKind, StoreError};
use crate::ports::{OrderEvent, OrderRecord, Transition};
use crate::pr_comment::Ending;

/// The most bytes of outputs the done document shows, all orders together (a run of
/// 10 000 orders each publishing the most it shows would make a document of 640 MiB).
const MAX_DONE_OUTPUTS_TOTAL: u64 = 4 << 20;
/// How many orders' outputs finalize reads at once.
const OUTPUT_READS_AT_ONCE: usize = 16;

impl Engine {
    /// Finalizes the run if it is over; returns the job status when it did. `closed`: the
    /// step wrote the run's `completed` event already, with its last moves.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub(crate) async fn finalize_if_done(
        &self,
        run_id: &RunId,
        owner: &str,
        orders: &[OrderRecord],
        closed: bool,
    ) -> Result<Option<JobStatus>, EngineError> {
        let now = self.now_ms();
        let past_deadline = orders.iter().any(|o| now >= o.job_deadline_ms);
        let all_terminal = orders.iter().all(|o| o.status.is_terminal());
        if !all_terminal && !past_deadline {
            return Ok(None);
        }
        let mut orders = orders.to_vec();
        if !all_terminal {
            for order in orders.iter_mut().filter(|o| !o.status.is_terminal()) {
                *order = self.time_out_for_job(order, now).await?;
            }
        }
        let (mut doc, completed) = run_end(run_id, &orders);
        self.show_outputs(&mut doc).await?;
        if doc.status == JobStatus::Cancelled {
            // Who, when someone asked; a request that cannot be read does not keep the run
            // from its end.
            doc.cancelled_by = match self.cancel_requested(run_id).await {
                Ok(request) => request.map(|r| r.by),
                Err(error) if error.kind() == ErrorKind::Transient => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "who cancelled the run cannot be read");
                    None
                }
            };
        }
        let status = doc.status;
        // The orders' events, and the job's `completed`, are recorded before the done
        // document that ends the run, in one write — the step's last moves', when they fit.
        // `completed` is dated by the last order to end, so a finalize repeated (after a
        // crash, or by a pass that took the lock over) writes the same event over it rather
        // than a second one.
        if !closed {
            self.record(completed);
        }
        self.write_events().await;

        let first = match self
            .ports
            .done
            .put_if_absent(&keys::done(run_id), to_json(&doc))
            .await
        {
            Ok(()) => true,
            Err(StoreError::ConditionFailed { .. }) => false,
            Err(other) => return Err(other.into()),
        };
        if first {
            tracing::info!(%status, "run finalized");
            let ending = Ending {
                status,
                cancelled_by: doc.cancelled_by.as_deref(),
            };
            self.update_pr_comment(&orders, Some(ending)).await;
        }
        self.delete_keys_of(run_id, &orders).await?;
        self.run_keys.forget(run_id);
        match self.ports.orders.complete_lock(run_id, owner).await {
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(Some(status)),
            Err(other) => Err(other.into()),
        }
    }

    /// Fills in the outputs of the orders that published some, in order number, each read
    /// bounded and dropped once shown: an order's of at most [`MAX_DONE_OUTPUTS_BYTES`],
    /// until the document holds [`MAX_DONE_OUTPUTS_TOTAL`] of them (no more is read then);
    /// the rest stay at the order's `outputs_key`. Values holding a secret are named, not
    /// shown.
    ///
    /// # Errors
    ///
    /// A transient failure reading them (the pass is tried again); outputs that are gone
    /// or unreadable are left out (the document still says where they were).
    async fn show_outputs(&self, doc: &mut DoneDoc) -> Result<(), EngineError> {
        let reads: Vec<(usize, String)> = (doc.orders.iter().enumerate())
            .filter_map(|(index, order)| Some((index, order.outputs_key.clone()?)))
            .collect();
        let mut read = stream::iter(reads)
            .map(|(index, key)| async move {
                let bound = MAX_DONE_OUTPUTS_BYTES + 1;
                (index, self.ports.internal.get_prefix(&key, bound).await)
            })
            .buffered(OUTPUT_READS_AT_ONCE);
        let mut shown: u64 = 0;
        while let Some((index, bytes)) = read.next().await {
            let order = &mut doc.orders[index];
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(error) if error.is_transient() => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(order_num = %order.order_num, %error, "the order's outputs cannot be read for the done document");
                    continue;
                }
            };
            let size = bytes.len() as u64;
            if size > MAX_DONE_OUTPUTS_BYTES {
                continue;
            }
            if shown + size > MAX_DONE_OUTPUTS_TOTAL {
                break;
            }
            match parse_published(&bytes) {
                Ok(published) => {
                    shown += size;
                    // What the worker stored; locally an order could have written it.
                    let names = |name: &String| is_output_name(name);
                    order.withheld_outputs = published.secret.into_iter().filter(names).collect();
                    order.outputs = (published.outputs.into_iter())
                        .filter(|(name, _)| names(name) && !order.withheld_outputs.contains(name))
                        .collect();
                }
                Err(error) => {
                    tracing::warn!(order_num = %order.order_num, %error, "the order's outputs are unreadable");
                }
            }
        }
        Ok(())
    }

    /// Deletes the run's keys: the ones its rows name, without listing them (a call less
    /// on AWS), unless a CodeBuild order may have left its tickets' keys beside them, or
    /// the rows name something that is not one of the run's keys.
    async fn delete_keys_of(
        &self,
        run_id: &RunId,
        orders: &[OrderRecord],
    ) -> Result<(), StoreError> {
        let keys = &self.ports.keys;
        if (orders.iter()).any(|o| o.plan.execution_target == ExecutionTarget::Codebuild) {
            return keys.delete_run_keys(run_id).await;
        }
        let mut paths: Vec<String> = orders.iter().map(|o| o.key_path.clone()).collect();
        paths.sort_unstable();
        paths.dedup();
        match keys.delete_keys(run_id, &paths).await {
            Err(error) if !error.is_transient() => {
                tracing::warn!(%error, "could not delete the run's keys by their paths; listing them");
                keys.delete_run_keys(run_id).await
            }
            deleted => deleted,
        }
    }

    async fn time_out_for_job(
        &self,
        order: &OrderRecord,
        now: u64,
    ) -> Result<OrderRecord, EngineError> {
        self.settle(order, OrderStatus::TimedOut, JOB_TIMEOUT, now)
            .await
    }

    /// Ends an unfinished order with `status` and `reason` by a conditional write from
    /// whatever status it has; when it moves under us (a result landing), tries again from
    /// its new status, and leaves it be once it has ended otherwise.
    pub(crate) async fn settle(
        &self,
        order: &OrderRecord,
        status: OrderStatus,
        reason: &str,
        now: u64,
    ) -> Result<OrderRecord, EngineError> {
        let mut current = order.clone();
        for _ in 0..4 {
            if current.status.is_terminal() {
                return Ok(current);
            }
            let change = match current.awaiting_retry() {
                // Cut while waiting for a retry: what its last attempt did stands (the job's
                // deadline), or the stop's `cancelled` does; its times, exit code and log
                // are that attempt's.
                Some((ended, _)) => {
                    let (status, reason) = match status {
                        OrderStatus::TimedOut => (
                            ended.status,
                            format!(
                                "{}; its retry was cut by the job's deadline",
                                ended.reason.as_deref().unwrap_or(ended.status.as_str())
                            ),
                        ),
                        other => (other, reason.to_owned()),
                    };
                    Transition {
                        finished_at_ms: Some(now),
                        duration_ms: ended.duration_ms,
                        exit_code: ended.exit_code,
                        log_key: ended.log_key.clone(),
                        ..Transition::to(status).reason(reason)
                    }
                }
                None => Transition {
                    finished_at_ms: Some(now),
                    duration_ms: current.dispatched_at_ms.map(|t| now.saturating_sub(t)),
                    ..Transition::to(status).reason(reason)
                },
            };
            match self.move_order(&current, &change).await? {
                Moved::Applied(updated) => {
                    let detail = serde_json::json!({ "reason": reason });
                    self.record_event(&updated, status.as_str(), detail);
                    return Ok(updated);
                }
                Moved::Lost(moved) => current = moved,
            }
        }
        Ok(current)
    }
}

/// The done document of a run whose `orders` have all ended, and the job's `completed`
/// event: dated by the last order to end (else by the run's creation), so that the same
/// end always records the same event.
pub(crate) fn run_end(run_id: &RunId, orders: &[OrderRecord]) -> (DoneDoc, OrderEvent) {
    let cut_by_deadline = (orders.iter()).any(|o| o.reason.as_deref() == Some(JOB_TIMEOUT));
    let status = JobStatus::decide(
        orders.iter().map(|o| (o.status, o.plan.must_succeed)),
        cut_by_deadline,
    );
    let doc = done_document(run_id, status, orders);
    let ended_ms = orders.iter().filter_map(|o| o.finished_at_ms).max();
    let completed = OrderEvent {
        trace_id: orders[0].trace_id.clone(),
        order_name: OrderEvent::JOB.to_owned(),
        epoch_ms: ended_ms.unwrap_or(orders[0].created_at_ms),
        event: "completed".to_owned(),
        run_id: run_id.clone(),
        detail: serde_json::json!({ "status": status, "summary": doc.summary }),
    };
    (doc, completed)
}

/// The done document of a finished run.
pub fn done_document(run_id: &RunId, status: JobStatus, orders: &[OrderRecord]) -> DoneDoc {
    let mut summary = DoneSummary::default();
    for order in orders {
        match order.status {
            OrderStatus::Succeeded => summary.succeeded += 1,
            OrderStatus::Failed => summary.failed += 1,
            OrderStatus::TimedOut => summary.timed_out += 1,
            OrderStatus::Cancelled => summary.cancelled += 1,
            OrderStatus::Skipped => summary.skipped += 1,
            _ => {}
        }
    }
    DoneDoc {
        reason: None,
        status,
        run_id: run_id.to_string(),
        trace_id: orders
            .first()
            .map(|o| o.trace_id.to_string())
            .unwrap_or_default(),
        flow_id: orders
            .first()
            .map(|o| o.flow_id.clone())
            .unwrap_or_default(),
        summary,
        orders: orders.iter().map(done_order).collect(),
        cancelled_by: None,
        rerun_of: orders
            .first()
            .and_then(|o| o.rerun_of.as_ref())
            .map(RunId::to_string),
    }
}

/// An order's line in the done document.
fn done_order(o: &OrderRecord) -> DoneOrder {
    // Ended while waiting for a retry (the job's deadline, a stop): its last attempt, which
    // is recorded, has its log and result; the row names the next attempt's log.
    let ended_waiting = o.last_attempt_recorded();
    let log_key = match (ended_waiting, o.log_stored) {
        (Some(ended), _) => ended.log_key.clone(),
        // Reused: its log is the run's it ran in, when that run stored one.
        (None, stored) if o.reused_from.is_some() => {
            (stored == Some(true)).then(|| o.log_key.clone())
        }
        (None, Some(false)) => None,
        (None, _) => o.dispatched_at_ms.map(|_| o.log_key.clone()),
    };
    let result_key = o
        .result_key()
        .filter(|_| o.log_stored.is_some() || ended_waiting.is_some());
    // An order with a retry policy that ran: every attempt, the last (the row's own) after
    // those its retries followed, unless it is recorded already.
    let attempts = match &o.attempt {
        Some(attempt)
            if o.plan.retry.is_some() && ended_waiting.is_none() && o.reused_from.is_none() =>
        {
            let last = AttemptRecord {
                number: o.attempts.len() as u32 + 1,
                attempt: attempt.clone(),
                status: o.status,
                reason: o.reason.clone(),
                exit_code: o.exit_code,
                dispatched_at_ms: o.dispatched_at_ms,
                finished_at_ms: o.finished_at_ms,
                duration_ms: o.duration_ms,
                log_key: log_key.clone(),
            };
            o.attempts.iter().cloned().chain([last]).collect()
        }
        _ => o.attempts.clone(),
    };
    DoneOrder {
        order_num: o.plan.order_num,
        order_name: o.plan.order_name.clone(),
        status: o.status,
        reason: o.reason.clone(),
        duration_ms: o.duration_ms,
        exit_code: o.exit_code,
        result_key,
        log_key,
        outputs: BTreeMap::new(),
        withheld_outputs: Vec::new(),
        outputs_key: o.outputs_key.clone(),
        attempts,
        reused_from: o.reused_from.as_ref().map(RunId::to_string),
        sandbox: o.ran_sandboxed.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_contract::AttemptId;
    use sluice_ports::conformance::sample_order;

    #[test]
    fn the_done_document_counts_and_lists_every_order() {
        let run = RunId::generate();
        let mut orders: Vec<OrderRecord> = (0..4).map(|i| sample_order(&run, i)).collect();
        orders[0].status = OrderStatus::Succeeded;
        orders[0].dispatched_at_ms = Some(1);
        orders[0].duration_ms = Some(40);
        orders[1].status = OrderStatus::Failed;
        orders[1].reason = Some("dependency_failed".into());
        orders[2].status = OrderStatus::TimedOut;
        orders[2].dispatched_at_ms = Some(1);
        orders[3].status = OrderStatus::Succeeded;
        orders[3].dispatched_at_ms = Some(1);
        orders[3].attempt = AttemptId::parse("a1");
        orders[3].log_stored = Some(false);
        let doc = done_document(&run, JobStatus::TimedOut, &orders);
        assert_eq!(
            doc.summary,
            DoneSummary {
                succeeded: 2,
                failed: 1,
                timed_out: 1,
                cancelled: 0,
                skipped: 0
            }
        );
        assert_eq!(doc.orders.len(), 4);
        assert_eq!(doc.orders[0].duration_ms, Some(40));
        assert_eq!(doc.orders[1].reason.as_deref(), Some("dependency_failed"));
        assert_eq!(
            doc.orders[1].log_key, None,
            "an order that never ran has no log"
        );
        assert!(doc.orders[2].log_key.is_some());
        assert_eq!(
            (
                doc.orders[2].result_key.as_deref(),
                doc.orders[3].log_key.as_deref()
            ),
            (None, None),
            "no result ended the third; the fourth's log is in its result only"
        );
        let result = keys::result(
            &run,
            orders[3].plan.order_num,
            orders[3].attempt.as_ref().unwrap(),
        );
        assert_eq!(doc.orders[3].result_key, Some(result));
        assert_eq!(doc.trace_id, orders[0].trace_id.to_string());
    }
}
