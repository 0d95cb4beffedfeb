//! `sluice rerun RUN_ID [--failed]`: a finished local run's job run again, in the
//! foreground as `sluice run` runs a job (see `sluice_engine::rerun`).

use std::path::Path;

use sluice_contract::{RunId, ValidateOptions};
use sluice_engine::rerun::RerunRequest;

use super::{Failure, local, secrets_file};
use crate::cli::LocalConfig;

pub async fn rerun(run_id: &str, failed: bool, secrets: Option<&Path>, config: LocalConfig) -> i32 {
    match rerun_run(run_id, failed, secrets, &config).await {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

async fn rerun_run(
    text: &str,
    failed: bool,
    secrets: Option<&Path>,
    config: &LocalConfig,
) -> Result<i32, Failure> {
    let of = local::run_in_state(text, config)?;
    // The job's credentials are read again (the run's were deleted with its keys): from
    // this file, as `run` reads them.
    let session = local::start(config, secrets_file(secrets)?, local::github(config)?).await?;
    let engine = std::sync::Arc::clone(session.runtime.engine());
    let run_id = RunId::generate();
    let request = RerunRequest {
        of: of.clone(),
        failed_only: failed,
        idempotency_key: None,
    };
    let options = ValidateOptions::local(&config.username);
    let queueing = engine.rerun_as(run_id.clone(), &request, &options);
    let what = match failed {
        true => format!("rerun of {of}, its failed orders"),
        false => format!("rerun of {of}"),
    };
    local::carry_new_run(
        session,
        config,
        &run_id,
        queueing,
        &format!("rerun of {of}"),
        &what,
    )
    .await
}
