//! Orders get their credentials from `ssm_paths` and `secret_manager_paths`; locally a
//! secrets file (`--secrets`) stands in for SSM and Secrets Manager with the same rules.

use std::io::Read;

use crate::util::{Sandbox, sluice, succeeded};

/// base64 of `{"DB_USER":"app","DB_PASSWORD":"pw-from-ssm"}`.
const SSM_VALUE: &str = "eyJEQl9VU0VSIjoiYXBwIiwiREJfUEFTU1dPUkQiOiJwdy1mcm9tLXNzbSJ9";

const JOB: &str = r#"{"orders": [
    {"order_name": "uses", "timeout": 10,
     "env_vars": {"MODE": "ci", "DB_USER": "replaced"},
     "ssm_paths": ["/team/db"],
     "secret_manager_paths": ["prod/api-token"],
     "cmds": ["test \"$DB_USER:$DB_PASSWORD:$API_TOKEN:$MODE\" = \"app:pw-from-ssm:tok-123456:ci\""]},
    {"order_name": "plain", "timeout": 10, "cmds": ["test -z \"$DB_PASSWORD$API_TOKEN\""]}
]}"#;

fn secrets_file(sandbox: &Sandbox, ssm_value: &str) -> String {
    sandbox
        .write_secrets(serde_json::json!({
            "aws:::ssm:/team/db": ssm_value,
            "aws:::secretd:prod/api-token": "tok-123456",
        }))
        .display()
        .to_string()
}

#[test]
fn credentials_from_the_secrets_file_reach_the_orders_that_list_them() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job("job.json", JOB);
    let secrets = secrets_file(&sandbox, SSM_VALUE);
    let output = sandbox.run(&job, &["--secrets", &secrets]);
    let done = succeeded(&output);

    // The bundle lists the names that came from credentials, and holds no value in the clear
    // (order.json has the command, which quotes the expected values).
    let exec = sandbox.object_path(&format!("tmp/exec/{}/0001/exec.zip", done.run_id));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(exec).unwrap()).unwrap();
    let mut names = String::new();
    zip.by_name("secrets.src")
        .unwrap()
        .read_to_string(&mut names)
        .unwrap();
    assert_eq!(names, "API_TOKEN\nDB_PASSWORD\nDB_USER\n");
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        if entry.name().unwrap() == "order.json" {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("pw-from-ssm") && !text.contains("tok-123456"));
    }

    let validate = sluice()
        .args(["validate", job.to_str().unwrap(), "--secrets", &secrets])
        .output()
        .unwrap();
    assert!(validate.status.success());
    assert!(
        String::from_utf8_lossy(&validate.stdout)
            .contains("2 credentials found in the secrets file")
    );
}

#[test]
fn a_missing_or_malformed_credential_is_refused_before_anything_runs() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job("job.json", JOB);

    let output = sandbox.run(&job, &[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("order 0001 (uses), field `ssm_paths`: nothing is stored at aws:::ssm:/team/db (no secrets file given: pass --secrets FILE)"),
        "{stderr}"
    );
    assert!(!sandbox.state().exists(), "nothing was queued");

    let secrets = secrets_file(&sandbox, "not-base64-pw-from-ssm");
    let output = sandbox.run(&job, &["--secrets", &secrets]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("aws:::ssm:/team/db: the parameter's value is not base64"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pw-from-ssm"),
        "the value is never printed"
    );
    assert!(!sandbox.state().exists());

    // validate without a secrets file checks the rest and says what it did not check.
    let validate = sluice()
        .args(["validate", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(validate.status.success());
    assert!(
        String::from_utf8_lossy(&validate.stdout)
            .contains("2 credentials not checked (no --secrets file)")
    );
}
