//! A Sluice deployment in moto and the event pump that plays Lambda, S3 notifications and
//! Step Functions for it: init_job → exec.zip in S3 and rows in DynamoDB → the init
//! trigger's S3 notification on SQS → the orchestrator's S3-event handler → Lambda dispatch
//! (the payload taken off the wire as it goes to moto, which cannot run code) → the worker
//! run here with that exact payload over S3/SSM → presigned PUT of result.json to moto →
//! notification → ... → finalize → done document in the done bucket.
//!
//! Step Functions executions are started for real; since moto cannot run their Lambda
//! tasks, the pump plays the run's watch as its state machine would: the real
//! watchdog-check handler with the execution's input, the first check at once, each next
//! one after the wait the check asked for (its calls are counted with the rest).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use sluice_aws::clients::Clients;
use sluice_aws::s3_events::S3Notification;
use sluice_aws::schema::{EVENTS_KEY, LOCKS_KEY, ORDERS_KEY};
use sluice_aws::{AwsSettings, CallCounter, s3_events, wiring};
use sluice_contract::dispatch::{Capability, Claim, CompileRequest, DispatchPayload};
use sluice_contract::result::DoneDoc;
use sluice_contract::{OrderNum, OrderStatus, RunId, ValidateOptions, keys, parse_job};
use sluice_engine::init_job::InitResponse;
use sluice_engine::{Engine, EngineError};
use sluice_ports::WatchdogInput;
use sluice_worker::retry::RetryPolicy;
use sluice_worker::wasm::CompileIn;
use sluice_worker::{WorkerConfig, WorkerIo, run_order};
use sluice_worker_aws::HttpTransfer;

use super::billing::{self, LambdaTime};
use super::{
    BodyTap, FlakyEndpoint, bucket, compile_function, moto, table, unique, watchdog_machine,
    worker_function,
};

/// A Sluice deployment in moto.
pub struct Cloud {
    /// For the test's own set-up and inspection.
    pub clients: Clients,
    /// What each function calls AWS with.
    pub roles: Roles,
    sqs: aws_sdk_sqs::Client,
    pub settings: AwsSettings,
    queue_url: String,
    /// The Lambda client's request bodies: the dispatch payloads.
    tap: BodyTap,
    pub calls: CallCounter,
    /// How long each function the pump played ran, for the bill.
    pub lambda: Arc<LambdaTime>,
    /// Whether the functions' watch settings are short enough for a test to see the watch
    /// act (the default), or the deployment's own (for counting what a run costs).
    pub quick_watch: bool,
    /// Whether init-job takes a run's first step (the default, as deployed), or leaves it
    /// to the init trigger's pass (for a test of the trigger).
    pub first_step_at_init: bool,
    /// Whether the pump also plays the retry timers passes start (watch executions of one
    /// check), found by listing the watch's executions twice a second: only runs whose
    /// orders retry need it.
    pub plays_retry_timers: bool,
    /// Held by a test of the deployed stack: its internal bucket notifies one queue, so one
    /// test at a time plays it.
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
}

/// The deployed stack's turn (see `Cloud::_turn`).
static DEPLOYED_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The clients each function of the deployment calls AWS with: in the shared moto, the
/// same for all; in the deployed stack, each with its own role's credentials. (Workers call
/// AWS with none: their roles are here to show what they are refused.)
#[derive(Clone)]
pub struct Roles {
    pub init_job: Clients,
    pub orchestrator: Clients,
    pub watchdog_check: Clients,
    pub worker: Clients,
    pub codebuild_worker: Clients,
}

impl Roles {
    fn all(clients: &Clients) -> Self {
        Roles {
            init_job: clients.clone(),
            orchestrator: clients.clone(),
            watchdog_check: clients.clone(),
            worker: clients.clone(),
            codebuild_worker: clients.clone(),
        }
    }
}

/// Clients for `shared` whose Lambda calls are copied to `tap`.
fn tapped(shared: &aws_config::SdkConfig, tap: &BodyTap) -> Clients {
    let mut clients = Clients::from_config(shared);
    clients.lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(shared)
            .interceptor(tap.clone())
            .build(),
    );
    clients
}

