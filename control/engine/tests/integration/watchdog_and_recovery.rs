//! The watchdog and the lock's crash recovery, with a clock the test moves by hand and
//! recording dispatch ports (the local stores are real).

use sluice_contract::AttemptId;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_contract::dispatch::{Claim, DispatchPayload};
use sluice_contract::job::OrderSpec;
use sluice_contract::job::Reference;
use sluice_contract::result::{DEPENDENCY_FAILED, JOB_TIMEOUT};
use sluice_contract::result::{WATCHDOG_LOG, parse_result};
use sluice_contract::{
    ExecutionTarget, JobSpec, OrderNum, OrderStatus, RunId, ValidateOptions, keys,
};
use sluice_engine::local::{DirStore, FileKeyStore, SecretsFile, SqliteStore};
use sluice_engine::orchestrator::Outcome;
use sluice_engine::ports::{
    AcquireOutcome, DispatchError, LockState, LockStatus, OrderEvent, OrderRecord, ReleaseOutcome,
    StepWrites,
};
use sluice_engine::{
    Clock, Dispatcher, Engine, EngineConfig, ObjectStore, Ports, StoreError, WatchdogInput,
    WatchdogStarter,
};

/// Time moved by hand; optionally also by `tick_ms` at each reading (time passing within
/// a step), and with the engine's waits recorded instead of waited (`sleeps`).
#[derive(Debug)]
struct ManualClock {
    now_ms: AtomicU64,
    tick_ms: AtomicU64,
    sleeps: Mutex<Option<Vec<Duration>>>,
}

#[async_trait]
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        let tick = self.tick_ms.load(Ordering::SeqCst);
        self.now_ms.fetch_add(tick, Ordering::SeqCst) + tick
    }

    async fn sleep(&self, duration: Duration) {
        if let Some(sleeps) = self.sleeps.lock().unwrap().as_mut() {
            sleeps.push(duration);
            return;
        }
        tokio::time::sleep(duration).await;
    }
}

impl ManualClock {
    fn at(now_ms: u64) -> Self {
        ManualClock {
            now_ms: AtomicU64::new(now_ms),
            tick_ms: AtomicU64::new(0),
            sleeps: Mutex::new(None),
        }
    }

    fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Recorder {
    dispatched: Mutex<Vec<DispatchPayload>>,
    watched: Mutex<Vec<WatchdogInput>>,
    /// How long a worker start takes (real time).
    start_delay: Mutex<Duration>,
    /// Orders whose worker starts fail transiently (throttled).
    throttled: Mutex<Vec<OrderNum>>,
    /// Orders whose worker starts are refused for good.
    refused: Mutex<Vec<OrderNum>>,
}

#[async_trait]
impl Dispatcher for Recorder {
    async fn start(
        &self,
        _: ExecutionTarget,
        _: Duration,
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError> {
        let delay = *self.start_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if self.throttled.lock().unwrap().contains(&payload.order_num) {
            return Err(DispatchError {
                kind: sluice_engine::ErrorKind::Transient,
                what: "lambda worker".to_owned(),
                run_id: payload.run_id.clone(),
                order_num: payload.order_num,
                message: "TooManyRequestsException".to_owned(),
            });
        }
        if self.refused.lock().unwrap().contains(&payload.order_num) {
            return Err(DispatchError {
                kind: sluice_engine::ErrorKind::Permanent,
                what: "lambda worker".to_owned(),
                run_id: payload.run_id.clone(),
                order_num: payload.order_num,
                message: "ResourceNotFoundException".to_owned(),
            });
        }
        self.dispatched.lock().unwrap().push(payload.clone());
        Ok(())
    }
}

#[async_trait]
impl WatchdogStarter for Recorder {
    async fn start(&self, input: &WatchdogInput) -> Result<(), DispatchError> {
        self.watched.lock().unwrap().push(input.clone());
        Ok(())
    }
}

struct Setup {
    engine: Engine,
    clock: Arc<ManualClock>,
    recorder: Arc<Recorder>,
    internal: Arc<DirStore>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(1_800_000_000_000));
    let recorder = Arc::new(Recorder::default());
    let internal = Arc::new(DirStore::open(&dir.path().join("internal"), "internal").unwrap());
    let ports = Ports {
        internal: internal.clone(),
        done: Arc::new(DirStore::open(&dir.path().join("done"), "done").unwrap()),
        orders: Arc::new(
            SqliteStore::open(
                &dir.path().join("db"),
                Duration::from_secs(60),
                Duration::from_secs(60),
            )
            .unwrap(),
        ),
        dispatcher: recorder.clone(),
        watchdog: recorder.clone(),
        keys: Arc::new(FileKeyStore::open(&dir.path().join("keys")).unwrap()),
        secrets: Arc::new(SecretsFile::none()),
        archives: None,
        vcs: None,
        clock: clock.clone(),
    };
    // Steps driven by hand, the first too (see `init_takes_the_runs_first_step`).
    let config = EngineConfig {
        watchdog_slack: Duration::from_secs(30),
        first_step_at_init: false,
        ..EngineConfig::default()
    };
    Setup {
        engine: Engine::new(ports, config),
        clock,
        recorder,
        internal,
        _dir: dir,
    }
}

/// The run's lock, if made.
async fn lock_of(setup: &Setup, run: &RunId) -> Option<LockState> {
    setup.engine.ports.orders.lock_state(run).await.unwrap()
}

/// The order's row.
async fn row_of(setup: &Setup, run: &RunId, order_num: OrderNum) -> sluice_engine::OrderRecord {
    setup
        .engine
        .ports
        .orders
        .get_order(run, order_num)
        .await
        .unwrap()
}

/// The result key of the order's current attempt.
async fn current_result_key(setup: &Setup, run: &RunId, order_num: OrderNum) -> String {
    let row = row_of(setup, run, order_num).await;
    keys::result(run, order_num, row.attempt.as_ref().unwrap())
}

/// Writes a succeeded result for the order's current attempt, as its worker would.
async fn report_success(setup: &Setup, run: &RunId, order_num: sluice_contract::OrderNum) {
    report(setup, run, order_num, OrderStatus::Succeeded).await;
}

/// A pass woken by the notification of the result of `order_num`'s current attempt.
async fn notified(setup: &Setup, run: &RunId, order_num: OrderNum) -> Outcome {
    let attempt = row_of(setup, run, order_num).await.attempt.unwrap();
    let pass = setup
        .engine
        .orchestrate_notified(run, [(order_num, attempt)].into());
    pass.await.unwrap()
}

/// Writes a result of `status` for the order's current attempt, as its worker would.
async fn report(setup: &Setup, run: &RunId, order_num: OrderNum, status: OrderStatus) {
    let doc = sluice_contract::result::ResultDoc::new(status, "reported");
    let key = current_result_key(setup, run, order_num).await;
    setup
        .internal
        .put(&key, serde_json::to_vec(&doc).unwrap())
        .await
        .unwrap();
}

/// Queues `job` as init_job does.
async fn queue(setup: &Setup, job: &JobSpec) -> RunId {
    setup
        .engine
        .init_job(job, &ValidateOptions::local("t"), std::path::Path::new("."))
        .await
        .unwrap()
        .run_id
}

async fn one_order_run(setup: &Setup, timeout: u64) -> RunId {
    let job = JobSpec {
        orders: vec![OrderSpec {
            cmds: Some(vec!["true".into()]),
            timeout: Some(timeout),
            ..OrderSpec::default()
        }],
        ..JobSpec::default()
    };
    queue(setup, &job).await
}

/// A run of independent `true` orders named `names`, each with a 60 s timeout.
async fn independent_orders_run(setup: &Setup, names: &[&str]) -> RunId {
    let order = |name: &&str| OrderSpec {
        order_name: Some((*name).to_owned()),
        cmds: Some(vec!["true".into()]),
        timeout: Some(60),
        ..OrderSpec::default()
    };
    let job = JobSpec {
        orders: names.iter().map(order).collect(),
        ..JobSpec::default()
    };
    queue(setup, &job).await
}

/// Claims the order's current attempt now, as its worker would before running it.
async fn claim_now(setup: &Setup, run: &RunId, order_num: OrderNum) {
    let attempt = row_of(setup, run, order_num).await.attempt.unwrap();
    let claim = Claim {
        attempt: attempt.clone(),
        claimed_at_ms: setup.clock.now_ms(),
        worker: "w1".to_owned(),
    };
    setup
        .internal
        .put(
            &keys::claim(run, order_num, &attempt),
            serde_json::to_vec(&claim).unwrap(),
        )
        .await
        .unwrap();
}

/// The run's watch, as init_job started it.
fn run_watch(setup: &Setup) -> WatchdogInput {
    let watched = setup.recorder.watched.lock().unwrap();
    watched
        .iter()
        .find(|w| w.order_num == OrderNum::INIT)
        .expect("init_job started the run's watch")
        .clone()
}

#[tokio::test]
async fn the_run_watch_runs_the_first_pass_when_the_trigger_is_lost() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    // init_job started the run's watch; the trigger's event never comes.
    let watch = run_watch(&setup);
    assert_eq!(
        (&watch.run_id, &watch.attempt),
        (&run, &AttemptId::run_watch())
    );
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(!verdict.done && !verdict.kick, "{verdict:?}");
    assert_eq!(verdict.wait_seconds, 60, "the start grace");

