//! watchdog-check: one check of a run's watch (Wait `wait_seconds` → Task → Choice on
//! `done` → Wait → Task; an input without `wait_seconds` starts with the Task). The input
//! ([`WatchdogStep`]) is the watch input init-job started the execution with; the output
//! adds `done` and sets `wait_seconds`, so the next step gets the same input back. When
//! the check asks for a kick, the orchestrator runs for the run here and now. Waits are
//! spread by up to a tenth (at most 30 s, the same for one run), so the watches of runs
//! submitted together do not all wake in the same second. The first wait is init-job's:
//! a check at once would find a run that has only just started.
//!
//! No error of a kick ends the loop (it is logged; the next check kicks again), and a watch
//! that lives long is handed over: the output counts the execution's checks (`checks`), and
//! after [`CHECKS_PER_EXECUTION`] the step starts the same watch's next generation as a new
//! execution and answers `done`, long before the 25 000 events a Step Functions history may
//! hold (a loop writes about a dozen).

use serde_json::Value;

/// Checks one execution makes before it hands its watch over to a new one (about 12 000
/// history events; 1000 checks are at least 16 hours, a minute apart at most).
pub const CHECKS_PER_EXECUTION: u64 = 1000;
use sluice_engine::Engine;
use sluice_ports::WatchdogInput;

/// One step's input: the watch's input, and what the state machine carries from the step
/// before (the execution's `checks`; its `done` is not read, nor is the input's
/// `wait_seconds`, the wait that came before this check).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct WatchdogStep {
    /// The watch.
    #[serde(flatten)]
    pub input: WatchdogInput,
    /// Checks this execution made before this one.
    #[serde(default)]
    pub checks: u64,
}

/// Handles one step.
///
/// # Errors
///
/// The check failed (Step Functions retries the task).
pub async fn handle(engine: &Engine, step: &WatchdogStep) -> Result<Value, anyhow::Error> {
    let input = &step.input;
    let verdict = engine.watchdog_check(input).await?;
    if verdict.kick {
        // A kicked pass that fails is logged, not thrown: the watch goes on and kicks again
        // at its next check, while an error would end the state machine's loop.
        match engine.orchestrate(&input.run_id).await {
            Ok(outcome) => {
                tracing::info!(run_id = %input.run_id, ?outcome, "kicked the orchestrator")
            }
            Err(error) => {
                tracing::warn!(run_id = %input.run_id, %error, "the kicked pass failed; the watch goes on")
            }
        }
    }
    let checks = step.checks + 1;
    let wait_seconds = jittered(verdict.wait_seconds, input.run_id.as_str());
    let handed_over = !verdict.done
        && checks >= CHECKS_PER_EXECUTION
        && hand_over(engine, input, wait_seconds).await;
    let mut output = serde_json::to_value(input)?;
    output["done"] = (verdict.done || handed_over).into();
    output["wait_seconds"] = wait_seconds.into();
    output["checks"] = checks.into();
    Ok(output)
}

/// Starts the watch's next generation, whose first check comes after `wait_seconds`; says
/// whether it started (if not, this execution goes on and tries again at its next check).
async fn hand_over(engine: &Engine, input: &WatchdogInput, wait_seconds: u64) -> bool {
    let next = WatchdogInput {
        generation: input.generation + 1,
        wait_seconds: Some(wait_seconds),
        ..input.clone()
    };
    match engine.ports.watchdog.start(&next).await {
        Ok(()) => {
            tracing::info!(run_id = %input.run_id, order_num = %input.order_num, generation = next.generation, "watch handed over to a new execution");
            true
        }
        Err(error) => {
            tracing::warn!(run_id = %input.run_id, %error, "could not hand the watch over; this execution goes on");
            false
        }
    }
}

/// `wait` plus up to a tenth of it (at most 30 s), fixed by the run id.
fn jittered(wait: u64, run_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let spread = (wait / 10).min(30);
    if spread == 0 {
        return wait;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    run_id.hash(&mut hasher);
    wait + hasher.finish() % (spread + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_spread_by_at_most_a_tenth() {
        assert_eq!(jittered(5, "a"), 5, "short waits are exact");
        let waits: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| jittered(100, &format!("run-{i}")))
            .collect();
        assert!(waits.iter().all(|w| (100..=110).contains(w)), "{waits:?}");
        assert!(waits.len() > 3, "runs are spread: {waits:?}");
        assert_eq!(jittered(100, "same"), jittered(100, "same"));
        assert!(jittered(3000, "x") <= 3030);
    }
}
