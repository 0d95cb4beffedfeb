//! The engine: the ports it runs on and the settings it runs with.
//!
//! [`Engine`] is cheap to share (`Arc`) and holds no per-run state: every invocation
//! (init_job, orchestrate, watchdog_check) reads what it needs from the stores, as a Lambda
//! invocation would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_contract::AttemptId;
use sluice_contract::validate::Platform;

use crate::git::GitPolicy;
use crate::grants::CredentialGrants;
use crate::orchestrator::taking::LastReleases;
use crate::retry::{Backoff, while_transient};
use crate::run_key::RunKeyCache;

use crate::ports::{
    Clock, CodeArchives, Dispatcher, KeyStore, ObjectStore, OrderEvent, OrderRecord, OrderStore,
    SecretSource, Vcs, WatchdogInput, WatchdogStarter,
};

/// How often a retry's timer is tried again after a transient failure (throttling, when
/// many orders fail together), and the first wait: about 0.2 + 0.4 + 0.8 s at most.
const TIMER_RETRIES: u32 = 3;
const TIMER_RETRY_FIRST: Duration = Duration::from_millis(200);

/// Settings of the control plane. Defaults (see [`EngineConfig::default`]):
/// lock lease 60 s, dispatch lease 120 s, 16 dispatches in parallel, watchdog slack 40 s,
/// start grace 60 s, init limit 15 min, event TTL 90 days, order TTL 1 day, platform local,
/// the first step taken by init.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where jobs run (decides which fields validation accepts).
    pub platform: Platform,
    /// How long an orchestrator holds a run's lock without renewing it before another may
    /// take over (crash recovery).
    pub lock_lease: Duration,
    /// How long an order may stay `dispatching` before its start is retried.
    pub dispatch_lease: Duration,
    /// How many orders one orchestrator pass starts at the same time.
    pub dispatch_parallelism: usize,
    /// How long past an order's timeout the watchdog waits for the worker's own report
    /// (covers the kill grace period and the log upload).
    pub watchdog_slack: Duration,
    /// How long after init the run's first orchestrator pass may take before the start
    /// watch runs it (its notification was lost).
    pub start_grace: Duration,
    /// The longest init_job can take (a Lambda's 15 minutes): a run's watch that finds no
    /// rows this long after init started knows init failed, and deletes the run's keys.
    pub init_limit: Duration,
    /// How long order_events rows are kept.
    pub event_ttl: Duration,
    /// How long orders rows are kept.
    pub order_ttl: Duration,
    /// Where git credentials may go and which SSH servers are trusted.
    pub git: GitPolicy,
    /// Which credentials a known caller may name.
    pub credential_grants: CredentialGrants,
    /// Whether init_job takes the run's first step itself, from the rows it has just
    /// written, when that step fits one write (else its init trigger wakes the
    /// orchestrator for it). Off, the trigger always does.
    pub first_step_at_init: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            platform: Platform::Local,
            lock_lease: Duration::from_secs(60),
            dispatch_lease: Duration::from_secs(120),
            dispatch_parallelism: 16,
            watchdog_slack: Duration::from_secs(40),
            start_grace: Duration::from_secs(60),
            init_limit: Duration::from_secs(15 * 60),
            event_ttl: Duration::from_secs(90 * 24 * 3600),
            order_ttl: Duration::from_secs(24 * 3600),
            git: GitPolicy::default(),
            credential_grants: CredentialGrants::default(),
            first_step_at_init: true,
        }
    }
}

/// The backends the engine runs on.
#[derive(Debug, Clone)]
pub struct Ports {
    /// The internal bucket: bundles, callbacks, logs, claims.
    pub internal: Arc<dyn ObjectStore>,
    /// The done bucket: done documents.
    pub done: Arc<dyn ObjectStore>,
    /// The tables.
    pub orders: Arc<dyn OrderStore>,
    /// Starts workers.
    pub dispatcher: Arc<dyn Dispatcher>,
    /// Starts watchdogs.
    pub watchdog: Arc<dyn WatchdogStarter>,
    /// Keeps per-order private keys.
    pub keys: Arc<dyn KeyStore>,
    /// Holds the credentials orders list.
    pub secrets: Arc<dyn SecretSource>,
    /// Serves code zips named by URL (`s3://`); `None` for an engine that reads zips from
    /// paths only (the local one).
    pub archives: Option<Arc<dyn CodeArchives>>,
    /// Keeps the PR comments of runs with `pr_number`; `None` turns them off.
    pub vcs: Option<Arc<dyn Vcs>>,
    /// Tells the time.
    pub clock: Arc<dyn Clock>,
}

