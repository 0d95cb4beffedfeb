//! Sluice's worker host: runs one order attempt from its bundle to its callback.
//!
//! The same code runs as the worker Lambda, as the CodeBuild entrypoint, and in-process
//! under the local engine; only the [`WorkerIo`] differs (how the URLs the dispatch carries
//! are reached: HTTP to presigned S3 URLs, or the local store's `file://` URLs). A worker
//! holds no credential: what its attempt may touch is what its URLs name.
//!
//! # Brief overview
//!
//! - [`run::run_order`]: the pipeline — fetch the bundle, [`extract`] it safely, claim the
//!   attempt, decrypt the env in memory ([`envelope`]) with the identity the dispatch
//!   carries, run it, store the log, call back.
//! - [`shell`]: commands as real subprocesses, each in its own session and process group
//!   ([`process_group`]), env built from scratch, one deadline, SIGTERM → grace → SIGKILL;
//!   nothing they start outlives them and none can read the worker ([`containment`]).
//! - [`wasm`]: WebAssembly modules and components in wasmtime, seeing only what the order
//!   grants, with memory, time and (optional) fuel limits and a compile cache.
//! - [`events`]: the events an order dropped in its events folder, sent with the result.
//! - `outputs`: the inputs an order takes from earlier orders, and the outputs it
//!   publishes for later ones.
//! - [`log_sink`]: the streaming log pipeline: output masked ([`redact`]) and spooled to a
//!   file as it arrives, head and tail kept beyond a size cap, the tail read back for
//!   `result.json`.
//! - [`redact`]: the order's secrets masked in every form a log could show them.
//! - [`retry`]: the callback retried with backoff and jitter.
//! - [`io`]: the [`WorkerIo`] seam: get, put-if-absent and put-file on a URL.
//!
//! Nothing here holds a whole log in memory, and decrypted values never touch the disk.

pub mod containment;
pub mod envelope;
pub mod events;
pub mod extract;
pub mod io;
pub mod log_sink;
mod outputs;
pub mod process_group;
pub mod redact;
pub mod retry;
pub mod run;
pub mod sandbox;
pub mod shell;
mod spawn;
pub mod spool;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod wasm;

pub use io::{Delivery, IoError, WorkerIo};
pub use run::{WorkerConfig, WorkerReport, run_order};
