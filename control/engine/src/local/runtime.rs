//! [`LocalRuntime`]: the local backends wired into a running engine.
//!
//! The state folder holds `internal/` and `done/` (the two buckets), `sluice.db` (the
//! tables) and `keys/` (per-order private keys). Three loops run beside the engine:
//! - the **event bus** receives every key written to the internal store and, for each
//!   `result.json` under the callback prefix, starts an orchestrator invocation for its run,
//!   concurrently with any other, as S3 notifications start Lambdas; a failed invocation is
//!   retried with backoff, as Lambda retries failed async invocations;
//! - the **watches**: one timer loop per run (until the run is finalized), calling
//!   [`Engine::watchdog_check`] and kicking the orchestrator when asked;
//! - **done notifications**: writers of done documents wake [`LocalRuntime::wait_done`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_contract::result::{DoneDoc, parse_done};
use sluice_contract::{RunId, keys};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use super::{DirStore, FileKeyStore, Launcher, LocalDispatcher, SecretsFile, SqliteStore};
use crate::engine::{Engine, EngineConfig, Ports};
use crate::error::StoreError;
use crate::orchestrator::Arrivals;
use crate::ports::{DispatchError, ObjectStore, SystemClock, WatchdogInput, WatchdogStarter};
use crate::runs::RunStores;

/// Name of the local internal bucket.
pub const INTERNAL_BUCKET: &str = "internal";
/// Name of the local done bucket.
pub const DONE_BUCKET: &str = "done";
/// How long [`LocalRuntime::wait_done`] waits for finalize to complete after the document.
const FINALIZE_WAIT: Duration = Duration::from_secs(30);
/// How long [`LocalRuntime::wait_done`] waits after a transient failure to read.
const TRANSIENT_READ_WAIT: Duration = Duration::from_secs(1);
/// How often [`LocalRuntime::wait_done`] looks for the document without being told.
const DONE_POLL: Duration = Duration::from_secs(5);
/// Delays before retrying a failed orchestrator invocation (each invocation also retries
/// transient failures itself; past these, the run's watch starts the next pass).
const ORCHESTRATE_RETRIES: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The state folder.
    pub state_dir: PathBuf,
    /// How many workers run at once.
    pub concurrency: usize,
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Where credentials orders list come from.
    pub secrets: SecretsFile,
    /// Where PR comments go (`None`: nowhere).
    pub vcs: Option<Arc<dyn crate::ports::Vcs>>,
}

/// The local runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("state folder {path}: {cause}")]
pub struct RuntimeError {
    /// The state folder.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub cause: StoreError,
}

/// [`WatchdogStarter`] that hands each watch to the runtime's timer loops.
#[derive(Debug, Clone)]
pub struct LocalWatchdog {
    sender: mpsc::UnboundedSender<WatchdogInput>,
}

#[async_trait]
impl WatchdogStarter for LocalWatchdog {
    async fn start(&self, input: &WatchdogInput) -> Result<(), DispatchError> {
        self.sender.send(input.clone()).map_err(|_| DispatchError {
            kind: crate::ErrorKind::Permanent,
            what: "watchdog".to_owned(),
            run_id: input.run_id.clone(),
            order_num: input.order_num,
            message: "the local runtime is shutting down".to_owned(),
        })
    }
}

/// The stores of the runs in the state folder `dir`, opened to read them (`sluice report`):
/// nothing runs, though the stores make their folders and tables when missing.
///
/// # Errors
///
/// [`RuntimeError`] when a store cannot be opened.
pub fn open_run_stores(dir: &Path) -> Result<RunStores, RuntimeError> {
    let fail = |cause| RuntimeError {
        path: dir.to_owned(),
        cause,
    };
    let config = EngineConfig::default();
    let store = |bucket: &str| DirStore::open(&dir.join(bucket), bucket).map_err(fail);
    Ok(RunStores {
        internal: Arc::new(store(INTERNAL_BUCKET)?),
        done: Arc::new(store(DONE_BUCKET)?),
        orders: Arc::new(
            SqliteStore::open(&dir.join("sluice.db"), config.order_ttl, config.event_ttl)
                .map_err(fail)?,
        ),
    })
}

/// The engine on local backends, with its event bus and watchdogs running.
#[derive(Debug)]
pub struct LocalRuntime {
    pub(super) engine: Arc<Engine>,
    pub(super) tables: Arc<SqliteStore>,
    pub(super) state_dir: PathBuf,
    internal: Arc<DirStore>,
    dispatcher: Arc<LocalDispatcher>,
    done_events: broadcast::Sender<String>,
    loops: JoinSet<()>,
}

