//! `sluice graph JOB.json [--format mermaid|dot|svg]`: the job's DAG as text another
//! program draws, or drawn as SVG (see [`crate::graph`]). Only the job's validity is
//! checked (its code need not be there): the picture is of the job as written.

use std::path::Path;

use anyhow::Context as _;
use sluice_contract::validate::validate;
use sluice_contract::{ValidateOptions, exit_codes};

use super::{Failure, print_stdout, read_job};
use crate::cli::GraphFormat;
use crate::graph::{JobGraph, dot, mermaid, svg};

pub fn graph(path: &Path, format: GraphFormat, username: &str) -> i32 {
    match draw(path, format, username) {
        Ok(text) => {
            print_stdout(&text);
            exit_codes::SUCCEEDED
        }
        Err(failure) => failure.report(),
    }
}

fn draw(path: &Path, format: GraphFormat, username: &str) -> Result<String, Failure> {
    let (job, _) = read_job(path)?;
    let valid = validate(&job, &ValidateOptions::local(username))
        .with_context(|| format!("job file {}", path.display()))
        .map_err(Failure::invalid)?;
    let graph = JobGraph::of(&valid);
    Ok(match format {
        GraphFormat::Mermaid => mermaid::render(&graph),
        GraphFormat::Dot => dot::render(&graph),
        GraphFormat::Svg => svg::render(&graph)
            .context("laying out the job's DAG")
            .map_err(Failure::internal)?,
    })
}
