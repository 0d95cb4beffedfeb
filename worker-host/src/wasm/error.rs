//! Why a WebAssembly order could not start, as typed errors.
//!
//! [`WasmError`] is what [`WasmRuntime::run`](super::WasmRuntime::run) turns into the
//! order's failure reason (its `Display`): the engine could not be built
//! ([`WasmEngineError`]), the module cannot be found, read, compiled or linked
//! ([`ModuleError`]), or something the order grants cannot be given ([`GrantError`],
//! [`MountError`]). [`CacheError`] says why the compile cache on disk, or one of its
//! entries, is not used: it is only logged, and the module is compiled instead.
//!
//! Every message names the module, grant or file it is about and includes its cause
//! (wasmtime's with its whole chain), which is also the error's
//! [`source`](std::error::Error::source).

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;

use super::compile::MAX_MODULE_BYTES;

/// Why a WebAssembly order could not start: its failure reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// The engine the order runs on could not be built (a host problem: every order of
    /// the same kind fails alike).
    #[error(transparent)]
    Engine(#[from] WasmEngineError),
    /// The order's module cannot be prepared.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// Something the order grants its module cannot be given.
    #[error(transparent)]
    Grant(#[from] GrantError),
}

/// Why a wasmtime engine and its WASI linkers could not be built. It clones: the runtime
/// keeps the first failure and gives it to every later order (the causes are shared).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WasmEngineError {
    /// wasmtime refused the engine's configuration.
    #[error("starting wasmtime: {0:#}")]
    Start(#[source] Arc<wasmtime::Error>),
    /// WASI preview 1 could not be added to the core modules' linker.
    #[error("linking WASI preview 1: {0:#}")]
    WasiP1(#[source] Arc<wasmtime::Error>),
    /// WASI preview 2 could not be added to the components' linker.
    #[error("linking WASI preview 2: {0:#}")]
    WasiP2(#[source] Arc<wasmtime::Error>),
}

/// Why a module cannot be prepared to run. `module` is the order's `wasm.module` while the
/// file is being found, then the file's name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// The order's code root itself cannot be resolved.
    #[error("module {module} is not in the order's code (code root: {source})")]
    NoCodeRoot {
        /// The module.
        module: String,
        /// Why the code root cannot be resolved.
        source: io::Error,
    },
    /// There is no such file in the order's code.
    #[error("module {module} is not in the order's code ({source})")]
    NotInCode {
        /// The module.
        module: String,
        /// Why its path does not resolve.
        source: io::Error,
    },
    /// Its path leads (through symlinks) out of the order's code.
    #[error("module {module} leads out of the order's code")]
    OutsideCode {
        /// The module.
        module: String,
    },
    /// Its file cannot be read.
    #[error("module {module}: cannot be read: {source}")]
    Unreadable {
        /// The module.
        module: String,
        /// The cause.
        source: io::Error,
    },
    /// Its file is larger than a module may be.
    #[error("module {module}: is {size} bytes, more than the {MAX_MODULE_BYTES} a module may be")]
    TooLarge {
        /// The module.
        module: String,
        /// Its size in bytes.
        size: u64,
    },
    /// It is neither a WebAssembly binary nor valid text format.
    #[cfg(feature = "compiler")]
    #[error("module {module}: is neither a WebAssembly binary nor valid text format: {source}")]
    NotWasm {
        /// The module.
        module: String,
        /// Why it does not parse as text format.
        source: wat::Error,
    },
    /// A WebAssembly binary of a version or layer that is neither a core module nor a
    /// component.
    #[error("module {module}: is a WebAssembly binary of an unknown version or layer")]
    UnknownVersion {
        /// The module.
        module: String,
    },
    /// wasmtime rejects it (it does not validate or compile).
    #[error("module {module}: invalid: {source:#}")]
    Invalid {
        /// The module.
        module: String,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// It compiles to more code than is read back from a compiler.
    #[error("module {module}: compiles to more than {limit} bytes")]
    CodeTooLarge {
        /// The module.
        module: String,
        /// The most bytes of code accepted.
        limit: u64,
    },
    /// This build has no compiler (the worker Lambda's), and its order came with no
    /// compiled code.
    #[error(
        "module {module}: this worker has no compiler and its dispatch names no compiled code (on AWS, init-job has the compile function compile each module)"
    )]
    NoCompiler {
        /// The module.
        module: String,
    },
    /// The module file is not the one the run's compiled code was made from.
    #[error(
        "module {module}: its file (sha256 {found}) is not the one its run's code was compiled from ({expected})"
    )]
    NotTheCompiledModule {
        /// The module.
        module: String,
        /// The sha256 of the file the worker read.
        found: String,
        /// The sha256 init-job took of the module it packaged.
        expected: String,
    },
    /// The compile function did not store the module's code in time.
    #[error(
        "module {module}: its compiled code did not appear within {} s (see the compile function's log; the last look: {last})",
        waited.as_secs()
    )]
    CompiledCodeMissing {
        /// The module.
        module: String,
        /// How long the worker looked for it.
        waited: std::time::Duration,
        /// What the last look found.
        last: String,
    },
    /// The compile function could not compile it, and said why.
    #[error("{message}")]
    CompileFunctionFailed {
        /// The module.
        module: String,
        /// The compile function's message (`module run.wasm: invalid: ...`).
        message: String,
    },
    /// The code the compile function made does not load in this worker.
    #[error(
        "module {module}: the code compiled for it does not load in this worker (deploy the worker and compile functions from one build, on CPUs with x86-64-v2's features): {source:#}"
    )]
    SharedCodeDoesNotLoad {
        /// The module.
        module: String,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// The code just compiled for it does not load.
    #[error("module {module}: its compiled code does not load: {source:#}")]
    CodeDoesNotLoad {
        /// The module.
        module: String,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// A core module without the `_start` export a WASI command has.
    #[error(
        "module {module}: has no `_start` export: build it as a WASI command (reactor modules cannot run as orders)"
    )]
    NoStart {
        /// The module.
        module: String,
    },
    /// It imports something the sandbox does not provide (wasmtime's message names it).
    #[error("module {module}: cannot be linked: {source:#}")]
    Link {
        /// The module.
        module: String,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// A component that does not export `wasi:cli/run`.
    #[error("module {module}: is not a WASI command (no `wasi:cli/run` export): {source:#}")]
    NotCommand {
        /// The module.
        module: String,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// The task preparing or compiling it on the blocking pool failed (it panicked or was
    /// cancelled).
    #[error("module {module}: {step}: {source}")]
    Task {
        /// The module.
        module: String,
        /// What the task was doing (`preparing`, `compiling`).
        step: &'static str,
        /// The cause.
        source: tokio::task::JoinError,
    },
    /// The compiler process could not be started, fed or read.
    #[error("module {module}: {step} the compiler {compiler}: {source}")]
    CompilerIo {
        /// The module.
        module: String,
        /// What failed (`starting`, `waiting for`, `writing the module to`, `reading the
        /// code from`).
        step: &'static str,
        /// The compiler's binary.
        compiler: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The compiler process's pipes were not opened.
    #[error("module {module}: the compiler's pipes were not opened")]
    CompilerPipes {
        /// The module.
        module: String,
    },
    /// The compiler process failed and said why (for an invalid module, wasmtime's
    /// message: `invalid: ...`).
    #[error("module {module}: {message}")]
    CompilerFailed {
        /// The module.
        module: String,
        /// What the compiler wrote to its stderr (bounded), trimmed.
        message: String,
    },
    /// The compiler process failed without a word.
    #[error("module {module}: the compiler {compiler} ended with {status}")]
    CompilerEnded {
        /// The module.
        module: String,
        /// The compiler's binary.
        compiler: PathBuf,
        /// How it ended.
        status: ExitStatus,
    },
}

/// Why what an order grants its module cannot be given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// `wasm.env` lists a variable the order does not have.
    #[error("wasm.env lists {name}, but the order has no variable {name}")]
    MissingVariable {
        /// The variable.
        name: String,
    },
    /// A folder of `wasm.dirs` is not a folder of the order's code.
    #[error("wasm.dirs[{index}] ({host} -> {guest}): {source}")]
    Mount {
        /// Its index in `wasm.dirs`.
        index: usize,
        /// Its `host` path.
        host: String,
        /// Its `guest` path.
        guest: String,
        /// What is wrong with it.
        source: MountError,
    },
    /// A folder of `wasm.dirs` cannot be opened.
    #[error("wasm.dirs[{index}] ({host}): cannot open: {source:#}")]
    OpenMount {
        /// Its index in `wasm.dirs`.
        index: usize,
        /// Its `host` path.
        host: String,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// The attempt's events folder cannot be opened.
    #[error("cannot open the events folder: {source:#}")]
    OpenEvents {
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// The folder of the attempt's output file cannot be opened.
    #[error("cannot open the folder of /sluice/output: {source:#}")]
    OpenOutput {
        /// wasmtime's error.
        source: wasmtime::Error,
    },
}

/// Why a folder to mount is not a folder of the order's code. `host` is the folder's path
/// in the code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The order's code root itself cannot be resolved.
    #[error("{host} does not exist in the order's code (code root: {source})")]
    NoCodeRoot {
        /// The folder.
        host: String,
        /// Why the code root cannot be resolved.
        source: io::Error,
    },
    /// There is no such path in the order's code.
    #[error("{host} does not exist in the order's code ({source})")]
    Missing {
        /// The folder.
        host: String,
        /// Why its path does not resolve.
        source: io::Error,
    },
    /// Its path leads (through symlinks) out of the order's code.
    #[error("{host} leads out of the order's code")]
    Outside {
        /// The folder.
        host: String,
    },
    /// It is a file, not a folder.
    #[error("{host} is not a folder")]
    NotAFolder {
        /// The folder.
        host: String,
    },
}

/// Why the compile cache folder, or one of its entries, is not used (logged with the
/// folder or file; modules are then compiled instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The folder cannot be created.
    #[error("cannot create it: {0}")]
    CreateDir(#[source] io::Error),
    /// The folder's owner and permissions cannot be read.
    #[error("cannot read its owner and permissions: {0}")]
    InspectDir(#[source] io::Error),
    /// The folder belongs to another user.
    #[error("it belongs to another user")]
    DirNotOurs,
    /// Others than its owner can write to the folder.
    #[error("others can write to it")]
    DirWritable,
    /// No random key could be made.
    #[error("cannot make a key: {0}")]
    MakeKey(#[source] getrandom::Error),
    /// The key file cannot be created.
    #[error("cannot create its key: {0}")]
    CreateKey(#[source] io::Error),
    /// The key cannot be written.
    #[error("cannot write its key: {0}")]
    WriteKey(#[source] io::Error),
    /// The key file's owner and permissions cannot be read.
    #[error("cannot read its key file's owner and permissions: {0}")]
    InspectKey(#[source] io::Error),
    /// The key file is not a file, or belongs to another user.
    #[error("its key file is not a file of this user")]
    KeyNotOurs,
    /// Others than its owner can read the key file.
    #[error("its key file is readable by others")]
    KeyReadable,
    /// The key cannot be read.
    #[error("cannot read its key: {0}")]
    ReadKey(#[source] io::Error),
    /// The key file does not hold a key.
    #[error("its key file is not a key")]
    NotAKey,
    /// An entry cannot be read.
    #[error("cannot read the entry: {0}")]
    ReadEntry(#[source] io::Error),
    /// An entry's HMAC does not match: someone else wrote it, or it is damaged.
    #[error("its authentication code does not match (not written by this cache)")]
    EntryNotOurs,
    /// An entry's code does not load in this engine.
    #[error("its code does not load: {0:#}")]
    EntryDoesNotLoad(#[source] wasmtime::Error),
}

/// Why a compiler process could not compile the module on its stdin. It writes this to its
/// stderr, which the worker reads back as [`ModuleError::CompilerFailed`].
#[derive(Debug, thiserror::Error)]
pub(super) enum ServeError {
    /// The module cannot be read from stdin.
    #[error("reading the module: {0}")]
    ReadModule(#[source] io::Error),
    /// The module is larger than a module may be.
    #[error("is more than the {MAX_MODULE_BYTES} bytes a module may be")]
    TooLarge,
    /// A WebAssembly binary that is neither a core module nor a component.
    #[error("is a WebAssembly binary of an unknown version or layer")]
    UnknownVersion,
    /// Neither a WebAssembly binary nor valid text format.
    #[cfg(feature = "compiler")]
    #[error("is neither a WebAssembly binary nor valid text format: {0}")]
    NotWasm(#[source] wat::Error),
    /// The engine cannot be built.
    #[error(transparent)]
    Engine(#[from] WasmEngineError),
    /// wasmtime rejects the module.
    #[error("invalid: {0:#}")]
    Invalid(#[source] wasmtime::Error),
    /// The compiled code cannot be written to stdout.
    #[error("writing the compiled code: {0}")]
    WriteCode(#[source] io::Error),
}
