//! The orchestrator end to end on the local runtime, with a scripted worker: the test
//! decides when each dispatched order reports and how, and checks what the engine does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use proptest::prelude::*;
use sluice_contract::dispatch::DispatchPayload;
use sluice_contract::job::{OrderSpec, Reference};
use sluice_contract::result::{DoneDoc, ResultDoc};
use sluice_contract::{JobSpec, JobStatus, OrderNum, OrderStatus, ValidateOptions, keys};
use sluice_engine::local::{LocalOptions, LocalRuntime, SecretsFile};
use sluice_engine::{EngineConfig, ObjectStore};
use tokio::sync::mpsc;

/// A local runtime whose "workers" only report that they were dispatched.
struct Harness {
    runtime: LocalRuntime,
    dispatched: mpsc::UnboundedReceiver<DispatchPayload>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(concurrency: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (tx, dispatched) = mpsc::unbounded_channel();
        let options = LocalOptions {
            state_dir: dir.path().join("state"),
            concurrency,
            engine: EngineConfig::default(),
            secrets: SecretsFile::none(),
            vcs: None,
        };
        let runtime = LocalRuntime::start(options, move |_| {
            Arc::new(move |payload| {
                let _ = tx.send(payload);
                async {}.boxed()
            })
        })
        .unwrap();
        Harness {
            runtime,
            dispatched,
            _dir: dir,
        }
    }

    async fn init(&self, job: &JobSpec) -> sluice_contract::RunId {
        let engine = self.runtime.engine();
        engine
            .init_job(job, &ValidateOptions::local("t"), std::path::Path::new("."))
            .await
            .unwrap()
            .run_id
    }

    async fn report(&self, payload: &DispatchPayload, status: OrderStatus) {
        let mut doc = ResultDoc::new(status, "scripted");
        doc.attempt = Some(payload.attempt.clone());
        let key = keys::result(&payload.run_id, payload.order_num, &payload.attempt);
        self.runtime
            .internal_store()
            .put(&key, serde_json::to_vec(&doc).unwrap())
            .await
            .unwrap();
    }

    async fn completed_events(&self, done: &DoneDoc) -> usize {
        let trace =
            serde_json::from_value(serde_json::Value::String(done.trace_id.clone())).unwrap();
        let events = self
            .runtime
            .engine()
            .ports
            .orders
            .trace_events(&trace)
            .await
            .unwrap();
        events
            .iter()
            .filter(|e| e.order_name == "_job" && e.event == "completed")
            .count()
    }
}

fn order(deps: &[usize], must_succeed: bool) -> OrderSpec {
    OrderSpec {
        cmds: Some(vec!["true".to_owned()]),
        timeout: Some(600),
        dependencies: deps
            .iter()
            .map(|d| Reference((d + 1).to_string()))
            .collect(),
        must_succeed: Some(must_succeed),
        ..OrderSpec::default()
    }
}

