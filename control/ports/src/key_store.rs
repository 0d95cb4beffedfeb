//! Where a run's private keys are kept (its run key, tickets' keys), and the deployment's
//! one key that outlives runs (kept jobs'): SSM SecureString on AWS, 0600 files locally.

use std::fmt::Debug;

use async_trait::async_trait;
use sluice_contract::{OrderNum, RunId};

use crate::StoreError;

/// A store of private keys, by run.
#[async_trait]
pub trait KeyStore: Send + Sync + Debug {
    /// Stores a private key of `run_id` (its run key under order `0000`) and returns the
    /// path [`KeyStore::get_key`] reads it from (the control plane's; no worker reads it).
    async fn put_key(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        secret_key: &str,
    ) -> Result<String, StoreError>;

    /// Fetches a key by the path [`KeyStore::put_key`] returned.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when the key is gone (deleted at finalize).
    async fn get_key(&self, key_path: &str) -> Result<String, StoreError>;

    /// Deletes every key of a run; succeeds when they are already gone.
    async fn delete_run_keys(&self, run_id: &RunId) -> Result<(), StoreError>;

    /// Deletes every key of a run, which the caller knows are exactly `key_paths` (paths
    /// [`KeyStore::put_key`] returned for `run_id`): where [`KeyStore::delete_run_keys`]
    /// lists them first (SSM), this does not. Succeeds when they are already gone.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when a path is not one of `run_id`'s keys (nothing deleted).
    async fn delete_keys(&self, run_id: &RunId, key_paths: &[String]) -> Result<(), StoreError>;

    /// The deployment's key kept jobs are encrypted to (`sluice rerun`): `made` is stored
    /// unless a key is there already (the first to store one wins, as if absent), and the
    /// key stored is answered. No run's: finalize never deletes it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the key can be neither read nor stored.
    async fn jobs_key(&self, made: &str) -> Result<String, StoreError>;
}
