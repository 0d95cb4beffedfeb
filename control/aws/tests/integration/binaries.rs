//! The five binaries started as AWS starts them: a process whose `AWS_LAMBDA_RUNTIME_API`
//! points at a Lambda Runtime API (served here on 127.0.0.1), with the function's
//! environment, `AWS_ENDPOINT_URL` at moto and the `SLUICE_*` settings. Each gets real
//! events through `GET /runtime/invocation/next` and answers through
//! `POST /runtime/invocation/<id>/response`, as in Lambda. Together they carry a job from
//! init to its done document. With `SLUICE_LAMBDA_DIR` set (`scripts/build-lambdas
//! --check`), the binaries are the `bootstrap` files built for Lambda.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::binaries::built_binary;
use crate::support::{compile_function, moto, settings_env, store_settings, worker_function};
use serde_json::{Value, json};
use sluice_aws::{AwsSettings, CallCounter, wiring};
use sluice_contract::result::DoneDoc;
use sluice_contract::{ExecutionTarget, JobStatus, OrderNum, OrderStatus, RunId, keys};
use sluice_engine::Engine;
use sluice_ports::{OrderRecord, Presigned};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A Lambda Runtime API serving `events` in turn and collecting the answers.
struct RuntimeApi {
    address: String,
    answers: Arc<Mutex<Vec<(String, Value)>>>,
    /// When the function first asked for an event (it is ready), and first answered one.
    first_asked: Arc<Mutex<Option<Instant>>>,
    first_answered: Arc<Mutex<Option<Instant>>>,
}

impl RuntimeApi {
    async fn start(events: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let events = Arc::new(Mutex::new(VecDeque::from(events)));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let first_asked: Arc<Mutex<Option<Instant>>> = Arc::default();
        let first_answered: Arc<Mutex<Option<Instant>>> = Arc::default();
        let served = Arc::clone(&answers);
        let (asked, answered) = (Arc::clone(&first_asked), Arc::clone(&first_answered));
        tokio::spawn(async move {
            let mut next_id = 0;
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (events, answers) = (Arc::clone(&events), Arc::clone(&served));
                let (asked, answered) = (Arc::clone(&asked), Arc::clone(&answered));
                let mut ids = next_id;
                next_id += 1000;
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    loop {
                        let Some(request) = crate::support::read_request(&mut reader).await else {
                            return;
                        };
                        let path = request.line.split_whitespace().nth(1).unwrap().to_owned();
                        let response = if path.ends_with("/invocation/next") {
                            asked.lock().unwrap().get_or_insert_with(Instant::now);
                            let event = events.lock().unwrap().pop_front();
                            let Some(event) = event else {
                                // No more events: park the runtime, as Lambda freezes it.
                                std::future::pending::<()>().await;
                                return;
                            };
                            ids += 1;
                            let body = event.to_string();
                            format!(
                                "HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: req-{ids}\r\n\
                                 Lambda-Runtime-Deadline-Ms: 4102444800000\r\n\
                                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:f\r\n\
                                 Lambda-Runtime-Trace-Id: Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700\r\n\
                                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        } else {
                            let kind = if path.ends_with("/response") {
                                "response"
                            } else {
                                "error"
                            };
                            let value =
                                serde_json::from_slice(&request.body).unwrap_or_else(|_| {
                                    Value::String(String::from_utf8_lossy(&request.body).into())
                                });
                            answers.lock().unwrap().push((kind.to_owned(), value));
                            answered.lock().unwrap().get_or_insert_with(Instant::now);
                            "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}".to_owned()
                        };
                        write.write_all(response.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        RuntimeApi {
            address,
            answers,
            first_asked,
            first_answered,
        }
    }
}

/// Runs `binary` as a Lambda function over `events`; returns its answers, in order.
async fn invoke(binary: &str, settings: &AwsSettings, events: Vec<Value>) -> Vec<(String, Value)> {
    let start = Start {
        credentials: true,
        log: "info",
    };
    invoke_as(binary, settings, events, start).await.0
}

/// How a function is started.
struct Start {
    /// Whether AWS credentials are in its environment.
    credentials: bool,
    /// Its `SLUICE_LOG`.
    log: &'static str,
}

/// As [`invoke`], started as `start` says; returns its log lines too.
async fn invoke_as(
    binary: &str,
    settings: &AwsSettings,
    events: Vec<Value>,
    start: Start,
) -> (Vec<(String, Value)>, Vec<String>) {
    let Start { credentials, log } = start;
    let expected = events.len();
    let api = RuntimeApi::start(events).await;
    let mut command = tokio::process::Command::new(binary);
    command.env("SLUICE_LOG", log);
    if !credentials {
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AWS_")) {
            command.env_remove(name);
        }
        // Nor any file or instance role to find them in.
        command.env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
        command.env("AWS_CONFIG_FILE", "/nonexistent");
        command.env("AWS_EC2_METADATA_DISABLED", "true");
    }
    let started = Instant::now();
    let mut child = command
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "sluice-test")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .envs(
            settings_env(settings)
                .into_iter()
                .filter(|(name, _)| credentials || !name.starts_with("AWS_")),
        )
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if api.answers.lock().unwrap().len() >= expected {
                break;
            }
            tokio::select! {
                line = logs.next_line() => {
                    let line = line.unwrap().expect("the function exited early");
                    let log: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
                    assert!(log.get("level").is_some(), "{line}");
                    lines.push(line);
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    child.kill().await.unwrap();
    waited.expect("the function answered every event");
    // Lambda's init phase: process start to the first request for an event.
    let since_start = |at: &Mutex<Option<Instant>>| {
        let at = at.lock().unwrap().expect("asked and answered");
        at.duration_since(started).as_secs_f64() * 1000.0
    };
    println!(
        "{binary}: ready {:.1} ms after start, first event answered {:.1} ms after start",
        since_start(&api.first_asked),
        since_start(&api.first_answered)
    );
    let answers = api.answers.lock().unwrap().clone();
    (answers, lines)
}

async fn deployment() -> AwsSettings {
    let clients = moto().await;
    let mut settings = store_settings(&clients).await;
    settings.worker_function = worker_function(&clients).await;
    settings.compile_function = Some(compile_function(&clients).await);
    settings.codebuild_project = "no-orders-run-there".to_owned();
    settings
}

fn s3_event(bucket: &str, key: &str) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-27T07:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:EXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {"x-amz-request-id": "EXAMPLE", "x-amz-id-2": "EXAMPLE"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "results",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "EXAMPLE"},
                          "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": key.replace(':', "%3A"), "size": 100, "eTag": "0123456789abcdef",
                          "sequencer": "0A1B2C3D4E5F678901"}}
    }]})
}