    setup.clock.advance(Duration::from_secs(61));
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(verdict.kick && !verdict.done, "{verdict:?}");
    // What the watchdog's handler does on a kick.
    assert_eq!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Released
    );
    assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), 1);
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(
        !verdict.done && !verdict.kick,
        "a running order needs no pass, but the watch lives until the run is finalized: {verdict:?}"
    );
}

/// Before, the watch ended once any order left `queued`: a pass that applied the last
/// result and then failed before finalize left the run without a done document for good.
#[tokio::test]
async fn the_run_watch_finalizes_a_run_whose_finalize_failed() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let num = OrderNum::from_index(0);
    // A pass applied the order's result, then died before finalize.
    let finished = sluice_engine::Transition {
        finished_at_ms: Some(setup.clock.now_ms()),
        ..sluice_engine::Transition::to(OrderStatus::Succeeded)
    };
    let orders = &setup.engine.ports.orders;
    orders
        .transition(&run, num, OrderStatus::Running, &finished)
        .await
        .unwrap();
    let watch = run_watch(&setup);
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(verdict.kick && !verdict.done, "{verdict:?}");
    assert_eq!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Finalized(sluice_contract::JobStatus::Succeeded)
    );
    assert!(setup.engine.watchdog_check(&watch).await.unwrap().done);
}

/// A result whose notification was lost while the order's own watchdog had already ended
/// is found by the run's watch.
#[tokio::test]
async fn the_run_watch_applies_a_result_nobody_announced() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let watch = run_watch(&setup);
    assert!(!setup.engine.watchdog_check(&watch).await.unwrap().kick);
    report_success(&setup, &run, OrderNum::from_index(0)).await;
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(verdict.kick, "{verdict:?}");
}

/// When init_job died after starting the watch and storing keys, but before the rows, the
/// watch deletes the keys once init cannot be running any more.
#[tokio::test]
async fn the_run_watch_of_a_run_never_queued_deletes_its_keys() {
    let setup = setup();
    let run = RunId::generate();
    let keys = &setup.engine.ports.keys;
    let path = keys
        .put_key(&run, OrderNum::from_index(0), "AGE-SECRET-KEY-1")
        .await
        .unwrap();
    let watch = WatchdogInput {
        run_id: run.clone(),
        order_num: OrderNum::INIT,
        attempt: AttemptId::run_watch(),
        timeout: 0,
        start_time: setup.clock.now_ms() / 1000,
        job_deadline: setup.clock.now_ms() / 1000 + 3600,
        internal_bucket: "internal".to_owned(),
        generation: 0,
        wait_seconds: None,
        wake_at_ms: None,
    };
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(
        !verdict.done && !verdict.kick,
        "init may still be running: {verdict:?}"
    );
    assert!(keys.get_key(&path).await.is_ok());
    setup.clock.advance(setup.engine.config.init_limit);
    assert!(setup.engine.watchdog_check(&watch).await.unwrap().done);
    assert!(keys.get_key(&path).await.unwrap_err().is_not_found());
    // Whoever was told the run id learns how it ended.
    let done = setup
        .engine
        .ports
        .done
        .get(&keys::done(&run))
        .await
        .unwrap();
    let done = sluice_contract::result::parse_done(&done).unwrap();
    assert_eq!(done.status, sluice_contract::JobStatus::Failed);
    assert_eq!(
        done.reason.as_deref(),
        Some(sluice_contract::result::INIT_FAILED)
    );
}

fn keyed_job(key: &str) -> JobSpec {
    JobSpec {
        idempotency_key: Some(key.to_owned()),
        orders: vec![OrderSpec {
            cmds: Some(vec!["true".into()]),
            timeout: Some(60),
            ..OrderSpec::default()
        }],
        ..JobSpec::default()
    }
}

/// A submission made again (a client retrying after API Gateway's 30 s cut, SNS delivering
/// twice, Lambda retrying an invocation) answers the run the first one created, once,
/// even when both arrive at the same moment; another key, or another user, is another run.
#[tokio::test]
async fn the_same_submission_made_again_is_the_same_run() {
    let setup = setup();
    let options = ValidateOptions::local("alice");
    let here = std::path::Path::new(".");
    let job = keyed_job("pr-42-build-7");
    let (first, second) = tokio::join!(
        setup.engine.init_job(&job, &options, here),
        setup.engine.init_job(&job, &options, here)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first, second);
    let third = setup.engine.init_job(&job, &options, here).await.unwrap();
    assert_eq!(third.run_id, first.run_id);
    // Answered before any of init's work: code that is gone by now is not even looked at.
    let mut moved = job.clone();
    moved.orders[0].code_dir = Some("gone/by/now".to_owned());
    let fourth = setup.engine.init_job(&moved, &options, here).await.unwrap();
    assert_eq!(fourth.run_id, first.run_id);
    let rows = setup
        .engine
        .ports
        .orders
        .run_orders(&first.run_id)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one run's rows");

    let other_key = setup
        .engine
        .init_job(&keyed_job("pr-42-build-8"), &options, here)
        .await
        .unwrap();
    let other_user = setup
        .engine
        .init_job(&job, &ValidateOptions::local("bob"), here)
        .await
        .unwrap();
    assert_ne!(other_key.run_id, first.run_id);
    assert_ne!(other_user.run_id, first.run_id);
}

#[tokio::test]
async fn an_expired_lease_lets_the_next_event_resume_the_run() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    let orders = &setup.engine.ports.orders;
    let now = setup.clock.now_ms();
    // An orchestrator took the lock and crashed.
    orders
        .acquire_lock(&run, "crashed", now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Deferred
    );
    assert!(setup.recorder.dispatched.lock().unwrap().is_empty());
    setup.clock.advance(Duration::from_secs(61));
    assert_eq!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Released
    );
    assert_eq!(
        setup.recorder.dispatched.lock().unwrap().len(),
        1,
        "the run resumed after the lease"
    );
}

/// The run's watch times out a worker that claimed its attempt and never reported, reading
/// the claim only once the attempt could be overdue. Before, every dispatched attempt had a
/// watch of its own (one Step Functions execution per order, checking every minute).
#[tokio::test]
async fn the_run_watch_times_out_a_claimed_order_that_never_reports() {
    let setup = setup();
    let run = one_order_run(&setup, 100).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let watched = setup.recorder.watched.lock().unwrap().clone();
    assert_eq!(
        watched.iter().map(|w| w.order_num).collect::<Vec<_>>(),
        vec![OrderNum::INIT],
        "one watch per run, none per attempt"
    );
    let watch = run_watch(&setup);
    let num = OrderNum::from_index(0);
    let attempt = row_of(&setup, &run, num).await.attempt.unwrap();

    // Not overdue before dispatch + timeout + slack, claimed or not: no reads of the claim.
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(!verdict.done && !verdict.kick, "{verdict:?}");
    assert_eq!(
        verdict.wait_seconds, 60,
        "a young run is checked every minute"
    );

    setup.clock.advance(Duration::from_secs(20));
    claim_now(&setup, &run, num).await;
    // Dispatched 20 s before the claim: due at dispatch + 130 s, then at claim + 130 s.
    setup.clock.advance(Duration::from_secs(110));
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(!verdict.kick, "the worker still has time: {verdict:?}");
    assert_eq!(verdict.wait_seconds, 20, "until the claim's deadline");

    setup.clock.advance(Duration::from_secs(20));
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(verdict.kick && !verdict.done, "{verdict:?}");
    let result = parse_result(
        &setup
            .internal
            .get(&keys::result(&run, num, &attempt))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(result.status, OrderStatus::TimedOut);
    assert_eq!(result.log, WATCHDOG_LOG);

    assert!(matches!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Finalized(_)
    ));
    assert_eq!(
        row_of(&setup, &run, num).await.status,
        OrderStatus::TimedOut
    );
    assert!(
        setup.engine.watchdog_check(&watch).await.unwrap().done,
        "a finalized run needs no watching"
    );
}

/// An order nobody claims (its worker never started) is bounded by the job's deadline.
#[tokio::test]
async fn the_run_watch_waits_for_an_unclaimed_order_until_the_jobs_deadline() {
    let setup = setup();
    let run = one_order_run(&setup, 100).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let watch = run_watch(&setup);
    let deadline_ms = row_of(&setup, &run, OrderNum::from_index(0))
        .await
        .job_deadline_ms;
    setup.clock.advance(Duration::from_secs(200));
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(
        !verdict.kick,
        "unclaimed, within the job's deadline: {verdict:?}"
    );
    setup
        .clock
        .advance(Duration::from_millis(deadline_ms - setup.clock.now_ms()));
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(verdict.kick, "{verdict:?}");
    assert!(matches!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Finalized(sluice_contract::JobStatus::TimedOut)
    ));
}

/// An old run is checked less often than a young one, never less than every ten minutes.
#[tokio::test]
async fn the_run_watch_checks_an_old_run_less_often() {
    let setup = setup();
    let run = one_order_run(&setup, 7200).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let watch = run_watch(&setup);
    let mut waits = Vec::new();
    for _ in 0..8 {
        let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
        assert!(!verdict.kick, "{verdict:?}");
        waits.push(verdict.wait_seconds);
        setup
            .clock
            .advance(Duration::from_secs(verdict.wait_seconds));
    }
    assert_eq!(waits, vec![60, 60, 120, 240, 480, 600, 600, 600]);
}

