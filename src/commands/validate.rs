//! `sluice validate JOB.json`: every check `sluice run` makes before it queues anything.

use std::path::Path;

use sluice_contract::exit_codes;
use sluice_contract::manifest::Task;

use super::{Failure, read_valid_job};

pub fn validate(path: &Path, username: &str) -> i32 {
    match check(path, username) {
        Ok(lines) => {
            print!("{lines}");
            exit_codes::SUCCEEDED
        }
        Err(failure) => failure.report(),
    }
}

fn check(path: &Path, username: &str) -> Result<String, Failure> {
    let (_, _, valid) = read_valid_job(path, username)?;
    let mut out = format!("{}: valid, {} orders\n", path.display(), valid.orders.len());
    for order in &valid.orders {
        let deps: Vec<String> = order.depends_on.iter().map(|d| d.to_string()).collect();
        let after = if deps.is_empty() {
            String::new()
        } else {
            format!(" after {}", deps.join(", "))
        };
        let task = match &order.task {
            Task::Cmds(cmds) if cmds.len() == 1 => "1 command".to_owned(),
            Task::Cmds(cmds) => format!("{} commands", cmds.len()),
            Task::Wasm(wasm) => format!("wasm {}", wasm.module),
        };
        out.push_str(&format!(
            "  {} {}: {task} (timeout {} s){after}\n",
            order.order_num, order.order_name, order.timeout
        ));
    }
    Ok(out)
}
