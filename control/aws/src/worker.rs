//! The worker on AWS: one dispatch payload run by the worker host with S3 (bundle, claim,
//! log), SSM (the order's key) and an HTTP PUT to the presigned callback URL. The Lambda
//! handler and the CodeBuild entrypoint both end here.

use std::sync::Arc;

use sluice_contract::dispatch::DispatchPayload;
use sluice_worker::store_io::StoreIo;
use sluice_worker::{WorkerConfig, WorkerError, WorkerReport, run_order};

use crate::callback::HttpCallback;
use crate::calls::CallCounter;
use crate::clients::Clients;
use crate::keys::SsmKeyStore;
use crate::s3::S3Store;

/// Runs one attempt.
///
/// # Errors
///
/// [`WorkerError`] when the bundle cannot be read and there is no callback URL to report
/// it to (the watchdog then times the order out).
pub async fn run_payload(
    payload: &DispatchPayload,
    clients: &Clients,
    callback: &HttpCallback,
    config: &WorkerConfig,
    calls: &CallCounter,
) -> Result<WorkerReport, WorkerError> {
    let io = StoreIo::new(
        Arc::new(S3Store::new(
            clients.s3.clone(),
            &payload.internal_bucket,
            calls.clone(),
        )),
        // Keys are fetched by their full path; the prefix only matters for writing.
        Arc::new(SsmKeyStore::new(clients.ssm.clone(), "/", calls.clone())),
        Arc::new(callback.clone()),
    );
    run_order(payload, &io, config).await
}
