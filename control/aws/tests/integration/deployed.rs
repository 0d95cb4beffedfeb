//! Whole runs in the stack deployed from `infra/template.yaml` into a moto that checks every
//! call against the calling identity's IAM policies (`scripts/moto-deployed.py`): init-job,
//! the orchestrator, watchdog-check and the worker each call AWS with credentials of their
//! own role, as Lambda runs them, so a permission the template forgets — or one the code
//! starts to need — fails here with AccessDenied.

use crate::support::cloud::{Worker, deployed};
use crate::support::unique;
use sluice_contract::AttemptId;
use sluice_contract::result::DoneDoc;
use sluice_contract::{JobStatus, OrderStatus, keys};

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
        .put_parameter(&parameter, r#"{"DB_PASSWORD":"pw-from-ssm"}"#)
        .await;
    let secret = format!("sluice/{}/api-token", unique("run"));
    cloud.put_secret(&secret, "tok-from-secrets-manager").await;
    let mut build = order(
        "build",
        r#"test "$DB_PASSWORD:$API_TOKEN" = "pw-from-ssm:tok-from-secrets-manager" && echo built"#,
        &["fetch"],
    );
    build["ssm_paths"] = serde_json::json!([format!("aws:::ssm:{parameter}")]);
    build["secret_manager_paths"] = serde_json::json!([secret]);
    // An output crosses the run: stored through a URL init-job signed (the root's first
    // step is init-job's), read through one the orchestrator signed, shown by finalize.
    let mut publish = order(
        "publish",
        r#"test "$SHA" = 5e1f && echo published"#,
        &["build", "lint"],
    );
    publish["inputs"] = serde_json::json!({ "SHA": "fetch.sha" });
    let job = job(vec![
        order("fetch", r#"echo sha=5e1f >> "$SLUICE_OUTPUT""#, &[]),
        build,
        order("lint", "echo linted", &["fetch"]),
        publish,
    ]);
    let done = cloud.run(&job.to_string(), |_| Worker::Runs).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    for name in ["fetch", "build", "lint", "publish"] {
        assert_eq!(status_of(&done, name), OrderStatus::Succeeded, "{name}");
    }
    assert_eq!(done.orders[0].outputs["sha"], "5e1f");
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

/// A cancel works with each function's own role: the orchestrator reads the request,
/// and the worker looks for it through a URL the orchestrator signed.
#[tokio::test]
async fn a_run_is_cancelled_with_each_functions_own_role() {
    crate::end_to_end::cancel_midway(&deployed().await).await;
}

/// A cancel stops the run's CodeBuild build with each function's own role: init-job, which
/// started it in the run's first step, recorded it; the orchestrator's pass that cancels
/// the run stops it.
#[tokio::test]
async fn a_cancel_stops_the_runs_builds_with_each_functions_own_role() {
    let cloud = deployed().await;
    // The stack's project, which the deployed moto does not make.
    crate::support::worker_project(&cloud.clients.codebuild, &cloud.settings.codebuild_project)
        .await;
    let mut build = order("build", "sleep 600", &[]);
    build["execution_target"] = "codebuild".into();
    let run = cloud
        .submit(&job(vec![build]).to_string())
        .await
        .unwrap()
        .run_id;
    let engine = cloud.engine();
    let rows = engine.ports.orders.run_orders(&run).await.unwrap();
    assert_eq!(rows[0].status, OrderStatus::Running, "{rows:?}");
    engine.request_cancel(&run, "erin").await.unwrap();
    // No worker runs the build here: the cancel alone ends the run.
    let done = cloud.pump(&run, |_| Worker::Runs).await;
    assert_eq!(done.status, JobStatus::Cancelled, "{done:?}");
    let calls = cloud.calls.snapshot();
    assert_eq!(
        calls.get(&("codebuild", "StopBuild")),
        Some(&1),
        "{calls:?}"
    );
}

/// A rerun works with init-job's own role: it reads the run's kept job, done document,
/// rows and bundles.
#[tokio::test]
async fn a_rerun_works_with_init_jobs_own_role() {
    crate::end_to_end::rerun_the_failed(&deployed().await).await;
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
    let mut cloud = deployed().await;
    // The first step left to the init trigger, as for a job of more than 99 roots.
    cloud.first_step_at_init = false;
    let mut silent = order("silent", "echo never runs", &[]);
    silent["timeout"] = 1.into();
    let job = job(vec![silent, order("fine", "echo fine", &[])]);
    let answer = cloud.submit(&job.to_string()).await.unwrap();
    let run_id = answer.run_id;
    // The init trigger's notification never reaches the orchestrator: the run's watch,
    // checked with watchdog-check's role, kicks the pass that starts it.
    assert!(cloud.lose_notifications().await >= 1);
    let input = cloud.watch_until_started(&run_id).await;
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
    let watchdog = cloud.engine_as(&cloud.roles.watchdog_check);
    let output = sluice_aws::handlers::watchdog::handle(
        &watchdog,
        &serde_json::from_value(input.clone()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(output["done"], true, "{output}");
}

#[tokio::test]
async fn what_the_deployment_may_not_read_is_refused_as_the_jobs_fault() {
    let cloud = deployed().await;
    // A code zip in a bucket the CodeZipObjects parameter does not name.
    let bucket = crate::support::bucket(&cloud.clients).await;
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
             not read s3://{bucket}/code.zip (access denied; S3 says so for a missing object \
             too when its bucket may not be listed)"
        )
    );
    // A credential outside the CredentialsParameterPath.
    let elsewhere = format!("/{}/db", unique("elsewhere"));
    cloud.put_parameter(&elsewhere, "{}").await;
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

/// Whether AWS (moto, enforcing) refused the call: 403.
fn refused<T, E>(
    result: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> bool {
    match result {
        Ok(_) => false,
        Err(error) => error.raw_response().map(|r| r.status().as_u16()) == Some(403),
    }
}

/// The canaries: for each service the enforcing moto checks, a role calling what its
/// policy does not grant is refused, so the tests above prove the template and not a moto
/// that lets everything through.
#[tokio::test]
async fn each_role_is_refused_what_its_policy_does_not_grant() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let cloud = deployed().await;
    let (worker, init) = (&cloud.roles.worker, &cloud.roles.init_job);
    let settings = &cloud.settings;
    let key = |name: &str, value: &str| (name.to_owned(), AttributeValue::S(value.to_owned()));
    // DynamoDB: the worker writes no table; init-job takes no lock.
    let get = worker
        .dynamodb
        .get_item()
        .table_name(&settings.orders_table)
        .set_key(Some([key("run_id", "r"), key("order_num", "0001")].into()))
        .send()
        .await;
    assert!(refused(get), "worker GetItem orders");
    let put = init
        .dynamodb
        .put_item()
        .table_name(&settings.locks_table)
        .set_item(Some([key("run_id", "r")].into()))
        .send()
        .await;
    assert!(refused(put), "init-job PutItem locks");
    // Step Functions and Lambda: the worker starts nothing.
    let start = worker
        .sfn
        .start_execution()
        .state_machine_arn(&settings.watchdog_state_machine)
        .input("{}")
        .send()
        .await;
    assert!(refused(start), "worker StartExecution");
    let invoke = worker
        .lambda
        .invoke()
        .function_name(&settings.worker_function)
        .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
        .send()
        .await;
    assert!(refused(invoke), "worker Invoke");
    // S3 and SSM: neither worker role reads or writes any run's data — bundle, claim, log,
    // result, shared compiled code, key — however it learned the run's id (before, both
    // could: an order that reached its worker's role could decrypt another run's secrets and
    // forge its results).
    let run = sluice_contract::RunId::generate();
    let num = sluice_contract::OrderNum::from_index(0);
    let internal = &settings.internal_bucket;
    // Real objects and a real key, so a role allowed to read them would get them.
    let ticket = sluice_contract::keys::ticket(&run, num, "a1-n");
    let compiled = keys::compiled_code(
        &run,
        sluice_contract::ExecutionTarget::Lambda,
        &"ab".repeat(32),
        false,
    );
    let readable = [
        keys::exec_zip(&run, num),
        keys::bundle_pack(&run, 0),
        keys::claim(&run, num, &AttemptId::parse("a1").unwrap()),
        ticket.clone(),
        compiled.clone(),
    ];
    for key in &readable {
        (cloud.clients.s3.put_object())
            .bucket(internal)
            .key(key)
            .body(b"a run's data".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let order_key = format!("{}/sops-keys/{run}/{num}", settings.ssm_prefix);
    cloud.put_parameter(&order_key, "AGE-SECRET-KEY-1").await;
    for (role, clients) in [
        ("worker", worker),
        ("codebuild worker", &cloud.roles.codebuild_worker),
    ] {
        for key in &readable {
            let read = (clients.s3.get_object())
                .bucket(internal)
                .key(key)
                .send()
                .await;
            assert!(refused(read), "{role} GetObject {key}");
        }
        let delete = (clients.s3.delete_object())
            .bucket(internal)
            .key(&ticket)
            .send()
            .await;
        assert!(refused(delete), "{role} DeleteObject {ticket}");
        for key in [
            keys::claim(&run, num, &AttemptId::parse("a1").unwrap()),
            keys::log(&run, num),
            keys::result(&run, num, &AttemptId::parse("a1").unwrap()),
            compiled.clone(),
        ] {
            let put = (clients.s3.put_object())
                .bucket(internal)
                .key(&key)
                .body(b"forged".to_vec().into())
                .send()
                .await;
            assert!(refused(put), "{role} PutObject {key}");
        }
        let key = (clients.ssm.get_parameter())
            .name(&order_key)
            .with_decryption(true)
            .send()
            .await;
        assert!(refused(key), "{role} GetParameter order key");
        let keys = (clients.ssm.get_parameters())
            .names(&order_key)
            .with_decryption(true)
            .send()
            .await;
        assert!(refused(keys), "{role} GetParameters order key");
    }
    // Nor credentials, nor a done document.
    let credential = worker
        .ssm
        .get_parameter()
        .name("/sluice-credentials/anything")
        .send()
        .await;
    assert!(refused(credential), "worker GetParameter credentials");
    let done = worker
        .s3
        .get_object()
        .bucket(&settings.done_bucket)
        .key("r/done")
        .send()
        .await;
    assert!(refused(done), "worker GetObject done");
}