fn job(orders: Vec<OrderSpec>) -> JobSpec {
    JobSpec {
        orders,
        ..JobSpec::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One order of a generated run: its dependencies, `must_succeed`, and its outcome if it runs.
type PlannedOrder = (Vec<usize>, bool, OrderStatus);

/// A random DAG: each order may depend on earlier ones; each has an outcome if it runs.
/// Also a list of choices that decide which running order reports next.
fn arb_run() -> impl Strategy<Value = (Vec<PlannedOrder>, Vec<usize>)> {
    let outcome = prop_oneof![
        6 => Just(OrderStatus::Succeeded),
        2 => Just(OrderStatus::Failed),
        1 => Just(OrderStatus::TimedOut),
    ];
    let orders = (1usize..10).prop_flat_map(move |n| {
        proptest::collection::vec(
            (
                proptest::collection::vec(0usize..10, 0..3),
                any::<bool>(),
                outcome.clone(),
            ),
            n,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (deps, must, status))| {
                    let mut deps: Vec<usize> = deps.into_iter().filter(|&d| d < i).collect();
                    deps.sort();
                    deps.dedup();
                    (deps, must, status)
                })
                .collect::<Vec<_>>()
        })
    });
    (orders, proptest::collection::vec(0usize..1000, 64))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Invariants, for random DAGs and random arrival orders of results: no order is
    /// dispatched before its dependencies allow it (all succeeded, or all terminal for a
    /// must_succeed=false order); every order ends terminal; the job status follows the
    /// rule; the run is finalized exactly once.
    #[test]
    fn random_dags_run_by_the_rules((spec, choices) in arb_run()) {
        runtime().block_on(async move {
            let mut harness = Harness::start(64);
            let run_id = harness.init(&job(spec.iter().map(|(d, m, _)| order(d, *m)).collect())).await;
            let mut model: HashMap<usize, OrderStatus> = (0..spec.len()).map(|i| (i, OrderStatus::Queued)).collect();
            let mut running: Vec<DispatchPayload> = Vec::new();
            let mut step = 0;
            let done = loop {
                tokio::select! {
                    biased;
                    Some(payload) = harness.dispatched.recv() => {
                        let index = payload.order_num.index().unwrap();
                        let (deps, must_succeed, _) = &spec[index];
                        for dep in deps {
                            if model[dep] == OrderStatus::Queued {
                                // Never dispatched: the engine may only have failed it by cascade.
                                let row = harness.runtime.engine().ports.orders.get_order(&run_id, OrderNum::from_index(*dep)).await.unwrap();
                                assert_eq!((row.status, row.reason.as_deref()), (OrderStatus::Failed, Some("dependency_failed")),
                                    "order {index} dispatched before dependency {dep} ran");
                                model.insert(*dep, OrderStatus::Failed);
                            }
                            let dep_status = model[dep];
                            assert!(dep_status.is_terminal(), "order {index} dispatched before dependency {dep} ended");
                            if *must_succeed {
                                assert_eq!(dep_status, OrderStatus::Succeeded, "order {index} dispatched after dependency {dep} failed");
                            }
                        }
                        assert_eq!(model[&index], OrderStatus::Queued, "order {index} dispatched twice");
                        model.insert(index, OrderStatus::Running);
                        running.push(payload);
                    }
                    _ = tokio::time::sleep(Duration::from_millis(3)), if !running.is_empty() => {
                        let pick = choices[step % choices.len()] % running.len();
                        step += 1;
                        let payload = running.swap_remove(pick);
                        let index = payload.order_num.index().unwrap();
                        let outcome = spec[index].2;
                        model.insert(index, outcome);
                        harness.report(&payload, outcome).await;
                    }
                    done = harness.runtime.wait_done(&run_id), if running.is_empty() => break done.unwrap(),
                }
            };
            for (i, line) in done.orders.iter().enumerate() {
                assert!(line.status.is_terminal(), "order {i} ended {}", line.status);
                if line.reason.as_deref() == Some("dependency_failed") {
                    assert!(matches!(model[&i], OrderStatus::Queued | OrderStatus::Failed), "order {i} ran yet was failed by cascade");
                } else {
                    assert_eq!(line.status, model[&i], "order {i}");
                }
            }
            let expected = JobStatus::decide(done.orders.iter().zip(&spec).map(|(o, (_, must, _))| (o.status, *must)), false);
            assert_eq!(done.status, expected);
            assert_eq!(harness.completed_events(&done).await, 1, "finalized exactly once");
            harness.runtime.shutdown().await;
        });
    }
}

#[test]
fn jobs_are_initialised_at_once_from_spawned_tasks() {
    // A server takes submissions concurrently: init_job's future must be `Send` (this
    // does not compile otherwise) and runs must not mix.
    runtime().block_on(async {
        let harness = Harness::start(8);
        let inits: Vec<_> = (0..4)
            .map(|i| {
                let engine = Arc::clone(harness.runtime.engine());
                tokio::spawn(async move {
                    let orders = (0..=i).map(|_| order(&[], true)).collect();
                    let answer = engine
                        .init_job(
                            &job(orders),
                            &ValidateOptions::local("t"),
                            std::path::Path::new("."),
                        )
                        .await
                        .unwrap();
                    (answer.run_id, i + 1)
                })
            })
            .collect();
        let runs = futures::future::join_all(inits).await;
        let engine = harness.runtime.engine();
        for run in runs {
            let (run_id, orders) = run.unwrap();
            let rows = engine.ports.orders.run_orders(&run_id).await.unwrap();
            assert_eq!(rows.len(), orders, "run {run_id}");
        }
    });
}

