//! From a module file to something ready to instantiate, doing the expensive part rarely.
//!
//! Compiling a module with Cranelift costs from milliseconds to seconds; a job runs the same
//! module again and again. So compiled code is kept at two levels:
//! - on disk, in a folder of files named by the module's sha256 and a hash of the engine's
//!   configuration (wasmtime version, target, settings such as fuel metering), written
//!   atomically; a second process (or the next `sluice run`) skips compilation;
//! - in memory, the linked and type-checked [`Prepared`] guest, so the next order of this
//!   process only builds a store and instantiates.
//!
//! What is loaded from disk runs as native code in this process, outside any sandbox, so a
//! file there is trusted only when it carries an HMAC-SHA256, under a key made at random
//! in the cache folder, of the configuration, the module's digest and the code: a folder
//! someone else filled (a repository shipping one, a guest or order that wrote into it
//! without the key) yields entries that fail the check and are compiled afresh. The folder
//! must belong to this user and be writable by no one else, and it is never the state
//! folder (which a repository can ship). This is why the cache is ours and not wasmtime's
//! own, which loads whatever its folder holds. The worker Lambda and CodeBuild run without
//! it: they compile nothing, and load the code the compile function made for each order's
//! run (`/tmp` outlives one run's orders).
//!
//! Text-format modules (`.wat`) are accepted and converted first. What is neither a core
//! module nor a component, or imports something the sandbox does not provide, is refused
//! with wasmtime's message, which names the import.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use data_encoding::HEXLOWER;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, InstancePre, Module, Precompiled};
use wasmtime_wasi::p2::bindings::CommandPre;

use super::error::{CacheError, ModuleError};
use super::sandbox::GuestState;

/// Largest module file read.
pub const MAX_MODULE_BYTES: u64 = sluice_contract::job::MAX_MODULE_BYTES;
/// Prepared guests kept in memory per process (dropped all at once when full).
const MAX_PREPARED: usize = 64;
/// The first bytes of every WebAssembly binary.
pub(super) const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// The version field of a core module (version 1, layer 0).
const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];
/// The version field of a component (version 0x0d, layer 1).
const COMPONENT_VERSION: &[u8] = &[0x0d, 0, 1, 0];

/// A guest linked against the sandbox, ready to instantiate in a fresh store.
#[derive(Clone)]
pub enum Prepared {
    /// A WASI preview 1 core module (`wasm32-wasi`, `wasm32-wasip1`); runs `_start`.
    Module(InstancePre<GuestState>),
    /// A WASI preview 2 component exporting `wasi:cli/run`.
    Component(CommandPre<GuestState>),
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Prepared::Module(_) => "Prepared::Module",
            Prepared::Component(_) => "Prepared::Component",
        })
    }
}

/// Where a prepared guest came from (written to the order's log).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Provenance {
    /// Compiled now, in this long.
    Compiled(Duration),
    /// Loaded from the on-disk cache.
    DiskCache,
    /// Already prepared in this process.
    MemoryCache,
    /// Compiled by the compile function, for the order's run.
    Shared,
}

/// What [`GuestCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// The guest, prepared (from memory or the disk cache).
    Ready(Prepared, Provenance),
    /// It must be compiled first.
    Compile(Source),
}

/// A guest to compile: its binary.
pub struct Source {
    /// The module's file name, for messages.
    pub name: String,
    /// The binary (text format already converted, where this build has a compiler).
    pub binary: Vec<u8>,
    digest: [u8; 32],
    /// The sha256 of the module's file as read (before a text-format module is converted),
    /// which init_job names the run's compiled code by.
    file_digest: [u8; 32],
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("bytes", &self.binary.len())
            .finish()
    }
}

impl Source {
    /// The guest named `name` whose binary is `binary`.
    pub fn new(name: String, binary: Vec<u8>) -> Self {
        let digest = Sha256::digest(&binary).into();
        Source {
            name,
            binary,
            digest,
            file_digest: digest,
        }
    }

    /// The sha256 of the module's file, hex.
    pub fn file_digest_hex(&self) -> String {
        HEXLOWER.encode(&self.file_digest)
    }
}

/// The two kinds of WebAssembly binary a guest may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// A core module (WASI preview 1).
    Module,
    /// A component (WASI preview 2).
    Component,
}

impl GuestKind {
    /// The kind of `binary`, from its version field.
    pub fn of(binary: &[u8]) -> Option<GuestKind> {
        match binary.get(4..8) {
            Some(CORE_MODULE_VERSION) => Some(GuestKind::Module),
            Some(COMPONENT_VERSION) => Some(GuestKind::Component),
            _ => None,
        }
    }
}

