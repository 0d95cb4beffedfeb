//! The worker binary's tests, one module per concern, in one test binary (as every crate
//! of the workspace).

mod worker;
