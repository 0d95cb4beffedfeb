//! init-job: accepts a job from API Gateway (REST v1 and HTTP v2), a Lambda function URL,
//! SNS, or a direct invoke, and answers in the caller's shape.
//!
//! The job is the JSON document itself or `{"job_parameters_b64": "<base64 of it>"}`; or
//! the body asks to run a finished run's job again: `{"rerun_of": "<run id>", "failed":
//! true}` ([`RerunSubmission`]; 404 for a run that never was, 403 for a caller other
//! than the run's submitter).
//! HTTP callers get a proxy response: 405 for anything but POST, 400 with the error list
//! for a job that does not parse or validate, 403 for a request without an IAM identity or
//! naming a credential its caller is not granted ([`sluice_engine::grants`]), 200 with
//! `{run_id, trace_id, flow_id,
//! done_endpt, pr_search_tag}`. SNS and direct callers get that JSON object (or
//! `{"errors": [...]}`) as the result; a failure of Sluice itself is an error, so Lambda
//! reports (and for asynchronous sources retries) it.
//!
//! The job runs under its caller's name ([`Caller`]): the IAM user or role API Gateway or
//! the function URL authenticated, or the SNS topic; a job naming another `username` is
//! refused. A direct invoke (which needs `lambda:InvokeFunction`, an operator's
//! permission) keeps the job's `username` and is not checked against the grants.

use std::path::Path;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::sns::SnsEvent;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_contract::caller::Caller;
use sluice_contract::{JobSpec, ParseError, RunId, ValidateOptions, parse_job};
use sluice_engine::rerun::{NotRerunnable, RerunRequest};
use sluice_engine::{Engine, EngineError};

/// Where the job came from, which decides the answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// API Gateway REST API (payload v1).
    RestApi,
    /// API Gateway HTTP API (payload v2) or a Lambda function URL (same format).
    HttpApi,
    /// An SNS notification.
    Sns,
    /// A direct `Invoke`.
    Direct,
}

/// A job request taken out of its event.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The event's kind.
    pub source: Source,
    /// The HTTP method, for HTTP sources.
    pub method: Option<String>,
    /// The body: the job, or `{"job_parameters_b64": ...}`.
    pub body: Vec<u8>,
    /// The delivery's own id, which a redelivery repeats (SNS delivers at least once): the
    /// job's idempotency key when it names none.
    pub delivery_id: Option<String>,
    /// Who sent it: the IAM principal API Gateway or the function URL authenticated, the
    /// SNS topic; `None` for a direct invoke (an operator's) and for an HTTP request that
    /// carries no IAM identity (refused).
    pub caller: Option<Caller>,
}

/// Why an event cannot be read as a job request: init-job answers it with a 400 whose
/// error is this message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event has the shape of an API Gateway, function URL or SNS event, but does not
    /// read as one.
    #[error("unreadable {} event: {source}", event_name(*kind))]
    Unreadable {
        /// The kind of event it looks like.
        kind: Source,
        /// Why it does not read as one.
        #[source]
        source: serde_json::Error,
    },
    /// An HTTP request's body, flagged base64, does not decode.
    #[error("the body is not valid base64: {0}")]
    BodyNotBase64(#[source] base64::DecodeError),
    /// An SNS event without a record.
    #[error("the SNS event has no record")]
    NoSnsRecord,
    /// A direct invoke's event could not be written back as JSON.
    #[error("{0}")]
    Unserializable(#[source] serde_json::Error),
}

/// How a message names an event of `kind`.
fn event_name(kind: Source) -> &'static str {
    match kind {
        Source::RestApi => "REST API",
        Source::HttpApi => "HTTP API",
        Source::Sns => "SNS",
        Source::Direct => "direct invoke",
    }
}

/// Why a request's body holds no job: init-job answers it with a 400 whose error is this
/// message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// `job_parameters_b64` does not decode.
    #[error("job_parameters_b64 is not valid base64: {0}")]
    JobNotBase64(#[source] base64::DecodeError),
    /// `job_parameters_b64` is not a string.
    #[error("job_parameters_b64 must be a string")]
    JobNotAString,
    /// The job does not parse.
    #[error(transparent)]
    Job(#[from] ParseError),
    /// A rerun request does not read as one.
    #[error(
        "a rerun request is {{\"rerun_of\": RUN_ID, \"failed\": BOOL, \"idempotency_key\": KEY}}: {0}"
    )]
    Rerun(#[source] serde_json::Error),
}

