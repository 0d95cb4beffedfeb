//! The proof that every run finishes exactly once, whatever fails: a seeded, deterministic
//! simulation of random DAG jobs on the local backends (real SQLite, real directory store,
//! real key files) with faults injected at every port call, and the invariants checked
//! after each run.
//!
//! Faults, each drawn per call from the job's rates: a transient error before the call
//! takes effect; a transient error after it took effect (the answer was lost); a crash
//! before or after it (the invocation is dropped at that await, as a Lambda killed there:
//! no clean-up runs, its lock stays held until the lease ends); a permanent refusal of a
//! start. Notifications of results are lost, delivered twice, or delivered together with
//! another (two orchestrator invocations at once, racing for the lock), and 30 % of them to
//! an orchestrator that has seen nothing of the run (another Lambda instance); a job with an
//! idempotency key is submitted twice, one after the other or both at once, as a caller
//! whose answer was lost does. Time jumps expire leases and deadlines. Half the jobs' stores
//! say a listing costs what S3's does, so passes and the watch find results by listing as on
//! AWS; the other half read each in-flight result, as locally. The simulated worker
//! follows the worker's protocol (claim the attempt if absent, run, report if no result is
//! there yet; retry what fails transiently), and counts what it executes.
//!
//! A failure prints the seed; `SLUICE_SIM_SEED=<seed>` replays that job alone, and
//! `SLUICE_SIM_JOBS=<n>` runs more jobs (from that seed on, when both are given).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_contract::AttemptId;
use sluice_contract::dispatch::{Claim, DispatchPayload};
use sluice_contract::job::{OrderSpec, Reference, RetrySpec};
use sluice_contract::result::{
    DEPENDENCY_FAILED, DEPENDENCY_SKIPPED, DoneOrder, INIT_FAILED, JOB_TIMEOUT, ResultDoc,
    parse_done,
};
use sluice_contract::{
    ExecutionTarget, JobSpec, OrderNum, OrderStatus, RunId, TraceId, ValidateOptions, keys,
};
use sluice_engine::local::{DirStore, FileKeyStore, SecretsFile, SqliteStore};
use sluice_engine::ports::{
    AcquireOutcome, DispatchError, LockState, OrderEvent, OrderRecord, Presigned, ReleaseOutcome,
    StepWrites,
};
use sluice_engine::{
    Clock, Dispatcher, Engine, EngineConfig, ErrorKind, KeyStore, ObjectStore, OrderStore, Ports,
    StoreError, Transition, WatchdogInput, WatchdogStarter,
};

/// Jobs simulated by default (each a fresh state folder, 1 to 8 orders).
const DEFAULT_JOBS: u64 = 1000;
/// Actions (deliveries, worker runs, watch checks) after which a run that has not finished
/// counts as stuck.
const MAX_ACTIONS: usize = 4000;
/// Attempts the simulated worker makes at each store call before it dies.
const WORKER_TRIES: usize = 8;

// ---------------------------------------------------------------------------------------
// The world: clock, fault dice, notifications, started workers and watches.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    TransientBefore,
    TransientAfter,
    CrashBefore,
    CrashAfter,
}

#[derive(Debug, Default)]
struct Counts {
    calls: u64,
    transient: u64,
    crashes: u64,
    refused_starts: u64,
    lost_notifications: u64,
    duplicated_notifications: u64,
    concurrent_deliveries: u64,
    /// Notifications delivered to an orchestrator that had seen nothing of the run.
    fresh_deliveries: u64,
    duplicate_submissions: u64,
    kicks: u64,
    /// Steps that took the lock with their first writes.
    locks_taken_with_writes: u64,
    /// Of those, steps of an engine new to the run, from a lone attempt's count.
    locks_taken_by_fresh_engines: u64,
}

tokio::task_local! {
    /// The invocation a crash ends (see [`World::invoke`]).
    static INVOCATION: Arc<tokio::sync::Notify>;
}

#[derive(Debug)]
struct World {
    now_ms: AtomicU64,
    rng: Mutex<fastrand::Rng>,
    /// Per-call probabilities: transient error, crash, permanent refusal of a start.
    rates: (f64, f64, f64),
    armed: AtomicBool,
    notifications: Mutex<VecDeque<String>>,
    starts: Mutex<Vec<DispatchPayload>>,
    watches: Mutex<Vec<(WatchdogInput, u64)>>,
    executed: Mutex<HashMap<(OrderNum, AttemptId), u32>>,
    /// Orders one of whose workers died (crashed, or gave up on a store call).
    died: Mutex<HashSet<OrderNum>>,
    runs: Mutex<Vec<RunId>>,
    counts: Mutex<Counts>,
    /// Faults given to the next calls of an operation, before any drawn at random.
    scripted: Mutex<Vec<(&'static str, Fault)>>,
    /// What the object store says a listing costs: a folder's 1 (a pass reads each
    /// in-flight result) or S3's 1 000 (a pass lists, unless one order is in flight).
    keys_per_listing: usize,
}

impl World {
    /// A world whose fault rates are drawn from `seed`.
    fn new(seed: u64) -> Arc<Self> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let transient = [0.0, 0.02, 0.05, 0.1, 0.2][rng.usize(0..5)];
        let crash = [0.0, 0.005, 0.02][rng.usize(0..3)];
        let refuse = [0.0, 0.0, 0.05][rng.usize(0..3)];
        World::with_rates(rng, (transient, crash, refuse))
    }

    fn with_rates(mut rng: fastrand::Rng, rates: (f64, f64, f64)) -> Arc<Self> {
        let keys_per_listing = [1, 1000][rng.usize(0..2)];
        Arc::new(World {
            keys_per_listing,
            now_ms: AtomicU64::new(1_800_000_000_000),
            rng: Mutex::new(rng),
            rates,
            armed: AtomicBool::new(false),
            notifications: Mutex::default(),
            starts: Mutex::default(),
            watches: Mutex::default(),
            executed: Mutex::default(),
            died: Mutex::default(),
            runs: Mutex::default(),
            counts: Mutex::default(),
            scripted: Mutex::default(),
        })
    }

    fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap().f64() < p
    }

    fn below(&self, n: usize) -> usize {
        self.rng.lock().unwrap().usize(0..n)
    }

    fn now(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn fault(&self, what: &str) -> Fault {
        if !self.armed.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let mut scripted = self.scripted.lock().unwrap();
        if let Some(next) = scripted.iter().position(|(op, _)| *op == what) {
            return scripted.remove(next).1;
        }
        drop(scripted);
        self.counts.lock().unwrap().calls += 1;
        let (transient, crash, _) = self.rates;
        let fault = if self.chance(transient) {
            if self.chance(0.5) {
                Fault::TransientBefore
            } else {
                Fault::TransientAfter
            }
        } else if self.chance(crash) {
            if self.chance(0.5) {
                Fault::CrashBefore
            } else {
                Fault::CrashAfter
            }
        } else {
            Fault::None
        };
        let mut counts = self.counts.lock().unwrap();
        match fault {
            Fault::TransientBefore | Fault::TransientAfter => counts.transient += 1,
            Fault::CrashBefore | Fault::CrashAfter => counts.crashes += 1,
            Fault::None => {}
        }
        fault
    }

    /// The invocation dies here: its runner drops it at this await (others running at the
    /// same time go on).
    async fn crash<T>(&self) -> T {
        INVOCATION.with(|crashed| crashed.notify_one());
        std::future::pending().await
    }

    /// Runs `call` under the fault drawn for it.
    async fn faulty<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let injected = || StoreError::Unavailable {
            what: what.to_owned(),
            message: "injected fault".to_owned(),
        };
        match self.fault(what) {
            Fault::None => call.await,
            Fault::TransientBefore => Err(injected()),
            Fault::TransientAfter => {
                let _ = call.await;
                Err(injected())
            }
            Fault::CrashBefore => self.crash().await,
            Fault::CrashAfter => {
                let _ = call.await;
                self.crash().await
            }
        }
    }

    /// Runs one invocation to its end, or until a fault crashes it.
    async fn invoke<T>(&self, invocation: impl Future<Output = T>) -> Option<T> {
        let crashed = Arc::new(tokio::sync::Notify::new());
        let run = async {
            tokio::select! {
                biased;
                _ = crashed.notified() => None,
                done = invocation => Some(done),
            }
        };
        INVOCATION.scope(Arc::clone(&crashed), run).await
    }
}

#[derive(Debug)]
struct SimClock(Arc<World>);

#[async_trait]
impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.0.now()
    }

    async fn sleep(&self, duration: Duration) {
        self.0.advance(duration.as_millis() as u64);
    }

    fn jitter(&self) -> f64 {
        self.0.rng.lock().unwrap().f64()
    }
}

// ---------------------------------------------------------------------------------------
// The ports, each a real local adapter behind the fault dice.

#[derive(Debug)]
struct FaultyObjects {
    inner: Arc<DirStore>,
    world: Arc<World>,
}

