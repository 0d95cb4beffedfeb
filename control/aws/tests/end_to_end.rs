//! Whole runs on moto: init_job → exec.zip in S3 and rows in DynamoDB → the init trigger's
//! S3 notification on SQS → an event pump feeding the orchestrator's S3-event handler →
//! Lambda dispatch (the payload taken off the wire as it goes to moto, which cannot run
//! code) → the worker run here with that exact payload over S3/SSM → presigned PUT of
//! result.json to moto → notification → ... → finalize → done document in the done bucket.
//!
//! Step Functions executions are started for real; since moto cannot run their Lambda
//! tasks, the pump plays the state machine for a worker that never reports: it calls
//! `watchdog_check` with the execution's input and follows its verdict.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use sluice_aws::callback::HttpCallback;
use sluice_aws::clients::Clients;
use sluice_aws::schema::{EVENTS_KEY, LOCKS_KEY, ORDERS_KEY};
use sluice_aws::{AwsSettings, CallCounter, s3_events, wiring, worker};
use sluice_contract::dispatch::{Claim, DispatchPayload};
use sluice_contract::result::DoneDoc;
use sluice_contract::{JobStatus, OrderStatus, ValidateOptions, keys, parse_job};
use sluice_engine::Engine;
use sluice_engine::ports::WatchdogInput;
use sluice_worker::WorkerConfig;
use sluice_worker::retry::RetryPolicy;
use support::{
    BodyTap, FlakyEndpoint, bucket, moto, table, unique, watchdog_machine, worker_function,
};

/// A Sluice deployment in moto.
struct Cloud {
    clients: Clients,
    sqs: aws_sdk_sqs::Client,
    settings: AwsSettings,
    queue_url: String,
    /// The Lambda client's request bodies: the dispatch payloads.
    tap: BodyTap,
    calls: CallCounter,
}

async fn cloud() -> Cloud {
    let mut clients = moto().await;
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&shared);
    let internal = bucket(&clients).await;
    let done = bucket(&clients).await;

    // S3 → SQS notifications for results, as the template wires S3 → the orchestrator.
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("sluice-test"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let rule =
        |name: FilterRuleName, value: &str| FilterRule::builder().name(name).value(value).build();
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(&internal)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(queue_arn)
                        .events(Event::S3ObjectCreated)
                        .filter(
                            NotificationConfigurationFilter::builder()
                                .key(
                                    S3KeyFilter::builder()
                                        .filter_rules(rule(
                                            FilterRuleName::Prefix,
                                            keys::CALLBACK_PREFIX,
                                        ))
                                        .filter_rules(rule(FilterRuleName::Suffix, "result.json"))
                                        .build(),
                                )
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();

    let worker_function = worker_function(&clients).await;
    let watchdog_state_machine = watchdog_machine(&clients).await;

    let tap = BodyTap::default();
    clients.lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(&shared)
            .interceptor(tap.clone())
            .build(),
    );
    let settings = AwsSettings {
        internal_bucket: internal,
        done_bucket: done,
        orders_table: table(&clients, ORDERS_KEY).await,
        events_table: table(&clients, EVENTS_KEY).await,
        locks_table: table(&clients, LOCKS_KEY).await,
        worker_function,
        codebuild_project: "unused".to_owned(),
        watchdog_state_machine,
        ssm_prefix: format!("/{}", unique("sluice-test")),
        event_ttl_days: 90,
        order_ttl_days: 1,
        github_api: None,
    };
    Cloud {
        clients,
        sqs,
        settings,
        queue_url,
        tap,
        calls: CallCounter::default(),
    }
}

/// What the pump does with a dispatched attempt.
#[derive(Clone)]
enum Worker {
    /// Runs it.
    Runs,
    /// Claims it, then dies without reporting (for the watchdog).
    DiesAfterClaiming,
    /// Runs it, calling back through this endpoint (watched like an abandoned attempt).
    CallsBackThrough(FlakyEndpoint),
    /// Runs nothing and PUTs garbage to the callback URL instead of a result.
    CallsBackGarbage,
}

impl Cloud {
    fn engine(&self) -> Engine {
        let mut engine = wiring::aws_engine(&self.clients, &self.settings, &self.calls);
        // Short enough for a test to see the watchdog act.
        engine.config.watchdog_slack = Duration::from_secs(1);
        engine
    }

