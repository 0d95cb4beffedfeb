//! The one way the engine runs blocking work (SQLite, zip, age, large file IO).
//!
//! Blocking a tokio worker thread stalls every other task on it; with two cores that is half
//! the machine. Everything that may block goes through [`run_blocking`].

use crate::error::StoreError;

/// Runs `work` on tokio's blocking pool and returns its result.
///
/// # Errors
///
/// `work`'s own error, or [`StoreError::Backend`] when the blocking task panicked or was
/// cancelled (the message names `what`). In the control-plane Lambdas, built with
/// `panic = "abort"` (scripts/build-lambdas), a panic ends the process instead.
pub async fn run_blocking<T, F>(what: &str, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Backend {
            what: what.to_owned(),
            message: format!("blocking task did not finish: {join}"),
        }),
    }
}
