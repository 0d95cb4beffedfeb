//! [`HttpTransfer`]: a worker's requests to the presigned S3 URLs of its dispatch, over
//! HTTPS (or plain HTTP for moto in tests) with the platform's trusted roots. The worker
//! has no AWS credentials: each URL carries the authority of the orchestrator that signed
//! it, for one operation on one object of one attempt.
//!
//! - GET reads at most the bound it is given (a `Range` request, and the answer cut there);
//!   a larger object is an error, never loaded whole.
//! - A put-if-absent is a PUT with `If-None-Match: *`: a 412 says an object is there
//!   ([`Delivery::AlreadyThere`]: a claim or result already taken).
//! - A file PUT streams the file with its length (S3 refuses chunked presigned PUTs).
//!
//! A 5xx, a 429, a 409 (a conditional write racing another), S3's `RequestTimeout` or no
//! answer at all is transient (the worker tries again); anything else is permanent.
//! Messages name the operation, the URL's path and S3's error code and message: never the
//! signature, the host (which names the account) or the rest of an error body.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::StatusCode;
use sluice_contract::dispatch::Capability;
use sluice_engine::http::{self, HttpAnswer, HttpClient};
use sluice_worker::{Delivery, IoError, WorkerIo};

use crate::calls::CallCounter;

/// The service the presigned URLs are of, for the call counts.
const SERVICE: &str = "s3";

/// How long a small request (a claim, a result, a ticket) may take.
const SMALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a large one (a bundle, a log) may take: the whole of a Lambda's life.
const LARGE_TIMEOUT: Duration = Duration::from_secs(900);

/// Reads above this size go through the client with the long timeout.
const LARGE_READ: u64 = 1 << 20;

/// Requests to presigned URLs, counted as the S3 calls they are.
#[derive(Debug, Clone)]
pub struct HttpTransfer {
    small: HttpClient,
    large: HttpClient,
    calls: CallCounter,
}

impl HttpTransfer {
    /// A client trusting the platform's root certificates.
    ///
    /// # Errors
    ///
    /// The platform's certificates cannot be loaded.
    pub fn new() -> std::io::Result<Self> {
        Ok(HttpTransfer {
            small: HttpClient::new(SMALL_TIMEOUT)?,
            large: HttpClient::new(LARGE_TIMEOUT)?,
            calls: CallCounter::default(),
        })
    }

    /// The same, counting its requests in `calls`.
    pub fn counted(self, calls: CallCounter) -> Self {
        HttpTransfer { calls, ..self }
    }

    /// DELETEs the object at `url` (a missing object is deleted too).
    ///
    /// # Errors
    ///
    /// The answer is not a 2xx (or the request failed).
    pub async fn delete(&self, url: &Capability) -> Result<(), IoError> {
        let what = || format!("DELETE {}", url.shown());
        let request = hyper::Request::delete(url.expose())
            .body(http::body(Bytes::new()))
            .map_err(|e| IoError::permanent(what(), e.to_string()))?;
        self.calls.count(SERVICE, "DeleteObject");
        let answer = sent(&self.small, request, 4096, what).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(refused(what(), &answer))
        }
    }
}

/// Sends `request`: no answer at all may well be a passing network failure.
async fn sent(
    client: &HttpClient,
    request: hyper::Request<http::Body>,
    max_bytes: u64,
    what: impl Fn() -> String,
) -> Result<HttpAnswer, IoError> {
    let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    client
        .send_bounded(request, max)
        .await
        .map_err(|e| IoError::transient(what(), e))
}

/// S3 error codes that a later try may not get: the service asks to slow down or failed,
/// the connection was too slow, or two conditional writes raced.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "ConditionalRequestConflict",
];

/// An answer that is not a success, as an error of its kind. The message is the status,
/// S3's error code and message, and nothing else of the body (which may name the signing
/// key, a token or the account).
fn refused(what: String, answer: &HttpAnswer) -> IoError {
    let status = answer.status;
    let body = String::from_utf8_lossy(&answer.body);
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = start + body[start..].find('<')?;
        Some(body[start..end].chars().take(200).collect::<String>())
    };
    let code = element("Code");
    let message = match (&code, element("Message")) {
        (Some(code), Some(text)) => format!("HTTP {status}: {code}: {text}"),
        (Some(code), None) => format!("HTTP {status}: {code}"),
        _ => format!("HTTP {status}"),
    };
    let transient = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::CONFLICT
        || code.is_some_and(|code| TRANSIENT_CODES.contains(&code.as_str()));
    if transient {
        IoError::transient(what, message)
    } else {
        IoError::permanent(what, message)
    }
}

#[async_trait]
impl WorkerIo for HttpTransfer {
    async fn get(&self, url: &Capability, max_bytes: u64) -> Result<Vec<u8>, IoError> {
        let what = || format!("GET {}", url.shown());
        // One byte more than allowed tells a larger object from one just at the bound.
        let request = hyper::Request::get(url.expose())
            .header("range", format!("bytes=0-{max_bytes}"))
            .body(http::body(Bytes::new()))
            .map_err(|e| IoError::permanent(what(), e.to_string()))?;
        let client = if max_bytes > LARGE_READ {
            &self.large
        } else {
            &self.small
        };
        // An error body of a few KiB is read even when the bound is smaller.
        self.calls.count(SERVICE, "GetObject");
        let answer = sent(client, request, max_bytes.saturating_add(1).max(4096), what).await?;
        if !answer.status.is_success() {
            return Err(refused(what(), &answer));
        }
        if answer.body.len() as u64 > max_bytes {
            return Err(IoError::permanent(
                what(),
                format!("the object is larger than {max_bytes} bytes"),
            ));
        }
        Ok(answer.body.to_vec())
    }

    async fn put_if_absent(&self, url: &Capability, body: Vec<u8>) -> Result<Delivery, IoError> {
        let what = || format!("PUT {}", url.shown());
        let request = hyper::Request::put(url.expose())
            .header("content-type", "application/json")
            .header("if-none-match", "*")
            .body(http::body(body))
            .map_err(|e| IoError::permanent(what(), e.to_string()))?;
        self.calls.count(SERVICE, "PutObject");
        let answer = sent(&self.small, request, 4096, what).await?;
        match answer.status {
            status if status.is_success() => Ok(Delivery::Stored),
            StatusCode::PRECONDITION_FAILED => Ok(Delivery::AlreadyThere),
            _ => Err(refused(what(), &answer)),
        }
    }

    async fn put_file(&self, url: &Capability, path: &Path) -> Result<(), IoError> {
        let what = || format!("PUT {}", url.shown());
        let reading = |e: std::io::Error| {
            IoError::permanent(what(), format!("reading {}: {e}", path.display()))
        };
        let file = tokio::fs::File::open(path).await.map_err(reading)?;
        let length = file.metadata().await.map_err(reading)?.len();
        let frames = tokio_util::io::ReaderStream::new(file).map_ok(hyper::body::Frame::data);
        let request = hyper::Request::put(url.expose())
            .header("content-type", "text/plain; charset=utf-8")
            .header("content-length", length)
            .body(StreamBody::new(frames).boxed())
            .map_err(|e| IoError::permanent(what(), e.to_string()))?;
        self.calls.count(SERVICE, "PutObject");
        let answer = sent(&self.large, request, 4096, what).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(refused(what(), &answer))
        }
    }
}
