//! The worker pipeline end to end over an in-memory [`WorkerIo`]: bundle in, result out.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use age::secrecy::ExposeSecret;
use async_trait::async_trait;
use sluice_contract::dispatch::{Claim, DispatchPayload};
use sluice_contract::manifest::{OrderManifest, Task};
use sluice_contract::result::{ResultDoc, parse_result};
use sluice_contract::{OrderNum, OrderStatus, RunId, TraceId};
use sluice_worker::{Delivery, IoError, WorkerConfig, WorkerIo, WorkerReport, run_order};
use zip::write::SimpleFileOptions;

#[derive(Default)]
struct MemoryIo {
    bundle: Vec<u8>,
    key: String,
    claims: Mutex<HashSet<String>>,
    logs: Mutex<BTreeMap<String, Vec<u8>>>,
    results: Mutex<Vec<(String, Vec<u8>)>>,
    /// How many key fetches fail transiently (a throttled key store) before one works.
    throttled_key_fetches: AtomicUsize,
    /// How many callbacks are refused before one is taken.
    refuse_callbacks: usize,
    callbacks_refused: AtomicUsize,
}

#[async_trait]
impl WorkerIo for MemoryIo {
    async fn fetch_bundle(&self, _bucket: &str, _key: &str) -> Result<Vec<u8>, IoError> {
        Ok(self.bundle.clone())
    }
    async fn fetch_key(&self, key_path: &str) -> Result<String, IoError> {
        let throttled = self
            .throttled_key_fetches
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttled {
            return Err(IoError::transient(
                key_path,
                "ThrottlingException: Rate exceeded",
            ));
        }
        Ok(self.key.clone())
    }
    async fn claim(&self, _run: &RunId, _num: OrderNum, claim: &Claim) -> Result<bool, IoError> {
        Ok(self.claims.lock().unwrap().insert(claim.attempt.clone()))
    }
    async fn store_log(&self, log_key: &str, path: &Path) -> Result<(), IoError> {
        self.logs
            .lock()
            .unwrap()
            .insert(log_key.to_owned(), std::fs::read(path).unwrap());
        Ok(())
    }
    async fn call_back(&self, url: &str, body: Vec<u8>) -> Result<Delivery, IoError> {
        if self.callbacks_refused.fetch_add(1, Ordering::SeqCst) < self.refuse_callbacks {
            return Err(IoError::permanent(url, "403 Forbidden"));
        }
        let mut results = self.results.lock().unwrap();
        if results.iter().any(|(stored, _)| stored == url) {
            return Ok(Delivery::AlreadyThere);
        }
        results.push((url.to_owned(), body));
        Ok(Delivery::Stored)
    }
}

fn manifest(run_id: &RunId, cmds: &[&str]) -> OrderManifest {
    OrderManifest {
        schema_version: "v1".into(),
        run_id: run_id.clone(),
        trace_id: TraceId::generate(),
        flow_id: "t:flow".into(),
        order_num: OrderNum::from_index(0),
        order_name: "unit".into(),
        timeout: 10,
        task: Task::Cmds(cmds.iter().map(|c| c.to_string()).collect()),
        log_key: "tmp/logs/x/0001/log.txt".into(),
    }
}

/// A bundle as init_job makes it: manifest, env encrypted to a fresh key, an empty code/.
fn bundle(manifest: &OrderManifest, env: &str) -> (Vec<u8>, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap();
    let mut encrypted = Vec::new();
    let mut writer = encryptor.wrap_output(&mut encrypted).unwrap();
    writer.write_all(env.as_bytes()).unwrap();
    writer.finish().unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    zip.start_file("order.json", options).unwrap();
    zip.write_all(&serde_json::to_vec(manifest).unwrap())
        .unwrap();
    zip.start_file("env.json.age", options).unwrap();
    zip.write_all(&encrypted).unwrap();
    zip.start_file("secrets.src", options).unwrap();
    zip.write_all(b"DB_PASSWORD\n").unwrap();
    zip.add_directory("code/", options).unwrap();
    (
        zip.finish().unwrap().into_inner(),
        identity.to_string().expose_secret().to_owned(),
    )
}

fn payload(run_id: &RunId) -> DispatchPayload {
    DispatchPayload {
        s3_location: "tmp/exec/x/0001/exec.zip".into(),
        internal_bucket: "internal".into(),
        callback_url: "memory://attempt-url".into(),
        run_id: run_id.clone(),
        order_num: OrderNum::from_index(0),
        attempt: "attempt-1".into(),
        key_path: "key".into(),
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        host_env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        callback: sluice_worker::retry::RetryPolicy {
            first_backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_millis(20),
            report_window: std::time::Duration::ZERO,
            ..Default::default()
        },
        ..WorkerConfig::default()
    }
}

