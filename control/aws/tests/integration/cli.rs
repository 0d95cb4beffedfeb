//! The `sluice` client commands against a deployment in moto, as a user runs them after
//! `sam deploy`: `submit` (SigV4-signed POST to the HTTP API stand-in, which hands it to the
//! real init-job handler), `status` while the run is queued, `wait` in the background while
//! the run goes through the deployment, then `status`, `logs` and `report` of the finished
//! run.
//!
//! The `sluice` binary is the root crate's, built with the `aws` feature: `cargo test
//! --workspace --all-features` (what scripts/test runs) builds it next to this test.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use crate::support::binaries::built_binary;
use crate::support::cloud::{Cloud, Worker, cloud};
use crate::support::http_api::HttpApi;
use crate::support::settings_env;
use serde_json::Value;
use sluice_contract::result::DoneDoc;
use sluice_contract::{JobStatus, OrderStatus, RunId};
use tokio::io::AsyncBufReadExt;

/// The `sluice` binary built alongside this test (target/<profile>/sluice).
fn sluice_binary() -> PathBuf {
    built_binary(
        "sluice",
        &[
            "src",
            "Cargo.toml",
            "control/contract/src",
            "control/ports/src",
            "control/engine/src",
            "control/aws/src",
            "control/aws/Cargo.toml",
            "control/engine/Cargo.toml",
            "worker-host/src",
        ],
        "`cargo build --features aws` (or `cargo test --workspace --all-features`)",
    )
}

/// `sluice ARGS` with the deployment's settings and moto's AWS configuration.
fn sluice(cloud: &Cloud, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(sluice_binary());
    command
        .args(args)
        .envs(settings_env(&cloud.settings))
        .kill_on_drop(true);
    command
}

async fn output(cloud: &Cloud, args: &[&str]) -> Output {
    let output = sluice(cloud, args).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("unrecognized subcommand"),
        "the sluice binary was built without the aws feature: {stderr}"
    );
    output
}

/// A `sluice` command left running while the deployment carries a run, its stderr read
/// line by line as it comes.
struct Following {
    child: tokio::process::Child,
    stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
}

