//! WebAssembly orders: a module or component run in wasmtime, seeing only what its order
//! grants, within hard limits on memory and time.
//!
//! [`WasmRuntime`] is made once per process and shared by every order: it owns the
//! engines (one plain, one with fuel metering, built on first use), their epoch tickers,
//! and the compile caches (module `compile`). [`WasmRuntime::run`] runs one order:
//! 1. prepare the guest: find it compiled (in memory or the disk cache), or load the code
//!    the compile function made for the order's run ([`SharedCompiled`], on AWS, where
//!    the worker compiles nothing: waited for until it is there), or compile it where
//!    [`CompileIn`] says — in a child process `sluice` kills at the deadline (module
//!    `compiler`) — then link it;
//! 2. build its sandbox (module `sandbox`): args, listed env, mounts, events folder, output into
//!    the log pipeline;
//! 3. instantiate and run `_start` (core module) or `wasi:cli/run` (component).
//!
//! Time: the order's one deadline covers all three, compilation included. The engine's epoch advances every
//! [`EPOCH_TICK`] and a running guest yields to the executor at each tick, so the async
//! wall-clock timeout around the whole run stops a busy loop as well as a guest parked in
//! a host call (`sleep`, `poll`), by dropping its future. Memory: a guard (module `limits`) with a
//! budget of `memory_mb` for all the store's memories and tables. Fuel, when the order sets it, meters
//! instructions deterministically.
//!
//! A guest that cannot start fails its order with a [`WasmError`] as the reason (module
//! `error`): the engine could not be built, the module cannot be found, read, compiled or
//! linked, or a grant cannot be given.

mod compile;
mod compiler;
mod error;
mod limits;
mod output;
mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::I32Exit;

pub use self::compile::MAX_MODULE_BYTES;
use self::compile::{GuestCache, Linkers, Lookup, Prepared, Provenance, Source};
use self::compiler::MAX_CODE_BYTES;
#[cfg(all(feature = "compiler", feature = "test-support"))]
pub use self::compiler::compile_for_cpus;
pub use self::compiler::{COMPILER_ARG, CompileIn, serve_if_asked};
#[cfg(feature = "compiler")]
pub use self::compiler::{CpuLevel, compile_for_workers};
pub use self::error::{
    CacheError, GrantError, ModuleError, MountError, WasmEngineError, WasmError,
};
pub use self::sandbox::Grants;
use self::sandbox::{GuestState, NotInCode, guest_state, resolve_in_code};
use crate::io::WorkerIo;
use crate::log_sink::LogSink;
use sluice_contract::dispatch::{COMPILE_FAILED, SharedCode};

/// How often the engines' epoch advances: the granularity of stopping a running guest.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How long a worker looks for the code the compile function stores, at most: the compile
/// function's own time limit (15 minutes, Lambda's longest) — init-job starts it before
/// the run's first dispatch, so it is usually there at the first look.
const COMPILED_CODE_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// The part of the order's time looking for compiled code never uses: given up this long
/// before the deadline, the order fails saying why rather than timing out.
const COMPILED_CODE_MARGIN: Duration = Duration::from_millis(500);

/// The first pause between two looks for compiled code, doubled after each look up to
/// [`COMPILED_CODE_MAX_PAUSE`].
const COMPILED_CODE_FIRST_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between two looks for compiled code.
const COMPILED_CODE_MAX_PAUSE: Duration = Duration::from_secs(5);

/// How a WebAssembly order ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmOutcome {
    /// It returned from its entry point, or exited with code 0.
    Succeeded,
    /// It exited non-zero, trapped, ran out of memory or fuel, or could not start.
    Failed {
        /// The exit code, when it exited.
        exit_code: Option<i32>,
        /// Why, in a line.
        reason: String,
    },
    /// The order's deadline passed (during compilation or the run).
    TimedOut,
    /// The run was stopped; the module was stopped at once (it has no signal to handle).
    Stopped,
}

/// One WebAssembly order to run.
#[derive(Debug)]
pub struct WasmOrder<'a> {
    /// What it is granted (module, args, env, mounts).
    pub grants: Grants<'a>,
    /// When it must be done.
    pub deadline: Instant,
    /// Cancelled when the run is stopped.
    pub stop: &'a CancellationToken,
    /// Where the code the compile function made from its module is (on AWS).
    pub shared: Option<SharedCompiled<'a>>,
}

