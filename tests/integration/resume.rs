//! `sluice run` killed with SIGKILL: its orders' processes die with it (the sentinel), and
//! `sluice resume` carries the run to its done document without running again what ended.

use crate::util::{Sandbox, announced_run, sluice, start_run, succeeded, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Processes whose environment carries the run's id.
fn processes_of(run_id: &str) -> Vec<String> {
    let marker = format!("SLUICE_RUN_ID={run_id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.parse::<u32>().is_ok() && !crate::util::is_gone(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|b| *b == 0)
                    .any(|var| var == marker.as_bytes())
            })
        })
        .collect()
}

#[test]
fn a_run_whose_sluice_was_killed_leaves_no_process_and_is_resumed() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path().display().to_string();
    // `slow` runs until sluice dies (leaving a setsid daemon too) the first time, and
    // succeeds when run again; `quick` must run exactly once.
    let job = format!(
        r#"{{"orders": [
        {{"order_name": "slow", "timeout": 600, "cmds": [
          "if [ -f {dir}/ran ]; then echo second attempt; else touch {dir}/ran; setsid sh -c 'sleep 300' & sleep 300; fi"]}},
        {{"order_name": "quick", "timeout": 60, "cmds": ["echo once >> {dir}/quick.count"]}},
        {{"order_name": "after", "timeout": 60, "cmds": ["echo after"], "dependencies": ["slow", "quick"]}}
        ]}}"#
    );
    let job = sandbox.write_job_with_marks("job.json", &job);
    let (mut child, stderr) = start_run(&sandbox, &job, &[]);
    let run = announced_run(&stderr);
    wait_for("slow's start and quick's success", || {
        sandbox.path().join("ran").exists()
            && std::fs::read_to_string(&stderr).is_ok_and(|t| t.contains("quick succeeded"))
            && processes_of(&run).len() >= 3
    });

    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    wait_for("the orders' processes to die with sluice", || {
        processes_of(&run).is_empty()
    });

    let output = sluice()
        .arg("resume")
        .arg("--state-dir")
        .arg(sandbox.state())
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let done = succeeded(&output);
    assert_eq!(done.run_id, run);
    let log = sandbox.log_of(&done, "slow");
    assert!(log.contains("second attempt"), "{log}");
    let quick = std::fs::read_to_string(sandbox.path().join("quick.count")).unwrap();
    assert_eq!(quick, "once\n", "an order that ended is not run again");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains(&format!("resuming run {run}")), "{said}");
    assert!(processes_of(&run).is_empty());

    // Nothing is left to resume.
    let again = sluice()
        .arg("resume")
        .arg("--state-dir")
        .arg(sandbox.state())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to resume"));
}

#[test]
fn a_run_that_another_sluice_carries_is_not_resumed() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"orders": [{"order_name": "long", "timeout": 300, "cmds": ["sleep 300"]}]}"#,
    );
    let (mut child, stderr) = start_run(&sandbox, &job, &[]);
    let run = announced_run(&stderr);
    let output = sluice()
        .arg("resume")
        .arg(&run)
        .arg("--state-dir")
        .arg(sandbox.state())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("is being run by another sluice process"),
        "{said}"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    wait_for("the order to stop", || processes_of(&run).is_empty());
}

#[test]
fn resume_names_a_bad_run_id_and_a_missing_state_folder() {
    let sandbox = Sandbox::new();
    let output = sluice()
        .args(["resume", "not-a-run", "--state-dir"])
        .arg(sandbox.state())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a run id"));
    let output = sluice()
        .arg("resume")
        .arg("--state-dir")
        .arg(sandbox.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("holds no runs"));
}
