//! watchdog-check: one step of the watchdog state machine (Task → Choice on `done` → Wait
//! `wait_seconds` → Task). The input is the watchdog input the dispatcher started the
//! execution with; the output adds `done` and `wait_seconds` to it, so the next step gets
//! the same input back. When the check asks for a kick, the orchestrator runs for the run
//! here and now.

use serde_json::Value;
use sluice_engine::ports::WatchdogInput;
use sluice_engine::{Engine, EngineError};

/// Handles one step.
///
/// # Errors
///
/// The input is not a watchdog input, or the check failed (Step Functions retries the task).
pub async fn handle(engine: &Engine, event: &Value) -> Result<Value, anyhow::Error> {
    let input: WatchdogInput = serde_json::from_value(event.clone())
        .map_err(|e| anyhow::anyhow!("not a watchdog input: {e}"))?;
    let verdict = engine.watchdog_check(&input).await?;
    if verdict.kick {
        let outcome: Result<_, EngineError> = engine.orchestrate(&input.run_id).await;
        tracing::info!(run_id = %input.run_id, ?outcome, "kicked the orchestrator");
        outcome?;
    }
    let mut output = serde_json::to_value(&input)?;
    output["done"] = verdict.done.into();
    output["wait_seconds"] = verdict.wait_seconds.into();
    Ok(output)
}
