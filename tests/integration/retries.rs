//! Retries end to end: an order run again after a failure or a time-out as its `retry`
//! policy says — each attempt with its own id, log and `SLUICE_ATTEMPT`, after its backoff —
//! its dependents waiting for the last attempt, and no retry past the job's deadline.

use sluice_contract::result::{AttemptRecord, DoneDoc};
use sluice_contract::{JobStatus, OrderStatus};

use crate::util::{Sandbox, done_of};

fn attempts_of<'a>(done: &'a DoneDoc, name: &str) -> &'a [AttemptRecord] {
    &done
        .orders
        .iter()
        .find(|o| o.order_name == name)
        .unwrap()
        .attempts
}

fn statuses(attempts: &[AttemptRecord]) -> Vec<OrderStatus> {
    attempts.iter().map(|a| a.status).collect()
}

#[test]
fn a_flaky_order_is_run_again_after_its_backoff_until_it_succeeds() {
    let sandbox = Sandbox::new();
    let counter = sandbox.path().join("count");
    // Fails twice, then succeeds; says which attempt it is.
    let flaky = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo attempt $SLUICE_ATTEMPT; [ $n -ge 3 ]",
        c = counter.display()
    );
    let job = serde_json::json!({"orders": [
        {"order_name": "flaky", "cmds": [flaky], "timeout": 10,
         "retry": {"limit": 4, "backoff": 0.2, "max_backoff": 0.3}},
        {"order_name": "after", "cmds": [format!("cat {}", counter.display())], "timeout": 10,
         "dependencies": ["flaky"]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let done = done_of(&sandbox.run(&job, &[]));
    assert_eq!(done.status, JobStatus::Succeeded);
    let attempts = attempts_of(&done, "flaky");
    assert_eq!(
        statuses(attempts),
        [
            OrderStatus::Failed,
            OrderStatus::Failed,
            OrderStatus::Succeeded
        ]
    );
    // Each attempt: its number, its own id and log, and its SLUICE_ATTEMPT.
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.number, i as u32 + 1);
        let log = std::fs::read_to_string(sandbox.object_path(attempt.log_key.as_ref().unwrap()))
            .unwrap();
        assert!(log.contains(&format!("attempt {}\n", i + 1)), "{log}");
    }
    let ids: std::collections::HashSet<_> = attempts.iter().map(|a| &a.attempt).collect();
    assert_eq!(ids.len(), 3);
    // Delays: 0.2 s, then 0.3 s (0.4 capped), each jittered to between half and all.
    for (ended, next, delay_ms) in [
        (&attempts[0], &attempts[1], 200),
        (&attempts[1], &attempts[2], 300),
    ] {
        let waited = next.dispatched_at_ms.unwrap() - ended.finished_at_ms.unwrap();
        assert!(waited >= delay_ms / 2, "waited {waited} ms of {delay_ms}");
    }
    // The last attempt decides the order, and its dependent waited for it.
    let flaky = done
        .orders
        .iter()
        .find(|o| o.order_name == "flaky")
        .unwrap();
    assert_eq!(
        (flaky.status, flaky.exit_code),
        (OrderStatus::Succeeded, Some(0))
    );
    assert_eq!(sandbox.log_of(&done, "after").lines().nth(1), Some("3"));
}

#[test]
fn exit_codes_narrow_which_failures_retry() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"orders": [
            {"order_name": "busy", "cmds": ["exit 75"], "timeout": 10,
             "retry": {"limit": 2, "backoff": 0.05, "exit_codes": [75]}},
            {"order_name": "broken", "cmds": ["exit 2"], "timeout": 10, "must_succeed": false,
             "retry": {"limit": 2, "backoff": 0.05, "exit_codes": [75]}}
        ]}"#,
    );
    let output = sandbox.run(&job, &[]);
    let done = done_of(&output);
    assert_eq!(
        statuses(attempts_of(&done, "busy")),
        [OrderStatus::Failed; 3],
        "two more attempts, then the last decides"
    );
    assert_eq!(
        statuses(attempts_of(&done, "broken")),
        [OrderStatus::Failed],
        "exit 2 is not retried"
    );
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn time_outs_retry_when_the_policy_says_so() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"orders": [
            {"order_name": "slow", "cmds": ["sleep 30"], "timeout": 1,
             "retry": {"limit": 1, "backoff": 0.05}},
            {"order_name": "failures-only", "cmds": ["sleep 30"], "timeout": 1, "must_succeed": false,
             "retry": {"limit": 1, "backoff": 0.05, "on": ["failed"]}}
        ]}"#,
    );
    let done = done_of(&sandbox.run(&job, &["--grace-period", "0"]));
    assert_eq!(
        statuses(attempts_of(&done, "slow")),
        [OrderStatus::TimedOut, OrderStatus::TimedOut]
    );
    assert_eq!(
        statuses(attempts_of(&done, "failures-only")),
        [OrderStatus::TimedOut]
    );
    assert_eq!(done.status, JobStatus::TimedOut);
}

#[test]
fn no_retry_starts_past_the_jobs_deadline() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"job_timeout": 3, "orders": [
            {"order_name": "doomed", "cmds": ["exit 1"], "timeout": 2,
             "retry": {"limit": 10, "backoff": 1, "max_backoff": 1}}
        ]}"#,
    );
    let started = std::time::Instant::now();
    let done = done_of(&sandbox.run(&job, &[]));
    let doomed = &done.orders[0];
    // Retries count against the job's 3 s: a few attempts 0.5–1 s apart, however slow the
    // machine, never ten; the last failure ends the order (a retry the deadline cuts
    // leaves it as its last attempt ended), and the run ends at the deadline.
    assert!(
        (1..=7).contains(&doomed.attempts.len()),
        "{} attempts",
        doomed.attempts.len()
    );
    assert!(
        statuses(&doomed.attempts)
            .iter()
            .all(|s| *s == OrderStatus::Failed)
    );
    assert_eq!(doomed.status, OrderStatus::Failed);
    assert_eq!(doomed.exit_code, Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