impl Following {
    fn start(cloud: &Cloud, args: &[&str]) -> Self {
        let mut child = sluice(cloud, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        Following { child, stderr }
    }

    /// Its next stderr line, which must come `within`.
    async fn next_line(&mut self, within: Duration, what: &str) -> String {
        tokio::time::timeout(within, self.stderr.next_line())
            .await
            .expect(what)
            .unwrap()
            .unwrap_or_else(|| panic!("stderr ended: {what}"))
    }

    /// Once it ends: the rest of its stderr, and its exit status and stdout.
    async fn finish(mut self) -> (Vec<String>, Output) {
        let mut rest = Vec::new();
        while let Some(line) = self.stderr.next_line().await.unwrap() {
            rest.push(line);
        }
        (rest, self.child.wait_with_output().await.unwrap())
    }
}

fn stdout_json<T: serde::de::DeserializeOwned>(output: &Output) -> T {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON expected ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A deployment in moto behind its HTTP API stand-in, and a job file to submit to it.
struct Deployment {
    cloud: Cloud,
    endpoint: String,
    job: String,
    _folder: tempfile::TempDir,
}

impl Deployment {
    async fn with_job(job: &str) -> Self {
        let cloud = cloud().await;
        let endpoint = HttpApi::start(Arc::new(cloud.engine())).await.url;
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("job.json");
        std::fs::write(&path, job).unwrap();
        Deployment {
            cloud,
            endpoint,
            job: path.to_str().unwrap().to_owned(),
            _folder: folder,
        }
    }

    /// `submit JOB --endpoint URL` and `extra`.
    fn submit<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["submit", &self.job, "--endpoint", &self.endpoint];
        args.extend_from_slice(extra);
        args
    }
}

#[tokio::test]
async fn submit_status_wait_and_logs_follow_a_run_on_aws() {
    let deployment = Deployment::with_job(
        r#"{"username": "alice", "orders": [
            {"order_name": "fetch", "cmds": ["echo fetched"], "timeout": 60, "execution_target": "lambda"},
            {"order_name": "build", "cmds": ["echo built by $SLUICE_ORDER_NAME"], "timeout": 60,
             "dependencies": ["fetch"], "execution_target": "lambda"},
            {"order_name": "check", "cmds": ["echo checking", "exit 4"], "timeout": 60,
             "dependencies": ["fetch"], "execution_target": "lambda"}
        ]}"#,
    )
    .await;
    let cloud = &deployment.cloud;

    let submitted: Value = stdout_json(&output(cloud, &deployment.submit(&[])).await);
    let run = submitted["run_id"].as_str().unwrap().to_owned();
    let run_id = RunId::parse(&run).unwrap();
    assert_eq!(submitted["pr_search_tag"], format!("sluice-{run}"));

    // Submitted: the first order started by init-job's first step, the others queued, no
    // log to show yet.
    let status: Value = stdout_json(&output(cloud, &["status", &run]).await);
    assert_eq!(status["status"], "running");
    let orders: Vec<(String, String)> = status["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["order_name"].as_str().unwrap().to_owned(),
                o["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        orders,
        [
            ("fetch".to_owned(), "running".to_owned()),
            ("build".to_owned(), "queued".to_owned()),
            ("check".to_owned(), "queued".to_owned())
        ]
    );
    let early = output(cloud, &["logs", &run, "build"]).await;
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert_eq!(early.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("order 0002 build of run")
            && stderr.contains("has no log yet (it is queued: its log is stored when it ends)"),
        "{stderr}"
    );

    // `wait` follows the run while the deployment carries it to its end: its first line is
    // the run as submitted (read before it moves), its last the finished one.
    let mut waiting = Following::start(cloud, &["wait", &run, "--poll", "1"]);
    let first = waiting
        .next_line(Duration::from_secs(30), "wait prints the run at once")
        .await;
    assert_eq!(
        first,
        "sluice: 0001 fetch running · 0002 build queued · 0003 check queued"
    );
    let done = cloud.pump(&run_id, |_| Worker::Runs).await;
    assert_eq!(done.status, JobStatus::Failed);
    let (rest, waited) = waiting.finish().await;
    assert_eq!(
        waited.status.code(),
        Some(sluice_contract::exit_codes::FAILED),
        "{rest:?}"
    );
    let waited_done: DoneDoc = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(waited_done, done);
    assert_eq!(
        rest.last().map(String::as_str),
        Some("sluice: 0001 fetch succeeded · 0002 build succeeded · 0003 check failed"),
        "{rest:?}"
    );

    // The finished run: its done document, and each order's log by name or number.
    let status: DoneDoc = stdout_json(&output(cloud, &["status", &run]).await);
    assert_eq!(status, done);
    let check = done
        .orders
        .iter()
        .find(|o| o.order_name == "check")
        .unwrap();
    assert_eq!(check.status, OrderStatus::Failed);
    for (order, expected) in [
        ("build", "built by build"),
        ("3", "checking"),
        ("0001", "fetched"),
    ] {
        let log = output(cloud, &["logs", &run, order]).await;
        assert_eq!(log.status.code(), Some(0), "{order}");
        assert!(
            String::from_utf8_lossy(&log.stdout).contains(expected),
            "{order}: {}",
            String::from_utf8_lossy(&log.stdout)
        );
    }
    // Its report, read from the deployment's tables and buckets: a box per order coloured
    // by status, a bar per attempt, and the logs its results hold.
    let report = output(cloud, &["report", &run, "--aws", "-o", "-"]).await;
    assert_eq!(report.status.code(), Some(0), "{report:?}");
    let page = String::from_utf8(report.stdout).unwrap();
    for (num, status) in [
        ("0001", "succeeded"),
        ("0002", "succeeded"),
        ("0003", "failed"),
    ] {
        let node = format!("<a href=\"#o{num}\" class=\"{status}\"");
        assert!(page.contains(&node), "no {node} in {page}");
    }
    assert_eq!(page.matches(" style=\"left:").count(), 3, "{page}");
    for log in ["built by build", "checking", "fetched"] {
        assert!(page.contains(log), "{log} missing from {page}");
    }
    let unknown = output(cloud, &["logs", &run, "deploy"]).await;
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("0001 fetch, 0002 build, 0003 check"),
        "{stderr}"
    );
    let missing = output(cloud, &["status", &RunId::generate().to_string()]).await;
    assert_eq!(missing.status.code(), Some(3));
}