impl FaultyObjects {
    /// A result written fires a notification, as S3 does (even when the answer is lost).
    fn written(&self, key: &str) {
        if keys::parse_result(key).is_some() {
            self.world
                .notifications
                .lock()
                .unwrap()
                .push_back(key.to_owned());
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyObjects {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.world.faulty("get", self.inner.get(key)).await
    }
    async fn get_prefix(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StoreError> {
        let call = self.inner.get_prefix(key, max_bytes);
        self.world.faulty("get_prefix", call).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let call = async {
            self.inner.put(key, bytes).await?;
            self.written(key);
            Ok(())
        };
        self.world.faulty("put", call).await
    }
    async fn put_tagged(&self, key: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        let call = async {
            let etag = self.inner.put_tagged(key, bytes).await?;
            self.written(key);
            Ok(etag)
        };
        self.world.faulty("put_tagged", call).await
    }
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let call = async {
            self.inner.put_if_absent(key, bytes).await?;
            self.written(key);
            Ok(())
        };
        self.world.faulty("put_if_absent", call).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        self.world
            .faulty("put_file", self.inner.put_file(key, path))
            .await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.world.faulty("head", self.inner.head(key)).await
    }
    fn keys_per_listing(&self) -> usize {
        self.world.keys_per_listing
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.world.faulty("list", self.inner.list(prefix)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.world.faulty("delete", self.inner.delete(key)).await
    }
    fn object_url(&self, key: &str) -> String {
        self.inner.object_url(key)
    }
    async fn presign(
        &self,
        operation: Presigned,
        key: &str,
        expiry: Duration,
    ) -> Result<String, StoreError> {
        let call = self.inner.presign(operation, key, expiry);
        self.world.faulty("presign", call).await
    }
}

#[derive(Debug)]
struct FaultyTables {
    inner: SqliteStore,
    world: Arc<World>,
    /// The tables as an orchestrator new to the run sees them (its takes are counted).
    fresh: bool,
}

#[async_trait]
impl OrderStore for FaultyTables {
    async fn insert_orders(
        &self,
        orders: &[OrderRecord],
        events: &[OrderEvent],
    ) -> Result<(), StoreError> {
        let call = self.inner.insert_orders(orders, events);
        self.world.faulty("insert_orders", call).await
    }
    async fn run_orders(&self, run_id: &RunId) -> Result<Vec<OrderRecord>, StoreError> {
        self.world
            .faulty("run_orders", self.inner.run_orders(run_id))
            .await
    }
    async fn get_order(&self, run_id: &RunId, num: OrderNum) -> Result<OrderRecord, StoreError> {
        let call = self.inner.get_order(run_id, num);
        self.world.faulty("get_order", call).await
    }
    async fn transition(
        &self,
        run_id: &RunId,
        num: OrderNum,
        from: OrderStatus,
        change: &Transition,
    ) -> Result<OrderRecord, StoreError> {
        let call = self.inner.transition(run_id, num, from, change);
        self.world.faulty("transition", call).await
    }
    async fn transition_together(
        &self,
        run_id: &RunId,
        writes: &StepWrites,
    ) -> Result<(), StoreError> {
        let call = self.inner.transition_together(run_id, writes);
        self.world.faulty("transition_together", call).await
    }
    async fn put_events(&self, events: &[OrderEvent]) -> Result<(), StoreError> {
        self.world
            .faulty("put_events", self.inner.put_events(events))
            .await
    }
    async fn trace_events(&self, trace_id: &TraceId) -> Result<Vec<OrderEvent>, StoreError> {
        let call = self.inner.trace_events(trace_id);
        self.world.faulty("trace_events", call).await
    }
    async fn acquire_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<AcquireOutcome, StoreError> {
        let call = self
            .inner
            .acquire_lock(run_id, owner, now_ms, lease_until_ms);
        self.world.faulty("acquire_lock", call).await
    }
    async fn take_lock_with(
        &self,
        run_id: &RunId,
        owner: &str,
        released_marks: u64,
        lease_until_ms: u64,
        writes: &StepWrites,
    ) -> Result<u64, StoreError> {
        let call =
            (self.inner).take_lock_with(run_id, owner, released_marks, lease_until_ms, writes);
        let taken = self.world.faulty("take_lock_with", call).await;
        if taken.is_ok() {
            let mut counts = self.world.counts.lock().unwrap();
            counts.locks_taken_with_writes += 1;
            // A fresh engine remembers no release: it took from a lone attempt's count.
            if self.fresh && released_marks > 0 {
                counts.locks_taken_by_fresh_engines += 1;
            }
        }
        taken
    }
    async fn renew_lock(&self, run_id: &RunId, owner: &str, until: u64) -> Result<u64, StoreError> {
        let call = self.inner.renew_lock(run_id, owner, until);
        self.world.faulty("renew_lock", call).await
    }
    async fn release_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        seen_marks: u64,
        writes: &StepWrites,
    ) -> Result<ReleaseOutcome, StoreError> {
        let call = self.inner.release_lock(run_id, owner, seen_marks, writes);
        self.world.faulty("release_lock", call).await
    }
    async fn complete_lock(&self, run_id: &RunId, owner: &str) -> Result<(), StoreError> {
        let call = self.inner.complete_lock(run_id, owner);
        self.world.faulty("complete_lock", call).await
    }
    async fn lock_state(&self, run_id: &RunId) -> Result<Option<LockState>, StoreError> {
        self.world
            .faulty("lock_state", self.inner.lock_state(run_id))
            .await
    }
}

#[derive(Debug)]
struct FaultyKeys {
    inner: FileKeyStore,
    world: Arc<World>,
}

#[async_trait]
impl KeyStore for FaultyKeys {
    async fn put_key(
        &self,
        run: &RunId,
        num: OrderNum,
        secret: &str,
    ) -> Result<String, StoreError> {
        self.world
            .faulty("put_key", self.inner.put_key(run, num, secret))
            .await
    }
    async fn get_key(&self, key_path: &str) -> Result<String, StoreError> {
        self.world
            .faulty("get_key", self.inner.get_key(key_path))
            .await
    }
    async fn delete_run_keys(&self, run_id: &RunId) -> Result<(), StoreError> {
        let call = self.inner.delete_run_keys(run_id);
        self.world.faulty("delete_run_keys", call).await
    }
    async fn delete_keys(&self, run_id: &RunId, key_paths: &[String]) -> Result<(), StoreError> {
        let call = self.inner.delete_keys(run_id, key_paths);
        self.world.faulty("delete_keys", call).await
    }
    async fn jobs_key(&self, made: &str) -> Result<String, StoreError> {
        let call = self.inner.jobs_key(made);
        self.world.faulty("jobs_key", call).await
    }
}

/// Starts of workers and watches are recorded for the simulation to play; a start may fail
/// transiently (before or after it was accepted), be refused for good, or crash its caller.
#[derive(Debug)]
struct Starts(Arc<World>);

impl Starts {
    async fn start(
        &self,
        what: &str,
        run_id: &RunId,
        order_num: OrderNum,
        record: impl FnOnce(&World),
    ) -> Result<(), DispatchError> {
        let world = &self.0;
        let refuse = |kind| DispatchError {
            kind,
            what: what.to_owned(),
            run_id: run_id.clone(),
            order_num,
            message: "injected fault".to_owned(),
        };
        if world.armed.load(Ordering::SeqCst) && world.chance(world.rates.2) {
            world.counts.lock().unwrap().refused_starts += 1;
            return Err(refuse(ErrorKind::Permanent));
        }
        match world.fault(what) {
            Fault::None => {
                record(world);
                Ok(())
            }
            Fault::TransientBefore => Err(refuse(ErrorKind::Transient)),
            Fault::TransientAfter => {
                record(world);
                Err(refuse(ErrorKind::Transient))
            }
            Fault::CrashBefore => world.crash().await,
            Fault::CrashAfter => {
                record(world);
                world.crash().await
            }
        }
    }
}

#[async_trait]
impl Dispatcher for Starts {
    async fn start(
        &self,
        _: ExecutionTarget,
        _: Duration,
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError> {
        self.start("worker", &payload.run_id, payload.order_num, |world| {
            world.starts.lock().unwrap().push(payload.clone())
        })
        .await
    }
}

#[async_trait]
impl WatchdogStarter for Starts {
    async fn start(&self, input: &WatchdogInput) -> Result<(), DispatchError> {
        self.start("watchdog", &input.run_id, input.order_num, |world| {
            let mut runs = world.runs.lock().unwrap();
            if !runs.contains(&input.run_id) {
                runs.push(input.run_id.clone());
            }
            let mut watches = world.watches.lock().unwrap();
            // Starting the same attempt's watch twice is a no-op (a named execution); a
            // retry's timer checks at its moment.
            let same = |w: &WatchdogInput| {
                (&w.run_id, w.order_num, &w.attempt, w.generation)
                    == (
                        &input.run_id,
                        input.order_num,
                        &input.attempt,
                        input.generation,
                    )
            };
            if !watches.iter().any(|(w, _)| same(w)) {
                let at = input.wake_at_ms.unwrap_or(world.now() + 1000);
                watches.push((input.clone(), at));
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Jobs and what their orders do.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Succeeds,
    Fails,
    /// Claims its attempt and never reports (the watchdog must time it out).
    Hangs,
}

#[derive(Debug, Clone)]
struct Plan {
    job: JobSpec,
    behaviours: Vec<Behaviour>,
    /// Whether init takes the run's first step (else its trigger wakes a pass for it).
    first_step_at_init: bool,
}

/// A `depends` expression over `orders`: a term each, `&&`- or `||`-joined, some negated.
fn random_condition(world: &World, orders: &[Reference]) -> String {
    const OUTCOMES: [&str; 5] = ["succeeded", "failed", "timed_out", "skipped", "ended"];
    let mut text = String::new();
    for (i, order) in orders.iter().enumerate() {
        if i > 0 {
            text.push_str(if world.chance(0.5) { " && " } else { " || " });
        }
        if world.chance(0.2) {
            text.push('!');
        }
        let outcome = OUTCOMES[world.below(OUTCOMES.len())];
        text.push_str(&format!("{}.{outcome}", order.as_str()));
    }
    text
}

fn random_plan(world: &World) -> Plan {
    let count = 1 + world.below(8);
    let mut orders = Vec::new();
    let mut behaviours = Vec::new();
    for index in 0..count {
        let dependencies: Vec<Reference> = (0..index)
            .filter(|_| world.chance(0.3))
            .map(|d| Reference((d + 1).to_string()))
            .collect();
        behaviours.push(match world.below(20) {
            0..=12 => Behaviour::Succeeds,
            13..=17 => Behaviour::Fails,
            _ => Behaviour::Hangs,
        });
        // A quarter of the orders that wait use a condition over the same orders instead.
        let depends = (!dependencies.is_empty() && world.chance(0.25))
            .then(|| random_condition(world, &dependencies));
        // Some orders retry: every failure, or only exit code 1 (what a failing worker
        // reports here) or 2 (never), or only time-outs.
        let retry = world.chance(0.3).then(|| {
            let timed_out_only = world.chance(0.2);
            RetrySpec {
                limit: 1 + world.below(3) as u32,
                backoff: Some(1.0 + world.below(30) as f64),
                max_backoff: None,
                on: timed_out_only.then(|| vec![sluice_contract::retries::RetryOn::TimedOut]),
                exit_codes: match world.below(4) {
                    _ if timed_out_only => None,
                    0 => Some(vec![1]),
                    1 => Some(vec![2]),
                    _ => None,
                },
            }
        });
        orders.push(OrderSpec {
            cmds: Some(vec!["true".into()]),
            timeout: Some(30 + 30 * world.below(10) as u64),
            retry,
            dependencies: if depends.is_some() {
                Vec::new()
            } else {
                dependencies
            },
            depends,
            must_succeed: Some(!world.chance(0.2)),
            ..OrderSpec::default()
        });
    }
    let job_timeout = if world.chance(0.15) { 300 } else { 7200 };
    Plan {
        job: JobSpec {
            orders,
            job_timeout: Some(job_timeout),
            idempotency_key: world.chance(0.25).then(|| "sim-submission".to_owned()),
            ..JobSpec::default()
        },
        behaviours,
        first_step_at_init: world.chance(0.5),
    }
}

// ---------------------------------------------------------------------------------------
// The simulation of one job.

struct Sim {
    world: Arc<World>,
    engine: Engine,
    /// The ports of an orchestrator new to the run (another Lambda instance).
    fresh_ports: Ports,
    plan: Plan,
    done: Arc<DirStore>,
    tables: SqliteStore,
    keys_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let world = World::new(seed);
        let plan = random_plan(&world);
        Sim::build(world, plan)
    }

    fn build(world: Arc<World>, plan: Plan) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let internal = Arc::new(DirStore::open(&dir.path().join("internal"), "internal").unwrap());
        let done = Arc::new(DirStore::open(&dir.path().join("done"), "done").unwrap());
        let open_tables = || {
            let ttl = Duration::from_secs(86_400);
            SqliteStore::open(&dir.path().join("sluice.db"), ttl, ttl).unwrap()
        };
        let keys_dir = dir.path().join("keys");
        let starts = Arc::new(Starts(Arc::clone(&world)));
        let ports = Ports {
            internal: Arc::new(FaultyObjects {
                inner: Arc::clone(&internal),
                world: Arc::clone(&world),
            }),
            done: Arc::new(FaultyObjects {
                inner: Arc::clone(&done),
                world: Arc::clone(&world),
            }),
            orders: Arc::new(FaultyTables {
                inner: open_tables(),
                world: Arc::clone(&world),
                fresh: false,
            }),
            dispatcher: starts.clone(),
            watchdog: starts,
            keys: Arc::new(FaultyKeys {
                inner: FileKeyStore::open(&keys_dir).unwrap(),
                world: Arc::clone(&world),
            }),
            secrets: Arc::new(SecretsFile::none()),
            archives: None,
            vcs: None,
            clock: Arc::new(SimClock(Arc::clone(&world))),
        };
        let config = EngineConfig {
            dispatch_parallelism: 1,
            first_step_at_init: plan.first_step_at_init,
            ..EngineConfig::default()
        };
        let fresh_ports = Ports {
            orders: Arc::new(FaultyTables {
                inner: open_tables(),
                world: Arc::clone(&world),
                fresh: true,
            }),
            ..ports.clone()
        };
        Sim {
            engine: Engine::new(ports, config),
            fresh_ports,
            plan,
            done,
            tables: open_tables(),
            keys_dir,
            world,
            _dir: dir,
        }
    }

    /// Every run an init started (a submission made twice may start two).
    fn runs(&self) -> Vec<RunId> {
        self.world.runs.lock().unwrap().clone()
    }

    /// Finalized, or never queued (init failed; the watch, once idle, has cleaned up).
    async fn finished(&self, run_id: &RunId) -> bool {
        let lock = self.tables.lock_state(run_id).await.unwrap();
        lock.is_some_and(|l| l.is_completed())
            || self.tables.run_orders(run_id).await.unwrap().is_empty()
    }

    /// Plays the job to its end; returns how many actions it took and the runs the
    /// submissions were answered with.
    async fn play(&self) -> Result<(usize, Vec<RunId>), String> {
        self.world.armed.store(true, Ordering::SeqCst);
        let options = ValidateOptions::local("sim");
        let submit = || {
            let init = self
                .engine
                .init_job(&self.plan.job, &options, Path::new("."));
            self.world.invoke(init)
        };
        // A job with an idempotency key is sent again (its caller lost the answer), after
        // the first submission or while it is still at work.
        let submissions = match self.plan.job.idempotency_key {
            None => vec![submit().await],
            Some(_) => {
                self.world.counts.lock().unwrap().duplicate_submissions += 1;
                if self.world.chance(0.5) {
                    let (first, second) = tokio::join!(submit(), submit());
                    vec![first, second]
                } else {
                    let first = submit().await;
                    vec![first, submit().await]
                }
            }
        };
        let answers: Vec<RunId> = submissions
            .into_iter()
            .filter_map(|answer| Some(answer?.ok()?.run_id))
            .collect();
        for action in 0..MAX_ACTIONS {
            let mut run_over = true;
            for run in self.runs() {
                run_over &= self.finished(&run).await;
            }
            let idle = self.world.notifications.lock().unwrap().is_empty()
                && self.world.starts.lock().unwrap().is_empty()
                && self.world.watches.lock().unwrap().is_empty();
            if run_over && idle {
                self.world.armed.store(false, Ordering::SeqCst);
                return Ok((action, answers));
            }
            self.step().await;
        }
        let mut described = Vec::new();
        for run in self.runs() {
            described.push(self.describe(&run).await);
        }
        Err(format!(
            "not finished after {MAX_ACTIONS} actions (submissions answered {answers:?}): {}",
            described.join("; ")
        ))
    }

    /// What a run looks like, for a failure's message.
    async fn describe(&self, run_id: &RunId) -> String {
        let rows = self.tables.run_orders(run_id).await.unwrap();
        let statuses: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {} {:?}", r.plan.order_num, r.status, r.reason))
            .collect();
        let lock = self.tables.lock_state(run_id).await.unwrap();
        let watches: Vec<String> = (self.world.watches.lock().unwrap().iter())
            .map(|(w, at)| format!("{}:{} at {}", w.order_num, w.attempt, at))
            .collect();
        format!(
            "run {run_id}: orders [{}], lock {lock:?}, watches [{}], now {}, {} notifications, {} starts",
            statuses.join(", "),
            watches.join(", "),
            self.world.now(),
            self.world.notifications.lock().unwrap().len(),
            self.world.starts.lock().unwrap().len(),
        )
    }

    /// One action, chosen at random among those possible.
    async fn step(&self) {
        let notified = self.world.notifications.lock().unwrap().len();
        let started = !self.world.starts.lock().unwrap().is_empty();
        match self.world.below(4) {
            0 if notified > 0 => self.deliver().await,
            1 if started => self.run_worker().await,
            2 if notified > 1 => {
                // Two invocations at once, as Lambda runs them: one takes the lock, the
                // other is counted on it (or finds it free again).
                self.world.counts.lock().unwrap().concurrent_deliveries += 1;
                tokio::join!(self.deliver(), self.deliver());
            }
            _ => self.tick().await,
        }
    }

    /// Delivers the oldest notification (S3 → orchestrator): lost, or delivered twice.
    async fn deliver(&self) {
        let Some(key) = self.world.notifications.lock().unwrap().pop_front() else {
            return;
        };
        if self.world.chance(0.1) {
            self.world.counts.lock().unwrap().lost_notifications += 1;
            return;
        }
        if self.world.chance(0.1) {
            self.world.counts.lock().unwrap().duplicated_notifications += 1;
            self.world
                .notifications
                .lock()
                .unwrap()
                .push_back(key.clone());
        }
        // As the S3 event does, the notification names the result that arrived. 30 % land
        // on an orchestrator that has seen nothing of the run (another Lambda instance).
        let result = keys::parse_result(&key).expect("results only");
        let arrived = [(result.order_num, result.attempt)].into();
        let fresh;
        let engine = if self.world.chance(0.3) {
            self.world.counts.lock().unwrap().fresh_deliveries += 1;
            fresh = Engine::new(self.fresh_ports.clone(), self.engine.config.clone());
            &fresh
        } else {
            &self.engine
        };
        let pass = engine.orchestrate_notified(&result.run_id, arrived);
        let _ = self.world.invoke(pass).await;
    }

    /// Runs one started worker: claim, execute, report.
    async fn run_worker(&self) {
        let payload = {
            let mut starts = self.world.starts.lock().unwrap();
            let index = self.world.below(starts.len());
            starts.swap_remove(index)
        };
        if self.world.invoke(self.work(&payload)).await != Some(true) {
            self.world.died.lock().unwrap().insert(payload.order_num);
        }
    }

    /// One worker; `false` when it died (gave up on a store call).
    async fn work(&self, payload: &DispatchPayload) -> bool {
        let store = &self.engine.ports.internal;
        let claim = Claim {
            attempt: payload.attempt.clone(),
            claimed_at_ms: self.world.now(),
            worker: format!("w{}", self.world.below(1 << 30)),
        };
        let claim_key = keys::claim(&payload.run_id, payload.order_num, &payload.attempt);
        let body = serde_json::to_vec(&claim).unwrap();
        let mut ours = None;
        for _ in 0..WORKER_TRIES {
            ours = match store.put_if_absent(&claim_key, body.clone()).await {
                Ok(()) => Some(true),
                Err(StoreError::ConditionFailed { .. }) => match store.get(&claim_key).await {
                    Ok(found) => Some(serde_json::from_slice::<Claim>(&found).unwrap() == claim),
                    Err(_) => None,
                },
                Err(_) => None,
            };
            if ours.is_some() {
                break;
            }
            self.world.advance(1000);
        }
        match ours {
            Some(true) => {}
            Some(false) => return true, // a duplicate start: the claim is another's
            None => return false,
        }
        *self
            .world
            .executed
            .lock()
            .unwrap()
            .entry((payload.order_num, payload.attempt.clone()))
            .or_default() += 1;
        let index = payload.order_num.index().unwrap();
        let status = match self.plan.behaviours[index] {
            Behaviour::Succeeds => OrderStatus::Succeeded,
            Behaviour::Fails => OrderStatus::Failed,
            Behaviour::Hangs => return true,
        };
        self.world.advance(1000 * (1 + self.world.below(20) as u64));
        let mut doc = ResultDoc::new(status, "sim");
        doc.attempt = Some(payload.attempt.clone());
        if status == OrderStatus::Failed {
            doc.exit_code = Some(1);
        }
        let key = keys::result(&payload.run_id, payload.order_num, &payload.attempt);
        for _ in 0..WORKER_TRIES {
            // If absent: a result already there (the watchdog's time-out, or this worker's
            // own write whose answer was lost) stands, and counts as reported.
            match store
                .put_if_absent(&key, serde_json::to_vec(&doc).unwrap())
                .await
            {
                Ok(()) => return true,
                Err(e) if e.is_condition_failed() => return true,
                Err(_) => self.world.advance(1000),
            }
        }
        false
    }

    /// Moves time to the next watch check (or a little), and runs every check that is due.
    async fn tick(&self) {
        let next = self
            .world
            .watches
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| *at)
            .min();
        let now = self.world.now();
        match next {
            Some(at) if at > now => self.world.advance(at - now),
            Some(_) => {}
            None => self
                .world
                .advance(1000 * (1 + self.world.below(120) as u64)),
        }
        let now = self.world.now();
        let due: Vec<WatchdogInput> = self
            .world
            .watches
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(w, _)| w.clone())
            .collect();
        for input in due {
            let verdict = self.world.invoke(self.engine.watchdog_check(&input)).await;
            let kick = {
                let mut watches = self.world.watches.lock().unwrap();
                let Some(slot) = watches.iter().position(|(w, _)| *w == input) else {
                    continue;
                };
                match verdict {
                    Some(Ok(v)) if v.done => {
                        watches.swap_remove(slot);
                        v.kick
                    }
                    Some(Ok(v)) => {
                        watches[slot].1 = now + v.wait_seconds * 1000;
                        v.kick
                    }
                    // An error or a crash: the state machine retries the check later.
                    _ => {
                        watches[slot].1 = now + 5000;
                        false
                    }
                }
            };
            if kick {
                self.world.counts.lock().unwrap().kicks += 1;
                let pass = self.engine.orchestrate(&input.run_id);
                let _ = self.world.invoke(pass).await;
            }
        }
    }

    /// The invariants, read with faults off. `answers`: the runs the submissions were
    /// answered with.
    async fn check(&self, answers: &[RunId]) -> Result<(), String> {
        if answers.windows(2).any(|pair| pair[0] != pair[1]) {
            return Err(format!(
                "one submission answered with two runs: {answers:?}"
            ));
        }
        let runs = self.runs();
        // Every run an init started (none when init failed before its watch) ends with one
        // done document, and no key of a run is left (the kept jobs' key outlives runs).
        let mut expected: Vec<String> = runs.iter().map(keys::done).collect();
        expected.sort();
        let mut done_keys = self.done.list("").await.unwrap();
        done_keys.sort();
        if done_keys != expected {
            return Err(format!("done bucket holds {done_keys:?} for runs {runs:?}"));
        }
        let key_files: Vec<String> = std::fs::read_dir(&self.keys_dir)
            .map(|entries| {
                (entries.flatten())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name != "jobs.key")
                    .collect()
            })
            .unwrap_or_default();
        if !key_files.is_empty() {
            return Err(format!(
                "keys {key_files:?} left after the runs {runs:?} ended (answered {answers:?})"
            ));
        }
        for ((num, attempt), times) in self.world.executed.lock().unwrap().iter() {
            if *times != 1 {
                return Err(format!("order {num} attempt {attempt} ran {times} times"));
            }
        }
        let mut with_rows = Vec::new();
        for run_id in &runs {
            let rows = self.tables.run_orders(run_id).await.unwrap();
            let doc = parse_done(&self.done.get(&keys::done(run_id)).await.unwrap())
                .map_err(|e| format!("done document of {run_id}: {e}"))?;
            if rows.is_empty() {
                // An init that failed (or lost the race for its idempotency key) after its
                // watch started: the watch cleaned up and ended the run.
                if doc.reason.as_deref() != Some(INIT_FAILED) {
                    return Err(format!(
                        "run {run_id} has no rows but ended with reason {:?}",
                        doc.reason
                    ));
                }
                continue;
            }
            with_rows.push(run_id.clone());
            // Events may be lost to faults, but a finalize made again (after a crash, or by
            // a pass that took the lock over) never records the run's end twice.
            let events = self.tables.trace_events(&rows[0].trace_id).await.unwrap();
            let ends = (events.iter())
                .filter(|e| e.order_name == "_job" && e.event == "completed")
                .count();
            if ends > 1 {
                return Err(format!("run {run_id} recorded `completed` {ends} times"));
            }
            if !answers.is_empty() && !answers.contains(run_id) {
                return Err(format!(
                    "run {run_id} was queued, but the submissions were answered with {answers:?}"
                ));
            }
            for (row, listed) in rows.iter().zip(&doc.orders) {
                if !row.status.is_terminal() {
                    return Err(format!("order {} left {}", row.plan.order_num, row.status));
                }
                if (row.status, &row.reason, row.exit_code)
                    != (listed.status, &listed.reason, listed.exit_code)
                {
                    return Err(format!(
                        "order {}: row {:?}/{:?} but done document {:?}/{:?}",
                        row.plan.order_num, row.status, row.reason, listed.status, listed.reason
                    ));
                }
                self.check_status(row, &rows)?;
                check_attempts(row, listed)?;
            }
            // No order ran more attempts than its policy allows.
            let mut ran: HashMap<OrderNum, u32> = HashMap::new();
            for (num, _) in self.world.executed.lock().unwrap().keys() {
                *ran.entry(*num).or_default() += 1;
            }
            for (num, attempts) in ran {
                let row = &rows[num.index().unwrap()];
                let allowed = 1 + row.plan.retry.as_ref().map_or(0, |policy| policy.limit);
                if attempts > allowed {
                    return Err(format!(
                        "order {num} ran {attempts} attempts, {allowed} allowed"
                    ));
                }
            }
            // No order ran unless each dependency it must wait for succeeded (or its
            // condition held once they ended): a result the pass read but could not write
            // (the order was timed out meanwhile) must not have started its dependents.
            for (num, _) in self.world.executed.lock().unwrap().keys() {
                let row = &rows[num.index().unwrap()];
                let status = |dep: &OrderNum| rows[dep.index().unwrap()].status;
                if let Some(condition) = &row.plan.condition {
                    if !condition_held(row, &rows) {
                        return Err(format!(
                            "order {num} ran though its condition {} does not hold",
                            condition.text
                        ));
                    }
                    continue;
                }
                let unmet = (row.plan.depends_on.iter()).find(|dep| {
                    let s = status(dep);
                    s == OrderStatus::Skipped
                        || (row.plan.must_succeed && s != OrderStatus::Succeeded)
                });
                if let Some(dep) = unmet {
                    return Err(format!(
                        "order {num} ran though its dependency {dep} is {}",
                        status(dep)
                    ));
                }
            }
        }
        if with_rows.len() > 1 {
            return Err(format!("one job queued as several runs: {with_rows:?}"));
        }
        Ok(())
    }

    /// An order's status is one its behaviour and its dependencies allow.
    fn check_status(&self, row: &OrderRecord, rows: &[OrderRecord]) -> Result<(), String> {
        let behaviour = self.plan.behaviours[row.plan.order_num.index().unwrap()];
        let reason = row.reason.as_deref().unwrap_or_default();
        let dep_status = |dep: &OrderNum| rows[dep.index().unwrap()].status;
        let ok = match row.status {
            OrderStatus::Succeeded => {
                behaviour == Behaviour::Succeeds
                    && (row.plan.condition.is_none() || condition_held(row, rows))
            }
            OrderStatus::Failed if reason == DEPENDENCY_FAILED => {
                row.plan.must_succeed
                    && row.plan.condition.is_none()
                    && (row.plan.depends_on.iter())
                        .any(|dep| dep_status(dep) != OrderStatus::Succeeded)
            }
            OrderStatus::Skipped if reason == DEPENDENCY_SKIPPED => {
                row.plan.condition.is_none()
                    && (row.plan.depends_on.iter())
                        .any(|dep| dep_status(dep) == OrderStatus::Skipped)
            }
            OrderStatus::Skipped => {
                reason.starts_with("condition false: ") && !condition_held(row, rows)
            }
            OrderStatus::Failed if reason.starts_with("dispatch_failed") => true,
            OrderStatus::Failed => behaviour == Behaviour::Fails,
            OrderStatus::TimedOut => {
                behaviour == Behaviour::Hangs
                    || reason == JOB_TIMEOUT
                    || self
                        .world
                        .died
                        .lock()
                        .unwrap()
                        .contains(&row.plan.order_num)
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "order {} is {} ({reason}) though it {behaviour:?}",
                row.plan.order_num, row.status
            ))
        }
    }
}

/// An order's ended attempts are numbered in turn, each one its policy retries, no more
/// than it allows, and the done document lists them first.
fn check_attempts(row: &OrderRecord, listed: &DoneOrder) -> Result<(), String> {
    let num = row.plan.order_num;
    if row.attempts.is_empty() {
        return Ok(());
    }
    let Some(policy) = &row.plan.retry else {
        return Err(format!("order {num} was retried without a policy"));
    };
    if row.attempts.len() > policy.limit as usize {
        return Err(format!(
            "order {num} retried {} times, limit {}",
            row.attempts.len(),
            policy.limit
        ));
    }
    for (i, attempt) in row.attempts.iter().enumerate() {
        if attempt.number != i as u32 + 1
            || !policy.retries(attempt.number, attempt.status, attempt.exit_code)
        {
            return Err(format!(
                "order {num}: attempt {attempt:?} should not have been retried"
            ));
        }
    }
    if !listed.attempts.starts_with(&row.attempts) {
        return Err(format!(
            "order {num}: the done document lists {:?}",
            listed.attempts
        ));
    }
    Ok(())
}

/// Whether `row`'s condition holds by the final statuses of the orders it names, all ended.
fn condition_held(row: &OrderRecord, rows: &[OrderRecord]) -> bool {
    let status = |dep: &OrderNum| rows[dep.index().unwrap()].status;
    let condition = row.plan.condition.as_ref().expect("a conditional order");
    (row.plan.depends_on.iter()).all(|dep| status(dep).is_terminal())
        && condition.expr.holds(&|dep: &OrderNum| Some(status(dep)))
}

/// A start whose row write landed but whose answer was lost (DynamoDB's own retry then
/// finds its write as a failed condition, or the call times out) is started in the same
/// pass. Before, the order waited `dispatching` for the dispatch lease and a kick.
#[test]
fn a_start_whose_answer_was_lost_is_still_started_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let world = World::with_rates(fastrand::Rng::with_seed(7), (0.0, 0.0, 0.0));
        let plan = Plan {
            job: JobSpec {
                orders: vec![OrderSpec {
                    cmds: Some(vec!["true".into()]),
                    timeout: Some(60),
                    ..OrderSpec::default()
                }],
                ..JobSpec::default()
            },
            behaviours: vec![Behaviour::Succeeds],
            first_step_at_init: false,
        };
        let sim = Sim::build(world, plan);
        let options = ValidateOptions::local("sim");
        let init = sim.engine.init_job(&sim.plan.job, &options, Path::new("."));
        let run_id = init.await.unwrap().run_id;
        sim.world.armed.store(true, Ordering::SeqCst);
        // queued → dispatching is applied, and answered with a time-out.
        (sim.world.scripted.lock().unwrap()).push(("transition", Fault::TransientAfter));
        sim.engine.orchestrate(&run_id).await.unwrap();
        let starts = sim.world.starts.lock().unwrap().len();
        assert_eq!(
            starts, 1,
            "the order's worker was started in the first pass"
        );
    });
}

