//! Where orders' code zips named by URL come from: `s3://bucket/key.zip` on AWS. The local
//! engine reads its zips from paths and has none.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::StoreError;

/// A source of code zips by location.
#[async_trait]
pub trait CodeArchives: Send + Sync + Debug {
    /// The bytes of the zip at `location` (as written in the job's `s3_location`).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] naming the location when there is nothing there (the job is
    /// at fault); [`StoreError::Backend`] when the location is malformed or the store fails.
    async fn fetch_zip(&self, location: &str) -> Result<Vec<u8>, StoreError>;
}