pub async fn cloud() -> Cloud {
    let clients = moto().await;
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&shared);
    let internal = bucket(&clients).await;
    let done = bucket(&clients).await;
    let queue_url = notify_queue(&clients, &sqs, &internal).await;
    let worker_function = worker_function(&clients).await;
    let compile_function = Some(compile_function(&clients).await);
    let watchdog_state_machine = watchdog_machine(&clients).await;

    let tap = BodyTap::default();
    let clients = tapped(&shared, &tap);
    let settings = AwsSettings {
        internal_bucket: internal,
        done_bucket: done,
        orders_table: table(&clients, ORDERS_KEY).await,
        events_table: table(&clients, EVENTS_KEY).await,
        locks_table: table(&clients, LOCKS_KEY).await,
        worker_function,
        compile_function,
        codebuild_project: "unused".to_owned(),
        watchdog_state_machine,
        ssm_prefix: format!("/{}", unique("sluice-test")),
        event_ttl_days: 90,
        order_ttl_days: 1,
        github_api: None,
        git: Default::default(),
        credential_grants: Default::default(),
    };
    Cloud {
        roles: Roles::all(&clients),
        clients,
        sqs,
        settings,
        queue_url,
        tap,
        calls: CallCounter::default(),
        lambda: Arc::default(),
        quick_watch: true,
        first_step_at_init: true,
        plays_retry_timers: false,
        _turn: None,
    }
}

/// The stack `scripts/moto-deployed.py` deployed from the template, in the moto that checks
/// every call against the caller's IAM policies: each function calls AWS with credentials
/// of its own role, and takes its settings from its environment as deployed.
pub async fn deployed() -> Cloud {
    let path = std::env::var("SLUICE_MOTO_DEPLOYMENT").expect(
        "SLUICE_MOTO_DEPLOYMENT is not set: run these tests through scripts/test, which starts \
         the deployed moto (scripts/moto-server)",
    );
    let deployment: Deployment = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}")),
    )
    .unwrap();
    let turn = DEPLOYED_TURN.lock().await;
    let tap = BodyTap::default();
    let config = |key: &Key| {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&deployment.endpoint)
            .region(aws_config::Region::new(deployment.region.clone()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &key.access_key_id,
                &key.secret_access_key,
                key.session_token.clone(),
                None,
                "moto-deployed",
            ))
            .load()
    };
    let of_function = |function: &str| -> &Key {
        let role = &deployment.functions[function].role;
        &deployment.roles[role]
    };
    let admin = config(&deployment.admin).await;
    let clients = tapped(&admin, &tap);
    let roles = Roles {
        init_job: tapped(&config(of_function("InitJobFunction")).await, &tap),
        orchestrator: tapped(&config(of_function("OrchestratorFunction")).await, &tap),
        watchdog_check: tapped(&config(of_function("WatchdogCheckFunction")).await, &tap),
        worker: tapped(&config(of_function("WorkerFunction")).await, &tap),
        codebuild_worker: tapped(
            &config(&deployment.roles["CodeBuildWorkerRole"]).await,
            &tap,
        ),
    };
    // init-job's: every setting (the compile function's name too).
    let environment = &deployment.functions["InitJobFunction"].environment;
    let settings = AwsSettings::from_lookup(|name| environment.get(name).cloned()).unwrap();
    let sqs = aws_sdk_sqs::Client::new(&admin);
    let queue_url = notify_queue(&clients, &sqs, &settings.internal_bucket).await;
    Cloud {
        clients,
        roles,
        sqs,
        settings,
        queue_url,
        tap,
        calls: CallCounter::default(),
        lambda: Arc::default(),
        quick_watch: true,
        first_step_at_init: true,
        plays_retry_timers: false,
        _turn: Some(turn),
    }
}

