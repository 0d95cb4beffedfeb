//! The worker pipeline end to end over an in-memory [`WorkerIo`]: bundle in, result out.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use age::secrecy::ExposeSecret;
use async_trait::async_trait;
use sluice_contract::AttemptId;
use sluice_contract::cancel::CancelRequest;
use sluice_contract::dispatch::{Capability, Claim, DispatchPayload, OrderIdentity, PinnedRange};
use sluice_contract::manifest::{OrderManifest, Task};
use sluice_contract::result::{ResultDoc, parse_result};
use sluice_contract::{OrderNum, OrderStatus, RunId, TraceId};
use sluice_worker::io::range_of;
use sluice_worker::{Delivery, IoError, WorkerConfig, WorkerIo, WorkerReport, run_order};
use zip::write::SimpleFileOptions;

// Each URL allows one method, as a presigned URL does (`?get`, `?put`).
const BUNDLE_URL: &str = "memory://bundle?get";
const CLAIM_URL: &str = "memory://claim?put";
const CLAIM_CHECK_URL: &str = "memory://claim?get";
const LOG_URL: &str = "memory://log?put";
const RESULT_URL: &str = "memory://attempt-url?put";

/// The object a URL names, if it allows `method`.
fn object_of<'u>(url: &'u str, method: &str) -> Result<&'u str, IoError> {
    match url.split_once('?') {
        Some((object, allowed)) if allowed == method => Ok(object),
        _ => Err(IoError::permanent(url, format!("403: not a {method} URL"))),
    }
}

/// The objects behind the URLs of one dispatch, in memory.
#[derive(Default)]
struct MemoryIo {
    bundle: Vec<u8>,
    /// The identity the dispatch carries.
    key: String,
    /// Objects written, by URL.
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// How many bundle fetches fail transiently (a throttled store) before one works.
    throttled_fetches: AtomicUsize,
    /// How many callbacks are refused before one is taken.
    refuse_callbacks: usize,
    callbacks_refused: AtomicUsize,
    /// Whether the answer to the first claim is lost (the claim stored, an error returned).
    lose_claim_answer: std::sync::atomic::AtomicBool,
}

impl MemoryIo {
    /// Another worker's claim on the attempt.
    fn claimed_elsewhere(&self) {
        let claim = Claim {
            attempt: AttemptId::parse("attempt-1").unwrap(),
            claimed_at_ms: 1,
            worker: "another".into(),
        };
        let claim = serde_json::to_vec(&claim).unwrap();
        let object = object_of(CLAIM_URL, "put").unwrap().to_owned();
        self.objects.lock().unwrap().insert(object, claim);
    }

    fn claimed(&self) -> bool {
        self.object(CLAIM_URL).is_some()
    }

    /// The object `url` names (whatever method the URL allows).
    fn object(&self, url: &str) -> Option<Vec<u8>> {
        let object = url.split('?').next().unwrap();
        self.objects.lock().unwrap().get(object).cloned()
    }

    fn payload(&self, run_id: &RunId) -> DispatchPayload {
        DispatchPayload {
            run_id: run_id.clone(),
            order_num: OrderNum::from_index(0),
            attempt: AttemptId::parse("attempt-1").unwrap(),
            attempt_number: 1,
            bundle_url: Capability::new(BUNDLE_URL),
            bundle_range: None,
            claim_url: Capability::new(CLAIM_URL),
            claim_check_url: Capability::new(CLAIM_CHECK_URL),
            log_url: Capability::new(LOG_URL),
            log_key: None,
            log_in_result: false,
            callback_url: Capability::new(RESULT_URL),
            outputs_url: None,
            cancel_url: None,
            inputs: Vec::new(),
            identity: OrderIdentity::new(self.key.clone()),
            compiled: None,
        }
    }
}

