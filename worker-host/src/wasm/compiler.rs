//! Where Cranelift runs, so that a deadline stops a compilation too.
//!
//! Compiling a module cannot be interrupted: wasmtime has no cancellation for it, and a
//! module can be made to compile for minutes. Compiled on a thread, it would go on burning
//! the CPU long after its order timed out, and on a warm Lambda into the next invocation.
//! So `sluice` and the compile function compile in a child process of themselves
//! ([`CompileIn::Child`]: `<binary> --sluice-compile-wasm plain|metered [portable]`, the
//! module on its stdin, the compiled code on its stdout), which is killed when its future
//! is dropped: at the order's deadline, when the run is stopped, or at the compile
//! function's limit ([`compile_for_workers`]). [`serve_if_asked`], called first thing in
//! `main`, makes the binary that compiler.
//!
//! [`CompileIn::ThisProcess`] compiles on the blocking pool instead, for embedders and tests
//! without such a binary; a compilation there runs to its end. [`CompileIn::Nowhere`] is
//! the worker Lambda's: it compiles nothing.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::Engine;

#[cfg(feature = "compiler")]
use super::compile::WASM_MAGIC;
use super::compile::{GuestKind, MAX_MODULE_BYTES, Source};
#[cfg(feature = "compiler")]
use super::engine_config;
#[cfg(feature = "compiler")]
use super::error::WasmError;
use super::error::{ModuleError, ServeError, WasmEngineError};
use super::new_engine;

/// The first argument that makes a Sluice binary a compiler.
pub const COMPILER_ARG: &str = "--sluice-compile-wasm";

/// Its optional third argument: compile for the CPUs AWS runs on (see `portable_engine`).
const PORTABLE_ARG: &str = "portable";

/// Whether this binary's `main` called [`serve_if_asked`], so a child of it compiles.
static SERVES: AtomicBool = AtomicBool::new(false);

/// Most bytes of compiled code read back from a compiler.
pub(super) const MAX_CODE_BYTES: u64 = 4 * MAX_MODULE_BYTES;

/// Most bytes of a compiler's error message kept.
const MAX_ERROR_BYTES: u64 = 16 << 10;

/// Where modules are compiled (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CompileIn {
    /// On this process's blocking pool; a compilation runs to its end whatever happens to
    /// its order.
    #[default]
    ThisProcess,
    /// In a child process of this binary (one whose `main` calls [`serve_if_asked`]),
    /// killed when its future is dropped: its order's deadline passes, its run is
    /// stopped, or the compile function's limit is up.
    Child(PathBuf),
    /// Nowhere: the worker Lambda, which loads only the code the compile function made
    /// (whatever features its build has).
    Nowhere,
}

impl CompileIn {
    /// A child process of the running binary — `/proc/self/exe`, the very file this process
    /// runs, even if its path was replaced since — when its `main` called
    /// [`serve_if_asked`]; else this process (a binary that would not act as a compiler).
    pub fn child_of_this_binary() -> Self {
        let this = PathBuf::from("/proc/self/exe");
        if SERVES.load(Ordering::SeqCst) && this.exists() {
            CompileIn::Child(this)
        } else {
            tracing::warn!(
                "compiling WebAssembly in this process: a compilation outlives its order's deadline"
            );
            CompileIn::ThisProcess
        }
    }

    /// Compiles `source` for an engine with fuel metering on or off; the code for
    /// `GuestCache::finish`. Dropping the future kills a child compiler.
    ///
    /// # Errors
    ///
    /// Why the module does not compile (wasmtime's message), or why the compiler failed.
    pub async fn compile(
        &self,
        engine: &Engine,
        source: Arc<Source>,
        metered: bool,
    ) -> Result<Vec<u8>, ModuleError> {
        self.compile_for(engine, source, metered, false).await
    }

    /// [`CompileIn::compile`], for the CPUs AWS runs on when `portable` (`engine`,
    /// used in this process, must then be [`portable_engine`]'s).
    async fn compile_for(
        &self,
        engine: &Engine,
        source: Arc<Source>,
        metered: bool,
        portable: bool,
    ) -> Result<Vec<u8>, ModuleError> {
        let name = source.name.clone();
        if !cfg!(feature = "compiler") {
            return Err(ModuleError::NoCompiler { module: name });
        }
        let code = match self {
            CompileIn::ThisProcess => {
                let engine = engine.clone();
                let compiled =
                    tokio::task::spawn_blocking(move || compile_bytes(&engine, &source.binary))
                        .await
                        .map_err(|source| ModuleError::Task {
                            module: name.clone(),
                            step: "compiling",
                            source,
                        })?;
                compiled.map_err(|error| module_error(name.clone(), error))?
            }
            CompileIn::Child(binary) => in_child(binary, &source, metered, portable).await?,
            CompileIn::Nowhere => return Err(ModuleError::NoCompiler { module: name }),
        };
        if code.len() as u64 > MAX_CODE_BYTES {
            return Err(ModuleError::CodeTooLarge {
                module: name,
                limit: MAX_CODE_BYTES,
            });
        }
        Ok(code)
    }
}