/// What `scripts/moto-deployed.py` writes.
#[derive(serde::Deserialize)]
struct Deployment {
    endpoint: String,
    region: String,
    admin: Key,
    roles: std::collections::BTreeMap<String, Key>,
    functions: std::collections::BTreeMap<String, Function>,
}

#[derive(serde::Deserialize)]
struct Key {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct Function {
    role: String,
    environment: std::collections::BTreeMap<String, String>,
}

/// A queue that gets the internal bucket's result notifications, as the template wires S3
/// → the orchestrator; its URL.
async fn notify_queue(clients: &Clients, sqs: &aws_sdk_sqs::Client, internal: &str) -> String {
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
        .bucket(internal)
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
    queue_url
}

/// What the pump does with a dispatched attempt.
#[derive(Clone)]
pub enum Worker {
    /// Runs it.
    Runs,
    /// Claims it, then dies without reporting (for the watchdog).
    DiesAfterClaiming,
    /// Runs it, calling back through this endpoint.
    CallsBackThrough(FlakyEndpoint),
    /// Runs nothing and PUTs these bytes to the callback URL instead of a worker's result.
    CallsBack(Vec<u8>),
}

impl Cloud {
    /// Sends every AWS call of the deployment's functions and its workers (presigned
    /// callbacks included) through `endpoint`: a proxy in front of moto. The test's own
    /// set-up and inspection (`clients`: waiting for the done document, reading the run's
    /// watch) still reach moto directly: a proxy that refuses calls is the deployment's
    /// weather, not the test's.
    pub async fn through(&mut self, endpoint: &str) {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .load()
            .await;
        self.roles = Roles::all(&tapped(&shared, &self.tap));
    }

    /// Stores the credential `json` (base64, as jobs' `ssm_paths` hold them) as the
    /// SecureString parameter `name`.
    pub async fn put_parameter(&self, name: &str, json: &str) {
        let value = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, json);
        self.clients
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    }

    /// Stores `value` as the Secrets Manager secret `name`.
    pub async fn put_secret(&self, name: &str, value: &str) {
        self.clients
            .secrets_manager
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }

