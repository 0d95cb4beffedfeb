//! Conditional dependencies (`depends`) end to end: branches that run or are skipped by
//! what the orders they name did, skips cascading through plain dependencies, and a job
//! that skipped orders never fail.

use sluice_contract::{JobStatus, OrderStatus};

use crate::util::{Sandbox, done_of};

#[test]
fn branches_run_or_are_skipped_by_what_the_orders_they_name_did() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        &r#"{"orders": [
            {"order_name": "build", "cmds": ["echo built"], "timeout": 10},
            {"order_name": "lint", "cmds": ["exit 1"], "timeout": 10, "must_succeed": false},
            {"order_name": "deploy", "cmds": ["touch MARKS/deployed"], "timeout": 10,
             "depends": "build.succeeded && lint.succeeded"},
            {"order_name": "notify", "cmds": ["touch MARKS/notified"], "timeout": 10, "dependencies": ["deploy"]},
            {"order_name": "cleanup", "cmds": ["echo cleaning up"], "timeout": 10,
             "depends": "build.failed || (lint.failed && !deploy.succeeded)"},
            {"order_name": "report", "cmds": ["echo report"], "timeout": 10,
             "depends": "notify.skipped && cleanup.ended"}
        ]}"#
        .replace("MARKS", &sandbox.path().display().to_string()),
    );
    let output = sandbox.run(&job, &[]);
    let done = done_of(&output);
    let outcome: Vec<(&str, OrderStatus, Option<&str>)> = (done.orders.iter())
        .map(|o| (o.order_name.as_str(), o.status, o.reason.as_deref()))
        .collect();
    assert_eq!(
        outcome,
        [
            ("build", OrderStatus::Succeeded, None),
            (
                "lint",
                OrderStatus::Failed,
                Some("command 1 failed: exit code 1")
            ),
            (
                "deploy",
                OrderStatus::Skipped,
                Some("condition false: build.succeeded && lint.succeeded")
            ),
            ("notify", OrderStatus::Skipped, Some("dependency_skipped")),
            ("cleanup", OrderStatus::Succeeded, None),
            ("report", OrderStatus::Succeeded, None),
        ]
    );
    // Skipped orders never ran (an order's commands run in a folder of their own: the
    // marks' path is absolute), and never fail the job (lint need not succeed).
    assert!(!sandbox.path().join("deployed").exists());
    assert!(!sandbox.path().join("notified").exists());
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(done.summary.skipped, 2);
}

#[test]
fn a_skipped_dependency_waits_for_the_others_and_a_failure_among_them_fails() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [
            {"order_name": "fast", "cmds": ["true"], "timeout": 10},
            {"order_name": "early", "cmds": ["true"], "timeout": 10, "depends": "fast.failed"},
            {"order_name": "slow", "cmds": ["sleep 0.5; exit 4"], "timeout": 10, "must_succeed": false},
            {"order_name": "both", "cmds": ["true"], "timeout": 10, "dependencies": ["early", "slow"]},
            {"order_name": "optional", "cmds": ["true"], "timeout": 10, "dependencies": ["early", "slow"],
             "must_succeed": false}
        ]}"#,
    );
    let done = done_of(&sandbox.run(&job, &[]));
    let status: Vec<(OrderStatus, Option<&str>)> = (done.orders.iter())
        .map(|o| (o.status, o.reason.as_deref()))
        .collect();
    // `early` is skipped long before `slow` fails; `both` waits for `slow` rather than
    // being skipped at once, and fails with it: which order ends first changes nothing.
    assert_eq!(status[1].0, OrderStatus::Skipped);
    assert_eq!(status[3], (OrderStatus::Failed, Some("dependency_failed")));
    assert_eq!(
        status[4],
        (OrderStatus::Skipped, Some("dependency_skipped"))
    );
    assert_eq!(done.status, JobStatus::Failed);
}
