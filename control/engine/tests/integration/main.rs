//! The engine's tests over the local backends, one module per concern, in one test binary
//! (linking is most of a test build).

mod adapters;
mod lock_protocol;
mod orchestration;
mod simulation;
mod watchdog_and_recovery;
