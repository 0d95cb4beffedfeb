//! [`WorkerIo`]: how a worker reaches the objects of its attempt — only through the URLs
//! its dispatch carries ([`DispatchPayload`](sluice_contract::dispatch::DispatchPayload)),
//! never with credentials of its own.
//!
//! On AWS: HTTP requests to presigned S3 URLs (a conditional PUT for the claim and the
//! result). Locally: the `file://` URLs of the directory store, written through the store, so
//! a result fires the event bus exactly as an S3 notification would.

use std::path::Path;

use async_trait::async_trait;
use sluice_contract::dispatch::{Capability, PinnedRange};

/// An IO operation of the worker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct IoError {
    /// The operation and the key, path or URL.
    pub what: String,
    /// The cause.
    pub message: String,
    /// Whether the same call may succeed later (throttling, a 5xx, a time-out, a reset
    /// connection, a folder unwritable for a while): the worker then tries again.
    pub transient: bool,
}

impl IoError {
    /// A failure that will not go away by trying again.
    pub fn permanent(what: impl Into<String>, message: impl Into<String>) -> Self {
        IoError {
            what: what.into(),
            message: message.into(),
            transient: false,
        }
    }

    /// A failure that may go away (see [`IoError::transient`]).
    pub fn transient(what: impl Into<String>, message: impl Into<String>) -> Self {
        IoError {
            what: what.into(),
            message: message.into(),
            transient: true,
        }
    }
}

/// What became of a put-if-absent (a claim, a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It is stored.
    Stored,
    /// An object was there already (for a result: the watchdog's time-out, or this
    /// worker's own earlier PUT whose answer was lost): that one stands.
    AlreadyThere,
}

/// The worker's view of the outside world: reads and writes of objects by URL.
#[async_trait]
pub trait WorkerIo: Send + Sync {
    /// The object behind `url`, if it holds at most `max_bytes` (a ranged read: a larger
    /// object is an error, and is never loaded whole).
    async fn get(&self, url: &Capability, max_bytes: u64) -> Result<Vec<u8>, IoError>;

    /// Exactly the bytes `range` of the object behind `url` (a URL signed for that range:
    /// the request asks for it and no other); fewer or more is an error.
    async fn get_range(&self, url: &Capability, range: &PinnedRange) -> Result<Vec<u8>, IoError>;

    /// PUTs `body` to `url` unless an object is there already (`If-None-Match: *`).
    async fn put_if_absent(&self, url: &Capability, body: Vec<u8>) -> Result<Delivery, IoError>;

    /// PUTs `body` to `url` (replacing what is there): a log short enough to be in memory.
    async fn put(&self, url: &Capability, body: Vec<u8>) -> Result<(), IoError>;

    /// PUTs the file at `path` to `url` (replacing what is there), streaming it.
    async fn put_file(&self, url: &Capability, path: &Path) -> Result<(), IoError>;
}

/// The bytes `range` of `object`, when it has them all.
pub fn range_of(object: &[u8], range: &PinnedRange) -> Option<Vec<u8>> {
    let start = usize::try_from(range.start).ok()?;
    let end = start.checked_add(usize::try_from(range.len).ok()?)?;
    object.get(start..end).map(<[u8]>::to_vec)
}

/// The worker's IO on plain file paths (a URL is a path): for tests and benchmarks of what
/// a worker does with its URLs, without a store behind them.
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy, Default)]
pub struct FileIo;

#[cfg(feature = "test-support")]
#[async_trait]
impl WorkerIo for FileIo {
    async fn get(&self, url: &Capability, _max_bytes: u64) -> Result<Vec<u8>, IoError> {
        std::fs::read(url.expose()).map_err(|e| IoError::permanent(url.expose(), e.to_string()))
    }

    async fn get_range(&self, url: &Capability, range: &PinnedRange) -> Result<Vec<u8>, IoError> {
        let bytes = self.get(url, u64::MAX).await?;
        range_of(&bytes, range).ok_or_else(|| {
            IoError::permanent(
                url.expose(),
                format!("it has no bytes {}", range.range_header()),
            )
        })
    }

    async fn put_if_absent(&self, url: &Capability, body: Vec<u8>) -> Result<Delivery, IoError> {
        use std::io::Write as _;
        match std::fs::File::create_new(url.expose()) {
            Ok(mut file) => file
                .write_all(&body)
                .map(|()| Delivery::Stored)
                .map_err(|e| IoError::permanent(url.expose(), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Delivery::AlreadyThere),
            Err(e) => Err(IoError::permanent(url.expose(), e.to_string())),
        }
    }

    async fn put(&self, url: &Capability, body: Vec<u8>) -> Result<(), IoError> {
        std::fs::write(url.expose(), body)
            .map_err(|e| IoError::permanent(url.expose(), e.to_string()))
    }

    async fn put_file(&self, url: &Capability, path: &Path) -> Result<(), IoError> {
        std::fs::copy(path, url.expose())
            .map(drop)
            .map_err(|e| IoError::permanent(url.expose(), e.to_string()))
    }
}
