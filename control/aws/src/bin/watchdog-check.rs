//! The watchdog-check Lambda: one step of the watchdog state machine (see
//! `handlers::watchdog`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice_aws::handlers::watchdog;
use sluice_aws::runtime::{engine_from_env, init_logging};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let engine = engine_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let engine = engine.clone();
        async move { Ok::<_, Error>(watchdog::handle(&engine, &event.payload).await?) }
    }))
    .await
}