/// Recognises the event's shape.
///
/// # Errors
///
/// An [`EventError`] saying what could not be read.
pub fn read_event(event: &Value) -> Result<Request, EventError> {
    let http_body = |body: Option<&str>, base64: bool| -> Result<Vec<u8>, EventError> {
        let body = body.unwrap_or_default();
        if base64 {
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(EventError::BodyNotBase64)
        } else {
            Ok(body.as_bytes().to_vec())
        }
    };
    let unreadable = |kind: Source| move |source| EventError::Unreadable { kind, source };
    if event.get("version").and_then(Value::as_str) == Some("2.0")
        && event.pointer("/requestContext/http").is_some()
    {
        let request: ApiGatewayV2httpRequest =
            serde_json::from_value(event.clone()).map_err(unreadable(Source::HttpApi))?;
        let caller = request
            .request_context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.iam.as_ref())
            .and_then(|iam| iam.user_arn.as_deref())
            .and_then(Caller::from_iam_arn);
        return Ok(Request {
            source: Source::HttpApi,
            method: Some(request.request_context.http.method.to_string()),
            body: http_body(request.body.as_deref(), request.is_base64_encoded)?,
            delivery_id: None,
            caller,
        });
    }
    if event.get("httpMethod").is_some() && event.get("requestContext").is_some() {
        let request: ApiGatewayProxyRequest =
            serde_json::from_value(event.clone()).map_err(unreadable(Source::RestApi))?;
        let caller = request
            .request_context
            .identity
            .user_arn
            .as_deref()
            .and_then(Caller::from_iam_arn);
        return Ok(Request {
            source: Source::RestApi,
            method: Some(request.http_method.to_string()),
            body: http_body(request.body.as_deref(), request.is_base64_encoded)?,
            delivery_id: None,
            caller,
        });
    }
    if event.pointer("/Records/0/Sns").is_some() {
        let sns: SnsEvent =
            serde_json::from_value(event.clone()).map_err(unreadable(Source::Sns))?;
        let record = sns
            .records
            .into_iter()
            .next()
            .ok_or(EventError::NoSnsRecord)?;
        return Ok(Request {
            source: Source::Sns,
            method: None,
            caller: Caller::from_topic_arn(&record.sns.topic_arn),
            body: record.sns.message.into_bytes(),
            delivery_id: Some(format!("sns-{}", record.sns.message_id)),
        });
    }
    Ok(Request {
        source: Source::Direct,
        method: None,
        body: serde_json::to_vec(event).map_err(EventError::Unserializable)?,
        delivery_id: None,
        caller: None,
    })
}

/// A request to run a finished run's job again (`sluice rerun --aws`): `{"rerun_of":
/// "<run id>", "failed": true}`, with an `idempotency_key` of its own if its sender gives
/// one (see [`sluice_engine::rerun`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerunSubmission {
    /// The run to run again.
    pub rerun_of: String,
    /// Run only what did not succeed; the rest is reused.
    #[serde(default)]
    pub failed: bool,
    /// Makes sending the request again harmless, as a job's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// What a body asks for.
enum Submitted {
    /// A job to run.
    Job(Box<JobSpec>),
    /// A finished run to run again.
    Rerun(RerunSubmission),
}

/// The job a body holds, or the rerun it asks for (an object naming `rerun_of`).
fn submission(body: &[u8]) -> Result<Submitted, BodyError> {
    let bytes = job_bytes(body)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(BodyError::NotJson)?;
    if value.get("rerun_of").is_some() {
        let rerun = serde_json::from_value(value).map_err(BodyError::Rerun)?;
        return Ok(Submitted::Rerun(rerun));
    }
    Ok(Submitted::Job(Box::new(parse_job(&bytes)?)))
}

