//! What every control-plane Lambda binary does at a cold start: JSON logs, the settings, the clients and
//! the engine, built once and shared by every invocation of the process.

use std::future::Future;
use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_engine::Engine;
use sluice_lambda::{CallCounter, init_logging};

use crate::clients::Clients;
use crate::settings::AwsSettings;
use crate::wiring::aws_engine;

/// The engine over AWS from the `SLUICE_*` settings and the standard AWS configuration.
///
/// # Errors
///
/// A setting is missing or malformed (every one named).
pub async fn engine_from_env() -> anyhow::Result<Arc<Engine>> {
    let settings = AwsSettings::from_env()?;
    let clients = Clients::load().await;
    Ok(Arc::new(aws_engine(
        &clients,
        &settings,
        &CallCounter::default(),
    )))
}

/// The whole life of a control-plane function: logging, the engine, then `handler` for each
/// event (read as `E`: one that is not is refused by the runtime, naming what is wrong; the
/// answer is JSON) until the Lambda runtime stops the process.
///
/// # Errors
///
/// The settings are incomplete, or the runtime API fails.
pub async fn serve_engine<E, F, Fut>(handler: F) -> Result<(), Error>
where
    E: DeserializeOwned,
    F: Fn(Arc<Engine>, E) -> Fut,
    Fut: Future<Output = Result<Value, Error>>,
{
    init_logging();
    let engine = engine_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<E>| {
        handler(Arc::clone(&engine), event.payload)
    }))
    .await
}
