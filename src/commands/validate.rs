//! `sluice validate JOB.json`: every check `sluice run` makes before it queues anything.

use std::path::Path;

use sluice_contract::validate::{Platform, validate as validate_job};
use sluice_contract::{ValidateOptions, exit_codes};
use sluice_engine::init_job::preflight;

use super::{Failure, read_job};

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
    let (job, base_dir) = read_job(path)?;
    let valid = validate_job(&job, &ValidateOptions::local(username)).map_err(|e| {
        Failure::invalid(anyhow::Error::new(e).context(format!("job file {}", path.display())))
    })?;
    preflight(&valid, Platform::Local, &base_dir).map_err(|e| {
        Failure::invalid(anyhow::Error::new(e).context(format!("job file {}", path.display())))
    })?;
    let mut out = format!("{}: valid, {} orders\n", path.display(), valid.orders.len());
    for order in &valid.orders {
        let deps: Vec<String> = order.depends_on.iter().map(|d| d.to_string()).collect();
        let after = if deps.is_empty() {
            String::new()
        } else {
            format!(" after {}", deps.join(", "))
        };
        out.push_str(&format!(
            "  {} {} (timeout {} s){after}\n",
            order.order_num, order.order_name, order.timeout
        ));
    }
    Ok(out)
}
