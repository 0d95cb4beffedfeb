//! Starting workers on AWS: an asynchronous Lambda invoke or a CodeBuild build, and the
//! Step Functions watchdog that follows each attempt.
//!
//! - Lambda: `Invoke` with `InvocationType=Event` and the dispatch payload as the event (the
//!   function's async config must have `MaximumRetryAttempts=0`; a retry is the engine's
//!   decision, and the worker's claim makes a duplicate start harmless).
//! - CodeBuild: `StartBuild` with the payload's fields as environment overrides
//!   (`SLUICE_S3_LOCATION`...; see [`payload_env`]) and `idempotencyToken` = the attempt id.
//! - Watchdog: `StartExecution` named `<run_id>-<order_num>-<attempt>`, so starting the same
//!   attempt's watchdog twice is refused by Step Functions and treated as done.

use async_trait::async_trait;
use aws_sdk_codebuild::types::{EnvironmentVariable, EnvironmentVariableType};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use sluice_contract::ExecutionTarget;
use sluice_contract::dispatch::DispatchPayload;
use sluice_engine::ports::{DispatchError, Dispatcher, WatchdogInput, WatchdogStarter};

use crate::calls::CallCounter;

/// Starts workers on Lambda or CodeBuild.
#[derive(Debug, Clone)]
pub struct AwsDispatcher {
    lambda: aws_sdk_lambda::Client,
    codebuild: aws_sdk_codebuild::Client,
    worker_function: String,
    codebuild_project: String,
    calls: CallCounter,
}

/// The dispatch payload as the CodeBuild worker's environment (the worker binary reads the
/// same names back).
pub fn payload_env(payload: &DispatchPayload) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SLUICE_S3_LOCATION", payload.s3_location.clone()),
        ("SLUICE_INTERNAL_BUCKET", payload.internal_bucket.clone()),
        ("SLUICE_RUN_ID", payload.run_id.to_string()),
        ("SLUICE_ORDER_NUM", payload.order_num.to_string()),
        ("SLUICE_ATTEMPT", payload.attempt.clone()),
        ("SLUICE_KEY_PATH", payload.key_path.clone()),
    ];
    if let Some(url) = &payload.callback_url {
        env.push(("SLUICE_CALLBACK_URL", url.clone()));
    }
    env
}

impl AwsDispatcher {
    /// Workers run as `worker_function` (Lambda) or in `codebuild_project`.
    pub fn new(
        lambda: aws_sdk_lambda::Client,
        codebuild: aws_sdk_codebuild::Client,
        worker_function: impl Into<String>,
        codebuild_project: impl Into<String>,
        calls: CallCounter,
    ) -> Self {
        AwsDispatcher {
            lambda,
            codebuild,
            worker_function: worker_function.into(),
            codebuild_project: codebuild_project.into(),
            calls,
        }
    }
}

fn failed(what: &str, payload: &DispatchPayload, message: String) -> DispatchError {
    DispatchError {
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
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError> {
        match target {
            ExecutionTarget::Lambda => {
                let event = serde_json::to_vec(payload)
                    .map_err(|e| failed("lambda worker", payload, e.to_string()))?;
                self.calls.count("lambda", "Invoke");
                self.lambda
                    .invoke()
                    .function_name(&self.worker_function)
                    .invocation_type(InvocationType::Event)
                    .payload(Blob::new(event))
                    .send()
                    .await
                    .map_err(|e| {
                        let message = aws_sdk_lambda::error::DisplayErrorContext(&e).to_string();
                        failed("lambda worker", payload, message)
                    })?;
            }
            ExecutionTarget::Codebuild => {
                let mut build = self
                    .codebuild
                    .start_build()
                    .project_name(&self.codebuild_project)
                    .idempotency_token(&payload.attempt);
                for (name, value) in payload_env(payload) {
                    let variable = EnvironmentVariable::builder()
                        .name(name)
                        .value(value)
                        .r#type(EnvironmentVariableType::Plaintext)
                        .build()
                        .map_err(|e| failed("codebuild worker", payload, e.to_string()))?;
                    build = build.environment_variables_override(variable);
                }
                self.calls.count("codebuild", "StartBuild");
                match build.send().await {
                    Ok(_) => {}
                    // A 2xx answer means the build was accepted; its body (the build's
                    // description, which Sluice does not use) may still fail to parse, as
                    // moto's does (it writes timestamps as strings).
                    Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => {
                        tracing::warn!(run_id = %payload.run_id, order_num = %payload.order_num, error = %aws_sdk_codebuild::error::DisplayErrorContext(&e), "StartBuild accepted, but its answer could not be read");
                    }
                    Err(e) => {
                        let message = aws_sdk_codebuild::error::DisplayErrorContext(&e).to_string();
                        return Err(failed("codebuild worker", payload, message));
                    }
                }
            }
        }
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
        let fail = |message: String| DispatchError {
            what: "watchdog".to_owned(),
            run_id: input.run_id.clone(),
            order_num: input.order_num,
            message,
        };
        let body = serde_json::to_string(input).map_err(|e| fail(e.to_string()))?;
        // Execution names: at most 80 characters of [A-Za-z0-9_-].
        let name: String = format!("{}-{}-{}", input.run_id, input.order_num, input.attempt)
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
            Err(e) => Err(fail(
                aws_sdk_sfn::error::DisplayErrorContext(&e).to_string(),
            )),
        }
    }
}