/// wasmtime's compilation of `binary` (a module or component, as `kind` says) for
/// `engine`; its error says why the module is invalid.
#[cfg(feature = "compiler")]
pub(super) fn precompile(
    engine: &Engine,
    binary: &[u8],
    kind: GuestKind,
) -> wasmtime::Result<Vec<u8>> {
    match kind {
        GuestKind::Module => engine.precompile_module(binary),
        GuestKind::Component => engine.precompile_component(binary),
    }
}

/// A build without Cranelift compiles nothing: it loads code compiled elsewhere.
#[cfg(not(feature = "compiler"))]
pub(super) fn precompile(
    _engine: &Engine,
    _binary: &[u8],
    _kind: GuestKind,
) -> wasmtime::Result<Vec<u8>> {
    Err(wasmtime::format_err!(
        "this build of Sluice has no compiler"
    ))
}

/// Compiles `source` in a child process of `binary`.
async fn in_child(
    binary: &PathBuf,
    source: &Source,
    metered: bool,
    portable: bool,
) -> Result<Vec<u8>, ModuleError> {
    let failed = |step: &'static str, e: std::io::Error| ModuleError::CompilerIo {
        module: source.name.clone(),
        step,
        compiler: binary.clone(),
        source: e,
    };
    let mut child = tokio::process::Command::new(binary)
        .arg(COMPILER_ARG)
        .arg(if metered { "metered" } else { "plain" })
        .args(portable.then_some(PORTABLE_ARG))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed("starting", e))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ModuleError::CompilerPipes {
            module: source.name.clone(),
        });
    };
    // Dropping stdin once written closes it: the compiler reads until end of file.
    let write = async move {
        stdin.write_all(&source.binary).await?;
        drop(stdin);
        Ok::<_, std::io::Error>(())
    };
    // Both pipes are read to their end (what is past a cap is dropped): a compiler blocked
    // on a full pipe would never exit.
    let read_code = read_capped(stdout, MAX_CODE_BYTES + 1);
    let read_message = read_capped(stderr, MAX_ERROR_BYTES);
    let (written, read, message) = tokio::join!(write, read_code, read_message);
    let message = message.unwrap_or_default();
    let status = child.wait().await.map_err(|e| failed("waiting for", e))?;
    if !status.success() {
        let message = String::from_utf8_lossy(&message);
        return Err(match message.trim() {
            "" => ModuleError::CompilerEnded {
                module: source.name.clone(),
                compiler: binary.clone(),
                status,
            },
            text => ModuleError::CompilerFailed {
                module: source.name.clone(),
                message: text.to_owned(),
            },
        });
    }
    written.map_err(|e| failed("writing the module to", e))?;
    read.map_err(|e| failed("reading the code from", e))
}

/// Everything `reader` gives until its end, keeping the first `cap` bytes.
async fn read_capped(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    cap: u64,
) -> std::io::Result<Vec<u8>> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut kept = Vec::new();
    let mut chunk = vec![0; 64 << 10];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = cap.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&chunk[..room]);
    }
}

/// Compiles the module `bytes` (binary or text format, converted where it is compiled)
/// named `name` as a run's workers load it (the compile function on AWS): for an engine of
/// their configuration (fuel metering on or off), and for the CPUs of this machine's
/// architecture AWS runs on (x86-64-v2 on x86_64) — no CPU feature is taken from the
/// machine that compiles, as the workers run on others (wasmtime refuses code that needs a
/// feature its CPU lacks). Where `compile_in` says; the caller bounds the time: dropping
/// the future kills a child compiler.
///
/// # Errors
///
/// Why the module does not compile ([`ModuleError`]: not WebAssembly, invalid, too large,
/// the compiler killed), or why the compiler or the engine could not be had.
#[cfg(feature = "compiler")]
pub async fn compile_for_workers(
    name: &str,
    bytes: Vec<u8>,
    metered: bool,
    compile_in: &CompileIn,
) -> Result<Vec<u8>, WasmError> {
    let engine = portable_engine(metered)?;
    let source = Arc::new(Source::new(name.to_owned(), bytes));
    Ok(compile_in
        .compile_for(&engine, source, metered, true)
        .await?)
}

