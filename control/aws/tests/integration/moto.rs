//! The AWS adapters against moto server: the engine's conformance suites (the same ones the
//! local backends pass), plus what only AWS has (presigned URLs, paginated lists, batches
//! beyond one transaction).
//!
//! `scripts/test` starts moto on 127.0.0.1 and exports `AWS_ENDPOINT_URL`; every test makes
//! its own buckets and tables, so tests run in parallel.

use sluice_contract::AttemptId;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    BodyTap, bucket, moto, put_url, store_settings, unique, watchdog_machine, worker_function,
};
use sluice_aws::{CallCounter, DynamoOrderStore, S3Store, clients::Clients};
use sluice_contract::RunId;
use sluice_ports::conformance::{object_store_suite, order_store_suite, sample_order};
use sluice_ports::{ObjectStore, OrderStore, Presigned};

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
        .insert_orders(std::slice::from_ref(&order), &[])
        .await
        .unwrap();
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&settings.orders_table)
        .key(ORDERS_PARTITION, AttributeValue::S(run.to_string()))
        .key(
            ORDERS_SORT,
            AttributeValue::S(order.plan.order_num.to_string()),
        )
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
        .presign(
            Presigned::Put,
            "cb/result.json",
            std::time::Duration::from_secs(300),
        )
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

