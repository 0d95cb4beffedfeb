//! Starting workers on AWS: an asynchronous Lambda invoke or a CodeBuild build, and the
//! Step Functions watch that follows a run.
//!
//! - Lambda: `Invoke` with `InvocationType=Event` and the dispatch payload as the event (the
//!   function's async config must have `MaximumRetryAttempts=0`; a retry is the engine's
//!   decision, and the worker's claim makes a duplicate start harmless).
//!   The payload (presigned URLs, the order's identity) is the event: Lambda records no
//!   event's content.
//! - CodeBuild: `StartBuild` with a [`ticket`](crate::ticket) of the attempt as environment overrides (the
//!   payload itself would be visible to anyone who can read the build) and a build timeout
//!   covering the order's. No idempotency token: a token sent again with other values is
//!   refused, and each start's ticket differs; a duplicate build finds its attempt claimed.
//!   The build's id is recorded (`tmp/builds/…`): a cancel stops the run's builds
//!   (`StopBuild`), which their workers would otherwise end only once they look.
//! - Compile: `Invoke` of the compile function with `InvocationType=Event` and the
//!   [`CompileRequest`] as the event (its async config retries twice: compiling again is
//!   harmless, the code is stored only where none is).
//! - Watch: `StartExecution` named `<run_id>-<order_num>-<attempt>` (`0000` and the run
//!   watch's attempt, and its generation), so starting the same watch twice is refused by
//!   Step Functions and treated as done.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_codebuild::types::EnvironmentVariable;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use sluice_contract::ExecutionTarget;
use sluice_contract::dispatch::{CompileRequest, DispatchPayload};
use sluice_contract::validate::MAX_PRESIGN_EXPIRY;
use sluice_contract::{OrderNum, RunId};
use sluice_ports::ErrorKind;
use sluice_ports::{DispatchError, Dispatcher, WatchdogInput, WatchdogStarter};

use crate::calls::CallCounter;
use crate::sdk_error::{describe, kind};
use crate::ticket::Tickets;

/// Starts workers on Lambda or CodeBuild.
#[derive(Debug, Clone)]
pub struct AwsDispatcher {
    lambda: aws_sdk_lambda::Client,
    codebuild: aws_sdk_codebuild::Client,
    tickets: Tickets,
    worker_function: String,
    compile_function: Option<String>,
    codebuild_project: String,
    calls: CallCounter,
}

impl AwsDispatcher {
    /// Workers run as `worker_function` (Lambda) or in `codebuild_project`; CodeBuild
    /// tickets are kept in `tickets` (the internal bucket).
    pub fn new(
        lambda: aws_sdk_lambda::Client,
        codebuild: aws_sdk_codebuild::Client,
        tickets: Tickets,
        worker_function: impl Into<String>,
        codebuild_project: impl Into<String>,
        calls: CallCounter,
    ) -> Self {
        AwsDispatcher {
            lambda,
            codebuild,
            tickets,
            worker_function: worker_function.into(),
            compile_function: None,
            codebuild_project: codebuild_project.into(),
            calls,
        }
    }

    /// The same, compiling WebAssembly modules with `compile_function` (Lambda); without
    /// one, a job with WebAssembly orders is refused.
    pub fn compiling_with(self, compile_function: Option<String>) -> Self {
        AwsDispatcher {
            compile_function,
            ..self
        }
    }
}

/// The CodeBuild build timeout for an order's `timeout`: room for the worker's margin, in
/// whole minutes, within what CodeBuild accepts (5 to 2160).
pub fn build_timeout_minutes(timeout: Duration) -> i32 {
    let seconds = timeout.as_secs() + ExecutionTarget::Codebuild.worker_margin();
    let minutes = seconds
        .div_ceil(60)
        .clamp(5, ExecutionTarget::Codebuild.platform_limit() / 60);
    minutes as i32
}

/// How long a build may wait in CodeBuild's queue before it starts (the project's
/// default queued timeout).
const BUILD_QUEUE_LIMIT: Duration = Duration::from_secs(8 * 3600);

