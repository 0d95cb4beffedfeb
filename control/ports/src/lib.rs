//! Sluice's ports: the traits the engine is written against, one adapter per backend.
//!
//! A crate of its own so that the traits and their one error type stand apart from the
//! engine's logic: adapters name a port without the engine's internals, and the engine
//! builds without any backend (its local backends are a feature).
//!
//! Each method's docs state the guarantee every adapter must give (an atomic put, a
//! conditional transition), because the orchestration protocol relies on exactly those and
//! nothing more. The local adapters live in `sluice-engine` (feature `local`); the AWS
//! adapters in `sluice-aws`. With the `conformance` feature, `conformance` holds the
//! backend-agnostic suites every adapter must pass.
#![warn(missing_docs)]

mod clock;
mod code_archives;
#[cfg(feature = "conformance")]
pub mod conformance;
mod dispatcher;
mod error;
mod key_store;
mod object_store;
mod order_store;
mod secret_source;
mod vcs;

pub use clock::{Clock, SystemClock};
pub use code_archives::CodeArchives;
pub use dispatcher::{DispatchError, Dispatcher, WatchdogInput, WatchdogStarter};
pub use error::{ErrorKind, StoreError};
pub use key_store::KeyStore;
pub use object_store::{ObjectStore, Presigned};
pub use order_store::{
    AcquireOutcome, CompiledModule, LockState, LockStatus, MAX_MOVES_TOGETHER, OrderEvent,
    OrderMove, OrderRecord, OrderStore, PackedBundle, ReleaseOutcome, StepWrites, Transition,
    order_pk,
};
pub use secret_source::SecretSource;
pub use vcs::Vcs;
