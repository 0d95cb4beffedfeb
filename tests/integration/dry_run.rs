//! `sluice run --dry-run` and `sluice validate --plan`: the plan in waves, every check made,
//! nothing run and nothing written.

use std::path::Path;

use crate::util::{Sandbox, sluice};

/// A diamond (`fetch` → `build`, `lint` → `publish`) with an order alone beside it; each
/// command would leave a file in `marks` if it ran (an order's commands run in a work
/// folder of their own: the path must be absolute), and one would retitle the terminal.
fn job(marks: &Path) -> String {
    let touch = |name: &str| format!("touch {}", marks.join(format!("ran-{name}")).display());
    let job = serde_json::json!({"orders": [
        {"order_name": "publish", "cmds": [touch("publish")], "timeout": 5, "dependencies": ["build", "lint"]},
        {"order_name": "fetch", "cmds": [touch("fetch"), "set -e\necho two lines"], "timeout": 7},
        {"order_name": "build", "cmds": [touch("build")], "timeout": 5, "dependencies": ["fetch"], "must_succeed": false},
        {"order_name": "lint", "cmds": [format!("{}; echo \u{1b}]0;owned\u{7}", touch("lint"))], "timeout": 5,
         "dependencies": ["fetch"], "execution_target": "lambda"},
        {"order_name": "alone", "cmds": [touch("alone")], "timeout": 5}
    ]});
    job.to_string()
}

fn nothing_ran_or_was_written(sandbox: &Sandbox) {
    assert!(!sandbox.state().exists(), "a dry run makes no state folder");
    let left: Vec<_> = std::fs::read_dir(sandbox.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("ran-"))
        .collect();
    assert!(left.is_empty(), "commands ran: {left:?}");
}

#[test]
fn a_dry_run_prints_the_waves_and_runs_nothing() {
    let sandbox = Sandbox::new();
    sandbox.write_job("job.json", &job(sandbox.path()));
    let marks = sandbox.path().display();
    let output = sluice()
        .current_dir(sandbox.path())
        .args(["run", "--dry-run", "job.json", "--state-dir"])
        .arg(sandbox.state())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let expected = format!(
        "\
job.json: valid, 5 orders
plan: 3 waves; a wave's orders can run at the same time, each once the orders it waits for have ended
wave 1:
  0002 fetch (timeout 7 s, codebuild on AWS)
      $ touch {marks}/ran-fetch
      $ set -e
        echo two lines
  0005 alone (timeout 5 s, codebuild on AWS)
      $ touch {marks}/ran-alone
wave 2:
  0003 build (timeout 5 s, codebuild on AWS, must_succeed false: its failure does not fail the job)
      after 0002 fetch
      $ touch {marks}/ran-build
  0004 lint (timeout 5 s, lambda on AWS)
      after 0002 fetch
      $ touch {marks}/ran-lint; echo \\u{{1b}}]0;owned\\u{{7}}
wave 3:
  0001 publish (timeout 5 s, codebuild on AWS)
      after 0003 build, 0004 lint
      $ touch {marks}/ran-publish
"
    );
    assert_eq!(text, expected);
    nothing_ran_or_was_written(&sandbox);

    // `validate --plan` prints the same.
    let validated = sluice()
        .current_dir(sandbox.path())
        .args(["validate", "--plan", "job.json"])
        .output()
        .unwrap();
    assert!(validated.status.success(), "{validated:?}");
    assert_eq!(String::from_utf8(validated.stdout).unwrap(), expected);
}

#[test]
fn a_dry_run_as_json_gives_each_wave_its_orders() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job("job.json", &job(sandbox.path()));
    let output = sandbox.run(&job, &["--dry-run"]);
    assert!(output.status.success(), "{output:?}");
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["orders"], 5);
    let waves: Vec<Vec<(String, serde_json::Value)>> = plan["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|wave| {
            wave.as_array()
                .unwrap()
                .iter()
                .map(|order| {
                    (
                        order["order_num"].as_str().unwrap().to_owned(),
                        order["cmds"].clone(),
                    )
                })
                .collect()
        })
        .collect();
    let nums: Vec<Vec<&str>> = waves
        .iter()
        .map(|wave| wave.iter().map(|(num, _)| num.as_str()).collect())
        .collect();
    assert_eq!(
        nums,
        [vec!["0002", "0005"], vec!["0003", "0004"], vec!["0001"]]
    );
    let touch = format!("touch {}/ran-fetch", sandbox.path().display());
    assert_eq!(
        waves[0][0].1,
        serde_json::json!([touch, "set -e\necho two lines"])
    );
    assert_eq!(
        plan["waves"][2][0]["depends_on"],
        serde_json::json!(["0003", "0004"])
    );
    assert_eq!(plan["waves"][1][0]["must_succeed"], false);
    nothing_ran_or_was_written(&sandbox);
}

#[test]
fn a_dry_run_of_a_bad_job_exits_3_and_writes_nothing() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "a", "cmds": ["true"], "timeout": 5, "dependencies": ["b"]}]}"#,
    );
    let output = sandbox.run(&job, &["--dry-run"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown dependency \"b\""), "{stderr}");
    assert!(output.stdout.is_empty());
    nothing_ran_or_was_written(&sandbox);
    // Credentials are checked as `run` checks them: one the secrets file lacks, or any
    // without a secrets file, is named.
    let job = sandbox.write_job(
        "creds.json",
        r#"{"orders": [{"cmds": ["true"], "timeout": 5, "ssm_paths": ["/team/db"]}]}"#,
    );
    let secrets = sandbox.write_secrets(serde_json::json!({}));
    let secrets = secrets.to_str().unwrap();
    for extra in [&["--dry-run", "--secrets", secrets][..], &["--dry-run"]] {
        let output = sandbox.run(&job, extra);
        assert_eq!(output.status.code(), Some(3), "{extra:?}: {output:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("/team/db"));
    }
    // So are the settings `run` reads before it starts.
    let output = sandbox.run(
        &job,
        &["--dry-run", "--git-known-hosts", "/nonexistent/known_hosts"],
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    nothing_ran_or_was_written(&sandbox);
}

/// The plan says what the job's fields of issue 18 will do: each retry policy, each
/// condition with the orders it waits for, and each order's inputs.
#[test]
fn the_plan_shows_retry_policies_conditions_and_inputs() {
    let output = sluice()
        .args(["validate", "--plan"])
        .arg(crate::util::examples().join("release.json"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    for line in [
        "      retry: up to 2 more attempts on failed (exit codes 75), timed_out; waiting 0.5 s, doubling to 300 s, jittered",
        "      after 0002 apply, 0003 smoke-test: runs if apply.failed || apply.timed_out || smoke-test.failed, else skipped",
        "  0005 announce (timeout 30 s, codebuild on AWS)",
        "      inputs: PLAN_ID = plan.plan_id, PLAN_SUMMARY = plan.summary",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    assert!(text.contains("plan: 4 waves"), "{text}");
}
