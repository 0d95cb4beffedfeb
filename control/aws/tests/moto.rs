//! The AWS adapters against moto server: the engine's conformance suites (the same ones the
//! local backends pass), plus what only AWS has (presigned URLs, paginated lists, batches
//! beyond one transaction).
//!
//! `scripts/test` starts moto on 127.0.0.1 and exports `AWS_ENDPOINT_URL`; every test makes
//! its own buckets and tables, so tests run in parallel.

mod support;

use std::time::Duration;

use sluice_aws::{CallCounter, DynamoOrderStore, S3Store, clients::Clients};
use sluice_contract::RunId;
use sluice_engine::conformance::{object_store_suite, order_store_suite, sample_order};
use sluice_engine::ports::{ObjectStore, OrderStore};
use support::{
    BodyTap, ROLE, bucket, moto, put_url, store_settings, unique, watchdog_machine, worker_function,
};

async fn order_store(clients: &Clients, calls: &CallCounter) -> DynamoOrderStore {
    let settings = store_settings(clients).await;
    DynamoOrderStore::new(clients.dynamodb.clone(), &settings, calls.clone())
}

#[tokio::test]
async fn s3_store_passes_the_object_store_suite() {
    let clients = moto().await;
    let store = S3Store::new(
        clients.s3.clone(),
        bucket(&clients).await,
        CallCounter::default(),
    );
    object_store_suite(&store).await;
}

#[tokio::test]
async fn dynamo_store_passes_the_order_store_suite() {
    let clients = moto().await;
    let store = order_store(&clients, &CallCounter::default()).await;
    order_store_suite(&store).await;
}

