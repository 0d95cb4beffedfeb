//! The worker host's tests with real processes and a real wasmtime, one module per concern,
//! in one test binary (linking wasmtime is most of a test build).

mod run;
mod shell;
mod wasm;