    /// Submits `job` and pumps events until its done document appears.
    async fn run(&self, job: &str, worker_of: impl Fn(&str) -> Worker) -> DoneDoc {
        let engine = Arc::new(self.engine());
        let job = parse_job(job.as_bytes()).unwrap();
        let names: Vec<String> = job
            .orders
            .iter()
            .enumerate()
            .map(|(i, o)| o.order_name.clone().unwrap_or(format!("order-{}", i + 1)))
            .collect();
        let response = engine
            .init_job(&job, &ValidateOptions::aws(), Path::new("."))
            .await
            .unwrap();
        let run_id = response.run_id;
        let callback = HttpCallback::new().unwrap();
        let config = WorkerConfig {
            host_env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
            callback: RetryPolicy {
                first_backoff: Duration::from_millis(50),
                ..RetryPolicy::default()
            },
            ..WorkerConfig::default()
        };
        let mut abandoned: Vec<DispatchPayload> = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        // The worker run here with the dispatched payload, as the Lambda would run it.
        let spawn_worker = |tasks: &mut tokio::task::JoinSet<()>, payload: DispatchPayload| {
            let (clients, callback, config, calls) = (
                self.clients.clone(),
                callback.clone(),
                config.clone(),
                self.calls.clone(),
            );
            tasks.spawn(async move {
                worker::run_payload(&payload, &clients, &callback, &config, &calls)
                    .await
                    .unwrap();
            });
        };
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "run {run_id} did not finish"
            );
            // S3 notifications → the orchestrator handler, concurrently as Lambda would.
            let messages = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let idle = messages.messages().is_empty() && self.tap.is_empty();
            for message in messages.messages() {
                let event: serde_json::Value =
                    serde_json::from_str(message.body().unwrap_or("{}")).unwrap();
                let engine = Arc::clone(&engine);
                tasks.spawn(async move {
                    s3_events::orchestrate_event(&engine, &event).await.unwrap();
                });
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            // Dispatched attempts → workers.
            let dispatched: Vec<DispatchPayload> = self.tap.take();
            for payload in dispatched {
                let name = &names[payload.order_num.get() as usize - 1];
                match worker_of(name) {
                    Worker::CallsBackThrough(endpoint) => {
                        let mut rerouted = payload.clone();
                        rerouted.callback_url =
                            Some(endpoint.url_for(payload.callback_url.as_deref().unwrap()));
                        spawn_worker(&mut tasks, rerouted);
                        abandoned.push(payload);
                    }
                    Worker::CallsBackGarbage => {
                        use sluice_worker::store_io::Callback;
                        let url = payload.callback_url.clone().unwrap();
                        callback
                            .put(&url, b"{\"status\": \"exploded\", garbage".to_vec())
                            .await
                            .unwrap();
                    }
                    Worker::Runs => spawn_worker(&mut tasks, payload),
                    Worker::DiesAfterClaiming => {
                        let claim = Claim {
                            attempt: payload.attempt.clone(),
                            claimed_at_ms: now_ms(),
                        };
                        engine
                            .ports
                            .internal
                            .put_if_absent(
                                &keys::claim(&payload.run_id, payload.order_num, &payload.attempt),
                                serde_json::to_vec(&claim).unwrap(),
                            )
                            .await
                            .unwrap();
                        abandoned.push(payload);
                    }
                }
            }
            // The watchdog state machine of each abandoned attempt, played here.
            for input in self.watchdog_inputs(&abandoned).await {
                let verdict = engine.watchdog_check(&input).await.unwrap();
                if verdict.kick {
                    engine.orchestrate(&input.run_id).await.unwrap();
                }
            }
            if let Ok(bytes) = engine.ports.done.get(&keys::done(&run_id)).await {
                while tasks.join_next().await.is_some() {}
                return serde_json::from_slice(&bytes).unwrap();
            }
            while let Some(finished) = tasks.try_join_next() {
                finished.unwrap();
            }
            if idle {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// What init_job says of a job of `orders` it refuses as the job's fault.
    async fn refused(&self, orders: Vec<serde_json::Value>) -> String {
        let error = self
            .engine()
            .init_job(
                &parse_job(job(orders).as_bytes()).unwrap(),
                &ValidateOptions::aws(),
                Path::new("."),
            )
            .await
            .unwrap_err();
        assert!(error.is_invalid_input(), "{error}");
        error.to_string()
    }

    /// The inputs of the watchdog executions started for `attempts`.
    async fn watchdog_inputs(&self, attempts: &[DispatchPayload]) -> Vec<WatchdogInput> {
        if attempts.is_empty() {
            return Vec::new();
        }
        let wanted: HashSet<&str> = attempts.iter().map(|p| p.attempt.as_str()).collect();
        let executions = self
            .clients
            .sfn
            .list_executions()
            .state_machine_arn(&self.settings.watchdog_state_machine)
            .send()
            .await
            .unwrap();
        let mut inputs = Vec::new();
        for execution in executions.executions() {
            let described = self
                .clients
                .sfn
                .describe_execution()
                .execution_arn(execution.execution_arn())
                .send()
                .await
                .unwrap();
            let input: WatchdogInput = serde_json::from_str(described.input().unwrap()).unwrap();
            if wanted.contains(input.attempt.as_str()) {
                inputs.push(input);
            }
        }
        inputs
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn status_of(done: &DoneDoc, name: &str) -> (OrderStatus, Option<String>) {
    let order = done.orders.iter().find(|o| o.order_name == name).unwrap();
    (order.status, order.reason.clone())
}

fn order(name: &str, cmd: &str, deps: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "order_name": name, "cmds": [cmd], "timeout": 60, "dependencies": deps,
        "execution_target": "lambda",
    })
}

fn job(orders: Vec<serde_json::Value>) -> String {
    serde_json::json!({ "username": "tester", "orders": orders }).to_string()
}

#[tokio::test]
async fn a_diamond_runs_to_its_done_document() {
    let cloud = cloud().await;
    let done = cloud
        .run(
            &job(vec![
                order("fetch", "echo fetched", &[]),
                order("build", "echo built by $SLUICE_ORDER_NAME", &["fetch"]),
                order("lint", "echo linted", &["fetch"]),
                order("publish", "echo published", &["build", "lint"]),
            ]),
            |_| Worker::Runs,
        )
        .await;
    assert_eq!(done.status, JobStatus::Succeeded);
    for name in ["fetch", "build", "lint", "publish"] {
        assert_eq!(status_of(&done, name).0, OrderStatus::Succeeded, "{name}");
    }
    // The full log is in the internal bucket; the run's keys are gone from SSM.
    let engine = cloud.engine();
    let build = done
        .orders
        .iter()
        .find(|o| o.order_name == "build")
        .unwrap();
    let log = engine
        .ports
        .internal
        .get(build.log_key.as_deref().unwrap())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&log).contains("built by build"));
    let keys = cloud
        .clients
        .ssm
        .get_parameters_by_path()
        .path(&cloud.settings.ssm_prefix)
        .recursive(true)
        .send()
        .await
        .unwrap();
    assert!(keys.parameters().is_empty(), "keys are deleted at finalize");
    println!("AWS calls for a 4-order diamond:\n{}", cloud.calls);

