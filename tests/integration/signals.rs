//! Stopping `sluice run` (SIGTERM, Ctrl-C) stops the run's processes too.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Sandbox, done_of, processes_running};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sluice_contract::OrderStatus;

fn stop_with(signal: Signal, expected_code: i32) {
    let sandbox = Sandbox::new();
    // Found on the machine by its argument (in a sandbox, the pid the order sees is its own).
    let sleeper = format!("300.{}{}", std::process::id(), signal as i32);
    let job = format!(
        r#"{{"orders": [{{"order_name": "long", "timeout": 300,
            "cmds": ["sleep {sleeper} & wait"]}}]}}"#
    );
    let job = sandbox.write_job("job.json", &job);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&job)
        .arg("--state-dir")
        .arg(sandbox.state())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while processes_running(&sleeper).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the order never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(expected_code));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_running(&sleeper).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = processes_running(&sleeper);
    assert!(
        left.is_empty(),
        "the order's process outlived sluice: {left:?}"
    );
}

#[test]
fn sigterm_stops_the_runs_processes() {
    stop_with(Signal::SIGTERM, 143);
}

#[test]
fn ctrl_c_stops_the_runs_processes() {
    stop_with(Signal::SIGINT, 130);
}

/// Ctrl-C / SIGTERM stop a run gracefully: the running order gets SIGTERM and the grace
/// period to end (its trap runs), an order that ignores it is killed after the grace
/// period, orders not started are not started, and the run is finalized as `cancelled`
/// with every order stopped this way `cancelled`.
fn stop_gracefully(signal: Signal, expected_code: i32) {
    let sandbox = Sandbox::new();
    let dir = sandbox.path().display().to_string();
    let job = format!(
        r#"{{"orders": [
        {{"order_name": "traps", "timeout": 300, "cmds": [
          "trap 'echo cleaned up > {dir}/trapped; exit 0' TERM; touch {dir}/started; while true; do sleep 0.1; done"]}},
        {{"order_name": "ignores", "timeout": 300, "cmds": [
          "trap '' TERM; touch {dir}/ignoring; while true; do sleep 0.1; done"]}},
        {{"order_name": "never", "timeout": 60, "cmds": ["touch {dir}/never"], "dependencies": ["traps"]}},
        {{"order_name": "quick", "timeout": 60, "cmds": ["true"]}}
        ]}}"#
    );
    let job = sandbox.write_job_with_marks("job.json", &job);
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&job)
        .args(["--json", "--grace-period", "1", "--state-dir"])
        .arg(sandbox.state())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `quick` has reported (its result is stored) before the signal: a result that arrived
    // is applied, never cancelled.
    let quick_reported = || !sandbox.results_of("0004").is_empty();
    let started = Instant::now();
    while !(sandbox.path().join("started").exists()
        && sandbox.path().join("ignoring").exists()
        && quick_reported())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the orders never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(expected_code), "{said}");
    let done: sluice_contract::result::DoneDoc = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{said}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(done.status, sluice_contract::JobStatus::Cancelled);
    let status_of = |name: &str| {
        done.orders
            .iter()
            .find(|o| o.order_name == name)
            .map(|o| o.status)
            .unwrap()
    };
    use sluice_contract::OrderStatus::{Cancelled, Succeeded};
    assert_eq!(status_of("traps"), Cancelled, "whatever its exit code");
    assert_eq!(status_of("ignores"), Cancelled);
    assert_eq!(status_of("never"), Cancelled);
    assert_eq!(status_of("quick"), Succeeded);
    assert_eq!(done.summary.cancelled, 3);
    let trapped = std::fs::read_to_string(sandbox.path().join("trapped")).unwrap();
    assert_eq!(
        trapped, "cleaned up\n",
        "the order got SIGTERM and time to clean up"
    );
    assert!(
        !sandbox.path().join("never").exists(),
        "nothing starts once stopped"
    );
    let log = sandbox.log_of(&done, "traps");
    assert!(
        log.contains("stopped because the run was cancelled"),
        "{log}"
    );
}

#[test]
fn ctrl_c_cancels_the_run_after_a_grace_period() {
    stop_gracefully(Signal::SIGINT, 130);
}

#[test]
fn sigterm_cancels_the_run_after_a_grace_period() {
    stop_gracefully(Signal::SIGTERM, 143);
}

/// A signal while the job is being queued (here: packaging a 256 MiB code folder) does not
/// kill sluice half-way through init: the run is queued, then stopped at once — finalized
/// `cancelled`, nothing started. Before, the handlers were installed only once the job was
/// queued, and SIGTERM killed sluice with its run half made.
#[test]
fn sigterm_while_the_job_is_queued_cancels_the_run() {
    let sandbox = Sandbox::new();
    let code = sandbox.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::File::create(code.join("big.bin"))
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let marker = sandbox.path().join("ran");
    let job = format!(
        r#"{{"orders": [{{"order_name": "never", "timeout": 60, "code_dir": "code",
            "cmds": ["touch {}"]}}]}}"#,
        marker.display()
    );
    let job = sandbox.write_job_with_marks("job.json", &job);
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&job)
        .args(["--json", "--state-dir"])
        .arg(sandbox.state())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run is owned (its lock taken) just before init starts packaging.
    let owners = sandbox.state().join("owners");
    let started = Instant::now();
    while std::fs::read_dir(&owners).map_or(true, |mut found| found.next().is_none()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "init never began"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{said}");
    assert!(said.contains("stops as soon as it is queued"), "{said}");
    let done: sluice_contract::result::DoneDoc = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{said}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(done.status, sluice_contract::JobStatus::Cancelled);
    assert_eq!(
        done.orders[0].status,
        sluice_contract::OrderStatus::Cancelled
    );
    assert!(!marker.exists(), "nothing starts once stopped");
}

/// A supervisor may start `sluice` with SIGCHLD ignored, which `execve` keeps: the kernel
/// would then reap every command's shell as it ends, and `sluice` could tell neither how a
/// command ended nor keep the shell's group id from being reused. It puts SIGCHLD back.
#[test]
fn a_sluice_started_with_sigchld_ignored_still_sees_how_commands_end() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"orders": [
            {"order_name": "ok", "timeout": 30, "cmds": ["true", "sleep 0.2"]},
            {"order_name": "bad", "timeout": 30, "must_succeed": false, "cmds": ["exit 3"]}
        ]}"#,
    );
    // perl (in every Debian base system) ignores SIGCHLD and execs sluice.
    let output = Command::new("perl")
        .args([
            "-e",
            r#"$SIG{CHLD} = "IGNORE"; exec @ARGV or die "exec: $!""#,
        ])
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&job)
        .arg("--state-dir")
        .arg(sandbox.state())
        .arg("--json")
        .output()
        .unwrap();
    let done = done_of(&output);
    let status_of = |name: &str| {
        let order = done.orders.iter().find(|o| o.order_name == name).unwrap();
        (order.status, order.exit_code)
    };
    assert_eq!(
        status_of("ok"),
        (OrderStatus::Succeeded, Some(0)),
        "{done:?}"
    );
    assert_eq!(status_of("bad"), (OrderStatus::Failed, Some(3)), "{done:?}");
}