#[tokio::test]
async fn the_run_watch_kicks_a_run_whose_result_was_not_processed() {
    let setup = setup();
    let run = one_order_run(&setup, 100).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let watch = run_watch(&setup);
    // A result landed, but its event was lost: the order is still running.
    report_success(&setup, &run, OrderNum::from_index(0)).await;
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(verdict.kick && !verdict.done, "{verdict:?}");
    assert!(matches!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Finalized(_)
    ));
    assert!(setup.engine.watchdog_check(&watch).await.unwrap().done);
}

/// A run whose first order, `flaky` (up to `limit` retries 50–100 s apart), was started
/// with `then` and failed: the pass that applied its result queued it for its retry.
async fn first_attempt_failed(setup: &Setup, limit: u32, then: Vec<OrderSpec>) -> RunId {
    let mut flaky = true_order("flaky", &[]);
    flaky.retry = Some(sluice_contract::job::RetrySpec {
        limit,
        backoff: Some(100.0),
        ..Default::default()
    });
    let job = JobSpec {
        orders: [vec![flaky], then].concat(),
        ..JobSpec::default()
    };
    let run = queue(setup, &job).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let num = OrderNum::from_index(0);
    report(setup, &run, num, OrderStatus::Failed).await;
    notified(setup, &run, num).await;
    run
}

/// An order waiting for its retry, with a dependent waiting for it: the run's watch does
/// not take it for a stalled run (it kicked every 5 s for the whole backoff), checks again
/// at the retry's moment, and kicks then if nobody started it; the retry's timer the pass
/// started kicks at that moment and ends, and a pass before it dispatches nothing.
#[tokio::test]
async fn an_order_waiting_for_its_retry_is_woken_by_its_timer_not_before() {
    let setup = setup();
    let run = first_attempt_failed(&setup, 2, vec![true_order("after", &["flaky"])]).await;
    let num = OrderNum::from_index(0);
    let row = row_of(&setup, &run, num).await;
    let (ended, retry_at) = row.awaiting_retry().expect("queued for its retry");
    assert_eq!((ended.number, ended.status), (1, OrderStatus::Failed));
    let now = setup.clock.now_ms();
    assert!(
        (now + 50_000..=now + 100_000).contains(&retry_at),
        "{retry_at}"
    );
    // The pass started the retry's timer, for that moment.
    let timer = (setup.recorder.watched.lock().unwrap().iter())
        .find(|w| w.wake_at_ms.is_some())
        .cloned()
        .expect("a retry timer");
    assert_eq!((timer.order_num, timer.wake_at_ms), (num, Some(retry_at)));
    assert_eq!(timer.attempt.as_str(), "retry-2");
    // Well after the start grace: no stall, and the next check is at the retry's moment.
    setup.clock.advance(Duration::from_secs(40));
    let watch = run_watch(&setup);
    let verdict = setup.engine.watchdog_check(&watch).await.unwrap();
    assert!(!verdict.kick, "{verdict:?}");
    let next_check = setup.clock.now_ms() + verdict.wait_seconds * 1000;
    assert!(
        next_check >= retry_at && next_check < retry_at + 1000,
        "{verdict:?}"
    );
    // A pass before the moment starts nothing; the timer, early, waits for it.
    let dispatched = setup.recorder.dispatched.lock().unwrap().len();
    setup.engine.orchestrate(&run).await.unwrap();
    assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), dispatched);
    let early = setup.engine.watchdog_check(&timer).await.unwrap();
    assert!(!early.done && !early.kick, "{early:?}");
    // At the moment, the timer kicks and ends; so would the run's watch.
    setup
        .clock
        .advance(Duration::from_millis(retry_at - setup.clock.now_ms()));
    let due = setup.engine.watchdog_check(&timer).await.unwrap();
    assert!(due.done && due.kick, "{due:?}");
    assert!(setup.engine.watchdog_check(&watch).await.unwrap().kick);
    setup.engine.orchestrate(&run).await.unwrap();
    let retried = row_of(&setup, &run, num).await;
    assert_eq!(retried.status, OrderStatus::Running);
    assert!(retried.awaiting_retry().is_none());
    let payload = setup
        .recorder
        .dispatched
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(payload.attempt_number, 2);
    assert_eq!(payload.log_key.as_deref(), Some(retried.log_key.as_str()));
    assert!(
        retried.log_key.ends_with("/log-2.txt"),
        "{}",
        retried.log_key
    );
    // Its timer, checked again, ends without a kick: the order was started.
    assert_eq!(
        setup.engine.watchdog_check(&timer).await.unwrap(),
        sluice_engine::watchdog::WatchdogVerdict {
            done: true,
            wait_seconds: 0,
            kick: false
        }
    );
}

/// A retry's timer lost (its pass crashed after writing the retry, before starting it):
/// the next pass the run's watch kicks, or one taking over the lock, starts it again.
#[tokio::test]
async fn a_lost_retry_timer_is_started_again_by_the_next_kicked_pass() {
    let setup = setup();
    let run = first_attempt_failed(&setup, 1, Vec::new()).await;
    let timers = |setup: &Setup| {
        let watched = setup.recorder.watched.lock().unwrap();
        watched.iter().filter(|w| w.wake_at_ms.is_some()).count()
    };
    assert_eq!(timers(&setup), 1);
    setup
        .recorder
        .watched
        .lock()
        .unwrap()
        .retain(|w| w.wake_at_ms.is_none());
    // The pass the watch kicks starts it again.
    setup.engine.orchestrate(&run).await.unwrap();
    assert_eq!(timers(&setup), 1);
    let timer = (setup.recorder.watched.lock().unwrap().iter())
        .find(|w| w.wake_at_ms.is_some())
        .cloned()
        .unwrap();
    assert_eq!(timer.attempt.as_str(), "retry-2");
}

/// A watch per attempt started by an older version ends at its first check.
#[tokio::test]
async fn a_retired_watch_per_attempt_ends_at_once() {
    let setup = setup();
    let run = one_order_run(&setup, 100).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let num = OrderNum::from_index(0);
    let old = WatchdogInput {
        order_num: num,
        attempt: row_of(&setup, &run, num).await.attempt.unwrap(),
        ..run_watch(&setup)
    };
    assert!(setup.engine.watchdog_check(&old).await.unwrap().done);
}

/// A worker of another attempt (one a resume replaced, or a forged PUT to its URL) cannot
/// decide the order: its result lies under its own attempt's key, which neither the
/// orchestrator nor the run's watch reads. Before, an order had one result key, whatever
/// was written there last was applied, and the result's attempt was never compared.
#[tokio::test]
async fn a_result_of_another_attempt_is_ignored() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let num = OrderNum::from_index(0);
    let mut stale = sluice_contract::result::ResultDoc::new(OrderStatus::Failed, "stale");
    stale.attempt = AttemptId::parse("an-earlier-attempt");
    setup
        .internal
        .put(
            &keys::result(&run, num, &AttemptId::parse("an-earlier-attempt").unwrap()),
            serde_json::to_vec(&stale).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Released
    );
    assert_eq!(row_of(&setup, &run, num).await.status, OrderStatus::Running);
    let verdict = setup
        .engine
        .watchdog_check(&run_watch(&setup))
        .await
        .unwrap();
    assert!(!verdict.kick, "nothing waits to be applied: {verdict:?}");

    report_success(&setup, &run, num).await;
    assert_eq!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Finalized(sluice_contract::JobStatus::Succeeded)
    );
}

#[tokio::test]
async fn every_dispatch_carries_the_attempts_own_urls_and_the_orders_identity() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let payload = setup.recorder.dispatched.lock().unwrap()[0].clone();
    let (num, attempt) = (payload.order_num, &payload.attempt);
    let key_of = |url: &sluice_contract::dispatch::Capability| {
        setup.internal.key_for_url(url.expose()).unwrap()
    };
    assert_eq!(key_of(&payload.bundle_url), keys::exec_zip(&run, num));
    assert_eq!(key_of(&payload.claim_url), keys::claim(&run, num, attempt));
    assert_eq!(
        key_of(&payload.claim_check_url),
        keys::claim(&run, num, attempt)
    );
    assert_eq!(key_of(&payload.log_url), keys::log(&run, num));
    assert_eq!(
        key_of(&payload.callback_url),
        keys::result(&run, num, attempt),
        "minted at dispatch for the attempt's own key"
    );
    let row = setup
        .engine
        .ports
        .orders
        .get_order(&run, num)
        .await
        .unwrap();
    let stored = setup
        .engine
        .ports
        .keys
        .get_key(&row.key_path)
        .await
        .unwrap();
    assert_eq!(
        payload.identity.expose(),
        sluice_engine::run_key::order_identity(&stored, &run, num).unwrap(),
        "the order's own identity"
    );
    assert!(
        !stored.contains(payload.identity.expose()) && !payload.identity.expose().contains(&stored),
        "the worker gets its order's key, never the run's it is derived from"
    );
    assert!(payload.identity.expose().starts_with("AGE-SECRET-KEY-1"));
}

#[tokio::test]
async fn a_result_for_an_order_left_dispatching_is_applied() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    let num = sluice_contract::OrderNum::from_index(0);
    // An orchestrator claimed the order, started its worker and crashed before `running`.
    let dispatching = sluice_engine::Transition {
        attempt: AttemptId::parse("a1"),
        dispatched_at_ms: Some(setup.clock.now_ms()),
        ..sluice_engine::Transition::to(OrderStatus::Dispatching)
    };
    setup
        .engine
        .ports
        .orders
        .transition(&run, num, OrderStatus::Queued, &dispatching)
        .await
        .unwrap();
    report_success(&setup, &run, num).await;
    let outcome = setup.engine.orchestrate(&run).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Finalized(sluice_contract::JobStatus::Succeeded)
    );
    assert!(
        setup.recorder.dispatched.lock().unwrap().is_empty(),
        "nothing is started twice"
    );
}

