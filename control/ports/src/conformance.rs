//! Adapter conformance suites: the guarantees every [`ObjectStore`] and [`OrderStore`] must
//! give, as one backend-agnostic suite each (object_store's `integration.rs` rule).
//!
//! The local adapters run them in `sluice-engine`'s tests
//! (`tests/integration/adapters.rs`); `sluice-aws` runs the same suites against moto. A
//! failed guarantee panics with the operation named.

use std::time::Duration;

use sluice_contract::outputs::Input;
use sluice_contract::result::AttemptRecord;
use sluice_contract::retries::{RetryOn, RetryPolicy};
use sluice_contract::{
    AttemptId, ExecutionTarget, OrderNum, OrderPlan, OrderStatus, RunId, SandboxSpec, TraceId,
};

use crate::StoreError;
use crate::{
    AcquireOutcome, CompiledModule, LockStatus, ObjectStore, OrderEvent, OrderMove, OrderRecord,
    OrderStore, PackedBundle, Presigned, ReleaseOutcome, StepWrites, Transition,
};

/// A queued order row for tests; the first of a run is a WebAssembly order's, sharing its
/// compiled code, and its bundle is in a pack.
pub fn sample_order(run_id: &RunId, index: usize) -> OrderRecord {
    let order_num = OrderNum::from_index(index);
    OrderRecord {
        run_id: run_id.clone(),
        plan: OrderPlan {
            order_num,
            order_name: format!("order-{}", index + 1),
            queue_id: (index + 1).to_string(),
            depends_on: Vec::new(),
            condition: None,
            inputs: match index {
                2 => vec![Input {
                    env: "PLAN_FILE".to_owned(),
                    source: "order-1.plan_file".to_owned(),
                    order_num: OrderNum::from_index(0),
                    output: "plan_file".to_owned(),
                }],
                _ => Vec::new(),
            },
            must_succeed: true,
            retry: (index == 1).then(|| RetryPolicy {
                limit: 3,
                backoff_ms: 1500,
                max_backoff_ms: 60_000,
                on: vec![RetryOn::Failed],
                exit_codes: vec![75],
            }),
            timeout: 60,
            execution_target: ExecutionTarget::Lambda,
            // Grants are stored with the row, and read back whole.
            sandbox: (index == 0).then(|| SandboxSpec {
                network: true,
                read: vec!["~/.terraform.d".to_owned()],
                write: vec!["/var/cache/tofu".to_owned()],
            }),
        },
        trace_id: TraceId::generate(),
        flow_id: "test:flow".to_owned(),
        created_at_ms: 1,
        job_deadline_ms: u64::MAX / 2,
        key_path: "key".to_owned(),
        log_key: "log".to_owned(),
        status: OrderStatus::Queued,
        attempt: None,
        dispatched_at_ms: None,
        finished_at_ms: None,
        duration_ms: None,
        exit_code: None,
        reason: None,
        log_stored: None,
        // The second order waits for its second attempt: its rows keep the first.
        attempts: match index {
            1 => vec![AttemptRecord {
                number: 1,
                attempt: AttemptId::parse("first").expect("an attempt id"),
                status: OrderStatus::Failed,
                reason: Some("command 1 failed: exit code 75".to_owned()),
                exit_code: Some(75),
                dispatched_at_ms: Some(10),
                finished_at_ms: Some(20),
                duration_ms: Some(9),
                log_key: Some("log".to_owned()),
            }],
            _ => Vec::new(),
        },
        retry_at_ms: (index == 1).then_some(1_000),
        outputs_key: None,
        pr: None,
        compiled: (index == 0).then(|| CompiledModule {
            module_sha256: "ab".repeat(32),
            metered: true,
        }),
        packed: (index == 0).then(|| PackedBundle {
            pack: 1,
            range: sluice_contract::dispatch::PinnedRange {
                start: 1 << 33,
                len: 700,
                etag: "\"0f343b0931126a20f133d67c2b018a3b\"".to_owned(),
            },
        }),
        rerun_of: None,
        reused_from: None,
        ran_sandboxed: None,
    }
}

