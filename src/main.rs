//! `sluice`: run jobs of orders with dependencies, on this machine or on AWS.
//!
//! `main` parses the command line once into a typed [`cli::Command`], runs the command, and
//! turns its outcome into a documented exit code (`sluice_contract::exit_codes`). Errors are
//! printed as one line with their whole cause chain; there are no panics on bad input.

mod cli;
mod commands;
mod graph;
mod local_worker;
mod progress;
mod report;
mod sentinel;

use std::process::ExitCode;

use sluice_contract::exit_codes;

fn main() -> ExitCode {
    // A sandbox's first process runs its order's command and exits here, before anything
    // else starts (see `sluice_worker::sandbox`).
    sluice_worker::sandbox::serve_if_asked();
    // A compiler child process of `sluice` compiles its module and exits here, before
    // anything else starts (see `sluice_worker::wasm::CompileIn`).
    sluice_worker::wasm::serve_if_asked();
    limit_malloc_arenas();
    let command = match cli::parse() {
        Ok(command) => command,
        Err(exit) => return exit,
    };
    init_tracing(command.verbosity());
    // Before anything is started: orders (and anything reading /proc) must not see this
    // process's environment, and what they orphan must come back to it.
    sluice_worker::containment::harden_process();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = command.blocking_threads() {
        builder.max_blocking_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice: error: starting the async runtime: {error}");
            return ExitCode::from(exit_codes::INTERNAL_ERROR as u8);
        }
    };
    let code = runtime.block_on(commands::run(command));
    // Workers still running (job timeout, Ctrl-C) are dropped here, which kills their
    // process groups; don't wait on blocking tasks that may be stuck on a pipe.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Caps glibc's malloc arenas at one per core, at least two (before any thread starts). By
/// default glibc gives up to eight per core, and every thread of the blocking pool that
/// allocates may take a new one: measured on 9 999-order runs, that more than doubled the
/// peak RSS (428 MiB against 182 MiB capped) for the same wall time.
#[cfg(target_env = "gnu")]
#[expect(unsafe_code, reason = "mallopt(3) has no safe wrapper")]
fn limit_malloc_arenas() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: sets a malloc tunable before any other thread exists; touches no memory of ours.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

#[cfg(not(target_env = "gnu"))]
fn limit_malloc_arenas() {}

/// Logs go to stderr as text; `SLUICE_LOG` (tracing's filter syntax) overrides the level.
fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