/// An order row's TTL attribute is the retention after its job's deadline (a job may last
/// 30 days): before, it was a day after init, so a long job's rows expired under it.
#[tokio::test]
async fn order_rows_expire_the_retention_after_the_jobs_deadline() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use sluice_aws::schema::{ORDERS_PARTITION, ORDERS_SORT, TTL_ATTRIBUTE};
    let clients = moto().await;
    let settings = store_settings(&clients).await;
    let store = DynamoOrderStore::new(clients.dynamodb.clone(), &settings, CallCounter::default());
    let run = RunId::generate();
    let mut order = sample_order(&run, 0);
    order.job_deadline_ms = 1_800_000_000_000 + 30 * 86_400_000;
    store
        .insert_orders(std::slice::from_ref(&order))
        .await
        .unwrap();
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&settings.orders_table)
        .key(ORDERS_PARTITION, AttributeValue::S(run.to_string()))
        .key(ORDERS_SORT, AttributeValue::S(order.order_num.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let ttl: u64 = item[TTL_ATTRIBUTE].as_n().unwrap().parse().unwrap();
    assert_eq!(
        ttl,
        order.job_deadline_ms / 1000 + settings.order_ttl_days * 86_400
    );
}

#[tokio::test]
async fn lists_follow_pages_and_presigned_puts_write_objects() {
    let clients = moto().await;
    let calls = CallCounter::default();
    let store = S3Store::new(clients.s3.clone(), bucket(&clients).await, calls.clone());
    // S3 returns at most 1000 keys per page.
    let keys: Vec<String> = (0..1005).map(|i| format!("p/{i:05}")).collect();
    for chunk in keys.chunks(64) {
        let puts = chunk.iter().map(|k| store.put(k, b"x".to_vec()));
        for put in futures::future::join_all(puts).await {
            put.unwrap();
        }
    }
    calls.reset();
    assert_eq!(store.list("p/").await.unwrap(), keys);
    assert_eq!(calls.snapshot()[&("s3", "ListObjectsV2")], 2);

    let url = store
        .presign_put("cb/result.json", std::time::Duration::from_secs(300))
        .await
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1"), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let status = put_url(&url, b"{\"status\":\"succeeded\"}").await;
    assert_eq!(status, 200);
    assert_eq!(
        store.get("cb/result.json").await.unwrap(),
        b"{\"status\":\"succeeded\"}"
    );
}

/// An attempt's result key takes one result: the worker's callback PUT is conditional, so
/// the watchdog's time-out written first stands against a late worker (and a worker's own
/// PUT sent again after a lost answer is no error).
#[tokio::test]
async fn a_callback_never_replaces_the_result_already_there() {
    use sluice_worker::store_io::Callback;
    let clients = moto().await;
    let store = S3Store::new(
        clients.s3.clone(),
        bucket(&clients).await,
        CallCounter::default(),
    );
    let key = "tmp/callbacks/runs/r/0001/a1/result.json";
    store
        .put_if_absent(key, b"{\"status\":\"timed_out\"}".to_vec())
        .await
        .unwrap();
    let url = store
        .presign_put(key, std::time::Duration::from_secs(300))
        .await
        .unwrap();
    let callback = sluice_aws::callback::HttpCallback::new().unwrap();
    let delivery = callback
        .put(&url, b"{\"status\":\"succeeded\"}".to_vec())
        .await
        .unwrap();
    assert_eq!(delivery, sluice_worker::Delivery::AlreadyThere);
    assert_eq!(store.get(key).await.unwrap(), b"{\"status\":\"timed_out\"}");
}

#[tokio::test]
async fn runs_larger_than_one_transaction_insert_whole_and_read_back_in_order() {
    let clients = moto().await;
    let calls = CallCounter::default();
    let store = order_store(&clients, &calls).await;
    let run = RunId::generate();
    let orders: Vec<_> = (0..250).map(|i| sample_order(&run, i)).collect();
    store.insert_orders(&orders).await.unwrap();
    assert_eq!(calls.snapshot()[&("dynamodb", "TransactWriteItems")], 3);
    assert_eq!(store.run_orders(&run).await.unwrap(), orders);

    // A batch that collides with an existing row undoes the batches before it.
    let other = RunId::generate();
    let mut colliding: Vec<_> = (0..150).map(|i| sample_order(&other, i)).collect();
    store.insert_orders(&colliding[120..121]).await.unwrap();
    let err = store.insert_orders(&colliding).await.unwrap_err();
    assert!(err.is_condition_failed(), "{err}");
    let left = store.run_orders(&other).await.unwrap();
    colliding.truncate(121);
    assert_eq!(
        left,
        colliding[120..121],
        "only the row that was there before"
    );
}

#[tokio::test]
async fn ssm_keeps_keys_secret_and_deletes_a_runs_keys() {
    use sluice_aws::keys::SsmKeyStore;
    use sluice_engine::ports::KeyStore;
    let clients = moto().await;
    let prefix = format!("/{}", unique("sluice-test"));
    let store = SsmKeyStore::new(clients.ssm.clone(), &prefix, CallCounter::default());
    let run = RunId::generate();
    let other = RunId::generate();
    // More keys than one DeleteParameters call takes.
    let mut paths = Vec::new();
    for i in 0..12 {
        let num = sluice_contract::OrderNum::from_index(i);
        paths.push(
            store
                .put_key(&run, num, &format!("AGE-SECRET-KEY-{i}"))
                .await
                .unwrap(),
        );
    }
    let kept = store
        .put_key(
            &other,
            sluice_contract::OrderNum::from_index(0),
            "AGE-SECRET-KEY-other",
        )
        .await
        .unwrap();
    assert_eq!(paths[3], format!("{prefix}/sops-keys/{run}/0004"));
    assert_eq!(store.get_key(&paths[3]).await.unwrap(), "AGE-SECRET-KEY-3");
    let parameter = clients
        .ssm
        .get_parameter()
        .name(&paths[3])
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap();
    assert_eq!(parameter.r#type().map(|t| t.as_str()), Some("SecureString"));

    store.delete_run_keys(&run).await.unwrap();
    for path in &paths {
        assert!(store.get_key(path).await.unwrap_err().is_not_found());
    }
    assert_eq!(store.get_key(&kept).await.unwrap(), "AGE-SECRET-KEY-other");
    store.delete_run_keys(&run).await.unwrap();
}

fn payload(run: &RunId, attempt: &str) -> sluice_contract::dispatch::DispatchPayload {
    sluice_contract::dispatch::DispatchPayload {
        s3_location: format!("tmp/exec/{run}/0001/exec.zip"),
        internal_bucket: "internal".to_owned(),
        callback_url: "http://127.0.0.1/callback".to_owned(),
        run_id: run.clone(),
        order_num: sluice_contract::OrderNum::from_index(0),
        attempt: attempt.to_owned(),
        key_path: "/sluice/sops-keys/x/0001".to_owned(),
    }
}

#[tokio::test]
async fn codebuild_workers_start_with_the_payload_in_their_environment() {
    use sluice_aws::dispatch::AwsDispatcher;
    use sluice_aws::keys::SsmKeyStore;
    use sluice_engine::ports::{Dispatcher, KeyStore};
    let clients = moto().await;
    let project = unique("sluice-test");
    clients
        .codebuild
        .create_project()
        .name(&project)
        .source(
            aws_sdk_codebuild::types::ProjectSource::builder()
                .r#type(aws_sdk_codebuild::types::SourceType::S3)
                .location("artifacts/worker.zip")
                .build()
                .unwrap(),
        )
        .artifacts(
            aws_sdk_codebuild::types::ProjectArtifacts::builder()
                .r#type(aws_sdk_codebuild::types::ArtifactsType::NoArtifacts)
                .build()
                .unwrap(),
        )
        .environment(
            aws_sdk_codebuild::types::ProjectEnvironment::builder()
                .r#type(aws_sdk_codebuild::types::EnvironmentType::LinuxContainer)
                .image("public.ecr.aws/sluice/worker:latest")
                .compute_type(aws_sdk_codebuild::types::ComputeType::BuildGeneral1Small)
                .build()
                .unwrap(),
        )
        .service_role(ROLE)
        .send()
        .await
        .unwrap();
    let calls = CallCounter::default();
    let tap = BodyTap::default();
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let tapped = aws_sdk_codebuild::Client::from_conf(
        aws_sdk_codebuild::config::Builder::from(&shared)
            .interceptor(tap.clone())
            .build(),
    );
    let prefix = format!("/{}", unique("sluice-test"));
    let keys = SsmKeyStore::new(clients.ssm.clone(), &prefix, calls.clone());
    let dispatcher = AwsDispatcher::new(
        clients.lambda.clone(),
        tapped,
        keys.clone(),
        "unused",
        &project,
        calls.clone(),
    );
    let run = RunId::generate();
    let sent = payload(&run, "a1");
    dispatcher
        .start(
            sluice_contract::ExecutionTarget::Codebuild,
            Duration::from_secs(3600),
            &sent,
        )
        .await
        .unwrap();
    let builds = clients
        .codebuild
        .list_builds_for_project()
        .project_name(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(builds.ids().len(), 1);
    assert_eq!(calls.snapshot()[&("codebuild", "StartBuild")], 1);
    // What went on the wire: the payload as env overrides, the attempt as idempotency token,
    // a build timeout covering the order's hour plus the worker's margin, and the callback
    // URL only as the name of the SecureString holding it.
    let request = tap.take::<serde_json::Value>().remove(0);
    assert_eq!(request["idempotencyToken"], "a1");
    assert_eq!(request["timeoutInMinutesOverride"], 70);
    let callback_url = sent.callback_url.as_str();
    assert!(!request.to_string().contains(callback_url));
    let mut env = Vec::new();
    for variable in request["environmentVariablesOverride"].as_array().unwrap() {
        let name = variable["name"].as_str().unwrap().to_owned();
        let value = variable["value"].as_str().unwrap().to_owned();
        let value = match variable["type"].as_str().unwrap() {
            "PLAINTEXT" => value,
            "PARAMETER_STORE" => keys.get_key(&value).await.unwrap(),
            other => panic!("{name} has type {other}"),
        };
        env.push((name, value));
    }
    let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(
        sluice_aws::dispatch::payload_from_env(lookup).unwrap(),
        sent
    );
    // Finalize deletes the run's callback URLs with its keys.
    let parameter = format!("{prefix}/sops-keys/{run}/callbacks/0001/a1");
    keys.delete_run_keys(&run).await.unwrap();
    assert!(keys.get_key(&parameter).await.unwrap_err().is_not_found());

    let missing = AwsDispatcher::new(
        clients.lambda.clone(),
        clients.codebuild.clone(),
        keys.clone(),
        "unused",
        "no-such-project",
        calls.clone(),
    );
    let err = missing
        .start(
            sluice_contract::ExecutionTarget::Codebuild,
            Duration::from_secs(60),
            &payload(&run, "a2"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("codebuild worker"), "{err}");
    assert!(err.to_string().contains(&run.to_string()), "{err}");
}

#[tokio::test]
async fn a_watchdog_starts_once_per_attempt() {
    use sluice_aws::dispatch::SfnWatchdog;
    use sluice_engine::ports::{WatchdogInput, WatchdogStarter};
    let clients = moto().await;
    let machine = watchdog_machine(&clients).await;
    let watchdog = SfnWatchdog::new(clients.sfn.clone(), &machine, CallCounter::default());
    let run = RunId::generate();
    let input = WatchdogInput {
        run_id: run.clone(),
        order_num: sluice_contract::OrderNum::from_index(1),
        attempt: uuid::Uuid::new_v4().simple().to_string(),
        timeout: 60,
        start_time: 1_700_000_000,
        job_deadline: 1_700_003_600,
        internal_bucket: "internal".to_owned(),
        generation: 0,
    };
    watchdog.start(&input).await.unwrap();
    watchdog.start(&input).await.unwrap();
    let executions = clients
        .sfn
        .list_executions()
        .state_machine_arn(&machine)
        .send()
        .await
        .unwrap();
    assert_eq!(
        executions.executions().len(),
        1,
        "the same attempt is watched once"
    );
    let execution = &executions.executions()[0];
    assert_eq!(execution.name(), format!("{run}-0002-{}", input.attempt));
    let described = clients
        .sfn
        .describe_execution()
        .execution_arn(execution.execution_arn())
        .send()
        .await
        .unwrap();
    let sent: WatchdogInput = serde_json::from_str(described.input().unwrap()).unwrap();
    assert_eq!(sent, input);
}

#[tokio::test]
async fn lambda_workers_are_invoked_asynchronously() {
    use sluice_aws::dispatch::AwsDispatcher;
    use sluice_aws::keys::SsmKeyStore;
    use sluice_engine::ports::Dispatcher;
    let clients = moto().await;
    let function = worker_function(&clients).await;
    let calls = CallCounter::default();
    let dispatcher = AwsDispatcher::new(
        clients.lambda.clone(),
        clients.codebuild.clone(),
        SsmKeyStore::new(clients.ssm.clone(), "/unused", calls.clone()),
        &function,
        "unused",
        calls.clone(),
    );
    let run = RunId::generate();
    dispatcher
        .start(
            sluice_contract::ExecutionTarget::Lambda,
            Duration::from_secs(60),
            &payload(&run, "a1"),
        )
        .await
        .unwrap();
    assert_eq!(calls.snapshot()[&("lambda", "Invoke")], 1);
    // (moto accepts an asynchronous invoke of a missing function, so the error path of
    // Lambda dispatch cannot be shown here; CodeBuild's is, above.)
}

#[tokio::test]
async fn credentials_come_from_ssm_and_secrets_manager() {
    use sluice_aws::secrets::AwsSecretSource;
    use sluice_contract::credentials::SecretLocation;
    use sluice_engine::ports::SecretSource;
    let clients = moto().await;
    let calls = CallCounter::default();
    let source = AwsSecretSource::new(
        clients.ssm.clone(),
        clients.secrets_manager.clone(),
        calls.clone(),
    );
    let parameter = format!("/{}/db", unique("sluice-test"));
    clients
        .ssm
        .put_parameter()
        .name(&parameter)
        .value("eyJEQl9VU0VSIjoiYXBwIn0=")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let text_secret = unique("sluice-test/api-token");
    clients
        .secrets_manager
        .create_secret()
        .name(&text_secret)
        .secret_string("tok-123456")
        .send()
        .await
        .unwrap();
    let binary_secret = unique("sluice-test/blob");
    clients
        .secrets_manager
        .create_secret()
        .name(&binary_secret)
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
            b"{\"A\":\"b\"}".to_vec(),
        ))
        .send()
        .await
        .unwrap();

    let ssm = SecretLocation::Ssm(parameter.clone());
    assert_eq!(
        source.fetch(&ssm).await.unwrap(),
        "eyJEQl9VU0VSIjoiYXBwIn0=",
        "SecureStrings come back decrypted"
    );
    let text = SecretLocation::SecretsManager(text_secret);
    assert_eq!(source.fetch(&text).await.unwrap(), "tok-123456");
    let binary = SecretLocation::SecretsManager(binary_secret);
    assert_eq!(source.fetch(&binary).await.unwrap(), "{\"A\":\"b\"}");

    let missing = SecretLocation::Ssm(format!("{parameter}-gone"));
    let error = source.fetch(&missing).await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("aws:::ssm:{parameter}-gone"))
    );
    let missing = SecretLocation::SecretsManager(unique("sluice-test/gone"));
    assert!(source.fetch(&missing).await.unwrap_err().is_not_found());
    let counted = calls.snapshot();
    assert_eq!(counted[&("ssm", "GetParameter")], 2);
    assert_eq!(counted[&("secretsmanager", "GetSecretValue")], 3);
}