/// The binary `name` of another crate, cargo built beside this test (in the target
/// folder's profile folder) from `sources`.
fn other_crates_binary(name: &str, sources: &[&str], build: &str) -> String {
    let common = [
        "Cargo.toml",
        "Cargo.lock",
        "worker-host/src",
        "worker-host/Cargo.toml",
        "worker-host/aws/src",
        "worker-host/aws/Cargo.toml",
        "control/contract/src",
        "control/lambda/src",
    ];
    let sources: Vec<&str> = common.iter().chain(sources).copied().collect();
    built_binary(name, &sources, build).display().to_string()
}

/// The binary `name` the test runs: the one cargo built for this test (the worker and
/// the compile function are other crates', built by `cargo test --workspace` beside this
/// crate's — the worker then with the compiler the workspace's other crates ask for, so
/// `scripts/test` builds it alone first, as `slim-worker`, and says so in
/// SLUICE_SLIM_WORKER), or (SLUICE_LAMBDA_DIR, set by `scripts/build-lambdas --check`)
/// the `bootstrap` file built for Lambda.
fn bin(name: &str) -> String {
    if let Ok(dir) = std::env::var("SLUICE_LAMBDA_DIR") {
        return format!("{dir}/{name}/bootstrap");
    }
    match name {
        "init-job" => env!("CARGO_BIN_EXE_init-job"),
        "orchestrator" => env!("CARGO_BIN_EXE_orchestrator"),
        "watchdog-check" => env!("CARGO_BIN_EXE_watchdog-check"),
        "compile" => {
            return other_crates_binary(
                "compile",
                &["worker-host/compile/src", "worker-host/compile/Cargo.toml"],
                "`cargo build -p sluice-compile` (or `cargo test --workspace`)",
            );
        }
        _ if std::env::var_os("SLUICE_SLIM_WORKER").is_some() => {
            return other_crates_binary(
                "slim-worker",
                &[],
                "`cargo build -p sluice-worker-aws && cp target/debug/worker target/debug/slim-worker`",
            );
        }
        _ => {
            eprintln!(
                "note: running the worker cargo built for the workspace, which has a compiler; \
                 scripts/test runs the Lambda's (SLUICE_SLIM_WORKER)"
            );
            return other_crates_binary(
                "worker",
                &[],
                "`cargo build -p sluice-worker-aws` (or `cargo test --workspace`)",
            );
        }
    }
    .to_owned()
}

