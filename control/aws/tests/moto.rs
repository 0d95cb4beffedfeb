//! The AWS adapters against moto server: the engine's conformance suites (the same ones the
//! local backends pass), plus what only AWS has (presigned URLs, paginated lists, batches
//! beyond one transaction).
//!
//! `scripts/test` starts moto on 127.0.0.1 and exports `AWS_ENDPOINT_URL`; every test makes
//! its own buckets and tables, so tests run in parallel.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use sluice_aws::schema::{EVENTS_KEY, LOCKS_KEY, ORDERS_KEY, TableKey};
use sluice_aws::{AwsSettings, CallCounter, DynamoOrderStore, S3Store, clients::Clients};
use sluice_contract::RunId;
use sluice_engine::conformance::{object_store_suite, order_store_suite, sample_order};
use sluice_engine::ports::{ObjectStore, OrderStore};

/// The clients, pointed at moto (the test fails with instructions when it is not running).
async fn moto() -> Clients {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run these tests through scripts/test, which starts moto server"
    );
    Clients::load().await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn bucket(clients: &Clients) -> String {
    let name = unique("sluice-test");
    clients
        .s3
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    name
}

async fn table(clients: &Clients, key: TableKey) -> String {
    let name = unique("sluice-test");
    let mut create = clients
        .dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest);
    for (attribute, key_type) in [
        (Some(key.partition), KeyType::Hash),
        (key.sort, KeyType::Range),
    ] {
        let Some(attribute) = attribute else { continue };
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attribute)
                    .key_type(key_type)
                    .build()
                    .unwrap(),
            );
    }
    create.send().await.unwrap();
    name
}

async fn order_store(clients: &Clients, calls: &CallCounter) -> DynamoOrderStore {
    let settings = AwsSettings {
        internal_bucket: String::new(),
        done_bucket: String::new(),
        orders_table: table(clients, ORDERS_KEY).await,
        events_table: table(clients, EVENTS_KEY).await,
        locks_table: table(clients, LOCKS_KEY).await,
        event_ttl_days: 90,
        order_ttl_days: 1,
    };
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

/// PUTs `body` to a presigned URL with a plain HTTP/1.1 request (moto speaks plain HTTP).
async fn put_url(url: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}
