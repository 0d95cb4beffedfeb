//! `sluice run JOB.json`: queue the job on the local engine, follow it, report it.

use std::sync::Arc;

use anyhow::Context as _;
use sluice_contract::{ValidateOptions, exit_codes};
use sluice_engine::github::GitHubVcs;
use sluice_engine::local::{LocalOptions, LocalRuntime};
use sluice_engine::{EngineConfig, Vcs};
use sluice_worker::WorkerConfig;
use sluice_worker::shell::ShellSettings;
use sluice_worker::wasm::WasmRuntime;
use tokio::sync::oneshot;

use super::{Failure, check_credentials, read_valid_job};
use crate::cli::RunConfig;
use crate::{local_worker, progress};

/// Where compiled WebAssembly modules are cached, inside the state folder.
const WASM_CACHE_FOLDER: &str = "wasm-cache";
/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const INTERRUPTED: i32 = 130;
/// Exit code after SIGTERM (128 + 15).
const TERMINATED: i32 = 143;

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

pub async fn run(config: RunConfig) -> i32 {
    match run_job(&config).await {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

async fn run_job(config: &RunConfig) -> Result<i32, Failure> {
    // Check everything first: a bad job leaves no trace, not even a state folder.
    let (job, base_dir, valid) = read_valid_job(&config.job, &config.username)?;
    let secrets = check_credentials(&config.job, &valid, config.secrets.as_deref()).await?;
    let vcs = match (&valid.pr, &config.github_api) {
        (Some(_), Some(api)) => {
            let github = GitHubVcs::new(api)
                .with_context(|| format!("--github-api {api}"))
                .map_err(Failure::internal)?;
            Some(Arc::new(github) as Arc<dyn Vcs>)
        }
        (Some(pr), None) => {
            eprintln!(
                "sluice: note: no PR comment on {}#{}: pass --github-api to keep one from this machine",
                pr.repo, pr.number
            );
            None
        }
        (None, _) => None,
    };
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
    let runtime = LocalRuntime::start(options, |internal, keys| {
        local_worker::launcher(internal, keys, worker)
    })
    .map_err(Failure::internal)?;
    let engine = Arc::clone(runtime.engine());

    let init = engine
        .init_job(&job, &ValidateOptions::local(&config.username), &base_dir)
        .await;
    let response = match init {
        Ok(response) => response,
        Err(error) => {
            let invalid = error.is_invalid_input();
            let error =
                anyhow::Error::new(error).context(format!("job file {}", config.job.display()));
            runtime.shutdown().await;
            return Err(if invalid {
                Failure::invalid(error)
            } else {
                Failure::internal(error)
            });
        }
    };
    eprintln!(
        "sluice: run {} · flow {} · {} orders · state in {}",
        response.run_id,
        response.flow_id,
        job.orders.len(),
        config.state_dir.display()
    );

    let (stop_progress, stopped) = oneshot::channel();
    let display = tokio::spawn(progress::follow(
        Arc::clone(&engine),
        response.run_id.clone(),
        config.interactive,
        stopped,
    ));
    let done = tokio::select! {
        done = runtime.wait_done(&response.run_id) => done,
        signal = interrupted() => {
            let _ = stop_progress.send(());
            let _ = display.await;
            eprintln!("sluice: {signal}: stopping run {} (its processes are killed)", response.run_id);
            runtime.shutdown().await;
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
    eprintln!("sluice: done document: {}", response.done_endpt);
    runtime.shutdown().await;
    Ok(exit_codes::for_job_status(done.status))
}
