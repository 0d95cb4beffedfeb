//! `sluice resume [RUN_ID]`: carry runs whose sluice died to their done documents.

use std::time::Duration;

use sluice_contract::RunId;
use sluice_engine::local::SecretsFile;
use sluice_worker::process_group::kill_run_processes;

use super::{Failure, local};
use crate::cli::LocalConfig;

/// How long `resume` waits for a run held by a dead sluice's sentinel.
const SENTINEL_PATIENCE: Duration = Duration::from_secs(5);

pub async fn resume(run_id: Option<&str>, config: LocalConfig) -> i32 {
    match resume_runs(run_id, &config).await {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

async fn resume_runs(run_id: Option<&str>, config: &LocalConfig) -> Result<i32, Failure> {
    let asked = match run_id {
        Some(text) => Some(local::run_in_state(text, config)?),
        None => {
            local::state_holds_runs(&config.state_dir)?;
            None
        }
    };
    // Credentials were encrypted into the bundles at init: nothing to read again.
    let session = local::start(config, SecretsFile::none(), local::github(config)?).await?;
    let runtime = &session.runtime;
    let runs = match asked {
        Some(run) => vec![run],
        None => runtime.unfinished_runs().await.map_err(Failure::internal)?,
    };
    if runs.is_empty() {
        eprintln!(
            "sluice: every run in {} is finished; nothing to resume",
            config.state_dir.display()
        );
        session.shutdown().await;
        return Ok(0);
    }
    let mut owned = Vec::new();
    let mut resuming = Vec::new();
    let mut busy = None;
    for run in &runs {
        let ownership = match own_when_free(runtime, run).await {
            Ok(ownership) => ownership,
            // Another live sluice carries it: leave it be, resume the others.
            Err(error) => {
                eprintln!("sluice: {error}; not resuming it");
                busy = Some(error);
                continue;
            }
        };
        owned.push(ownership);
        resuming.push(run.clone());
        let marker = run.to_string();
        let killed = tokio::task::spawn_blocking(move || kill_run_processes(&marker))
            .await
            .unwrap_or(0);
        // Asked to be cancelled meanwhile: nothing is run again.
        if let Err(error) = runtime.engine().cancel_if_requested(run).await {
            eprintln!("sluice: warning: looking for a cancel of run {run}: {error}");
        }
        let resumed = match runtime.resume(run).await {
            Ok(resumed) => resumed,
            Err(error) => {
                let invalid = matches!(error, sluice_engine::EngineError::UnknownRun(_));
                session.shutdown().await;
                let error = anyhow::Error::new(error).context(format!("resuming run {run}"));
                return Err(if invalid {
                    Failure::invalid(error)
                } else {
                    Failure::internal(error)
                });
            }
        };
        eprintln!(
            "sluice: resuming run {run} · orders run again: {} · leftover processes killed: {killed} · state in {}",
            resumed.requeued.len(),
            config.state_dir.display()
        );
    }
    let mut code = 0;
    for run in &resuming {
        let followed = local::follow(&session, run, &resuming, config).await?;
        code = code.max(followed.code);
        if followed.stopped {
            break;
        }
    }
    session.shutdown().await;
    match (resuming.is_empty(), busy) {
        // The only run asked for (or every unfinished one) is carried elsewhere.
        (true, Some(error)) => Err(Failure::invalid(error)),
        _ => Ok(code),
    }
}

/// Takes hold of `run`, waiting a few seconds if needed: the sentinel of the sluice that
/// died holds it while it kills what that sluice left.
async fn own_when_free(
    runtime: &sluice_engine::local::LocalRuntime,
    run: &RunId,
) -> Result<sluice_engine::local::RunOwnership, sluice_engine::local::OwnershipError> {
    let give_up = tokio::time::Instant::now() + SENTINEL_PATIENCE;
    loop {
        match runtime.own(run) {
            Err(sluice_engine::local::OwnershipError::Busy(_))
                if tokio::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}