fn only_result(io: &MemoryIo) -> (String, ResultDoc) {
    let results = io.results.lock().unwrap();
    assert_eq!(results.len(), 1, "exactly one callback");
    let (url, body) = &results[0];
    (url.clone(), parse_result(body).unwrap())
}

#[tokio::test]
async fn runs_the_order_stores_its_log_and_calls_back() {
    let run = RunId::generate();
    let (bundle, key) = bundle(
        &manifest(
            &run,
            &[
                "echo \"token is $TOKEN, password is $DB_PASSWORD, mode is $MODE\"",
                "echo done",
            ],
        ),
        r#"{"TOKEN":"abc123","DB_PASSWORD":"pw-from-ssm","MODE":"careful"}"#,
    );
    let io = MemoryIo {
        bundle,
        key,
        ..MemoryIo::default()
    };
    let report = run_order(&payload(&run), &io, &config()).await;
    assert!(matches!(report, WorkerReport::Reported(_)));
    let (url, result) = only_result(&io);
    assert_eq!(url, "memory://attempt-url");
    assert_eq!(result.status, OrderStatus::Succeeded);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.attempt.as_deref(), Some("attempt-1"));
    assert!(
        result
            .log
            .contains("token is ***, password is ***, mode is careful"),
        "secrets.src names and secret-looking names are masked, the rest kept: {}",
        result.log
    );
    assert!(result.duration_ms().is_some());
    let logs = io.logs.lock().unwrap();
    assert_eq!(result.log_key.as_deref(), Some("tmp/logs/x/0001/log.txt"));
    assert!(String::from_utf8_lossy(&logs["tmp/logs/x/0001/log.txt"]).contains("done"));
}

