//! The Lambda handlers fed real event shapes (API Gateway REST and HTTP APIs, a function
//! URL, SNS, a direct invoke, a watchdog step), against moto.

use sluice_contract::AttemptId;
use std::sync::Arc;

use crate::support::http_api::{ALICE, HttpApi, http_event};
use crate::support::{moto, store_settings};
use base64::Engine as _;
use serde_json::{Value, json};
use sluice_aws::handlers::{init_job, watchdog};
use sluice_aws::{CallCounter, wiring};
use sluice_contract::{OrderStatus, RunId, keys};
use sluice_engine::Engine;
use sluice_ports::Transition;

async fn engine() -> Engine {
    engine_and_settings().await.0
}

async fn engine_and_settings() -> (Engine, sluice_aws::AwsSettings) {
    let clients = moto().await;
    let settings = store_settings(&clients).await;
    let engine = wiring::aws_engine(&clients, &settings, &CallCounter::default());
    (engine, settings)
}

const JOB: &str = r#"{"username": "alice", "flow_label": "deploy", "orders": [
    {"order_name": "plan", "cmds": ["echo plan"], "timeout": 60},
    {"order_name": "apply", "cmds": ["echo apply"], "timeout": 60, "dependencies": ["plan"]}
]}"#;

/// An API Gateway REST API (v1) proxy event.
fn rest_event(method: &str, body: &str) -> Value {
    json!({
        "resource": "/init", "path": "/init", "httpMethod": method,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {"content-type": ["application/json"]},
        "queryStringParameters": null, "pathParameters": null, "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012", "resourceId": "abc123", "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "httpMethod": method,
            "path": "/prod/init", "resourcePath": "/init", "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.0", "userArn": ALICE},
            "apiId": "1234567890"
        },
        "body": body, "isBase64Encoded": false
    })
}

fn sns_event(message: &str) -> Value {
    json!({"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0",
        "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:jobs:2bcfbf39",
        "Sns": {
            "Type": "Notification", "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:jobs", "Subject": null,
            "Message": message, "Timestamp": "2026-11-27T07:00:00.000Z",
            "SignatureVersion": "1", "Signature": "EXAMPLE", "SigningCertUrl": "https://example",
            "UnsubscribeUrl": "https://example", "MessageAttributes": {}
        }
    }]})
}

/// The proxy response's status and parsed body.
fn http_answer(answer: &Value) -> (u64, Value) {
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    (answer["statusCode"].as_u64().unwrap(), body)
}

/// The run exists: both bundles (in one pack), two rows, its first step taken by init-job
/// (the lock made, no init trigger); it runs as alice.
async fn assert_queued(engine: &Engine, answer: &Value) {
    assert_queued_as(engine, answer, "alice").await;
}

/// The run exists: both bundles (in one pack), two rows, its first step taken by init-job
/// (the lock made, no init trigger); it runs as `user`.
async fn assert_queued_as(engine: &Engine, answer: &Value, user: &str) {
    let run_id = RunId::parse(answer["run_id"].as_str().unwrap()).unwrap();
    assert!(
        answer["flow_id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{user}:")),
        "{answer}"
    );
    assert_eq!(answer["pr_search_tag"], format!("sluice-{run_id}"));
    assert_eq!(
        answer["done_endpt"],
        format!("s3://{}/{run_id}/done", engine.ports.done.bucket())
    );
    let objects = engine
        .ports
        .internal
        .list(&format!("tmp/exec/{run_id}/"))
        .await
        .unwrap();
    assert_eq!(objects, [keys::bundle_pack(&run_id, 0)]);
    let trigger = keys::trigger(&run_id);
    let internal = &engine.ports.internal;
    assert!(
        internal.head(&trigger).await.unwrap().is_none(),
        "no trigger"
    );
    assert!(
        engine
            .ports
            .orders
            .lock_state(&run_id)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        engine.ports.orders.run_orders(&run_id).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn init_job_takes_a_rest_api_post() {
    let engine = engine().await;
    let answer = init_job::handle(&engine, &rest_event("POST", JOB))
        .await
        .unwrap();
    let (status, body) = http_answer(&answer);
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer["headers"]["content-type"], "application/json");
    assert_queued(&engine, &body).await;
}