/// How long a build's ticket URLs live: the build's queue time and timeout.
fn ticket_expiry(build_minutes: i32) -> Duration {
    let build = Duration::from_secs(u64::from(build_minutes.unsigned_abs()) * 60);
    (BUILD_QUEUE_LIMIT + build).min(Duration::from_secs(MAX_PRESIGN_EXPIRY))
}

fn failed(
    kind: ErrorKind,
    what: &str,
    payload: &DispatchPayload,
    message: String,
) -> DispatchError {
    DispatchError {
        kind,
        what: what.to_owned(),
        run_id: payload.run_id.clone(),
        order_num: payload.order_num,
        message,
    }
}

#[async_trait]
impl Dispatcher for AwsDispatcher {
    async fn start(
        &self,
        target: ExecutionTarget,
        timeout: Duration,
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError> {
        match target {
            ExecutionTarget::Lambda => {
                let event = serde_json::to_vec(payload).map_err(|e| {
                    failed(
                        ErrorKind::Permanent,
                        "lambda worker",
                        payload,
                        e.to_string(),
                    )
                })?;
                self.calls.count("lambda", "Invoke");
                self.lambda
                    .invoke()
                    .function_name(&self.worker_function)
                    .invocation_type(InvocationType::Event)
                    .payload(Blob::new(event))
                    .send()
                    .await
                    .map_err(|e| failed(kind(&e), "lambda worker", payload, describe(&e)))?;
            }
            ExecutionTarget::Codebuild => {
                let minutes = build_timeout_minutes(timeout);
                let environment = (self.tickets.issue(payload, ticket_expiry(minutes)).await)
                    .map_err(|e| failed(e.kind(), "codebuild worker", payload, e.to_string()))?;
                // No idempotency token: every start has a ticket of its own, and a build
                // started twice (a start tried again after its answer was lost) finds its
                // attempt claimed by the first and stops.
                let mut build = self
                    .codebuild
                    .start_build()
                    .project_name(&self.codebuild_project)
                    .timeout_in_minutes_override(minutes);
                for variable in environment {
                    let variable = EnvironmentVariable::builder()
                        .name(variable.name)
                        .value(variable.value)
                        .r#type(variable.kind)
                        .build()
                        .map_err(|e| {
                            failed(
                                ErrorKind::Permanent,
                                "codebuild worker",
                                payload,
                                e.to_string(),
                            )
                        })?;
                    build = build.environment_variables_override(variable);
                }
                self.calls.count("codebuild", "StartBuild");
                let build_id = match build.send().await {
                    Ok(started) => started.build_value.and_then(|build| build.id),
                    // A 2xx answer means the build was accepted; its body may still fail to
                    // parse, as moto's does (it writes timestamps as strings): its id is
                    // read from the JSON as it is.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => {
                        tracing::debug!(run_id = %payload.run_id, order_num = %payload.order_num, error = %aws_sdk_codebuild::error::DisplayErrorContext(&e), "StartBuild accepted, but its answer does not parse");
                        (e.raw_response().and_then(|r| r.body().bytes()))
                            .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
                            .and_then(|answer| answer["build"]["id"].as_str().map(str::to_owned))
                    }
                    Err(e) => {
                        return Err(failed(kind(&e), "codebuild worker", payload, describe(&e)));
                    }
                };
                // For a cancel to stop it; its worker also stops at a cancel by itself.
                let recorded = match &build_id {
                    Some(id) => self
                        .tickets
                        .record_build(payload, id)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("its answer holds no build id".to_owned()),
                };
                if let Err(error) = recorded {
                    tracing::warn!(run_id = %payload.run_id, order_num = %payload.order_num, %error, "the build started is not recorded: a cancel will not stop it (its worker still stops at the cancel)");
                }
            }
        }
        Ok(())
    }

