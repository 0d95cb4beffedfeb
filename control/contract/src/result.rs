//! `result.json` (v1) and the done document.
//!
//! A worker (or the watchdog) writes a [`ResultDoc`]; the orchestrator reads it with
//! [`parse_result`], a tolerant reader: a missing `schema_version` means v1 and unknown fields
//! are ignored, but anything that cannot be trusted (not JSON, not a terminal status, too
//! large) is a [`MalformedResult`], which marks that order failed rather than blocking the
//! run. The [`DoneDoc`] is what a finished run publishes at its done endpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::OrderEmitted;
use crate::ids::{AttemptId, OrderNum};
use crate::job::SandboxSpec;
use crate::status::{JobStatus, OrderStatus};

/// The schema version this crate writes.
pub const SCHEMA_VERSION: &str = "v1";
/// The most log bytes a result carries (the tail of the full log).
pub const MAX_LOG_TAIL_BYTES: usize = 256 * 1024;
/// The largest result document a reader accepts: the tail (at most this once
/// JSON-escaped), the events (at most [`MAX_EVENTS`](crate::events::MAX_EVENTS) of 4 KiB each), and the other fields.
pub const MAX_RESULT_BYTES: usize = 4 * MAX_LOG_TAIL_BYTES;
/// The most bytes of an order's published outputs (the stored document) the done document
/// shows; larger ones are only at the order's `outputs_key`.
pub const MAX_DONE_OUTPUTS_BYTES: u64 = 64 * 1024;
/// The reason written for an order whose result could not be read.
pub const MALFORMED_RESULT: &str = "malformed_result";
/// The reason written for orders failed because a dependency did not succeed.
pub const DEPENDENCY_FAILED: &str = "dependency_failed";
/// The reason written for orders skipped because a dependency was skipped.
pub const DEPENDENCY_SKIPPED: &str = "dependency_skipped";
/// The reason written for orders cancelled because a dependency was (the run is stopping).
pub const DEPENDENCY_CANCELLED: &str = "dependency_cancelled";
/// The reason written for orders stopped because the job ran out of time.
pub const JOB_TIMEOUT: &str = "job_timeout";
/// The log the watchdog writes for a worker that never reported.
pub const WATCHDOG_LOG: &str = "Worker unresponsive, timed out by watchdog";

/// An order's result, as called back by its worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultDoc {
    /// `v1`; readers treat a missing version as v1.
    #[serde(default = "default_schema_version")]
    pub schema_version: String,
    /// A terminal status.
    pub status: OrderStatus,
    /// The tail of the log (at most [`MAX_LOG_TAIL_BYTES`]).
    #[serde(default)]
    pub log: String,
    /// Exit code of the last command run, when one ran to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Size of the full log in bytes.
    #[serde(default)]
    pub log_bytes: u64,
    /// Whether `log` is only the end of a longer log.
    #[serde(default)]
    pub log_truncated: bool,
    /// Where the full log was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
    /// Whether `log` is the whole log, byte for byte, and the worker stored it nowhere else
    /// (on AWS, a log the result can hold: a PUT less per order).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_in_result: bool,
    /// When the worker started the order (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the order ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The dispatch attempt this result belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptId>,
    /// Why the order ended as it did, when the status alone does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many outputs the order published: they are stored at the attempt's
    /// [`crate::keys::outputs`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outputs: u32,
    /// Events the order emitted, in order (at most [`MAX_EVENTS`](crate::events::MAX_EVENTS)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<OrderEmitted>,
    /// When its commands ran in a sandbox (`sluice run`): what it was granted (`{}` for
    /// nothing). Absent when they ran unsandboxed, and for a module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSpec>,
}

fn default_schema_version() -> String {
    SCHEMA_VERSION.to_owned()
}

impl ResultDoc {
    /// A result with only a status and a log; every other field empty.
    pub fn new(status: OrderStatus, log: impl Into<String>) -> Self {
        ResultDoc {
            schema_version: default_schema_version(),
            status,
            log: log.into(),
            exit_code: None,
            log_bytes: 0,
            log_truncated: false,
            log_key: None,
            log_in_result: false,
            started_at: None,
            finished_at: None,
            attempt: None,
            reason: None,
            outputs: 0,
            events: Vec::new(),
            sandbox: None,
        }
    }