/// Only the caller that submitted a run may rerun it (an operator's direct invoke may too);
/// a run that never was is a 404.
#[tokio::test]
async fn a_run_is_rerun_by_its_submitter_only() {
    let engine = engine().await;
    let (status, queued) = http_answer(
        &init_job::handle(&engine, &rest_event("POST", JOB))
            .await
            .unwrap(),
    );
    assert_eq!(status, 200, "{queued}");
    let rerun = json!({ "rerun_of": queued["run_id"] }).to_string();

    let mut by_bob = rest_event("POST", &rerun);
    by_bob["requestContext"]["identity"]["userArn"] = json!("arn:aws:iam::123456789012:user/bob");
    let (status, refused) = http_answer(&init_job::handle(&engine, &by_bob).await.unwrap());
    assert_eq!(status, 403, "{refused}");
    let error = refused["errors"][0].as_str().unwrap();
    assert!(error.contains("only its submitter may rerun it"), "{error}");

    // Its every start failed here (no worker function): it has ended, and may be rerun.
    let by_alice = rest_event("POST", &rerun);
    let (status, queued_again) = http_answer(&init_job::handle(&engine, &by_alice).await.unwrap());
    assert_eq!(status, 200, "{queued_again}");
    assert_ne!(queued_again["run_id"], queued["run_id"]);
    let direct = init_job::handle(&engine, &serde_json::from_str(&rerun).unwrap())
        .await
        .unwrap();
    assert!(direct["run_id"].is_string(), "{direct}");

    let never = json!({ "rerun_of": RunId::generate() }).to_string();
    let (status, _) = http_answer(
        &init_job::handle(&engine, &rest_event("POST", &never))
            .await
            .unwrap(),
    );
    assert_eq!(status, 404);
}

#[tokio::test]
async fn init_job_takes_base64_bodies_and_job_parameters_b64_from_http_apis() {
    let engine = engine().await;
    let encoded = base64::engine::general_purpose::STANDARD.encode(JOB);
    let wrapped = json!({ "job_parameters_b64": encoded }).to_string();
    let body = base64::engine::general_purpose::STANDARD.encode(&wrapped);
    let answer = init_job::handle(&engine, &http_event("POST", &body, true))
        .await
        .unwrap();
    let (status, body) = http_answer(&answer);
    assert_eq!(status, 200, "{body}");
    assert_queued(&engine, &body).await;
}

#[tokio::test]
async fn init_job_refuses_other_methods_and_bad_jobs_over_http() {
    let engine = engine().await;
    let (status, body) = http_answer(
        &init_job::handle(&engine, &http_event("GET", "", false))
            .await
            .unwrap(),
    );
    assert_eq!(status, 405);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("GET is not allowed")
    );

    let (status, body) = http_answer(
        &init_job::handle(&engine, &rest_event("POST", "{not json"))
            .await
            .unwrap(),
    );
    assert_eq!(status, 400);
    assert!(
        body["errors"][0].as_str().unwrap().contains("not JSON"),
        "{body}"
    );

    // A job without a username runs as its caller.
    let unnamed = r#"{"orders": [{"cmds": ["true"], "timeout": 5}]}"#;
    let (status, body) = http_answer(
        &init_job::handle(&engine, &rest_event("POST", unnamed))
            .await
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body["flow_id"].as_str().unwrap().starts_with("alice:"),
        "{body}"
    );
}

