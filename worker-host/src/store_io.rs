//! [`StoreIo`]: the [`WorkerIo`] of a worker whose bundles, claims and logs live in an
//! [`ObjectStore`] and whose keys in a [`KeyStore`] — the engine's own ports, so the local
//! engine (directory store, key files) and AWS (S3, SSM) share one implementation and
//! differ only in how a result is called back ([`Callback`]: a write into the local store,
//! or an HTTP PUT to a presigned URL).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_contract::dispatch::Claim;
use sluice_contract::{OrderNum, RunId, keys};
use sluice_engine::{KeyStore, ObjectStore, StoreError};

use crate::io::{Delivery, IoError, WorkerIo};

/// Most bytes of a claim read back (a claim is a few dozen; anyone may have written it).
const MAX_CLAIM_BYTES: u64 = 4096;

/// How a result reaches its callback URL.
#[async_trait]
pub trait Callback: Send + Sync + std::fmt::Debug {
    /// PUTs `body` to `url`, if nothing is there yet.
    async fn put(&self, url: &str, body: Vec<u8>) -> Result<Delivery, IoError>;
}

/// A worker's IO over the engine's ports.
#[derive(Debug, Clone)]
pub struct StoreIo {
    internal: Arc<dyn ObjectStore>,
    keys: Arc<dyn KeyStore>,
    callback: Arc<dyn Callback>,
}

fn io_error(what: String) -> impl FnOnce(StoreError) -> IoError {
    move |e| IoError {
        what,
        message: e.to_string(),
        transient: e.is_transient(),
    }
}

impl StoreIo {
    /// Bundles, claims and logs in `internal`, keys in `keys`, results through `callback`.
    pub fn new(
        internal: Arc<dyn ObjectStore>,
        keys: Arc<dyn KeyStore>,
        callback: Arc<dyn Callback>,
    ) -> Self {
        StoreIo {
            internal,
            keys,
            callback,
        }
    }
}

#[async_trait]
impl WorkerIo for StoreIo {
    async fn fetch_bundle(&self, bucket: &str, key: &str) -> Result<Vec<u8>, IoError> {
        if bucket != self.internal.bucket() {
            return Err(IoError::permanent(
                format!("fetching {bucket}/{key}"),
                format!(
                    "this worker reads bundles from bucket {:?}",
                    self.internal.bucket()
                ),
            ));
        }
        self.internal
            .get(key)
            .await
            .map_err(io_error(format!("fetching {key}")))
    }

    async fn fetch_key(&self, key_path: &str) -> Result<String, IoError> {
        self.keys
            .get_key(key_path)
            .await
            .map_err(io_error(format!("fetching key {key_path}")))
    }

    async fn claim(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        claim: &Claim,
    ) -> Result<bool, IoError> {
        let key = keys::claim(run_id, order_num, &claim.attempt);
        let body = serde_json::to_vec(claim).expect("claims serialize");
        match self.internal.put_if_absent(&key, body).await {
            Ok(()) => Ok(true),
            // Someone's claim is there: ours when a put whose answer was lost was retried.
            Err(StoreError::ConditionFailed { .. }) => {
                let stored = self
                    .internal
                    .get_prefix(&key, MAX_CLAIM_BYTES)
                    .await
                    .map_err(io_error(format!("reading the claim {key}")))?;
                Ok(serde_json::from_slice::<Claim>(&stored).is_ok_and(|found| found == *claim))
            }
            Err(e) => Err(io_error(format!("claiming {key}"))(e)),
        }
    }

    async fn store_log(&self, log_key: &str, path: &Path) -> Result<(), IoError> {
        self.internal
            .put_file(log_key, path)
            .await
            .map_err(io_error(format!("storing {log_key}")))
    }

    async fn call_back(&self, url: &str, body: Vec<u8>) -> Result<Delivery, IoError> {
        self.callback.put(url, body).await
    }
}