/// init_job records the job-level `started` event once (an item of the original
/// specification's test list that had no test).
#[tokio::test]
async fn init_records_the_jobs_started_event() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    let orders = &setup.engine.ports.orders;
    let rows = orders.run_orders(&run).await.unwrap();
    let events = orders.trace_events(&rows[0].trace_id).await.unwrap();
    let started: Vec<_> = events
        .iter()
        .filter(|e| e.order_name == sluice_engine::OrderEvent::JOB && e.event == "started")
        .collect();
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(started[0].run_id, run);
    assert_eq!(started[0].detail["orders"], 1);
}

/// A result of any size (whoever holds the callback URL may PUT gigabytes) is read only as
/// far as a result can go, and fails its order as malformed. Before, the whole object was
/// loaded first: a 64 GiB result (a sparse file here) could not be, and every pass failed.
#[tokio::test]
async fn an_oversized_result_fails_its_order_without_being_loaded() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let num = OrderNum::from_index(0);
    let key = current_result_key(&setup, &run, num).await;
    let path = setup.internal.path_of(&key).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(64 << 30).unwrap();
    let outcome = setup.engine.orchestrate(&run).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Finalized(sluice_contract::JobStatus::Failed)
    );
    let row = setup
        .engine
        .ports
        .orders
        .get_order(&run, num)
        .await
        .unwrap();
    assert_eq!(
        (row.status, row.reason.as_deref()),
        (OrderStatus::Failed, Some("malformed_result"))
    );
}

/// A pass that takes longer than the lock's lease keeps it: another invocation cannot take
/// the lock while it works. Before, the lease was renewed only between loops, so a long
/// pass (a 2000-result fan-in) lost it midway and two invocations worked the run at once.
#[tokio::test]
async fn a_pass_longer_than_the_lease_keeps_the_lock() {
    let mut setup = setup();
    setup.engine.config.lock_lease = Duration::from_millis(300);
    let run = one_order_run(&setup, 60).await;
    *setup.recorder.start_delay.lock().unwrap() = Duration::from_millis(1000);
    let intruder = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        setup.clock.advance(Duration::from_millis(400));
        // Past the lease the pass took; renewals (every 100 ms) extend it from now on.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = setup.clock.now_ms();
        setup
            .engine
            .ports
            .orders
            .acquire_lock(&run, "intruder", now, now + 300)
            .await
            .unwrap()
    };
    let (outcome, intruded) = tokio::join!(setup.engine.orchestrate(&run), intruder);
    assert_eq!(
        intruded,
        sluice_engine::ports::AcquireOutcome::Marked,
        "the working pass still held the lock"
    );
    assert_eq!(outcome.unwrap(), Outcome::Released);
    assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), 1);
}

/// A pass that takes the lock over from a holder whose lease ended reads every result that
/// arrived, not only the one its notification names: the mark the holder left unread stood
/// for a result nobody has read. Before, the pass read the named result only and released
/// the lock clean, and the other waited for the run's watch.
#[tokio::test]
async fn a_pass_taking_over_a_dead_holders_lock_reads_every_result() {
    let setup = setup();
    let run = independent_orders_run(&setup, &["a", "b"]).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let (a, b) = (OrderNum::from_index(0), OrderNum::from_index(1));

    // A pass takes the lock and dies; a's result arrives meanwhile and is counted on it.
    let orders = &setup.engine.ports.orders;
    let now = setup.clock.now_ms();
    orders
        .acquire_lock(&run, "dead", now, now + 60_000)
        .await
        .unwrap();
    report_success(&setup, &run, a).await;
    assert_eq!(
        orders
            .acquire_lock(&run, "a's pass", now, now + 60_000)
            .await
            .unwrap(),
        sluice_engine::ports::AcquireOutcome::Marked
    );

    // Past the dead pass's lease, b's result comes with its notification.
    setup.clock.advance(Duration::from_secs(61));
    report_success(&setup, &run, b).await;
    let b_attempt = row_of(&setup, &run, b).await.attempt.unwrap();
    let arrived = [(b, b_attempt)].into();
    assert_eq!(
        setup
            .engine
            .orchestrate_notified(&run, arrived)
            .await
            .unwrap(),
        Outcome::Finalized(sluice_contract::JobStatus::Succeeded)
    );
    assert_eq!(row_of(&setup, &run, a).await.status, OrderStatus::Succeeded);
}

/// A start that keeps being interrupted does not keep the watch from timing out another
/// order's dead worker. Before, the watch kicked for the interrupted start and returned
/// before looking at overdue workers, check after check.
#[tokio::test]
async fn an_interrupted_start_does_not_hide_a_dead_worker() {
    let setup = setup();
    let run = independent_orders_run(&setup, &["dead", "stuck"]).await;
    let (dead, stuck) = (OrderNum::from_index(0), OrderNum::from_index(1));
    // `stuck`'s worker cannot be started for now (throttled): it stays `dispatching`.
    setup.recorder.throttled.lock().unwrap().push(stuck);
    setup.engine.orchestrate(&run).await.unwrap();
    assert_eq!(
        row_of(&setup, &run, stuck).await.status,
        OrderStatus::Dispatching
    );
    // `dead`'s worker claims its attempt, then dies.
    claim_now(&setup, &run, dead).await;
    setup.clock.advance(Duration::from_secs(60 + 30 + 121));
    let verdict = setup
        .engine
        .watchdog_check(&run_watch(&setup))
        .await
        .unwrap();
    assert!(verdict.kick, "{verdict:?}");
    let key = current_result_key(&setup, &run, dead).await;
    let result = parse_result(&setup.internal.get(&key).await.unwrap()).unwrap();
    assert_eq!(result.status, OrderStatus::TimedOut);
}

/// A `true` order named `name` waiting for `deps`, with a 60 s timeout.
fn true_order(name: &str, deps: &[&str]) -> OrderSpec {
    OrderSpec {
        order_name: Some(name.to_owned()),
        cmds: Some(vec!["true".into()]),
        timeout: Some(60),
        dependencies: deps.iter().map(|d| Reference((*d).to_owned())).collect(),
        ..OrderSpec::default()
    }
}

/// A chain of `true` orders named `names`, each waiting for the one before.
fn chain_of(names: &[&str]) -> JobSpec {
    let orders = (names.iter().enumerate())
        .map(|(i, name)| true_order(name, &names[i.saturating_sub(1)..i]))
        .collect();
    JobSpec {
        orders,
        ..JobSpec::default()
    }
}

/// Roots a and b, and c after a.
fn two_roots_and_one_after() -> JobSpec {
    JobSpec {
        orders: vec![
            true_order("a", &[]),
            true_order("b", &[]),
            true_order("c", &["a"]),
        ],
        ..JobSpec::default()
    }
}

/// `job` queued, and its first step taken by a pass: the run.
async fn started(setup: &Setup, job: &JobSpec) -> RunId {
    let run = queue(setup, job).await;
    assert_eq!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Released
    );
    run
}

/// `setup`'s engine, init_job taking runs' first steps (as by default).
fn taking_first_steps_at_init(setup: &mut Setup) {
    let mut config = setup.engine.config.clone();
    config.first_step_at_init = true;
    setup.engine = Engine::new(setup.engine.ports.clone(), config);
}

/// The tables, with someone else acting just before one of a pass's writes: a status
/// change (a pass whose lease ran out, a cancel) before the next write of several orders
/// together — the race between a pass reading a result and writing it — or a wake-up
/// counted on the lock (another result's notification) before the lock's next release or
/// renewal. Counts the releases the pass attempts, its reads of a run's rows, its
/// acquires of the lock and its writes of events.
struct Interloper {
    inner: Arc<dyn sluice_engine::OrderStore>,
    first: Mutex<Option<(RunId, OrderNum, OrderStatus, sluice_engine::Transition)>>,
    wake_before_release: AtomicBool,
    /// What someone else does just before the lock's next renewal (once).
    before_renewal: Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
    /// The next step's first write (with the moves, or taking the lock) is applied, and
    /// its answer lost (once).
    lose_first_answer: AtomicBool,
    /// The next taking of the lock with a step's writes fails transiently, not applied
    /// (once).
    fail_next_take: AtomicBool,
    /// The next read of a run's rows shows this order in this status, as a read made
    /// before someone moved it would (once).
    stale_read: Mutex<Option<(OrderNum, OrderStatus)>>,
    releases: AtomicU64,
    row_reads: AtomicU64,
    /// Writes of rows alone ([`sluice_engine::OrderStore::insert_orders`]).
    row_inserts: AtomicU64,
    acquires: AtomicU64,
    event_writes: AtomicU64,
}

impl std::fmt::Debug for Interloper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interloper").finish_non_exhaustive()
    }
}

impl Interloper {
    fn over(inner: Arc<dyn sluice_engine::OrderStore>) -> Self {
        Interloper {
            inner,
            first: Mutex::default(),
            wake_before_release: AtomicBool::default(),
            before_renewal: Mutex::default(),
            lose_first_answer: AtomicBool::default(),
            fail_next_take: AtomicBool::default(),
            stale_read: Mutex::default(),
            releases: AtomicU64::default(),
            row_reads: AtomicU64::default(),
            row_inserts: AtomicU64::default(),
            acquires: AtomicU64::default(),
            event_writes: AtomicU64::default(),
        }
    }