    // What `sluice status | wait | logs` read.
    let run = &sluice_contract::RunId::parse(&done.run_id).unwrap();
    let view = engine.run_view(run).await.unwrap();
    assert_eq!(view.done.as_ref(), Some(&done));
    assert_eq!(view.orders.len(), 4);
    for order in ["build", "2", "0002"] {
        let log = engine.order_log(run, order).await.unwrap();
        assert!(
            String::from_utf8_lossy(&log).contains("built by build"),
            "{order}"
        );
    }
    let unknown = engine
        .order_log(run, "deploy")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("has no order \"deploy\"") && unknown.contains("0001 fetch, 0002 build"),
        "{unknown}"
    );
    let mut changes = 0;
    let waited = engine
        .wait_for_done(run, Duration::from_millis(10), |_| changes += 1)
        .await
        .unwrap();
    assert_eq!((waited, changes), (done, 1));
    let missing = engine
        .run_view(&sluice_contract::RunId::generate())
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("has no orders"), "{missing}");
}

#[tokio::test]
async fn a_failure_cascades_and_optional_orders_still_run() {
    let cloud = cloud().await;
    let mut optional = order("report", "echo reporting", &["migrate"]);
    optional["must_succeed"] = false.into();
    let done = cloud
        .run(
            &job(vec![
                order("migrate", "exit 3", &[]),
                order("deploy", "echo never", &["migrate"]),
                optional,
            ]),
            |_| Worker::Runs,
        )
        .await;
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(status_of(&done, "migrate").0, OrderStatus::Failed);
    assert_eq!(
        done.orders
            .iter()
            .find(|o| o.order_name == "migrate")
            .unwrap()
            .exit_code,
        Some(3)
    );
    assert_eq!(
        status_of(&done, "deploy"),
        (OrderStatus::Failed, Some("dependency_failed".to_owned()))
    );
    assert_eq!(status_of(&done, "report").0, OrderStatus::Succeeded);
}

