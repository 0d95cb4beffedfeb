//! The watchdog-check Lambda: one step of the watchdog state machine (see
//! `handlers::watchdog`).

use lambda_runtime::Error;
use sluice_aws::handlers::watchdog;
use sluice_aws::runtime::serve_engine;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_engine(|engine, step: watchdog::WatchdogStep| async move {
        Ok(watchdog::handle(&engine, &step).await?)
    })
    .await
}