    /// StopBuild for each build the run's dispatches recorded; one that has ended already
    /// is stopped again harmlessly (or refused, and skipped).
    async fn stop_builds(&self, run_id: &RunId) -> Result<usize, DispatchError> {
        let builds = (self.tickets.started_builds(run_id).await).map_err(|e| DispatchError {
            kind: e.kind(),
            what: "listing the run's builds".to_owned(),
            run_id: run_id.clone(),
            order_num: OrderNum::INIT,
            message: e.to_string(),
        })?;
        let mut stopped = 0;
        for id in builds {
            self.calls.count("codebuild", "StopBuild");
            match self.codebuild.stop_build().id(&id).send().await {
                Ok(_) => stopped += 1,
                // Accepted, its answer unparsed (moto's timestamps, as for StartBuild).
                Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => {
                    stopped += 1;
                }
                Err(e) => {
                    tracing::warn!(%run_id, build = %id, error = %describe(&e), "a build of the cancelled run could not be stopped");
                }
            }
        }
        Ok(stopped)
    }

    fn compiles_modules(&self) -> bool {
        self.compile_function.is_some()
    }

    async fn compile(
        &self,
        order_num: OrderNum,
        request: &CompileRequest,
    ) -> Result<(), DispatchError> {
        let failed = |kind, message| DispatchError {
            kind,
            what: "compile function".to_owned(),
            run_id: request.run_id.clone(),
            order_num,
            message,
        };
        let Some(function) = &self.compile_function else {
            return Err(failed(
                ErrorKind::Permanent,
                "SLUICE_COMPILE_FUNCTION is not set: this deployment cannot compile WebAssembly modules for its workers".to_owned(),
            ));
        };
        let event =
            serde_json::to_vec(request).map_err(|e| failed(ErrorKind::Permanent, e.to_string()))?;
        self.calls.count("lambda", "Invoke");
        self.lambda
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(event))
            .send()
            .await
            .map_err(|e| failed(kind(&e), describe(&e)))?;
        Ok(())
    }
}

/// Starts the watchdog state machine for each attempt.
#[derive(Debug, Clone)]
pub struct SfnWatchdog {
    client: aws_sdk_sfn::Client,
    state_machine_arn: String,
    calls: CallCounter,
}

impl SfnWatchdog {
    /// Executions of `state_machine_arn`.
    pub fn new(
        client: aws_sdk_sfn::Client,
        state_machine_arn: impl Into<String>,
        calls: CallCounter,
    ) -> Self {
        SfnWatchdog {
            client,
            state_machine_arn: state_machine_arn.into(),
            calls,
        }
    }
}

#[async_trait]
impl WatchdogStarter for SfnWatchdog {
    async fn start(&self, input: &WatchdogInput) -> Result<(), DispatchError> {
        let fail = |kind, message: String| DispatchError {
            kind,
            what: "watchdog".to_owned(),
            run_id: input.run_id.clone(),
            order_num: input.order_num,
            message,
        };
        let body =
            serde_json::to_string(input).map_err(|e| fail(ErrorKind::Permanent, e.to_string()))?;
        // Execution names: at most 80 characters of [A-Za-z0-9_-].
        let generation = match input.generation {
            0 => String::new(),
            n => format!("-g{n}"),
        };
        let name: String = format!(
            "{}-{}-{}{generation}",
            input.run_id, input.order_num, input.attempt
        )
        .chars()
        .take(80)
        .collect();
        self.calls.count("sfn", "StartExecution");
        let started = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(name)
            .input(body)
            .send()
            .await;
        match started {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_execution_already_exists()) =>
            {
                Ok(())
            }
            Err(e) => Err(fail(kind(&e), describe(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_get_the_orders_timeout_plus_the_workers_margin_in_minutes() {
        let minutes = |secs| build_timeout_minutes(Duration::from_secs(secs));
        assert_eq!(minutes(1), 11, "a second plus 600 s, rounded up");
        assert_eq!(minutes(3600), 70);
        assert_eq!(minutes(3601), 71);
        let longest = ExecutionTarget::Codebuild.max_order_timeout();
        assert_eq!(minutes(longest), 2160, "CodeBuild's own limit");
        assert_eq!(minutes(u64::MAX / 2), 2160);
    }
}
