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
    let session = local::start(config, secrets, vcs).await?;
    let engine = std::sync::Arc::clone(session.runtime.engine());
    let run_id = RunId::generate();
    let options = ValidateOptions::local(&config.username);
    let queueing = engine.init_job_as(run_id.clone(), &job, &options, &base_dir);
    let queued = format!("job file {}", job_path.display());
    let orders = format!("{} orders", job.orders.len());
    local::carry_new_run(session, config, &run_id, queueing, &queued, &orders).await
}