    /// How long the order ran, when both timestamps are present and readable.
    pub fn duration_ms(&self) -> Option<u64> {
        let started = parse_timestamp(self.started_at.as_deref()?)?;
        let finished = parse_timestamp(self.finished_at.as_deref()?)?;
        Some(finished.saturating_sub(started))
    }
}

/// Why a result document cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedResult {
    /// Larger than [`MAX_RESULT_BYTES`].
    #[error("result is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a JSON result object.
    #[error("result is not a v1 result document: {0}")]
    Unreadable(String),
    /// A schema version this reader does not know.
    #[error("result has unknown schema_version {0:?}")]
    UnknownVersion(String),
    /// A status that does not end an order, or that a worker cannot report (`skipped`:
    /// only the orchestrator skips an order, which then never ran).
    #[error("result status {0} is not an outcome a worker reports")]
    NotTerminal(OrderStatus),
}

/// `text`, cut to at most `max` bytes (at least 4) at a character boundary, `…` marking
/// the cut: for what an order wrote that ends up in a reason, which a row must hold.
pub fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &text[..end]))
}

/// The most bytes of an order's reason its row keeps (a worker's reason may quote what the
/// order wrote).
pub const MAX_REASON_BYTES: usize = 4096;

/// Reads a result document tolerantly (see the module docs).
///
/// # Errors
///
/// A [`MalformedResult`] saying why the document cannot be trusted.
pub fn parse_result(bytes: &[u8]) -> Result<ResultDoc, MalformedResult> {
    if bytes.len() > MAX_RESULT_BYTES {
        return Err(MalformedResult::TooLarge {
            size: bytes.len(),
            max: MAX_RESULT_BYTES,
        });
    }
    let doc: ResultDoc =
        serde_json::from_slice(bytes).map_err(|e| MalformedResult::Unreadable(e.to_string()))?;
    if doc.schema_version != SCHEMA_VERSION && !doc.schema_version.starts_with("v1.") {
        return Err(MalformedResult::UnknownVersion(doc.schema_version));
    }
    if !doc.status.is_terminal() || !OrderStatus::Running.can_become(doc.status) {
        return Err(MalformedResult::NotTerminal(doc.status));
    }
    Ok(doc)
}

/// Counts of a finished run's orders by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneSummary {
    /// Orders that succeeded.
    #[serde(default)]
    pub succeeded: u32,
    /// Orders that failed.
    #[serde(default)]
    pub failed: u32,
    /// Orders that timed out.
    #[serde(default)]
    pub timed_out: u32,
    /// Orders cancelled when the run was stopped (absent when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cancelled: u32,
    /// Orders skipped: their condition was false, or a dependency was skipped (absent when
    /// none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u32,
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// One ended attempt of an order: a row keeps those its retries followed, and the done
/// document lists every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Its number: 1 for the first.
    pub number: u32,
    /// Its id (its claim, log and result are under it).
    pub attempt: AttemptId,
    /// How it ended.
    pub status: OrderStatus,
    /// Why, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exit code of its last command, when one ran to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When it was dispatched, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at_ms: Option<u64>,
    /// When its end was read, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// How long it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Where its log is stored, when it stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
}

/// One order's line in the done document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneOrder {
    /// The order's number.
    pub order_num: OrderNum,
    /// The order's name.
    pub order_name: String,
    /// Its final status.
    pub status: OrderStatus,
    /// Why it ended so, when known.
    #[serde(default)]
    pub reason: Option<String>,
    /// How long it ran, when it ran.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The exit code of its last command, when one ran to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Where its full log is stored, when it ran — absent when its result holds the whole
    /// log and it was stored nowhere else (on AWS, a log the result can hold byte for byte).
    /// (A worker that could not store it, or was timed out, may have stored none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
    /// The result its worker reported, when that result ended it and said where its log
    /// is: its `log` is the log's last 256 KiB — all of it when `log_key` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<String>,
    /// The outputs it published (see [`crate::outputs`]), when the document holds them: an
    /// order's outputs stored in more than [`MAX_DONE_OUTPUTS_BYTES`], and those past the
    /// run's total the document shows (4 MiB, in order number), are at `outputs_key` alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Outputs whose value holds one of the order's secrets: named, not shown (the orders
    /// that take them get them, masked in their logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withheld_outputs: Vec<String>,
    /// Where all its outputs are stored (internal bucket), when it published any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_key: Option<String>,
    /// Every attempt, in order, when it was run more than once (the last decided it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
    /// Not run in this run (`sluice rerun --failed`): it succeeded in this run, whose
    /// result, log and outputs it keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// When its commands ran in a sandbox (`sluice run`): what it was granted (`{}` for
    /// nothing). Absent when they ran unsandboxed (`--sandbox off`, a machine without user
    /// namespaces, AWS), for a module, and for an order that never ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSpec>,
}