#[tokio::test]
async fn init_job_takes_sns_messages_and_direct_invokes() {
    let engine = engine().await;
    // A job from SNS runs as its topic.
    let from_topic = JOB.replace(r#""username": "alice", "#, "");
    let answer = init_job::handle(&engine, &sns_event(&from_topic))
        .await
        .unwrap();
    assert_queued_as(&engine, &answer, "jobs").await;
    // SNS delivers at least once: the same message again is the same run.
    let again = init_job::handle(&engine, &sns_event(&from_topic))
        .await
        .unwrap();
    assert_eq!(again["run_id"], answer["run_id"], "{again}");
    let claimed = init_job::handle(&engine, &sns_event(JOB)).await.unwrap();
    assert!(
        claimed["errors"][0]
            .as_str()
            .unwrap()
            .contains("whose jobs run as \"jobs\""),
        "{claimed}"
    );

    let direct: Value = serde_json::from_str(JOB).unwrap();
    let answer = init_job::handle(&engine, &direct).await.unwrap();
    assert_queued(&engine, &answer).await;

    let invalid = json!({"username": "alice", "orders": []});
    let answer = init_job::handle(&engine, &invalid).await.unwrap();
    assert!(
        answer["errors"][0].as_str().unwrap().contains("orders"),
        "{answer}"
    );
}

/// Failed before init-job knew its callers: any submitter could run as any username and
/// name any credential init-job's role can read.
#[tokio::test]
async fn a_job_runs_as_its_caller_and_names_only_credentials_granted_to_it() {
    let (_, mut settings) = engine_and_settings().await;
    settings.credential_grants.own_parameter_root = Some("/sluice-credentials".to_owned());
    let engine = wiring::aws_engine(&moto().await, &settings, &CallCounter::default());
    let with_ssm = |path: &str| {
        JOB.replace(
            r#""timeout": 60}"#,
            &format!(r#""timeout": 60, "ssm_paths": ["{path}"]}}"#),
        )
    };
    let answer = init_job::handle(
        &engine,
        &http_event("POST", &with_ssm("/sluice-credentials/bob/db"), false),
    )
    .await
    .unwrap();
    let (status, body) = http_answer(&answer);
    assert_eq!(status, 403, "{body}");
    let message = body["errors"][0].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "{ALICE} may not use aws:::ssm:/sluice-credentials/bob/db"
        )) && message.contains("aws:::ssm:/sluice-credentials/user/alice/*"),
        "{message}"
    );
    // Running as someone else is refused too.
    let as_bob = JOB.replace(r#""username": "alice""#, r#""username": "bob""#);
    let (status, body) = http_answer(
        &init_job::handle(&engine, &http_event("POST", &as_bob, false))
            .await
            .unwrap(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("username"),
        "{body}"
    );
    // A request without an IAM identity is refused.
    let mut anonymous = http_event("POST", JOB, false);
    anonymous["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let (status, _) = http_answer(&init_job::handle(&engine, &anonymous).await.unwrap());
    assert_eq!(status, 403);
    // Nothing was queued by any of them; the caller's own job is.
    let (status, body) = http_answer(
        &init_job::handle(&engine, &http_event("POST", JOB, false))
            .await
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    assert_queued(&engine, &body).await;
}

#[tokio::test]
async fn a_watchdog_step_returns_its_input_with_the_verdict() {
    let (mut engine, settings) = engine_and_settings().await;
    // The test starts the first order itself.
    engine.config.first_step_at_init = false;
    let answer = init_job::handle(&engine, &serde_json::from_str::<Value>(JOB).unwrap())
        .await
        .unwrap();
    let run_id = answer["run_id"].as_str().unwrap();
    // Attempt a1 of order 0001 is running (as if dispatched).
    let run = RunId::parse(run_id).unwrap();
    let first = sluice_contract::OrderNum::from_index(0);
    let dispatch = Transition {
        attempt: AttemptId::parse("a1"),
        ..Transition::to(OrderStatus::Dispatching)
    };
    let orders = &engine.ports.orders;
    orders
        .transition(&run, first, OrderStatus::Queued, &dispatch)
        .await
        .unwrap();
    let running = Transition::to(OrderStatus::Running);
    orders
        .transition(&run, first, OrderStatus::Dispatching, &running)
        .await
        .unwrap();
    // The run's watch, as init-job started it.
    let input = json!({
        "run_id": run_id, "order_num": "0000", "attempt": "run", "timeout": 0,
        "start_time": 1_700_000_000u64, "job_deadline": 4_000_000_000u64,
        "internal_bucket": engine.ports.internal.bucket(),
    });
    let step = |value: &serde_json::Value| -> watchdog::WatchdogStep {
        serde_json::from_value(value.clone()).unwrap()
    };
    let output = watchdog::handle(&engine, &step(&input)).await.unwrap();
    assert_eq!(output["run_id"], input["run_id"]);
    assert_eq!(output["attempt"], "run");
    assert_eq!(
        output["done"], false,
        "an order runs and the job has time: {output}"
    );
    assert!(output["wait_seconds"].as_u64().unwrap() > 0);

    assert_eq!(output["checks"], 1, "the execution counts its checks");

    // An execution that has checked long enough hands the watch to a new one.
    let mut worn = output.clone();
    worn["checks"] = (watchdog::CHECKS_PER_EXECUTION - 1).into();
    let handed = watchdog::handle(&engine, &step(&worn)).await.unwrap();
    assert_eq!(handed["done"], true, "{handed}");
    let executions = sfn_executions(&settings.watchdog_state_machine).await;
    let successor = format!("{run_id}-0000-run-g1");
    assert!(executions.contains(&successor), "{executions:?}");
    // It waits before its first check what this check answered, as the loop would have.
    let successor_input = sfn_execution_input(&settings.watchdog_state_machine, &successor).await;
    assert_eq!(successor_input["wait_seconds"], handed["wait_seconds"]);
    assert_eq!(successor_input["generation"], 1);

    // A step of a watch per attempt (retired; an older version started them) is done at
    // once.
    let mut retired = input.clone();
    retired["order_num"] = "0001".into();
    retired["attempt"] = "a1".into();
    assert_eq!(
        watchdog::handle(&engine, &step(&retired)).await.unwrap()["done"],
        true
    );

    // What is not a step is refused before anything runs (the runtime answers the error).
    let refused = |value| serde_json::from_value::<watchdog::WatchdogStep>(value).unwrap_err();
    let missing = refused(json!({"attempt": "a1"})).to_string();
    assert!(missing.contains("missing field `run_id`"), "{missing}");
    let mistyped = refused(json!({"run_id": 3})).to_string();
    assert!(mistyped.contains("expected a string"), "{mistyped}");
}

#[tokio::test]
async fn sluice_submit_posts_a_signed_job_to_the_http_api() {
    let engine = Arc::new(engine().await);
    let api = HttpApi::start(Arc::clone(&engine)).await;
    let answer = sluice_aws::client::submit_http(&api.url, JOB.as_bytes().to_vec()).await;
    assert_queued(&engine, &answer.unwrap()).await;

    let refused = sluice_aws::client::submit_http(&api.url, br#"{"orders":[]}"#.to_vec())
        .await
        .unwrap_err();
    assert!(refused.is_the_jobs_fault(), "{refused}");
    let text = refused.to_string();
    assert!(
        text.starts_with("the job was refused: ") && text.contains("no orders"),
        "{text}"
    );
}

/// API Gateway cuts a long init at 30 s with a 504 while init-job goes on and queues the
/// run. `sluice submit` sends every job with an idempotency key (its own or a fresh one) and
/// sends the same submission again after a failure on the way: the caller gets the run the
/// first request created, and no second run is made. Before, the caller got an error for a
/// run that existed, and a resubmit made another run.
#[tokio::test]
async fn a_submission_cut_by_the_gateway_is_sent_again_and_answers_the_same_run() {
    let engine = Arc::new(engine().await);
    let api = HttpApi::start(Arc::clone(&engine)).await;
    api.cut.store(1, std::sync::atomic::Ordering::SeqCst);
    let answer = sluice_aws::client::submit_http(&api.url, JOB.as_bytes().to_vec())
        .await
        .unwrap();
    assert_queued(&engine, &answer).await;
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "sent again after the 504");
    let key = seen[0].0["idempotency_key"]
        .as_str()
        .expect("a key was added");
    assert!(key.starts_with("submit-"), "{key}");
    assert_eq!(seen[1].0["idempotency_key"], seen[0].0["idempotency_key"]);
    assert_eq!(
        seen[0].1["run_id"], answer["run_id"],
        "the first request's run"
    );
    assert_eq!(
        seen[1].1["run_id"], answer["run_id"],
        "answered again, not made again"
    );
}

/// The names of a state machine's executions.
/// The input of `machine`'s execution named `name`.
async fn sfn_execution_input(machine: &str, name: &str) -> serde_json::Value {
    let clients = moto().await;
    let listed = clients.sfn.list_executions().state_machine_arn(machine);
    let executions = listed.send().await.unwrap().executions;
    let arn = (executions.iter())
        .find(|e| e.name == name)
        .map(|e| e.execution_arn.clone())
        .unwrap();
    let described = clients.sfn.describe_execution().execution_arn(arn);
    let input = described.send().await.unwrap().input.unwrap();
    serde_json::from_str(&input).unwrap()
}

async fn sfn_executions(machine: &str) -> Vec<String> {
    let clients = moto().await;
    clients
        .sfn
        .list_executions()
        .state_machine_arn(machine)
        .send()
        .await
        .unwrap()
        .executions
        .into_iter()
        .map(|e| e.name)
        .collect()
}
