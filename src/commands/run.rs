//! `sluice run JOB.json`: queue the job on the local engine, follow it, report it; with
//! `--dry-run`, make every check and print the plan instead.

use std::path::Path;

use sluice_contract::{RunId, ValidateOptions};

use super::{Failure, check_credentials, local, plan, read_valid_job, validate};
use crate::cli::LocalConfig;

pub async fn run(job: &Path, secrets: Option<&Path>, dry_run: bool, config: LocalConfig) -> i32 {
    match run_job(job, secrets, dry_run, &config).await {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

async fn run_job(
    job_path: &Path,
    secrets: Option<&Path>,
    dry_run: bool,
    config: &LocalConfig,
) -> Result<i32, Failure> {
    // Check everything first: a bad job leaves no trace, not even a state folder.
    let (job, base_dir, valid) = read_valid_job(job_path, &config.username)?;
    let secrets = check_credentials(job_path, &valid, secrets).await?;
    let vcs = match &valid.pr {
        Some(pr) if config.github_api.is_none() => {
            eprintln!(
                "sluice: note: no PR comment on {}#{}: pass --github-api to keep one from this machine",
                pr.repo, pr.number
            );
            None
        }
        Some(_) => local::github(config)?,
        None => None,
    };
    if dry_run {
        // The checks `start` makes of the settings, without starting anything.
        local::known_hosts(config)?;
        let verdict = validate::verdict(job_path, &valid, true);
        plan::print(job_path, &valid, &verdict, config.json);
        return Ok(sluice_contract::exit_codes::SUCCEEDED);
    }
    let session = local::start(config, secrets, vcs)?;
    let engine = std::sync::Arc::clone(session.runtime.engine());

    // This process carries the run, from before its rows exist: `sluice resume` will not
    // take it over while this process lives.
    let run_id = RunId::generate();
    let _ownership = session.runtime.own(&run_id).map_err(Failure::internal)?;
    let options = ValidateOptions::local(&config.username);
    let init = session
        .shielded(
            &run_id,
            engine.init_job_as(run_id.clone(), &job, &options, &base_dir),
        )
        .await;
    let response = match init {
        Ok(response) => response,
        Err(error) => {
            let invalid = error.is_invalid_input();
            let error =
                anyhow::Error::new(error).context(format!("job file {}", job_path.display()));
            session.shutdown().await;
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
    let run = std::slice::from_ref(&response.run_id);
    let followed = local::follow(&session, &response.run_id, run, config).await;
    session.shutdown().await;
    followed.map(|followed| followed.code)
}
