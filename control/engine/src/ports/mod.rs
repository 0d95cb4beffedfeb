//! The ports: traits the engine is written against, one adapter per backend.
//!
//! Each method's docs state the guarantee every adapter must give (an atomic put, a
//! conditional transition), because the orchestration protocol relies on exactly those and
//! nothing more. Local adapters live in [`crate::local`]; AWS adapters in `sluice-aws`.

mod clock;
mod code_archives;
mod dispatcher;
mod key_store;
mod object_store;
mod order_store;
mod secret_source;
mod vcs;

pub use clock::{Clock, SystemClock};
pub use code_archives::CodeArchives;
pub use dispatcher::{DispatchError, Dispatcher, WatchdogInput, WatchdogStarter};
pub use key_store::KeyStore;
pub use object_store::{ObjectStore, Presigned};
pub use order_store::{
    AcquireOutcome, LockState, MarkDirtyOutcome, OrderEvent, OrderRecord, OrderStore, Transition,
    order_pk,
};
pub use secret_source::SecretSource;
pub use vcs::Vcs;