impl LocalRuntime {
    /// Opens the state folder and starts the loops. Must be called inside a tokio runtime.
    ///
    /// `make_launcher` gets the internal store (which the `file://` URLs of a local
    /// dispatch name; a worker's writes through it fire the event bus) and returns the
    /// worker launcher.
    ///
    /// # Errors
    ///
    /// [`RuntimeError`] when the state folder cannot be created or opened.
    pub fn start(
        options: LocalOptions,
        make_launcher: impl FnOnce(&Arc<DirStore>) -> Launcher,
    ) -> Result<Self, RuntimeError> {
        let dir = &options.state_dir;
        let fail = |cause| RuntimeError {
            path: dir.clone(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(StoreError::io("creating the folder", e)))?;
        let (bus_tx, bus_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (watch_tx, watch_rx) = mpsc::unbounded_channel();
        let internal = Arc::new(
            DirStore::open(&dir.join(INTERNAL_BUCKET), INTERNAL_BUCKET)
                .map_err(fail)?
                .with_listener(bus_tx),
        );
        let done = Arc::new(
            DirStore::open(&dir.join(DONE_BUCKET), DONE_BUCKET)
                .map_err(fail)?
                .with_listener(done_tx),
        );
        let config = options.engine.clone();
        let orders = Arc::new(
            SqliteStore::open(&dir.join("sluice.db"), config.order_ttl, config.event_ttl)
                .map_err(fail)?,
        );
        let keys = Arc::new(FileKeyStore::open(&dir.join("keys")).map_err(fail)?);
        let launcher = make_launcher(&internal);
        let dispatcher = Arc::new(LocalDispatcher::new(options.concurrency, launcher));
        let ports = Ports {
            internal: Arc::clone(&internal) as Arc<dyn ObjectStore>,
            done,
            orders: Arc::clone(&orders) as _,
            dispatcher: Arc::clone(&dispatcher) as _,
            watchdog: Arc::new(LocalWatchdog { sender: watch_tx }),
            keys,
            secrets: Arc::new(options.secrets),
            archives: None,
            vcs: options.vcs,
            clock: Arc::new(SystemClock),
        };
        let engine = Arc::new(Engine::new(ports, config));
        let (done_events, _) = broadcast::channel(1024);
        let mut loops = JoinSet::new();
        loops.spawn(event_bus(Arc::clone(&engine), bus_rx));
        loops.spawn(watchdogs(Arc::clone(&engine), watch_rx));
        loops.spawn(forward_done(done_rx, done_events.clone()));
        Ok(LocalRuntime {
            engine,
            tables: orders,
            state_dir: dir.clone(),
            internal,
            dispatcher,
            done_events,
            loops,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The internal bucket (the local callback writes through it).
    pub fn internal_store(&self) -> &Arc<DirStore> {
        &self.internal
    }

    /// Waits until the run is finalized — its done document written and the rest of finalize
    /// (completed event, keys deleted, lock completed) done — and returns the document.
    ///
    /// # Errors
    ///
    /// A storage error, or a done document that does not parse.
    pub async fn wait_done(&self, run_id: &RunId) -> Result<DoneDoc, StoreError> {
        let key = keys::done(run_id);
        let mut written = self.done_events.subscribe();
        loop {
            match self.engine.ports.done.get(&key).await {
                Ok(bytes) => {
                    let doc = parse_done(&bytes).map_err(|e| StoreError::Backend {
                        what: format!("done document {key}"),
                        message: e.to_string(),
                    })?;
                    self.wait_lock_completed(run_id).await?;
                    return Ok(doc);
                }
                Err(StoreError::NotFound { .. }) => {}
                Err(error) if error.is_transient() => {
                    // Storage is failing for now; the run's watch finishes the run once it
                    // heals, and the document is read then.
                    tracing::warn!(%error, "reading the done document failed; trying again");
                    tokio::time::sleep(TRANSIENT_READ_WAIT).await;
                    continue;
                }
                Err(other) => return Err(other),
            }
            // Wait for the next done document (or a lagged channel: just look again), and
            // look anyway now and then: a document written while reads were failing, or
            // by another process resuming the run, sends no event here.
            let next = async {
                loop {
                    match written.recv().await {
                        Ok(k) if k == key => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DONE_POLL, next).await;
        }
    }

    /// The done document is the first step of finalize; the finalizing invocation completes
    /// the lock last. Polled: it is a matter of milliseconds, once per run.
    /// If finalize keeps failing after its document (retried by the event bus), give up
    /// waiting after [`FINALIZE_WAIT`] rather than hang: the document is what users need.
    async fn wait_lock_completed(&self, run_id: &RunId) -> Result<(), StoreError> {
        let give_up = tokio::time::Instant::now() + FINALIZE_WAIT;
        loop {
            let lock = match self.engine.ports.orders.lock_state(run_id).await {
                Ok(lock) => lock,
                Err(error) if error.is_transient() => None,
                Err(other) => return Err(other),
            };
            if lock.is_some_and(|l| l.is_completed()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= give_up {
                tracing::warn!(run_id = %run_id, "the done document is written but finalize did not complete");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts no more workers: those waiting for a slot, and any dispatched from now on,
    /// end without running anything.
    pub fn stop_launching(&self) {
        self.dispatcher.stop_launching();
    }

    /// Waits up to `limit` for the running workers to end (the caller has asked them to
    /// stop); says whether they all did. Those left are killed by
    /// [`LocalRuntime::shutdown`].
    pub async fn wait_workers(&self, limit: Duration) -> bool {
        self.dispatcher.wait_idle(limit).await
    }

    /// Starts an orchestrator pass for `run_id` in the background (retried as the event
    /// bus retries one).
    pub fn kick(&self, run_id: &RunId) {
        tokio::spawn(orchestrate_with_retries(
            Arc::clone(&self.engine),
            run_id.clone(),
            None,
        ));
    }

    /// Stops the loops and every worker (their processes are killed).
    pub async fn shutdown(mut self) {
        self.dispatcher.shutdown();
        self.loops.shutdown().await;
    }
}

/// Starts an orchestrator invocation for every result written, each in its own task.
async fn event_bus(engine: Arc<Engine>, mut keys_written: mpsc::UnboundedReceiver<String>) {
    let mut invocations = JoinSet::new();
    loop {
        tokio::select! {
            key = keys_written.recv() => {
                let Some(key) = key else { break };
                if let Some(result) = keys::parse_result(&key) {
                    let arrived = Arrivals::from([(result.order_num, result.attempt)]);
                    invocations.spawn(orchestrate_with_retries(
                        Arc::clone(&engine),
                        result.run_id,
                        Some(arrived),
                    ));
                }
            }
            Some(_) = invocations.join_next(), if !invocations.is_empty() => {}
        }
    }
    invocations.shutdown().await;
}

/// One invocation for `run_id`: for a notification, told which result `arrived`, as the S3
/// event tells the orchestrator Lambda; a retry lists the run's callbacks.
async fn orchestrate_with_retries(
    engine: Arc<Engine>,
    run_id: RunId,
    mut arrived: Option<Arrivals>,
) {
    // The first attempt runs at once (a zero sleep would still wait for the timer's next tick).
    let mut delays = ORCHESTRATE_RETRIES.iter();
    loop {
        let outcome = match arrived.take() {
            Some(arrived) => engine.orchestrate_notified(&run_id, arrived).await,
            None => engine.orchestrate(&run_id).await,
        };
        match outcome {
            Ok(_) => return,
            Err(error) => {
                tracing::error!(run_id = %run_id, %error, "orchestrator invocation failed")
            }
        }
        let Some(delay) = delays.next() else {
            tracing::error!(run_id = %run_id, "orchestrator invocation failed after retries; the run's watch resumes the run");
            return;
        };
        tokio::time::sleep(*delay).await;
    }
}

/// Runs one timer loop per watched order.
async fn watchdogs(engine: Arc<Engine>, mut watches: mpsc::UnboundedReceiver<WatchdogInput>) {
    let mut loops = JoinSet::new();
    loop {
        tokio::select! {
            input = watches.recv() => {
                let Some(input) = input else { break };
                loops.spawn(watch(Arc::clone(&engine), input));
            }
            Some(_) = loops.join_next(), if !loops.is_empty() => {}
        }
    }
    loops.shutdown().await;
}

async fn watch(engine: Arc<Engine>, input: WatchdogInput) {
    // The first check comes soon — a retry's timer at its moment, to the millisecond; from
    // then on the check says how long to wait.
    let mut wait = match input.wake_at_ms {
        Some(at) => Duration::from_millis(at.saturating_sub(engine.now_ms())),
        None => Duration::from_secs(1),
    };
    loop {
        tokio::time::sleep(wait).await;
        match engine.watchdog_check(&input).await {
            Ok(verdict) => {
                if verdict.kick {
                    tokio::spawn(orchestrate_with_retries(
                        Arc::clone(&engine),
                        input.run_id.clone(),
                        None,
                    ));
                }
                if verdict.done {
                    return;
                }
                wait = Duration::from_secs(verdict.wait_seconds.max(1));
            }
            Err(error) => {
                tracing::warn!(run_id = %input.run_id, order_num = %input.order_num, %error, "watchdog check failed");
                wait = Duration::from_secs(5);
            }
        }
    }
}

async fn forward_done(
    mut written: mpsc::UnboundedReceiver<String>,
    done_events: broadcast::Sender<String>,
) {
    while let Some(key) = written.recv().await {
        let _ = done_events.send(key);
    }
}