/// The compiled code of one module, which the compile function stores for the run's
/// workers, through the URL of the dispatch: a worker with it never compiles the module.
#[derive(Clone, Copy)]
pub struct SharedCompiled<'a> {
    /// The module's digest and the URL.
    pub code: &'a SharedCode,
    /// How the URL is reached.
    pub io: &'a dyn WorkerIo,
}

impl std::fmt::Debug for SharedCompiled<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCompiled")
            .field("code", self.code)
            .finish_non_exhaustive()
    }
}

impl SharedCompiled<'_> {
    /// The code the compile function made from `source`, prepared: looked for until it is
    /// there, with growing pauses, until `until`.
    async fn fetch(
        &self,
        cache: &Arc<GuestCache>,
        source: Arc<Source>,
        until: Instant,
    ) -> Result<Prepared, ModuleError> {
        let started = Instant::now();
        let mut pause = COMPILED_CODE_FIRST_PAUSE;
        let code = loop {
            let fetched = self.io.get(&self.code.get_url, MAX_CODE_BYTES);
            let last = match tokio::time::timeout_at(until, fetched).await {
                Ok(Ok(code)) => break code,
                Ok(Err(error)) => error.to_string(),
                Err(_elapsed) => "it took too long".to_owned(),
            };
            let now = Instant::now();
            if now >= until {
                return Err(ModuleError::CompiledCodeMissing {
                    module: source.name.clone(),
                    waited: started.elapsed(),
                    last,
                });
            }
            // The last pause ends at `until`, for a last look then.
            tokio::time::sleep(pause.min(until - now)).await;
            pause = (pause * 2).min(COMPILED_CODE_MAX_PAUSE);
        };
        if let Some(message) = code.strip_prefix(COMPILE_FAILED) {
            return Err(ModuleError::CompileFunctionFailed {
                module: source.name.clone(),
                message: String::from_utf8_lossy(message).trim().to_owned(),
            });
        }
        let (adopting, name) = (Arc::clone(cache), source.name.clone());
        tokio::task::spawn_blocking(move || adopting.adopt_shared(&source, &code))
            .await
            .map_err(preparing(&name))?
    }
}

/// The process-wide WebAssembly runtime (see the module docs).
#[derive(Debug, Default)]
pub struct WasmRuntime {
    cache_dir: Option<PathBuf>,
    compile_in: CompileIn,
    plain: OnceLock<Result<Arc<GuestCache>, WasmEngineError>>,
    metered: OnceLock<Result<Arc<GuestCache>, WasmEngineError>>,
}

impl WasmRuntime {
    /// A runtime keeping compiled modules under `cache_dir` (created `0700` if missing);
    /// without one, modules are compiled once per process.
    pub fn new(cache_dir: Option<PathBuf>) -> Self {
        WasmRuntime {
            cache_dir,
            ..WasmRuntime::default()
        }
    }

    /// The same, compiling modules where `compile_in` says (default: in this process).
    pub fn compiling_in(self, compile_in: CompileIn) -> Self {
        WasmRuntime { compile_in, ..self }
    }

    /// Runs one order, streaming its output into `log` (see the module docs).
    pub async fn run(&self, order: &WasmOrder<'_>, log: &LogSink) -> WasmOutcome {
        let compiling = AtomicBool::new(false);
        let work = async {
            let spec = order.grants.spec;
            let metered = spec.fuel.is_some();
            let cache = self.cache(metered)?;
            let module = module_path(order.grants.code_root, &spec.module)?;
            let looking = Arc::clone(&cache);
            let found = tokio::task::spawn_blocking(move || looking.lookup(&module))
                .await
                .map_err(preparing(&spec.module))??;
            let (prepared, provenance) = match found {
                Lookup::Ready(prepared, provenance) => (prepared, provenance),
                Lookup::Compile(source) => {
                    self.prepare_new(&cache, order, source, &compiling).await?
                }
            };
            log.note(&match provenance {
                Provenance::Compiled(took) => {
                    format!("compiled {} in {} ms", spec.module, took.as_millis())
                }
                Provenance::DiskCache => format!("loaded {} from the compile cache", spec.module),
                Provenance::MemoryCache => format!("{} already compiled", spec.module),
                Provenance::Shared => {
                    format!("loaded {} as the compile function compiled it", spec.module)
                }
            })
            .await;
            let state = guest_state(&order.grants, &log.sender())?;
            Ok::<_, WasmError>(execute(cache.engine(), prepared, state, spec, log).await)
        };
        let timed = tokio::select! {
            done = tokio::time::timeout_at(order.deadline, work) => done,
            _ = order.stop.cancelled() => {
                log.note("stopped: the module was stopped because the run was cancelled")
                    .await;
                return WasmOutcome::Stopped;
            }
        };
        let outcome = match timed {
            Err(_elapsed) => {
                let what = match (compiling.load(Ordering::SeqCst), &self.compile_in) {
                    (true, CompileIn::Child(_)) => "its compilation was stopped",
                    (true, CompileIn::ThisProcess | CompileIn::Nowhere) => "it was still compiling",
                    (false, _) => "the module was stopped",
                };
                log.note(&format!("timed out: {what} at the order's deadline"))
                    .await;
                return WasmOutcome::TimedOut;
            }
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => WasmOutcome::Failed {
                exit_code: None,
                reason: error.to_string(),
            },
        };
        if let WasmOutcome::Failed { reason, .. } = &outcome {
            log.note(reason).await;
        }
        outcome
    }