/// Puts are atomic and replace; conditional puts fail on existing keys; lists see every key
/// under a prefix and nothing else; deletes are idempotent.
pub async fn object_store_suite(store: &dyn ObjectStore) {
    let base = format!("conformance/{}", uuid::Uuid::new_v4().simple());
    let key = format!("{base}/a/result.json");
    assert!(
        store.get(&key).await.unwrap_err().is_not_found(),
        "get of a missing key is NotFound"
    );
    assert_eq!(
        store.head(&key).await.unwrap(),
        None,
        "head of a missing key"
    );

    assert!(
        store.get_prefix(&key, 8).await.unwrap_err().is_not_found(),
        "get_prefix of a missing key is NotFound"
    );
    store.put(&key, b"one".to_vec()).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), b"one");
    assert_eq!(store.get_prefix(&key, 8).await.unwrap(), b"one");
    assert_eq!(
        store.get_prefix(&key, 1).await.unwrap(),
        b"on",
        "get_prefix reads max_bytes + 1 bytes at most"
    );
    let empty = format!("{base}x/empty");
    store.put(&empty, Vec::new()).await.unwrap();
    assert_eq!(store.get_prefix(&empty, 8).await.unwrap(), b"");
    store.put(&key, b"two!".to_vec()).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), b"two!", "put replaces");
    assert_eq!(
        store.head(&key).await.unwrap(),
        Some(4),
        "head gives the size"
    );

    let err = store
        .put_if_absent(&key, b"three".to_vec())
        .await
        .unwrap_err();
    assert!(
        err.is_condition_failed(),
        "put_if_absent on an existing key: {err}"
    );
    assert_eq!(
        store.get(&key).await.unwrap(),
        b"two!",
        "a failed conditional put changes nothing"
    );
    let fresh = format!("{base}/b/claim");
    store.put_if_absent(&fresh, b"mine".to_vec()).await.unwrap();

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![b'x'; 300_000]).unwrap();
    let log = format!("{base}/c/log.txt");
    store.put_file(&log, file.path()).await.unwrap();
    assert_eq!(
        store.head(&log).await.unwrap(),
        Some(300_000),
        "put_file uploads the whole file"
    );

    store
        .put(&format!("{base}x/other"), b"not mine".to_vec())
        .await
        .unwrap();
    let listed = store.list(&format!("{base}/")).await.unwrap();
    assert_eq!(
        listed,
        vec![key.clone(), fresh.clone(), log.clone()],
        "list is sorted and complete"
    );
    let partial = store.list(&format!("{base}/a")).await.unwrap();
    assert_eq!(partial, vec![key.clone()], "prefixes may end inside a name");

    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap();
    assert!(store.get(&key).await.unwrap_err().is_not_found(), "deleted");
    // A tagged put answers the entity tag a ranged read is pinned to: another for other
    // content.
    let pack = format!("{base}/pack");
    let first = store.put_tagged(&pack, b"one".to_vec()).await.unwrap();
    let second = store.put_tagged(&pack, b"two".to_vec()).await.unwrap();
    assert!(!first.is_empty() && first != second, "{first} {second}");
    assert_eq!(store.get(&pack).await.unwrap(), b"two");
    let range = sluice_contract::dispatch::PinnedRange {
        start: 1,
        len: 2,
        etag: second,
    };
    let operations = [
        Presigned::Get,
        Presigned::GetRange(range),
        Presigned::Put,
        Presigned::PutIfAbsent,
        Presigned::Delete,
    ];
    for operation in operations {
        let url = (store
            .presign(operation.clone(), &fresh, Duration::from_secs(60))
            .await)
            .unwrap();
        assert!(!url.is_empty(), "{operation:?}");
    }
    for k in [fresh, log, pack, format!("{base}x/other")] {
        store.delete(&k).await.unwrap();
    }
    run_keys_suite(store).await;
}

