//! `sluice submit | status | wait | logs` (the `aws` feature): what they refuse before
//! asking AWS anything. Their happy path, against a deployment in moto, is
//! `control/aws/tests/integration/cli.rs` (where the moto fixtures are).
#![cfg(feature = "aws")]

use crate::util::sluice;

#[test]
fn a_bad_run_id_or_missing_settings_are_named() {
    let output = sluice().args(["status", "not-a-run"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"not-a-run\" is not a run id"));

    let output = sluice()
        .args(["logs", "3f2c1a8e-4b5d-4e6f-8a9b-0c1d2e3f4a5b", "build"])
        .env_remove("SLUICE_INTERNAL_BUCKET")
        .env_remove("SLUICE_ORDERS_TABLE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the deployment's settings")
            && stderr.contains("SLUICE_INTERNAL_BUCKET is not set"),
        "{stderr}"
    );
}

#[test]
fn submit_needs_a_target_and_a_job_valid_for_aws() {
    let sandbox = crate::util::Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"cmds": ["true"], "timeout": 3600, "execution_target": "lambda"}]}"#,
    );
    let output = sluice()
        .arg("submit")
        .arg(&job)
        .env_remove("SLUICE_INIT_ENDPOINT")
        .env_remove("SLUICE_INIT_FUNCTION")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--endpoint URL (SLUICE_INIT_ENDPOINT) or --function NAME")
    );

    // Checked as AWS will check it, before anything is sent: a direct invoke needs a
    // username; over the endpoint the job runs as its IAM caller, but a Lambda order is
    // still too long.
    let output = sluice()
        .arg("submit")
        .arg(&job)
        .args(["--function", "sluice-init-job"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("job file") && stderr.contains("username"),
        "{stderr}"
    );
    let output = sluice()
        .arg("submit")
        .arg(&job)
        .args(["--endpoint", "http://127.0.0.1:9/init"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("job file") && stderr.contains("timeout") && !stderr.contains("username"),
        "{stderr}"
    );
}

#[test]
fn submit_wait_checks_the_deployment_settings_before_sending_anything() {
    let sandbox = crate::util::Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"username": "alice", "orders": [{"cmds": ["true"], "timeout": 60, "execution_target": "lambda"}]}"#,
    );
    // Nothing listens on the endpoint: sending would fail with exit 4, not 3.
    let output = sluice()
        .arg("submit")
        .arg(&job)
        .args(["--endpoint", "http://127.0.0.1:9/init", "--wait"])
        .env_remove("SLUICE_INTERNAL_BUCKET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("SLUICE_INTERNAL_BUCKET is not set"),
        "{stderr}"
    );
}