/// Compiles `bytes` as [`compile_for_workers`] does, in this process, for the CPUs of
/// `level`: for measuring what CPU features are worth.
///
/// # Errors
///
/// As [`compile_for_workers`].
#[cfg(all(feature = "compiler", feature = "test-support"))]
pub fn compile_for_cpus(
    bytes: &[u8],
    metered: bool,
    level: CpuLevel,
) -> Result<Vec<u8>, WasmError> {
    let engine = engine_for_cpus(metered, level)?;
    Ok(compile_bytes(&engine, bytes).map_err(|error| module_error(String::new(), error))?)
}

/// An engine of the workers' configuration (fuel metering on or off) compiling for every
/// CPU of this machine's architecture that AWS runs functions and builds on: its target
/// set, no CPU feature is inferred from this one; on x86_64 the features of x86-64-v2
/// (SSE4.2, POPCNT, CMPXCHG16B: Intel's Nehalem and AMD's Bulldozer cores and every later
/// one), without which rounding is a call and `popcnt` a sequence (a compute loop of both
/// ran 1.6 times as long: `scripts/bench 5 wasm`).
#[cfg(feature = "compiler")]
fn portable_engine(metered: bool) -> Result<Engine, WasmEngineError> {
    engine_for_cpus(metered, CpuLevel::AwsHosts)
}

/// The CPUs code is compiled for.
#[cfg(feature = "compiler")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuLevel {
    /// Those AWS runs functions and builds on (x86-64-v2 on x86_64): what the compile
    /// function compiles for.
    AwsHosts,
    /// Every CPU of the architecture (x86_64's baseline, SSE2): for measuring what the
    /// features above are worth.
    Baseline,
}

/// An engine of the workers' configuration compiling for the CPUs of `level`.
#[cfg(feature = "compiler")]
#[expect(unsafe_code, reason = "Cranelift's CPU features; see SAFETY")]
fn engine_for_cpus(metered: bool, level: CpuLevel) -> Result<Engine, WasmEngineError> {
    let mut config = engine_config(metered);
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    config
        .target(&target)
        .map_err(|e| WasmEngineError::Start(Arc::new(e)))?;
    if cfg!(target_arch = "x86_64") && level == CpuLevel::AwsHosts {
        // SAFETY: code compiled for CPU features a machine lacks would fault there, but
        // wasmtime checks, when code is loaded, that the CPU has every feature it was
        // compiled with, and refuses it otherwise (the order then fails saying so).
        unsafe {
            config.cranelift_flag_enable("x86-64-v2");
        }
    }
    Engine::new(&config).map_err(|e| WasmEngineError::Start(Arc::new(e)))
}

/// Without a compiler, there is no portable engine to compile with either.
#[cfg(not(feature = "compiler"))]
fn portable_engine(metered: bool) -> Result<Engine, WasmEngineError> {
    new_engine(metered)
}

/// Makes this process a compiler when its first argument is [`COMPILER_ARG`]: reads a
/// module from stdin, writes its compiled code to stdout (or wasmtime's message to stderr)
/// and exits. Otherwise returns at once. Call it first thing in `main`.
pub fn serve_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(COMPILER_ARG)) {
        SERVES.store(true, Ordering::SeqCst);
        return;
    }
    // Dies with its parent, and nobody reads its memory meanwhile.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::prctl::set_dumpable(false);
    let metered = match args.next().as_deref().and_then(OsStr::to_str) {
        Some("metered") => true,
        Some("plain") => false,
        other => {
            eprintln!("{COMPILER_ARG}: expected `plain` or `metered`, not {other:?}");
            std::process::exit(2);
        }
    };
    let portable = match args.next().as_deref().and_then(OsStr::to_str) {
        Some(PORTABLE_ARG) => true,
        None => false,
        Some(other) => {
            eprintln!("{COMPILER_ARG}: expected `{PORTABLE_ARG}` or nothing, not {other:?}");
            std::process::exit(2);
        }
    };
    let compiled = compile_stdin(metered, portable).and_then(|code| {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&code)
            .and_then(|()| stdout.flush())
            .map_err(ServeError::WriteCode)
    });
    std::process::exit(match compiled {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("{error}");
            1
        }
    });
}

