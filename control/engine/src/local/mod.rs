//! The local backends: the engine on one machine, with nothing to install.
//!
//! - [`DirStore`]: an [`ObjectStore`](crate::ObjectStore) over a directory, same keys
//!   as S3, atomic puts by rename, conditional puts by hard link.
//! - [`SqliteStore`]: the orders / order_events / locks tables in SQLite (bundled), with
//!   real conditional writes inside `BEGIN IMMEDIATE` transactions.
//! - [`FileKeyStore`]: per-order private keys as 0600 files.
//! - [`SecretsFile`]: credential values from a JSON file (`sluice run --secrets`).
//! - [`LocalDispatcher`]: runs workers as tasks in this process, with bounded concurrency.
//! - [`LocalWatchdog`]: tokio timers calling [`crate::Engine::watchdog_check`].
//! - [`LocalRuntime`]: wires them together with the event bus, which starts an orchestrator
//!   invocation for every result written, concurrently, as S3 events start Lambdas; and
//!   resumes a run whose process died ([`LocalRuntime::resume`]).

mod dir_layout;
mod dir_store;
mod dispatcher;
mod key_store;
mod resume;
mod runtime;
mod secrets_file;
mod sqlite;

pub use dir_store::DirStore;
pub use dispatcher::{Launcher, LocalDispatcher};
pub use key_store::FileKeyStore;
pub use resume::{OwnershipError, Resumed, RunOwnership};
pub use runtime::{
    INTERNAL_BUCKET, LocalOptions, LocalRuntime, LocalWatchdog, RuntimeError, open_run_stores,
};
pub use secrets_file::{SecretsFile, SecretsFileError};
pub use sqlite::SqliteStore;
