//! The worker host wired to the local backends: the launcher the local dispatcher runs.
//!
//! The worker reads its bundle and key from the state folder and writes its claim, log and
//! result through the same directory store as the engine, so a result written here fires the
//! event bus exactly as a presigned PUT to S3 fires an S3 notification on AWS.

use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use sluice_engine::local::{DirStore, FileKeyStore, Launcher};
use sluice_engine::{KeyStore, ObjectStore};
use sluice_worker::store_io::{Callback, StoreIo};
use sluice_worker::{Delivery, IoError, WorkerConfig, WorkerReport, run_order};

use crate::sentinel::Sentinel;

/// Calls back by writing the result into the local store (a `file://` URL of it), which
/// fires the event bus as an S3 notification would; only if the attempt has no result yet,
/// as on AWS (see `sluice_aws::callback`).
#[derive(Debug, Clone)]
struct LocalCallback {
    internal: Arc<DirStore>,
}

#[async_trait]
impl Callback for LocalCallback {
    async fn put(&self, url: &str, body: Vec<u8>) -> Result<Delivery, IoError> {
        let key = self.internal.key_for_url(url).ok_or_else(|| {
            IoError::permanent(
                format!("calling back {url}"),
                "not a URL of the local store",
            )
        })?;
        match self.internal.put_if_absent(&key, body).await {
            Ok(()) => Ok(Delivery::Stored),
            Err(e) if e.is_condition_failed() => Ok(Delivery::AlreadyThere),
            Err(e) => Err(IoError {
                what: format!("calling back {key}"),
                message: e.to_string(),
                transient: e.is_transient(),
            }),
        }
    }
}

/// The launcher for [`sluice_engine::local::LocalRuntime::start`].
/// Each worker first tells the `sentinel` its run, so that its processes die with `sluice`.
pub fn launcher(
    internal: &Arc<DirStore>,
    keys: &Arc<FileKeyStore>,
    config: WorkerConfig,
    sentinel: Arc<Sentinel>,
) -> Launcher {
    let callback = LocalCallback {
        internal: Arc::clone(internal),
    };
    let io = Arc::new(StoreIo::new(
        Arc::clone(internal) as Arc<dyn ObjectStore>,
        Arc::clone(keys) as Arc<dyn KeyStore>,
        Arc::new(callback),
    ));
    let config = Arc::new(config);
    Arc::new(move |payload| {
        let io = Arc::clone(&io);
        let config = Arc::clone(&config);
        sentinel.watch(payload.run_id.as_str());
        async move {
            if let WorkerReport::CallbackFailed(_, error) =
                run_order(&payload, io.as_ref(), &config).await
            {
                tracing::error!(run_id = %payload.run_id, order_num = %payload.order_num, %error, "worker could not report");
            }
        }
        .boxed()
    })
}