/// What a finished run publishes at its done endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneDoc {
    /// The job's status.
    pub status: JobStatus,
    /// The run.
    pub run_id: String,
    /// The run's trace id.
    #[serde(default)]
    pub trace_id: String,
    /// The run's flow id.
    #[serde(default)]
    pub flow_id: String,
    /// Counts by status.
    #[serde(default)]
    pub summary: DoneSummary,
    /// Every order, in order.
    #[serde(default)]
    pub orders: Vec<DoneOrder>,
    /// Who cancelled the run (`sluice cancel`), when someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// The run this one runs again (`sluice rerun`), when it is a rerun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// Why the run ended without its orders deciding (`init_failed: …`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The done document's reason for a run that was accepted but never queued.
pub const INIT_FAILED: &str =
    "init_failed: the job was accepted but its orders were never queued (init did not complete)";

/// Reads a done document, ignoring fields this version does not know.
///
/// # Errors
///
/// The JSON error when the bytes are not a done document.
pub fn parse_done(bytes: &[u8]) -> Result<DoneDoc, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Formats milliseconds since the epoch as RFC 3339 with millisecond precision.
pub fn format_timestamp(epoch_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(epoch_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Reads an RFC 3339 timestamp back into milliseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_version_is_v1_and_unknown_fields_are_ignored() {
        let doc = parse_result(br#"{"status":"succeeded","log":"hi","future_field":[1]}"#).unwrap();
        assert_eq!(doc.schema_version, "v1");
        assert_eq!(doc.status, OrderStatus::Succeeded);
        assert_eq!(doc.log, "hi");
    }

    #[test]
    fn untrustworthy_results_are_malformed() {
        assert!(matches!(
            parse_result(b"not json"),
            Err(MalformedResult::Unreadable(_))
        ));
        assert!(matches!(
            parse_result(br#"{"status":"exploded"}"#),
            Err(MalformedResult::Unreadable(_))
        ));
        assert!(matches!(
            parse_result(br#"{"status":"running"}"#),
            Err(MalformedResult::NotTerminal(_))
        ));
        // A running order cannot become skipped: a result saying so would be refused by
        // every store, pass after pass.
        assert!(matches!(
            parse_result(br#"{"status":"skipped"}"#),
            Err(MalformedResult::NotTerminal(OrderStatus::Skipped))
        ));
        assert!(matches!(
            parse_result(br#"{"schema_version":"v9","status":"failed"}"#),
            Err(MalformedResult::UnknownVersion(_))
        ));
        let huge = vec![b' '; MAX_RESULT_BYTES + 1];
        assert!(matches!(
            parse_result(&huge),
            Err(MalformedResult::TooLarge { .. })
        ));
    }

    #[test]
    fn bounded_text_is_cut_at_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("abcdefghij", 8), "abcde…");
        assert_eq!(bounded("ééééé", 8), "éé…");
        assert!(bounded(&"x".repeat(100_000), MAX_REASON_BYTES).len() <= MAX_REASON_BYTES);
    }

    #[test]
    fn durations_come_from_timestamps() {
        let mut doc = ResultDoc::new(OrderStatus::Succeeded, "");
        doc.started_at = Some(format_timestamp(1_700_000_000_000));
        doc.finished_at = Some(format_timestamp(1_700_000_001_250));
        assert_eq!(doc.duration_ms(), Some(1250));
        let back = parse_result(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(back, doc);
    }
}
