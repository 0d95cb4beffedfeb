//! `sluice report RUN_ID [-o FILE]` (and `run … --report FILE`): a run's HTML report (see
//! [`crate::report`]), from a local state folder or, with `--aws`, the deployment's
//! stores — the same reading over the same ports.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sluice_contract::{RunId, exit_codes};
use sluice_engine::EngineError;
use sluice_engine::ports::{Clock as _, SystemClock};
use sluice_engine::report::LogBudget;
use sluice_engine::runs::RunStores;

use super::{Failure, local};
use crate::report::{RunStory, html};

/// `sluice report` of a run in the state folder `state_dir`.
pub async fn report(run_id: &str, output: Option<&Path>, state_dir: &Path) -> i32 {
    let written = async {
        let run_id = local::run_id(run_id)?;
        local::state_holds_runs(state_dir)?;
        let stores = sluice_engine::local::open_run_stores(state_dir)
            .context("opening the state folder")
            .map_err(Failure::internal)?;
        write(&stores, &run_id, output).await
    };
    match written.await {
        Ok(()) => exit_codes::SUCCEEDED,
        Err(failure) => failure.report(),
    }
}

/// Writes the report of `run_id` read from `stores` to `output` (default
/// `report-<run id>.html`; `-`: stdout), saying where on stderr.
///
/// # Errors
///
/// Exit 3 for a run the stores do not know; else an internal failure naming what could
/// not be read or written.
pub async fn write(
    stores: &RunStores,
    run_id: &RunId,
    output: Option<&Path>,
) -> Result<(), Failure> {
    let gathered = stores.run_report(run_id, LogBudget::default()).await;
    let report = gathered.map_err(|error| match error {
        EngineError::UnknownRun(_) => Failure::invalid(error),
        other => {
            Failure::internal(anyhow::Error::new(other).context(format!("reading run {run_id}")))
        }
    })?;
    let orders = report
        .orders
        .len()
        .max(report.done.as_ref().map_or(0, |d| d.orders.len()));
    let page = html::page(&RunStory::of(report, SystemClock.now_ms()));
    let path = output.map_or_else(|| default_path(run_id), Path::to_owned);
    if path == Path::new("-") {
        super::print_stdout(&page);
        return Ok(());
    }
    std::fs::write(&path, &page)
        .with_context(|| format!("writing the report to {}", path.display()))
        .map_err(Failure::internal)?;
    eprintln!(
        "sluice: report of run {run_id} ({orders} orders, {} KiB): {}",
        page.len().div_ceil(1024),
        path.display()
    );
    Ok(())
}

/// `report-<run id>.html` in the current folder.
fn default_path(run_id: &RunId) -> PathBuf {
    PathBuf::from(format!("report-{run_id}.html"))
}

/// Where `--report FILE` writes `run_id`'s report when `runs` runs are followed: FILE, or
/// with several, FILE's name with the run id added (`r.html` → `r-<run id>.html`).
pub fn path_for_run(file: &Path, run_id: &RunId, runs: usize) -> PathBuf {
    if runs <= 1 {
        return file.to_owned();
    }
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match file.extension() {
        Some(ext) => format!("{stem}-{run_id}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{run_id}"),
    };
    file.with_file_name(name)
}