    /// Its reads of a run's rows and its acquires of the lock so far.
    fn reads_and_acquires(&self) -> (u64, u64) {
        let reads = self.row_reads.load(Ordering::SeqCst);
        (reads, self.acquires.load(Ordering::SeqCst))
    }

    fn inner(&self) -> &dyn sluice_engine::OrderStore {
        self.inner.as_ref()
    }

    /// Makes the move set to go first, once, before the step's first write together.
    async fn move_first(&self) -> Result<(), StoreError> {
        let first = self.first.lock().unwrap().take();
        if let Some((run, num, from, change)) = first {
            self.inner().transition(&run, num, from, &change).await?;
        }
        Ok(())
    }

    /// `written`, whose answer is lost when [`Interloper::lose_first_answer`] is armed.
    fn answer<T>(&self, written: Result<T, StoreError>) -> Result<T, StoreError> {
        if written.is_ok() && self.lose_first_answer.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                what: "a step's first write".to_owned(),
                message: "its answer was lost".to_owned(),
            });
        }
        written
    }

    /// Counts a wake-up on the run's lock, as another result's notification does while a
    /// pass holds it, when `armed` (once).
    async fn wake_if(&self, armed: &AtomicBool, run_id: &RunId) {
        if armed.swap(false, Ordering::SeqCst) {
            notify(self.inner.clone(), run_id.clone()).await;
        }
    }
}

/// Counts a wake-up on the run's held lock, as a result's notification does.
async fn notify(orders: Arc<dyn sluice_engine::OrderStore>, run_id: RunId) {
    let woke = orders.acquire_lock(&run_id, "notification", 0, 0).await;
    assert_eq!(woke.unwrap(), AcquireOutcome::Marked);
}

#[async_trait]
impl sluice_engine::OrderStore for Interloper {
    async fn insert_orders(
        &self,
        orders: &[OrderRecord],
        events: &[OrderEvent],
    ) -> Result<(), StoreError> {
        self.row_inserts.fetch_add(1, Ordering::SeqCst);
        self.inner().insert_orders(orders, events).await
    }
    async fn run_orders(&self, run_id: &RunId) -> Result<Vec<OrderRecord>, StoreError> {
        self.row_reads.fetch_add(1, Ordering::SeqCst);
        let mut rows = self.inner().run_orders(run_id).await?;
        if let Some((num, status)) = self.stale_read.lock().unwrap().take() {
            (rows.iter_mut())
                .filter(|row| row.plan.order_num == num)
                .for_each(|row| row.status = status);
        }
        Ok(rows)
    }
    async fn get_order(&self, run_id: &RunId, num: OrderNum) -> Result<OrderRecord, StoreError> {
        self.inner().get_order(run_id, num).await
    }
    async fn transition(
        &self,
        run_id: &RunId,
        num: OrderNum,
        from: OrderStatus,
        change: &sluice_engine::Transition,
    ) -> Result<OrderRecord, StoreError> {
        self.inner().transition(run_id, num, from, change).await
    }
    async fn transition_together(
        &self,
        run_id: &RunId,
        writes: &StepWrites,
    ) -> Result<(), StoreError> {
        self.move_first().await?;
        self.answer(self.inner().transition_together(run_id, writes).await)
    }
    async fn take_lock_with(
        &self,
        run_id: &RunId,
        owner: &str,
        released_marks: u64,
        lease_until_ms: u64,
        writes: &StepWrites,
    ) -> Result<u64, StoreError> {
        self.move_first().await?;
        if self.fail_next_take.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                what: format!("lock:{run_id}"),
                message: "the take failed before it took effect".to_owned(),
            });
        }
        let taken = (self.inner())
            .take_lock_with(run_id, owner, released_marks, lease_until_ms, writes)
            .await;
        self.answer(taken)
    }
    async fn put_events(&self, events: &[OrderEvent]) -> Result<(), StoreError> {
        self.event_writes.fetch_add(1, Ordering::SeqCst);
        self.inner().put_events(events).await
    }
    async fn trace_events(
        &self,
        trace_id: &sluice_contract::TraceId,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        self.inner().trace_events(trace_id).await
    }
    async fn acquire_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<AcquireOutcome, StoreError> {
        self.acquires.fetch_add(1, Ordering::SeqCst);
        self.inner()
            .acquire_lock(run_id, owner, now_ms, lease_until_ms)
            .await
    }
    async fn renew_lock(&self, run_id: &RunId, owner: &str, until: u64) -> Result<u64, StoreError> {
        let before = self.before_renewal.lock().unwrap().take();
        if let Some(before) = before {
            before.await;
        }
        self.inner().renew_lock(run_id, owner, until).await
    }
    async fn release_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        seen_marks: u64,
        writes: &StepWrites,
    ) -> Result<ReleaseOutcome, StoreError> {
        self.wake_if(&self.wake_before_release, run_id).await;
        self.releases.fetch_add(1, Ordering::SeqCst);
        self.inner()
            .release_lock(run_id, owner, seen_marks, writes)
            .await
    }
    async fn complete_lock(&self, run_id: &RunId, owner: &str) -> Result<(), StoreError> {
        self.inner().complete_lock(run_id, owner).await
    }
    async fn lock_state(&self, run_id: &RunId) -> Result<Option<LockState>, StoreError> {
        self.inner().lock_state(run_id).await
    }
}

/// A pass writes a result together with the moves it leads to. When the order was moved
/// by someone else between the read and the write, the result does not stand, and neither
/// may what it led to: its dependent is not started but fails by dependency. (Here it is
/// timed out by the job's deadline, as a pass whose lease ran out, still finishing, might
/// have done.) With the result written together with the claim and no evaluation after a
/// result found moved, the dependent was claimed and started.
#[tokio::test]
async fn a_result_that_lost_to_a_time_out_starts_none_of_its_dependents() {
    let mut setup = setup();
    let run = started(&setup, &chain_of(&["a", "b"])).await;
    let (a, b) = (OrderNum::from_index(0), OrderNum::from_index(1));
    assert_eq!(row_of(&setup, &run, a).await.status, OrderStatus::Running);
    report_success(&setup, &run, a).await;

    let timed_out = sluice_engine::Transition {
        finished_at_ms: Some(setup.clock.now_ms()),
        ..sluice_engine::Transition::to(OrderStatus::TimedOut).reason(JOB_TIMEOUT)
    };
    let mut ports = setup.engine.ports.clone();
    let interloper = Interloper::over(ports.orders.clone());
    *interloper.first.lock().unwrap() = Some((run.clone(), a, OrderStatus::Running, timed_out));
    ports.orders = Arc::new(interloper);
    setup.engine = Engine::new(ports, setup.engine.config.clone());
    let outcome = setup.engine.orchestrate(&run).await.unwrap();

    assert_eq!(
        outcome,
        Outcome::Finalized(sluice_contract::JobStatus::TimedOut)
    );
    assert_eq!(row_of(&setup, &run, a).await.status, OrderStatus::TimedOut);
    let dependent = row_of(&setup, &run, b).await;
    assert_eq!(
        (dependent.status, dependent.reason.as_deref()),
        (OrderStatus::Failed, Some(DEPENDENCY_FAILED))
    );
    let started: Vec<OrderNum> = (setup.recorder.dispatched.lock().unwrap().iter())
        .map(|payload| payload.order_num)
        .collect();
    assert_eq!(started, [a], "only a was ever started");
}

/// A warm orchestrator's next hop of a chain, woken by the result of the one order in
/// flight, plans from the rows its last release left and takes the lock with its first
/// write: it neither reads the run's rows nor acquires the lock (on AWS, a Query and an
/// update less per order). Before, every hop read the rows again.
#[tokio::test]
async fn a_warm_chain_hop_reads_no_rows_and_takes_the_lock_with_its_writes() {
    let mut setup = setup();
    let interloper = seen_through_an_interloper(&mut setup);
    let run = started(&setup, &chain_of(&["a", "b", "c"])).await;
    for (index, last) in [(0, false), (1, false), (2, true)] {
        let done = OrderNum::from_index(index);
        report_success(&setup, &run, done).await;
        let before = interloper.reads_and_acquires();
        let outcome = notified(&setup, &run, done).await;
        let after = interloper.reads_and_acquires();
        let (reads, acquires) = (after.0 - before.0, after.1 - before.1);
        if last {
            assert_eq!(
                outcome,
                Outcome::Finalized(sluice_contract::JobStatus::Succeeded)
            );
        } else {
            assert_eq!(outcome, Outcome::Released);
            let next = row_of(&setup, &run, OrderNum::from_index(index + 1)).await;
            assert_eq!(next.status, OrderStatus::Running);
        }
        assert_eq!(
            (reads, acquires),
            (0, 0),
            "hop {index}: the rows and the lock as the last release left them"
        );
    }
}

/// An orchestrator that has not seen the run (on AWS, the next hop of a chain often lands
/// on another Lambda instance than the one that released the lock; the hop after init-job's
/// first step always does) learns the lock's count from the result's attempt, which the
/// step that left the order alone in flight named after it: it reads the rows, sees that
/// order running with that attempt, and takes the lock with its first write instead of
/// acquiring it (an update less per such hop). Before, it acquired the lock first.
#[tokio::test]
async fn a_cold_chain_hop_takes_the_lock_with_its_writes() {
    for first_step_at_init in [false, true] {
        let mut setup = setup();
        let job = chain_of(&["a", "b", "c"]);
        let run = if first_step_at_init {
            taking_first_steps_at_init(&mut setup);
            queue(&setup, &job).await
        } else {
            started(&setup, &job).await
        };
        cold_hops(&mut setup, &run).await;
    }
}

