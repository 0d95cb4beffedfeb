//! `sluice validate JOB.json`: every check `sluice run` makes before it queues anything,
//! then the job's orders or its plan.

use std::path::Path;

use sluice_contract::exit_codes;
use sluice_contract::manifest::Task;
use sluice_contract::validate::ValidJob;

use super::{Failure, check_credentials, plan, print_stdout, read_valid_job};
use crate::cli::Listing;
use crate::progress::terminal_safe;

pub async fn validate(
    path: &Path,
    secrets: Option<&Path>,
    listing: Listing,
    username: &str,
) -> i32 {
    match check(path, secrets, username).await {
        Ok((valid, verdict)) => {
            match listing {
                Listing::Orders => print_stdout(&format!("{verdict}{}", orders(&valid))),
                Listing::Plan => plan::print(path, &valid, &verdict, false),
                Listing::PlanJson => plan::print(path, &valid, &verdict, true),
            }
            exit_codes::SUCCEEDED
        }
        Err(failure) => failure.report(),
    }
}

/// The valid job and the verdict line; credentials are checked only against a secrets file.
async fn check(
    path: &Path,
    secrets: Option<&Path>,
    username: &str,
) -> Result<(ValidJob, String), Failure> {
    let (_, _, valid) = read_valid_job(path, username)?;
    if secrets.is_some() {
        check_credentials(path, &valid, secrets).await?;
    }
    let verdict = verdict(path, &valid, secrets.is_some());
    Ok((valid, verdict))
}

/// `job.json: valid, 3 orders`, and what was made of the credentials the job lists.
pub fn verdict(path: &Path, valid: &ValidJob, credentials_checked: bool) -> String {
    let listed = valid
        .orders
        .iter()
        .map(|o| o.credentials.len())
        .sum::<usize>();
    let credentials = match (listed, credentials_checked) {
        (0, _) => String::new(),
        (_, true) => format!(", {listed} credentials found in the secrets file"),
        (_, false) => format!(", {listed} credentials not checked (no --secrets file)"),
    };
    format!(
        "{}: valid, {} orders{credentials}\n",
        path.display(),
        valid.orders.len()
    )
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
        let after = match (&order.plan.condition, deps.is_empty()) {
            (_, true) => String::new(),
            (None, false) => format!(" after {}", deps.join(", ")),
            (Some(condition), false) => format!(
                " after {}, if {}",
                deps.join(", "),
                terminal_safe(&condition.text)
            ),
        };
        let task = match &order.task {
            Task::Cmds(cmds) if cmds.len() == 1 => "1 command".to_owned(),
            Task::Cmds(cmds) => format!("{} commands", cmds.len()),
            Task::Wasm(wasm) => format!("wasm {}", terminal_safe(&wasm.module)),
        };
        out.push_str(&format!(
            "  {} {}: {task} (timeout {} s){after}\n",
            order.plan.order_num,
            terminal_safe(&order.plan.order_name),
            order.plan.timeout
        ));
    }
    out
}
