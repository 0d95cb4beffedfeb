//! `sluice cancel RUN_ID`: cancel a local run.
//!
//! The request is stored in the state folder (the first to ask is who cancelled). The
//! `sluice` carrying the run finds it within a quarter of a second and stops the run: its
//! orders get SIGTERM, then SIGKILL after its grace period, and it ends `cancelled` (that
//! `sluice` exits 5). When no `sluice` carries the run (the one that did died), this one
//! kills what that one left, cancels the run and finalizes it, as `resume` would carry it.
//! Either way this command waits for the run's done document and prints its summary.

use std::time::Duration;

use sluice_contract::{JobStatus, RunId, exit_codes};
use sluice_engine::EngineError;
use sluice_engine::cancel::CancelAnswer;
use sluice_engine::local::{OwnershipError, SecretsFile};
use sluice_worker::process_group::kill_run_processes;

use super::{Failure, local};
use crate::cli::LocalConfig;

pub async fn cancel(run_id: &str, config: LocalConfig) -> i32 {
    match cancel_run(run_id, &config).await {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

async fn cancel_run(text: &str, config: &LocalConfig) -> Result<i32, Failure> {
    let run = local::run_in_state(text, config)?;
    let session = local::start(config, SecretsFile::none(), local::github(config)?).await?;
    let outcome = cancel_in(&session, &run, config).await;
    session.shutdown().await;
    outcome
}

async fn cancel_in(
    session: &local::Session,
    run: &RunId,
    config: &LocalConfig,
) -> Result<i32, Failure> {
    let runtime = &session.runtime;
    let engine = runtime.engine();
    let failed = |error: EngineError| match error {
        EngineError::UnknownRun(_) => Failure::invalid(
            anyhow::Error::new(error)
                .context(format!("state folder {}", config.state_dir.display())),
        ),
        other => {
            Failure::internal(anyhow::Error::new(other).context(format!("cancelling run {run}")))
        }
    };
    match engine
        .request_cancel(run, &config.username)
        .await
        .map_err(failed)?
    {
        CancelAnswer::AlreadyEnded(status) => {
            eprintln!("sluice: run {run} had ended ({status}): nothing to cancel");
            return Ok(exit_codes::SUCCEEDED);
        }
        CancelAnswer::Requested(request) => {
            eprintln!("sluice: run {run}: {} asked to cancel it", request.by);
        }
        CancelAnswer::AlreadyRequested(request) => {
            eprintln!(
                "sluice: run {run}: {} asked to cancel it already",
                request.by
            );
        }
    }
    // The sluice carrying the run stops it (however long its grace period); when none
    // does, or the one that did dies meanwhile, this one does.
    let mut said = false;
    let done = loop {
        match runtime.own(run) {
            Ok(_ownership) => {
                let marker = run.to_string();
                // What the sluice that died left (its sentinel kills it too).
                let _ = tokio::task::spawn_blocking(move || kill_run_processes(&marker)).await;
                engine.cancel_if_requested(run).await.map_err(failed)?;
                // Its lock freed, its watch started, a pass kicked: as `resume` carries it.
                runtime.resume(run).await.map_err(failed)?;
                local::follow(session, run, std::slice::from_ref(run), config).await?;
                return Ok(exit_codes::SUCCEEDED);
            }
            Err(OwnershipError::Busy(_)) => {
                if !said {
                    eprintln!("sluice: the sluice carrying run {run} is stopping it");
                    said = true;
                }
                let waited =
                    tokio::time::timeout(Duration::from_millis(500), runtime.wait_done(run));
                tokio::select! {
                    waited = waited => if let Ok(done) = waited {
                        break done.map_err(|e| Failure::internal(anyhow::Error::new(e)))?;
                    },
                    signal = session.stop_requested() => {
                        eprintln!("sluice: {signal}: not waiting; the run is cancelled all the same");
                        return Ok(exit_codes::INTERRUPTED);
                    }
                }
            }
            Err(error) => return Err(Failure::internal(error)),
        }
    };
    local::report_done(runtime, run, &done, config);
    if done.status != JobStatus::Cancelled {
        eprintln!(
            "sluice: run {run} ended {} before its cancel took effect",
            done.status
        );
    }
    Ok(exit_codes::SUCCEEDED)
}