/// Keys under a run id, which a store may keep apart (the local one keeps the rest of such a
/// key as one file name): every `/` and `~` round-trips, and listings by any prefix, ending
/// before, inside or after the run id, see exactly the keys they name, sorted by key.
async fn run_keys_suite(store: &dyn ObjectStore) {
    let base = format!("conformance/{}", uuid::Uuid::new_v4().simple());
    let run = uuid::Uuid::new_v4().hyphenated().to_string();
    let under = |rest: &str| format!("{base}/{run}/{rest}");
    let keys = [
        under("0001/a~b/result.json"),
        under("0001/a/~b"),
        under("0001~x"),
        under("0002/log.txt"),
        under("0001/a/b"),
    ];
    for key in &keys {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let mut sorted = keys.to_vec();
    sorted.sort();
    let prefixes = [
        format!("{base}/"),
        format!("{base}/{}", &run[..8]),
        format!("{base}/{run}"),
        format!("{base}/{run}/"),
        under("0001"),
        under("0001/"),
        under("0001/a/"),
        under("0001/a~"),
        under("0003"),
    ];
    for prefix in prefixes {
        let expected: Vec<String> = (sorted.iter())
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        let listed = store.list(&prefix).await.unwrap();
        assert_eq!(listed, expected, "listing {prefix}");
    }
    for key in &keys {
        assert_eq!(store.get(key).await.unwrap(), key.as_bytes(), "{key}");
        store.delete(key).await.unwrap();
    }
    assert_eq!(
        store.list(&format!("{base}/")).await.unwrap(),
        Vec::<String>::new()
    );
}

/// Orders insert all-or-none, transitions are conditional and follow the state machine,
/// events are kept by key, and the lock's conditional writes behave as the protocol needs.
pub async fn order_store_suite(store: &dyn OrderStore) {
    let run = RunId::generate();
    let mut orders: Vec<OrderRecord> = (0..3).map(|i| sample_order(&run, i)).collect();
    // A rerun's rows, the third reused from the run it reruns: kept as written too.
    let of = RunId::generate();
    for order in &mut orders {
        order.rerun_of = Some(of.clone());
    }
    orders[2].reused_from = Some(of);
    let event = OrderEvent {
        trace_id: orders[0].trace_id.clone(),
        order_name: OrderEvent::JOB.to_owned(),
        epoch_ms: 7,
        event: "started".to_owned(),
        run_id: run.clone(),
        detail: serde_json::json!({"n": 1}),
    };
    store
        .insert_orders(&orders, std::slice::from_ref(&event))
        .await
        .unwrap();
    let refused = OrderEvent {
        event: "refused".to_owned(),
        ..event.clone()
    };
    let err = store
        .insert_orders(&orders[..1], std::slice::from_ref(&refused))
        .await
        .unwrap_err();
    assert!(
        err.is_condition_failed(),
        "inserting an existing order: {err}"
    );
    assert_eq!(
        store.trace_events(&orders[0].trace_id).await.unwrap(),
        vec![event.clone()],
        "a run's first events are recorded with its rows, and not when they are refused"
    );
    let read = store.run_orders(&run).await.unwrap();
    assert_eq!(read, orders, "run_orders returns every row in order");
    let num = orders[0].plan.order_num;

    let dispatching = Transition {
        attempt: AttemptId::parse("a1"),
        dispatched_at_ms: Some(5),
        ..Transition::to(OrderStatus::Dispatching)
    };
    let row = store
        .transition(&run, num, OrderStatus::Queued, &dispatching)
        .await
        .unwrap();
    assert_eq!(
        (
            row.status,
            row.attempt.as_ref().map(AttemptId::as_str),
            row.dispatched_at_ms
        ),
        (OrderStatus::Dispatching, Some("a1"), Some(5))
    );
    let err = store
        .transition(&run, num, OrderStatus::Queued, &dispatching)
        .await
        .unwrap_err();
    assert!(
        err.is_condition_failed(),
        "a second queued -> dispatching must fail: {err}"
    );
    store
        .transition(
            &run,
            num,
            OrderStatus::Dispatching,
            &Transition::to(OrderStatus::Running),
        )
        .await
        .unwrap();
    let done = Transition {
        exit_code: Some(0),
        log_stored: Some(false),
        outputs_key: Some("tmp/outputs/run/0001/a1.json".to_owned()),
        ran_sandboxed: Some(SandboxSpec::default()),
        ..Transition::to(OrderStatus::Succeeded)
    };
    store
        .transition(&run, num, OrderStatus::Running, &done)
        .await
        .unwrap();
    let late = Transition::to(OrderStatus::Failed);
    assert!(
        store
            .transition(&run, num, OrderStatus::Running, &late)
            .await
            .unwrap_err()
            .is_condition_failed(),
        "late result keeps terminal status"
    );
    assert!(
        store
            .transition(&run, num, OrderStatus::Succeeded, &late)
            .await
            .is_err(),
        "terminal statuses never change"
    );
    let row = store.get_order(&run, num).await.unwrap();
    assert_eq!(
        (
            row.status,
            row.exit_code,
            row.attempt.as_ref().map(AttemptId::as_str),
            row.log_stored,
            row.outputs_key.as_deref(),
            row.ran_sandboxed,
        ),
        (
            OrderStatus::Succeeded,
            Some(0),
            Some("a1"),
            Some(false),
            Some("tmp/outputs/run/0001/a1.json"),
            Some(SandboxSpec::default()),
        )
    );
    assert!(
        store
            .get_order(&run, OrderNum::from_index(9))
            .await
            .unwrap_err()
            .is_not_found()
    );

    store
        .put_events(std::slice::from_ref(&event))
        .await
        .unwrap();
    assert_eq!(
        store.trace_events(&orders[0].trace_id).await.unwrap(),
        vec![event.clone()],
        "events are kept once per key"
    );
    // More than one call's worth (DynamoDB writes 25 at a time), the first again among them.
    let mut many: Vec<OrderEvent> = (0..60)
        .map(|i| OrderEvent {
            epoch_ms: 7 + i,
            ..event.clone()
        })
        .collect();
    store.put_events(&many).await.unwrap();
    many.sort_by_key(OrderEvent::sk);
    store.put_events(&[]).await.unwrap();
    assert_eq!(
        store.trace_events(&orders[0].trace_id).await.unwrap(),
        many,
        "a batch records every event"
    );

    together_suite(store, &orders[1..]).await;
    retry_suite(store).await;
    first_step_suite(store).await;
    lock_suite(store).await;
}

/// A retry: `running → queued` with the attempt that ended appended to the row's (a list a
/// write appends to, not one it replaces), the next attempt's log key and when it may
/// start; made again (a write whose answer was lost), it is refused and appends nothing,
/// and the row reads as holding it.
async fn retry_suite(store: &dyn OrderStore) {
    let run = RunId::generate();
    let mut order = sample_order(&run, 1);
    // Its first attempt ran sandboxed; the next, dispatched, has not run yet.
    order.ran_sandboxed = Some(SandboxSpec::default());
    let num = order.plan.order_num;
    store
        .insert_orders(std::slice::from_ref(&order), &[])
        .await
        .unwrap();
    let second = AttemptId::parse("second").expect("an attempt id");
    let claim = Transition {
        attempt: Some(second.clone()),
        dispatched_at_ms: Some(2_000),
        ..Transition::to(OrderStatus::Dispatching)
    };
    let claimed = store
        .transition(&run, num, OrderStatus::Queued, &claim)
        .await
        .unwrap();
    assert_eq!(claimed.ran_sandboxed, None, "a new attempt has not run");
    assert_eq!(
        store.get_order(&run, num).await.unwrap(),
        claimed,
        "as read"
    );
    let running = Transition::to(OrderStatus::Running);
    store
        .transition(&run, num, OrderStatus::Dispatching, &running)
        .await
        .unwrap();
    let ended = AttemptRecord {
        number: 2,
        attempt: second,
        status: OrderStatus::TimedOut,
        reason: Some("timed out after 60 s".to_owned()),
        exit_code: None,
        dispatched_at_ms: Some(2_000),
        finished_at_ms: Some(62_500),
        duration_ms: Some(60_100),
        log_key: None,
    };
    let retry = Transition {
        log_key: Some("log-3".to_owned()),
        retry_at_ms: Some(64_000),
        ended_attempt: Some(ended.clone()),
        ..Transition::to(OrderStatus::Queued)
    };
    let row = store
        .transition(&run, num, OrderStatus::Running, &retry)
        .await
        .unwrap();
    assert_eq!(row.attempts.len(), 2, "appended to the first");
    assert_eq!(row.attempts[0], order.attempts[0]);
    assert_eq!(row.attempts[1], ended);
    assert_eq!(
        (row.log_key.as_str(), row.retry_at_ms),
        ("log-3", Some(64_000))
    );
    assert_eq!(store.get_order(&run, num).await.unwrap(), row, "as read");
    assert!(
        retry.is_applied_in(&row),
        "a lost answer's write reads as made"
    );
    let again = store
        .transition(&run, num, OrderStatus::Running, &retry)
        .await;
    assert!(again.unwrap_err().is_condition_failed());
    assert_eq!(store.get_order(&run, num).await.unwrap().attempts.len(), 2);
}

/// A run's first step taken in init-job: its rows, as its claims leave them, inserted with
/// the run's first events and the lock never made taken — all or none.
async fn first_step_suite(store: &dyn OrderStore) {
    let run = RunId::generate();
    let mut rows: Vec<OrderRecord> = (0..3).map(|i| sample_order(&run, i)).collect();
    let claim = Transition {
        attempt: AttemptId::parse("a1"),
        dispatched_at_ms: Some(5),
        ..Transition::to(OrderStatus::Dispatching)
    };
    claim.apply(&mut rows[0]);
    let started = event_of(&rows[0], OrderEvent::JOB, 3, "started");
    let writes = StepWrites {
        inserts: rows.clone(),
        events: vec![started.clone()],
        ..StepWrites::default()
    };
    // One row there already (an init tried again): nothing written.
    store.insert_orders(&rows[2..], &[]).await.unwrap();
    let err = (store.take_lock_with(&run, "init", 0, u64::MAX, &writes))
        .await
        .unwrap_err();
    assert!(err.is_condition_failed(), "a row exists: {err}");
    assert_eq!(store.run_orders(&run).await.unwrap(), rows[2..]);
    assert_eq!(store.lock_state(&run).await.unwrap(), None, "no lock made");
    assert!(
        (store.trace_events(&started.trace_id).await.unwrap()).is_empty(),
        "no event recorded"
    );

    // The same rows, of a run of their own.
    let of_new_run = |rows: Vec<OrderRecord>| {
        let run = RunId::generate();
        let rows: Vec<OrderRecord> = (rows.into_iter())
            .map(|row| OrderRecord {
                run_id: run.clone(),
                ..row
            })
            .collect();
        (run, rows)
    };
    let (run, rows) = of_new_run(rows);
    let writes = StepWrites {
        inserts: rows.clone(),
        events: vec![OrderEvent {
            run_id: run.clone(),
            ..started.clone()
        }],
        ..StepWrites::default()
    };
    let taken = (store.take_lock_with(&run, "init", 0, u64::MAX, &writes)).await;
    assert_eq!(taken.unwrap(), 1);
    assert_eq!(
        store.run_orders(&run).await.unwrap(),
        rows,
        "inserted as written"
    );
    let lock = store.lock_state(&run).await.unwrap().unwrap();
    assert_eq!(
        (lock.status, lock.owner.as_str(), lock.marks),
        (LockStatus::Held, "init", 1)
    );
    assert_eq!(
        store.trace_events(&started.trace_id).await.unwrap(),
        writes.events,
        "recorded with them"
    );
    let again = (store.take_lock_with(&run, "again", 0, u64::MAX, &writes)).await;
    assert!(again.unwrap_err().is_condition_failed(), "made now");

    // The lock made, but no row: nothing written either.
    let (run, rows) = of_new_run(rows);
    let writes = StepWrites {
        inserts: rows,
        ..StepWrites::default()
    };
    assert!(matches!(
        store
            .acquire_lock(&run, "other", 0, u64::MAX)
            .await
            .unwrap(),
        AcquireOutcome::Acquired { .. }
    ));
    let err = (store.take_lock_with(&run, "init", 0, u64::MAX, &writes)).await;
    assert!(err.unwrap_err().is_condition_failed(), "the lock exists");
    assert!(store.run_orders(&run).await.unwrap().is_empty(), "no row");
}

/// An event `event` of `order`'s run at `epoch_ms`, recorded under `order_name`.
fn event_of(order: &OrderRecord, order_name: &str, epoch_ms: u64, event: &str) -> OrderEvent {
    OrderEvent {
        trace_id: order.trace_id.clone(),
        order_name: order_name.to_owned(),
        epoch_ms,
        event: event.to_owned(),
        run_id: order.run_id.clone(),
        detail: serde_json::json!({}),
    }
}

/// Status changes made together, alone or with the lock's release: all or none.
async fn together_suite(store: &dyn OrderStore, orders: &[OrderRecord]) {
    let run = &orders[0].run_id;
    let claim = |order: &OrderRecord, attempt: &str| {
        let change = Transition {
            attempt: AttemptId::parse(attempt),
            ..Transition::to(OrderStatus::Dispatching)
        };
        OrderMove::of(order, &change)
    };
    let statuses = || async {
        let rows = store.run_orders(run).await.unwrap();
        orders
            .iter()
            .map(|o| rows[o.plan.order_num.index().unwrap()].status)
            .collect::<Vec<_>>()
    };
    // Allowed from `dispatching`, but the order is `queued`.
    let wrong = OrderMove {
        from: OrderStatus::Dispatching,
        ..OrderMove::of(&orders[1], &Transition::to(OrderStatus::Running))
    };
    // With events: all or none.
    let claimed = event_of(&orders[0], &orders[0].plan.order_name, 50, "claimed");
    let recorded = || async { store.trace_events(&orders[0].trace_id).await.unwrap() };
    let with_claimed = |moves: Vec<OrderMove>| StepWrites {
        moves,
        events: vec![claimed.clone()],
        ..StepWrites::default()
    };
    let err = store
        .transition_together(run, &with_claimed(vec![claim(&orders[0], "a1"), wrong]))
        .await
        .unwrap_err();
    assert!(
        err.is_condition_failed(),
        "one order not as expected: {err}"
    );
    assert_eq!(statuses().await, [OrderStatus::Queued; 2], "none moved");
    assert!(!recorded().await.contains(&claimed), "not recorded");
    let claims = vec![claim(&orders[0], "a1"), claim(&orders[1], "b1")];
    store
        .transition_together(run, &with_claimed(claims.clone()))
        .await
        .unwrap();
    assert_eq!(statuses().await, [OrderStatus::Dispatching; 2]);
    assert!(recorded().await.contains(&claimed), "recorded with them");

    // With the release: the moves, the events and the release, or nothing.
    let rows = store.run_orders(run).await.unwrap();
    let running: Vec<OrderMove> = (orders.iter())
        .map(|o| {
            let row = &rows[o.plan.order_num.index().unwrap()];
            OrderMove::of(row, &Transition::to(OrderStatus::Running))
        })
        .collect();
    let event = event_of(&orders[0], &orders[0].plan.order_name, 100, "dispatched");
    let writes = StepWrites {
        moves: running.clone(),
        events: vec![event.clone()],
        ..StepWrites::default()
    };
    // A run's first step takes a lock never made (count 0) with its writes, all or none.
    let none = StepWrites::default();
    let lock_of = || async { store.lock_state(run).await.unwrap() };
    let claimed_before = StepWrites {
        moves: vec![claim(&orders[0], "a0")],
        ..StepWrites::default()
    };
    let err = (store.take_lock_with(run, "first", 0, u64::MAX, &claimed_before))
        .await
        .unwrap_err();
    assert!(err.is_condition_failed(), "an order not as expected: {err}");
    assert!(lock_of().await.is_none(), "nothing written, no lock made");
    let first = (store.take_lock_with(run, "first", 0, u64::MAX, &none))
        .await
        .unwrap();
    assert_eq!(first, 1);
    let lock = lock_of().await.unwrap();
    assert_eq!(
        (lock.status, lock.owner.as_str(), lock.marks),
        (LockStatus::Held, "first", 1)
    );
    let err = (store.take_lock_with(run, "second", 0, u64::MAX, &none))
        .await
        .unwrap_err();
    assert!(err.is_condition_failed(), "made now: {err}");
    let released = (store.release_lock(run, "first", first, &StepWrites::default())).await;
    assert_eq!(released.unwrap(), ReleaseOutcome::Released);
    let err = (store.take_lock_with(run, "second", 0, u64::MAX, &none))
        .await
        .unwrap_err();
    assert!(
        err.is_condition_failed(),
        "released with a count of 1: {err}"
    );

    let marks = match store.acquire_lock(run, "a", 0, u64::MAX).await.unwrap() {
        AcquireOutcome::Acquired { marks, .. } => marks,
        other => panic!("a free lock is taken: {other:?}"),
    };
    let err = (store.take_lock_with(run, "second", 0, u64::MAX, &none))
        .await
        .unwrap_err();
    assert!(err.is_condition_failed(), "held: {err}");
    assert_eq!(
        store.acquire_lock(run, "b", 1, u64::MAX).await.unwrap(),
        AcquireOutcome::Marked
    );
    let now = match store.release_lock(run, "a", marks, &writes).await.unwrap() {
        ReleaseOutcome::Marked { marks } => marks,
        other => panic!("a wake-up arrived: {other:?}"),
    };
    assert_eq!(
        statuses().await,
        [OrderStatus::Dispatching; 2],
        "not written"
    );
    assert!(!recorded().await.contains(&event), "not recorded");
    // A claim of an order that is `dispatching` already: not as expected.
    let stale = StepWrites {
        moves: vec![claim(&orders[0], "a2")],
        events: vec![event.clone()],
        ..StepWrites::default()
    };
    let err = store.release_lock(run, "a", now, &stale).await.unwrap_err();
    assert!(err.is_condition_failed(), "an order not as expected: {err}");
    assert_eq!(
        store.lock_state(run).await.unwrap().unwrap().status,
        LockStatus::Held,
        "nothing written, the lock still held"
    );
    assert_eq!(
        store.release_lock(run, "a", now, &writes).await.unwrap(),
        ReleaseOutcome::Released
    );
    assert_eq!(statuses().await, [OrderStatus::Running; 2]);
    assert!(recorded().await.contains(&event));
    assert_eq!(
        store.lock_state(run).await.unwrap().unwrap().status,
        LockStatus::Released
    );

    // Taken with a step's first writes: only from the release that left this count, and
    // all or none.
    let rows = store.run_orders(run).await.unwrap();
    let result = |index: usize| {
        let done = Transition {
            exit_code: Some(0),
            ..Transition::to(OrderStatus::Succeeded)
        };
        OrderMove::of(&rows[orders[index].plan.order_num.index().unwrap()], &done)
    };
    let finished = OrderEvent {
        event: "succeeded".to_owned(),
        epoch_ms: 200,
        ..event.clone()
    };
    let with_finished = |moves: Vec<OrderMove>| StepWrites {
        moves,
        events: vec![finished.clone()],
        ..StepWrites::default()
    };
    let not_released = |err: StoreError| assert!(err.is_condition_failed(), "{err}");
    not_released(
        store
            .take_lock_with(run, "t", now - 1, u64::MAX, &with_finished(vec![result(0)]))
            .await
            .unwrap_err(),
    );
    let moved_before = with_finished(vec![result(0), claim(&orders[1], "b2")]);
    not_released(
        store
            .take_lock_with(run, "t", now, u64::MAX, &moved_before)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        statuses().await,
        [OrderStatus::Running; 2],
        "nothing written"
    );
    assert!(!recorded().await.contains(&finished), "nothing recorded");
    assert_eq!(
        store.lock_state(run).await.unwrap().unwrap().status,
        LockStatus::Released,
        "not taken"
    );
    let taken = store
        .take_lock_with(run, "t", now, u64::MAX, &with_finished(vec![result(0)]))
        .await
        .unwrap();
    assert_eq!(taken, now + 1);
    assert_eq!(
        statuses().await,
        [OrderStatus::Succeeded, OrderStatus::Running]
    );
    assert!(
        recorded().await.contains(&finished),
        "recorded with the take"
    );
    let lock = store.lock_state(run).await.unwrap().unwrap();
    assert_eq!(
        (lock.status, lock.owner.as_str(), lock.marks),
        (LockStatus::Held, "t", taken)
    );
    not_released(
        store
            .take_lock_with(run, "u", now, u64::MAX, &none)
            .await
            .unwrap_err(),
    );
    not_released(
        store
            .take_lock_with(run, "u", taken, u64::MAX, &none)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        store.acquire_lock(run, "u", 1, u64::MAX).await.unwrap(),
        AcquireOutcome::Marked,
        "held by its taker"
    );
    assert_eq!(
        store
            .release_lock(run, "t", taken, &StepWrites::default())
            .await
            .unwrap(),
        ReleaseOutcome::Marked { marks: taken + 1 }
    );
    assert_eq!(
        store
            .release_lock(run, "t", taken + 1, &StepWrites::default())
            .await
            .unwrap(),
        ReleaseOutcome::Released
    );
}

async fn lock_suite(store: &dyn OrderStore) {
    let none = StepWrites::default();
    let acquired = |missed| {
        move |outcome: AcquireOutcome| match outcome {
            AcquireOutcome::Acquired { missed: m, marks } if m == missed => marks,
            other => panic!("expected Acquired {{ missed: {missed} }}, got {other:?}"),
        }
    };
    let run = RunId::generate();
    assert_eq!(store.lock_state(&run).await.unwrap(), None);
    let marks = acquired(false)(store.acquire_lock(&run, "a", 100, 200).await.unwrap());
    assert_eq!(
        store.acquire_lock(&run, "b", 150, 250).await.unwrap(),
        AcquireOutcome::Marked,
        "a live lease holds; the wake-up is counted for its holder"
    );
    let state = store.lock_state(&run).await.unwrap().unwrap();
    assert_eq!(
        (state.status, state.owner.as_str()),
        (LockStatus::Held, "a")
    );
    assert_eq!(state.marks, marks + 1, "the wake-up was counted");
    assert_eq!(
        store.renew_lock(&run, "a", 250).await.unwrap(),
        marks + 1,
        "a renewal says the count as it left it"
    );
    let now = match store.release_lock(&run, "a", marks, &none).await.unwrap() {
        ReleaseOutcome::Marked { marks } => marks,
        other => panic!("a lock marked since it was taken cannot be released: {other:?}"),
    };
    assert_eq!(now, marks + 1, "the release says the count now");
    assert!(
        store
            .release_lock(&run, "b", now, &none)
            .await
            .unwrap_err()
            .is_condition_failed(),
        "only the owner releases"
    );
    let retried = acquired(true)(store.acquire_lock(&run, "a", 150, 200).await.unwrap());
    assert!(
        retried > now,
        "an acquire tried again (its answer lost) finds its own hold, not another's"
    );
    assert_eq!(
        store.release_lock(&run, "a", retried, &none).await.unwrap(),
        ReleaseOutcome::Released
    );
    assert_eq!(
        store.lock_state(&run).await.unwrap().unwrap().status,
        LockStatus::Released
    );
    assert!(
        store
            .renew_lock(&run, "a", 300)
            .await
            .unwrap_err()
            .is_condition_failed(),
        "a released lock is not renewed"
    );

    acquired(false)(store.acquire_lock(&run, "b", 300, 400).await.unwrap());
    let taken = acquired(true)(store.acquire_lock(&run, "c", 401, 500).await.unwrap());
    assert!(
        store
            .renew_lock(&run, "b", 600)
            .await
            .unwrap_err()
            .is_condition_failed(),
        "the old holder lost it"
    );
    assert!(
        store
            .release_lock(&run, "b", taken, &none)
            .await
            .unwrap_err()
            .is_condition_failed(),
        "the old holder cannot release it"
    );
    assert!(matches!(
        store.complete_lock(&run, "b").await,
        Err(StoreError::ConditionFailed { .. })
    ));
    store.complete_lock(&run, "c").await.unwrap();
    assert_eq!(
        store.acquire_lock(&run, "d", 10_000, 20_000).await.unwrap(),
        AcquireOutcome::Completed,
        "completed is final"
    );
    let err = (store.take_lock_with(&run, "d", 0, u64::MAX, &StepWrites::default()))
        .await
        .unwrap_err();
    assert!(
        err.is_condition_failed(),
        "a completed lock was made: {err}"
    );
    assert_eq!(
        store.lock_state(&run).await.unwrap().unwrap().status,
        LockStatus::Completed
    );

    // A lock whose lease ended is not held: the caller takes it over, learning that the
    // holder may have left wake-ups unread (its marks among them).
    let run = RunId::generate();
    acquired(false)(store.acquire_lock(&run, "a", 100, 200).await.unwrap());
    assert_eq!(
        store.acquire_lock(&run, "b", 150, 250).await.unwrap(),
        AcquireOutcome::Marked
    );
    let marks = acquired(true)(store.acquire_lock(&run, "b", 201, 300).await.unwrap());
    assert_eq!(
        store.release_lock(&run, "b", marks, &none).await.unwrap(),
        ReleaseOutcome::Released,
        "the takeover accounted for every mark before it"
    );
    acquired(false)(store.acquire_lock(&run, "b", 210, 300).await.unwrap());
    // A holder gives the lock back by ending its lease; a renewal sent before that, landing
    // after, does not revive it.
    store.renew_lock(&run, "b", 0).await.unwrap();
    assert!(
        store
            .renew_lock(&run, "b", 400)
            .await
            .unwrap_err()
            .is_condition_failed(),
        "an ended lease stays ended"
    );
    acquired(true)(store.acquire_lock(&run, "c", 250, 350).await.unwrap());
}
