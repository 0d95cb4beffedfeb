//! Helpers shared by the moto-backed tests: clients pointed at moto, fresh buckets and
//! tables, raw HTTP for moto's own API.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod billing;
pub mod binaries;
pub mod cloud;
#[path = "../../../../../benches/support/figures.rs"]
pub mod figures;
pub mod http_api;
pub mod throttle;

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_lambda::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_lambda::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_lambda::error::BoxError;
use sluice_aws::AwsSettings;
use sluice_aws::clients::Clients;
use sluice_aws::schema::{EVENTS_KEY, LOCKS_KEY, ORDERS_KEY, TableKey};

/// A role ARN for resources that need one (created in moto by [`moto_lambda_without_docker`]).
pub const ROLE: &str = "arn:aws:iam::123456789012:role/sluice-test";

/// The clients, pointed at moto (the test fails with instructions when it is not running).
pub async fn moto() -> Clients {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run these tests through scripts/test, which starts moto server"
    );
    Clients::load().await
}

/// Copies the JSON body of every request a client sends, as it goes on the wire (moto
/// accepts some calls without acting on them: a Lambda `Event` invoke runs nothing, and
/// moto's CodeBuild keeps no build overrides, so tests read what was sent).
#[derive(Debug, Clone, Default)]
pub struct BodyTap(pub Arc<Mutex<Vec<serde_json::Value>>>);

impl BodyTap {
    /// Takes the bodies captured so far, parsed as `T` (others are dropped).
    pub fn take<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.0
            .lock()
            .unwrap()
            .drain(..)
            .filter_map(|body| serde_json::from_value(body).ok())
            .collect()
    }

    /// Whether nothing is waiting to be taken.
    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap().is_empty()
    }
}

impl Intercept for BodyTap {
    fn name(&self) -> &'static str {
        "body-tap"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(bytes) = context.request().body().bytes()
            && let Ok(body) = serde_json::from_slice(bytes)
        {
            self.0.lock().unwrap().push(body);
        }
        Ok(())
    }
}

