//! `sluice validate JOB.json`: every check `sluice run` makes before it queues anything.

use std::path::Path;

use sluice_contract::exit_codes;
use sluice_contract::manifest::Task;

use super::{Failure, check_credentials, read_valid_job};

pub async fn validate(path: &Path, secrets: Option<&Path>, username: &str) -> i32 {
    match check(path, secrets, username).await {
        Ok(lines) => {
            print!("{lines}");
            exit_codes::SUCCEEDED
        }
        Err(failure) => failure.report(),
    }
}

async fn check(path: &Path, secrets: Option<&Path>, username: &str) -> Result<String, Failure> {
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
    let mut out = format!(
        "{}: valid, {} orders{credentials}\n",
        path.display(),
        valid.orders.len()
    );
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
    Ok(out)
}
