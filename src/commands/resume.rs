//! `sluice resume [RUN_ID]`: carry runs whose sluice died to their done documents.

use sluice_contract::{RunId, exit_codes};
use sluice_engine::local::SecretsFile;
use sluice_worker::process_group::kill_run_processes;

use super::{Failure, local};
use crate::cli::LocalConfig;

pub async fn resume(run_id: Option<&str>, config: LocalConfig) -> i32 {
    match resume_runs(run_id, &config).await {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

async fn resume_runs(run_id: Option<&str>, config: &LocalConfig) -> Result<i32, Failure> {
    let asked = match run_id {
        Some(text) => Some(RunId::parse(text).ok_or_else(|| {
            Failure::invalid(anyhow::anyhow!("{text:?} is not a run id (a UUID)"))
        })?),
        None => None,
    };
    if !config.state_dir.join("sluice.db").is_file() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "{} holds no runs (no sluice.db): pass the --state-dir `sluice run` used",
            config.state_dir.display()
        )));
    }
    // Credentials were encrypted into the bundles at init: nothing to read again.
    let session = local::start(config, SecretsFile::none(), local::github(config)?)?;
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
    for run in &runs {
        let ownership = match runtime.own(run) {
            Ok(ownership) => ownership,
            Err(error) => {
                session.shutdown().await;
                return Err(Failure::invalid(error));
            }
        };
        owned.push(ownership);
        let marker = run.to_string();
        let killed = tokio::task::spawn_blocking(move || kill_run_processes(&marker))
            .await
            .unwrap_or(0);
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
    for run in &runs {
        let followed = local::follow(&session, run, &runs, config).await;
        let interrupted = matches!(
            followed,
            Ok(exit_codes::INTERRUPTED | exit_codes::TERMINATED)
        );
        code = code.max(followed?);
        if interrupted {
            break;
        }
    }
    session.shutdown().await;
    Ok(code)
}
