//! The init-job Lambda: validates and queues a job (see `handlers::init_job`).

use lambda_runtime::Error;
use sluice_aws::handlers::init_job;
use sluice_aws::runtime::serve_engine;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Many shapes arrive here (API Gateway v1 and v2, a function URL, SNS, a direct
    // invoke): `handle` tells which and reads it with aws_lambda_events' types.
    serve_engine(|engine, event: serde_json::Value| async move {
        Ok(init_job::handle(&engine, &event).await?)
    })
    .await
}