/// What a worker, holding no credentials, does through presigned URLs: a bounded read
/// (an object over the bound is refused, not loaded), a read of its range of a pack (signed,
/// and exactly that range or an error), a conditional put that never replaces
/// what is there (the watchdog's time-out written first stands against a late worker, and a
/// worker's own PUT sent again after a lost answer is no error), a streamed file upload, and
/// a delete.
#[tokio::test]
async fn a_worker_reaches_its_objects_through_presigned_urls_only() {
    use sluice_contract::dispatch::Capability;
    use sluice_worker::{Delivery, WorkerIo};
    let clients = moto().await;
    let store = S3Store::new(
        clients.s3.clone(),
        bucket(&clients).await,
        CallCounter::default(),
    );
    let transfer = sluice_worker_aws::HttpTransfer::new().unwrap();
    let presign = async |operation, key: &str| {
        let url = store
            .presign(operation, key, Duration::from_secs(300))
            .await;
        Capability::new(url.unwrap())
    };

    let bundle = "tmp/exec/r/0001/exec.zip";
    store.put(bundle, vec![7; 5000]).await.unwrap();
    let get = presign(Presigned::Get, bundle).await;
    assert_eq!(transfer.get(&get, 5000).await.unwrap(), vec![7; 5000]);
    let too_large = transfer.get(&get, 4999).await.unwrap_err();
    assert!(!too_large.transient, "{too_large}");
    assert!(
        too_large.message.contains("larger than 4999 bytes"),
        "{too_large}"
    );
    assert!(
        !too_large.to_string().contains("X-Amz-Signature"),
        "{too_large}"
    );
    // A bundle in a pack: the range, and the pack's entity tag it is pinned to, are signed
    // into the URL, so its holder cannot widen it to the pack's other bundles (S3 answers
    // a range whose `If-Range` names another version with the whole object).
    let pack = "tmp/exec/r/packs/0.bin";
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let etag = store.put_tagged(pack, bytes.clone()).await.unwrap();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let pinned = |start, len| sluice_contract::dispatch::PinnedRange {
        start,
        len,
        etag: etag.clone(),
    };
    let range = pinned(1000, 700);
    let ranged = presign(Presigned::GetRange(range.clone()), pack).await;
    let signed = ranged
        .expose()
        .split("X-Amz-SignedHeaders=")
        .nth(1)
        .unwrap();
    let signed = signed.split('&').next().unwrap().replace("%3B", ";");
    for header in ["range", "if-range", "if-match"] {
        assert!(signed.split(';').any(|h| h == header), "{header}: {signed}");
    }
    assert_eq!(
        transfer.get_range(&ranged, &range).await.unwrap(),
        bytes[1000..1700]
    );
    let past_the_end = pinned(2900, 700);
    let short = presign(Presigned::GetRange(past_the_end.clone()), pack).await;
    let error = transfer.get_range(&short, &past_the_end).await.unwrap_err();
    assert!(!error.transient, "{error}");
    assert!(
        error.message.contains("not the 700 bytes asked for"),
        "{error}"
    );
    let untagged = sluice_contract::dispatch::PinnedRange {
        etag: "no tag".to_owned(),
        ..range
    };
    let refused = store
        .presign(
            Presigned::GetRange(untagged),
            pack,
            Duration::from_secs(300),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("is no entity tag"),
        "{refused}"
    );

    let missing = presign(Presigned::Get, "tmp/exec/r/0002/exec.zip").await;
    let error = transfer.get(&missing, 10).await.unwrap_err();
    assert!(!error.transient && error.message.contains("404"), "{error}");

    let key = "tmp/callbacks/runs/r/0001/a1/result.json";
    store
        .put_if_absent(key, b"{\"status\":\"timed_out\"}".to_vec())
        .await
        .unwrap();
    let put = presign(Presigned::PutIfAbsent, key).await;
    // The condition is signed into the URL: its holder cannot send the PUT without it.
    let signed = put.expose().split("X-Amz-SignedHeaders=").nth(1).unwrap();
    assert!(
        signed.split('&').next().unwrap().contains("if-none-match"),
        "{signed}"
    );
    let late = transfer.put_if_absent(&put, b"{\"status\":\"succeeded\"}".to_vec());
    assert_eq!(late.await.unwrap(), Delivery::AlreadyThere);
    assert_eq!(store.get(key).await.unwrap(), b"{\"status\":\"timed_out\"}");
    let fresh = presign(Presigned::PutIfAbsent, "tmp/claims/r/0001/a1").await;
    let claim = transfer.put_if_absent(&fresh, b"{}".to_vec());
    assert_eq!(claim.await.unwrap(), Delivery::Stored);

    let log = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(log.path(), vec![b'x'; 3 << 20]).unwrap();
    let log_url = presign(Presigned::Put, "tmp/logs/r/0001/log.txt").await;
    transfer.put_file(&log_url, log.path()).await.unwrap();
    assert_eq!(
        store.head("tmp/logs/r/0001/log.txt").await.unwrap(),
        Some(3 << 20)
    );

    transfer
        .delete(&presign(Presigned::Delete, bundle).await)
        .await
        .unwrap();
    assert!(store.get(bundle).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn runs_larger_than_one_transaction_insert_whole_and_read_back_in_order() {
    let clients = moto().await;
    let calls = CallCounter::default();
    let store = order_store(&clients, &calls).await;
    let run = RunId::generate();
    let orders: Vec<_> = (0..250).map(|i| sample_order(&run, i)).collect();
    let started = |orders: &[sluice_engine::OrderRecord]| sluice_engine::OrderEvent {
        trace_id: orders[0].trace_id.clone(),
        order_name: sluice_engine::OrderEvent::JOB.to_owned(),
        epoch_ms: 1,
        event: "started".to_owned(),
        run_id: orders[0].run_id.clone(),
        detail: serde_json::json!({}),
    };
    let event = started(&orders);
    store
        .insert_orders(&orders, std::slice::from_ref(&event))
        .await
        .unwrap();
    let counted = calls.snapshot();
    assert_eq!(counted[&("dynamodb", "TransactWriteItems")], 3);
    assert_eq!(
        counted.get(&("dynamodb", "BatchWriteItem")),
        None,
        "the event went with the last 50 rows"
    );
    assert_eq!(store.run_orders(&run).await.unwrap(), orders);
    let recorded = store.trace_events(&event.trace_id).await.unwrap();
    assert_eq!(recorded, [event]);

    // When the last batch is full, the event is written after it.
    calls.reset();
    let full_run = RunId::generate();
    let full: Vec<_> = (0..200).map(|i| sample_order(&full_run, i)).collect();
    let event = started(&full);
    store
        .insert_orders(&full, std::slice::from_ref(&event))
        .await
        .unwrap();
    let counted = calls.snapshot();
    assert_eq!(counted[&("dynamodb", "TransactWriteItems")], 2);
    assert_eq!(counted[&("dynamodb", "BatchWriteItem")], 1);

    // A batch that collides with an existing row undoes the batches before it.
    let other = RunId::generate();
    let mut colliding: Vec<_> = (0..150).map(|i| sample_order(&other, i)).collect();
    store
        .insert_orders(&colliding[120..121], &[])
        .await
        .unwrap();
    let err = store.insert_orders(&colliding, &[]).await.unwrap_err();
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
    use sluice_ports::KeyStore;
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

/// The kept jobs' key: the first stored wins (of two stored at once, both callers get the
/// same), as a SecureString outside `sops-keys/`, and no run's deletion takes it.
#[tokio::test]
async fn ssm_keeps_one_jobs_key_the_first_stored() {
    use sluice_aws::keys::SsmKeyStore;
    use sluice_ports::KeyStore;
    let clients = moto().await;
    let prefix = format!("/{}", unique("sluice-test"));
    let store = SsmKeyStore::new(clients.ssm.clone(), &prefix, CallCounter::default());
    let (a, b) = tokio::join!(store.jobs_key("key-a"), store.jobs_key("key-b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert!(a == "key-a" || a == "key-b", "{a}");
    assert_eq!(store.jobs_key("key-c").await.unwrap(), a);
    let parameter = clients
        .ssm
        .get_parameter()
        .name(format!("{prefix}/jobs-key"))
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap();
    assert_eq!(parameter.r#type().map(|t| t.as_str()), Some("SecureString"));
    store.delete_run_keys(&RunId::generate()).await.unwrap();
    assert_eq!(store.jobs_key("key-d").await.unwrap(), a);
}

/// A run's keys whose names the caller knows (the ones its rows name) are deleted without
/// listing them, a batch per call; a name that is not the run's is refused before anything
/// is deleted, and keys already gone are no error.
#[tokio::test]
async fn ssm_deletes_a_runs_keys_by_name_without_listing() {
    use sluice_aws::keys::SsmKeyStore;
    use sluice_ports::KeyStore;
    let clients = moto().await;
    let prefix = format!("/{}", unique("sluice-test"));
    let calls = CallCounter::default();
    let store = SsmKeyStore::new(clients.ssm.clone(), &prefix, calls.clone());
    let (run, other) = (RunId::generate(), RunId::generate());
    let mut paths = Vec::new();
    for i in 0..12 {
        let num = sluice_contract::OrderNum::from_index(i);
        paths.push(store.put_key(&run, num, "AGE-SECRET-KEY-1").await.unwrap());
    }
    let first = sluice_contract::OrderNum::from_index(0);
    let kept = store
        .put_key(&other, first, "AGE-SECRET-KEY-2")
        .await
        .unwrap();

    let mut foreign = paths.clone();
    foreign.push(kept.clone());
    let refused = store.delete_keys(&run, &foreign).await.unwrap_err();
    assert!(refused.to_string().contains(&kept), "{refused}");
    assert_eq!(store.get_key(&paths[0]).await.unwrap(), "AGE-SECRET-KEY-1");

    calls.reset();
    store.delete_keys(&run, &paths).await.unwrap();
    for path in &paths {
        assert!(store.get_key(path).await.unwrap_err().is_not_found());
    }
    assert_eq!(store.get_key(&kept).await.unwrap(), "AGE-SECRET-KEY-2");
    let counted = calls.snapshot();
    assert_eq!(
        counted.get(&("ssm", "GetParametersByPath")),
        None,
        "no listing"
    );
    assert_eq!(counted[&("ssm", "DeleteParameters")], 2, "ten names a call");
    store.delete_keys(&run, &paths).await.unwrap();
}

fn payload(run: &RunId, attempt: &str) -> sluice_contract::dispatch::DispatchPayload {
    use sluice_contract::dispatch::{Capability, OrderIdentity};
    let url =
        |key: &str| Capability::new(format!("http://127.0.0.1/{key}?X-Amz-Signature=PAYLOADSIG"));
    sluice_contract::dispatch::DispatchPayload {
        run_id: run.clone(),
        order_num: sluice_contract::OrderNum::from_index(0),
        attempt: sluice_contract::AttemptId::parse(attempt).unwrap(),
        attempt_number: 1,
        bundle_url: url("exec.zip"),
        bundle_range: None,
        claim_url: url("claim"),
        claim_check_url: url("claim"),
        log_url: url("log.txt"),
        log_key: None,
        log_in_result: false,
        callback_url: url("result.json"),
        outputs_url: None,
        cancel_url: None,
        inputs: Vec::new(),
        identity: OrderIdentity::new("AGE-SECRET-KEY-1ORDERIDENTITY"),
        compiled: None,
    }
}

#[tokio::test]
async fn codebuild_workers_get_their_payload_as_a_ticket_only_they_can_redeem() {
    use sluice_aws::dispatch::AwsDispatcher;
    use sluice_aws::keys::SsmKeyStore;
    use sluice_aws::ticket::Tickets;
    use sluice_ports::{Dispatcher, KeyStore};
    use sluice_worker_aws::ticket;
    let clients = moto().await;
    let project = unique("sluice-test");
    crate::support::worker_project(&clients.codebuild, &project).await;
    let calls = CallCounter::default();
    let tap = BodyTap::default();
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let tapped = aws_sdk_codebuild::Client::from_conf(
        aws_sdk_codebuild::config::Builder::from(&shared)
            .interceptor(tap.clone())
            .build(),
    );
    let internal = Arc::new(S3Store::new(
        clients.s3.clone(),
        bucket(&clients).await,
        calls.clone(),
    ));
    let prefix = format!("/{}", unique("sluice-test"));
    let keys = SsmKeyStore::new(clients.ssm.clone(), &prefix, calls.clone());
    let tickets = Tickets::new(internal.clone(), keys.clone());
    let dispatcher = AwsDispatcher::new(
        clients.lambda.clone(),
        tapped,
        tickets.clone(),
        "unused",
        &project,
        calls.clone(),
    );
    let run = RunId::generate();
    let sent = payload(&run, "a1");
    let start = || {
        let target = sluice_contract::ExecutionTarget::Codebuild;
        dispatcher.start(target, Duration::from_secs(3600), &sent)
    };
    // The build's environment as the build sees it: plain values as they are, the ticket's
    // key resolved from its parameter (as CodeBuild does at the build's start).
    let resolved = async |request: &serde_json::Value| -> Vec<(String, String)> {
        let mut env = Vec::new();
        for variable in request["environmentVariablesOverride"].as_array().unwrap() {
            let name = variable["name"].as_str().unwrap().to_owned();
            let value = variable["value"].as_str().unwrap().to_owned();
            let value = match variable["type"].as_str().unwrap() {
                "PLAINTEXT" => value,
                "PARAMETER_STORE" => {
                    assert_eq!(name, "SLUICE_TICKET_KEY");
                    keys.get_key(&value).await.unwrap()
                }
                other => panic!("{name} has type {other}"),
            };
            env.push((name, value));
        }
        env
    };
    let lookup_in = |env: &[(String, String)], name: &str| {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    start().await.unwrap();
    // Started again (an answer lost): a second ticket, which spoils nothing of the first.
    start().await.unwrap();
    let builds = clients
        .codebuild
        .list_builds_for_project()
        .project_name(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(
        builds.ids().len(),
        2,
        "the second build finds its attempt claimed"
    );
    assert_eq!(calls.snapshot()[&("codebuild", "StartBuild")], 2);
    let requests = tap.take::<serde_json::Value>();
    // What went on the wire: a build timeout covering the order's hour plus the worker's
    // margin, no idempotency token (each start's ticket differs), and nothing of the
    // payload — its URLs' signatures, the order's identity — nor the ticket's key.
    let request = &requests[0];
    assert!(request.get("idempotencyToken").is_none(), "{request}");
    assert_eq!(request["timeoutInMinutesOverride"], 70);
    let wire = request.to_string();
    for secret in ["PAYLOADSIG", "ORDERIDENTITY", "AGE-SECRET-KEY"] {
        assert!(!wire.contains(secret), "{secret} in {wire}");
    }
    let first = resolved(&requests[0]).await;
    let second = resolved(&requests[1]).await;
    let lookup = |name: &str| lookup_in(&first, name);
    assert_eq!(lookup("SLUICE_ATTEMPT").as_deref(), Some("a1"));
    assert_ne!(
        lookup("SLUICE_TICKET_URL"),
        lookup_in(&second, "SLUICE_TICKET_URL")
    );
    // The record alone opens nothing: it names the key's parameter, not the key.
    let recorded: Vec<(String, String)> = (request["environmentVariablesOverride"].as_array())
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let transfer = sluice_worker_aws::HttpTransfer::new().unwrap();
    let from_record = ticket::redeem(|name| lookup_in(&recorded, name), &transfer).await;
    assert!(
        from_record
            .unwrap_err()
            .to_string()
            .contains("key is not an age identity"),
    );
    // The worker redeems it once: the payload comes back whole and the ticket is gone.
    let redeemed = ticket::redeem(lookup, &transfer).await.unwrap();
    assert_eq!(redeemed, sent);
    assert_eq!(redeemed.identity.expose(), "AGE-SECRET-KEY-1ORDERIDENTITY");
    let again = ticket::redeem(lookup, &transfer).await.unwrap_err();
    assert!(again.to_string().contains("fetching the ticket"), "{again}");
    // A ticket put in another build's environment is refused.
    let mut swapped = second.clone();
    swapped.retain(|(name, _)| name != "SLUICE_ATTEMPT");
    swapped.push(("SLUICE_ATTEMPT".to_owned(), "a9".to_owned()));
    let mismatch = ticket::redeem(|name| lookup_in(&swapped, name), &transfer)
        .await
        .unwrap_err();
    assert!(
        mismatch.to_string().contains("not the build's"),
        "{mismatch}"
    );
    // Finalize deletes the tickets' keys with the run's keys.
    let parameter = &(requests[1]["environmentVariablesOverride"]
        .as_array()
        .unwrap()
        .iter())
    .find(|v| v["name"] == "SLUICE_TICKET_KEY")
    .unwrap()["value"];
    keys.delete_run_keys(&run).await.unwrap();
    let gone = keys.get_key(parameter.as_str().unwrap()).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");

    // Each build started is recorded; a cancel stops them all (and another run's none).
    // moto refuses StopBuild of a build it does not know (and its BatchGetBuilds says
    // SUCCEEDED of any build): the count and the requests sent are what is checked.
    assert_eq!(dispatcher.stop_builds(&RunId::generate()).await.unwrap(), 0);
    assert_eq!(dispatcher.stop_builds(&run).await.unwrap(), 2);
    let mut stopped: Vec<String> = (tap.take::<serde_json::Value>().iter())
        .map(|request| request["id"].as_str().unwrap().to_owned())
        .collect();
    stopped.sort();
    let mut started = builds.ids().to_vec();
    started.sort();
    assert_eq!(stopped, started);

    let missing = AwsDispatcher::new(
        clients.lambda.clone(),
        clients.codebuild.clone(),
        tickets,
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
async fn a_runs_watch_starts_once() {
    use sluice_aws::dispatch::SfnWatchdog;
    use sluice_ports::{WatchdogInput, WatchdogStarter};
    let clients = moto().await;
    let machine = watchdog_machine(&clients).await;
    let watchdog = SfnWatchdog::new(clients.sfn.clone(), &machine, CallCounter::default());
    let run = RunId::generate();
    let input = WatchdogInput {
        run_id: run.clone(),
        order_num: sluice_contract::OrderNum::INIT,
        attempt: AttemptId::run_watch(),
        timeout: 0,
        start_time: 1_700_000_000,
        job_deadline: 1_700_003_600,
        internal_bucket: "internal".to_owned(),
        generation: 0,
        wait_seconds: Some(60),
        wake_at_ms: None,
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
        "the same run is watched once"
    );
    let execution = &executions.executions()[0];
    assert_eq!(execution.name(), format!("{run}-0000-run"));
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
    use sluice_ports::Dispatcher;
    let clients = moto().await;
    let function = worker_function(&clients).await;
    let calls = CallCounter::default();
    let unused = sluice_aws::ticket::Tickets::new(
        Arc::new(S3Store::new(clients.s3.clone(), "unused", calls.clone())),
        sluice_aws::keys::SsmKeyStore::new(clients.ssm.clone(), "/unused", calls.clone()),
    );
    let dispatcher = AwsDispatcher::new(
        clients.lambda.clone(),
        clients.codebuild.clone(),
        unused,
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
    use sluice_ports::SecretSource;
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
