//! The worker host wired to the local backends: the launcher the local dispatcher runs.
//!
//! The worker reads its bundle and key from the state folder and writes its claim, log and
//! result through the same directory store as the engine, so a result written here fires the
//! event bus exactly as a presigned PUT to S3 fires an S3 notification on AWS.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use sluice_contract::dispatch::Claim;
use sluice_contract::{OrderNum, RunId, keys};
use sluice_engine::local::{DirStore, FileKeyStore, Launcher};
use sluice_engine::{KeyStore, ObjectStore, StoreError};
use sluice_worker::{IoError, WorkerConfig, WorkerIo, WorkerReport, run_order};

/// [`WorkerIo`] over the local state folder.
#[derive(Debug, Clone)]
pub struct LocalWorkerIo {
    internal: Arc<DirStore>,
    keys: Arc<FileKeyStore>,
}

fn io_error(what: String) -> impl FnOnce(StoreError) -> IoError {
    move |e| IoError {
        what,
        message: e.to_string(),
    }
}

#[async_trait]
impl WorkerIo for LocalWorkerIo {
    async fn fetch_bundle(&self, bucket: &str, key: &str) -> Result<Vec<u8>, IoError> {
        if bucket != self.internal.bucket() {
            return Err(IoError {
                what: format!("fetching {bucket}/{key}"),
                message: format!("the local engine has no bucket {bucket:?}"),
            });
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
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(io_error(format!("claiming {key}"))(e)),
        }
    }

    async fn store_log(&self, log_key: &str, path: &Path) -> Result<(), IoError> {
        self.internal
            .put_file(log_key, path)
            .await
            .map_err(io_error(format!("storing {log_key}")))
    }

    async fn call_back(&self, url: &str, body: Vec<u8>) -> Result<(), IoError> {
        let key = self.internal.key_for_url(url).ok_or_else(|| IoError {
            what: format!("calling back {url}"),
            message: "not a URL of the local store".to_owned(),
        })?;
        self.internal
            .put(&key, body)
            .await
            .map_err(io_error(format!("calling back {key}")))
    }
}

/// The launcher for [`sluice_engine::local::LocalRuntime::start`].
pub fn launcher(
    internal: &Arc<DirStore>,
    keys: &Arc<FileKeyStore>,
    config: WorkerConfig,
) -> Launcher {
    let io = Arc::new(LocalWorkerIo {
        internal: Arc::clone(internal),
        keys: Arc::clone(keys),
    });
    let config = Arc::new(config);
    Arc::new(move |payload| {
        let io = Arc::clone(&io);
        let config = Arc::clone(&config);
        async move {
            match run_order(&payload, io.as_ref(), &config).await {
                Ok(WorkerReport::Reported(_)) | Ok(WorkerReport::AlreadyClaimed) => {}
                Ok(WorkerReport::CallbackFailed(_, error)) => {
                    tracing::error!(run_id = %payload.run_id, order_num = %payload.order_num, %error, "worker could not report");
                }
                Err(error) => {
                    tracing::error!(run_id = %payload.run_id, order_num = %payload.order_num, %error, "worker failed before it could report");
                }
            }
        }
        .boxed()
    })
}
