//! `sluice cancel` end to end: a run carried by a `sluice run` in another terminal is
//! stopped (its orders get SIGTERM, which they may trap, then SIGKILL after the grace
//! period), ends `cancelled` saying who cancelled, and that `sluice run` exits 5; a run no
//! `sluice` carries any more is cancelled by `sluice cancel` itself.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sluice_contract::result::DoneDoc;
use sluice_contract::{JobStatus, OrderStatus};

use crate::util::{Sandbox, announced_run, sluice, start_run, wait_for};

/// The done document of `run` in `sandbox`'s state folder.
fn done_in(sandbox: &Sandbox, run: &str) -> DoneDoc {
    let path = sandbox.state().join("done").join(run).join("done");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn status_of(done: &DoneDoc, name: &str) -> (OrderStatus, Option<String>) {
    let order = done.orders.iter().find(|o| o.order_name == name).unwrap();
    (order.status, order.reason.clone())
}

#[test]
fn a_run_is_cancelled_from_a_second_terminal() {
    let sandbox = Sandbox::new();
    let marks = sandbox.path().display().to_string();
    // `trapper` traps SIGTERM and says so; `stubborn` ignores it and is killed after the
    // grace period; both start once `quick` has ended; `after` waits for trapper and
    // never starts.
    let job = serde_json::json!({"orders": [
        {"order_name": "quick", "timeout": 60, "cmds": ["echo done"]},
        {"order_name": "trapper", "timeout": 300, "dependencies": ["quick"], "cmds": [format!(
            "trap 'echo got SIGTERM; touch {marks}/trapped; exit 143' TERM; touch {marks}/started; while true; do sleep 0.1; done"
        )]},
        {"order_name": "stubborn", "timeout": 300, "dependencies": ["quick"], "cmds": [format!(
            "trap '' TERM; touch {marks}/stubborn; while true; do sleep 0.1; done"
        )]},
        {"order_name": "after", "timeout": 60, "dependencies": ["trapper"], "cmds": [
            format!("touch {marks}/after-ran")
        ]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let (mut runner, stderr) = start_run(&sandbox, &job, &["--grace-period", "2"]);
    let run = announced_run(&stderr);
    wait_for("the orders to start", || {
        sandbox.path().join("started").exists() && sandbox.path().join("stubborn").exists()
    });

    let started = Instant::now();
    let cancel = sluice()
        .args(["cancel", &run, "--state-dir"])
        .arg(sandbox.state())
        .env("USER", "carol")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&cancel.stderr);
    assert_eq!(cancel.status.code(), Some(0), "{said}");
    assert!(said.contains("carol asked to cancel it"), "{said}");
    // The summary, as the runner's.
    let summary = String::from_utf8_lossy(&cancel.stdout);
    assert!(summary.contains("job cancelled:"), "{summary}");

    // The runner stopped its orders and exits 5, the cancelled job's code.
    assert_eq!(runner.wait().unwrap().code(), Some(5));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "the stubborn order had its grace period: {waited:?}"
    );
    let done = done_in(&sandbox, &run);
    assert_eq!(done.status, JobStatus::Cancelled);
    assert_eq!(done.cancelled_by.as_deref(), Some("carol"));
    assert_eq!(done.summary.cancelled, 3);
    let by_carol = Some("cancelled by carol".to_owned());
    assert_eq!(status_of(&done, "quick").0, OrderStatus::Succeeded);
    for name in ["trapper", "stubborn", "after"] {
        assert_eq!(
            status_of(&done, name),
            (OrderStatus::Cancelled, by_carol.clone()),
            "{name}"
        );
    }
    assert!(
        sandbox.path().join("trapped").exists(),
        "SIGTERM reached the trap"
    );
    assert!(!sandbox.path().join("after-ran").exists());
    let runner_said = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        runner_said.contains(&format!("run {run} cancelled by carol")),
        "{runner_said}"
    );

    // Asked again: the run has ended.
    let again = sluice()
        .args(["cancel", &run, "--state-dir"])
        .arg(sandbox.state())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("had ended (cancelled)"));
}

#[test]
fn a_run_whose_sluice_died_is_cancelled_by_sluice_cancel_itself() {
    let sandbox = Sandbox::new();
    let marks = sandbox.path().display().to_string();
    let job = serde_json::json!({"orders": [
        {"order_name": "long", "timeout": 300, "cmds": [
            format!("touch {marks}/started; sleep 300")
        ]},
        {"order_name": "next", "timeout": 60, "dependencies": ["long"], "cmds": ["true"]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let (mut runner, stderr) = start_run(&sandbox, &job, &[]);
    let run = announced_run(&stderr);
    wait_for("the order to start", || {
        sandbox.path().join("started").exists()
    });
    kill(Pid::from_raw(runner.id() as i32), Signal::SIGKILL).unwrap();
    runner.wait().unwrap();

    let cancel = sluice()
        .args(["cancel", &run, "--state-dir"])
        .arg(sandbox.state())
        .env("USER", "dave")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&cancel.stderr);
    assert_eq!(cancel.status.code(), Some(0), "{said}");
    let done = done_in(&sandbox, &run);
    assert_eq!(done.status, JobStatus::Cancelled);
    assert_eq!(done.cancelled_by.as_deref(), Some("dave"));
    for name in ["long", "next"] {
        assert_eq!(
            status_of(&done, name),
            (OrderStatus::Cancelled, Some("cancelled by dave".to_owned()))
        );
    }
}

#[test]
fn cancel_names_an_unknown_run_and_a_bad_id() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"orders": [{"order_name": "a", "timeout": 10, "cmds": ["true"]}]}"#,
    );
    assert!(sandbox.run(&job, &[]).status.success());
    let unknown = sluice()
        .args([
            "cancel",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "--state-dir",
        ])
        .arg(sandbox.state())
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(3));
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        "{said}"
    );
    let bad = sluice()
        .args(["cancel", "nope", "--state-dir"])
        .arg(sandbox.state())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a run id"));
}