/// Stopping a run survives a storage hiccup: a cancel whose first read fails transiently
/// is tried again and cancels every order (before, it gave up and left the run running).
#[test]
fn a_cancel_that_fails_transiently_is_tried_again() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let world = World::with_rates(fastrand::Rng::with_seed(11), (0.0, 0.0, 0.0));
        let order = OrderSpec {
            cmds: Some(vec!["true".into()]),
            timeout: Some(60),
            ..OrderSpec::default()
        };
        let plan = Plan {
            job: JobSpec {
                orders: vec![order.clone(), order],
                ..JobSpec::default()
            },
            behaviours: vec![Behaviour::Succeeds; 2],
            first_step_at_init: false,
        };
        let sim = Sim::build(world, plan);
        let options = ValidateOptions::local("sim");
        let init = sim.engine.init_job(&sim.plan.job, &options, Path::new("."));
        let run_id = init.await.unwrap().run_id;
        sim.world.armed.store(true, Ordering::SeqCst);
        (sim.world.scripted.lock().unwrap()).push(("run_orders", Fault::TransientBefore));
        let settled = sim
            .engine
            .cancel_run(&run_id, "cancelled: test")
            .await
            .unwrap();
        assert!(
            settled.iter().all(|o| o.status == OrderStatus::Cancelled),
            "{settled:?}"
        );
    });
}