#[test]
fn many_results_arriving_at_once_are_all_processed() {
    runtime().block_on(async {
        const ORDERS: usize = 300;
        let mut harness = Harness::start(ORDERS);
        let run_id = harness
            .init(&job((0..ORDERS).map(|_| order(&[], true)).collect()))
            .await;
        let mut payloads = Vec::new();
        while payloads.len() < ORDERS {
            payloads.push(harness.dispatched.recv().await.unwrap());
        }
        let harness = Arc::new(harness);
        let writers: Vec<_> = payloads
            .into_iter()
            .map(|payload| {
                let harness = Arc::clone(&harness);
                tokio::spawn(async move { harness.report(&payload, OrderStatus::Succeeded).await })
            })
            .collect();
        futures::future::join_all(writers).await;
        let done =
            tokio::time::timeout(Duration::from_secs(60), harness.runtime.wait_done(&run_id))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(done.status, JobStatus::Succeeded);
        assert_eq!(done.summary.succeeded as usize, ORDERS, "a result was lost");
        assert_eq!(harness.completed_events(&done).await, 1);
    });
}

#[test]
fn a_malformed_result_fails_its_order_and_the_run_goes_on() {
    runtime().block_on(async {
        let mut harness = Harness::start(4);
        let run_id = harness
            .init(&job(vec![
                order(&[], true),
                order(&[], true),
                order(&[1], false),
            ]))
            .await;
        let first = harness.dispatched.recv().await.unwrap();
        let second = harness.dispatched.recv().await.unwrap();
        let (garbled, fine) = if first.order_num.get() == 1 {
            (first, second)
        } else {
            (second, first)
        };
        let key = keys::result(&garbled.run_id, garbled.order_num, &garbled.attempt);
        harness
            .runtime
            .internal_store()
            .put(&key, b"{\"status\": \"exploded\"".to_vec())
            .await
            .unwrap();
        harness.report(&fine, OrderStatus::Succeeded).await;
        let third = harness.dispatched.recv().await.unwrap();
        assert_eq!(third.order_num, OrderNum::from_index(2));
        harness.report(&third, OrderStatus::Succeeded).await;
        let done = harness.runtime.wait_done(&run_id).await.unwrap();
        assert_eq!(done.orders[0].status, OrderStatus::Failed);
        assert_eq!(done.orders[0].reason.as_deref(), Some("malformed_result"));
        assert_eq!(done.orders[1].status, OrderStatus::Succeeded);
        assert_eq!(done.orders[2].status, OrderStatus::Succeeded);
        assert_eq!(done.status, JobStatus::Failed);
    });
}

#[test]
fn the_job_timeout_ends_a_run_whose_order_never_reports() {
    runtime().block_on(async {
        let mut harness = Harness::start(4);
        let mut spec = job(vec![order(&[], true), order(&[0], true)]);
        spec.job_timeout = Some(2);
        let run_id = harness.init(&spec).await;
        let _silent = harness.dispatched.recv().await.unwrap();
        let done =
            tokio::time::timeout(Duration::from_secs(20), harness.runtime.wait_done(&run_id))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(done.status, JobStatus::TimedOut);
        for line in &done.orders {
            assert_eq!(line.status, OrderStatus::TimedOut);
            assert_eq!(line.reason.as_deref(), Some("job_timeout"));
        }
    });
}

#[test]
fn a_result_after_finalize_changes_nothing() {
    runtime().block_on(async {
        let mut harness = Harness::start(4);
        let run_id = harness.init(&job(vec![order(&[], true)])).await;
        let payload = harness.dispatched.recv().await.unwrap();
        harness.report(&payload, OrderStatus::Succeeded).await;
        let done = harness.runtime.wait_done(&run_id).await.unwrap();
        harness.report(&payload, OrderStatus::Failed).await;
        let outcome = harness.runtime.engine().orchestrate(&run_id).await.unwrap();
        assert_eq!(
            outcome,
            sluice_engine::orchestrator::Outcome::AlreadyFinished
        );
        let row = harness
            .runtime
            .engine()
            .ports
            .orders
            .get_order(&run_id, payload.order_num)
            .await
            .unwrap();
        assert_eq!(row.status, OrderStatus::Succeeded);
        assert_eq!(done.status, JobStatus::Succeeded);
    });
}
