//! watchdog_check: the run's watch, which times out workers that never report and kicks a
//! run that stalls.
//!
//! One watch per run (order `0000`, attempt [`AttemptId::run_watch`]), started by init_job
//! before the run's rows are written, called in a loop (a Step Functions Task → Choice →
//! Wait cycle on AWS, a timer locally) until it answers `done` once the run is finalized.
//! No failure can leave a run that nobody wakes: lost notifications, a pass that crashed or
//! gave up, a worker that died.
//!
//! Each check reads the run's rows and kicks the orchestrator when the run is stalled (see
//! [`Stall`]). It also does what a watch per attempt used to (one execution per order, for
//! its whole life): a worker must report by the time it claimed its attempt plus the
//! order's timeout plus the slack (kill grace period, log upload); an attempt nobody
//! claimed (the worker never started, or waits for a free slot) is bounded by the job's
//! deadline. A claim is read only once an attempt could be overdue (its dispatch plus
//! timeout plus slack), so a run whose orders report in time costs no reads per order.
//! Past its deadline the watch writes a `timed_out` result if none exists (a conditional
//! put, so a real result that lands at the same moment wins) and kicks the run.
//!
//! Otherwise it sleeps until the next moment something could need it (a deadline, a
//! dispatch lease, the start grace), and no longer than the run's age so far (at least
//! [`MIN_QUIET_SECONDS`], at most [`MAX_WAIT_SECONDS`]): a lost notification of a young run is
//! noticed within a minute, one of an old run within a tenth of an hour, and a ten-minute
//! run costs a handful of checks, not one a minute per order.
//!
//! An order waiting for a retry (`retry_at_ms`) is not a stall until its retry is due; the
//! watch then kicks the run. So that a retry need not wait for the watch's next check
//! (which may be minutes away), the pass that decides it also starts a **retry timer**: a
//! watch of one check at the retry's moment (`wake_at_ms`, attempt
//! [`AttemptId::retry_timer`]), which kicks the run if the order is still waiting for it.
//!
//! An execution of the retired watch per attempt (started by an older version) is told
//! `done` at once: the run's watch covers its attempt.

use serde::{Deserialize, Serialize};
use sluice_contract::dispatch::Claim;
use sluice_contract::result::{DoneDoc, INIT_FAILED, ResultDoc, WATCHDOG_LOG};
use sluice_contract::{AttemptId, JobStatus, OrderNum, OrderStatus, keys};

use crate::engine::to_json;
use crate::engine::{Engine, millis};
use crate::error::{EngineError, StoreError};
use crate::orchestrator::evaluate::{Node, evaluate};
use crate::ports::{OrderRecord, WatchdogInput};

/// Longest wait between two checks, seconds.
pub const MAX_WAIT_SECONDS: u64 = 600;
/// Longest wait between two checks of a run younger than this, seconds.
pub const MIN_QUIET_SECONDS: u64 = 60;
/// Wait after asking for a kick, seconds.
pub const KICK_WAIT_SECONDS: u64 = 5;

/// How long a run's watch waits before its first check, seconds: no sooner than a check
/// could find the run stalled (its start grace) nor later than a young run's quiet wait
/// ([`MIN_QUIET_SECONDS`]); at least 1.
pub fn first_wait_seconds(start_grace: std::time::Duration) -> u64 {
    start_grace.as_secs().clamp(1, MIN_QUIET_SECONDS)
}
/// Most bytes of a claim that are read (a worker writes it: a claim is a few dozen).
const MAX_CLAIM_BYTES: u64 = 4096;

/// Why a run needs a pass that nothing else will start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The job's deadline passed: finalize must time the rest out.
    PastDeadline,
    /// Every order ended, and the run is not finalized.
    Unfinalized,
    /// An order has been `dispatching` past the dispatch lease (its start was interrupted,
    /// or failed transiently).
    StartInterrupted,
    /// Orders are queued and none is in flight, so no result will wake the run.
    NothingInFlight,
    /// A result arrived for an order in flight and was not applied (its notification was
    /// lost, or the pass that took it failed).
    ResultWaiting,
    /// A worker did not report by its deadline; the watch wrote its `timed_out` result.
    WorkerOverdue,
    /// An order's retry is due and it was not dispatched (its timer did not kick the run,
    /// or the pass it kicked failed).
    RetryDue,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stall::PastDeadline => "the job's deadline has passed",
            Stall::Unfinalized => "every order has ended but the run is not finalized",
            Stall::StartInterrupted => "an order's start was interrupted",
            Stall::NothingInFlight => "orders are queued and none is in flight",
            Stall::ResultWaiting => "a result has not been applied",
            Stall::WorkerOverdue => "a worker did not report in time",
            Stall::RetryDue => "an order's retry is due",
        })
    }
}

