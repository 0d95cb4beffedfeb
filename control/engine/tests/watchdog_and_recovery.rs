//! The watchdog and the lock's crash recovery, with a clock the test moves by hand and
//! recording dispatch ports (the local stores are real).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_contract::dispatch::{Claim, DispatchPayload};
use sluice_contract::job::OrderSpec;
use sluice_contract::result::{WATCHDOG_LOG, parse_result};
use sluice_contract::{
    ExecutionTarget, JobSpec, OrderNum, OrderStatus, RunId, ValidateOptions, keys,
};
use sluice_engine::local::{DirStore, FileKeyStore, SecretsFile, SqliteStore};
use sluice_engine::orchestrator::Outcome;
use sluice_engine::ports::DispatchError;
use sluice_engine::watchdog::START_WATCH;
use sluice_engine::{
    Clock, Dispatcher, Engine, EngineConfig, ObjectStore, Ports, WatchdogInput, WatchdogStarter,
};

#[derive(Debug)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ManualClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Recorder {
    dispatched: Mutex<Vec<DispatchPayload>>,
    watched: Mutex<Vec<WatchdogInput>>,
}

#[async_trait]
impl Dispatcher for Recorder {
    async fn start(
        &self,
        _: ExecutionTarget,
        _: Duration,
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError> {
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
    let clock = Arc::new(ManualClock(AtomicU64::new(1_800_000_000_000)));
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
    let config = EngineConfig {
        watchdog_slack: Duration::from_secs(30),
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

/// Writes a succeeded result for the order, as its worker would.
async fn report_success(setup: &Setup, run: &RunId, order_num: sluice_contract::OrderNum) {
    let doc = sluice_contract::result::ResultDoc::new(OrderStatus::Succeeded, "ok");
    let key = keys::result(run, order_num);
    setup
        .internal
        .put(&key, serde_json::to_vec(&doc).unwrap())
        .await
        .unwrap();
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
    setup
        .engine
        .init_job(
            &job,
            &ValidateOptions::local("t"),
            std::path::Path::new("."),
        )
        .await
        .unwrap()
        .run_id
}

/// The watchdog started for the run's first order (not its start watch).
fn order_watch(setup: &Setup) -> WatchdogInput {
    let watched = setup.recorder.watched.lock().unwrap();
    watched
        .iter()
        .find(|w| w.order_num != OrderNum::INIT)
        .expect("an order was dispatched")
        .clone()
}

#[tokio::test]
async fn the_start_watch_runs_the_first_pass_when_the_trigger_is_lost() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    // init_job started the run's start watch; the trigger's event never comes.
    let watch = setup.recorder.watched.lock().unwrap()[0].clone();
    assert_eq!(
        (
            watch.run_id.clone(),
            watch.order_num,
            watch.attempt.as_str()
        ),
        (run.clone(), OrderNum::INIT, START_WATCH)
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
    assert!(
        setup.engine.watchdog_check(&watch).await.unwrap().done,
        "a run that has had a pass needs no start watch"
    );
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

#[tokio::test]
async fn the_watchdog_times_out_a_claimed_order_that_never_reports() {
    let setup = setup();
    let run = one_order_run(&setup, 100).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let input = order_watch(&setup);
    assert_eq!((input.timeout, input.attempt.is_empty()), (100, false));

    // Not claimed yet (waiting for a slot): bounded by the job deadline only.
    let verdict = setup.engine.watchdog_check(&input).await.unwrap();
    assert!(!verdict.done && !verdict.kick);

    let claim = Claim {
        attempt: input.attempt.clone(),
        claimed_at_ms: setup.clock.now_ms(),
    };
    setup
        .internal
        .put(
            &keys::claim(&run, input.order_num, &input.attempt),
            serde_json::to_vec(&claim).unwrap(),
        )
        .await
        .unwrap();
    setup.clock.advance(Duration::from_secs(100 + 29));
    let verdict = setup.engine.watchdog_check(&input).await.unwrap();
    assert!(
        !verdict.done,
        "within timeout + slack the worker still has time"
    );
    assert!(
        verdict.wait_seconds >= 1 && verdict.wait_seconds <= 2,
        "{verdict:?}"
    );

    setup.clock.advance(Duration::from_secs(2));
    let verdict = setup.engine.watchdog_check(&input).await.unwrap();
    assert!(verdict.done);
    let result = parse_result(
        &setup
            .internal
            .get(&keys::result(&run, input.order_num))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(result.status, OrderStatus::TimedOut);
    assert_eq!(result.log, WATCHDOG_LOG);

    setup.engine.orchestrate(&run).await.unwrap();
    let row = setup
        .engine
        .ports
        .orders
        .get_order(&run, input.order_num)
        .await
        .unwrap();
    assert_eq!(row.status, OrderStatus::TimedOut);
    assert!(
        setup.engine.watchdog_check(&input).await.unwrap().done,
        "a terminal order needs no watching"
    );
}

#[tokio::test]
async fn the_watchdog_kicks_a_run_whose_result_was_not_processed() {
    let setup = setup();
    let run = one_order_run(&setup, 100).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let input = order_watch(&setup);
    // A result landed, but its event was lost: the order is still running.
    report_success(&setup, &run, input.order_num).await;
    let verdict = setup.engine.watchdog_check(&input).await.unwrap();
    assert!(verdict.kick && !verdict.done, "{verdict:?}");
    assert!(matches!(
        setup.engine.orchestrate(&run).await.unwrap(),
        Outcome::Finalized(_)
    ));
    assert!(setup.engine.watchdog_check(&input).await.unwrap().done);
}

#[tokio::test]
async fn every_dispatch_carries_a_fresh_callback_url() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    setup.engine.orchestrate(&run).await.unwrap();
    let payload = setup.recorder.dispatched.lock().unwrap()[0].clone();
    let url = payload.callback_url.expect("minted at dispatch");
    assert_eq!(
        setup.internal.key_for_url(&url),
        Some(keys::result(&run, payload.order_num))
    );
}

#[tokio::test]
async fn a_result_for_an_order_left_dispatching_is_applied() {
    let setup = setup();
    let run = one_order_run(&setup, 60).await;
    let num = sluice_contract::OrderNum::from_index(0);
    // An orchestrator claimed the order, started its worker and crashed before `running`.
    let dispatching = sluice_engine::Transition {
        attempt: Some("a1".into()),
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
