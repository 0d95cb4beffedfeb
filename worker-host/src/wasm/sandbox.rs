//! What a guest may see: exactly what its order grants, nothing of the host.
//!
//! The WASI context starts empty and gets only: `argv` (the module's file name, then the
//! order's `args`), the listed variables with their decrypted values plus Sluice's own
//! `SLUICE_*` context, the listed folders of the code root (read-only unless `rw`), the
//! events folder at `/sluice/events` and the folder of its output file at `/sluice`
//! (`/sluice/output`, named by `SLUICE_OUTPUT` too). Directory access goes through cap-std handles opened
//! on those folders, so `..`, absolute paths and symlinks cannot reach past them; stdin is
//! empty; sockets and name lookup are refused. A mount is resolved and checked to stay in
//! the code root before it is opened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice_contract::events::{EVENTS_DIR_VAR, GUEST_EVENTS_DIR};
use sluice_contract::job::{DirMode, WasmSpec};
use sluice_contract::outputs::{OUTPUT_VAR, WASM_OUTPUT_PATH};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder, WasiCtxView, WasiView};

use super::error::{GrantError, MountError};
use super::limits::MemoryGuard;
use super::output::GuestOutput;
use crate::log_sink::LogSender;

/// The data of a guest's store: its WASI context and its memory budget.
pub struct GuestState {
    wasi: WasiP1Ctx,
    /// The memory budget (checked after the run for a refusal).
    pub memory: MemoryGuard,
}

impl GuestState {
    /// The WASI preview 1 view, for the core-module linker.
    pub fn wasi_p1(&mut self) -> &mut WasiP1Ctx {
        &mut self.wasi
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

/// Everything the order grants its guest.
#[derive(Debug)]
pub struct Grants<'a> {
    /// The order's `wasm` field.
    pub spec: &'a WasmSpec,
    /// The order's variables, decrypted, and its inputs (only the listed ones are passed
    /// on).
    pub variables: &'a BTreeMap<String, String>,
    /// Sluice's context variables (`SLUICE_RUN_ID`...), always passed.
    pub context: &'a [(String, String)],
    /// The unpacked code root the module and mounts are relative to.
    pub code_root: &'a Path,
    /// The attempt's events folder (host side).
    pub events_dir: &'a Path,
    /// The folder of the attempt's output file (host side), the guest's `/sluice`.
    pub publish_dir: &'a Path,
}

/// Where a guest sees the folder of its output file.
const GUEST_SLUICE_DIR: &str = "/sluice";

/// Builds the guest's store data.
///
/// # Errors
///
/// Why the order fails: a listed variable without a value, a mount that is missing, leaves
/// the code root or cannot be opened.
pub fn guest_state(grants: &Grants<'_>, log: &LogSender) -> Result<GuestState, GrantError> {
    let spec = grants.spec;
    let mut builder = WasiCtxBuilder::new();
    builder.arg(argv0(&spec.module));
    builder.args(&spec.args);
    for name in &spec.env {
        let value = grants
            .variables
            .get(name)
            .ok_or_else(|| GrantError::MissingVariable { name: name.clone() })?;
        builder.env(name, value);
    }
    for (name, value) in grants.context {
        builder.env(name, value);
    }
    builder.env(EVENTS_DIR_VAR, GUEST_EVENTS_DIR);
    builder.env(OUTPUT_VAR, WASM_OUTPUT_PATH);
    for (i, dir) in spec.dirs.iter().enumerate() {
        let host =
            mount_source(grants.code_root, &dir.host).map_err(|source| GrantError::Mount {
                index: i,
                host: dir.host.clone(),
                guest: dir.guest.clone(),
                source,
            })?;
        let perms = match dir.mode {
            DirMode::Ro => FsPerms::ReadOnly,
            DirMode::Rw => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&host, &dir.guest, perms)
            .map_err(|source| GrantError::OpenMount {
                index: i,
                host: dir.host.clone(),
                source,
            })?;
    }
    // The events folder stays the first mount after the order's own (file descriptor 3
    // when it has none); `/sluice/output` is reached through the folder mounted at
    // `/sluice` after it (a guest resolves a path through the longest mount it starts with).
    builder
        .preopened_dir(grants.events_dir, GUEST_EVENTS_DIR, FsPerms::ReadWrite)
        .map_err(|source| GrantError::OpenEvents { source })?;
    builder
        .preopened_dir(grants.publish_dir, GUEST_SLUICE_DIR, FsPerms::ReadWrite)
        .map_err(|source| GrantError::OpenOutput { source })?;
    builder
        .stdout(GuestOutput::new(log.clone()))
        .stderr(GuestOutput::new(log.clone()))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    Ok(GuestState {
        wasi: builder.build_p1(),
        memory: MemoryGuard::new(
            spec.memory_mb
                .unwrap_or(sluice_contract::validate::DEFAULT_WASM_MEMORY_MB),
        ),
    })
}

/// `argv[0]`: the module's file name, as a shell would pass a program's name.
fn argv0(module: &str) -> &str {
    module.rsplit('/').next().unwrap_or(module)
}

/// Why a path of the order's code could not be used.
pub(super) enum NotInCode {
    /// The code root itself cannot be resolved: the cause.
    CodeRoot(std::io::Error),
    /// It does not exist (or cannot be reached): the cause.
    Missing(std::io::Error),
    /// It resolves (through symlinks) to somewhere outside the code root.
    Outside,
}

/// The real path behind `relative`, checked to stay inside the code root once symlinks are
/// followed (the unpacker already refuses links that point out; this is the last check
/// before a module is loaded or a folder is handed to a guest).
pub(super) fn resolve_in_code(code_root: &Path, relative: &str) -> Result<PathBuf, NotInCode> {
    let root = code_root.canonicalize().map_err(NotInCode::CodeRoot)?;
    let path = root
        .join(relative)
        .canonicalize()
        .map_err(NotInCode::Missing)?;
    if path.starts_with(&root) {
        Ok(path)
    } else {
        Err(NotInCode::Outside)
    }
}

/// The real folder behind a mount, checked to be a folder inside the code root.
fn mount_source(code_root: &Path, host: &str) -> Result<PathBuf, MountError> {
    let path = resolve_in_code(code_root, host).map_err(|e| {
        let host = host.to_owned();
        match e {
            NotInCode::CodeRoot(source) => MountError::NoCodeRoot { host, source },
            NotInCode::Missing(source) => MountError::Missing { host, source },
            NotInCode::Outside => MountError::Outside { host },
        }
    })?;
    if !path.is_dir() {
        return Err(MountError::NotAFolder {
            host: host.to_owned(),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_is_the_file_name() {
        assert_eq!(argv0("bin/tool.wasm"), "tool.wasm");
        assert_eq!(argv0("tool.wasm"), "tool.wasm");
    }

    #[test]
    fn mounts_must_be_folders_inside_the_code() {
        let code = tempfile::tempdir().unwrap();
        std::fs::create_dir(code.path().join("data")).unwrap();
        std::fs::write(code.path().join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", code.path().join("out")).unwrap();
        assert!(mount_source(code.path(), "data").is_ok());
        assert!(mount_source(code.path(), ".").is_ok());
        assert!(
            mount_source(code.path(), "out")
                .unwrap_err()
                .to_string()
                .contains("leads out")
        );
        assert!(
            mount_source(code.path(), "file")
                .unwrap_err()
                .to_string()
                .contains("not a folder")
        );
        assert!(
            mount_source(code.path(), "gone")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}