/// Submits `job` through init-job's binary, as API Gateway's HTTP API invokes it; the run.
async fn submit(settings: &AwsSettings, job: &Value) -> RunId {
    let http = json!({
        "version": "2.0", "routeKey": "POST /init", "rawPath": "/init", "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"accountId": "123456789012", "apiId": "abc", "requestId": "id",
            "stage": "$default", "time": "27/Nov/2026:07:00:00 +0000", "timeEpoch": 1795762800000u64,
            "http": {"method": "POST", "path": "/init", "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "curl/8.0"},
            "authorizer": {"iam": {"accountId": "123456789012",
                                   "userArn": "arn:aws:iam::123456789012:user/alice"}}},
        "body": job.to_string(), "isBase64Encoded": false
    });
    let answers = invoke(&bin("init-job"), settings, vec![http]).await;
    assert_eq!(answers[0].0, "response", "{answers:?}");
    assert_eq!(answers[0].1["statusCode"], 200, "{answers:?}");
    let body: Value = serde_json::from_str(answers[0].1["body"].as_str().unwrap()).unwrap();
    RunId::parse(body["run_id"].as_str().unwrap()).unwrap()
}

/// Has the orchestrator's binary, woken by the init trigger's S3 event, dispatch the run's
/// first order (init-job's binary has, in its first step: the pass then finds it started);
/// that order, `running`.
async fn dispatch_first(settings: &AwsSettings, engine: &Engine, run_id: &RunId) -> OrderRecord {
    let trigger = keys::trigger(run_id);
    let answers = invoke(
        &bin("orchestrator"),
        settings,
        vec![s3_event(&settings.internal_bucket, &trigger)],
    )
    .await;
    assert_eq!(answers[0].0, "response", "{answers:?}");
    let first = OrderNum::from_index(0);
    let order = engine.ports.orders.get_order(run_id, first).await.unwrap();
    assert_eq!(order.status, OrderStatus::Running);
    order
}

/// A URL for `operation` on `key` of the internal bucket, as the control plane mints them.
async fn presign(engine: &Engine, operation: Presigned, key: &str) -> String {
    let url = engine
        .ports
        .internal
        .presign(operation, key, Duration::from_secs(600));
    url.await.unwrap()
}

/// The dispatch payload of `order`'s attempt, as the orchestrator invokes the worker with
/// it (moto's Lambda runs nothing, so the test invokes the worker itself).
async fn worker_payload(engine: &Engine, order: &OrderRecord) -> Value {
    let (run_id, num) = (&order.run_id, order.plan.order_num);
    let attempt = order.attempt.clone().unwrap();
    let claim = keys::claim(run_id, num, &attempt);
    // A small bundle is in the run's pack, read by its range.
    let bundle_url = match &order.packed {
        Some(at) => {
            let pack = keys::bundle_pack(run_id, at.pack);
            presign(engine, Presigned::GetRange(at.range.clone()), &pack).await
        }
        None => presign(engine, Presigned::Get, &keys::exec_zip(run_id, num)).await,
    };
    let mut payload = json!({
        "run_id": run_id, "order_num": num, "attempt": attempt,
        "bundle_url": bundle_url,
        "bundle_range": order.packed.as_ref().map(|at| &at.range),
        "claim_url": presign(engine, Presigned::PutIfAbsent, &claim).await,
        "claim_check_url": presign(engine, Presigned::Get, &claim).await,
        "log_url": presign(engine, Presigned::Put, &order.log_key).await,
        "callback_url": presign(engine, Presigned::PutIfAbsent, &keys::result(run_id, num, &attempt)).await,
        "identity": sluice_engine::run_key::order_identity(
            &engine.ports.keys.get_key(&order.key_path).await.unwrap(),
            run_id,
            num,
        )
        .unwrap(),
    });
    if let Some(module) = &order.compiled {
        let code = keys::compiled_code(
            run_id,
            ExecutionTarget::Lambda,
            &module.module_sha256,
            module.metered,
        );
        payload["compiled"] = json!({
            "module_sha256": module.module_sha256,
            "get_url": presign(engine, Presigned::Get, &code).await,
        });
    }
    payload
}

/// The worker's binary, started with no AWS credentials at all (its presigned URLs are all
/// it needs), run over `payload`; its answer and its log lines.
async fn run_worker(settings: &AwsSettings, payload: Value) -> (Value, Vec<String>) {
    // Logging everything: the Lambda runtime's own tracing (which logs whole events) stays
    // at info, so nothing of the payload — its signatures, the order's identity — is logged.
    let start = Start {
        credentials: false,
        log: "trace",
    };
    let (answers, logs) = invoke_as(&bin("worker"), settings, vec![payload], start).await;
    (answers[0].1.clone(), logs)
}