/// Plays the first two hops of `run`, a chain a → b → c whose a was started, each on a
/// fresh orchestrator: each reads the rows and takes the lock with its writes.
async fn cold_hops(setup: &mut Setup, run: &RunId) {
    for index in [0, 1] {
        // A fresh orchestrator, remembering nothing, for each hop.
        let interloper = seen_through_an_interloper(setup);
        let done = OrderNum::from_index(index);
        report_success(setup, run, done).await;
        let outcome = notified(setup, run, done).await;
        assert_eq!(outcome, Outcome::Released, "hop {index}");
        let next = row_of(setup, run, OrderNum::from_index(index + 1)).await;
        assert_eq!(next.status, OrderStatus::Running, "hop {index}");
        let counts = interloper.reads_and_acquires();
        assert_eq!(counts, (1, 0), "hop {index}: the rows read, the lock taken");
    }
    assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), 3);

    // b's notification delivered again, to yet another: it finds b ended, takes nothing,
    // and starts nothing again.
    seen_through_an_interloper(setup);
    let again = notified(setup, run, OrderNum::from_index(1)).await;
    assert_eq!(again, Outcome::Released);
    assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), 3);
}

/// A lone attempt's count is stale when the step that started it looped (a wake-up came
/// before its release, which then came with a higher count): the cold hop's take is
/// refused by its condition, and it acquires the lock and reads the rows again.
#[tokio::test]
async fn a_cold_hop_whose_count_went_stale_acquires_and_reads_again() {
    let mut setup = setup();
    let interloper = seen_through_an_interloper(&mut setup);
    interloper.wake_before_release.store(true, Ordering::SeqCst);
    let run = started(&setup, &chain_of(&["a", "b"])).await;
    assert_eq!(lock_of(&setup, &run).await.unwrap().marks, 2, "looped once");
    let interloper = seen_through_an_interloper(&mut setup);
    let a = OrderNum::from_index(0);
    report_success(&setup, &run, a).await;
    assert_eq!(notified(&setup, &run, a).await, Outcome::Released);
    let counts = interloper.reads_and_acquires();
    assert_eq!(counts, (2, 1), "refused, acquired, the rows read again");
    let b = row_of(&setup, &run, OrderNum::from_index(1)).await;
    assert_eq!(b.status, OrderStatus::Running);
    assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), 2);
}

/// The rows a cold hop reads may come from before the release whose count the attempt
/// names — the result landed while the step that started its order still held the lock,
/// the order still `dispatching` in them — and a take planned from them would write over
/// what that release wrote: the hop does not take the lock from them, acquires it as
/// usual, and reads the rows again rather than plan from those.
#[tokio::test]
async fn a_cold_hop_that_read_the_rows_before_the_release_reads_them_again() {
    let mut setup = setup();
    let run = started(&setup, &chain_of(&["a", "b"])).await;
    let interloper = seen_through_an_interloper(&mut setup);
    let a = OrderNum::from_index(0);
    report_success(&setup, &run, a).await;
    *interloper.stale_read.lock().unwrap() = Some((a, OrderStatus::Dispatching));
    assert_eq!(notified(&setup, &run, a).await, Outcome::Released);
    let counts = interloper.reads_and_acquires();
    assert_eq!(counts, (2, 1), "acquired, and the rows read again");
    let (a, b) = (
        row_of(&setup, &run, a).await,
        row_of(&setup, &run, OrderNum::from_index(1)).await,
    );
    assert_eq!(
        (a.status, b.status),
        (OrderStatus::Succeeded, OrderStatus::Running)
    );
    assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), 2);
}

/// The step that ends a run writes the run's last events — its result's, the orders a
/// failure ended, the job's `completed` — with its moves, whether it takes the lock with
/// them (a warm hop) or acquired it first: finalize has none left to write apart before the
/// done document (on AWS, a call less per run), and `completed` once (the simulation
/// checks that a finalize made again after a crash writes the same `completed`, not a
/// second). Before, finalize wrote them in a batch of their own.
#[tokio::test]
async fn the_step_that_ends_a_run_writes_its_last_events_with_its_moves() {
    for warm in [true, false] {
        let (mut setup, run, interloper) = two_steps_before_the_end().await;
        let b = OrderNum::from_index(1);
        report(&setup, &run, b, OrderStatus::Failed).await;
        let before = interloper.event_writes.load(Ordering::SeqCst);
        assert_eq!(
            last_step(&mut setup, &run, b, warm).await,
            Outcome::Finalized(sluice_contract::JobStatus::Failed)
        );
        assert_eq!(
            interloper.event_writes.load(Ordering::SeqCst) - before,
            0,
            "warm {warm}: no events written apart"
        );
        assert_each_end_recorded_once(&interloper, &setup, &run).await;
    }
}

/// When the answer of the write that ended the run is lost, the step writes its moves
/// apart (each found made already) and records the events again: the same items, not a
/// second of any. And when the run's last events are too many to go with the moves, they
/// are written apart, once.
#[tokio::test]
async fn a_run_ends_with_each_event_once_when_its_last_write_is_lost_or_too_large() {
    for (warm, lose, emitted) in [(true, true, 0), (false, true, 0), (true, false, 150)] {
        let (mut setup, run, interloper) = two_steps_before_the_end().await;
        let b = OrderNum::from_index(1);
        interloper.lose_first_answer.store(lose, Ordering::SeqCst);
        // Time passes between the write and its making again apart.
        setup.clock.tick_ms.store(1, Ordering::SeqCst);
        let mut doc = sluice_contract::result::ResultDoc::new(OrderStatus::Failed, "reported");
        doc.events = (0..emitted)
            .map(|i| sluice_contract::events::OrderEmitted {
                kind: "progress".to_owned(),
                message: Some(format!("step {i}")),
                at_ms: Some(1_000 + i),
                data: None,
            })
            .collect();
        let key = current_result_key(&setup, &run, b).await;
        setup
            .internal
            .put(&key, serde_json::to_vec(&doc).unwrap())
            .await
            .unwrap();
        assert_eq!(
            last_step(&mut setup, &run, b, warm).await,
            Outcome::Finalized(sluice_contract::JobStatus::Failed)
        );
        assert_each_end_recorded_once(&interloper, &setup, &run).await;
        if emitted > 0 {
            let trace = row_of(&setup, &run, b).await.trace_id;
            let events = interloper.inner().trace_events(&trace).await.unwrap();
            let progress = events.iter().filter(|e| e.event == "emitted:progress");
            assert_eq!(progress.count() as u64, emitted);
            assert_eq!(interloper.event_writes.load(Ordering::SeqCst), 1, "apart");
        }
    }
}

/// A chain a → b → c → d, a succeeded and b started (its result not written yet), the
/// tables seen through an [`Interloper`] from the start.
async fn two_steps_before_the_end() -> (Setup, RunId, Arc<Interloper>) {
    let mut setup = setup();
    let interloper = seen_through_an_interloper(&mut setup);
    let run = started(&setup, &chain_of(&["a", "b", "c", "d"])).await;
    let a = OrderNum::from_index(0);
    report_success(&setup, &run, a).await;
    assert_eq!(notified(&setup, &run, a).await, Outcome::Released);
    (setup, run, interloper)
}

/// The step that applies `b`'s result: woken by its notification (`warm`: the lock taken
/// with its writes), or by a pass that acquires the lock and lists.
async fn last_step(setup: &mut Setup, run: &RunId, b: OrderNum, warm: bool) -> Outcome {
    if warm {
        notified(setup, run, b).await
    } else {
        setup.engine.orchestrate(run).await.unwrap()
    }
}

/// b failed, c and d by dependency, each recorded once, and the job's `completed` once.
async fn assert_each_end_recorded_once(interloper: &Interloper, setup: &Setup, run: &RunId) {
    let trace = row_of(setup, run, OrderNum::from_index(0)).await.trace_id;
    let events = interloper.inner().trace_events(&trace).await.unwrap();
    let named = |order: &str, event: &str| {
        (events.iter())
            .filter(|e| e.order_name == order && e.event == event)
            .count()
    };
    assert_eq!(
        (
            named("b", "failed"),
            named("c", "failed"),
            named("d", "failed")
        ),
        (1, 1, 1),
        "{events:#?}"
    );
    assert_eq!(named(OrderEvent::JOB, "completed"), 1);
}

