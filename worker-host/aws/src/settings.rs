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
/// commands inherit (`PATH`, `HOME`, `LANG`), where orders' work folders are made (`temp`:
/// the only writable folder on Lambda is /tmp), and the log cap (`SLUICE_MAX_LOG_MB`, default
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
        // No compile cache: the worker compiles nothing (its build has no compiler). It
        // loads the code the compile function made for its order's run, which the
        // dispatch points to.
        wasm: Arc::new(WasmRuntime::new(None).compiling_in(CompileIn::Nowhere)),
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
