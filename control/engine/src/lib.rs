//! Sluice's control plane: init_job, the orchestrator and the watchdog, written once over
//! ports, plus (feature `local`, on by default) the local backends that run them on one
//! machine.
//!
//! # Brief overview
//!
//! - [`ports`] (the `sluice-ports` crate, re-exported): the traits every backend implements ([`ObjectStore`], [`OrderStore`],
//!   [`Dispatcher`], [`WatchdogStarter`], [`KeyStore`], [`SecretSource`], [`CodeArchives`],
//!   [`Vcs`], [`Clock`]), each method documented with its guarantee (atomic put,
//!   conditional transition...).
//! - [`Engine`]: the ports plus [`EngineConfig`]; [`Engine::init_job`] validates, bundles,
//!   uploads and queues a job; [`Engine::orchestrate`] advances a run under its lock;
//!   [`Engine::watchdog_check`] is the run's watch: it times out workers that never report
//!   and kicks a run that nothing else would wake.
//! - [`ErrorKind`]: every failure says whether it is transient (retried: a pass retries
//!   itself, a start is retried with the same attempt) or permanent (an outcome).
//! - [`credentials`]: fetching an order's credentials and merging them into its env.
//! - [`code`]: fetching orders' code (folders, zips, git, `s3://` zips) once per job.
//! - [`git`]: orders' code from git repositories (one clone per repository per job).
//! - [`grants`]: which credentials a known caller may name.
//! - [`http`]: what the HTTP clients say when a call gets no answer.
//! - [`github`]: PR comments through GitHub's REST API ([`Vcs`]); the comment itself is
//!   rendered and kept current by the engine (`pr_comment`).
//! - [`orchestrator`]: the lock protocol, read_state, evaluate, dispatch and finalize.
//! - [`rerun`]: a new run of a finished run's kept job, reusing what succeeded when asked.
//! - [`run_key`]: one stored secret per run, each order's age key derived from it.
//! - [`runs`]: what a client asks about a run (rows, done document, a log, waiting).
//! - `local` (feature `local`): directory object store, SQLite tables, file key store, secrets file,
//!   in-process dispatcher, timer watchdogs and the event bus that wires them into a
//!   `local::LocalRuntime`.
//!
//! The AWS backends implement the same ports in `sluice-aws`; nothing here knows about AWS.
//!
//! # Example
//!
//! Running a job locally needs a worker launcher (the CLI supplies the worker host); see
//! the `sluice` crate's `local_worker` module for the full wiring.
#![warn(missing_docs)]

pub mod blocking;
pub mod bundle;
mod bundle_packs;
pub mod cancel;
pub mod code;
pub mod credentials;
pub mod engine;
pub mod error;
pub mod git;
pub mod github;
pub mod grants;
pub mod http;
pub mod init_job;
#[cfg(feature = "local")]
pub mod local;
pub mod orchestrator;
pub use sluice_ports as ports;
mod pr_comment;
pub mod report;
pub mod rerun;
mod retry;
pub mod run_key;
mod run_modules;
pub mod runs;
pub mod watchdog;

pub use engine::{Engine, EngineConfig, Ports};
pub use error::{EngineError, ErrorKind, StoreError};
pub use ports::{
    Clock, CodeArchives, Dispatcher, KeyStore, ObjectStore, OrderEvent, OrderRecord, OrderStore,
    SecretSource, SystemClock, Transition, Vcs, WatchdogInput, WatchdogStarter,
};