/// A WASI command printing `hello from wasm`, in the text format.
pub const HELLO_WASM: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 16) "hello from wasm\n")
    (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 16))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn bucket(clients: &Clients) -> String {
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

pub async fn table(clients: &Clients, key: TableKey) -> String {
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

/// moto cannot run Lambda code (no Docker): it is told to accept invokes without running.
async fn moto_lambda_without_docker() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let status = http_request(
        &format!("{endpoint}/moto-api/config"),
        "POST",
        "",
        br#"{"lambda": {"use_docker": false}}"#,
    )
    .await;
    assert_eq!(status, 201, "configuring moto's Lambda");
    // Lambda checks its role exists: create it with IAM's query API (no IAM SDK needed).
    let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
    let body = format!(
        "Action=CreateRole&Version=2010-05-08&RoleName=sluice-test&AssumeRolePolicyDocument={policy}"
    );
    let status = http_request(
        &format!("{endpoint}/"),
        "POST",
        "Content-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n",
        body.as_bytes(),
    )
    .await;
    assert!(
        status == 200 || status == 409,
        "creating the role: {status}"
    );
}

/// An HTTP/1.1 request as the test servers on 127.0.0.1 read it.
pub struct Request {
    /// `POST /init HTTP/1.1`.
    pub line: String,
    /// The headers, names lower-cased.
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Reads the next request off `reader`; `None` when the client has closed the connection.
pub async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Option<Request> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await.unwrap();
        if header.trim().is_empty() {
            break;
        }
        let (name, value) = header.trim_end().split_once(':').unwrap();
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    let length = headers
        .get("content-length")
        .map_or(0, |length| length.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    Some(Request {
        line,
        headers,
        body,
    })
}

/// PUTs `body` to a presigned URL.
pub async fn put_url(url: &str, body: &[u8]) -> u16 {
    http_request(url, "PUT", "", body).await
}

/// A plain HTTP/1.1 request (moto speaks plain HTTP) with extra header lines; returns the
/// status code.
pub async fn http_request(url: &str, method: &str, headers: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
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

/// A zip holding one empty `bootstrap` (the smallest code moto accepts).
fn empty_zip() -> Vec<u8> {
    // Local file header, central directory and end record of a zip with one empty file.
    let name = b"bootstrap";
    let mut zip = Vec::new();
    let local = [
        &[0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        &[0; 12][..],
        &(name.len() as u16).to_le_bytes(),
        &[0, 0],
        name,
    ]
    .concat();
    let central = [
        &[0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        &[0; 12][..],
        &(name.len() as u16).to_le_bytes(),
        &[0; 12][..],
        &0u32.to_le_bytes(),
        name,
    ]
    .concat();
    zip.extend_from_slice(&local);
    let central_at = zip.len() as u32;
    zip.extend_from_slice(&central);
    zip.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 1, 0, 1, 0]);
    zip.extend_from_slice(&(central.len() as u32).to_le_bytes());
    zip.extend_from_slice(&central_at.to_le_bytes());
    zip.extend_from_slice(&[0, 0]);
    zip
}

/// Settings naming fresh buckets, tables and a watchdog state machine (every run needs its
/// watch; the worker targets are left empty).
pub async fn store_settings(clients: &Clients) -> AwsSettings {
    AwsSettings {
        internal_bucket: bucket(clients).await,
        done_bucket: bucket(clients).await,
        orders_table: table(clients, ORDERS_KEY).await,
        events_table: table(clients, EVENTS_KEY).await,
        locks_table: table(clients, LOCKS_KEY).await,
        worker_function: String::new(),
        compile_function: None,
        codebuild_project: String::new(),
        watchdog_state_machine: watchdog_machine(clients).await,
        ssm_prefix: format!("/{}", unique("sluice-test")),
        event_ttl_days: 90,
        order_ttl_days: 1,
        github_api: None,
        git: Default::default(),
        credential_grants: Default::default(),
    }
}

/// The `SLUICE_*` variables naming `settings`, as the template gives them to the functions
/// and a user exports them for `sluice status | wait | logs`.
pub fn settings_env(settings: &AwsSettings) -> Vec<(&'static str, String)> {
    vec![
        ("SLUICE_INTERNAL_BUCKET", settings.internal_bucket.clone()),
        ("SLUICE_DONE_BUCKET", settings.done_bucket.clone()),
        ("SLUICE_ORDERS_TABLE", settings.orders_table.clone()),
        ("SLUICE_EVENTS_TABLE", settings.events_table.clone()),
        ("SLUICE_LOCKS_TABLE", settings.locks_table.clone()),
        ("SLUICE_WORKER_FUNCTION", settings.worker_function.clone()),
        (
            "SLUICE_CODEBUILD_PROJECT",
            settings.codebuild_project.clone(),
        ),
        (
            "SLUICE_WATCHDOG_STATE_MACHINE",
            settings.watchdog_state_machine.clone(),
        ),
        ("SLUICE_SSM_PREFIX", settings.ssm_prefix.clone()),
    ]
    .into_iter()
    .chain(
        (settings.compile_function.clone()).map(|function| ("SLUICE_COMPILE_FUNCTION", function)),
    )
    .collect()
}

/// The CodeBuild project `name` of the workers in moto (builds are accepted, never run);
/// one already there is kept.
pub async fn worker_project(codebuild: &aws_sdk_codebuild::Client, name: &str) {
    use aws_sdk_codebuild::types::{
        ArtifactsType, ComputeType, EnvironmentType, ProjectArtifacts, ProjectEnvironment,
        ProjectSource, SourceType,
    };
    let made = codebuild
        .create_project()
        .name(name)
        .source(
            ProjectSource::builder()
                .r#type(SourceType::S3)
                .location("artifacts/worker.zip")
                .build()
                .unwrap(),
        )
        .artifacts(
            ProjectArtifacts::builder()
                .r#type(ArtifactsType::NoArtifacts)
                .build()
                .unwrap(),
        )
        .environment(
            ProjectEnvironment::builder()
                .r#type(EnvironmentType::LinuxContainer)
                .image("public.ecr.aws/sluice/worker:latest")
                .compute_type(ComputeType::BuildGeneral1Small)
                .build()
                .unwrap(),
        )
        .service_role(ROLE)
        .send()
        .await;
    if let Err(error) = made {
        let exists =
            (error.as_service_error()).is_some_and(|e| e.is_resource_already_exists_exception());
        assert!(exists, "{error:?}");
    }
}

/// A worker function in moto (Lambda configured to accept invokes without running them).
pub async fn worker_function(clients: &Clients) -> String {
    lambda_function(clients, "sluice-worker").await
}

/// A compile function in moto, as [`worker_function`].
pub async fn compile_function(clients: &Clients) -> String {
    lambda_function(clients, "sluice-compile").await
}

/// A function named `prefix-<unique>` in moto that accepts invokes without running them.
async fn lambda_function(clients: &Clients, prefix: &str) -> String {
    moto_lambda_without_docker().await;
    let name = unique(prefix);
    clients
        .lambda
        .create_function()
        .function_name(&name)
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .role(ROLE)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(empty_zip()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    name
}

/// A watchdog state machine in moto (moto cannot run its Lambda tasks, so one step does).
pub async fn watchdog_machine(clients: &Clients) -> String {
    clients
        .sfn
        .create_state_machine()
        .name(unique("sluice-watchdog"))
        .definition(r#"{"StartAt":"Check","States":{"Check":{"Type":"Succeed"}}}"#)
        .role_arn(ROLE)
        .send()
        .await
        .unwrap()
        .state_machine_arn
}

/// A callback endpoint on 127.0.0.1 that answers 500 to the first `failures` PUTs it gets
/// (every PUT when `None`) and forwards the others to the real callback URL carried in the
/// path, answering with its status: a flaky proxy in front of S3. (A server of its own:
/// wiremock's responders are synchronous and cannot forward.)
#[derive(Debug, Clone)]
pub struct FlakyEndpoint {
    pub base: String,
    pub puts: Arc<std::sync::atomic::AtomicUsize>,
}

impl FlakyEndpoint {
    pub async fn start(failures: Option<usize>) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let puts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&puts);
        tokio::spawn(async move {
            let forward = sluice_worker_aws::HttpTransfer::new().unwrap();
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = counter.fetch_add(1, Ordering::SeqCst);
                let forward = forward.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 8192];
                    let (head_end, length) = loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (end + 4, length);
                        }
                    };
                    while request.len() < head_end + length {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let status = if failures.is_none_or(|f| seen < f) {
                        "500 Internal Server Error"
                    } else {
                        let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
                        let path = head.split(' ').nth(1).unwrap_or("/");
                        let target = percent_decode(path.trim_start_matches("/to/"));
                        let body = request[head_end..head_end + length].to_vec();
                        use sluice_worker::WorkerIo;
                        let target = sluice_contract::dispatch::Capability::new(target);
                        match forward.put_if_absent(&target, body).await {
                            Ok(sluice_worker::Delivery::Stored) => "200 OK",
                            Ok(sluice_worker::Delivery::AlreadyThere) => "412 Precondition Failed",
                            Err(_) => "502 Bad Gateway",
                        }
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        FlakyEndpoint { base, puts }
    }

    /// The URL to give a worker instead of `real`.
    pub fn url_for(&self, real: &str) -> String {
        let encoded: String = real
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("{}/to/{encoded}", self.base)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
