//! One way to turn an SDK failure into the engine's [`StoreError`], for every adapter: the
//! operation and key, and the SDK's whole error chain (`DisplayErrorContext`), so a
//! throttling or permission error says what was refused and why.

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use sluice_engine::error::StoreError;

/// A backend failure of the operation described by `what`.
pub(crate) fn backend<E, R>(what: impl Into<String>, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Backend {
        what: what.into(),
        message: DisplayErrorContext(&error).to_string(),
    }
}
