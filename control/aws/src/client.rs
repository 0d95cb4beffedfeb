//! Submitting a job to a deployment (`sluice submit`): a POST to the HTTP API's `/init`
//! signed with SigV4 for `execute-api` (the API's IAM authorizer checks it), or a direct
//! invoke of the init-job function. Credentials and region come from the standard AWS
//! configuration; the answer is init-job's (`{run_id, trace_id, flow_id, done_endpt,
//! pr_search_tag}`), and a refused job's error list is the error.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use sluice_engine::http::HttpClient;

use crate::sdk_error::describe;

/// Longest a submission may take (init-job clones and packages every order).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(300);

/// POSTs `job` to `endpoint` (the stack's `InitEndpoint`), signed for `execute-api`.
///
/// # Errors
///
/// A message: no credentials, the endpoint unreachable, the job refused (with init-job's
/// error list), or another answer (with its status).
pub async fn submit_http(endpoint: &str, job: Vec<u8>) -> Result<Value, String> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = config
        .region()
        .ok_or("no AWS region is configured (AWS_REGION)")?
        .to_string();
    let credentials = config
        .credentials_provider()
        .ok_or("no AWS credentials are configured")?
        .provide_credentials()
        .await
        .map_err(|e| format!("AWS credentials: {e}"))?;
    let identity = credentials.into();
    let host = endpoint
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("{endpoint} is not an http(s) URL"))?
        .to_owned();
    let headers = [
        ("content-type", "application/json"),
        ("host", host.as_str()),
    ];
    let signable = SignableRequest::new(
        "POST",
        endpoint,
        headers.iter().copied(),
        SignableBody::Bytes(&job),
    )
    .map_err(|e| format!("signing the request: {e}"))?;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing the request: {e}"))?
        .into();
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("signing the request: {e}"))?
        .into_parts();
    let mut request = hyper::Request::post(endpoint).header("content-type", "application/json");
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(job)))
        .map_err(|e| format!("POST {endpoint}: {e}"))?;
    let client = HttpClient::new(SUBMIT_TIMEOUT).map_err(|e| e.to_string())?;
    let answer = client
        .send(request)
        .await
        .map_err(|e| format!("POST {endpoint}: {e}"))?;
    let body: Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()));
    read_answer(
        answer.status.is_success(),
        body,
        &format!("POST {endpoint}: HTTP {}", answer.status),
    )
}

/// Invokes `function` (the init-job function) with `job` and waits for its answer.
///
/// # Errors
///
/// As [`submit_http`].
pub async fn submit_invoke(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    job: Vec<u8>,
) -> Result<Value, String> {
    let output = lambda
        .invoke()
        .function_name(function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(job))
        .send()
        .await
        .map_err(|e| format!("invoking {function}: {}", describe(&e)))?;
    let payload = output.payload.map(Blob::into_inner).unwrap_or_default();
    let body: Value = serde_json::from_slice(&payload)
        .map_err(|e| format!("invoking {function}: the answer is not JSON: {e}"))?;
    read_answer(
        output.function_error.is_none(),
        body,
        &format!("invoking {function}"),
    )
}

/// init-job's answer: the run's ids, or its error list as the error.
fn read_answer(ok: bool, body: Value, what: &str) -> Result<Value, String> {
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            .collect();
        return Err(format!("the job was refused: {}", lines.join("; ")));
    }
    if ok && body.get("run_id").is_some() {
        Ok(body)
    } else {
        Err(format!("{what}: unexpected answer {body}"))
    }
}
