//! `sluice status | wait | logs`: questions about a run on AWS, answered from its tables and
//! buckets (the `SLUICE_*` settings of the deployment and the standard AWS configuration come
//! from the environment).

use std::io::Write as _;

use anyhow::Context as _;
use sluice_contract::{RunId, exit_codes};
use sluice_engine::EngineError;

use super::Failure;
use crate::cli::AwsCommand;

pub async fn run(command: AwsCommand) -> i32 {
    match answer(command).await {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

fn engine_failure(error: EngineError) -> Failure {
    match error {
        EngineError::UnknownRun(_) | EngineError::UnknownOrder { .. } => Failure::invalid(error),
        other => Failure::internal(other),
    }
}

async fn answer(command: AwsCommand) -> Result<i32, Failure> {
    let run_id = match &command {
        AwsCommand::Status { run_id }
        | AwsCommand::Wait { run_id, .. }
        | AwsCommand::Logs { run_id, .. } => run_id.clone(),
    };
    let run_id = RunId::parse(&run_id)
        .with_context(|| format!("{run_id:?} is not a run id"))
        .map_err(Failure::invalid)?;
    let engine = sluice_aws::runtime::engine_from_env()
        .await
        .context("the deployment's settings")
        .map_err(Failure::invalid)?;
    match command {
        AwsCommand::Status { .. } => {
            let view = engine.run_view(&run_id).await.map_err(engine_failure)?;
            let shown = match &view.done {
                Some(done) => serde_json::to_value(done).expect("done documents serialize"),
                None => serde_json::json!({
                    "status": "running",
                    "run_id": run_id,
                    "orders": view.orders.iter().map(|o| serde_json::json!({
                        "order_num": o.order_num, "order_name": o.order_name,
                        "status": o.status, "reason": o.reason,
                    })).collect::<Vec<_>>(),
                }),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).expect("JSON serializes")
            );
            Ok(exit_codes::SUCCEEDED)
        }
        AwsCommand::Wait { poll, .. } => {
            let done = engine
                .wait_for_done(&run_id, poll, |view| {
                    let line: Vec<String> = view
                        .orders
                        .iter()
                        .map(|o| format!("{} {} {}", o.order_num, o.order_name, o.status))
                        .collect();
                    eprintln!("sluice: {}", line.join(" · "));
                })
                .await
                .map_err(engine_failure)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&done).expect("done documents serialize")
            );
            Ok(exit_codes::for_job_status(done.status))
        }
        AwsCommand::Logs { order, .. } => {
            let log = engine
                .order_log(&run_id, &order)
                .await
                .map_err(engine_failure)?;
            std::io::stdout()
                .write_all(&log)
                .context("writing the log")
                .map_err(Failure::internal)?;
            Ok(exit_codes::SUCCEEDED)
        }
    }
}
