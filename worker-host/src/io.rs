//! [`WorkerIo`]: where a worker finds its bundle and key and sends its log and result.
//!
//! On AWS: S3 GETs, an SSM parameter, S3 conditional PUT for the claim, presigned PUTs for
//! the log and the result. Locally: the directory store and key files, so a result written by
//! the local callback fires the event bus exactly as an S3 notification would.

use std::path::Path;

use async_trait::async_trait;
use sluice_contract::dispatch::Claim;
use sluice_contract::{OrderNum, RunId};

/// An IO operation of the worker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct IoError {
    /// The operation and the key, path or URL.
    pub what: String,
    /// The cause.
    pub message: String,
    /// Whether the same call may succeed later (throttling, a 5xx, a time-out, a reset
    /// connection, a folder unwritable for a while): the worker then tries again.
    pub transient: bool,
}

impl IoError {
    /// A failure that will not go away by trying again.
    pub fn permanent(what: impl Into<String>, message: impl Into<String>) -> Self {
        IoError {
            what: what.into(),
            message: message.into(),
            transient: false,
        }
    }

    /// A failure that may go away (see [`IoError::transient`]).
    pub fn transient(what: impl Into<String>, message: impl Into<String>) -> Self {
        IoError {
            what: what.into(),
            message: message.into(),
            transient: true,
        }
    }
}

/// What became of a result called back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It is the attempt's result.
    Stored,
    /// The attempt already had a result (the watchdog's time-out, or this worker's own
    /// earlier PUT whose answer was lost): that one stands.
    AlreadyThere,
}

/// The worker's view of the outside world.
#[async_trait]
pub trait WorkerIo: Send + Sync {
    /// The bundle at `key` in `bucket`.
    async fn fetch_bundle(&self, bucket: &str, key: &str) -> Result<Vec<u8>, IoError>;

    /// The order's private age key.
    async fn fetch_key(&self, key_path: &str) -> Result<String, IoError>;

    /// Records `claim` for the attempt if nobody has; `Ok(false)` when it was claimed before
    /// (the attempt is already running elsewhere and must not run again).
    async fn claim(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        claim: &Claim,
    ) -> Result<bool, IoError>;

    /// Stores the full log file at `log_key`.
    async fn store_log(&self, log_key: &str, path: &Path) -> Result<(), IoError>;

    /// PUTs `body` to the callback `url`, if the attempt has no result yet.
    async fn call_back(&self, url: &str, body: Vec<u8>) -> Result<Delivery, IoError>;
}