/// init_job takes the run's first step itself, from the rows it is writing: the first
/// orders are started by the time it answers, without the init trigger, a read of the rows
/// or an acquire of the lock (on AWS: the trigger's PUT, the Query and the run key's read
/// less per run), and the rows are written with the first claims and the lock's making, in
/// one write, up to 98 orders (before, the rows were inserted apart: a write more per run).
/// Beyond, the rows are inserted alone and the step takes the lock with its claims, up to
/// 99 roots; a first step that does not fit one write (100 roots and the lock's item) is
/// left to the trigger.
#[tokio::test]
async fn init_takes_the_runs_first_step() {
    // Roots (and one order after the first), inserts apart, whether the trigger is left.
    for (roots, inserts, trigger) in [
        (2, 0, false),
        (97, 0, false),
        (98, 1, false),
        (100, 1, true),
    ] {
        let mut setup = setup();
        taking_first_steps_at_init(&mut setup);
        let interloper = seen_through_an_interloper(&mut setup);
        let mut orders: Vec<OrderSpec> = (0..roots)
            .map(|i| true_order(&format!("r{i}"), &[]))
            .collect();
        orders.push(true_order("after", &["r0"]));
        let job = JobSpec {
            orders,
            ..JobSpec::default()
        };
        let run = queue(&setup, &job).await;
        let case = format!("{roots} roots");
        let left = setup.internal.get(&keys::trigger(&run)).await.is_ok();
        let started = setup.recorder.dispatched.lock().unwrap().len();
        let counts = (
            interloper.row_reads.load(Ordering::SeqCst),
            interloper.acquires.load(Ordering::SeqCst),
            interloper.row_inserts.load(Ordering::SeqCst),
        );
        assert_eq!((left, counts), (trigger, (0, 0, inserts)), "{case}");
        let rows = setup.engine.ports.orders.run_orders(&run).await.unwrap();
        let running = rows
            .iter()
            .filter(|r| r.status == OrderStatus::Running)
            .count();
        if trigger {
            assert_eq!((started, running), (0, 0), "{case}");
            assert!(lock_of(&setup, &run).await.is_none(), "{case}");
        } else {
            assert_eq!((started, running), (roots, roots), "{case}");
            assert_eq!(rows[roots].status, OrderStatus::Queued, "{case}");
            let lock = lock_of(&setup, &run).await.unwrap();
            assert_eq!(
                (lock.status, lock.marks),
                (LockStatus::Released, 1),
                "{case}"
            );
        }
    }
}

/// The write of init's first step — the rows, the claims, the lock's making — fails:
/// before it took effect (the lock says it was not made), nothing was written, so the rows
/// are inserted alone and the step taken again from them; or after (its answer lost), when
/// the lock, held by the step, says it was made, and the step goes on, finding its claims
/// made (written again apart, each found applied). Either way nothing is recorded or
/// started twice.
#[tokio::test]
async fn init_whose_first_write_fails_goes_on_once() {
    for (took_effect, inserts) in [(false, 1), (true, 0)] {
        let mut setup = setup();
        taking_first_steps_at_init(&mut setup);
        let interloper = seen_through_an_interloper(&mut setup);
        let fault = match took_effect {
            true => &interloper.lose_first_answer,
            false => &interloper.fail_next_take,
        };
        fault.store(true, Ordering::SeqCst);
        let run = queue(&setup, &two_roots_and_one_after()).await;
        let case = format!("took effect: {took_effect}");
        let trigger = setup.internal.get(&keys::trigger(&run)).await;
        assert!(trigger.is_err(), "no trigger: {case}");
        let row_inserts = interloper.row_inserts.load(Ordering::SeqCst);
        assert_eq!(row_inserts, inserts, "{case}");
        let rows = setup.engine.ports.orders.run_orders(&run).await.unwrap();
        let statuses: Vec<_> = rows.iter().map(|r| r.status).collect();
        let running = [OrderStatus::Running, OrderStatus::Running];
        assert_eq!(
            statuses,
            [&running[..], &[OrderStatus::Queued]].concat(),
            "{case}"
        );
        assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), 2, "{case}");
        let lock = lock_of(&setup, &run).await.unwrap();
        assert_eq!(
            (lock.status, lock.marks),
            (LockStatus::Released, 1),
            "{case}"
        );
        let events = interloper
            .inner()
            .trace_events(&rows[0].trace_id)
            .await
            .unwrap();
        let count = |name: &str, event: &str| {
            (events.iter())
                .filter(|e| e.order_name == name && e.event == event)
                .count()
        };
        let counts = [
            count("_job", "started"),
            count("a", "dispatched"),
            count("b", "dispatched"),
        ];
        assert_eq!(counts, [1, 1, 1], "{case}: {events:#?}");
    }
}

/// init_job takes one step only, its submitter waiting: when results arrive while it holds
/// the lock (a wake-up counted before its release), it gives the lock back and writes the
/// init trigger, whose pass goes on. Before, init carried the run for as long as results
/// kept arriving.
#[tokio::test]
async fn init_hands_a_first_step_that_would_loop_to_its_trigger() {
    let mut setup = setup();
    taking_first_steps_at_init(&mut setup);
    let interloper = seen_through_an_interloper(&mut setup);
    interloper.wake_before_release.store(true, Ordering::SeqCst);
    let run = queue(&setup, &chain_of(&["a", "b"])).await;
    assert!(
        setup.internal.get(&keys::trigger(&run)).await.is_ok(),
        "the trigger written"
    );
    let lock = lock_of(&setup, &run).await.unwrap();
    assert_eq!(
        (lock.status, lock.lease_until_ms),
        (LockStatus::Held, 0),
        "given back"
    );
    assert_eq!(interloper.releases.load(Ordering::SeqCst), 1, "one step");

    // The result the wake-up was for: the trigger's pass takes the lock over, finds it, and
    // goes on.
    let a = OrderNum::from_index(0);
    report_success(&setup, &run, a).await;
    let init = (OrderNum::INIT, AttemptId::init_trigger());
    let pass = setup.engine.orchestrate_notified(&run, [init].into());
    assert_eq!(pass.await.unwrap(), Outcome::Released);
    let b = row_of(&setup, &run, OrderNum::from_index(1)).await;
    let a = row_of(&setup, &run, a).await;
    assert_eq!(
        (a.status, b.status),
        (OrderStatus::Succeeded, OrderStatus::Running)
    );
    assert_eq!(
        setup.recorder.dispatched.lock().unwrap().len(),
        2,
        "each started once"
    );
}

/// A run's first step, woken by its init trigger, takes the lock — never made yet — with
/// its claims: it does not acquire it first (on AWS, an update less per run). Before, it
/// acquired the lock, then claimed.
#[tokio::test]
async fn a_runs_first_step_takes_the_lock_with_its_claims() {
    let mut setup = setup();
    let interloper = seen_through_an_interloper(&mut setup);
    let run = queue(&setup, &two_roots_and_one_after()).await;
    let init = (OrderNum::INIT, AttemptId::init_trigger());
    let outcome = setup
        .engine
        .orchestrate_notified(&run, [init.clone()].into());
    assert_eq!(outcome.await.unwrap(), Outcome::Released);
    assert_eq!(
        interloper.acquires.load(Ordering::SeqCst),
        0,
        "taken, not acquired"
    );
    for (index, status) in [
        (0, OrderStatus::Running),
        (1, OrderStatus::Running),
        (2, OrderStatus::Queued),
    ] {
        assert_eq!(
            row_of(&setup, &run, OrderNum::from_index(index))
                .await
                .status,
            status
        );
    }
    let lock = lock_of(&setup, &run).await.unwrap();
    assert_eq!(lock.marks, 1, "taken once");

    // The trigger's notification delivered twice: the lock is made now, and the second
    // acquires it as usual, starting nothing again.
    let outcome = setup.engine.orchestrate_notified(&run, [init].into());
    assert_eq!(outcome.await.unwrap(), Outcome::Released);
    assert_eq!(interloper.acquires.load(Ordering::SeqCst), 1);
    assert_eq!(setup.recorder.dispatched.lock().unwrap().len(), 2);
}

/// A warm hop whose moves do not fit one write with the lock's taking (a result that
/// readies 100 dependents) acquires the lock as usual, and, nobody having taken it in
/// between, plans from the rows it had: it reads them no more than the hop that fits.
/// Before, the acquire's step read them again.
#[tokio::test]
async fn a_step_refused_the_taking_for_its_size_reads_no_rows_again() {
    let mut setup = setup();
    let interloper = seen_through_an_interloper(&mut setup);
    let mut orders = vec![true_order("a", &[])];
    orders.extend((0..100).map(|i| true_order(&format!("d{i}"), &["a"])));
    let job = JobSpec {
        orders,
        ..JobSpec::default()
    };
    let run = queue(&setup, &job).await;
    assert_eq!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Released
    );
    let a = OrderNum::from_index(0);
    report_success(&setup, &run, a).await;
    let before = interloper.reads_and_acquires();
    assert_eq!(notified(&setup, &run, a).await, Outcome::Released);
    let after = interloper.reads_and_acquires();
    assert_eq!((after.0 - before.0, after.1 - before.1), (0, 1));
    let rows = setup.engine.ports.orders.run_orders(&run).await.unwrap();
    assert!(
        rows[1..]
            .iter()
            .all(|row| row.status == OrderStatus::Running)
    );
}

/// init_job records the job's `started` event with the run's rows, in the same write,
/// whether it inserts them alone or with its first step's claims: a run's start costs no
/// events write of its own (before, it was one more call).
#[tokio::test]
async fn init_records_the_start_with_the_rows() {
    for first_step_at_init in [false, true] {
        let mut setup = setup();
        if first_step_at_init {
            taking_first_steps_at_init(&mut setup);
        }
        let interloper = seen_through_an_interloper(&mut setup);
        let run = one_order_run(&setup, 60).await;
        assert_eq!(interloper.event_writes.load(Ordering::SeqCst), 0);
        let inserts = interloper.row_inserts.load(Ordering::SeqCst);
        assert_eq!(
            inserts,
            u64::from(!first_step_at_init),
            "rows inserted alone"
        );
        let trace = row_of(&setup, &run, OrderNum::from_index(0)).await.trace_id;
        let events = interloper.inner().trace_events(&trace).await.unwrap();
        let started: Vec<_> = (events.iter())
            .filter(|e| e.order_name == "_job" && e.event == "started")
            .collect();
        assert_eq!(started.len(), 1, "{events:?}");
        assert_eq!(started[0].detail["orders"], 1);
    }
}