/// The stored log of the run's first order.
async fn first_log(engine: &Engine, run_id: &RunId) -> String {
    let first = OrderNum::from_index(0);
    let log = engine.ports.internal.get(&keys::log(run_id, first)).await;
    String::from_utf8_lossy(&log.unwrap()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_carry_a_job_from_init_to_its_done_document() {
    let settings = deployment().await;
    let job = json!({"username": "alice", "orders": [
        {"order_name": "hello", "cmds": ["echo hello from $SLUICE_ORDER_NAME"], "timeout": 60,
         "execution_target": "lambda"}
    ]});
    let run_id = submit(&settings, &job).await;
    let clients = moto().await;
    let engine = wiring::aws_engine(&clients, &settings, &CallCounter::default());
    let order = dispatch_first(&settings, &engine, &run_id).await;

    let payload = worker_payload(&engine, &order).await;
    let identity = payload["identity"].as_str().unwrap().to_owned();
    let (answer, logs) = run_worker(&settings, payload).await;
    assert!(
        logs.iter()
            .any(|line| line.contains("\"level\":\"DEBUG\"") || line.contains("TRACE")),
        "trace logging is on"
    );
    for line in &logs {
        assert!(
            !line.contains(&identity) && !line.contains("X-Amz-Signature"),
            "{line}"
        );
    }
    assert_eq!(answer, json!({"reported": "succeeded"}));

    // A step of the run's watch: the result is there but not applied yet, so the step
    // kicks the orchestrator, which finalizes the run.
    let step = json!({
        "run_id": run_id, "order_num": "0000", "attempt": "run", "timeout": 0,
        "start_time": 1_795_762_800u64, "job_deadline": 4_102_444_800u64,
        "internal_bucket": settings.internal_bucket,
    });
    let answers = invoke(&bin("watchdog-check"), &settings, vec![step]).await;
    assert_eq!(answers[0].1["attempt"], "run", "{answers:?}");
    assert!(
        answers[0].1["wait_seconds"].as_u64().is_some(),
        "{answers:?}"
    );

    // The result's own S3 event, arriving after: the run is already finished.
    let result = keys::result(
        &run_id,
        order.plan.order_num,
        order.attempt.as_ref().unwrap(),
    );
    let answers = invoke(
        &bin("orchestrator"),
        &settings,
        vec![s3_event(&settings.internal_bucket, &result)],
    )
    .await;
    assert_eq!(
        answers[0].1["runs"][0]["outcome"], "AlreadyFinished",
        "{answers:?}"
    );
    let done = engine.ports.done.get(&keys::done(&run_id)).await.unwrap();
    let done: DoneDoc = serde_json::from_slice(&done).unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(
        first_log(&engine, &run_id)
            .await
            .contains("hello from hello")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compile_function_compiles_a_module_the_worker_then_runs() {
    let settings = deployment().await;
    let clients = moto().await;
    // A WASI command printing a line, in a code zip init-job reads from S3.
    let module = wat::parse_str(crate::support::HELLO_WASM).unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("guest.wasm", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut zip, &module).unwrap();
    let code_bucket = crate::support::bucket(&clients).await;
    (clients.s3.put_object())
        .bucket(&code_bucket)
        .key("guest.zip")
        .body(zip.finish().unwrap().into_inner().into())
        .send()
        .await
        .unwrap();
    let job = json!({"username": "alice", "orders": [
        {"order_name": "guest", "wasm": {"module": "guest.wasm"}, "timeout": 60,
         "s3_location": format!("s3://{code_bucket}/guest.zip"), "execution_target": "lambda"}
    ]});
    let run_id = submit(&settings, &job).await;
    let engine = wiring::aws_engine(&clients, &settings, &CallCounter::default());
    let order = dispatch_first(&settings, &engine, &run_id).await;
    let compiled = order.compiled.clone().expect("init-job named the module");

    // The compile function, invoked with what init-job asked of it (moto's Lambda ran
    // nothing), with no AWS credentials: the module and its code's object are behind URLs.
    let code = keys::compiled_code(
        &run_id,
        ExecutionTarget::Lambda,
        &compiled.module_sha256,
        false,
    );
    let request = json!({
        "run_id": run_id, "module_name": "guest.wasm",
        "module_url": presign(&engine, Presigned::Get, &keys::module_to_compile(&run_id, &compiled.module_sha256)).await,
        "module_sha256": compiled.module_sha256, "metered": false, "timeout": 60,
        "code_url": presign(&engine, Presigned::PutIfAbsent, &code).await,
    });
    let start = Start {
        credentials: false,
        log: "info",
    };
    let (answers, _) = invoke_as(&bin("compile"), &settings, vec![request], start).await;
    assert_eq!(answers[0], ("response".to_owned(), json!({"stored": true})));

    // The worker (on Lambda, without a compiler) loads that code and runs the module.
    let (answer, _) = run_worker(&settings, worker_payload(&engine, &order).await).await;
    assert_eq!(answer, json!({"reported": "succeeded"}));
    let log = first_log(&engine, &run_id).await;
    assert!(
        log.contains("loaded guest.wasm as the compile function compiled it")
            && log.contains("hello from wasm"),
        "{log}"
    );
}
