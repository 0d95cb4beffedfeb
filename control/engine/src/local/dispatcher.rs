//! [`LocalDispatcher`]: workers as tasks of this process, at most N at a time.
//!
//! The engine does not know the worker host (the dependency points the other way), so the
//! dispatcher is given a [`Launcher`]: the function that runs one dispatch payload to its end.
//! The CLI passes one that runs `sluice-worker`; tests pass their own. Starts beyond the
//! concurrency limit wait for a slot; the worker claims its attempt only once it runs, which
//! is what the watchdog measures from.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sluice_contract::ExecutionTarget;
use sluice_contract::dispatch::DispatchPayload;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::ports::{DispatchError, Dispatcher};

/// Runs one dispatch payload to its end (fetch, run, call back).
pub type Launcher = Arc<dyn Fn(DispatchPayload) -> BoxFuture<'static, ()> + Send + Sync>;

/// An in-process dispatcher with bounded concurrency.
pub struct LocalDispatcher {
    slots: Arc<Semaphore>,
    tasks: Mutex<JoinSet<()>>,
    launcher: Launcher,
    /// Set when the run is being stopped: workers still waiting for a slot never start.
    stopping: Arc<AtomicBool>,
}

impl fmt::Debug for LocalDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalDispatcher")
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl LocalDispatcher {
    /// A dispatcher running at most `concurrency` workers at once (at least one).
    pub fn new(concurrency: usize, launcher: Launcher) -> Self {
        LocalDispatcher {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            tasks: Mutex::new(JoinSet::new()),
            launcher,
            stopping: Arc::default(),
        }
    }

    /// Starts no more workers: those waiting for a slot, and any started from now on,
    /// end without running anything.
    pub fn stop_launching(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits until every worker task has ended, or `limit` has passed; says whether they
    /// all ended.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let mut tasks = std::mem::take(&mut *self.lock_tasks());
        let ended =
            tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_ok();
        // Those still running go back, for `shutdown` to abort. Tasks started meanwhile
        // launch nothing (`stop_launching`): dropping their set aborts them.
        *self.lock_tasks() = tasks;
        ended
    }

    /// Stops every worker task; dropping a worker kills its processes.
    pub fn shutdown(&self) {
        self.lock_tasks().abort_all();
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Dispatcher for LocalDispatcher {
    /// Local orders run the same whatever their `execution_target`.
    async fn start(
        &self,
        _target: ExecutionTarget,
        _timeout: Duration,
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError> {
        let slots = Arc::clone(&self.slots);
        let stopping = Arc::clone(&self.stopping);
        let launcher = Arc::clone(&self.launcher);
        let payload = payload.clone();
        let mut tasks = self.lock_tasks();
        while tasks.try_join_next().is_some() {}
        // The worker's future (kilobytes) is made once a slot is free: a start waiting for
        // one holds only its payload, so 10 000 queued orders do not hold 10 000 workers.
        tasks.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            if !stopping.load(Ordering::SeqCst) {
                launcher(payload).await;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures::FutureExt;
    use sluice_contract::dispatch::{Capability, OrderIdentity};
    use sluice_contract::{AttemptId, OrderNum, RunId};

    #[tokio::test]
    async fn never_runs_or_makes_more_workers_than_its_concurrency() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let made = Arc::new(AtomicUsize::new(0));
        let (r, p, f, m) = (
            running.clone(),
            peak.clone(),
            finished.clone(),
            made.clone(),
        );
        let launcher: Launcher = Arc::new(move |_| {
            m.fetch_add(1, Ordering::SeqCst);
            let (r, p, f) = (r.clone(), p.clone(), f.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                f.fetch_add(1, Ordering::SeqCst);
            }
            .boxed()
        });
        let dispatcher = LocalDispatcher::new(3, launcher);
        let run = RunId::generate();
        for i in 0..12 {
            let nowhere = Capability::new("");
            let payload = DispatchPayload {
                run_id: run.clone(),
                order_num: OrderNum::from_index(i),
                attempt: AttemptId::parse(&format!("a{i}")).unwrap(),
                attempt_number: 1,
                bundle_url: nowhere.clone(),
                bundle_range: None,
                claim_url: nowhere.clone(),
                claim_check_url: nowhere.clone(),
                log_url: nowhere.clone(),
                log_key: None,
                log_in_result: false,
                callback_url: nowhere,
                outputs_url: None,
                cancel_url: None,
                inputs: Vec::new(),
                identity: OrderIdentity::new(""),
                compiled: None,
            };
            dispatcher
                .start(ExecutionTarget::Lambda, Duration::from_secs(5), &payload)
                .await
                .unwrap();
        }
        // Workers waiting for a slot are not made yet (they were, all 12, when started).
        assert!(made.load(Ordering::SeqCst) <= 3, "{made:?} workers made");
        while finished.load(Ordering::SeqCst) < 12 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
