//! The worker pipeline for one order attempt: bundle → env → claim → run → log → callback.
//!
//! Until the bundle's manifest is read the worker cannot report anything (it does not know
//! where to), so those failures are returned as errors and the watchdog times the order out.
//! From then on every failure becomes a `failed` result with a reason, so the user sees why.
//! An attempt already claimed by another worker is not run and not reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_contract::OrderStatus;
use sluice_contract::dispatch::{Claim, DispatchPayload};
use sluice_contract::manifest::{CODE_DIR, ENV_FILE, MANIFEST_FILE, OrderManifest, Task};
use sluice_contract::result::{ResultDoc, format_timestamp};
use tokio::time::Instant;
use tracing::Instrument;

use crate::envelope::decrypt_env;
use crate::extract::{ExtractLimits, extract, read_entry};
use crate::io::{IoError, WorkerIo};
use crate::log_sink::LogSink;
use crate::shell::{ShellOrder, ShellOutcome, ShellSettings, run_cmds};

/// Settings of the worker. Defaults: work folder = the system temp dir, shell defaults
/// (10 s grace, 2 s pipe drain), extraction defaults, no host variables passed on.
#[derive(Debug, Clone, Default)]
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
}

/// What the worker did with an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerReport {
    /// It ran the order and called back this result.
    Reported(ResultDoc),
    /// It ran the order but the callback failed (the watchdog will time the order out).
    CallbackFailed(ResultDoc, IoError),
    /// Another worker had claimed the attempt; nothing ran.
    AlreadyClaimed,
}

