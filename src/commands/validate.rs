//! `sluice validate JOB.json` (and `sluice run --dry-run`): every check `sluice run` makes
//! before it queues anything, then the job's orders or its plan.

use std::path::Path;

use sluice_contract::exit_codes;
use sluice_contract::manifest::Task;
use sluice_contract::validate::ValidJob;

use super::{Failure, check_credentials, plan, read_valid_job};
use crate::cli::Listing;

pub async fn validate(
    path: &Path,
    secrets: Option<&Path>,
    listing: Listing,
    username: &str,
) -> i32 {
    match check(path, secrets, username).await {
        Ok((valid, verdict)) => {
            match listing {
                Listing::Orders => print!("{verdict}{}", orders(&valid)),
                Listing::Plan => print!("{verdict}{}", plan::text(&valid)),
                Listing::PlanJson => println!("{}", plan::json(path, &valid)),
            }
            exit_codes::SUCCEEDED
        }
        Err(failure) => failure.report(),
    }
}

/// The valid job and the verdict line: how many orders, what was made of credentials.
async fn check(
    path: &Path,
    secrets: Option<&Path>,
    username: &str,
) -> Result<(ValidJob, String), Failure> {
    let (_, _, valid) = read_valid_job(path, username)?;
    let listed = valid
        .orders
        .iter()
        .map(|o| o.credentials.len())
        .sum::<usize>();
    let credentials = if listed == 0 {
        String::new()
    } else if secrets.is_some() {
        check_credentials(path, &valid, secrets).await?;
        format!(", {listed} credentials found in the secrets file")
    } else {
        format!(", {listed} credentials not checked (no --secrets file)")
    };
    let verdict = format!(
        "{}: valid, {} orders{credentials}\n",
        path.display(),
        valid.orders.len()
    );
    Ok((valid, verdict))
}

/// Each order on a line: what it runs, its timeout, what it waits for.
fn orders(valid: &ValidJob) -> String {
    let mut out = String::new();
    for order in &valid.orders {
        let deps: Vec<String> = order
            .plan
            .depends_on
            .iter()
            .map(|d| d.to_string())
            .collect();
        let after = if deps.is_empty() {
            String::new()
        } else {
            format!(" after {}", deps.join(", "))
        };
        let task = match &order.task {
            Task::Cmds(cmds) if cmds.len() == 1 => "1 command".to_owned(),
            Task::Cmds(cmds) => format!("{} commands", cmds.len()),
            Task::Wasm(wasm) => format!("wasm {}", crate::progress::terminal_safe(&wasm.module)),
        };
        out.push_str(&format!(
            "  {} {}: {task} (timeout {} s){after}\n",
            order.plan.order_num,
            crate::progress::terminal_safe(&order.plan.order_name),
            order.plan.timeout
        ));
    }
    out
}
