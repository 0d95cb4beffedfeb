//! `sluice rerun` end to end: a finished run's job run again as a new run naming it; with
//! `--failed`, what succeeded is not run again (it is reused, outputs and all) and the
//! rest is; each order runs the code its stored bundle held; and the runs that cannot be
//! rerun are refused, saying why.

use std::process::Output;

use sluice_contract::result::{DoneDoc, DoneOrder};
use sluice_contract::{JobStatus, OrderStatus, exit_codes};

use crate::util::{Sandbox, announced_run, done_of, sluice};

fn order<'a>(done: &'a DoneDoc, name: &str) -> &'a DoneOrder {
    done.orders.iter().find(|o| o.order_name == name).unwrap()
}

/// `sluice rerun RUN [extra]` on `sandbox`'s state folder, printing the done document.
fn rerun(sandbox: &Sandbox, run: &str, extra: &[&str]) -> Output {
    sluice()
        .arg("rerun")
        .arg(run)
        .arg("--state-dir")
        .arg(sandbox.state())
        .arg("--json")
        .args(extra)
        .env("SLUICE_WASM_CACHE", sandbox.wasm_cache())
        .output()
        .unwrap()
}

/// Lines of the file `name` in the sandbox (each order run appends one).
fn lines(sandbox: &Sandbox, name: &str) -> usize {
    std::fs::read_to_string(sandbox.path().join(name)).map_or(0, |text| text.lines().count())
}