    /// Prepares a guest found neither in memory nor on disk: from the code the compile
    /// function made for the order's run (on AWS, where workers have no compiler), else
    /// compiled here.
    async fn prepare_new(
        &self,
        cache: &Arc<GuestCache>,
        order: &WasmOrder<'_>,
        source: Source,
        compiling: &AtomicBool,
    ) -> Result<(Prepared, Provenance), WasmError> {
        let (module, metered) = (&order.grants.spec.module, order.grants.spec.fuel.is_some());
        let source = Arc::new(source);
        if let Some(shared) = order.shared {
            let found = source.file_digest_hex();
            if shared.code.module_sha256 != found {
                return Err(ModuleError::NotTheCompiledModule {
                    module: source.name.clone(),
                    found,
                    expected: shared.code.module_sha256.clone(),
                }
                .into());
            }
            let until = compiled_code_deadline(order.deadline);
            let prepared = shared.fetch(cache, source, until).await?;
            return Ok((prepared, Provenance::Shared));
        }
        let started = std::time::Instant::now();
        compiling.store(true, Ordering::SeqCst);
        let code = self
            .compile_in
            .compile(cache.engine(), Arc::clone(&source), metered)
            .await?;
        compiling.store(false, Ordering::SeqCst);
        let took = started.elapsed();
        let finishing = Arc::clone(cache);
        let prepared = tokio::task::spawn_blocking(move || finishing.finish(&source, &code))
            .await
            .map_err(preparing(module))??;
        Ok((prepared, Provenance::Compiled(took)))
    }

    fn cache(&self, metered: bool) -> Result<Arc<GuestCache>, WasmEngineError> {
        let slot = if metered { &self.metered } else { &self.plain };
        slot.get_or_init(|| {
            let cache_dir = self.cache_dir.clone();
            new_cache(metered, cache_dir).map(Arc::new)
        })
        .clone()
    }
}

/// The configuration of the engines guests run on (fuel metering on or off); a compiler
/// child process builds its engine from it too.
fn engine_config(metered: bool) -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .consume_fuel(metered)
        .wasm_component_model(true)
        // Relaxed SIMD gives the same results on every CPU: the code the compile function
        // makes for AWS's CPUs and what `sluice run` compiles for this one agree.
        .relaxed_simd_deterministic(true);
    config
}

/// The error of a blocking task preparing `module` that panicked or was cancelled.
fn preparing(module: &str) -> impl FnOnce(tokio::task::JoinError) -> ModuleError + '_ {
    move |source| ModuleError::Task {
        module: module.to_owned(),
        step: "preparing",
        source,
    }
}

/// When looking for compiled code is given up: [`COMPILED_CODE_PATIENCE`] from now, and
/// [`COMPILED_CODE_MARGIN`] before the order's `deadline` at the latest.
fn compiled_code_deadline(deadline: Instant) -> Instant {
    let latest = deadline
        .checked_sub(COMPILED_CODE_MARGIN)
        .unwrap_or(deadline);
    (Instant::now() + COMPILED_CODE_PATIENCE).min(latest)
}

/// An engine configured by [`engine_config`] (fuel metering on or off).
fn new_engine(metered: bool) -> Result<Engine, WasmEngineError> {
    Engine::new(&engine_config(metered)).map_err(|e| WasmEngineError::Start(Arc::new(e)))
}

