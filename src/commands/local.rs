//! What `sluice run` and `sluice resume` share: the local runtime with its workers and
//! sentinel, and following a run to its done document.

use std::sync::Arc;

use anyhow::Context as _;
use sluice_contract::{RunId, exit_codes};
use sluice_engine::github::GitHubVcs;
use sluice_engine::local::{LocalOptions, LocalRuntime, SecretsFile};
use sluice_engine::{EngineConfig, Vcs};
use sluice_worker::WorkerConfig;
use sluice_worker::shell::ShellSettings;
use sluice_worker::wasm::WasmRuntime;
use tokio::sync::oneshot;

use super::Failure;
use crate::cli::LocalConfig;
use crate::sentinel::Sentinel;
use crate::{local_worker, progress};

/// Where compiled WebAssembly modules are cached, inside the state folder.
const WASM_CACHE_FOLDER: &str = "wasm-cache";
/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
pub const INTERRUPTED: i32 = 130;
/// Exit code after SIGTERM (128 + 15).
pub const TERMINATED: i32 = 143;

/// The GitHub client for `--github-api`, if given.
pub fn github(config: &LocalConfig) -> Result<Option<Arc<dyn Vcs>>, Failure> {
    let Some(api) = &config.github_api else {
        return Ok(None);
    };
    let github = GitHubVcs::new(api)
        .with_context(|| format!("--github-api {api}"))
        .map_err(Failure::internal)?;
    Ok(Some(Arc::new(github)))
}

/// Opens the state folder and starts the engine, its workers and their sentinel.
pub fn start(
    config: &LocalConfig,
    secrets: SecretsFile,
    vcs: Option<Arc<dyn Vcs>>,
) -> Result<LocalRuntime, Failure> {
    let sentinel = Sentinel::spawn()
        .context("starting the sentinel that stops the orders' processes should sluice die")
        .map_err(Failure::internal)?;
    let worker = WorkerConfig {
        work_root: None,
        shell: ShellSettings {
            grace: config.grace_period,
            ..ShellSettings::default()
        },
        limits: Default::default(),
        host_env: config.host_env.clone(),
        wasm: Arc::new(WasmRuntime::new(Some(
            config.state_dir.join(WASM_CACHE_FOLDER),
        ))),
        max_log_bytes: config.max_log_bytes,
        ..WorkerConfig::default()
    };
    let engine_config = EngineConfig {
        watchdog_slack: config.grace_period + EngineConfig::default().watchdog_slack,
        ..EngineConfig::default()
    };
    let options = LocalOptions {
        state_dir: config.state_dir.clone(),
        concurrency: config.concurrency,
        engine: engine_config,
        secrets,
        vcs,
    };
    let sentinel = Arc::new(sentinel);
    LocalRuntime::start(options, |internal, keys| {
        local_worker::launcher(internal, keys, worker, sentinel)
    })
    .map_err(Failure::internal)
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or SIGTERM (`kill`, CI
/// cancelling, `timeout`). Either way the run's processes must not outlive sluice, since
/// each runs in a process group of its own that no terminal signal reaches.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

/// Shows the run's progress until its done document, then prints the summary (and the
/// document with `--json`); returns the job's exit code, or 130/143 when interrupted (the
/// caller then shuts the runtime down, which kills the orders' processes).
pub async fn follow(
    runtime: &LocalRuntime,
    run_id: &RunId,
    config: &LocalConfig,
) -> Result<i32, Failure> {
    let engine = Arc::clone(runtime.engine());
    let (stop_progress, stopped) = oneshot::channel();
    let display = tokio::spawn(progress::follow(
        engine,
        run_id.clone(),
        config.interactive,
        stopped,
    ));
    let done = tokio::select! {
        done = runtime.wait_done(run_id) => done,
        signal = interrupted() => {
            let _ = stop_progress.send(());
            let _ = display.await;
            eprintln!("sluice: {signal}: stopping run {run_id} (its processes are killed)");
            return Ok(if signal == "terminated" { TERMINATED } else { INTERRUPTED });
        }
    };
    let _ = stop_progress.send(());
    let _ = display.await;
    let done = done
        .context("waiting for the run to finish")
        .map_err(Failure::internal)?;

    let summary = progress::summary(&done, runtime.internal_store().root(), config.logs);
    if config.json {
        eprint!("{summary}");
        println!(
            "{}",
            serde_json::to_string_pretty(&done).expect("done documents serialize")
        );
    } else {
        print!("{summary}");
    }
    let done_key = sluice_contract::keys::done(run_id);
    eprintln!(
        "sluice: done document: {}",
        runtime.engine().ports.done.object_url(&done_key)
    );
    Ok(exit_codes::for_job_status(done.status))
}