/// The job document from a body: itself, or the decoding of its `job_parameters_b64`.
fn job_bytes(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    let value: Value = serde_json::from_slice(body).map_err(BodyError::NotJson)?;
    match value.get("job_parameters_b64") {
        Some(Value::String(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(BodyError::JobNotBase64),
        Some(_) => Err(BodyError::JobNotAString),
        None => Ok(body.to_vec()),
    }
}

/// Handles one event (see the module docs).
///
/// # Errors
///
/// Sluice itself failed (storage, keys): not the caller's fault.
pub async fn handle(engine: &Engine, event: &Value) -> Result<Value, EngineError> {
    let request = match read_event(event) {
        Ok(request) => request,
        Err(error) => {
            return Ok(answer(
                Source::Direct,
                400,
                &json!({ "errors": [error.to_string()] }),
            ));
        }
    };
    if let Some(method) = &request.method
        && !method.eq_ignore_ascii_case("POST")
    {
        let body = json!({ "errors": [format!("{method} is not allowed: POST the job")] });
        return Ok(answer(request.source, 405, &body));
    }
    let submitted = match submission(&request.body) {
        Ok(submitted) => submitted,
        Err(error) => {
            return Ok(answer(
                request.source,
                400,
                &json!({ "errors": [error.to_string()] }),
            ));
        }
    };
    let options = match (request.source, request.caller) {
        (_, Some(caller)) => ValidateOptions::aws_from(caller),
        (Source::Direct, None) => ValidateOptions::aws(),
        (source, None) => {
            let message = "the request carries no IAM identity (or one that is not an IAM user \
                           or role, or an SNS topic): init-job must be behind IAM \
                           authorization, which names who submits each job";
            return Ok(answer(source, 403, &json!({ "errors": [message] })));
        }
    };
    let queued = match submitted {
        Submitted::Job(mut job) => {
            if job.idempotency_key.is_none() {
                job.idempotency_key = request.delivery_id;
            }
            engine.init_job(&job, &options, Path::new("/")).await
        }
        Submitted::Rerun(rerun) => {
            let Some(of) = RunId::parse(&rerun.rerun_of) else {
                let error = format!("rerun_of: {:?} is not a run id", rerun.rerun_of);
                return Ok(answer(request.source, 400, &json!({ "errors": [error] })));
            };
            let rerun = RerunRequest {
                of,
                failed_only: rerun.failed,
                idempotency_key: rerun.idempotency_key.or(request.delivery_id),
            };
            engine.rerun_as(RunId::generate(), &rerun, &options).await
        }
    };
    match queued {
        Ok(response) => {
            tracing::info!(run_id = %response.run_id, "job accepted");
            let body = json!({
                "run_id": response.run_id, "trace_id": response.trace_id,
                "flow_id": response.flow_id, "done_endpt": response.done_endpt,
                "pr_search_tag": response.pr_search_tag,
            });
            Ok(answer(request.source, 200, &body))
        }
        Err(error @ EngineError::Forbidden { .. }) => Ok(answer(
            request.source,
            403,
            &json!({ "errors": [error.to_string()] }),
        )),
        Err(
            error @ EngineError::NotRerunnable {
                why: NotRerunnable::NotTheSubmitter,
                ..
            },
        ) => Ok(answer(
            request.source,
            403,
            &json!({ "errors": [error.to_string()] }),
        )),
        Err(error @ EngineError::UnknownRun(_)) => Ok(answer(
            request.source,
            404,
            &json!({ "errors": [error.to_string()] }),
        )),
        Err(error) if error.is_invalid_input() => Ok(answer(
            request.source,
            400,
            &json!({ "errors": [error.to_string()] }),
        )),
        Err(error) => Err(error),
    }
}

/// The answer in the caller's shape: an HTTP proxy response, or the body itself.
fn answer(source: Source, status: u16, body: &Value) -> Value {
    match source {
        Source::RestApi | Source::HttpApi => json!({
            "statusCode": status,
            "headers": { "content-type": "application/json" },
            "body": body.to_string(),
            "isBase64Encoded": false,
        }),
        Source::Sns | Source::Direct => body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_naming_rerun_of_asks_for_a_rerun() {
        let run = "f81d4fae-7dec-41d0-a765-00a0c91e6bf6";
        let body = format!(r#"{{"rerun_of":"{run}","failed":true,"idempotency_key":"k1"}}"#);
        let Ok(Submitted::Rerun(rerun)) = submission(body.as_bytes()) else {
            panic!("not read as a rerun");
        };
        let expected = RerunSubmission {
            rerun_of: run.to_owned(),
            failed: true,
            idempotency_key: Some("k1".to_owned()),
        };
        assert_eq!(rerun, expected);
        // What `sluice rerun --aws` sends reads back as it was.
        let sent = serde_json::to_vec(&expected).unwrap();
        assert!(matches!(submission(&sent), Ok(Submitted::Rerun(r)) if r == expected));
        // A misspelt field is refused, naming the shape; a job stays a job.
        let error = submission(format!(r#"{{"rerun_of":"{run}","faled":true}}"#).as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("a rerun request is") && error.contains("faled"),
            "{error}"
        );
        let job = br#"{"orders":[{"cmds":["true"],"timeout":5}]}"#;
        assert!(matches!(submission(job), Ok(Submitted::Job(_))));
    }

    #[test]
    fn bodies_may_be_the_job_or_its_base64() {
        let job = br#"{"orders":[]}"#;
        assert_eq!(job_bytes(job).unwrap(), job);
        let encoded = base64::engine::general_purpose::STANDARD.encode(job);
        let wrapped = format!(r#"{{"job_parameters_b64":"{encoded}"}}"#);
        assert_eq!(job_bytes(wrapped.as_bytes()).unwrap(), job);
        assert!(
            job_bytes(br#"{"job_parameters_b64":"%%%"}"#)
                .unwrap_err()
                .to_string()
                .contains("not valid base64")
        );
        assert!(
            job_bytes(b"nope")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
    }
}
