//! What every Lambda binary does at a cold start: JSON logs, the settings, the clients and
//! the engine, built once and shared by every invocation of the process.

use std::future::Future;
use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice_engine::Engine;

use crate::calls::CallCounter;
use crate::clients::Clients;
use crate::settings::AwsSettings;
use crate::wiring::aws_engine;

/// JSON log lines on stdout (CloudWatch), filtered by `SLUICE_LOG` (default `info`); spans
/// carry `run_id` and `order_num`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .without_time()
        .init();
}

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
/// event (JSON in, JSON out) until the Lambda runtime stops the process.
///
/// # Errors
///
/// The settings are incomplete, or the runtime API fails.
pub async fn serve_engine<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(Arc<Engine>, Value) -> Fut,
    Fut: Future<Output = Result<Value, Error>>,
{
    init_logging();
    let engine = engine_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        handler(Arc::clone(&engine), event.payload)
    }))
    .await
}
