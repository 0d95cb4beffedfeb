//! Every example job runs with `sluice run` and ends with the statuses it is meant to show.

use crate::util::{Sandbox, done_of, examples, sluice};
use sluice_contract::{JobStatus, OrderStatus};

fn status_of(done: &sluice_contract::result::DoneDoc, name: &str) -> (OrderStatus, Option<String>) {
    let order = done.orders.iter().find(|o| o.order_name == name).unwrap();
    (order.status, order.reason.clone())
}

#[test]
fn hello_greets_from_its_code_folder() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&examples().join("hello.json"), &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Succeeded);
    let log = sandbox.log_of(&done, "greet");
    assert!(log.contains("Hello, Sluice!"), "{log}");
    assert!(log.contains("order 0001 (greet)"), "{log}");
    let keys = sandbox.state().join("keys").join(&done.run_id);
    assert!(
        !keys.exists(),
        "the run's private keys are deleted when it ends"
    );
}

#[test]
fn diamond_runs_its_middle_orders_at_the_same_time() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&examples().join("diamond.json"), &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let done = done_of(&output);
    let window = |name: &str| {
        let log = sandbox.log_of(&done, name);
        let time = |word: &str| -> f64 {
            log.lines()
                .find(|l| l.ends_with(&format!("{word} {name}")))
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (time("start"), time("end"))
    };
    let (fetch_start, fetch_end) = window("fetch");
    let (build_start, build_end) = window("build");
    let (lint_start, lint_end) = window("lint");
    let (publish_start, _) = window("publish");
    assert!(
        fetch_start < fetch_end && fetch_end <= build_start && fetch_end <= lint_start,
        "the wave waits for fetch"
    );
    assert!(
        build_start < lint_end && lint_start < build_end,
        "build and lint overlap"
    );
    assert!(
        publish_start >= build_end && publish_start >= lint_end,
        "publish waits for both"
    );
}

#[test]
fn cascade_fails_dependents_and_runs_optional_orders() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&examples().join("cascade.json"), &[]);
    assert_eq!(output.status.code(), Some(1));
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(status_of(&done, "migrate").0, OrderStatus::Failed);
    assert_eq!(
        status_of(&done, "deploy"),
        (OrderStatus::Failed, Some("dependency_failed".into()))
    );
    assert_eq!(
        status_of(&done, "smoke-test"),
        (OrderStatus::Failed, Some("dependency_failed".into()))
    );
    assert_eq!(
        status_of(&done, "notify").0,
        OrderStatus::Succeeded,
        "must_succeed=false runs whatever its dependencies did"
    );
    assert_eq!(status_of(&done, "optional-lint").0, OrderStatus::Failed);
    assert_eq!(status_of(&done, "docs").0, OrderStatus::Succeeded);
    let migrate = done
        .orders
        .iter()
        .find(|o| o.order_name == "migrate")
        .unwrap();
    assert_eq!(migrate.exit_code, Some(3));
    assert!(
        sandbox
            .log_of(&done, "migrate")
            .contains("schema check failed")
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("schema check failed"),
        "the summary shows the failed order's log: {stderr}"
    );
}

/// Plan, apply (taking the plan's outputs, and retried once: the first attempt finds the
/// state lock held, exit 75), smoke test, then the release announced with apply's output
/// and the rollback skipped.
#[test]
fn release_retries_its_apply_and_skips_its_rollback() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&examples().join("release.json"), &[]);
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Succeeded);
    let apply = done
        .orders
        .iter()
        .find(|o| o.order_name == "apply")
        .unwrap();
    let attempts: Vec<_> = (apply.attempts.iter())
        .map(|a| (a.status, a.exit_code))
        .collect();
    assert_eq!(
        attempts,
        [
            (OrderStatus::Failed, Some(75)),
            (OrderStatus::Succeeded, Some(0))
        ]
    );
    assert_eq!(status_of(&done, "announce").0, OrderStatus::Succeeded);
    // The plan's outputs reached apply, and apply's reached the announcement.
    let log = sandbox.log_of(&done, "apply");
    assert!(
        log.contains("apply release-42, attempt 2\n")
            && log.contains("applied:\n3 to add\n1 to change\n0 to destroy\n"),
        "{log}"
    );
    assert!(
        sandbox
            .log_of(&done, "announce")
            .contains("released release-42\n")
    );
    assert_eq!(apply.outputs["version"], "release-42");
    assert_eq!(
        status_of(&done, "rollback"),
        (
            OrderStatus::Skipped,
            Some(
                "condition false: apply.failed || apply.timed_out || smoke-test.failed".to_owned()
            )
        )
    );
}

#[test]
fn timeout_stops_the_hanging_order_and_reports_timed_out() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&examples().join("timeout.json"), &["--grace-period", "2"]);
    assert_eq!(output.status.code(), Some(2));
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::TimedOut);
    assert_eq!(status_of(&done, "hangs").0, OrderStatus::TimedOut);
    assert_eq!(
        status_of(&done, "after"),
        (OrderStatus::Failed, Some("dependency_failed".into()))
    );
    assert!(sandbox.log_of(&done, "hangs").contains("got SIGTERM"));
}

#[test]
fn credentials_come_from_the_example_secrets_file() {
    let sandbox = Sandbox::new();
    let secrets = examples().join("../secrets/local.json");
    let output = sandbox.run(
        &examples().join("credentials.json"),
        &["--secrets", secrets.to_str().unwrap()],
    );
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Succeeded);
    let log = sandbox.log_of(&done, "connect");
    assert!(log.contains("connecting to db.internal as app"), "{log}");
    assert!(log.contains("the API token has 20 characters"), "{log}");
}

#[test]
fn every_example_validates() {
    crate::util::require_built_guests();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        let output = sluice().arg("validate").arg(&path).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("valid"));
    }
}

#[test]
fn without_json_the_summary_table_goes_to_stdout() {
    let sandbox = Sandbox::new();
    let output = sluice()
        .arg("run")
        .arg(examples().join("hello.json"))
        .arg("--state-dir")
        .arg(sandbox.state())
        .arg("--logs")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ORDER") && stdout.contains("greet") && stdout.contains("succeeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Hello, Sluice!"),
        "--logs shows the log: {stdout}"
    );
}

/// `sluice schema` prints a JSON Schema that knows every field the example jobs use (at
/// the job, order and wasm levels) and refuses unknown ones, as the parser does.
#[test]
fn the_schema_knows_every_field_of_the_examples() {
    let output = sluice().arg("schema").output().unwrap();
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let levels = [
        ("job", &schema),
        ("order", &schema["$defs"]["OrderSpec"]),
        ("wasm", &schema["$defs"]["WasmSpec"]),
    ];
    for (level, definition) in levels {
        assert_eq!(definition["additionalProperties"], false, "{level}");
    }
    assert_eq!(schema["required"], serde_json::json!(["orders"]));
    let known =
        |definition: &serde_json::Value, key: &str| definition["properties"].get(key).is_some();
    let mut seen = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let job: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for key in job.as_object().unwrap().keys() {
            assert!(known(&schema, key), "{}: job field {key}", path.display());
        }
        for order in job["orders"].as_array().unwrap() {
            for key in order.as_object().unwrap().keys() {
                assert!(
                    known(levels[1].1, key),
                    "{}: order field {key}",
                    path.display()
                );
            }
            for key in order["wasm"].as_object().into_iter().flat_map(|w| w.keys()) {
                assert!(
                    known(levels[2].1, key),
                    "{}: wasm field {key}",
                    path.display()
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 3, "the example jobs were read");
}
