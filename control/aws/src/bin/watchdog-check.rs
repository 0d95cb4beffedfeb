//! The watchdog-check Lambda: one step of the watchdog state machine (see
//! `handlers::watchdog`).

use lambda_runtime::Error;
use sluice_aws::handlers::watchdog;
use sluice_aws::runtime::serve_engine;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The step's input is the watch's plus the state machine's own field `checks`.
    serve_engine(|engine, event: serde_json::Value| async move {
        Ok(watchdog::handle(&engine, &event).await?)
    })
    .await
}
