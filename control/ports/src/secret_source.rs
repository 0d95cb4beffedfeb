//! Where credentials are fetched from: SSM and Secrets Manager on AWS, a secrets file
//! locally (`sluice run --secrets`).
//!
//! An adapter only fetches the raw value; how a value becomes variables is the contract's
//! [`sluice_contract::credentials::expand`], the same for every adapter.

use std::fmt::Debug;

use async_trait::async_trait;
use sluice_contract::credentials::SecretLocation;

use crate::StoreError;

/// A source of credential values.
#[async_trait]
pub trait SecretSource: Send + Sync + Debug {
    /// The value stored at `location` (an SSM parameter decrypted, a secret's string).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] naming the location when nothing is stored there (the job
    /// is at fault); [`StoreError::Backend`] when the store fails or refuses. Neither
    /// message may quote the value.
    async fn fetch(&self, location: &SecretLocation) -> Result<String, StoreError>;
}
