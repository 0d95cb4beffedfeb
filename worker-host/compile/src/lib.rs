//! Sluice's compile function: each WebAssembly module of a run on AWS compiled once, for all
//! the run's workers.
//!
//! The worker Lambda carries no compiler (Cranelift was a third of its size, and each fresh
//! worker compiled its module again). init-job invokes this function asynchronously with a
//! [`CompileRequest`] per module and engine setting of a run, before the run starts:
//! [`compile_for_run`] reads the module through the request's presigned URL, checks it is
//! the one init-job packaged (its sha256), compiles it for the CPUs AWS runs the
//! workers on (`sluice_worker::wasm::compile_for_workers`, in a child process killed
//! when the longest timeout of the module's orders, or the function's own time, is up) and
//! stores the code through the request's put-if-absent URL. A module at fault — not
//! WebAssembly, invalid, not the one packaged, compiling too long, killing its compiler —
//! gets [`COMPILE_FAILED`] and why stored instead, so its orders fail with that reason at
//! once rather than wait for code that will not come; a failure that may pass (reading or
//! storing, starting the compiler) fails the invocation, which Lambda makes again.
//!
//! Like the worker, it holds no credentials (its role may touch no data) and loads no AWS
//! configuration; unlike the worker it runs no order: the module is hostile input to
//! Cranelift, but nothing an order controls runs where the code workers load is made.
#![warn(missing_docs)]

use data_encoding::HEXLOWER;
use sha2::{Digest, Sha256};
use sluice_contract::dispatch::{COMPILE_FAILED, CompileRequest};
use tokio::time::{Duration, Instant};

use sluice_worker::wasm::{
    CompileIn, MAX_MODULE_BYTES, ModuleError, WasmError, compile_for_workers,
};
use sluice_worker::{Delivery, IoError, WorkerIo};

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    /// The code is stored.
    Stored,
    /// Code (or a refusal) was stored already, by an earlier invocation with the request.
    AlreadyThere,
    /// The module cannot be compiled: this reason is stored for its orders.
    Refused(String),
}

/// Why a request could not be carried out: the invocation fails, and Lambda tries it again.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The module could not be read (a URL that expired or was refused included: the
    /// invocation is made again, and a later one may read it).
    #[error("reading module {module} of run {run_id}: {source}")]
    Fetch {
        /// The module.
        module: String,
        /// Its run.
        run_id: String,
        /// The cause.
        source: IoError,
    },
    /// The code (or refusal) could not be stored.
    #[error("storing the code of module {module} of run {run_id}: {source}")]
    Store {
        /// The module.
        module: String,
        /// Its run.
        run_id: String,
        /// The cause.
        source: IoError,
    },
    /// The compiler could not be had (its engine not built, its process not started).
    #[error("compiling module {module} of run {run_id}: {source}")]
    Compiler {
        /// The module.
        module: String,
        /// Its run.
        run_id: String,
        /// The cause.
        source: WasmError,
    },
}

/// Carries out `request` through `io` (see the crate docs), compiling where `compile_in`
/// says, until `until` at the latest (and no longer than the request's timeout from when
/// the module is read).
///
/// # Errors
///
/// A [`CompileError`] when nothing could be stored for the request's orders.
pub async fn compile_for_run(
    request: &CompileRequest,
    io: &dyn WorkerIo,
    compile_in: &CompileIn,
    until: Instant,
) -> Result<Compiled, CompileError> {
    let module = &request.module_name;
    let run_id = request.run_id.to_string();
    let binary = io
        .get(&request.module_url, MAX_MODULE_BYTES)
        .await
        .map_err(|source| CompileError::Fetch {
            module: module.clone(),
            run_id: run_id.clone(),
            source,
        })?;
    let outcome = compile(request, binary, compile_in, until)
        .await
        .map_err(|source| CompileError::Compiler {
            module: module.clone(),
            run_id: run_id.clone(),
            source,
        })?;
    let (body, refused) = match outcome {
        Ok(code) => (code, None),
        Err(reason) => ([COMPILE_FAILED, reason.as_bytes()].concat(), Some(reason)),
    };
    match io.put_if_absent(&request.code_url, body).await {
        Ok(Delivery::AlreadyThere) => Ok(Compiled::AlreadyThere),
        Ok(Delivery::Stored) => Ok(refused.map_or(Compiled::Stored, Compiled::Refused)),
        Err(source) => Err(CompileError::Store {
            module: module.clone(),
            run_id,
            source,
        }),
    }
}

/// The code compiled from `binary`, or why the module is at fault (a reason for its
/// orders); the outer error when the compiler itself could not be had.
async fn compile(
    request: &CompileRequest,
    binary: Vec<u8>,
    compile_in: &CompileIn,
    until: Instant,
) -> Result<Result<Vec<u8>, String>, WasmError> {
    let module = &request.module_name;
    let digest = HEXLOWER.encode(&Sha256::digest(&binary));
    if digest != request.module_sha256 {
        return Ok(Err(format!(
            "module {module}: the module read (sha256 {digest}) is not the one init-job packaged ({})",
            request.module_sha256
        )));
    }
    // The orders' longest timeout, or what the function has left, whichever ends first.
    let orders_limit = Duration::from_secs(request.timeout);
    let (limit, set_by) = match until.checked_duration_since(Instant::now()) {
        Some(left) if left < orders_limit => (left, "all the compile function had"),
        Some(_) => (orders_limit, "the longest its orders may run"),
        None => (Duration::ZERO, "all the compile function had"),
    };
    let compiling = compile_for_workers(module, binary, request.metered, compile_in);
    let Ok(compiled) = tokio::time::timeout(limit, compiling).await else {
        return Ok(Err(format!(
            "module {module}: compiling it took more than {} s, {set_by}",
            limit.as_secs()
        )));
    };
    match compiled {
        Ok(code) => Ok(Ok(code)),
        Err(WasmError::Module(error)) if the_modules_fault(&error) => Ok(Err(error.to_string())),
        Err(error) => Err(error),
    }
}

/// Whether `error` is the module's doing (so compiling it again would end the same), not
/// the compiler's being out of reach.
fn the_modules_fault(error: &ModuleError) -> bool {
    !matches!(
        error,
        ModuleError::CompilerIo { .. }
            | ModuleError::CompilerPipes { .. }
            | ModuleError::Task { .. }
    )
}
