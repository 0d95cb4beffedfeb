//! The init-job Lambda: validates and queues a job (see `handlers::init_job`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice_aws::handlers::init_job;
use sluice_aws::runtime::{engine_from_env, init_logging};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let engine = engine_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let engine = engine.clone();
        async move { Ok::<_, Error>(init_job::handle(&engine, &event.payload).await?) }
    }))
    .await
}
