//! The worker host wired to the local backends: the launcher the local dispatcher runs.
//!
//! As on AWS the worker holds nothing but its dispatch: the `file://` URLs the local engine
//! hands out name objects of the state folder's store, and the worker reads its bundle and
//! writes its claim, log and result through that same store, so a result written here fires
//! the event bus exactly as a presigned PUT to S3 fires an S3 notification on AWS.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use sluice_contract::dispatch::{Capability, PinnedRange};
use sluice_engine::local::{DirStore, Launcher};
use sluice_engine::{ObjectStore, StoreError};
use sluice_worker::io::range_of;
use sluice_worker::{Delivery, IoError, WorkerConfig, WorkerIo, WorkerReport, run_order};

use crate::sentinel::Sentinel;

/// A worker's reach on one machine: the local store, by the `file://` URLs of its objects.
#[derive(Debug, Clone)]
struct LocalIo {
    internal: Arc<DirStore>,
}

impl LocalIo {
    /// The store key `url` names (any other URL is refused).
    fn key_of(&self, operation: &str, url: &Capability) -> Result<String, IoError> {
        self.internal.key_for_url(url.expose()).ok_or_else(|| {
            IoError::permanent(
                format!("{operation} {}", url.shown()),
                "not a URL of the local store",
            )
        })
    }
}

fn failed(operation: &str, key: &str, error: StoreError) -> IoError {
    IoError {
        what: format!("{operation} {key}"),
        message: error.to_string(),
        transient: error.is_transient(),
    }
}

#[async_trait]
impl WorkerIo for LocalIo {
    async fn get(&self, url: &Capability, max_bytes: u64) -> Result<Vec<u8>, IoError> {
        let key = self.key_of("reading", url)?;
        let bytes = (self.internal.get_prefix(&key, max_bytes).await)
            .map_err(|e| failed("reading", &key, e))?;
        if bytes.len() as u64 > max_bytes {
            return Err(IoError::permanent(
                format!("reading {key}"),
                format!("it is larger than {max_bytes} bytes"),
            ));
        }
        Ok(bytes)
    }

    async fn get_range(&self, url: &Capability, range: &PinnedRange) -> Result<Vec<u8>, IoError> {
        let key = self.key_of("reading", url)?;
        let end = range.start.saturating_add(range.len);
        let bytes =
            (self.internal.get_prefix(&key, end).await).map_err(|e| failed("reading", &key, e))?;
        range_of(&bytes, range).ok_or_else(|| {
            IoError::permanent(
                format!("reading {key}"),
                format!("it has no bytes {}", range.range_header()),
            )
        })
    }

    async fn put_if_absent(&self, url: &Capability, body: Vec<u8>) -> Result<Delivery, IoError> {
        let key = self.key_of("writing", url)?;
        match self.internal.put_if_absent(&key, body).await {
            Ok(()) => Ok(Delivery::Stored),
            Err(e) if e.is_condition_failed() => Ok(Delivery::AlreadyThere),
            Err(e) => Err(failed("writing", &key, e)),
        }
    }

    async fn put(&self, url: &Capability, body: Vec<u8>) -> Result<(), IoError> {
        let key = self.key_of("storing", url)?;
        (self.internal.put(&key, body).await).map_err(|e| failed("storing", &key, e))
    }

    async fn put_file(&self, url: &Capability, path: &Path) -> Result<(), IoError> {
        let key = self.key_of("storing", url)?;
        (self.internal.put_file(&key, path).await).map_err(|e| failed("storing", &key, e))
    }
}

/// The launcher for [`sluice_engine::local::LocalRuntime::start`].
/// Each worker first tells the `sentinel` its run, so that its processes die with `sluice`.
pub fn launcher(
    internal: &Arc<DirStore>,
    config: WorkerConfig,
    sentinel: Arc<Sentinel>,
) -> Launcher {
    let io = Arc::new(LocalIo {
        internal: Arc::clone(internal),
    });
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
