//! The worker's settings on AWS, from its environment: what the Lambda handler and the
//! CodeBuild entrypoint run each dispatch payload with.

use std::sync::Arc;

use sluice_worker::WorkerConfig;
use sluice_worker::wasm::{CompileIn, WasmRuntime};

/// A setting of the worker's environment is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// `SLUICE_MAX_LOG_MB` is not a positive whole number.
    #[error("SLUICE_MAX_LOG_MB={0:?} is not a positive number of MiB")]
    MaxLog(String),
}

/// The worker's settings from its environment (read through `lookup`): the host variables
/// commands inherit (`PATH`, `HOME`, `LANG`), where compiled modules are cached (`temp`: the
/// only writable folder on Lambda is /tmp), and the log cap (`SLUICE_MAX_LOG_MB`, default
/// 64).
///
/// # Errors
///
/// [`SettingError`] naming the malformed variable.
pub fn worker_config(
    lookup: impl Fn(&str) -> Option<String>,
    temp: &std::path::Path,
) -> Result<WorkerConfig, SettingError> {
    let host_env = ["PATH", "HOME", "LANG"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), lookup(name)?)))
        .collect();
    let mut config = WorkerConfig {
        work_root: Some(temp.to_owned()),
        host_env,
        // No compile cache on disk: what is loaded from it runs as native code, and `/tmp`
        // outlives a run's orders on a warm Lambda; the warm process keeps prepared
        // modules in memory instead. Compilation runs in a child process of this binary,
        // killed at the order's deadline.
        wasm: Arc::new(WasmRuntime::new(None).compiling_in(CompileIn::child_of_this_binary())),
        ..WorkerConfig::default()
    };
    if let Some(text) = lookup("SLUICE_MAX_LOG_MB") {
        let mib: u64 = text
            .trim()
            .parse()
            .ok()
            .filter(|&mib| mib > 0)
            .ok_or(SettingError::MaxLog(text))?;
        config.max_log_bytes = mib << 20;
    }
    Ok(config)
}
