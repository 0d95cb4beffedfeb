//! Orders see only their own env, and a timed-out order's whole process tree is dead by the
//! time the timeout is reported.

mod util;

use std::time::{Duration, Instant};

use sluice_contract::{JobStatus, OrderStatus};
use util::{Sandbox, done_of};

#[test]
fn orders_see_only_their_own_env() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [
            {"order_name": "mine", "cmds": ["test \"$OWN\" = yes", "test -z \"$HOST_ONLY_SECRET\"", "test -z \"$OTHER\"", "env"], "env_vars": {"OWN": "yes"}, "timeout": 10},
            {"order_name": "other", "cmds": ["test \"$OTHER\" = 1"], "env_vars": {"OTHER": "1"}, "timeout": 10}
        ]}"#,
    );
    let output = sandbox
        .run_command(&job)
        .env("HOST_ONLY_SECRET", "from-the-shell-that-started-sluice")
        .output()
        .unwrap();
    let done = done_of(&output);
    assert_eq!(
        done.status,
        JobStatus::Succeeded,
        "{}",
        sandbox.log_of(&done, "mine")
    );
    let env = sandbox.log_of(&done, "mine");
    assert!(!env.contains("from-the-shell-that-started-sluice"), "{env}");
    assert!(
        env.contains("SLUICE_ORDER_NAME=mine") && env.contains("SLUICE_RUN_ID="),
        "{env}"
    );
}

#[test]
fn a_timed_out_orders_grandchildren_are_dead_when_it_is_reported() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    // The first order leaves two grandchildren, one ignoring SIGTERM. The second runs as
    // soon as the first is reported, and fails if any of them is still alive.
    let check = r#"for p in $(cat "$PIDS"); do if [ -d /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status; then echo "alive: $p"; exit 1; fi; done; echo all dead"#;
    let job = format!(
        r#"{{"orders": [
            {{"order_name": "hang", "timeout": 1, "env_vars": {{"PIDS": "{pids}"}},
              "cmds": ["sleep 300 & echo $! > \"$PIDS\"; sh -c 'trap \"\" TERM; while :; do sleep 1; done' & echo $! >> \"$PIDS\"; wait"]}},
            {{"order_name": "check", "timeout": 10, "must_succeed": false, "dependencies": ["hang"], "env_vars": {{"PIDS": "{pids}"}},
              "cmds": [{check:?}]}}
        ]}}"#,
        pids = pids.display()
    );
    let job = sandbox.write_job("job.json", &job);
    let grace = 2;
    let started = Instant::now();
    let output = sandbox.run(&job, &["--grace-period", &grace.to_string()]);
    let elapsed = started.elapsed();
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::TimedOut);
    assert_eq!(done.orders[0].status, OrderStatus::TimedOut);
    assert_eq!(
        done.orders[1].status,
        OrderStatus::Succeeded,
        "{}",
        sandbox.log_of(&done, "check")
    );
    assert_eq!(std::fs::read_to_string(&pids).unwrap().lines().count(), 2);
    // Reported within timeout + grace (plus start-up and the check order).
    let hang_ms = done.orders[0].duration_ms.unwrap();
    assert!(
        hang_ms <= (1 + grace) * 1000 + 1000,
        "reported after {hang_ms} ms"
    );
    assert!(elapsed < Duration::from_secs(1 + grace + 10), "{elapsed:?}");
}