/// What the watchdog loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogVerdict {
    /// Stop watching.
    pub done: bool,
    /// Otherwise, check again after this many seconds.
    pub wait_seconds: u64,
    /// Invoke the orchestrator for the run now.
    pub kick: bool,
}

impl WatchdogVerdict {
    const DONE: WatchdogVerdict = WatchdogVerdict {
        done: true,
        wait_seconds: 0,
        kick: false,
    };

    fn kick() -> Self {
        WatchdogVerdict {
            done: false,
            wait_seconds: KICK_WAIT_SECONDS,
            kick: true,
        }
    }

    /// Check again at `at_ms` (within 1 to [`MAX_WAIT_SECONDS`] seconds).
    fn wait_until(now_ms: u64, at_ms: u64) -> Self {
        WatchdogVerdict {
            done: false,
            wait_seconds: at_ms
                .saturating_sub(now_ms)
                .div_ceil(1000)
                .clamp(1, MAX_WAIT_SECONDS),
            kick: false,
        }
    }
}

impl Engine {
    /// One check of a run's watch (see the module docs).
    ///
    /// # Errors
    ///
    /// A backend failure; the loop retries at its next check.
    pub async fn watchdog_check(
        &self,
        input: &WatchdogInput,
    ) -> Result<WatchdogVerdict, EngineError> {
        if let Some(wake_at_ms) = input.wake_at_ms {
            return self.retry_timer_check(input, wake_at_ms).await;
        }
        if input.order_num != OrderNum::INIT {
            tracing::info!(run_id = %input.run_id, order_num = %input.order_num, "a retired watch per attempt ends; the run's watch covers it");
            return Ok(WatchdogVerdict::DONE);
        }
        let run_id = &input.run_id;
        let finalized = self
            .ports
            .orders
            .lock_state(run_id)
            .await?
            .is_some_and(|lock| lock.is_completed());
        if finalized {
            return Ok(WatchdogVerdict::DONE);
        }
        let orders = self.ports.orders.run_orders(run_id).await?;
        let now = self.now_ms();
        let started_ms = input.start_time * 1000;
        if orders.is_empty() {
            // init_job starts the watch before it stores keys and writes rows; when the rows
            // never come (init failed or died), the keys it may have stored go, and the run
            // (whose id a caller may hold) still ends with a done document.
            let init_over_ms = started_ms + millis(self.config.init_limit);
            if now < init_over_ms {
                return Ok(WatchdogVerdict::wait_until(now, init_over_ms));
            }
            self.ports.keys.delete_run_keys(run_id).await?;
            self.finish_unqueued(run_id).await?;
            return Ok(WatchdogVerdict::DONE);
        }
        // A cancel whose trigger's notification was lost is not: the run is cancelled here,
        // and the pass kicked finalizes it.
        // Best effort: a request that cannot be read must not keep the watch from the rest.
        let unfinished = orders.iter().any(|o| !o.status.is_terminal());
        if unfinished {
            match self.cancel_if_requested(run_id).await {
                Ok(Some(request)) => {
                    tracing::warn!(run_id = %run_id, by = %request.by, "the run was asked to be cancelled; cancelled it");
                    return Ok(WatchdogVerdict::kick());
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(run_id = %run_id, %error, "looking for the run's cancel request")
                }
            }
        }
        let grace_ends_ms = started_ms + millis(self.config.start_grace);
        let (stall, next_check_ms) = self.stall(&orders, now, grace_ends_ms).await?;
        if let Some(stall) = stall {
            tracing::warn!(run_id = %run_id, %stall, "the run is stalled; running a pass");
            return Ok(WatchdogVerdict::kick());
        }
        let quiet_ms = now
            .saturating_sub(started_ms)
            .clamp(MIN_QUIET_SECONDS * 1000, MAX_WAIT_SECONDS * 1000);
        Ok(WatchdogVerdict::wait_until(
            now,
            next_check_ms.min(now + quiet_ms),
        ))
    }
    /// A retry timer's check: kick the run if the order waits for a retry that is due (and
    /// end); check again at the retry's moment if it came early; else end (the order was
    /// dispatched already, or ended, or the run was finalized).
    async fn retry_timer_check(
        &self,
        input: &WatchdogInput,
        wake_at_ms: u64,
    ) -> Result<WatchdogVerdict, EngineError> {
        let orders = self.ports.orders.run_orders(&input.run_id).await?;
        let now = self.now_ms();
        let retry_at = orders
            .iter()
            .find(|o| o.plan.order_num == input.order_num)
            .and_then(|o| o.awaiting_retry())
            .map(|(_, at)| at);
        Ok(match retry_at {
            Some(at) if at <= now => WatchdogVerdict {
                done: true,
                wait_seconds: 0,
                kick: true,
            },
            Some(at) => WatchdogVerdict::wait_until(now, at.max(wake_at_ms)),
            None => WatchdogVerdict::DONE,
        })
    }

