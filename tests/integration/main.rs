//! The CLI's end-to-end tests, one module per concern, in one test binary: linking a test
//! binary (wasmtime, the AWS SDK with `--features aws`) is most of a test build, so the
//! crate links one instead of one per file. `memory.rs` and `wasm_memory.rs` stay binaries
//! of their own: they read the peak memory of their process's children, which the other
//! tests' children would raise.

mod aws_client;
mod bad_input;
mod cancel;
mod code_sources;
mod conditions;
mod credentials;
mod dry_run;
mod examples;
mod git_sources;
mod graph;
mod isolation;
mod outputs;
mod pr_comments;
mod redaction;
mod report;
mod rerun;
mod resume;
mod retries;
mod sandbox;
mod signals;
mod terminal_output;
#[path = "../util/mod.rs"]
mod util;
mod wasm_orders;
