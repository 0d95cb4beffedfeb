//! The worker pipeline for one order attempt: bundle → claim → env → run → log → callback,
//! each step through a URL of the dispatch (the worker holds no credential) and the env
//! decrypted with the identity the dispatch carries. The claim comes before anything that
//! can fail for this worker alone (a storage hiccup), so only the attempt's holder reports:
//! a duplicate worker of the same attempt stays silent, and never decides an attempt
//! another runs.
//!
//! The order's secrets (the variables named in the bundle's `secrets.src`) are masked in
//! everything the result carries or the worker stores: its log, events and reason.
//!
//! Every failure becomes a `failed` result with a reason, so the user sees why: the callback
//! URL comes with the dispatch, so even a bundle that cannot be fetched or read is reported.
//! An attempt already claimed by another worker is not run and not reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_contract::cancel::{CancelRequest, MAX_CANCEL_REQUEST_BYTES, parse_cancel_request};
use sluice_contract::credentials::is_secret_name;
use sluice_contract::dispatch::{Capability, Claim, DispatchPayload};
use sluice_contract::manifest::{
    CODE_DIR, ENV_FILE, ENV_NAMES_FILE, MANIFEST_FILE, OrderManifest, SECRET_NAMES_FILE, Task,
};
use sluice_contract::outputs::OUTPUT_VAR;
use sluice_contract::result::{ResultDoc, format_timestamp};
use sluice_contract::{OrderStatus, SandboxSpec};
use tokio::time::Instant;
use tracing::Instrument;

use sluice_contract::events::EVENTS_DIR_VAR;

use crate::envelope::{EnvError, decrypt_env};
use crate::events::collect_events;
use crate::extract::{ExtractLimits, SmallEntries, extract};
use crate::io::{Delivery, IoError, WorkerIo};
use crate::log_sink::LogSink;
use crate::outputs::{self, InputError, MAX_COMMAND_VARIABLE, PublishDir, Publishing};
use crate::process_group::RUN_MARKER;
use crate::redact::{MIN_SECRET_LEN, Redactor};
use crate::retry::{self, RetryPolicy};
use crate::sandbox::{Jail, SandboxError, SandboxSettings};
use crate::shell::{ShellOrder, ShellOutcome, ShellSettings, run_cmds};
use crate::spool::{DEFAULT_MAX_LOG_BYTES, StoredLog};
use crate::wasm::{Grants, SharedCompiled, WasmOrder, WasmOutcome, WasmRuntime};
use tokio_util::sync::CancellationToken;

/// Settings of the worker. Defaults: work folder = the system temp dir, shell defaults
/// (10 s grace, 2 s pipe drain), extraction defaults, no host variables passed on, a
/// WebAssembly runtime without a disk cache, logs capped at 64 MiB, the default callback
/// retries.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where attempts unpack their bundle (a fresh folder each, deleted afterwards).
    pub work_root: Option<PathBuf>,
    /// How commands are stopped and drained.
    pub shell: ShellSettings,
    /// How big a bundle may unpack.
    pub limits: ExtractLimits,
    /// The host variables commands inherit (the minimal `PATH`, `HOME`, `LANG`), read once
    /// at start-up by the binary.
    pub host_env: Vec<(String, String)>,
    /// The WebAssembly runtime shared by the process's orders (engines, compile caches).
    pub wasm: Arc<WasmRuntime>,
    /// Most bytes of an order's log that are stored (its head and tail beyond).
    pub max_log_bytes: u64,
    /// How the result is retried when the callback fails.
    pub callback: RetryPolicy,
    /// Cancelled when the run is stopped (`sluice run` interrupted): running orders are
    /// stopped as at their deadline and report `cancelled`.
    pub stop: CancellationToken,
    /// Whether to look for the run's cancel request before the order starts, as well as
    /// while it runs: a CodeBuild worker may start minutes after its dispatch (a build's
    /// queue and provisioning), a GET well spent.
    pub look_for_cancel_at_start: bool,
    /// The sandbox shell orders run in (`sluice run`), or none.
    pub sandbox: Option<Arc<SandboxSettings>>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            work_root: None,
            shell: ShellSettings::default(),
            limits: ExtractLimits::default(),
            host_env: Vec::new(),
            wasm: Arc::default(),
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            callback: RetryPolicy::default(),
            stop: CancellationToken::new(),
            look_for_cancel_at_start: false,
            sandbox: None,
        }
    }
}