/// A plan → apply flow whose `flaky` order fails until the file `fixed` exists; `plan`
/// counts its runs in `plan-runs` and publishes an id that `apply` takes.
fn plan_apply_job(sandbox: &Sandbox) -> std::path::PathBuf {
    let marks = sandbox.path().display().to_string();
    let job = serde_json::json!({"orders": [
        {"order_name": "plan", "timeout": 10, "cmds": [
            format!("echo ran >> {marks}/plan-runs"),
            "echo plan_id=plan-$$ >> \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "lint", "timeout": 10, "cmds": [format!("echo ran >> {marks}/lint-runs")]},
        {"order_name": "flaky", "timeout": 10, "dependencies": ["plan"], "cmds": [
            format!("echo ran >> {marks}/flaky-runs"),
            format!("test -e {marks}/fixed")
        ]},
        {"order_name": "apply", "timeout": 10, "dependencies": ["flaky"],
         "inputs": {"PLAN_ID": "plan.plan_id"},
         "cmds": [format!("echo \"$PLAN_ID\" >> {marks}/applied")]},
        {"order_name": "notify", "timeout": 10, "depends": "flaky.ended",
         "cmds": [format!("echo ran >> {marks}/notify-runs")]}
    ]});
    sandbox.write_job_with_marks("job.json", &job.to_string())
}

#[test]
fn rerun_failed_runs_only_what_did_not_succeed() {
    let sandbox = Sandbox::new();
    let job = plan_apply_job(&sandbox);
    let first = sandbox.run(&job, &[]);
    assert_eq!(first.status.code(), Some(exit_codes::FAILED));
    let first = done_of(&first);
    assert_eq!(order(&first, "flaky").status, OrderStatus::Failed);
    assert_eq!(order(&first, "notify").status, OrderStatus::Succeeded);
    assert_ne!(order(&first, "apply").status, OrderStatus::Succeeded);
    let plan_id = order(&first, "plan").outputs["plan_id"].clone();

    std::fs::write(sandbox.path().join("fixed"), "").unwrap();
    let report = sandbox.path().join("rerun.html");
    let again = rerun(
        &sandbox,
        &first.run_id,
        &["--failed", "--report", report.to_str().unwrap()],
    );
    let said = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(exit_codes::SUCCEEDED), "{said}");
    assert!(
        said.contains(&format!("rerun of {}", first.run_id)),
        "{said}"
    );
    let second = done_of(&again);
    assert_ne!(second.run_id, first.run_id);
    assert_eq!(second.status, JobStatus::Succeeded);
    assert_eq!(second.rerun_of.as_deref(), Some(first.run_id.as_str()));

    // What succeeded was not run again: reused, with its outputs and log.
    assert_eq!(lines(&sandbox, "plan-runs"), 1);
    assert_eq!(lines(&sandbox, "lint-runs"), 1);
    for name in ["plan", "lint"] {
        let reused = order(&second, name);
        assert_eq!(reused.status, OrderStatus::Succeeded);
        assert_eq!(reused.reused_from.as_deref(), Some(first.run_id.as_str()));
        assert_eq!(reused.log_key, order(&first, name).log_key);
    }
    assert_eq!(order(&second, "plan").outputs["plan_id"], plan_id);
    // Its report names the run it reruns and where the reused orders ran, with their
    // logs and outputs, and no timeline bar for them: they did not run in this run.
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(page.contains(&format!(
        "<dt>Rerun of</dt><dd><code>{}</code>",
        first.run_id
    )));
    let reused = format!("reused from run {}", first.run_id);
    assert_eq!(page.matches(&reused).count(), 2, "{page}");
    assert!(page.contains(&format!("plan_id={plan_id}")), "{page}");
    assert_eq!(page.matches(" style=\"left:").count(), 3, "{page}");
    // The rest ran, the consumer taking the reused order's output; and so did `notify`,
    // which succeeded but waits for an order that ran again.
    assert_eq!(lines(&sandbox, "flaky-runs"), 2);
    assert_eq!(lines(&sandbox, "notify-runs"), 2);
    for name in ["flaky", "apply", "notify"] {
        assert_eq!(order(&second, name).status, OrderStatus::Succeeded);
        assert_eq!(order(&second, name).reused_from, None);
    }
    let applied = std::fs::read_to_string(sandbox.path().join("applied")).unwrap();
    assert_eq!(applied.trim(), plan_id);
    // The summary says what was reused.
    assert!(
        said.contains(&format!("reused from {}", first.run_id)),
        "{said}"
    );

    // A rerun of the rerun reuses from the run each order ran in.
    std::fs::remove_file(sandbox.path().join("fixed")).unwrap();
    let third = rerun(&sandbox, &second.run_id, &[]);
    assert_eq!(third.status.code(), Some(exit_codes::FAILED));
    let third = done_of(&third);
    assert_eq!(third.rerun_of.as_deref(), Some(second.run_id.as_str()));
    assert_eq!(
        lines(&sandbox, "plan-runs"),
        2,
        "a rerun without --failed runs all"
    );
    let fourth = rerun(&sandbox, &third.run_id, &["--failed"]);
    let fourth = done_of(&fourth);
    assert_eq!(
        order(&fourth, "plan").reused_from.as_deref(),
        Some(third.run_id.as_str())
    );
    std::fs::write(sandbox.path().join("fixed"), "").unwrap();
    let fifth = done_of(&rerun(&sandbox, &fourth.run_id, &["--failed"]));
    assert_eq!(fifth.status, JobStatus::Succeeded);
    assert_eq!(
        order(&fifth, "plan").reused_from.as_deref(),
        Some(third.run_id.as_str()),
        "the run it ran in"
    );
    assert_eq!(lines(&sandbox, "plan-runs"), 2);
}

#[test]
fn a_rerun_runs_the_code_its_bundle_held() {
    let sandbox = Sandbox::new();
    let code = sandbox.path().join("code");
    std::fs::create_dir(&code).unwrap();
    std::fs::write(code.join("step.sh"), "echo first version\n").unwrap();
    let job = serde_json::json!({"orders": [
        {"order_name": "step", "timeout": 10, "code_dir": "code", "cmds": ["sh step.sh"]},
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let first = done_of(&sandbox.run(&job, &[]));
    std::fs::write(code.join("step.sh"), "echo second version\n").unwrap();

    let again = rerun(&sandbox, &first.run_id, &[]);
    let second = done_of(&again);
    assert_eq!(second.status, JobStatus::Succeeded);
    assert!(sandbox.log_of(&second, "step").contains("first version"));

    // An order a rerun reused runs, in a rerun of that rerun, the code of the run it ran in.
    let chained = serde_json::json!({"orders": [
        {"order_name": "step", "timeout": 10, "code_dir": "code", "cmds": ["sh step.sh"]},
        {"order_name": "gate", "timeout": 10, "cmds": [
            format!("test -e {}/open", sandbox.path().display())
        ]},
    ]});
    let chained = sandbox.write_job_with_marks("chained.json", &chained.to_string());
    std::fs::write(code.join("step.sh"), "echo chained first\n").unwrap();
    let a = done_of(&sandbox.run(&chained, &[]));
    std::fs::write(sandbox.path().join("open"), "").unwrap();
    let b = done_of(&rerun(&sandbox, &a.run_id, &["--failed"]));
    assert_eq!(
        order(&b, "step").reused_from.as_deref(),
        Some(a.run_id.as_str())
    );
    std::fs::write(code.join("step.sh"), "echo chained second\n").unwrap();
    let c = done_of(&rerun(&sandbox, &b.run_id, &[]));
    assert_eq!(c.status, JobStatus::Succeeded);
    assert!(sandbox.log_of(&c, "step").contains("chained first"));
    std::fs::write(code.join("step.sh"), "echo second version\n").unwrap();

    // Its bundle gone (expired), the code is fetched from the job again.
    let bundle = sandbox.object_path(&format!("tmp/exec/{}/0001/exec.zip", second.run_id));
    std::fs::remove_file(bundle).unwrap();
    let third = done_of(&rerun(&sandbox, &second.run_id, &[]));
    assert!(sandbox.log_of(&third, "step").contains("second version"));

    // And without the code folder either, the rerun is refused as the job would be.
    std::fs::remove_dir_all(&code).unwrap();
    let bundle = sandbox.object_path(&format!("tmp/exec/{}/0001/exec.zip", third.run_id));
    std::fs::remove_file(bundle).unwrap();
    let refused = rerun(&sandbox, &third.run_id, &[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        refused.status.code(),
        Some(exit_codes::INVALID_INPUT),
        "{said}"
    );
    assert!(
        said.contains("code_dir") && said.contains("not a folder"),
        "{said}"
    );
}

#[test]
fn runs_that_cannot_be_rerun_are_refused_saying_why() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"orders": [{"order_name": "a", "timeout": 10, "cmds": ["true"]}]}"#,
    );
    let done = done_of(&sandbox.run(&job, &[]));
    let refusal = |run: &str, extra: &[&str]| {
        let output = rerun(&sandbox, run, extra);
        assert_eq!(output.status.code(), Some(exit_codes::INVALID_INPUT));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let said = refusal(&done.run_id, &["--failed"]);
    assert!(said.contains("every one of its orders succeeded"), "{said}");
    let said = refusal("f81d4fae-7dec-41d0-a765-00a0c91e6bf6", &[]);
    assert!(said.contains("has no orders"), "{said}");
    let said = refusal("nope", &[]);
    assert!(said.contains("not a run id"), "{said}");

    let kept = sandbox.object_path(&format!("tmp/jobs/{}.age", done.run_id));
    std::fs::remove_file(kept).unwrap();
    let said = refusal(&done.run_id, &[]);
    assert!(said.contains("its job is not kept"), "{said}");
    assert!(said.contains("run the job file again"), "{said}");
}

#[test]
fn a_run_still_going_is_not_rerun() {
    let sandbox = Sandbox::new();
    let marks = sandbox.path().display().to_string();
    let job = sandbox.write_job_with_marks(
        "job.json",
        &serde_json::json!({"orders": [{"order_name": "slow", "timeout": 60, "cmds": [
            format!("touch {marks}/started; sleep 30")
        ]}]})
        .to_string(),
    );
    let (mut runner, stderr) = crate::util::start_run(&sandbox, &job, &[]);
    let run = announced_run(&stderr);
    crate::util::wait_for("the order to start", || {
        sandbox.path().join("started").exists()
    });
    let output = rerun(&sandbox, &run, &[]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(exit_codes::INVALID_INPUT),
        "{said}"
    );
    assert!(said.contains("it has not finished"), "{said}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    runner.wait().unwrap();
}

#[test]
fn an_order_whose_outputs_are_gone_runs_again() {
    let sandbox = Sandbox::new();
    let job = plan_apply_job(&sandbox);
    let first = done_of(&sandbox.run(&job, &[]));
    let outputs = order(&first, "plan").outputs_key.clone().unwrap();
    std::fs::remove_file(sandbox.object_path(&outputs)).unwrap();
    std::fs::write(sandbox.path().join("fixed"), "").unwrap();
    let second = done_of(&rerun(&sandbox, &first.run_id, &["--failed"]));
    assert_eq!(second.status, JobStatus::Succeeded);
    // `plan` ran again for `apply` to have its output; `lint` needs nothing and is reused.
    assert_eq!(lines(&sandbox, "plan-runs"), 2);
    assert_eq!(order(&second, "plan").reused_from, None);
    assert_eq!(lines(&sandbox, "lint-runs"), 1);
    let applied = std::fs::read_to_string(sandbox.path().join("applied")).unwrap();
    assert_eq!(applied.trim(), order(&second, "plan").outputs["plan_id"]);
}

#[test]
fn credentials_are_read_again_for_the_orders_that_run() {
    let sandbox = Sandbox::new();
    let marks = sandbox.path().display().to_string();
    let job = serde_json::json!({"orders": [
        {"order_name": "deploy", "timeout": 10, "secret_manager_paths": ["deploy-token"],
         "cmds": ["test \"$DEPLOY_TOKEN\" = tok-1"]},
        {"order_name": "check", "timeout": 10, "dependencies": ["deploy"],
         "cmds": [format!("test -e {marks}/fixed")]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let secrets = sandbox.write_secrets(serde_json::json!({"aws:::secretd:deploy-token": "tok-1"}));
    let secrets = secrets.to_str().unwrap();
    let first = done_of(&sandbox.run(&job, &["--secrets", secrets]));
    assert_eq!(order(&first, "deploy").status, OrderStatus::Succeeded);

    // Run again, `deploy` needs its credential again: without the file, refused.
    let refused = rerun(&sandbox, &first.run_id, &[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        refused.status.code(),
        Some(exit_codes::INVALID_INPUT),
        "{said}"
    );
    assert!(said.contains("deploy-token"), "{said}");
    let again = done_of(&rerun(&sandbox, &first.run_id, &["--secrets", secrets]));
    assert_eq!(order(&again, "deploy").status, OrderStatus::Succeeded);
    // Reused, it needs none.
    std::fs::write(sandbox.path().join("fixed"), "").unwrap();
    let reused = done_of(&rerun(&sandbox, &first.run_id, &["--failed"]));
    assert_eq!(reused.status, JobStatus::Succeeded);
    assert!(order(&reused, "deploy").reused_from.is_some());
}
