//! Whole runs in the stack deployed from `infra/template.yaml` into a moto that checks every
//! call against the calling identity's IAM policies (`scripts/moto-deployed.py`): init-job,
//! the orchestrator, watchdog-check and the worker each call AWS with credentials of their
//! own role, as Lambda runs them, so a permission the template forgets — or one the code
//! starts to need — fails here with AccessDenied.

mod support;

use std::time::{Duration, Instant};

use sluice_contract::result::DoneDoc;
use sluice_contract::{JobStatus, OrderNum, OrderStatus};
use support::cloud::{Worker, deployed};
use support::unique;

fn status_of(done: &DoneDoc, name: &str) -> OrderStatus {
    done.orders
        .iter()
        .find(|o| o.order_name == name)
        .unwrap()
        .status
}

fn order(name: &str, cmd: &str, deps: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "order_name": name, "cmds": [cmd], "timeout": 60, "dependencies": deps,
        "execution_target": "lambda",
    })
}

fn job(orders: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({ "username": "tester", "orders": orders })
}

#[tokio::test]
async fn a_diamond_with_credentials_runs_with_each_functions_own_role() {
    let cloud = deployed().await;
    // Credentials where the template lets jobs name them.
    let parameter = format!("/sluice-credentials/{}", unique("db"));
    cloud
        .clients
        .ssm
        .put_parameter()
        .name(&parameter)
        .value(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            r#"{"DB_PASSWORD":"pw-from-ssm"}"#,
        ))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let secret = format!("sluice/{}/api-token", unique("run"));
    cloud
        .clients
        .secrets_manager
        .create_secret()
        .name(&secret)
        .secret_string("tok-from-secrets-manager")
        .send()
        .await
        .unwrap();
    let mut build = order(
        "build",
        r#"test "$DB_PASSWORD:$API_TOKEN" = "pw-from-ssm:tok-from-secrets-manager" && echo built"#,
        &["fetch"],
    );
    build["ssm_paths"] = serde_json::json!([format!("aws:::ssm:{parameter}")]);
    build["secret_manager_paths"] = serde_json::json!([secret]);
    let job = job(vec![
        order("fetch", "echo fetched", &[]),
        build,
        order("lint", "echo linted", &["fetch"]),
        order("publish", "echo published", &["build", "lint"]),
    ]);
    let done = cloud.run(&job.to_string(), |_| Worker::Runs).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    for name in ["fetch", "build", "lint", "publish"] {
        assert_eq!(status_of(&done, name), OrderStatus::Succeeded, "{name}");
    }
    // Finalize deleted the run's keys with the orchestrator's role.
    let keys = cloud
        .clients
        .ssm
        .get_parameters_by_path()
        .path(format!(
            "{}/sops-keys/{}",
            cloud.settings.ssm_prefix, done.run_id
        ))
        .recursive(true)
        .send()
        .await
        .unwrap();
    assert!(keys.parameters().is_empty(), "{keys:?}");
}

#[tokio::test]
async fn a_job_sent_again_answers_the_run_the_first_created() {
    let cloud = deployed().await;
    let mut job = job(vec![order("plan", "echo planned", &[])]);
    job["idempotency_key"] = unique("pr-17").into();
    let first = cloud.submit(&job.to_string()).await.unwrap();
    let again = cloud.submit(&job.to_string()).await.unwrap();
    assert_eq!(again.run_id, first.run_id);
    let done = cloud.pump(&first.run_id, |_| Worker::Runs).await;
    assert_eq!(done.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn the_watch_starts_a_lost_run_and_times_out_a_silent_worker() {
    let cloud = deployed().await;
    let mut silent = order("silent", "echo never runs", &[]);
    silent["timeout"] = 1.into();
    let job = job(vec![silent, order("fine", "echo fine", &[])]);
    let answer = cloud.submit(&job.to_string()).await.unwrap();
    let run_id = answer.run_id;
    // The init trigger's notification never reaches the orchestrator: the run's watch,
    // checked with watchdog-check's role, kicks the pass that starts it.
    assert!(cloud.lose_notifications().await >= 1);
    let watch = cloud
        .watchdog_executions()
        .await
        .into_iter()
        .find(|w| w.run_id == run_id && w.order_num == OrderNum::INIT)
        .expect("init-job started the run's watch");
    let watchdog = cloud.engine_as(&cloud.roles.watchdog_check);
    let engine = cloud.engine();
    let mut input = serde_json::to_value(&watch).unwrap();
    let started = Instant::now();
    let queued = || async { engine.ports.orders.run_orders(&run_id).await.unwrap()[0].status };
    while queued().await == OrderStatus::Queued {
        let output = sluice_aws::handlers::watchdog::handle(&watchdog, &input)
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(30), "{output}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        input = output;
    }
    // The silent order's own watchdog times it out, with the same role.
    let done = cloud
        .pump(&run_id, |name| {
            if name == "silent" {
                Worker::DiesAfterClaiming
            } else {
                Worker::Runs
            }
        })
        .await;
    assert_eq!(done.status, JobStatus::TimedOut);
    assert_eq!(status_of(&done, "silent"), OrderStatus::TimedOut);
    assert_eq!(status_of(&done, "fine"), OrderStatus::Succeeded);
    let output = sluice_aws::handlers::watchdog::handle(&watchdog, &input)
        .await
        .unwrap();
    assert_eq!(output["done"], true, "{output}");
}

#[tokio::test]
async fn what_the_deployment_may_not_read_is_refused_as_the_jobs_fault() {
    let cloud = deployed().await;
    // A code zip in a bucket the CodeZipObjects parameter does not name.
    let bucket = support::bucket(&cloud.clients).await;
    cloud
        .clients
        .s3
        .put_object()
        .bucket(&bucket)
        .key("code.zip")
        .body(Vec::new().into())
        .send()
        .await
        .unwrap();
    let mut zipped = order("zipped", "true", &[]);
    zipped["s3_location"] = format!("s3://{bucket}/code.zip").into();
    assert_eq!(
        cloud.refused(&job(vec![zipped]).to_string()).await,
        format!(
            "order 0001 (zipped): packaging its code failed: s3_location: this deployment may \
             not read s3://{bucket}/code.zip (access denied)"
        )
    );
    // A credential outside the CredentialsParameterPath.
    let elsewhere = format!("/{}/db", unique("elsewhere"));
    cloud
        .clients
        .ssm
        .put_parameter()
        .name(&elsewhere)
        .value("e30=")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let mut reaching = order("reaching", "true", &[]);
    reaching["ssm_paths"] = serde_json::json!([format!("aws:::ssm:{elsewhere}")]);
    assert_eq!(
        cloud.refused(&job(vec![reaching]).to_string()).await,
        format!(
            "order 0001 (reaching), field `ssm_paths`: this deployment may not read \
             aws:::ssm:{elsewhere} (access denied)"
        )
    );
}
