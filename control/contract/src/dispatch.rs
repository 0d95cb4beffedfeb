//! The payload a dispatcher hands to a worker (Lambda event, CodeBuild env, local task).

use serde::{Deserialize, Serialize};

use crate::ids::{OrderNum, RunId};

/// Everything a worker needs to find, unlock, run and report one order attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchPayload {
    /// Key of the order's bundle in the internal bucket.
    pub s3_location: String,
    /// The internal bucket (the local engine's store root name).
    pub internal_bucket: String,
    /// Where this attempt reports its result: minted at dispatch for the attempt's own
    /// result key (a presigned PUT URL on AWS), living the order's timeout and a margin.
    pub callback_url: String,
    /// The run.
    pub run_id: RunId,
    /// The order.
    pub order_num: OrderNum,
    /// The attempt id the worker claims before running anything.
    pub attempt: String,
    /// Where the order's private age key is (SSM parameter name, or a local key path).
    pub key_path: String,
}

/// The marker a worker writes (if absent) at `keys::claim` before running an attempt.
///
/// Its presence tells a retried dispatch that the attempt already runs; its time tells the
/// watchdog when the order really started (a worker may wait for a free slot first). Its
/// `worker` id, fresh for each worker, tells a worker whose conditional put was answered
/// with an error (and retried, finding a claim) whether the claim is its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The attempt claimed.
    pub attempt: String,
    /// When the worker claimed it, ms since the epoch.
    pub claimed_at_ms: u64,
    /// The claiming worker's own id.
    #[serde(default)]
    pub worker: String,
}