#[async_trait]
impl WorkerIo for MemoryIo {
    async fn get(&self, url: &Capability, max_bytes: u64) -> Result<Vec<u8>, IoError> {
        let throttled = || {
            (self.throttled_fetches)
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        let found = match object_of(url.expose(), "get")? {
            "memory://bundle" if throttled() => {
                return Err(IoError::transient(url.shown(), "503 SlowDown"));
            }
            "memory://bundle" => Some(self.bundle.clone()),
            other => self.object(other),
        };
        let found = found.ok_or_else(|| IoError::permanent(url.shown(), "404 Not Found"))?;
        assert!(found.len() as u64 <= max_bytes);
        Ok(found)
    }
    async fn get_range(&self, url: &Capability, range: &PinnedRange) -> Result<Vec<u8>, IoError> {
        let object = self.get(url, u64::MAX).await?;
        range_of(&object, range).ok_or_else(|| IoError::permanent(url.shown(), "416"))
    }
    async fn put_if_absent(&self, url: &Capability, body: Vec<u8>) -> Result<Delivery, IoError> {
        if url.expose() == RESULT_URL
            && self.callbacks_refused.fetch_add(1, Ordering::SeqCst) < self.refuse_callbacks
        {
            return Err(IoError::permanent(url.shown(), "403 Forbidden"));
        }
        let object = object_of(url.expose(), "put")?;
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(object) {
            return Ok(Delivery::AlreadyThere);
        }
        objects.insert(object.to_owned(), body);
        if url.expose() == CLAIM_URL && self.lose_claim_answer.swap(false, Ordering::SeqCst) {
            return Err(IoError::transient(url.shown(), "connection reset"));
        }
        Ok(Delivery::Stored)
    }
    async fn put(&self, url: &Capability, body: Vec<u8>) -> Result<(), IoError> {
        let object = object_of(url.expose(), "put")?.to_owned();
        self.objects.lock().unwrap().insert(object, body);
        Ok(())
    }
    async fn put_file(&self, url: &Capability, path: &Path) -> Result<(), IoError> {
        self.put(url, std::fs::read(path).unwrap()).await
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
        sandbox: None,
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
    (
        zip_bundle(
            manifest,
            Some(&encrypted),
            &[("secrets.src", b"DB_PASSWORD\n")],
        ),
        identity.to_string().expose_secret().to_owned(),
    )
}

/// A bundle's zip: the manifest, `env.json.age` when given, the name lists given
/// (`secrets.src`, `env_vars.env`), an empty code/.
fn zip_bundle(manifest: &OrderManifest, env: Option<&[u8]>, lists: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    zip.start_file("order.json", options).unwrap();
    zip.write_all(&serde_json::to_vec(manifest).unwrap())
        .unwrap();
    if let Some(env) = env {
        zip.start_file("env.json.age", options).unwrap();
        zip.write_all(env).unwrap();
    }
    for (name, names) in lists {
        zip.start_file(*name, options).unwrap();
        zip.write_all(names).unwrap();
    }
    zip.add_directory("code/", options).unwrap();
    zip.finish().unwrap().into_inner()
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

fn only_result(io: &MemoryIo) -> ResultDoc {
    parse_result(&io.object(RESULT_URL).expect("a result")).unwrap()
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
    let report = run_order(&io.payload(&run), &io, &config()).await;
    assert!(matches!(report, WorkerReport::Reported(_)));
    let result = only_result(&io);
    assert_eq!(result.status, OrderStatus::Succeeded);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(
        result.attempt.as_ref().map(AttemptId::as_str),
        Some("attempt-1")
    );
    assert!(
        result
            .log
            .contains("token is ***, password is ***, mode is careful"),
        "secrets.src names and secret-looking names are masked, the rest kept: {}",
        result.log
    );
    assert!(result.duration_ms().is_some());
    assert_eq!(result.log_key.as_deref(), Some("tmp/logs/x/0001/log.txt"));
    assert!(String::from_utf8_lossy(&io.object(LOG_URL).unwrap()).contains("done"));
}

/// On AWS a log the result holds whole is not stored a second time (a PUT less per
/// order); a longer one is, and the result says where.
#[tokio::test]
async fn a_log_the_result_holds_whole_is_stored_only_there_when_asked() {
    let run = RunId::generate();
    let long = "head -c 300000 /dev/zero | tr '\\0' x; echo";
    for (cmd, stored_alone) in [("echo short", false), (long, true)] {
        let io = MemoryIo {
            bundle: zip_bundle(
                &manifest(&run, &[cmd]),
                None,
                &[("secrets.src", b""), ("env_vars.env", b"")],
            ),
            ..MemoryIo::default()
        };
        let payload = DispatchPayload {
            log_in_result: true,
            ..io.payload(&run)
        };
        let report = run_order(&payload, &io, &config()).await;
        assert!(matches!(report, WorkerReport::Reported(_)));
        let result = only_result(&io);
        assert_eq!(result.status, OrderStatus::Succeeded, "{}", result.log);
        assert_eq!(io.object(LOG_URL).is_some(), stored_alone, "{cmd}");
        assert_eq!(result.log_key.is_some(), stored_alone, "{cmd}");
        assert_eq!(result.log_truncated, stored_alone, "{cmd}");
        assert_eq!(result.log_in_result, !stored_alone, "{cmd}");
        if !stored_alone {
            assert_eq!(result.log, "==> [1/1] echo short\nshort\n");
        }
    }
    // Its result refused for good, a log that was to live there alone is stored after all.
    let io = MemoryIo {
        bundle: zip_bundle(
            &manifest(&run, &["echo short"]),
            None,
            &[("secrets.src", b""), ("env_vars.env", b"")],
        ),
        refuse_callbacks: usize::MAX,
        ..MemoryIo::default()
    };
    let payload = DispatchPayload {
        log_in_result: true,
        ..io.payload(&run)
    };
    let report = run_order(&payload, &io, &config()).await;
    assert!(
        matches!(report, WorkerReport::CallbackFailed(..)),
        "{report:?}"
    );
    let log = io.object(LOG_URL).expect("the log, stored alone");
    assert_eq!(
        String::from_utf8(log).unwrap(),
        "==> [1/1] echo short\nshort\n"
    );
}

/// init_job encrypts nothing for an order without variables: its bundle has no
/// `env.json.age`, and its worker runs it with the host's variables only.
#[tokio::test]
async fn an_order_without_variables_runs_from_a_bundle_without_an_env() {
    let run = RunId::generate();
    let io = MemoryIo {
        bundle: zip_bundle(
            &manifest(&run, &["echo \"mode=${MODE:-unset}\""]),
            None,
            &[("secrets.src", b""), ("env_vars.env", b"")],
        ),
        key: "not a key: nothing is decrypted".to_owned(),
        ..MemoryIo::default()
    };
    let report = run_order(&io.payload(&run), &io, &config()).await;
    assert!(matches!(report, WorkerReport::Reported(_)), "{report:?}");
    let result = only_result(&io);
    assert_eq!(result.status, OrderStatus::Succeeded, "{:?}", result.reason);
    assert!(result.log.contains("mode=unset"), "{}", result.log);
}

/// A bundle naming variables or secrets but carrying no env would run its commands
/// without them: the worker refuses it, and nothing runs.
#[tokio::test]
async fn a_bundle_that_names_variables_but_has_no_env_is_refused() {
    let cases: [[(&str, &[u8]); 2]; 2] = [
        [("secrets.src", b"DB_PASSWORD\n"), ("env_vars.env", b"")],
        [("secrets.src", b""), ("env_vars.env", b"DRY_RUN\n")],
    ];
    for lists in cases {
        let run = RunId::generate();
        let io = MemoryIo {
            bundle: zip_bundle(&manifest(&run, &["echo ran"]), None, &lists),
            key: "not a key".to_owned(),
            ..MemoryIo::default()
        };
        run_order(&io.payload(&run), &io, &config()).await;
        let result = only_result(&io);
        assert_eq!(result.status, OrderStatus::Failed, "{lists:?}");
        let reason = result.reason.unwrap_or_default();
        assert!(reason.contains("env.json.age"), "{reason}");
        assert!(!result.log.contains("ran"), "{}", result.log);
    }
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
    io.claimed_elsewhere();
    let report = run_order(&io.payload(&run), &io, &config()).await;
    assert_eq!(report, WorkerReport::AlreadyClaimed);
    assert!(io.object(RESULT_URL).is_none());
    assert!(io.object(LOG_URL).is_none());
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
    run_order(&io.payload(&run), &io, &config()).await;
    let result = only_result(&io);
    assert_eq!(result.status, OrderStatus::Failed);
    assert!(result.reason.unwrap().contains("cannot be decrypted"));
    assert!(io.claimed(), "reported by the attempt's holder");
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
    run_order(&io.payload(&run), &io, &config()).await;
    let result = only_result(&io);
    assert_eq!(result.status, OrderStatus::Failed);
    assert!(result.reason.unwrap().contains("not the one dispatched"));
    assert!(io.claimed(), "reported by the attempt's holder");
    assert!(io.object(LOG_URL).is_none(), "nothing ran");
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
    let result = object_of(RESULT_URL, "put").unwrap().to_owned();
    (io.objects.lock().unwrap()).insert(result, timed_out.clone());
    let report = run_order(&io.payload(&run), &io, &config()).await;
    let WorkerReport::Superseded(result) = report else {
        panic!("{report:?}");
    };
    assert_eq!(result.status, OrderStatus::Succeeded);
    assert_eq!(io.object(RESULT_URL), Some(timed_out));
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
    io.claimed_elsewhere();
    let report = run_order(&io.payload(&RunId::generate()), &io, &config()).await;
    assert_eq!(report, WorkerReport::AlreadyClaimed);
    assert!(io.object(RESULT_URL).is_none());
}

#[tokio::test]
async fn an_unreadable_bundle_is_reported_failed() {
    let io = MemoryIo {
        bundle: b"not a zip".to_vec(),
        key: String::new(),
        ..MemoryIo::default()
    };
    let report = run_order(&io.payload(&RunId::generate()), &io, &config()).await;
    assert!(matches!(report, WorkerReport::Reported(_)), "{report:?}");
    let result = only_result(&io);
    assert_eq!(result.status, OrderStatus::Failed);
    assert!(result.reason.unwrap().contains("not a readable zip"));
}

/// On AWS a small bundle is in its run's pack among others: the worker reads exactly its
/// range, and refuses one larger than a bundle may be before reading anything.
#[tokio::test]
async fn a_packed_bundle_is_read_by_its_range_alone() {
    let run = RunId::generate();
    let bundle = zip_bundle(
        &manifest(&run, &["echo packed"]),
        None,
        &[("secrets.src", b""), ("env_vars.env", b"")],
    );
    let mut pack = vec![0xaa; 1000];
    pack.extend_from_slice(&bundle);
    pack.extend_from_slice(&[0xbb; 500]);
    let io = MemoryIo {
        bundle: pack,
        key: "not a key: nothing is decrypted".to_owned(),
        ..MemoryIo::default()
    };
    let range = |len| PinnedRange {
        start: 1000,
        len,
        etag: "\"pack\"".to_owned(),
    };
    let mut payload = io.payload(&run);
    payload.bundle_range = Some(range(bundle.len() as u64));
    run_order(&payload, &io, &config()).await;
    let result = only_result(&io);
    assert_eq!(result.status, OrderStatus::Succeeded, "{:?}", result.reason);
    assert!(result.log.contains("packed"), "{}", result.log);

    let io = MemoryIo {
        bundle: Vec::new(),
        ..MemoryIo::default()
    };
    payload.bundle_range = Some(range(u64::MAX / 2));
    run_order(&payload, &io, &config()).await;
    let result = only_result(&io);
    assert_eq!(result.status, OrderStatus::Failed);
    let reason = result.reason.unwrap();
    assert!(reason.contains("bytes are more than"), "{reason}");
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
    match run_order(&io.payload(&run), &io, &config()).await {
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
    let report = run_order(&io.payload(&run), &io, &config()).await;
    assert!(matches!(report, WorkerReport::Reported(_)), "{report:?}");
    assert_eq!(io.callbacks_refused.load(Ordering::SeqCst), 13);
    assert_eq!(only_result(&io).status, OrderStatus::Succeeded);
}

/// A store that throttles the first fetches (S3's SlowDown) does not fail the order:
/// before, the first error before the claim was the order's failure.
#[tokio::test]
async fn a_throttled_fetch_is_tried_again_and_the_order_runs() {
    let run = RunId::generate();
    let (bundle, key) = bundle(&manifest(&run, &["echo ran"]), "{}");
    let io = MemoryIo {
        bundle,
        key,
        throttled_fetches: AtomicUsize::new(3),
        ..MemoryIo::default()
    };
    succeeds_given_time(&io, &run).await;
}

/// Runs the order with 5 s to spare for retries and checks it succeeded.
async fn succeeds_given_time(io: &MemoryIo, run: &RunId) {
    let mut config = config();
    config.callback.report_window = std::time::Duration::from_secs(5);
    let report = run_order(&io.payload(run), io, &config).await;
    let WorkerReport::Reported(result) = report else {
        panic!("{report:?}");
    };
    assert_eq!(result.status, OrderStatus::Succeeded, "{:?}", result.reason);
}

/// A claim whose answer was lost is tried again, finds the worker's own claim (read back
/// through the claim's GET URL) and runs; another worker's claim stops it (above).
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_found_to_be_ours() {
    let run = RunId::generate();
    let (bundle, key) = bundle(&manifest(&run, &["echo ran"]), "{}");
    let io = MemoryIo {
        bundle,
        key,
        lose_claim_answer: true.into(),
        ..MemoryIo::default()
    };
    succeeds_given_time(&io, &run).await;
}

/// A cancel request of the order's run, in the memory store where its dispatch's cancel
/// URL points.
fn request_cancel(io: &MemoryIo, by: &str) {
    let request = CancelRequest {
        by: by.to_owned(),
        at_ms: 1,
    };
    io.objects.lock().unwrap().insert(
        "memory://cancel".to_owned(),
        serde_json::to_vec(&request).unwrap(),
    );
}

#[tokio::test]
async fn a_running_order_is_stopped_once_its_runs_cancel_request_appears() {
    let run = RunId::generate();
    let (bundle, key) = bundle(
        &manifest(
            &run,
            &[
                "trap 'echo got SIGTERM; exit 143' TERM; echo started; while true; do sleep 0.1; done",
            ],
        ),
        "{}",
    );
    let io = MemoryIo {
        bundle,
        key,
        ..MemoryIo::default()
    };
    let payload = DispatchPayload {
        cancel_url: Some(Capability::new("memory://cancel?get")),
        ..io.payload(&run)
    };
    let cancel = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        request_cancel(&io, "frank");
    };
    let config = config();
    let (report, ()) = tokio::join!(run_order(&payload, &io, &config), cancel);
    assert!(matches!(report, WorkerReport::Reported(_)), "{report:?}");
    let result = only_result(&io);
    // Stopped through SIGTERM, which the order trapped, before its 10 s timeout.
    assert_eq!(
        (result.status, result.reason.as_deref()),
        (OrderStatus::Cancelled, Some("cancelled by frank"))
    );
    let log = String::from_utf8_lossy(&io.object(LOG_URL).unwrap()).into_owned();
    assert!(
        log.contains("cancelled by frank: stopping the order") && log.contains("got SIGTERM"),
        "{log}"
    );
}

#[tokio::test]
async fn a_worker_starting_after_its_run_was_cancelled_runs_nothing_when_it_looks_first() {
    let run = RunId::generate();
    let (bundle, key) = bundle(&manifest(&run, &["echo it ran"]), "{}");
    let io = MemoryIo {
        bundle,
        key,
        ..MemoryIo::default()
    };
    request_cancel(&io, "grace");
    let payload = DispatchPayload {
        cancel_url: Some(Capability::new("memory://cancel?get")),
        ..io.payload(&run)
    };
    let config = WorkerConfig {
        look_for_cancel_at_start: true,
        ..config()
    };
    run_order(&payload, &io, &config).await;
    let result = only_result(&io);
    assert_eq!(
        (result.status, result.reason.as_deref()),
        (OrderStatus::Cancelled, Some("cancelled by grace"))
    );
    assert!(!result.log.contains("it ran"), "{}", result.log);
    // A worker that does not look first (on Lambda: started at once) runs the order, and
    // looks once it has run two seconds; this one ends before.
    let io = MemoryIo {
        bundle: io.bundle.clone(),
        key: io.key.clone(),
        ..MemoryIo::default()
    };
    request_cancel(&io, "grace");
    run_order(&payload, &io, &self::config()).await;
    assert_eq!(only_result(&io).status, OrderStatus::Succeeded);
}