#[tokio::test]
async fn submit_wait_and_rerun_wait_follow_the_runs_they_queue() {
    let deployment = Deployment::with_job(
        r#"{"orders": [
            {"order_name": "plan", "cmds": ["echo planned"], "timeout": 60, "execution_target": "lambda"}
        ]}"#,
    )
    .await;
    let cloud = &deployment.cloud;
    let mut submitting = Following::start(cloud, &deployment.submit(&["--wait", "--poll", "1"]));
    let first = submitting
        .next_line(
            Duration::from_secs(60),
            "submit says which run it submitted",
        )
        .await;
    let run = first
        .strip_prefix("sluice: submitted run ")
        .unwrap_or_else(|| panic!("{first}"));
    let done = cloud
        .pump(&RunId::parse(run).unwrap(), |_| Worker::Runs)
        .await;
    let (rest, submitted) = submitting.finish().await;
    assert_eq!(submitted.status.code(), Some(0), "{rest:?}");
    // stdout holds the done document only, as with `sluice wait`.
    let waited: DoneDoc = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!((waited.status, &waited), (JobStatus::Succeeded, &done));
    assert_eq!(
        rest.last().map(String::as_str),
        Some("sluice: 0001 plan succeeded"),
        "{rest:?}"
    );

    // `rerun --aws --wait` queues the same job again through init-job and follows it.
    let endpoint = deployment.endpoint.as_str();
    let args = [
        "rerun",
        "--aws",
        run,
        "--endpoint",
        endpoint,
        "--wait",
        "--poll",
        "1",
    ];
    let mut rerunning = Following::start(cloud, &args);
    let first = rerunning
        .next_line(Duration::from_secs(60), "rerun says which run it queued")
        .await;
    let again = first
        .strip_prefix("sluice: submitted run ")
        .unwrap_or_else(|| panic!("{first}"));
    cloud
        .pump(&RunId::parse(again).unwrap(), |_| Worker::Runs)
        .await;
    let (rest, rerun) = rerunning.finish().await;
    assert_eq!(rerun.status.code(), Some(0), "{rest:?}");
    let rerun: DoneDoc = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(rerun.status, JobStatus::Succeeded);
    assert_eq!(rerun.rerun_of.as_deref(), Some(run));
    // The job came without a username (its caller's name served), yet an operator's direct
    // invoke reruns it, under the name it ran under.
    let direct = cloud.rerun(&RunId::parse(again).unwrap(), false).await;
    let direct_run = direct["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{direct}"));
    let direct_done = cloud
        .pump(&RunId::parse(direct_run).unwrap(), |_| Worker::Runs)
        .await;
    assert_eq!(direct_done.status, JobStatus::Succeeded);
    assert_eq!(
        direct_done.flow_id.split(':').next(),
        rerun.flow_id.split(':').next()
    );
    // Nothing failed: `--failed` is refused, saying so (the caller's fault: exit 3).
    let refused = output(
        cloud,
        &["rerun", "--aws", run, "--failed", "--endpoint", endpoint],
    )
    .await;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{said}");
    assert!(said.contains("every one of its orders succeeded"), "{said}");
}