/// The control plane over its ports.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The backends.
    pub ports: Ports,
    /// The settings.
    pub config: EngineConfig,
    /// Order events recorded and not yet written: a pass writes its events together at the
    /// end of each step (one call per 25 on DynamoDB) rather than one call each. Shared by
    /// clones; whichever step ends first writes them all.
    pending_events: Arc<Mutex<Vec<OrderEvent>>>,
    /// Retry timers of orders a step queued for a retry, started once its writes are made
    /// (see [`crate::watchdog`]). Shared by clones.
    pending_timers: Arc<Mutex<Vec<WatchdogInput>>>,
    /// Run keys read lately (see [`RunKeyCache`]). Shared by clones.
    pub(crate) run_keys: Arc<RunKeyCache>,
    /// The runs this process last released with one order in flight (see
    /// [`crate::orchestrator::taking`]). Shared by clones.
    pub(crate) last_releases: Arc<LastReleases>,
}

impl Engine {
    /// An engine over `ports` with `config`.
    pub fn new(ports: Ports, config: EngineConfig) -> Self {
        Engine {
            ports,
            config,
            pending_events: Arc::default(),
            pending_timers: Arc::default(),
            run_keys: Arc::default(),
            last_releases: Arc::default(),
        }
    }

    /// Records an order event, to be written by the next [`Engine::write_events`].
    pub(crate) fn record(&self, event: OrderEvent) {
        self.pending_events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(event);
    }

    /// Records the retry timer of `order`, if it waits for a retry, to be started by the
    /// next [`Engine::start_retry_timers`].
    pub(crate) fn schedule_retry_timer(&self, order: &OrderRecord) {
        let Some((_, retry_at_ms)) = order.awaiting_retry() else {
            return;
        };
        let now = self.now_ms();
        let timer = WatchdogInput {
            run_id: order.run_id.clone(),
            order_num: order.plan.order_num,
            attempt: AttemptId::retry_timer(order.attempts.len() as u32 + 1),
            timeout: 0,
            start_time: now / 1000,
            job_deadline: order.job_deadline_ms.div_ceil(1000),
            internal_bucket: self.ports.internal.bucket().to_owned(),
            generation: 0,
            wait_seconds: Some(retry_at_ms.saturating_sub(now).div_ceil(1000).max(1)),
            wake_at_ms: Some(retry_at_ms),
        };
        (self.pending_timers.lock())
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(timer);
    }

    /// Starts the retry timers recorded so far. A timer that does not start is logged: the
    /// run's watch dispatches a retry that is due all the same, later.
    pub(crate) async fn start_retry_timers(&self) {
        let timers = std::mem::take(
            &mut *(self.pending_timers.lock()).unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for timer in timers {
            let backoff = Backoff::new(TIMER_RETRY_FIRST, TIMER_RETRIES);
            let what = "starting a retry's timer";
            let start = || self.ports.watchdog.start(&timer);
            let kind = |e: &crate::ports::DispatchError| e.kind;
            let started = while_transient(self.ports.clock.as_ref(), backoff, what, kind, start);
            if let Err(error) = started.await {
                tracing::warn!(run_id = %timer.run_id, order_num = %timer.order_num, %error, "could not start a retry's timer; the run's watch will dispatch it");
            }
        }
    }

    /// Writes the events recorded so far. A failure is logged, never fatal: events are for
    /// humans, and the run's state is in its rows.
    pub(crate) async fn write_events(&self) {
        let events = self.take_events();
        self.put_events(&events).await;
    }

    /// The events recorded so far, to be written by the caller (with a step's release).
    pub(crate) fn take_events(&self) -> Vec<OrderEvent> {
        std::mem::take(
            &mut *self
                .pending_events
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Writes `events` now; a failure is logged, as in [`Engine::write_events`].
    pub(crate) async fn put_events(&self, events: &[OrderEvent]) {
        if events.is_empty() {
            return;
        }
        if let Err(error) = self.ports.orders.put_events(events).await {
            tracing::warn!(%error, count = events.len(), "could not record order events");
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.ports.clock.now_ms()
    }
}

/// Milliseconds in a duration, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A document of the contract (a result, a done document, a trigger) as stored JSON.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("contract types serialize")
}