/// An engine (fuel metering on or off), its linkers, its epoch ticker and its cache.
fn new_cache(metered: bool, cache_dir: Option<PathBuf>) -> Result<GuestCache, WasmEngineError> {
    let engine = new_engine(metered)?;
    let mut module = wasmtime::Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut module, GuestState::wasi_p1)
        .map_err(|e| WasmEngineError::WasiP1(Arc::new(e)))?;
    let mut component = wasmtime::component::Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut component)
        .map_err(|e| WasmEngineError::WasiP2(Arc::new(e)))?;
    start_epoch_ticker(&engine);
    Ok(GuestCache::new(
        engine,
        Linkers { module, component },
        cache_dir,
    ))
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("sluice-wasm-epoch".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(error) = spawned {
        // Without ticks a busy guest never yields; the wall-clock timeout cannot stop it.
        tracing::error!(%error, "could not start the epoch ticker");
    }
}

/// The module's file, checked to stay inside the code root.
fn module_path(code_root: &Path, module: &str) -> Result<PathBuf, ModuleError> {
    resolve_in_code(code_root, module).map_err(|e| {
        let module = module.to_owned();
        match e {
            NotInCode::CodeRoot(source) => ModuleError::NoCodeRoot { module, source },
            NotInCode::Missing(source) => ModuleError::NotInCode { module, source },
            NotInCode::Outside => ModuleError::OutsideCode { module },
        }
    })
}

/// Instantiates and runs the guest in a fresh store, and says how it ended.
async fn execute(
    engine: &Engine,
    prepared: Prepared,
    state: GuestState,
    spec: &sluice_contract::job::WasmSpec,
    log: &LogSink,
) -> WasmOutcome {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.memory);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    if let Some(fuel) = spec.fuel
        && let Err(error) = store.set_fuel(fuel)
    {
        return WasmOutcome::Failed {
            exit_code: None,
            reason: format!("setting the fuel limit: {error:#}"),
        };
    }
    let ended: wasmtime::Result<Option<i32>> = match prepared {
        Prepared::Module(pre) => {
            async {
                let instance = pre.instantiate_async(&mut store).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await.map(|()| None)
            }
            .await
        }
        Prepared::Component(pre) => {
            async {
                let command = pre.instantiate_async(&mut store).await?;
                let run = command.wasi_cli_run().call_run(&mut store).await?;
                // `run` returning an error is the component's way to exit 1.
                Ok(run.err().map(|()| 1))
            }
            .await
        }
    };
    let (outcome, details) = classify(ended, spec.fuel);
    if let Some(details) = details {
        log.note(&details).await;
    }
    let memory = &store.data().memory;
    match (outcome, memory.refused()) {
        (WasmOutcome::Failed { exit_code, reason }, Some(asked)) => WasmOutcome::Failed {
            exit_code,
            reason: format!(
                "memory limit reached: the module asked for {} MiB, wasm.memory_mb allows {} ({reason})",
                asked.div_ceil(1 << 20),
                memory.limit_mb()
            ),
        },
        (outcome, _) => outcome,
    }
}

/// Turns how the entry point returned into an outcome, plus details for the log (a
/// trap's wasm backtrace) that are too long for the one-line reason. The details use the
/// error's `Display` chain, never `Debug`: with `RUST_BACKTRACE` set, `Debug` would
/// symbolize the host's own native backtrace (hundreds of MB and seconds, for nothing a
/// guest author can use).
fn classify(
    ended: wasmtime::Result<Option<i32>>,
    fuel: Option<u64>,
) -> (WasmOutcome, Option<String>) {
    let error = match ended {
        Ok(None) => return (WasmOutcome::Succeeded, None),
        Ok(Some(code)) => return (exited(code), None),
        Err(error) => error,
    };
    if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>() {
        return (exited(*code), None);
    }
    let (reason, details) = match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => (
            format!(
                "fuel exhausted: the module used all {} units of wasm.fuel",
                fuel.unwrap_or_default()
            ),
            None,
        ),
        Some(trap) => {
            let message = trap.to_string();
            let message = message.strip_prefix("wasm trap: ").unwrap_or(&message);
            (format!("trap: {message}"), Some(format!("{error:#}")))
        }
        // A host error (e.g. WASI's "missing required memory export"): its root cause is
        // the one line that says what went wrong; the chain and backtrace go to the log.
        None => (error.root_cause().to_string(), Some(format!("{error:#}"))),
    };
    let outcome = WasmOutcome::Failed {
        exit_code: None,
        reason,
    };
    (outcome, details)
}

fn exited(code: i32) -> WasmOutcome {
    if code == 0 {
        WasmOutcome::Succeeded
    } else {
        WasmOutcome::Failed {
            exit_code: Some(code),
            reason: format!("exited with code {code}"),
        }
    }
}
