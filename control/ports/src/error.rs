//! Errors of every backend behind the ports.
//!
//! One [`StoreError`] for every backend (object_store's rule): the outcomes a caller acts on
//! (`NotFound`, `ConditionFailed`) are variants of their own and carry the key or row, so
//! the orchestrator treats a failed conditional write the same on SQLite and DynamoDB.
//!
//! Every error also has an [`ErrorKind`]: whether calling again later may succeed. A pass of
//! the orchestrator retries transient failures (throttling, 5xx, time-outs, a folder made
//! unwritable for a while) and a dispatch that failed transiently is started again with the
//! same attempt; only a permanent failure becomes an outcome (an order `dispatch_failed`).

/// Whether a failed call may succeed when made again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling, a 5xx, a time-out, a connection reset, a local disk full or unwritable
    /// for a while: call again later (with backoff).
    Transient,
    /// The call will fail the same way again (a missing resource, a refused permission, bad
    /// input): act on it.
    Permanent,
}

/// A storage, table or key-store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object, row or key does not exist.
    #[error("{key} not found")]
    NotFound {
        /// Which key or row.
        key: String,
    },
    /// A conditional write found the item not in the expected state.
    #[error("condition failed on {what}: {detail}")]
    ConditionFailed {
        /// Which key or row.
        what: String,
        /// The condition that did not hold.
        detail: String,
    },
    /// A local file operation failed.
    #[error("{what}: {cause}")]
    Io {
        /// The operation and path.
        what: String,
        /// The cause.
        #[source]
        cause: std::io::Error,
    },
    /// The backend is unavailable for now (throttling, 5xx, time-out, connection reset):
    /// the same call may succeed later. A conditional write that failed this way may have
    /// been applied: callers re-read before concluding anything.
    #[error("{what}: {message} (transient)")]
    Unavailable {
        /// The operation and key.
        what: String,
        /// The backend's message.
        message: String,
    },
    /// The backend refused the caller's credentials for the operation (AccessDenied): the
    /// deployment does not grant it, so asking again will not help.
    #[error("{what}: access denied: {message}")]
    Denied {
        /// The operation and key.
        what: String,
        /// The backend's message.
        message: String,
    },
    /// The backend refused or failed the operation.
    #[error("{what}: {message}")]
    Backend {
        /// The operation and key.
        what: String,
        /// The backend's message.
        message: String,
    },
}

impl StoreError {
    /// Builds an [`StoreError::Io`] naming the operation and path.
    pub fn io(what: impl Into<String>, cause: std::io::Error) -> Self {
        StoreError::Io {
            what: what.into(),
            cause,
        }
    }

    /// Whether this is a failed conditional write.
    pub fn is_condition_failed(&self) -> bool {
        matches!(self, StoreError::ConditionFailed { .. })
    }

    /// Whether this says the item does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether the backend refused the caller's credentials.
    pub fn is_denied(&self) -> bool {
        matches!(self, StoreError::Denied { .. })
    }

    /// Whether the same call may succeed later.
    ///
    /// A local file operation is transient unless its error says the request itself is
    /// wrong: a folder made unwritable, a full disk or a lost mount heal without Sluice.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Unavailable { .. } => ErrorKind::Transient,
            StoreError::Io { cause, .. } => match cause.kind() {
                std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::Unsupported
                | std::io::ErrorKind::InvalidFilename => ErrorKind::Permanent,
                _ => ErrorKind::Transient,
            },
            StoreError::NotFound { .. }
            | StoreError::ConditionFailed { .. }
            | StoreError::Denied { .. }
            | StoreError::Backend { .. } => ErrorKind::Permanent,
        }
    }

    /// Whether the same call may succeed later (see [`StoreError::kind`]).
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}