/// What the worker did with an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerReport {
    /// It ran the order and called back this result.
    Reported(ResultDoc),
    /// It ran the order, but the attempt already had a result (the watchdog timed it out
    /// first): that one stands, this one was not stored.
    Superseded(ResultDoc),
    /// It ran the order but the callback failed (the watchdog will time the order out).
    CallbackFailed(ResultDoc, IoError),
    /// Another worker had claimed the attempt; nothing ran.
    AlreadyClaimed,
}

/// Why a bundle could not be opened (the attempt is reported failed with this reason).
#[derive(Debug, thiserror::Error)]
enum BundleError {
    /// Fetching the bundle failed.
    #[error("run {run_id} order {order_num}: {cause}")]
    Fetch {
        /// The run.
        run_id: String,
        /// The order.
        order_num: String,
        /// The failure.
        #[source]
        cause: IoError,
    },
    /// The bundle is unusable (not a zip, unsafe entries, no manifest).
    #[error("run {run_id} order {order_num}: bad bundle: {message}")]
    Bundle {
        /// The run.
        run_id: String,
        /// The order.
        order_num: String,
        /// What is wrong.
        message: String,
    },
}

/// Why a bundle's order could not run once opened (the attempt is reported failed with
/// this reason, unless the claim failed: then only the attempt's holder reports).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// The attempt could not be claimed.
    #[error("claiming the attempt: {0}")]
    Claim(#[source] IoError),
    /// The task decrypting the env failed (it panicked or was cancelled).
    #[error("decrypting the env: {0}")]
    DecryptTask(#[source] tokio::task::JoinError),
    /// The env cannot be decrypted.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The events folder cannot be created.
    #[error("creating the events folder: {0}")]
    EventsFolder(#[source] std::io::Error),
    /// The log cannot be written to its spool file.
    #[error("writing the log: {0}")]
    WriteLog(#[source] std::io::Error),
    /// An input is missing or cannot be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The folder of the output file cannot be made.
    #[error("creating the output file: {0}")]
    OutputFile(#[source] std::io::Error),
    /// An input would replace one of the order's own variables (from its credentials).
    #[error(
        "input {0} would replace the order's own variable {0} (from its credentials): rename the input"
    )]
    InputReplaces(String),
}

/// Largest manifest or encrypted env a worker reads into memory.
const MAX_SMALL_FILE: u64 = 16 << 20;

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Runs one attempt end to end (see the module docs); whatever fails is reported through
/// the attempt's callback URL, so the report says only whether that report went through.
pub async fn run_order(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
) -> WorkerReport {
    let span = tracing::info_span!("worker", run_id = %payload.run_id, order_num = %payload.order_num, attempt = %payload.attempt);
    run_attempt(payload, io, config).instrument(span).await
}

async fn run_attempt(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
) -> WorkerReport {
    let started_ms = now_ms();
    let started = tokio::time::Instant::now();
    // Steps before the run (bundle, claim) that fail transiently are tried again
    // for as long as the worker would try to report.
    let patience = started + config.callback.report_window;
    let opened = match open_bundle(payload, io, config, patience).await {
        Ok(opened) => opened,
        // The callback URL comes with the dispatch: even an unusable bundle is reported —
        // by the attempt's holder only: a duplicate worker's failure (a throttled fetch)
        // must not decide an attempt another worker runs.
        Err(error) => {
            if let Ok(false) = claim_attempt(payload, io, config, patience).await {
                return WorkerReport::AlreadyClaimed;
            }
            tracing::error!(%error, "the bundle is unusable; reporting the order failed");
            let failed = failed_result(error.to_string());
            let sending = Sending {
                policy: config.callback,
                started_ms,
                report_by: started + config.callback.report_window,
            };
            return report(io, failed, payload, sending).await;
        }
    };
    let sending = Sending {
        policy: config.callback,
        started_ms,
        report_by: started
            + Duration::from_secs(opened.manifest.timeout)
            + config.callback.report_window,
    };
    let result = match prepare_and_run(payload, io, config, &opened, patience).await {
        Ok(Some(result)) => result,
        Ok(None) => return WorkerReport::AlreadyClaimed,
        Err(reason) => {
            tracing::error!(%reason, "order could not run");
            failed_result(reason.to_string())
        }
    };
    let report = report(io, result, payload, sending).await;
    keep_unreported_log(io, payload, config, &report).await;
    report
}

/// Stores the log alone after all when its result was to be its only copy but was not
/// stored (the watch's time-out was there first, or the callback failed): the log is the
/// one thing of the attempt that must not be lost.
async fn keep_unreported_log(
    io: &dyn WorkerIo,
    payload: &DispatchPayload,
    config: &WorkerConfig,
    report: &WorkerReport,
) {
    let (WorkerReport::Superseded(result) | WorkerReport::CallbackFailed(result, _)) = report
    else {
        return;
    };
    if !result.log_in_result {
        return;
    }
    let log = StoredLog::Memory(result.log.clone().into_bytes());
    let until = Instant::now() + config.callback.report_window / 2;
    match store_log(io, payload, config, &log, until, until).await {
        Ok(()) => tracing::info!(
            "the result this worker sent did not decide the attempt (or its answer was lost): its log was stored alone too"
        ),
        Err(error) => {
            tracing::warn!(%error, "the log, which only the result held, could not be stored alone")
        }
    }
}

/// How and until when a result is sent.
#[derive(Debug, Clone, Copy)]
struct Sending {
    policy: RetryPolicy,
    /// When the attempt started, ms since the epoch.
    started_ms: u64,
    /// Past this, and past the policy's attempts, the worker gives up reporting.
    report_by: tokio::time::Instant,
}

/// A failed result whose reason is also the log, for failures before any command ran.
fn failed_result(reason: String) -> ResultDoc {
    let mut doc = ResultDoc::new(OrderStatus::Failed, format!("==> {reason}\n"));
    doc.reason = Some(reason);
    doc
}

/// Stamps the result with the attempt and times, and PUTs it to the callback URL (retried
/// as `sending` says).
async fn report(
    io: &dyn WorkerIo,
    mut result: ResultDoc,
    payload: &DispatchPayload,
    sending: Sending,
) -> WorkerReport {
    result.attempt = Some(payload.attempt.clone());
    result.started_at = Some(format_timestamp(sending.started_ms));
    result.finished_at = Some(format_timestamp(now_ms()));
    let body = serde_json::to_vec(&result).expect("results serialize");
    let url = &payload.callback_url;
    let sent = retry::call_back(io, url, &body, sending.policy, payload, sending.report_by);
    match sent.await {
        Ok(Delivery::Stored) => WorkerReport::Reported(result),
        Ok(Delivery::AlreadyThere) => {
            tracing::warn!(status = %result.status, "the attempt already had a result (the watchdog's time-out); this one was not stored");
            WorkerReport::Superseded(result)
        }
        Err(error) => WorkerReport::CallbackFailed(result, error),
    }
}

/// A bundle fetched, its code unpacked, its small files read.
struct OpenedBundle {
    /// The attempt's work folder (deleted when dropped).
    work: tempfile::TempDir,
    manifest: OrderManifest,
    /// `env.json.age`; `None` when the order has no variables (nothing was encrypted).
    ciphertext: Option<Vec<u8>>,
    /// The names in `secrets.src`.
    secret_names: Vec<String>,
}

/// Fetches the bundle, unpacks its code into a fresh work folder, and reads its manifest
/// and encrypted env, checking the manifest is for the order dispatched.
async fn open_bundle(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
    patience: tokio::time::Instant,
) -> Result<OpenedBundle, BundleError> {
    let bundle_error = |message: String| BundleError::Bundle {
        run_id: payload.run_id.to_string(),
        order_num: payload.order_num.to_string(),
        message,
    };
    let work = match &config.work_root {
        Some(root) => tempfile::Builder::new().prefix("sluice-").tempdir_in(root),
        None => tempfile::Builder::new().prefix("sluice-").tempdir(),
    }
    .map_err(|e| bundle_error(format!("creating a work folder: {e}")))?;
    // A bundle unpacks to at most `max_bytes`; its zip is no larger than that and a
    // directory.
    let max_bundle = config.limits.max_bytes.saturating_add(MAX_SMALL_FILE);
    let bundle = retry::while_transient(config.callback, patience, || async {
        match &payload.bundle_range {
            // Its bytes in the run's pack.
            Some(range) if range.len <= max_bundle => {
                io.get_range(&payload.bundle_url, range).await
            }
            Some(range) => Err(IoError::permanent(
                payload.bundle_url.shown(),
                format!(
                    "the bundle's {} bytes are more than {max_bundle}",
                    range.len
                ),
            )),
            None => io.get(&payload.bundle_url, max_bundle).await,
        }
    })
    .await
    .map_err(|cause| BundleError::Fetch {
        run_id: payload.run_id.to_string(),
        order_num: payload.order_num.to_string(),
        cause,
    })?;
    let dest = work.path().to_owned();
    let limits = config.limits;
    let (manifest, ciphertext, secret_names, env_names) = tokio::task::spawn_blocking(move || {
        extract(&bundle, &dest, CODE_DIR, limits)?;
        let mut entries = SmallEntries::open(&bundle)?;
        let manifest = entries.read(MANIFEST_FILE, MAX_SMALL_FILE)?;
        let ciphertext = entries.read_if_present(ENV_FILE, MAX_SMALL_FILE)?;
        let secret_names = entries.read(SECRET_NAMES_FILE, MAX_SMALL_FILE)?;
        let env_names = entries.read_if_present(ENV_NAMES_FILE, MAX_SMALL_FILE)?;
        Ok::<_, crate::extract::ExtractError>((manifest, ciphertext, secret_names, env_names))
    })
    .await
    .map_err(|e| bundle_error(e.to_string()))?
    .map_err(|e| bundle_error(e.to_string()))?;
    let manifest: OrderManifest = serde_json::from_slice(&manifest)
        .map_err(|e| bundle_error(format!("{MANIFEST_FILE}: {e}")))?;
    if manifest.run_id != payload.run_id || manifest.order_num != payload.order_num {
        return Err(bundle_error(format!(
            "{MANIFEST_FILE} is for run {} order {}, not the one dispatched",
            manifest.run_id, manifest.order_num
        )));
    }
    let secret_names: Vec<String> = String::from_utf8_lossy(&secret_names)
        .lines()
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    // A bundle without an env is one of an order without variables: one that names
    // variables or secrets and has no env would run its commands without them.
    let names_variables =
        env_names.is_some_and(|names| names.iter().any(|b| !b.is_ascii_whitespace()));
    if ciphertext.is_none() && (names_variables || !secret_names.is_empty()) {
        return Err(bundle_error(format!(
            "it names variables ({ENV_NAMES_FILE}, {SECRET_NAMES_FILE}) but holds no {ENV_FILE}"
        )));
    }
    Ok(OpenedBundle {
        work,
        manifest,
        ciphertext,
        secret_names,
    })
}

/// Claims the attempt (retried while transient, until `patience`): `Ok(true)` when this
/// worker holds it, `Ok(false)` when another worker does.
async fn claim_attempt(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
    patience: tokio::time::Instant,
) -> Result<bool, AttemptError> {
    let claim = Claim {
        attempt: payload.attempt.clone(),
        claimed_at_ms: now_ms(),
        worker: uuid::Uuid::new_v4().simple().to_string(),
    };
    let body = serde_json::to_vec(&claim).expect("claims serialize");
    retry::while_transient(config.callback, patience, || async {
        match io.put_if_absent(&payload.claim_url, body.clone()).await? {
            Delivery::Stored => Ok(true),
            // Someone's claim is there: ours when a put whose answer was lost was retried.
            Delivery::AlreadyThere => {
                let stored = io.get(&payload.claim_check_url, MAX_CLAIM_BYTES).await?;
                Ok(serde_json::from_slice::<Claim>(&stored).is_ok_and(|found| found == claim))
            }
        }
    })
    .await
    .map_err(AttemptError::Claim)
}

/// Most bytes of a claim read back (a claim is a few dozen).
const MAX_CLAIM_BYTES: u64 = 4096;

/// Claims, decrypts and runs; `Ok(None)` when the attempt was claimed by someone else (or
/// the run is being stopped), `Err` for a failure the result should explain.
async fn prepare_and_run(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
    opened: &OpenedBundle,
    patience: tokio::time::Instant,
) -> Result<Option<ResultDoc>, AttemptError> {
    let (manifest, work) = (&opened.manifest, opened.work.path());
    if config.stop.is_cancelled() {
        // The run is being stopped: nothing more starts.
        return Ok(None);
    }
    // Claimed first: whatever fails from here is reported by the attempt's holder only.
    if !claim_attempt(payload, io, config, patience).await? {
        tracing::warn!("attempt already claimed by another worker: not running it again");
        return Ok(None);
    }
    if let Some(cancelled) = cancelled_before_start(payload, io, config).await {
        return Ok(Some(cancelled));
    }
    let secrets = match opened.ciphertext.clone() {
        Some(ciphertext) => {
            let identity = payload.identity.clone();
            tokio::task::spawn_blocking(move || decrypt_env(&ciphertext, identity.expose()))
                .await
                .map_err(AttemptError::DecryptTask)??
        }
        None => BTreeMap::new(),
    };
    // The order's time runs from here: its inputs are read within it.
    let deadline = Instant::now() + Duration::from_secs(manifest.timeout);
    let max_value = matches!(manifest.task, Task::Cmds(_)).then_some(MAX_COMMAND_VARIABLE);
    let until = patience.min(deadline);
    let inputs = outputs::take_inputs(io, payload, config.callback, until, max_value).await?;
    if let Some(input) = inputs.iter().find(|input| secrets.contains_key(&input.env)) {
        return Err(AttemptError::InputReplaces(input.env.clone()));
    }
    let redactor = Arc::new(redactor_of(&secrets, &opened.secret_names, &inputs));
    let mut variables = secrets;
    variables.extend(outputs::as_variables(&inputs));

    let log = LogSink::create_with(work, Arc::clone(&redactor), config.max_log_bytes);
    note_what_it_takes(&log, &redactor, &inputs).await;
    let events_dir = work.join(EVENTS_FOLDER);
    tokio::fs::create_dir(&events_dir)
        .await
        .map_err(AttemptError::EventsFolder)?;
    let publish_dir = PublishDir::prepare(work)
        .await
        .map_err(AttemptError::OutputFile)?;
    let stop = config.stop.child_token();
    let task = TaskRun {
        config,
        shared: payload
            .compiled
            .as_ref()
            .map(|code| SharedCompiled { code, io }),
        manifest,
        attempt_number: payload.attempt_number,
        variables: &variables,
        code_root: &work.join(CODE_DIR),
        events_dir: &events_dir,
        publish_dir: &publish_dir,
        deadline,
        stop: &stop,
        sandboxed: OnceLock::new(),
    };
    let (status, exit_code, reason) = match &payload.cancel_url {
        Some(url) => run_unless_cancelled(task.run(&log), io, url, &stop, &log).await,
        None => task.run(&log).await,
    };
    let events = collect_events(&events_dir, &log, &redactor).await;
    // Storing the outputs and the log may use half the report window past the deadline,
    // together: the result, which decides the order, must still reach the callback before
    // the watchdog gives up.
    let stored_by = deadline.max(Instant::now()) + config.callback.report_window / 2;
    let publishing = Publishing {
        url: payload.outputs_url.as_ref(),
        redactor: &redactor,
        policy: config.callback,
        patience,
        by: stored_by,
    };
    let (status, reason, published) =
        publish_outputs(io, &publish_dir, publishing, &log, (status, reason)).await;
    let summary = log.finish().await.map_err(AttemptError::WriteLog)?;
    let mut doc = ResultDoc::new(status, summary.tail);
    doc.exit_code = exit_code;
    doc.reason = reason.map(|r| redactor.redact_str(&r).into_owned());
    doc.log_bytes = summary.bytes;
    doc.log_truncated = summary.truncated;
    doc.events = events;
    doc.outputs = published;
    doc.sandbox = task.sandboxed.into_inner();
    if payload.log_in_result && summary.whole {
        // The result is the log's only copy: a PUT less (see [`keep_unreported_log`]).
        doc.log_in_result = true;
        return Ok(Some(doc));
    }
    match store_log(io, payload, config, &summary.log, patience, stored_by).await {
        Ok(()) => {
            let key = payload.log_key.as_ref().unwrap_or(&manifest.log_key);
            doc.log_key = Some(key.clone());
        }
        Err(error) => {
            tracing::warn!(%error, "the full log could not be stored; the result keeps its tail")
        }
    }
    Ok(Some(doc))
}

/// How often a running order's worker looks for its run's cancel request.
const CANCEL_POLL: Duration = Duration::from_secs(2);

/// Awaits `run` (the order), looking for the run's cancel request at `url` every
/// [`CANCEL_POLL`] meanwhile: once it is there, the order is stopped (`stop`: SIGTERM, the
/// grace period, SIGKILL) and ends `cancelled`, with who cancelled as its reason.
async fn run_unless_cancelled(
    run: impl Future<Output = (OrderStatus, Option<i32>, Option<String>)>,
    io: &dyn WorkerIo,
    url: &Capability,
    stop: &CancellationToken,
    log: &LogSink,
) -> (OrderStatus, Option<i32>, Option<String>) {
    tokio::pin!(run);
    let request = tokio::select! {
        ended = &mut run => return ended,
        request = cancel_request(io, url) => request,
    };
    log.note(&format!("{}: stopping the order", request.reason()))
        .await;
    stop.cancel();
    match run.await {
        (OrderStatus::Cancelled, exit_code, _) => {
            (OrderStatus::Cancelled, exit_code, Some(request.reason()))
        }
        ended => ended,
    }
}

/// The run's cancel request, once it is at `url` (looked for every [`CANCEL_POLL`]; a
/// failure to look is looking again).
async fn cancel_request(io: &dyn WorkerIo, url: &Capability) -> CancelRequest {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        if let Some(request) = look_for_cancel(io, url).await {
            return request;
        }
    }
}

/// The run's cancel request at `url`, if it is there (an unreadable one still cancels); a
/// failure to look is none.
async fn look_for_cancel(io: &dyn WorkerIo, url: &Capability) -> Option<CancelRequest> {
    match io.get(url, MAX_CANCEL_REQUEST_BYTES).await {
        Ok(bytes) => Some(
            parse_cancel_request(&bytes).unwrap_or_else(|_| CancelRequest::unreadable(now_ms())),
        ),
        Err(error) => {
            tracing::trace!(%error, "no cancel request");
            None
        }
    }
}

/// Publishes the outputs of an order that ended `status` (`reason`): the status, reason and
/// number of outputs it ends with. An order that succeeded fails when its outputs cannot be
/// published; one that failed keeps its reason (the log says why it published nothing); one
/// that timed out or was stopped publishes nothing.
async fn publish_outputs(
    io: &dyn WorkerIo,
    dir: &PublishDir,
    publishing: Publishing<'_>,
    log: &LogSink,
    (status, reason): (OrderStatus, Option<String>),
) -> (OrderStatus, Option<String>, u32) {
    if !matches!(status, OrderStatus::Succeeded | OrderStatus::Failed) {
        return (status, reason, 0);
    }
    match outputs::publish(io, dir, publishing).await {
        Ok(count) => (status, reason, count),
        Err(error) => {
            let why = format!("outputs not published: {error}");
            log.note(&why).await;
            match status {
                OrderStatus::Succeeded => (OrderStatus::Failed, Some(why), 0),
                _ => (status, reason, 0),
            }
        }
    }
}

/// The result of an attempt whose run was cancelled before its order started, when the
/// worker looks first ([`WorkerConfig::look_for_cancel_at_start`]) and finds the request.
async fn cancelled_before_start(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
) -> Option<ResultDoc> {
    if !config.look_for_cancel_at_start {
        return None;
    }
    let request = look_for_cancel(io, payload.cancel_url.as_ref()?).await?;
    let reason = request.reason();
    tracing::info!(%reason, "the run was cancelled before the order started; not running it");
    let mut doc = ResultDoc::new(
        OrderStatus::Cancelled,
        format!("==> {reason} before it started\n"),
    );
    doc.reason = Some(reason);
    Some(doc)
}

/// Notes in the order's log the secrets too short to be masked and the inputs it took
/// (their sizes, never their values).
async fn note_what_it_takes(log: &LogSink, redactor: &Redactor, inputs: &[outputs::TakenInput]) {
    for name in redactor.unmasked() {
        log.note(&format!(
            "warning: the secret {name} is shorter than {MIN_SECRET_LEN} characters and is not masked in this log"
        ))
        .await;
    }
    for input in inputs {
        log.note(&format!(
            "input {} from {} ({} bytes)",
            input.env,
            input.source,
            input.value.len()
        ))
        .await;
    }
}

/// What the order's log masks: the variables init_job listed as secrets (`secret_names`),
/// those named like secrets even if a bundle made elsewhere forgot them, and the inputs
/// that are secret.
fn redactor_of(
    secrets: &BTreeMap<String, String>,
    secret_names: &[String],
    inputs: &[outputs::TakenInput],
) -> Redactor {
    let own = secrets.iter().filter_map(|(name, value)| {
        (secret_names.contains(name) || is_secret_name(name))
            .then_some((name.as_str(), value.as_str()))
    });
    let taken = (inputs.iter())
        .filter(|input| input.secret)
        .map(|input| (input.env.as_str(), input.value.as_str()));
    Redactor::new(own.chain(taken))
}

/// PUTs the log to the attempt's log URL, tried again after a transient failure
/// until `patience`, the whole bounded by `by`: one stalled PUT must not keep the worker
/// (a billed build) for its transfer's time-out, several times over.
async fn store_log(
    io: &dyn WorkerIo,
    payload: &DispatchPayload,
    config: &WorkerConfig,
    log: &StoredLog,
    patience: Instant,
    by: Instant,
) -> Result<(), IoError> {
    let url = &payload.log_url;
    retry::within(config.callback, patience, by, url.shown(), || async {
        match log {
            StoredLog::Memory(bytes) => io.put(url, bytes.clone()).await,
            StoredLog::File(file) => io.put_file(url, file.path()).await,
        }
    })
    .await
}

/// Where an attempt's events folder is, next to its `code/` folder.
const EVENTS_FOLDER: &str = "events";

/// One order's task, with everything it runs with.
struct TaskRun<'a> {
    config: &'a WorkerConfig,
    /// Where the code the compile function made from a WebAssembly order's module is (on
    /// AWS).
    shared: Option<SharedCompiled<'a>>,
    manifest: &'a OrderManifest,
    /// Which attempt of the order this is (1 for the first).
    attempt_number: u32,
    /// The order's variables: its decrypted env and its inputs.
    variables: &'a BTreeMap<String, String>,
    code_root: &'a Path,
    events_dir: &'a Path,
    /// The folder of its output file.
    publish_dir: &'a PublishDir,
    deadline: Instant,
    /// Cancelled to stop the order (the run is stopped, or was asked to be cancelled).
    stop: &'a CancellationToken,
    /// What its sandbox granted, once its commands started in one.
    sandboxed: OnceLock<SandboxSpec>,
}