/// The linkers of one engine: what a guest may import.
pub struct Linkers {
    /// For core modules: WASI preview 1.
    pub module: wasmtime::Linker<GuestState>,
    /// For components: WASI preview 2.
    pub component: wasmtime::component::Linker<GuestState>,
}

/// Compiled code on disk and prepared guests in memory, for one engine.
pub struct GuestCache {
    engine: Engine,
    linkers: Linkers,
    disk: Option<DiskCache>,
    config_tag: String,
    prepared: Mutex<HashMap<[u8; 32], Prepared>>,
}

impl std::fmt::Debug for GuestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestCache")
            .field("disk", &self.disk.as_ref().map(|disk| &disk.dir))
            .field("config_tag", &self.config_tag)
            .finish_non_exhaustive()
    }
}

impl GuestCache {
    /// A cache for `engine`, keeping compiled code under `disk` when given and usable.
    pub fn new(engine: Engine, linkers: Linkers, disk: Option<PathBuf>) -> Self {
        let config_tag = config_tag(&engine);
        // A build without a compiler writes nothing there.
        let disk = disk.filter(|_| cfg!(feature = "compiler"));
        let disk = disk.and_then(|dir| match DiskCache::open(&dir) {
            Ok(disk) => Some(disk),
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "not caching compiled modules on disk");
                None
            }
        });
        GuestCache {
            engine,
            linkers,
            disk,
            config_tag,
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// The engine guests of this cache run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads the guest at `path` and finds it prepared in memory or compiled on disk
    /// (linking it), or says it must be compiled. Blocking: call it from the blocking pool.
    ///
    /// # Errors
    ///
    /// Why the module (named by its file name) cannot be read or linked.
    pub fn lookup(&self, path: &Path) -> Result<Lookup, ModuleError> {
        let name = path_name(path);
        let (binary, file_digest) = read_binary(path, &name)?;
        let digest: [u8; 32] = Sha256::digest(&binary).into();
        if let Some(prepared) = self.lock_prepared().get(&digest) {
            return Ok(Lookup::Ready(prepared.clone(), Provenance::MemoryCache));
        }
        let source = Source {
            name,
            binary,
            digest,
            file_digest,
        };
        if let Some((disk, file)) = self.disk_entry(&digest)
            && file.is_file()
        {
            match self.load(disk, &file, &source) {
                Ok(prepared) => {
                    let prepared = prepared?;
                    return Ok(Lookup::Ready(
                        self.keep(&source, prepared),
                        Provenance::DiskCache,
                    ));
                }
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "ignoring an unusable compile cache entry");
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        Ok(Lookup::Compile(source))
    }

    /// Links `code`, compiled from `source` by [`compiler`](super::compiler) for this
    /// cache's engine, keeps it on disk and in memory. Blocking.
    ///
    /// # Errors
    ///
    /// Why the module cannot be prepared: the code does not load, or the guest cannot be
    /// linked.
    #[expect(unsafe_code, reason = "wasmtime trusts deserialized code; see SAFETY")]
    pub fn finish(&self, source: &Source, code: &[u8]) -> Result<Prepared, ModuleError> {
        // SAFETY: `code` was made from `source` a moment ago by this program's own compiler,
        // in this process or in a child process of this binary that got the module on its
        // stdin and answered on its stdout, with an engine of this configuration. Only a
        // process of this user could write into that pipe (through `/proc/<child>/fd/1`,
        // before the child makes itself undumpable): on AWS there is none but the worker
        // (one order at a time, its processes gone before the next); locally such a process
        // — a shell order — runs as the user and already has the user's every power.
        let prepared = unsafe { self.link_code(source, code) }.map_err(|error| {
            ModuleError::CodeDoesNotLoad {
                module: source.name.clone(),
                source: error,
            }
        })??;
        if let Some((disk, file)) = self.disk_entry(&source.digest) {
            let sealed = disk.seal(&self.config_tag, &source.digest, code.to_vec());
            if let Err(error) = write_atomically(&file, &sealed) {
                tracing::warn!(file = %file.display(), %error, "could not cache the compiled module");
            }
        }
        Ok(self.keep(source, prepared))
    }

    /// Links `code` that the compile function compiled from `source` for this order's run
    /// ([`super::SharedCompiled`]), for this order only: it is not kept in memory, where an
    /// order of another run with the same module would find it. Blocking.
    ///
    /// # Errors
    ///
    /// The code does not load (an engine of another configuration or wasmtime version
    /// made it: wasmtime checks), or the guest cannot be linked.
    #[expect(unsafe_code, reason = "wasmtime trusts deserialized code; see SAFETY")]
    pub fn adopt_shared(&self, source: &Source, code: &[u8]) -> Result<Prepared, ModuleError> {
        // SAFETY: `code` is what Sluice's compile function compiled, with this engine's
        // configuration, from a module whose sha256 is `source`'s file's (checked by the
        // caller against the digest init_job took of the module it packaged, which names
        // the run's object; the compile function checks the module it compiles against it
        // too). The object is written only by init-job's role: only if absent, through the
        // one URL init-job presigns for the compile function, which runs no order. Workers
        // get a URL to read it, none to write it, and their roles may not touch the
        // bucket. wasmtime itself refuses code of another version, target or
        // configuration.
        let prepared = unsafe { self.link_code(source, code) }.map_err(|error| {
            ModuleError::SharedCodeDoesNotLoad {
                module: source.name.clone(),
                source: error,
            }
        })??;
        Ok(prepared)
    }

    /// Keeps `prepared` in memory for the next order of this process.
    fn keep(&self, source: &Source, prepared: Prepared) -> Prepared {
        let mut cache = self.lock_prepared();
        if cache.len() >= MAX_PREPARED {
            cache.clear();
        }
        cache.insert(source.digest, prepared.clone());
        prepared
    }

    fn lock_prepared(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Prepared>> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The disk cache and the file its entry for `digest` would be.
    fn disk_entry(&self, digest: &[u8; 32]) -> Option<(&DiskCache, PathBuf)> {
        self.disk.as_ref().map(|disk| {
            let file = format!("{}-{}.cwasm", HEXLOWER.encode(digest), self.config_tag);
            (disk, disk.dir.join(file))
        })
    }

    /// Loads compiled code written by [`Self::finish`]. The outer error means the file is
    /// unusable (recompile); the inner one that the guest cannot be linked.
    #[expect(unsafe_code, reason = "wasmtime trusts deserialized code; see SAFETY")]
    fn load(
        &self,
        disk: &DiskCache,
        file: &Path,
        source: &Source,
    ) -> Result<Result<Prepared, ModuleError>, CacheError> {
        let sealed = std::fs::read(file).map_err(CacheError::ReadEntry)?;
        let code = disk
            .unseal(&self.config_tag, &source.digest, &sealed)
            .ok_or(CacheError::EntryNotOurs)?;
        // SAFETY: `code` is exactly what a compiler made, in this cache, for this module and
        // an engine of this configuration: its HMAC, under a key only this cache's folder
        // holds and nothing but this code writes, covers the configuration, the module's
        // digest and every byte of the code (so it is neither partial, damaged, another
        // module's, nor anyone else's).
        unsafe { self.link_code(source, code) }.map_err(CacheError::EntryDoesNotLoad)
    }

    /// Loads compiled `code` of the guest `source` and links it. The outer error (wasmtime's)
    /// means the code does not load; the inner one that the guest cannot be linked.
    ///
    /// # Safety
    ///
    /// wasmtime runs deserialized code as it is: `code` must be what wasmtime's own
    /// compiler produced for an engine of this configuration (wasmtime checks version and
    /// settings itself, erring on a mismatch, but not the code).
    #[expect(unsafe_code, reason = "wasmtime trusts deserialized code; see Safety")]
    unsafe fn link_code(
        &self,
        source: &Source,
        code: &[u8],
    ) -> wasmtime::Result<Result<Prepared, ModuleError>> {
        Ok(match Engine::detect_precompiled(code) {
            Some(Precompiled::Component) => {
                // SAFETY: the caller's promise.
                let component = unsafe { Component::deserialize(&self.engine, code) }?;
                self.link_component(&source.name, &component)
            }
            _ => {
                // SAFETY: the caller's promise (and wasmtime refuses what is not a module).
                let module = unsafe { Module::deserialize(&self.engine, code) }?;
                self.link_module(&source.name, &module)
            }
        })
    }

    /// Links the core module `name`.
    fn link_module(&self, name: &str, module: &Module) -> Result<Prepared, ModuleError> {
        if module.get_export("_start").is_none() {
            return Err(ModuleError::NoStart {
                module: name.to_owned(),
            });
        }
        let pre = self
            .linkers
            .module
            .instantiate_pre(module)
            .map_err(|source| ModuleError::Link {
                module: name.to_owned(),
                source,
            })?;
        Ok(Prepared::Module(pre))
    }

    /// Links the component `name`.
    fn link_component(&self, name: &str, component: &Component) -> Result<Prepared, ModuleError> {
        let pre = self
            .linkers
            .component
            .instantiate_pre(component)
            .map_err(|source| ModuleError::Link {
                module: name.to_owned(),
                source,
            })?;
        let command = CommandPre::new(pre).map_err(|source| ModuleError::NotCommand {
            module: name.to_owned(),
            source,
        })?;
        Ok(Prepared::Component(command))
    }
}

/// What names `engine`'s configuration in the disk cache: code compiled for another
/// configuration is never looked for.
#[cfg(feature = "compiler")]
fn config_tag(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Without a compiler (which alone can say what the configuration is) there is no disk
/// cache to name entries in.
#[cfg(not(feature = "compiler"))]
fn config_tag(_engine: &Engine) -> String {
    String::new()
}

/// A module's file name, for messages.
fn path_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The module `name` at `path` as a binary: read (bounded), and converted from the text
/// format if need be; with the sha256 of the file as read.
fn read_binary(path: &Path, name: &str) -> Result<(Vec<u8>, [u8; 32]), ModuleError> {
    let unreadable = |source: std::io::Error| ModuleError::Unreadable {
        module: name.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > MAX_MODULE_BYTES {
        return Err(ModuleError::TooLarge {
            module: name.to_owned(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let file_digest = Sha256::digest(&bytes).into();
    if bytes.starts_with(WASM_MAGIC) {
        return Ok((bytes, file_digest));
    }
    text_to_binary(bytes, name).map(|binary| (binary, file_digest))
}

/// A text-format module converted to a binary.
#[cfg(feature = "compiler")]
fn text_to_binary(text: Vec<u8>, name: &str) -> Result<Vec<u8>, ModuleError> {
    match wat::parse_bytes(&text) {
        Ok(binary) => Ok(binary.into_owned()),
        Err(source) => Err(ModuleError::NotWasm {
            module: name.to_owned(),
            source,
        }),
    }
}

/// Without a compiler the text stays as it is: only the code compiled from it is loaded,
/// found by the file's digest.
#[cfg(not(feature = "compiler"))]
fn text_to_binary(text: Vec<u8>, _name: &str) -> Result<Vec<u8>, ModuleError> {
    Ok(text)
}

type CacheMac = Hmac<Sha256>;

/// The name of the key file in the cache folder.
const KEY_FILE: &str = "key";

/// The on-disk level: a private folder and the key its entries are authenticated with.
struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl DiskCache {
    /// Opens (creating) the cache folder `dir` and its key.
    fn open(dir: &Path) -> Result<DiskCache, CacheError> {
        private_dir(dir)?;
        let key = read_or_make_key(&dir.join(KEY_FILE))?;
        Ok(DiskCache {
            dir: dir.to_owned(),
            key,
        })
    }

    fn mac(&self, config_tag: &str, digest: &[u8; 32], code: &[u8]) -> CacheMac {
        let mut mac = CacheMac::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(config_tag.as_bytes());
        mac.update(&[0]);
        mac.update(digest);
        mac.update(code);
        mac
    }

    /// Compiled code as stored: its HMAC, then the code.
    fn seal(&self, config_tag: &str, digest: &[u8; 32], mut code: Vec<u8>) -> Vec<u8> {
        let tag = self.mac(config_tag, digest, &code).finalize().into_bytes();
        code.splice(0..0, tag);
        code
    }

    /// The code of a stored file, when its HMAC matches (compared in constant time).
    fn unseal<'a>(
        &self,
        config_tag: &str,
        digest: &[u8; 32],
        sealed: &'a [u8],
    ) -> Option<&'a [u8]> {
        let (tag, code) = sealed.split_at_checked(32)?;
        self.mac(config_tag, digest, code)
            .verify_slice(tag)
            .is_ok()
            .then_some(code)
    }
}

/// The cache's key: read from `file` (which must be ours and readable by no one else), or
/// made at random and written there, readable by this user only, when there is none.
fn read_or_make_key(file: &Path) -> Result<[u8; 32], CacheError> {
    let mut key = [0u8; 32];
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(mut created) => {
            getrandom::fill(&mut key).map_err(CacheError::MakeKey)?;
            created
                .write_all(&key)
                .and_then(|()| created.sync_all())
                .map_err(CacheError::WriteKey)?;
            return Ok(key);
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(CacheError::CreateKey(error)),
    }
    let meta = std::fs::symlink_metadata(file).map_err(CacheError::InspectKey)?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(CacheError::KeyNotOurs);
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(CacheError::KeyReadable);
    }
    let bytes = std::fs::read(file).map_err(CacheError::ReadKey)?;
    key.copy_from_slice(
        bytes
            .get(..32)
            .filter(|_| bytes.len() == 32)
            .ok_or(CacheError::NotAKey)?,
    );
    Ok(key)
}

/// Creates `dir` (0700) if needed and checks nobody but us can write there, since what is
/// loaded from it runs as native code.
fn private_dir(dir: &Path) -> Result<(), CacheError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(CacheError::CreateDir)?;
    let meta = std::fs::metadata(dir).map_err(CacheError::InspectDir)?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(CacheError::DirNotOurs);
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(CacheError::DirWritable);
    }
    Ok(())
}

/// Writes `bytes` to a temporary file next to `file`, then renames it into place.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(file).map_err(|e| e.error)?;
    Ok(())
}