fn simulate(seed: u64) -> Result<(usize, Counts), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sim = Sim::new(seed);
        let (actions, answers) = sim.play().await?;
        sim.check(&answers).await?;
        let counts = std::mem::take(&mut *sim.world.counts.lock().unwrap());
        Ok((actions, counts))
    })
}

#[test]
fn every_run_finishes_exactly_once_under_injected_faults() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let first = env("SLUICE_SIM_SEED");
    let jobs = env("SLUICE_SIM_JOBS").unwrap_or(if first.is_some() { 1 } else { DEFAULT_JOBS });
    let base = first.unwrap_or_else(|| fastrand::u64(..) >> 16);
    println!("simulation: {jobs} jobs from seed {base} (SLUICE_SIM_SEED=<seed> replays one)");
    let mut totals = Counts::default();
    let mut actions = 0;
    for seed in base..base + jobs {
        match simulate(seed) {
            Ok((taken, counts)) => {
                actions += taken;
                totals.calls += counts.calls;
                totals.transient += counts.transient;
                totals.crashes += counts.crashes;
                totals.refused_starts += counts.refused_starts;
                totals.lost_notifications += counts.lost_notifications;
                totals.duplicated_notifications += counts.duplicated_notifications;
                totals.concurrent_deliveries += counts.concurrent_deliveries;
                totals.fresh_deliveries += counts.fresh_deliveries;
                totals.duplicate_submissions += counts.duplicate_submissions;
                totals.kicks += counts.kicks;
                totals.locks_taken_with_writes += counts.locks_taken_with_writes;
                totals.locks_taken_by_fresh_engines += counts.locks_taken_by_fresh_engines;
            }
            Err(failure) => panic!("seed {seed}: {failure}\nreplay: SLUICE_SIM_SEED={seed}"),
        }
    }
    println!(
        "simulation: {jobs} jobs completed, {actions} actions; port calls {}, transient faults {}, \
         crashes {}, refused starts {}, lost notifications {}, duplicated {}, delivered two at \
         once {}, to an orchestrator new to the run {}, jobs submitted twice {}, watch kicks {}, \
         locks taken with a step's writes {} ({} by engines new to the run)",
        totals.calls,
        totals.transient,
        totals.crashes,
        totals.refused_starts,
        totals.lost_notifications,
        totals.duplicated_notifications,
        totals.concurrent_deliveries,
        totals.fresh_deliveries,
        totals.duplicate_submissions,
        totals.kicks,
        totals.locks_taken_with_writes,
        totals.locks_taken_by_fresh_engines
    );
    assert!(
        jobs < 100 || totals.locks_taken_with_writes > 0,
        "no step took the lock with its writes: that path went untested"
    );
    assert!(
        jobs < 100 || totals.locks_taken_by_fresh_engines > 0,
        "no fresh engine took the lock from a lone attempt's count: that path went untested"
    );
}
