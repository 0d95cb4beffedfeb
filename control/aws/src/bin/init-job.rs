//! The init-job Lambda: validates and queues a job (see `handlers::init_job`).

use lambda_runtime::Error;
use sluice_aws::handlers::init_job;
use sluice_aws::runtime::serve_engine;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_engine(|engine, event| async move { Ok(init_job::handle(&engine, &event).await?) }).await
}
