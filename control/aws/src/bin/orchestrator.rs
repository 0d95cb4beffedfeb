//! The orchestrator Lambda: one pass per run named by an S3 notification's callback keys
//! (see `s3_events`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use sluice_aws::runtime::{engine_from_env, init_logging};
use sluice_aws::s3_events::orchestrate_event;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let engine = engine_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let engine = engine.clone();
        async move {
            let outcomes = orchestrate_event(&engine, &event.payload).await?;
            let runs: Vec<Value> = outcomes
                .iter()
                .map(|(run_id, outcome)| json!({ "run_id": run_id, "outcome": format!("{outcome:?}") }))
                .collect();
            Ok::<_, Error>(json!({ "runs": runs }))
        }
    }))
    .await
}