/// An attempt that could not even be reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Fetching the bundle failed.
    #[error("run {run_id} order {order_num}: {cause}")]
    Fetch {
        /// The run.
        run_id: String,
        /// The order.
        order_num: String,
        /// The failure (printed in the message, so not chained as a source too).
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

/// Largest manifest or encrypted env a worker reads into memory.
const MAX_SMALL_FILE: u64 = 16 << 20;

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Runs one attempt end to end (see the module docs).
///
/// # Errors
///
/// [`WorkerError`] when the bundle cannot be fetched or read, so no result can be sent.
pub async fn run_order(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
) -> Result<WorkerReport, WorkerError> {
    let span = tracing::info_span!("worker", run_id = %payload.run_id, order_num = %payload.order_num, attempt = %payload.attempt);
    run_attempt(payload, io, config).instrument(span).await
}

async fn run_attempt(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
) -> Result<WorkerReport, WorkerError> {
    let bundle_error = |message: String| WorkerError::Bundle {
        run_id: payload.run_id.to_string(),
        order_num: payload.order_num.to_string(),
        message,
    };
    let work = match &config.work_root {
        Some(root) => tempfile::Builder::new().prefix("sluice-").tempdir_in(root),
        None => tempfile::Builder::new().prefix("sluice-").tempdir(),
    }
    .map_err(|e| bundle_error(format!("creating a work folder: {e}")))?;

    let bundle = io
        .fetch_bundle(&payload.internal_bucket, &payload.s3_location)
        .await
        .map_err(|cause| WorkerError::Fetch {
            run_id: payload.run_id.to_string(),
            order_num: payload.order_num.to_string(),
            cause,
        })?;
    let dest = work.path().to_owned();
    let limits = config.limits;
    let (manifest, ciphertext) = tokio::task::spawn_blocking(move || {
        extract(&bundle, &dest, CODE_DIR, limits)?;
        let manifest = read_entry(&bundle, MANIFEST_FILE, MAX_SMALL_FILE)?;
        let ciphertext = read_entry(&bundle, ENV_FILE, MAX_SMALL_FILE)?;
        Ok::<_, crate::extract::ExtractError>((manifest, ciphertext))
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
    let callback_url = payload
        .callback_url
        .clone()
        .unwrap_or_else(|| manifest.callback_url.clone());

    let started_ms = now_ms();
    let mut result =
        match prepare_and_run(payload, io, config, &manifest, ciphertext, work.path()).await {
            Ok(Some(result)) => result,
            Ok(None) => return Ok(WorkerReport::AlreadyClaimed),
            Err(reason) => {
                tracing::error!(%reason, "order could not run");
                let mut doc = ResultDoc::new(OrderStatus::Failed, format!("==> {reason}\n"));
                doc.reason = Some(reason);
                doc
            }
        };
    result.attempt = Some(payload.attempt.clone());
    result.started_at = Some(format_timestamp(started_ms));
    result.finished_at = Some(format_timestamp(now_ms()));
    let body = serde_json::to_vec(&result).expect("results serialize");
    match io.call_back(&callback_url, body).await {
        Ok(()) => Ok(WorkerReport::Reported(result)),
        Err(error) => {
            tracing::error!(run_id = %payload.run_id, order_num = %payload.order_num, %error, "callback failed");
            Ok(WorkerReport::CallbackFailed(result, error))
        }
    }
}

/// Decrypts, claims and runs; `Ok(None)` when the attempt was claimed by someone else,
/// `Err(reason)` for a failure the result should explain.
async fn prepare_and_run(
    payload: &DispatchPayload,
    io: &dyn WorkerIo,
    config: &WorkerConfig,
    manifest: &OrderManifest,
    ciphertext: Vec<u8>,
    work: &Path,
) -> Result<Option<ResultDoc>, String> {
    let key = io
        .fetch_key(&payload.key_path)
        .await
        .map_err(|e| format!("fetching the order's key: {e}"))?;
    let secrets = tokio::task::spawn_blocking(move || decrypt_env(&ciphertext, &key))
        .await
        .map_err(|e| e.to_string())??;

    let claim = Claim {
        attempt: payload.attempt.clone(),
        claimed_at_ms: now_ms(),
    };
    if !io
        .claim(&payload.run_id, payload.order_num, &claim)
        .await
        .map_err(|e| format!("claiming the attempt: {e}"))?
    {
        tracing::warn!("attempt already claimed by another worker: not running it again");
        return Ok(None);
    }

    let deadline = Instant::now() + Duration::from_secs(manifest.timeout);
    let log = LogSink::create(work).map_err(|e| format!("creating the log spool: {e}"))?;
    let (status, exit_code, reason) = match &manifest.task {
        Task::Cmds(cmds) => {
            let env = order_env(config, manifest, &secrets);
            let order = ShellOrder {
                cmds,
                env: &env,
                cwd: &work.join(CODE_DIR),
                deadline,
            };
            match run_cmds(&order, &log, config.shell).await {
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
                ShellOutcome::TimedOut { cmd_index } => (
                    OrderStatus::TimedOut,
                    None,
                    Some(format!(
                        "timed out after {} s in command {}",
                        manifest.timeout,
                        cmd_index + 1
                    )),
                ),
                ShellOutcome::SpawnFailed { reason, .. } => {
                    (OrderStatus::Failed, None, Some(reason))
                }
            }
        }
        Task::Wasm(_) => {
            let reason =
                "wasm orders need the WASI runner, which this worker does not have yet".to_owned();
            log.note(&reason).await;
            (OrderStatus::Failed, None, Some(reason))
        }
    };
    let summary = log
        .finish()
        .await
        .map_err(|e| format!("writing the log: {e}"))?;
    let mut doc = ResultDoc::new(status, summary.tail);
    doc.exit_code = exit_code;
    doc.reason = reason;
    doc.log_bytes = summary.bytes;
    doc.log_truncated = summary.truncated;
    match io.store_log(&manifest.log_key, summary.spool.path()).await {
        Ok(()) => doc.log_key = Some(manifest.log_key.clone()),
        Err(error) => {
            tracing::warn!(%error, "the full log could not be stored; the result keeps its tail")
        }
    }
    Ok(Some(doc))
}

/// The complete environment of the order's commands: the minimal host variables, then the
/// order's own (decrypted) variables, then Sluice's. Nothing else of the host.
fn order_env(
    config: &WorkerConfig,
    manifest: &OrderManifest,
    secrets: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = config.host_env.iter().cloned().collect();
    env.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    let timeout = manifest.timeout.to_string();
    let sluice = [
        ("SLUICE_RUN_ID", manifest.run_id.to_string()),
        ("SLUICE_ORDER_NUM", manifest.order_num.to_string()),
        ("SLUICE_ORDER_NAME", manifest.order_name.clone()),
        ("SLUICE_TRACE_ID", manifest.trace_id.to_string()),
        ("SLUICE_FLOW_ID", manifest.flow_id.clone()),
        ("SLUICE_TIMEOUT", timeout.clone()),
        ("TIMEOUT", timeout),
    ];
    env.extend(sluice.into_iter().map(|(k, v)| (k.to_owned(), v)));
    env.into_iter().collect()
}