#[tokio::test]
async fn a_worker_that_never_reports_is_timed_out_by_the_watchdog() {
    let cloud = cloud().await;
    let mut lost = order("lost", "echo never runs", &[]);
    lost["timeout"] = 1.into();
    let done = cloud
        .run(&job(vec![lost, order("fine", "echo fine", &[])]), |name| {
            if name == "lost" {
                Worker::DiesAfterClaiming
            } else {
                Worker::Runs
            }
        })
        .await;
    assert_eq!(done.status, JobStatus::TimedOut);
    assert_eq!(status_of(&done, "lost").0, OrderStatus::TimedOut);
    assert_eq!(status_of(&done, "fine").0, OrderStatus::Succeeded);
}

#[tokio::test]
async fn credentials_from_ssm_and_secrets_manager_reach_the_orders_env() {
    let cloud = cloud().await;
    let parameter = format!("/{}/db", unique("sluice-test"));
    let json = r#"{"DB_USER":"app","DB_PASSWORD":"pw-from-ssm"}"#;
    cloud
        .clients
        .ssm
        .put_parameter()
        .name(&parameter)
        .value(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            json,
        ))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let token = format!("{}/api-token", unique("sluice-test"));
    cloud
        .clients
        .secrets_manager
        .create_secret()
        .name(&token)
        .secret_string("tok-from-secrets-manager")
        .send()
        .await
        .unwrap();
    let mut uses = order(
        "uses",
        r#"test "$DB_USER:$DB_PASSWORD:$API_TOKEN:$MODE" = "app:pw-from-ssm:tok-from-secrets-manager:ci""#,
        &[],
    );
    uses["env_vars"] = serde_json::json!({ "MODE": "ci", "DB_USER": "overridden" });
    uses["ssm_paths"] = serde_json::json!([format!("aws:::ssm:{parameter}")]);
    uses["secret_manager_paths"] = serde_json::json!([token]);
    let mut without = order("without", r#"test -z "$DB_PASSWORD$API_TOKEN""#, &[]);
    without["env_vars"] = serde_json::json!({ "MODE": "ci" });
    let done = cloud.run(&job(vec![uses, without]), |_| Worker::Runs).await;
    assert_eq!(status_of(&done, "uses").0, OrderStatus::Succeeded);
    assert_eq!(status_of(&done, "without").0, OrderStatus::Succeeded);
    // One read per location, however many orders the job has.
    let counted = cloud.calls.snapshot();
    assert_eq!(
        counted[&("ssm", "GetParameter")],
        3,
        "one for the credential, one per order for its worker's key"
    );
    assert_eq!(counted[&("secretsmanager", "GetSecretValue")], 1);

    // A location that holds nothing fails the job before anything is queued.
    let mut missing = order("missing", "true", &[]);
    missing["ssm_paths"] = serde_json::json!([format!("{parameter}-gone")]);
    assert_eq!(
        cloud.refused(vec![missing]).await,
        format!(
            "order 0001 (missing), field `ssm_paths`: nothing is stored at aws:::ssm:{parameter}-gone"
        )
    );
}

#[tokio::test]
async fn a_callback_failing_twice_is_retried_until_the_result_arrives() {
    let cloud = cloud().await;
    let endpoint = FlakyEndpoint::start(Some(2)).await;
    let done = cloud
        .run(&job(vec![order("flaky", "echo reported", &[])]), |_| {
            Worker::CallsBackThrough(endpoint.clone())
        })
        .await;
    assert_eq!(status_of(&done, "flaky").0, OrderStatus::Succeeded);
    assert_eq!(
        endpoint.puts.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "two refusals, then the result"
    );
}

#[tokio::test]
async fn a_callback_that_always_fails_ends_in_a_watchdog_timeout() {
    let cloud = cloud().await;
    let endpoint = FlakyEndpoint::start(None).await;
    let mut unheard = order("unheard", "echo never reported", &[]);
    unheard["timeout"] = 1.into();
    let done = cloud
        .run(
            &job(vec![unheard, order("fine", "echo fine", &[])]),
            |name| {
                if name == "unheard" {
                    Worker::CallsBackThrough(endpoint.clone())
                } else {
                    Worker::Runs
                }
            },
        )
        .await;
    assert_eq!(status_of(&done, "unheard").0, OrderStatus::TimedOut);
    assert_eq!(status_of(&done, "fine").0, OrderStatus::Succeeded);
    assert_eq!(
        endpoint.puts.load(std::sync::atomic::Ordering::SeqCst),
        RetryPolicy::default().attempts as usize,
        "every attempt was made before giving up"
    );
}