/// Compiles the module on stdin for an engine configured as the worker's (for the CPUs AWS
/// runs on when `portable`).
fn compile_stdin(metered: bool, portable: bool) -> Result<Vec<u8>, ServeError> {
    let mut binary = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut binary)
        .map_err(ServeError::ReadModule)?;
    if binary.len() as u64 > MAX_MODULE_BYTES {
        return Err(ServeError::TooLarge);
    }
    let engine = if portable {
        portable_engine(metered)?
    } else {
        new_engine(metered)?
    };
    compile_bytes(&engine, &binary)
}

/// Why the module `module` did not compile in this process, as a compiler child process
/// would have said it: wasmtime's refusal, or the compiler's own message.
fn module_error(module: String, error: ServeError) -> ModuleError {
    match error {
        ServeError::Invalid(source) => ModuleError::Invalid { module, source },
        other => ModuleError::CompilerFailed {
            module,
            message: other.to_string(),
        },
    }
}

/// Compiles `bytes`, a module or component in the binary or the text format, for `engine`.
fn compile_bytes(engine: &Engine, bytes: &[u8]) -> Result<Vec<u8>, ServeError> {
    let binary = as_binary(bytes)?;
    let kind = GuestKind::of(&binary).ok_or(ServeError::UnknownVersion)?;
    precompile(engine, &binary, kind).map_err(ServeError::Invalid)
}

/// `bytes` as a WebAssembly binary: as they are, or converted from the text format.
#[cfg(feature = "compiler")]
fn as_binary(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ServeError> {
    if bytes.starts_with(WASM_MAGIC) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    wat::parse_bytes(bytes).map_err(ServeError::NotWasm)
}

/// Without a compiler nothing is compiled, text or binary.
#[cfg(not(feature = "compiler"))]
fn as_binary(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ServeError> {
    Ok(std::borrow::Cow::Borrowed(bytes))
}

#[cfg(all(test, feature = "compiler", target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// A CPU with x86-64-v2's features and nothing more.
    fn v2_only(feature: &str) -> Option<bool> {
        Some(matches!(
            feature,
            "sse3" | "ssse3" | "sse4.1" | "sse4.2" | "popcnt" | "cmpxchg16b"
        ))
    }

    /// The same without POPCNT.
    fn v2_without_popcnt(feature: &str) -> Option<bool> {
        v2_only(feature).map(|has| has && feature != "popcnt")
    }

    /// An engine of the workers' configuration on a CPU `detect` describes. Its own
    /// compiler (the worker Lambda has none) is given a target, so that it infers no CPU
    /// feature of this machine, which wasmtime would check against `detect` too.
    #[expect(unsafe_code, reason = "a stand-in CPU for wasmtime's checks")]
    fn worker_engine_on(detect: fn(&str) -> Option<bool>) -> Engine {
        let mut config = engine_config(false);
        config.target("x86_64-unknown-linux-gnu").unwrap();
        // SAFETY: the engine only loads code here, to see what wasmtime accepts; nothing
        // it loads is run.
        unsafe {
            config.detect_host_feature(detect);
        }
        Engine::new(&config).unwrap()
    }

    /// The compile function's code needs x86-64-v2's features and no more, and wasmtime
    /// checks them when it loads the code: the SAFETY of `engine_for_cpus` rests on both.
    #[test]
    #[expect(unsafe_code, reason = "loading compiled code; nothing of it runs")]
    fn code_for_aws_hosts_loads_where_x86_64_v2_is_and_only_there() {
        let module = b"(module (func (export \"_start\") (drop (i64.popcnt (i64.const 7)))))";
        let engine = engine_for_cpus(false, CpuLevel::AwsHosts).unwrap();
        let code = compile_bytes(&engine, module).unwrap();
        // SAFETY: wasmtime's own code, compiled just above; it is only loaded.
        let loaded = unsafe { wasmtime::Module::deserialize(&worker_engine_on(v2_only), &code) };
        assert!(loaded.is_ok(), "{:?}", loaded.err());
        // SAFETY: as above.
        let refused =
            unsafe { wasmtime::Module::deserialize(&worker_engine_on(v2_without_popcnt), &code) };
        let error = format!("{:#}", refused.expect_err("refused without POPCNT"));
        assert!(error.contains("has_popcnt"), "{error}");
    }
}
