//! Submitting a job to a deployment (`sluice submit`): a POST to the HTTP API's `/init`
//! signed with SigV4 for `execute-api` (the API's IAM authorizer checks it), or a direct
//! invoke of the init-job function. Credentials and region come from the standard AWS
//! configuration; the answer is init-job's (`{run_id, trace_id, flow_id, done_endpt,
//! pr_search_tag}`), and a refused job's error list is the error.
//!
//! Submitting is safe to repeat: a job without an `idempotency_key` is given a fresh one
//! before it is sent, so a POST that failed on the way (a connection reset, API Gateway
//! cutting a long init at 30 s with a 504, a throttle) is sent again as the same submission
//! and answers the run the first one created, never a second run.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::Value;
use sluice_engine::http::transport_message;

use crate::sdk_error::describe;

/// Why a submission did not give a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The job file is not a JSON object.
    #[error("{0}")]
    NotAJob(String),
    /// The deployment refused the job: init-job's error list (each names the order and
    /// field, or the credential the caller may not use).
    #[error("the job was refused: {}", .errors.join("; "))]
    Refused {
        /// init-job's errors.
        errors: Vec<String>,
    },
    /// The submission failed: no credentials, the endpoint or function unreachable after
    /// the retries, or an answer that is neither a run nor a refusal.
    #[error("{0}")]
    Failed(String),
}

impl SubmitError {
    /// Whether the job itself is at fault (fix the job; sending it again will not help).
    pub fn is_the_jobs_fault(&self) -> bool {
        matches!(self, SubmitError::NotAJob(_) | SubmitError::Refused { .. })
    }
}

/// Longest a submission may take (init-job clones and packages every order).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Tries of a POST that failed on the way (not a refusal), and the first wait between.
const SUBMIT_TRIES: u32 = 4;
const SUBMIT_RETRY_FIRST: Duration = Duration::from_secs(1);

/// The job with an `idempotency_key`: its own, or a fresh one.
///
/// # Errors
///
/// The job is not a JSON object.
pub fn with_idempotency_key(job: &[u8]) -> Result<Vec<u8>, SubmitError> {
    let not_a_job = |message: String| SubmitError::NotAJob(message);
    let mut value: Value =
        serde_json::from_slice(job).map_err(|e| not_a_job(format!("the job is not JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| not_a_job("the job is not a JSON object".to_owned()))?;
    if !object.contains_key("idempotency_key") {
        let key = format!("submit-{}", uuid::Uuid::new_v4().simple());
        object.insert("idempotency_key".to_owned(), Value::String(key));
    }
    Ok(serde_json::to_vec(&value).expect("JSON serializes"))
}

/// POSTs `job` to `endpoint` (the stack's `InitEndpoint`), signed for `execute-api`.
///
/// # Errors
///
/// A message: no credentials, the endpoint unreachable, the job refused (with init-job's
/// error list), or another answer (with its status).
pub async fn submit_http(endpoint: &str, job: Vec<u8>) -> Result<Value, SubmitError> {
    let job = with_idempotency_key(&job)?;
    let mut wait = SUBMIT_RETRY_FIRST;
    for attempt in 1..=SUBMIT_TRIES {
        match post_once(endpoint, job.clone()).await {
            Posted::Answer(answer) => return answer,
            Posted::Failed(error) if attempt == SUBMIT_TRIES => {
                return Err(SubmitError::Failed(error));
            }
            Posted::Failed(error) => {
                tracing::warn!(%error, attempt, "submitting failed on the way; sending the same submission again");
                eprintln!("sluice: {error}; sending the same submission again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    unreachable!("the last try returns")
}

/// What one POST came to.
enum Posted {
    /// init-job's answer (the run, or the refusal).
    Answer(Result<Value, SubmitError>),
    /// It failed on the way (unreachable, throttled, 5xx): it may be sent again.
    Failed(String),
}

async fn post_once(endpoint: &str, job: Vec<u8>) -> Posted {
    match signed_post(endpoint, job).await {
        Ok((status, body)) if status.is_server_error() || status.as_u16() == 429 => {
            Posted::Failed(format!("POST {endpoint}: HTTP {status}: {body}"))
        }
        Ok((status, body)) => Posted::Answer(read_answer(
            status.is_success(),
            body,
            &format!("POST {endpoint}: HTTP {status}"),
        )),
        Err(SendError::Setup(error)) => Posted::Answer(Err(SubmitError::Failed(error))),
        Err(SendError::Transport(error)) => Posted::Failed(error),
    }
}

/// Why a POST got no answer.
enum SendError {
    /// It could not be made (no credentials, a bad URL): sending again will not help.
    Setup(String),
    /// It failed on the way.
    Transport(String),
}

async fn signed_post(
    endpoint: &str,
    job: Vec<u8>,
) -> Result<(reqwest::StatusCode, Value), SendError> {
    let setup = SendError::Setup;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = config
        .region()
        .ok_or_else(|| setup("no AWS region is configured (AWS_REGION)".to_owned()))?
        .to_string();
    let credentials = config
        .credentials_provider()
        .ok_or_else(|| setup("no AWS credentials are configured".to_owned()))?
        .provide_credentials()
        .await
        .map_err(|e| setup(format!("AWS credentials: {e}")))?;
    let identity = credentials.into();
    let host = endpoint
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| setup(format!("{endpoint} is not an http(s) URL")))?
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
    .map_err(|e| setup(format!("signing the request: {e}")))?;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| setup(format!("signing the request: {e}")))?
        .into();
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| setup(format!("signing the request: {e}")))?
        .into_parts();
    // A redirected POST would be replayed as an unsigned GET: not followed.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(SUBMIT_TIMEOUT)
        .build()
        .map_err(|e| setup(format!("the HTTP client: {e}")))?;
    let mut request = client
        .post(endpoint)
        .header("content-type", "application/json");
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let transport = |e: reqwest::Error| {
        if e.is_builder() {
            SendError::Setup(format!("POST {endpoint}: the URL cannot be requested"))
        } else {
            SendError::Transport(format!("POST {endpoint}: {}", transport_message(e)))
        }
    };
    let answer = request.body(job).send().await.map_err(transport)?;
    let status = answer.status();
    let bytes = answer.bytes().await.map_err(transport)?;
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, body))
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
) -> Result<Value, SubmitError> {
    let job = with_idempotency_key(&job)?;
    let failed = |message: String| SubmitError::Failed(message);
    let output = lambda
        .invoke()
        .function_name(function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(job))
        .send()
        .await
        .map_err(|e| failed(format!("invoking {function}: {}", describe(&e))))?;
    let payload = output.payload.map(Blob::into_inner).unwrap_or_default();
    let body: Value = serde_json::from_slice(&payload)
        .map_err(|e| failed(format!("invoking {function}: the answer is not JSON: {e}")))?;
    read_answer(
        output.function_error.is_none(),
        body,
        &format!("invoking {function}"),
    )
}

/// init-job's answer: the run's ids, or its error list as the error.
fn read_answer(ok: bool, body: Value, what: &str) -> Result<Value, SubmitError> {
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        let errors = errors
            .iter()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            .collect();
        return Err(SubmitError::Refused { errors });
    }
    if ok && body.get("run_id").is_some() {
        Ok(body)
    } else {
        Err(SubmitError::Failed(format!(
            "{what}: unexpected answer {body}"
        )))
    }
}