/// Gives `setup` a fresh engine (nothing remembered) whose tables are seen through an
/// [`Interloper`], which is returned.
fn seen_through_an_interloper(setup: &mut Setup) -> Arc<Interloper> {
    let interloper = Arc::new(Interloper::over(setup.engine.ports.orders.clone()));
    let mut ports = setup.engine.ports.clone();
    ports.orders = interloper.clone();
    setup.engine = Engine::new(ports, setup.engine.config.clone());
    interloper
}

/// A chain a → b whose a was started and has reported, its tables now seen through an
/// [`Interloper`]: the next pass applies a's result and starts b.
async fn chain_with_a_reported(setup: &mut Setup) -> (RunId, Arc<Interloper>) {
    let run = started(setup, &chain_of(&["a", "b"])).await;
    report_success(setup, &run, OrderNum::from_index(0)).await;
    (run, seen_through_an_interloper(setup))
}

/// A step that loops because a wake-up arrived looks for every result after renewing the
/// lease, so the wake-ups counted until that renewal are its own: one counted between the
/// steps (here just before the renewal; on AWS, often the next worker's result, while the
/// orchestrator waits before its next step) must not fail the step's release and make it
/// loop once more. Before, the step released against the count it saw at its last
/// release, and looped again — in chains on AWS, at every hop.
#[tokio::test]
async fn a_wake_up_counted_before_a_steps_renewal_is_that_steps_own() {
    let mut setup = setup();
    let (run, interloper) = chain_with_a_reported(&mut setup).await;
    // During the step that applies a's result, another notification is counted (the step
    // loops); between that step and the next, one more.
    interloper.wake_before_release.store(true, Ordering::SeqCst);
    *interloper.before_renewal.lock().unwrap() = Some(Box::pin(notify(
        setup.engine.ports.orders.clone(),
        run.clone(),
    )));
    let outcome = setup.engine.orchestrate(&run).await.unwrap();

    assert_eq!(outcome, Outcome::Released);
    assert_eq!(
        row_of(&setup, &run, OrderNum::from_index(1)).await.status,
        OrderStatus::Running
    );
    assert_eq!(
        interloper.releases.load(Ordering::SeqCst),
        2,
        "one release refused for the wake-up during the first step, then released"
    );
}

/// A step that loops because wake-ups were counted while it held the lock plans its next
/// step from the rows it left: the lock held since, nobody wrote them (on AWS a Query less
/// per loop). Before, every step read the run's rows again.
#[tokio::test]
async fn a_step_that_loops_for_a_wake_up_reads_the_rows_once() {
    let mut setup = setup();
    let (run, interloper) = chain_with_a_reported(&mut setup).await;
    interloper.wake_before_release.store(true, Ordering::SeqCst);
    let outcome = setup.engine.orchestrate(&run).await.unwrap();

    assert_eq!(outcome, Outcome::Released);
    assert_eq!(
        row_of(&setup, &run, OrderNum::from_index(1)).await.status,
        OrderStatus::Running
    );
    assert_eq!(interloper.releases.load(Ordering::SeqCst), 2, "it looped");
    assert_eq!(interloper.row_reads.load(Ordering::SeqCst), 1);
}

/// ... unless this process cancelled the run meanwhile: a cancel writes rows without the
/// lock, moving orders no step moves after it, and the wake-up it counts (its kick) must
/// find the run as the cancel left it, finalize it, and not be spent planning from rows
/// read before. Here b, still running, is cancelled between the steps.
#[tokio::test]
async fn a_step_after_a_cancel_reads_the_rows_the_cancel_wrote() {
    let mut setup = setup();
    let run = independent_orders_run(&setup, &["a", "b"]).await;
    setup.engine.orchestrate(&run).await.unwrap();
    report_success(&setup, &run, OrderNum::from_index(0)).await;
    let interloper = seen_through_an_interloper(&mut setup);
    interloper.wake_before_release.store(true, Ordering::SeqCst);
    let (canceller, cancelled_run) = (setup.engine.clone(), run.clone());
    *interloper.before_renewal.lock().unwrap() = Some(Box::pin(async move {
        canceller
            .cancel_run(&cancelled_run, "cancelled by t")
            .await
            .unwrap();
    }));
    let outcome = setup.engine.orchestrate(&run).await.unwrap();

    assert_eq!(
        outcome,
        Outcome::Finalized(sluice_contract::JobStatus::Cancelled)
    );
    let b = row_of(&setup, &run, OrderNum::from_index(1)).await;
    assert_eq!(b.status, OrderStatus::Cancelled);
}

/// The other half of the rule above: what a wake-up counted before a step's renewal
/// stands for is found by that step. Here b's worker reports between the steps (its
/// notification counted just before the renewal): the step applies b's result and
/// finalizes the run in the same invocation, with no other notification to come.
#[tokio::test]
async fn a_result_whose_wake_up_came_before_a_steps_renewal_is_applied_by_it() {
    let mut setup = setup();
    let (run, interloper) = chain_with_a_reported(&mut setup).await;
    let b = OrderNum::from_index(1);
    interloper.wake_before_release.store(true, Ordering::SeqCst);
    let (orders, internal, run_id) = (
        setup.engine.ports.orders.clone(),
        setup.internal.clone(),
        run.clone(),
    );
    *interloper.before_renewal.lock().unwrap() = Some(Box::pin(async move {
        let row = orders.get_order(&run_id, b).await.unwrap();
        let key = keys::result(&run_id, b, row.attempt.as_ref().unwrap());
        let doc = sluice_contract::result::ResultDoc::new(OrderStatus::Succeeded, "ok");
        internal
            .put(&key, serde_json::to_vec(&doc).unwrap())
            .await
            .unwrap();
        notify(orders, run_id).await;
    }));
    let outcome = setup.engine.orchestrate(&run).await.unwrap();

    assert_eq!(
        outcome,
        Outcome::Finalized(sluice_contract::JobStatus::Succeeded)
    );
    assert_eq!(row_of(&setup, &run, b).await.status, OrderStatus::Succeeded);
}

/// When results arrive during a step, the next step waits as long as that step took, at
/// most 100 ms, so that more results gather for it (a large run's step reads every row);
/// a step that took no time does not wait.
#[tokio::test]
async fn a_step_that_found_wake_ups_waits_as_long_as_it_took_at_most_100_ms() {
    for tick_ms in [0, 1, 50] {
        let mut setup = setup();
        let (run, interloper) = chain_with_a_reported(&mut setup).await;
        interloper.wake_before_release.store(true, Ordering::SeqCst);
        setup.clock.tick_ms.store(tick_ms, Ordering::SeqCst);
        *setup.clock.sleeps.lock().unwrap() = Some(Vec::new());
        let outcome = setup.engine.orchestrate(&run).await.unwrap();

        assert_eq!(outcome, Outcome::Released);
        let sleeps = setup.clock.sleeps.lock().unwrap().take().unwrap();
        match tick_ms {
            0 => assert_eq!(sleeps, [], "a step that took no time"),
            1 => assert!(
                matches!(sleeps[..], [d] if d > Duration::ZERO && d < Duration::from_millis(100)),
                "as long as the step took: {sleeps:?}"
            ),
            _ => assert_eq!(sleeps, [Duration::from_millis(100)], "at most 100 ms"),
        }
    }
}

/// A start found interrupted is made again once in a step, even when the step evaluates
/// twice (another order's start was refused). The order is `running` only once the step
/// releases the lock; before, the second evaluation found it interrupted again and
/// started it a second time.
#[tokio::test]
async fn a_step_restarts_an_interrupted_start_once() {
    let setup = setup();
    let job = JobSpec {
        orders: vec![
            true_order("s", &[]),
            true_order("q", &[]),
            true_order("r", &["q"]),
        ],
        ..JobSpec::default()
    };
    let run = queue(&setup, &job).await;
    let (s, q, r) = (
        OrderNum::from_index(0),
        OrderNum::from_index(1),
        OrderNum::from_index(2),
    );
    // s's start is throttled: it stays `dispatching`, to be started again after the lease.
    setup.recorder.throttled.lock().unwrap().push(s);
    setup.engine.orchestrate(&run).await.unwrap();
    assert_eq!(
        row_of(&setup, &run, s).await.status,
        OrderStatus::Dispatching
    );
    setup.recorder.throttled.lock().unwrap().clear();
    setup.recorder.dispatched.lock().unwrap().clear();

    // Past the lease, q's result makes r ready, and r's start is refused.
    setup
        .clock
        .advance(setup.engine.config.dispatch_lease + Duration::from_secs(1));
    setup.recorder.refused.lock().unwrap().push(r);
    report_success(&setup, &run, q).await;
    setup.engine.orchestrate(&run).await.unwrap();

    let started: Vec<OrderNum> = (setup.recorder.dispatched.lock().unwrap().iter())
        .map(|payload| payload.order_num)
        .collect();
    assert_eq!(started, [s], "s started again once");
    assert_eq!(row_of(&setup, &run, s).await.status, OrderStatus::Running);
    assert_eq!(row_of(&setup, &run, r).await.status, OrderStatus::Failed);
}