#[tokio::test]
async fn an_attempt_claimed_elsewhere_does_not_run() {
    let run = RunId::generate();
    let (bundle, key) = bundle(&manifest(&run, &["echo ran"]), "{}");
    let io = MemoryIo {
        bundle,
        key,
        ..MemoryIo::default()
    };
    io.claims.lock().unwrap().insert("attempt-1".into());
    let report = run_order(&payload(&run), &io, &config()).await;
    assert_eq!(report, WorkerReport::AlreadyClaimed);
    assert!(io.results.lock().unwrap().is_empty());
    assert!(io.logs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_env_that_cannot_be_decrypted_is_reported_as_failed() {
    let run = RunId::generate();
    let (bundle, _) = bundle(&manifest(&run, &["echo ran"]), "{}");
    let other_key = age::x25519::Identity::generate()
        .to_string()
        .expose_secret()
        .to_owned();
    let io = MemoryIo {
        bundle,
        key: other_key,
        ..MemoryIo::default()
    };
    run_order(&payload(&run), &io, &config()).await;
    let (url, result) = only_result(&io);
    assert_eq!(url, "memory://attempt-url");
    assert_eq!(result.status, OrderStatus::Failed);
    assert!(result.reason.unwrap().contains("cannot be decrypted"));
    assert!(
        io.claims.lock().unwrap().contains("attempt-1"),
        "reported by the attempt's holder"
    );
}

#[tokio::test]
async fn a_bundle_for_another_order_is_refused_and_reported() {
    let (bundle, key) = bundle(&manifest(&RunId::generate(), &["echo ran"]), "{}");
    let io = MemoryIo {
        bundle,
        key,
        ..MemoryIo::default()
    };
    let run = RunId::generate();
    run_order(&payload(&run), &io, &config()).await;
    let (url, result) = only_result(&io);
    assert_eq!(url, "memory://attempt-url");
    assert_eq!(result.status, OrderStatus::Failed);
    assert!(result.reason.unwrap().contains("not the one dispatched"));
    assert!(
        io.claims.lock().unwrap().contains("attempt-1"),
        "reported by the attempt's holder"
    );
    assert!(io.logs.lock().unwrap().is_empty(), "nothing ran");
}

/// A worker that reports after the watchdog timed its attempt out finds the time-out in
/// place: it stands, and the worker says its result was not stored (before, it reported
/// success as if its result had been).
#[tokio::test]
async fn a_result_after_the_watchdogs_time_out_is_reported_superseded() {
    let run = RunId::generate();
    let (bundle, key) = bundle(&manifest(&run, &["true"]), "{}");
    let io = MemoryIo {
        bundle,
        key,
        ..MemoryIo::default()
    };
    let timed_out = br#"{"status":"timed_out"}"#.to_vec();
    (io.results.lock().unwrap()).push(("memory://attempt-url".to_owned(), timed_out.clone()));
    let report = run_order(&payload(&run), &io, &config()).await;
    let WorkerReport::Superseded(result) = report else {
        panic!("{report:?}");
    };
    assert_eq!(result.status, OrderStatus::Succeeded);
    assert_eq!(
        *io.results.lock().unwrap(),
        [("memory://attempt-url".to_owned(), timed_out)]
    );
}

/// A duplicate worker of an attempt another worker holds (a retried dispatch) stays silent
/// when its own steps fail: before, its failure (here an unreadable bundle; as well a
/// throttled key fetch) was reported and, being the first result, decided the attempt the
/// holder was running.
#[tokio::test]
async fn a_duplicate_worker_that_fails_stays_silent() {
    let io = MemoryIo {
        bundle: b"not a zip".to_vec(),
        key: String::new(),
        ..MemoryIo::default()
    };
    io.claims.lock().unwrap().insert("attempt-1".into());
    let report = run_order(&payload(&RunId::generate()), &io, &config()).await;
    assert_eq!(report, WorkerReport::AlreadyClaimed);
    assert!(io.results.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreadable_bundle_is_reported_failed() {
    let io = MemoryIo {
        bundle: b"not a zip".to_vec(),
        key: String::new(),
        ..MemoryIo::default()
    };
    let report = run_order(&payload(&RunId::generate()), &io, &config()).await;
    assert!(matches!(report, WorkerReport::Reported(_)), "{report:?}");
    let (url, result) = only_result(&io);
    assert_eq!(url, "memory://attempt-url");
    assert_eq!(result.status, OrderStatus::Failed);
    assert!(result.reason.unwrap().contains("not a readable zip"));
}

#[tokio::test]
async fn a_refused_callback_is_reported_to_the_caller() {
    let run = RunId::generate();
    let mut manifest = manifest(&run, &["exit 4"]);
    manifest.timeout = 1;
    let (bundle, key) = bundle(&manifest, "{}");
    let io = MemoryIo {
        bundle,
        key,
        refuse_callbacks: usize::MAX,
        ..MemoryIo::default()
    };
    match run_order(&payload(&run), &io, &config()).await {
        WorkerReport::CallbackFailed(result, error) => {
            assert_eq!(result.status, OrderStatus::Failed);
            assert_eq!(result.exit_code, Some(4));
            assert!(error.message.contains("403"));
        }
        other => panic!("{other:?}"),
    }
}

/// Before, the worker gave up after 4 attempts (4–7 s) while the watchdog waited for the
/// order's timeout plus its slack: an outage of 15 s turned a success into a time-out. Now
/// it keeps trying until the report deadline (the order's timeout plus the report window).
#[tokio::test]
async fn a_callback_refused_past_its_attempts_is_retried_until_the_report_deadline() {
    let run = RunId::generate();
    let (bundle, key) = bundle(&manifest(&run, &["true"]), "{}");
    let io = MemoryIo {
        bundle,
        key,
        refuse_callbacks: 12,
        ..MemoryIo::default()
    };
    let report = run_order(&payload(&run), &io, &config()).await;
    assert!(matches!(report, WorkerReport::Reported(_)), "{report:?}");
    assert_eq!(io.callbacks_refused.load(Ordering::SeqCst), 13);
    assert_eq!(only_result(&io).1.status, OrderStatus::Succeeded);
}

/// A key store that throttles the first fetches (SSM's rate limit) does not fail the order:
/// before, the first error before the claim was the order's failure.
#[tokio::test]
async fn a_throttled_key_fetch_is_tried_again_and_the_order_runs() {
    let run = RunId::generate();
    let (bundle, key) = bundle(&manifest(&run, &["echo ran"]), "{}");
    let io = MemoryIo {
        bundle,
        key,
        throttled_key_fetches: AtomicUsize::new(3),
        ..MemoryIo::default()
    };
    let mut config = config();
    config.callback.report_window = std::time::Duration::from_secs(5);
    let report = run_order(&payload(&run), &io, &config).await;
    let WorkerReport::Reported(result) = report else {
        panic!("{report:?}");
    };
    assert_eq!(result.status, OrderStatus::Succeeded, "{:?}", result.reason);
}