    /// Plays the state machine of `run_id`'s watch, through the real watchdog-check handler
    /// with watchdog-check's role, until a kick has started the run (its first order left
    /// `queued`); returns the input of the next step.
    pub async fn watch_until_started(&self, run_id: &RunId) -> serde_json::Value {
        let watch = self.run_watch(run_id).await;
        let watchdog = self.engine_as(&self.roles.watchdog_check);
        let engine = self.harness();
        let mut input = serde_json::to_value(&watch).unwrap();
        let started = Instant::now();
        let queued = || async { engine.ports.orders.run_orders(run_id).await.unwrap()[0].status };
        while queued().await == OrderStatus::Queued {
            let output = sluice_aws::handlers::watchdog::handle(
                &watchdog,
                &serde_json::from_value(input.clone()).unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(output["done"], false, "the run is not finalized: {output}");
            assert!(started.elapsed() < Duration::from_secs(30), "{output}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            input = output;
        }
        input
    }

    /// The engine as the test sees the deployment (set-up and inspection).
    pub fn engine(&self) -> Engine {
        self.engine_as(&self.clients)
    }

    /// The engine the harness itself reads with (waiting for a done document, the names of
    /// a run's orders): its calls are not the deployment's, so they are not counted.
    fn harness(&self) -> Engine {
        wiring::aws_engine(&self.clients, &self.settings, &CallCounter::default())
    }

    /// The engine as a function with `clients` runs it.
    pub fn engine_as(&self, clients: &Clients) -> Engine {
        let mut engine = wiring::aws_engine(clients, &self.settings, &self.calls);
        engine.config.first_step_at_init = self.first_step_at_init;
        if self.quick_watch {
            // Short enough for a test to see the watchdogs act.
            engine.config.watchdog_slack = Duration::from_secs(1);
            engine.config.start_grace = Duration::from_secs(1);
        }
        engine
    }

    /// Submits `job` (JSON) as init-job does.
    pub async fn submit(&self, job: &str) -> Result<InitResponse, EngineError> {
        let started = Instant::now();
        let submitted = self
            .engine_as(&self.roles.init_job)
            .init_job(
                &parse_job(job.as_bytes()).unwrap(),
                &ValidateOptions::aws(),
                Path::new("."),
            )
            .await;
        self.lambda
            .record(billing::Function::InitJob, started.elapsed());
        submitted
    }

    /// Asks init-job — its handler, with its role — to run `of`'s job again as `sluice
    /// rerun --aws` does (a direct invoke); its answer (the new run's ids, or `errors`).
    pub async fn rerun(&self, of: &RunId, failed: bool) -> serde_json::Value {
        let started = Instant::now();
        let request = serde_json::json!({ "rerun_of": of, "failed": failed });
        let engine = self.engine_as(&self.roles.init_job);
        let answer = sluice_aws::handlers::init_job::handle(&engine, &request).await;
        self.lambda
            .record(billing::Function::InitJob, started.elapsed());
        answer.unwrap()
    }

    /// Submits `job` and pumps events until its done document appears. A submission that
    /// fails transiently (init-job answers 503) is sent again, as `sluice submit` does.
    pub async fn run(&self, job: &str, worker_of: impl Fn(&str) -> Worker) -> DoneDoc {
        let mut tries = 0;
        let response = loop {
            tries += 1;
            match self.submit(job).await {
                Ok(response) => break response,
                Err(error) if error.kind() == sluice_ports::ErrorKind::Transient && tries < 4 => {
                    println!("submission failed transiently, sent again: {error}");
                }
                Err(error) => panic!("submitting: {error}"),
            }
        };
        self.pump(&response.run_id, worker_of).await
    }

    /// Plays the deployment for the submitted run `run_id` until its done document appears;
    /// `worker_of` says what the worker of each order (by name) does.
    pub async fn pump(&self, run_id: &RunId, worker_of: impl Fn(&str) -> Worker) -> DoneDoc {
        let engine = self.harness();
        let orchestrator = Arc::new(self.engine_as(&self.roles.orchestrator));
        let watchdog = self.engine_as(&self.roles.watchdog_check);
        let names: Vec<String> = engine
            .ports
            .orders
            .run_orders(run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.plan.order_name)
            .collect();
        let transfer = HttpTransfer::new().unwrap().counted(self.calls.clone());
        let config = WorkerConfig {
            host_env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
            // Short waits and no report window, so a test does not wait out a worker's
            // patience; 8 tries where a deployed worker goes on for its 30 s window, so the
            // throttling test's 10 % of refused requests do not fail a step four times in a
            // row (about one run in a hundred, with 4 tries).
            callback: RetryPolicy {
                attempts: 8,
                first_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                report_window: Duration::ZERO,
                ..RetryPolicy::default()
            },
            ..WorkerConfig::default()
        };
        // The state machine's first state: wait what init-job asked, else check at once.
        let watch_input = self.run_watch(run_id).await;
        let first_wait = Duration::from_secs(watch_input.wait_seconds.unwrap_or(0));
        let mut watch = serde_json::to_value(watch_input).unwrap();
        let mut next_check = Some(Instant::now() + first_wait);
        let mut tasks = tokio::task::JoinSet::new();
        // The worker run here with the dispatched payload, as a fresh Lambda would run it:
        // with no AWS credentials, only the payload's presigned URLs, and nothing compiled.
        let spawn_worker = |tasks: &mut tokio::task::JoinSet<()>, payload: DispatchPayload| {
            let transfer = transfer.clone();
            let config = WorkerConfig {
                wasm: Arc::default(),
                ..config.clone()
            };
            let lambda = Arc::clone(&self.lambda);
            tasks.spawn(async move {
                let started = Instant::now();
                run_order(&payload, &transfer, &config).await;
                lambda.record(billing::Function::Worker, started.elapsed());
            });
        };
        let retries: Arc<std::sync::Mutex<Vec<(S3Notification, u32)>>> = Arc::default();
        // Retry timers: each execution's step and when its check comes.
        let mut timers: Vec<(serde_json::Value, Instant)> = Vec::new();
        let mut timers_seen = std::collections::HashSet::new();
        let mut timers_looked = Instant::now();
        let started = Instant::now();
        loop {
            // A benchmark's runs of hundreds of orders take longer: moto answers a Query of
            // a run's rows in time growing with them, so a chain's hop does too (0.25 s at
            // 10 orders, 0.4 at 100, 0.8 at 300 on 2 cores).
            let patience =
                Duration::from_secs(120) + Duration::from_millis(1200) * names.len() as u32;
            assert!(started.elapsed() < patience, "run {run_id} did not finish");
            // S3 notifications → the orchestrator handler, concurrently as Lambda would; an
            // invocation that fails (a pass that gave up under throttling) is invoked again,
            // twice at most, as Lambda retries an asynchronous event.
            let mut events: Vec<(S3Notification, u32)> = self
                .take_notifications()
                .await
                .into_iter()
                .map(|event| (event, 0))
                .collect();
            events.append(&mut retries.lock().unwrap());
            let idle = events.is_empty() && self.tap.is_empty();
            for (event, tries) in events {
                let (orchestrator, retries) = (Arc::clone(&orchestrator), Arc::clone(&retries));
                let lambda = Arc::clone(&self.lambda);
                tasks.spawn(async move {
                    let started = Instant::now();
                    let outcome = s3_events::orchestrate_event(&orchestrator, &event).await;
                    lambda.record(billing::Function::Orchestrator, started.elapsed());
                    if let Err(error) = outcome {
                        assert!(tries < 2, "the orchestrator failed three times: {error}");
                        retries.lock().unwrap().push((event, tries + 1));
                    }
                });
            }
            // Compile requests → the compile function (tried three times, as Lambda tries
            // an asynchronous event); dispatched attempts → workers.
            let bodies: Vec<serde_json::Value> = self.tap.take();
            let mut dispatched = Vec::new();
            for body in bodies {
                if let Ok(request) = serde_json::from_value::<CompileRequest>(body.clone()) {
                    let (transfer, lambda) = (transfer.clone(), Arc::clone(&self.lambda));
                    tasks.spawn(async move {
                        for _ in 0..3 {
                            let started = Instant::now();
                            let compiled = sluice_compile::compile_for_run(
                                &request,
                                &transfer,
                                &CompileIn::ThisProcess,
                                tokio::time::Instant::now() + Duration::from_secs(60),
                            )
                            .await;
                            lambda.record(billing::Function::Compile, started.elapsed());
                            match compiled {
                                Ok(_) => return,
                                Err(error) => println!("the compile function failed: {error}"),
                            }
                        }
                    });
                } else if let Ok(payload) = serde_json::from_value::<DispatchPayload>(body) {
                    dispatched.push(payload);
                }
            }
            for payload in dispatched {
                let name = &names[payload.order_num.get() as usize - 1];
                match worker_of(name) {
                    Worker::CallsBackThrough(endpoint) => {
                        let mut rerouted = payload.clone();
                        rerouted.callback_url =
                            Capability::new(endpoint.url_for(payload.callback_url.expose()));
                        spawn_worker(&mut tasks, rerouted);
                    }
                    Worker::CallsBack(result) => {
                        transfer
                            .put_if_absent(&payload.callback_url, result)
                            .await
                            .unwrap();
                    }
                    Worker::Runs => spawn_worker(&mut tasks, payload),
                    Worker::DiesAfterClaiming => {
                        let claim = Claim {
                            attempt: payload.attempt.clone(),
                            claimed_at_ms: now_ms(),
                            worker: "w1".to_owned(),
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
                    }
                }
            }
            // The run's watch: a check when its wait is over; a check that fails is retried
            // after 2 s, as the state machine's Retry does.
            if next_check.is_some_and(|at| Instant::now() >= at) {
                next_check = self.check_watch(&watchdog, &mut watch).await;
            }
            // Retry timers started since the last look, each checked after its first wait.
            if self.plays_retry_timers && timers_looked.elapsed() > Duration::from_millis(500) {
                timers_looked = Instant::now();
                for timer in self.watchdog_executions().await {
                    if timer.run_id == *run_id
                        && timer.wake_at_ms.is_some()
                        && timers_seen.insert(serde_json::to_string(&timer).unwrap())
                    {
                        let wait = Duration::from_secs(timer.wait_seconds.unwrap_or(0));
                        timers.push((serde_json::to_value(timer).unwrap(), Instant::now() + wait));
                    }
                }
            }
            let mut due = Vec::new();
            timers.retain(|(step, at)| {
                let is_due = Instant::now() >= *at;
                if is_due {
                    due.push(step.clone());
                }
                !is_due
            });
            for mut step in due {
                if let Some(at) = self.check_watch(&watchdog, &mut step).await {
                    timers.push((step, at));
                }
            }
            if let Ok(bytes) = engine.ports.done.get(&keys::done(run_id)).await {
                while tasks.join_next().await.is_some() {}
                // The watch's next check, sooner than it would come: it finds the run
                // finalized and ends (every run's watch makes that check, and pays for it).
                // A finalize that did not complete (its keys not deleted, its lock not
                // completed) is kicked again by the check, and the watch must end soon.
                let mut checks = 0;
                while next_check.is_some() {
                    checks += 1;
                    assert!(
                        checks <= 5,
                        "the watch of {run_id} goes on after its done document"
                    );
                    next_check = self.check_watch(&watchdog, &mut watch).await;
                }
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

    /// One check of the run's watch (`watch`, its step's input, becomes the next step's);
    /// when the next comes, or `None` when the watch is done.
    async fn check_watch(
        &self,
        watchdog: &Engine,
        watch: &mut serde_json::Value,
    ) -> Option<Instant> {
        let step = serde_json::from_value(watch.clone()).unwrap();
        let started = Instant::now();
        let checked = sluice_aws::handlers::watchdog::handle(watchdog, &step).await;
        self.lambda
            .record(billing::Function::WatchdogCheck, started.elapsed());
        match checked {
            Ok(output) if output["done"] == true => None,
            Ok(output) => {
                let wait = output["wait_seconds"].as_u64().unwrap();
                *watch = output;
                Some(Instant::now() + Duration::from_secs(wait))
            }
            // The state machine's Retry.
            Err(_) => Some(Instant::now() + Duration::from_secs(2)),
        }
    }

    /// What init_job says of `job`, which it refuses as the job's fault.
    pub async fn refused(&self, job: &str) -> String {
        let error = self.submit(job).await.unwrap_err();
        assert!(error.is_invalid_input(), "{error}");
        error.to_string()
    }

    /// The inputs of the watchdog executions started for `attempts`.
    /// The input init-job started `run_id`'s watch with.
    async fn run_watch(&self, run_id: &RunId) -> WatchdogInput {
        self.watchdog_executions()
            .await
            .into_iter()
            .find(|w| w.run_id == *run_id && w.order_num == OrderNum::INIT)
            .expect("init-job started the run's watch")
    }

    /// The inputs of every watchdog execution started so far.
    pub async fn watchdog_executions(&self) -> Vec<WatchdogInput> {
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
            inputs.push(serde_json::from_str(described.input().unwrap()).unwrap());
        }
        inputs
    }

    /// Takes (receives and deletes) up to ten S3 notifications waiting for the
    /// orchestrator; their events.
    async fn take_notifications(&self) -> Vec<S3Notification> {
        let messages = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let mut events = Vec::new();
        for message in messages.messages() {
            events.push(serde_json::from_str(message.body().unwrap_or("{}")).unwrap());
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        events
    }

    /// Takes every S3 notification waiting for the orchestrator and throws it away, as if
    /// its delivery had failed; returns how many there were.
    pub async fn lose_notifications(&self) -> usize {
        let mut lost = 0;
        loop {
            match self.take_notifications().await.len() {
                0 => return lost,
                taken => lost += taken,
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
