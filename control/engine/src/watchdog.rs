//! watchdog_check: times out a worker that never reports, and kicks a run that stalls.
//!
//! Called in a loop (a Step Functions Task → Choice → Wait cycle on AWS, a timer locally)
//! until it answers `done`. A worker must report by the time it claimed its attempt plus the
//! order's timeout plus the slack (kill grace period, log upload); an attempt nobody claimed
//! (the worker never started, or waits for a free slot) is bounded by the job's deadline.
//! Past its deadline the watchdog writes a `timed_out` result if none exists (a conditional
//! put, so a real result that lands at the same moment wins) and that result wakes the
//! orchestrator like any other. A result that exists while the order still runs, or a job
//! past its deadline, asks the caller to kick the orchestrator.
//!
//! The run's start watch (order `0000`, attempt [`START_WATCH`], started by init_job) covers
//! the time before any order has a watchdog: once the start grace has passed with every
//! order still queued (no pass has run: the init trigger's notification was lost, or every
//! pass failed), it kicks the orchestrator, and again every [`START_RETRY_SECONDS`] until
//! one has.

use serde::{Deserialize, Serialize};
use sluice_contract::dispatch::Claim;
use sluice_contract::result::{ResultDoc, WATCHDOG_LOG};
use sluice_contract::{OrderNum, OrderStatus, keys};

use crate::engine::{Engine, millis};
use crate::error::{EngineError, StoreError};
use crate::init_job::to_json;
use crate::ports::WatchdogInput;

/// Longest wait between two checks, seconds.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Wait after asking for a kick, seconds.
pub const KICK_WAIT_SECONDS: u64 = 5;
/// The attempt id of a run's start watch.
pub const START_WATCH: &str = "start";
/// Wait between the start watch's kicks, seconds.
pub const START_RETRY_SECONDS: u64 = 60;

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
}

impl Engine {
    /// One watchdog check (see the module docs).
    ///
    /// # Errors
    ///
    /// A backend failure; the loop retries at its next check.
    pub async fn watchdog_check(
        &self,
        input: &WatchdogInput,
    ) -> Result<WatchdogVerdict, EngineError> {
        if input.order_num == OrderNum::INIT {
            return self.start_watch_check(input).await;
        }
        let store = &self.ports.internal;
        let order = self
            .ports
            .orders
            .get_order(&input.run_id, input.order_num)
            .await?;
        if order.status.is_terminal() || order.attempt.as_deref() != Some(input.attempt.as_str()) {
            return Ok(WatchdogVerdict::DONE);
        }
        let result_key = keys::result(&input.run_id, input.order_num);
        if store.head(&result_key).await?.is_some() {
            return Ok(WatchdogVerdict::kick());
        }
        let now = self.now_ms();
        let job_deadline_ms = input.job_deadline * 1000;
        if now >= job_deadline_ms {
            return Ok(WatchdogVerdict::kick());
        }
        let claimed_at = match store
            .get(&keys::claim(&input.run_id, input.order_num, &input.attempt))
            .await
        {
            Ok(bytes) => serde_json::from_slice::<Claim>(&bytes)
                .ok()
                .map(|c| c.claimed_at_ms),
            Err(StoreError::NotFound { .. }) => None,
            Err(other) => return Err(other.into()),
        };
        let deadline_ms = match claimed_at {
            Some(at) => (at + input.timeout * 1000 + millis(self.config.watchdog_slack))
                .min(job_deadline_ms),
            None => job_deadline_ms,
        };
        if now >= deadline_ms {
            let mut doc = ResultDoc::new(OrderStatus::TimedOut, WATCHDOG_LOG);
            doc.attempt = Some(input.attempt.clone());
            doc.reason = Some("watchdog".to_owned());
            return match store.put_if_absent(&result_key, to_json(&doc)).await {
                Ok(()) => {
                    tracing::warn!(run_id = %input.run_id, order_num = %input.order_num, "worker unresponsive, timed out by watchdog");
                    Ok(WatchdogVerdict::DONE)
                }
                Err(StoreError::ConditionFailed { .. }) => Ok(WatchdogVerdict::kick()),
                Err(other) => Err(other.into()),
            };
        }
        let wait = (deadline_ms - now)
            .div_ceil(1000)
            .clamp(1, MAX_WAIT_SECONDS);
        Ok(WatchdogVerdict {
            done: false,
            wait_seconds: wait,
            kick: false,
        })
    }

    /// One check of a run's start watch (see the module docs).
    async fn start_watch_check(
        &self,
        input: &WatchdogInput,
    ) -> Result<WatchdogVerdict, EngineError> {
        let orders = self.ports.orders.run_orders(&input.run_id).await?;
        if orders.iter().any(|o| o.status != OrderStatus::Queued) || orders.is_empty() {
            return Ok(WatchdogVerdict::DONE);
        }
        let now = self.now_ms();
        let due_ms = input.start_time * 1000 + millis(self.config.start_grace);
        if now < due_ms {
            return Ok(WatchdogVerdict {
                done: false,
                wait_seconds: (due_ms - now).div_ceil(1000).clamp(1, MAX_WAIT_SECONDS),
                kick: false,
            });
        }
        tracing::warn!(run_id = %input.run_id, "no orchestrator pass has run since init; running one");
        Ok(WatchdogVerdict {
            done: false,
            wait_seconds: START_RETRY_SECONDS,
            kick: true,
        })
    }
}