    /// Writes the done document of a run that was accepted but never queued (once).
    async fn finish_unqueued(&self, run_id: &sluice_contract::RunId) -> Result<(), EngineError> {
        let doc = DoneDoc {
            status: JobStatus::Failed,
            run_id: run_id.to_string(),
            trace_id: String::new(),
            flow_id: String::new(),
            summary: Default::default(),
            orders: Vec::new(),
            cancelled_by: None,
            rerun_of: None,
            reason: Some(INIT_FAILED.to_owned()),
        };
        match self
            .ports
            .done
            .put_if_absent(&keys::done(run_id), to_json(&doc))
            .await
        {
            Ok(()) => {
                tracing::warn!(run_id = %run_id, "a run accepted but never queued ends as init_failed");
                Ok(())
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// Whether the run is stalled, and otherwise when it could next be.
    async fn stall(
        &self,
        orders: &[OrderRecord],
        now: u64,
        grace_ends_ms: u64,
    ) -> Result<(Option<Stall>, u64), EngineError> {
        let deadline_ms = orders.iter().map(|o| o.job_deadline_ms).min().unwrap_or(0);
        if now >= deadline_ms {
            return Ok((Some(Stall::PastDeadline), now));
        }
        if orders.iter().all(|o| o.status.is_terminal()) {
            return Ok((Some(Stall::Unfinalized), now));
        }
        let mut next_ms = deadline_ms;
        // Workers past their deadline first, whatever else stalls the run: a start that
        // keeps failing must not keep a dead worker's order from timing out.
        let mut stall = None;
        for order in orders.iter().filter(|o| o.status == OrderStatus::Running) {
            let Some(attempt) = &order.attempt else {
                continue;
            };
            // A read or write that fails here is tried at the next check; it must not keep
            // this one from kicking the run for anything else.
            let deadline_ms = match self.attempt_deadline(order, attempt, now).await {
                Ok(deadline_ms) => deadline_ms,
                Err(error) => {
                    tracing::warn!(order_num = %order.plan.order_num, %error, "could not read a claim; checking again soon");
                    next_ms = next_ms.min(now + KICK_WAIT_SECONDS * 1000);
                    continue;
                }
            };
            if now < deadline_ms {
                next_ms = next_ms.min(deadline_ms);
                continue;
            }
            match self.time_out(order, attempt).await {
                Ok(()) => stall = Some(Stall::WorkerOverdue),
                Err(error) => {
                    tracing::warn!(order_num = %order.plan.order_num, %error, "could not time a worker out; checking again soon");
                    next_ms = next_ms.min(now + KICK_WAIT_SECONDS * 1000);
                }
            }
        }
        let lease = millis(self.config.dispatch_lease);
        for order in orders
            .iter()
            .filter(|o| o.status == OrderStatus::Dispatching)
        {
            let retry_at = order.dispatched_at_ms.unwrap_or(0).saturating_add(lease);
            if now >= retry_at {
                stall = stall.or(Some(Stall::StartInterrupted));
            }
            next_ms = next_ms.min(retry_at);
        }
        // Orders waiting for a retry: a stall once it is due (nobody dispatched it), else
        // a moment to check at.
        for (_, retry_at) in orders.iter().filter_map(OrderRecord::awaiting_retry) {
            if now >= retry_at {
                stall = stall.or(Some(Stall::RetryDue));
            } else {
                next_ms = next_ms.min(retry_at);
            }
        }
        if stall.is_some() {
            return Ok((stall, now));
        }
        // In-flight attempts: a result of an earlier attempt is not waiting for anything.
        let in_flight: Vec<(OrderNum, Option<&AttemptId>)> = orders
            .iter()
            .filter(|o| matches!(o.status, OrderStatus::Dispatching | OrderStatus::Running))
            .map(|o| (o.plan.order_num, o.attempt.as_ref()))
            .collect();
        if in_flight.is_empty() && startable(orders, now) {
            // Only queued and ended orders: the pass that ended the last one should have
            // started or ended the rest. Right after init the trigger's pass may still come.
            if now >= grace_ends_ms {
                return Ok((Some(Stall::NothingInFlight), now));
            }
            return Ok((None, next_ms.min(grace_ends_ms)));
        }
        if in_flight.is_empty() {
            // Every queued order waits for a retry, or for an order that does.
            return Ok((None, next_ms));
        }
        if self.result_waiting(orders, &in_flight).await? {
            return Ok((Some(Stall::ResultWaiting), now));
        }
        Ok((None, next_ms))
    }

    /// Whether a result of an attempt `in_flight` has arrived: each looked for (a HEAD)
    /// when that costs no more requests than listing the run's results would.
    async fn result_waiting(
        &self,
        orders: &[OrderRecord],
        in_flight: &[(OrderNum, Option<&AttemptId>)],
    ) -> Result<bool, EngineError> {
        let mut attempts = in_flight
            .iter()
            .filter_map(|(order_num, attempt)| Some((*order_num, (*attempt)?)));
        let Some(arrived) = self.listed_results(orders, in_flight.len()).await? else {
            let run_id = &orders[0].run_id;
            for (order_num, attempt) in attempts {
                let key = keys::result(run_id, order_num, attempt);
                if self.ports.internal.head(&key).await?.is_some() {
                    return Ok(true);
                }
            }
            return Ok(false);
        };
        Ok(attempts.any(|(order_num, attempt)| arrived.contains(&(order_num, attempt.clone()))))
    }

    /// When `attempt` of `order` must have reported: its claim plus the order's timeout
    /// plus the slack, within the job's deadline; the job's deadline while it is not
    /// claimed. The claim is read only once the attempt could be overdue (it cannot have
    /// been claimed before it was dispatched).
    async fn attempt_deadline(
        &self,
        order: &OrderRecord,
        attempt: &AttemptId,
        now: u64,
    ) -> Result<u64, EngineError> {
        let allowance = order.plan.timeout * 1000 + millis(self.config.watchdog_slack);
        let dispatched_at = order.dispatched_at_ms.unwrap_or(order.created_at_ms);
        let earliest = (dispatched_at + allowance).min(order.job_deadline_ms);
        if now < earliest {
            return Ok(earliest);
        }
        let claim_key = keys::claim(&order.run_id, order.plan.order_num, attempt);
        let claimed_at = match self
            .ports
            .internal
            .get_prefix(&claim_key, MAX_CLAIM_BYTES)
            .await
        {
            Ok(bytes) => serde_json::from_slice::<Claim>(&bytes)
                .ok()
                .map(|c| c.claimed_at_ms),
            Err(StoreError::NotFound { .. }) => None,
            Err(other) => return Err(other.into()),
        };
        Ok(match claimed_at {
            Some(at) => (at + allowance).min(order.job_deadline_ms),
            None => order.job_deadline_ms,
        })
    }

    /// Writes `attempt`'s `timed_out` result unless a result is there already (a real one
    /// that landed meanwhile wins); either way a pass must apply it.
    async fn time_out(&self, order: &OrderRecord, attempt: &AttemptId) -> Result<(), EngineError> {
        let mut doc = ResultDoc::new(OrderStatus::TimedOut, WATCHDOG_LOG);
        doc.attempt = Some(attempt.clone());
        doc.reason = Some("watchdog".to_owned());
        let key = keys::result(&order.run_id, order.plan.order_num, attempt);
        match self.ports.internal.put_if_absent(&key, to_json(&doc)).await {
            Ok(()) => {
                tracing::warn!(run_id = %order.run_id, order_num = %order.plan.order_num, %attempt, "worker unresponsive, timed out by the watch");
                Ok(())
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

/// Whether a pass would start or end a queued order of `orders` now: one is ready (and
/// not waiting for its retry), or ends because of what its dependencies did. Orders that
/// wait for a retry, or for an order that does, are not.
fn startable(orders: &[OrderRecord], now: u64) -> bool {
    let nodes: Vec<Node> = orders.iter().map(Node::from).collect();
    let plan = evaluate(&nodes);
    let retry_waits = |num: &OrderNum| orders[num.index().expect("real order")].retry_waits(now);
    !plan.ended.is_empty() || plan.ready.iter().any(|num| !retry_waits(num))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_first_check_waits_the_start_grace_within_a_young_runs_quiet() {
        assert_eq!(first_wait_seconds(Duration::from_secs(60)), 60);
        assert_eq!(first_wait_seconds(Duration::from_secs(5)), 5);
        assert_eq!(first_wait_seconds(Duration::ZERO), 1, "never at once");
        assert_eq!(
            first_wait_seconds(Duration::from_secs(3600)),
            MIN_QUIET_SECONDS
        );
    }
}