impl TaskRun<'_> {
    /// Runs the commands or the module; returns the status, exit code and reason.
    async fn run(&self, log: &LogSink) -> (OrderStatus, Option<i32>, Option<String>) {
        let timed_out = |place: String| {
            let reason = format!("timed out after {} s{place}", self.manifest.timeout);
            (OrderStatus::TimedOut, None, Some(reason))
        };
        let cancelled = |step: usize| {
            let reason = format!("cancelled: the run was stopped during step {step}");
            (OrderStatus::Cancelled, None, Some(reason))
        };
        match &self.manifest.task {
            Task::Cmds(cmds) => {
                let env = self.shell_env();
                let sandbox = match self.sandbox(log).await {
                    Ok(sandbox) => sandbox,
                    Err(error) => return (OrderStatus::Failed, None, Some(error.to_string())),
                };
                let order = ShellOrder {
                    cmds,
                    env: &env,
                    cwd: self.code_root,
                    deadline: self.deadline,
                    stop: self.stop,
                    jail: sandbox.as_ref().map(|(jail, _)| jail),
                };
                if let Some((_, granted)) = &sandbox {
                    let _ = self.sandboxed.set(granted.clone());
                }
                match run_cmds(&order, log, self.config.shell).await {
                    ShellOutcome::Succeeded => (OrderStatus::Succeeded, Some(0), None),
                    ShellOutcome::Failed {
                        exit_code,
                        reason,
                        cmd_index,
                    } => (
                        OrderStatus::Failed,
                        Some(exit_code),
                        Some(format!("command {} failed: {reason}", cmd_index + 1)),
                    ),
                    ShellOutcome::TimedOut { cmd_index } => {
                        timed_out(format!(" in command {}", cmd_index + 1))
                    }
                    ShellOutcome::Stopped { cmd_index } => cancelled(cmd_index + 1),
                    ShellOutcome::SpawnFailed { reason, .. } => {
                        (OrderStatus::Failed, None, Some(reason))
                    }
                }
            }
            Task::Wasm(spec) => {
                let context = sluice_context(self.manifest, self.attempt_number);
                let order = WasmOrder {
                    grants: Grants {
                        spec,
                        variables: self.variables,
                        context: &context,
                        code_root: self.code_root,
                        events_dir: self.events_dir,
                        publish_dir: self.publish_dir.path(),
                    },
                    deadline: self.deadline,
                    stop: self.stop,
                    shared: self.shared,
                };
                match self.config.wasm.run(&order, log).await {
                    WasmOutcome::Succeeded => (OrderStatus::Succeeded, Some(0), None),
                    WasmOutcome::Failed { exit_code, reason } => {
                        (OrderStatus::Failed, exit_code, Some(reason))
                    }
                    WasmOutcome::TimedOut => timed_out(String::new()),
                    WasmOutcome::Stopped => cancelled(1),
                }
            }
        }
    }

    /// The sandbox the order's commands run in, and what it grants, when the worker
    /// sandboxes them (a grant that cannot be prepared is said in the log).
    async fn sandbox(&self, log: &LogSink) -> Result<Option<(Jail, SandboxSpec)>, SandboxError> {
        let Some(settings) = &self.config.sandbox else {
            return Ok(None);
        };
        let own = [self.code_root, self.events_dir, self.publish_dir.path()];
        let jail = settings.jail(&own, self.code_root, self.manifest.sandbox.as_ref());
        if let Err(error) = &jail {
            log.note(&error.to_string()).await;
        }
        jail.map(Some)
    }

    /// The complete environment of the order's commands: the minimal host variables, then
    /// the order's own (decrypted) variables, then Sluice's. Nothing else of the host.
    fn shell_env(&self) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = self.config.host_env.iter().cloned().collect();
        env.extend(self.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(sluice_context(self.manifest, self.attempt_number));
        env.insert(
            EVENTS_DIR_VAR.to_owned(),
            self.events_dir.display().to_string(),
        );
        env.insert(
            OUTPUT_VAR.to_owned(),
            self.publish_dir.output_file().display().to_string(),
        );
        env.into_iter().collect()
    }
}

/// Sluice's variables, which every order sees (`TIMEOUT` as the seed system names it).
fn sluice_context(manifest: &OrderManifest, attempt_number: u32) -> Vec<(String, String)> {
    let timeout = manifest.timeout.to_string();
    [
        (RUN_MARKER, manifest.run_id.to_string()),
        ("SLUICE_ATTEMPT", attempt_number.to_string()),
        ("SLUICE_ORDER_NUM", manifest.order_num.to_string()),
        ("SLUICE_ORDER_NAME", manifest.order_name.clone()),
        ("SLUICE_TRACE_ID", manifest.trace_id.to_string()),
        ("SLUICE_FLOW_ID", manifest.flow_id.clone()),
        ("SLUICE_TIMEOUT", timeout.clone()),
        ("TIMEOUT", timeout),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
