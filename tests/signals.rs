//! Stopping `sluice run` (SIGTERM, Ctrl-C) stops the run's processes too.

mod util;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{Sandbox, is_gone};

fn stop_with(signal: Signal, expected_code: i32) {
    let sandbox = Sandbox::new();
    let pid_file = sandbox.path().join("pid");
    let job = format!(
        r#"{{"orders": [{{"order_name": "long", "timeout": 300, "env_vars": {{"PID_FILE": "{}"}},
            "cmds": ["sleep 300 & echo $! > \"$PID_FILE\"; wait"]}}]}}"#,
        pid_file.display()
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
    while !pid_file.exists()
        || std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the order never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sleeper = std::fs::read_to_string(&pid_file).unwrap();
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(expected_code));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_gone(&sleeper) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(is_gone(&sleeper), "the order's process outlived sluice");
}

#[test]
fn sigterm_stops_the_runs_processes() {
    stop_with(Signal::SIGTERM, 143);
}

#[test]
fn ctrl_c_stops_the_runs_processes() {
    stop_with(Signal::SIGINT, 130);
}
