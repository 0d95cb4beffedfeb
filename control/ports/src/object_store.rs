//! Object storage: S3 buckets on AWS, a directory locally.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sluice_contract::dispatch::PinnedRange;

use crate::StoreError;

/// One bucket of objects addressed by `/`-separated keys.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// The bucket's name (the local store's folder name).
    fn bucket(&self) -> &str;

    /// Reads a whole object.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is no object at `key`.
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;

    /// Reads at most the first `max_bytes + 1` bytes of an object (a ranged read), so that
    /// a caller can tell an object larger than `max_bytes` without loading it: for objects
    /// that someone else wrote (a worker's result or claim), which may be of any size.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is no object at `key`.
    async fn get_prefix(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StoreError>;

    /// Writes an object atomically: readers see the old object or the whole new one, never a
    /// part. Replaces any existing object.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;

    /// Writes an object as [`ObjectStore::put`] does; answers its entity tag (S3's `ETag`),
    /// which a ranged read of it pins ([`Presigned::GetRange`]).
    async fn put_tagged(&self, key: &str, bytes: Vec<u8>) -> Result<String, StoreError>;

    /// Writes an object only if none exists at `key` (S3's `If-None-Match: *`). Atomic.
    ///
    /// # Errors
    ///
    /// [`StoreError::ConditionFailed`] when an object already exists.
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;

    /// Uploads a local file as an object, streaming it (for logs of any size). Atomic.
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError>;

    /// The size of the object at `key`, or `None` when there is none.
    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError>;

    /// Every key under `prefix`, in lexicographic order (all pages).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// How many keys one listing request returns at most: listing `n` keys costs about
    /// `n / keys_per_listing` requests, each costing about what reading one object does
    /// (S3: 1000; a folder, where every key is a file to visit: 1). A caller that could
    /// instead read the few objects it is after picks the cheaper with it.
    fn keys_per_listing(&self) -> usize;

    /// Deletes the object at `key`; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// The URL users are given for an object (`s3://bucket/key`, or `file://` locally).
    fn object_url(&self, key: &str) -> String;

    /// A URL that lets its holder do `operation` on the one object at `key` until `expiry`
    /// has passed: what a worker, which holds no credential, is handed.
    async fn presign(
        &self,
        operation: Presigned,
        key: &str,
        expiry: Duration,
    ) -> Result<String, StoreError>;
}

/// The operation a presigned URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presigned {
    /// Reading the object (a bounded read sends a `Range`).
    Get,
    /// Reading these bytes of the object's version and no others: the request must carry
    /// this `Range` and `If-Range`, and the URL is signed with both, so its holder cannot
    /// widen it.
    GetRange(PinnedRange),
    /// Writing the object, replacing what is there.
    Put,
    /// Writing the object only if none is there: the request must carry `If-None-Match: *`,
    /// and the URL is signed with it, so its holder cannot drop the condition.
    PutIfAbsent,
    /// Deleting the object.
    Delete,
}

impl Presigned {
    /// The S3 operation's name, for messages.
    pub fn operation(&self) -> &'static str {
        match self {
            Presigned::Get | Presigned::GetRange(_) => "GetObject",
            Presigned::Put | Presigned::PutIfAbsent => "PutObject",
            Presigned::Delete => "DeleteObject",
        }
    }
}
