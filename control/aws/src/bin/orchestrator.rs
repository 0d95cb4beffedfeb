//! The orchestrator Lambda: one pass per run named by an S3 notification's callback keys
//! (see `s3_events`).

use lambda_runtime::Error;
use serde_json::{Value, json};
use sluice_aws::runtime::serve_engine;
use sluice_aws::s3_events::{S3Notification, orchestrate_event};

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_engine(|engine, event: S3Notification| async move {
        let outcomes = orchestrate_event(&engine, &event).await?;
        let runs: Vec<Value> = outcomes
            .iter()
            .map(|(run_id, outcome)| json!({ "run_id": run_id, "outcome": format!("{outcome:?}") }))
            .collect();
        Ok(json!({ "runs": runs }))
    })
    .await
}