#[tokio::test]
async fn a_garbage_result_fails_its_order_and_the_run_still_finishes() {
    let cloud = cloud().await;
    let done = cloud
        .run(
            &job(vec![
                order("garbled", "echo never runs", &[]),
                order("after", "echo after", &["garbled"]),
                order("fine", "echo fine", &[]),
            ]),
            |name| {
                if name == "garbled" {
                    Worker::CallsBackGarbage
                } else {
                    Worker::Runs
                }
            },
        )
        .await;
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(
        status_of(&done, "garbled"),
        (OrderStatus::Failed, Some("malformed_result".to_owned()))
    );
    assert_eq!(
        status_of(&done, "after"),
        (OrderStatus::Failed, Some("dependency_failed".to_owned()))
    );
    assert_eq!(status_of(&done, "fine").0, OrderStatus::Succeeded);
}

#[tokio::test]
async fn orders_share_a_code_zip_from_s3_downloaded_once() {
    use std::io::Write as _;
    let cloud = cloud().await;
    let code_bucket = bucket(&cloud.clients).await;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let exec = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    zip.start_file("bin/plan.sh", exec).unwrap();
    zip.write_all(b"#!/bin/sh\necho \"planning $1 with $(cat data/vars.txt)\"\n")
        .unwrap();
    zip.start_file("data/vars.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"region=eu-west-1").unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    cloud
        .clients
        .s3
        .put_object()
        .bucket(&code_bucket)
        .key("code/infra.zip")
        .body(bytes.into())
        .send()
        .await
        .unwrap();
    let location = format!("s3://{code_bucket}/code/infra.zip");
    let mut vpc = order("vpc", "./bin/plan.sh vpc", &[]);
    vpc["s3_location"] = location.clone().into();
    let mut dns = order("dns", "./bin/plan.sh dns", &[]);
    dns["s3_location"] = location.clone().into();
    let job_text = job(vec![vpc, dns]);

    // init_job reads the zip once for both orders.
    cloud.calls.reset();
    cloud
        .engine()
        .init_job(
            &parse_job(job_text.as_bytes()).unwrap(),
            &ValidateOptions::aws(),
            Path::new("."),
        )
        .await
        .unwrap();
    assert_eq!(cloud.calls.snapshot()[&("s3", "GetObject")], 1);

    let done = cloud.run(&job_text, |_| Worker::Runs).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    let dns = done.orders.iter().find(|o| o.order_name == "dns").unwrap();
    let log = cloud
        .engine()
        .ports
        .internal
        .get(dns.log_key.as_deref().unwrap())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&log).contains("planning dns with region=eu-west-1"));

    let mut missing = order("missing", "true", &[]);
    missing["s3_location"] = format!("s3://{code_bucket}/code/gone.zip").into();
    assert_eq!(
        cloud.refused(vec![missing]).await,
        format!(
            "order 0001 (missing): packaging its code failed: s3_location: nothing is stored at s3://{code_bucket}/code/gone.zip"
        )
    );
}

/// A job of `n` `true` orders, independent (`wide`) or each waiting for the previous.
fn shaped_job(n: usize, chain: bool) -> String {
    let orders = (0..n)
        .map(|i| {
            let previous = format!("o{}", i.saturating_sub(1));
            let deps: Vec<&str> = if chain && i > 0 {
                vec![&previous]
            } else {
                vec![]
            };
            order(&format!("o{i}"), "true", &deps)
        })
        .collect();
    job(orders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_calls_per_order_stay_flat_as_a_run_grows() {
    let mut per_order = Vec::new();
    for (shape, chain) in [("wide", false), ("chain", true)] {
        for n in [10, 100] {
            let cloud = cloud().await;
            let done = cloud.run(&shaped_job(n, chain), |_| Worker::Runs).await;
            assert_eq!(done.status, JobStatus::Succeeded);
            let calls = cloud.calls.total() as f64 / n as f64;
            println!(
                "{shape} {n}: {calls:.1} AWS calls per order\n{}",
                cloud.calls
            );
            per_order.push((shape, n, calls));
        }
    }
    for pair in per_order.chunks(2) {
        let ((shape, _, small), (_, _, large)) = (pair[0], pair[1]);
        assert!(
            large <= small * 1.2,
            "{shape}: {small:.1} calls per order at 10 orders, {large:.1} at 100"
        );
    }
}
