//! The worker on AWS: one dispatch payload run by the worker host over the presigned URLs
//! it carries ([`HttpTransfer`](crate::transfer::HttpTransfer)). The worker uses no AWS credentials (its role may read and
//! write no data): the Lambda handler and the CodeBuild entrypoint both end here.

use std::sync::Arc;

use sluice_worker::WorkerConfig;
use sluice_worker::wasm::{CompileIn, WasmRuntime};

/// The worker's settings from its environment (read through `lookup`): the host variables
/// commands inherit (`PATH`, `HOME`, `LANG`), where compiled modules are cached (`temp`: the
/// only writable folder on Lambda is /tmp), and the log cap (`SLUICE_MAX_LOG_MB`, default
/// 64).
///
/// # Errors
///
/// A message naming a malformed variable.
pub fn worker_config(
    lookup: impl Fn(&str) -> Option<String>,
    temp: &std::path::Path,
) -> Result<WorkerConfig, String> {
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
            .ok_or_else(|| format!("SLUICE_MAX_LOG_MB={text:?} is not a positive number of MiB"))?;
        config.max_log_bytes = mib << 20;
    }
    Ok(config)
}
