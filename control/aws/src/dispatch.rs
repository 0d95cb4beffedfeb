//! Starting workers on AWS: an asynchronous Lambda invoke or a CodeBuild build, and the
//! Step Functions watchdog that follows each attempt.
//!
//! - Lambda: `Invoke` with `InvocationType=Event` and the dispatch payload as the event (the
//!   function's async config must have `MaximumRetryAttempts=0`; a retry is the engine's
//!   decision, and the worker's claim makes a duplicate start harmless).
//! - CodeBuild: `StartBuild` with the payload's fields as environment overrides
//!   (`SLUICE_S3_LOCATION`...; see [`payload_env`]), `idempotencyToken` = the attempt id and
//!   a build timeout covering the order's. The callback URL (a capability: whoever has it
//!   can write the order's result) goes through an SSM SecureString and a `PARAMETER_STORE`
//!   variable, since plaintext overrides are visible to anyone who can read the build.
//! - Watchdog: `StartExecution` named `<run_id>-<order_num>-<attempt>`, so starting the same
//!   attempt's watchdog twice is refused by Step Functions and treated as done.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_codebuild::types::{EnvironmentVariable, EnvironmentVariableType};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use sluice_contract::ExecutionTarget;
use sluice_contract::dispatch::DispatchPayload;
use sluice_engine::ErrorKind;
use sluice_engine::ports::{DispatchError, Dispatcher, WatchdogInput, WatchdogStarter};

use crate::calls::CallCounter;
use crate::keys::SsmKeyStore;
use crate::sdk_error::{describe, kind};

/// Starts workers on Lambda or CodeBuild.
#[derive(Debug, Clone)]
pub struct AwsDispatcher {
    lambda: aws_sdk_lambda::Client,
    codebuild: aws_sdk_codebuild::Client,
    keys: SsmKeyStore,
    worker_function: String,
    codebuild_project: String,
    calls: CallCounter,
}

/// The variable carrying the callback URL.
const CALLBACK_ENV: &str = "SLUICE_CALLBACK_URL";

/// The CodeBuild worker's environment variables and the payload fields they carry.
const PAYLOAD_ENV: [(&str, &str); 7] = [
    ("SLUICE_S3_LOCATION", "s3_location"),
    ("SLUICE_INTERNAL_BUCKET", "internal_bucket"),
    (CALLBACK_ENV, "callback_url"),
    ("SLUICE_RUN_ID", "run_id"),
    ("SLUICE_ORDER_NUM", "order_num"),
    ("SLUICE_ATTEMPT", "attempt"),
    ("SLUICE_KEY_PATH", "key_path"),
];

/// The dispatch payload as the CodeBuild worker's environment (absent fields are left out).
pub fn payload_env(payload: &DispatchPayload) -> Vec<(&'static str, String)> {
    let fields = serde_json::to_value(payload).unwrap_or_default();
    PAYLOAD_ENV
        .iter()
        .filter_map(|(name, field)| {
            let value = fields.get(*field)?.as_str()?;
            Some((*name, value.to_owned()))
        })
        .collect()
}

/// The dispatch payload read back from the environment [`payload_env`] set.
///
/// # Errors
///
/// A message naming the missing or malformed variables.
pub fn payload_from_env(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<DispatchPayload, String> {
    let fields: serde_json::Map<String, serde_json::Value> = PAYLOAD_ENV
        .iter()
        .filter_map(|(name, field)| Some(((*field).to_owned(), lookup(name)?.into())))
        .collect();
    serde_json::from_value(fields.into()).map_err(|e| {
        let names: Vec<&str> = PAYLOAD_ENV.iter().map(|(name, _)| *name).collect();
        format!(
            "the worker's environment ({}) is incomplete: {e}",
            names.join(", ")
        )
    })
}

impl AwsDispatcher {
    /// Workers run as `worker_function` (Lambda) or in `codebuild_project`; CodeBuild
    /// callback URLs are kept in `keys`.
    pub fn new(
        lambda: aws_sdk_lambda::Client,
        codebuild: aws_sdk_codebuild::Client,
        keys: SsmKeyStore,
        worker_function: impl Into<String>,
        codebuild_project: impl Into<String>,
        calls: CallCounter,
    ) -> Self {
        AwsDispatcher {
            lambda,
            codebuild,
            keys,
            worker_function: worker_function.into(),
            codebuild_project: codebuild_project.into(),
            calls,
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
                let mut build = self
                    .codebuild
                    .start_build()
                    .project_name(&self.codebuild_project)
                    .idempotency_token(&payload.attempt)
                    .timeout_in_minutes_override(build_timeout_minutes(timeout));
                for (name, value) in payload_env(payload) {
                    let (value, kind) = if name == CALLBACK_ENV {
                        let parameter = self
                            .keys
                            .put_callback(
                                &payload.run_id,
                                payload.order_num,
                                &payload.attempt,
                                &value,
                            )
                            .await
                            .map_err(|e| {
                                failed(e.kind(), "codebuild worker", payload, e.to_string())
                            })?;
                        (parameter, EnvironmentVariableType::ParameterStore)
                    } else {
                        (value, EnvironmentVariableType::Plaintext)
                    };
                    let variable = EnvironmentVariable::builder()
                        .name(name)
                        .value(value)
                        .r#type(kind)
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
                match build.send().await {
                    Ok(_) => {}
                    // A 2xx answer means the build was accepted; its body (the build's
                    // description, which Sluice does not use) may still fail to parse, as
                    // moto's does (it writes timestamps as strings).
                    Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => {
                        tracing::warn!(run_id = %payload.run_id, order_num = %payload.order_num, error = %aws_sdk_codebuild::error::DisplayErrorContext(&e), "StartBuild accepted, but its answer could not be read");
                    }
                    Err(e) => {
                        return Err(failed(kind(&e), "codebuild worker", payload, describe(&e)));
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
    fn the_payload_survives_the_environment() {
        let payload = DispatchPayload {
            s3_location: "tmp/exec/r/0001/exec.zip".to_owned(),
            internal_bucket: "internal".to_owned(),
            callback_url: "https://b.s3.amazonaws.com/k?X-Amz-Signature=s".to_owned(),
            run_id: sluice_contract::RunId::generate(),
            order_num: sluice_contract::OrderNum::from_index(2),
            attempt: "a1".to_owned(),
            key_path: "/sluice/sops-keys/r/0003".to_owned(),
        };
        let env = payload_env(&payload);
        assert_eq!(env.len(), 7);
        assert!(env.contains(&("SLUICE_ORDER_NUM", "0003".to_owned())));
        let lookup = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(payload_from_env(lookup).unwrap(), payload);
        let err = payload_from_env(|_| None).unwrap_err();
        assert!(err.contains("SLUICE_S3_LOCATION"), "{err}");
    }

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
