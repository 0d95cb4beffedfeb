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

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use sluice_contract::dispatch::{Capability, PinnedRange};
use sluice_lambda::CallCounter;
use sluice_worker::{Delivery, IoError, WorkerIo};

/// The service the presigned URLs are of, for the call counts.
const SERVICE: &str = "s3";

/// How long a small request (a claim, a result, a ticket) may take.
const SMALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a large one (a bundle, a log) may take: the whole of a Lambda's life.
const LARGE_TIMEOUT: Duration = Duration::from_secs(900);

/// Reads above this size get the long timeout.
const LARGE_READ: u64 = 1 << 20;

/// Most bytes of an error answer read (S3's XML error is a few hundred).
const MAX_ERROR_BODY: u64 = 4096;

/// What a stored log is.
const LOG_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Requests to presigned URLs, counted as the S3 calls they are.
#[derive(Debug, Clone)]
pub struct HttpTransfer {
    client: Client,
    calls: CallCounter,
}

impl HttpTransfer {
    /// A client trusting the platform's root certificates.
    ///
    /// # Errors
    ///
    /// The TLS backend cannot be set up (the platform's certificates cannot be loaded).
    pub fn new() -> Result<Self, reqwest::Error> {
        // A presigned URL names its object; an answer pointing elsewhere is an error, not
        // something to follow with the same method or without it.
        let client = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpTransfer {
            client,
            calls: CallCounter::default(),
        })
    }

    /// The same, counting its requests in `calls`.
    pub fn counted(self, calls: CallCounter) -> Self {
        HttpTransfer { calls, ..self }
    }

    /// A request of `method` to `url`, counted as `operation`, within `timeout`.
    fn request(
        &self,
        method: Method,
        url: &Capability,
        operation: &'static str,
        timeout: Duration,
    ) -> RequestBuilder {
        self.calls.count(SERVICE, operation);
        self.client.request(method, url.expose()).timeout(timeout)
    }

    /// DELETEs the object at `url` (a missing object is deleted too).
    ///
    /// # Errors
    ///
    /// The answer is not a 2xx (or the request failed).
    pub async fn delete(&self, url: &Capability) -> Result<(), IoError> {
        let what = || format!("DELETE {}", url.shown());
        let request = self.request(Method::DELETE, url, "DeleteObject", SMALL_TIMEOUT);
        succeeded(sent(request, what).await?, what).await
    }
}

/// Sends `request`: no answer at all may well be a passing network failure; a request
/// that cannot even be made (a malformed URL) will not be made by trying again.
async fn sent(request: RequestBuilder, what: impl Fn() -> String) -> Result<Response, IoError> {
    request
        .send()
        .await
        .map_err(|e| transport_error(what(), &e))
}

/// A request that got no (whole) answer, as an error of its kind. The message says what
/// happened in words of its own: never reqwest's or the TLS library's text, which name the
/// URL (its signature) or the host (which names the account).
fn transport_error(what: String, error: &reqwest::Error) -> IoError {
    if error.is_builder() {
        return IoError::permanent(what, "the URL cannot be requested");
    }
    let happened = if error.is_timeout() {
        "no answer in time"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the request failed on the way"
    };
    // The innermost I/O error's kind ("connection refused", "connection reset") names no
    // host; its message might.
    let mut cause = std::error::Error::source(error);
    let mut io_kind = None;
    while let Some(inner) = cause {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        cause = inner.source();
    }
    match io_kind {
        Some(kind) => IoError::transient(what, format!("{happened} ({kind})")),
        None => IoError::transient(what, happened),
    }
}

/// At most `max_bytes` of `response`'s body, and whether there was more.
async fn bounded_body(
    mut response: Response,
    max_bytes: u64,
    what: impl Fn() -> String,
) -> Result<(Vec<u8>, bool), IoError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(what(), &e))?
    {
        let room = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// `Ok` for a 2xx answer, else the refusal as an error of its kind.
async fn succeeded(response: Response, what: impl Fn() -> String) -> Result<(), IoError> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(refused(response, what).await)
    }
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
async fn refused(response: Response, what: impl Fn() -> String) -> IoError {
    let status = response.status();
    let body = match bounded_body(response, MAX_ERROR_BODY, &what).await {
        Ok((body, _)) => String::from_utf8_lossy(&body).into_owned(),
        Err(_) => String::new(),
    };
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
        IoError::transient(what(), message)
    } else {
        IoError::permanent(what(), message)
    }
}

#[async_trait::async_trait]
impl WorkerIo for HttpTransfer {
    async fn get(&self, url: &Capability, max_bytes: u64) -> Result<Vec<u8>, IoError> {
        let what = || format!("GET {}", url.shown());
        let timeout = if max_bytes > LARGE_READ {
            LARGE_TIMEOUT
        } else {
            SMALL_TIMEOUT
        };
        // One byte more than allowed tells a larger object from one just at the bound.
        let request = self
            .request(Method::GET, url, "GetObject", timeout)
            .header("range", format!("bytes=0-{max_bytes}"));
        let response = sent(request, what).await?;
        if !response.status().is_success() {
            return Err(refused(response, what).await);
        }
        let (body, more) = bounded_body(response, max_bytes, what).await?;
        if more {
            return Err(IoError::permanent(
                what(),
                format!("the object is larger than {max_bytes} bytes"),
            ));
        }
        Ok(body)
    }

    async fn get_range(&self, url: &Capability, range: &PinnedRange) -> Result<Vec<u8>, IoError> {
        let what = || format!("GET {} ({})", url.shown(), range.range_header());
        let timeout = if range.len > LARGE_READ {
            LARGE_TIMEOUT
        } else {
            SMALL_TIMEOUT
        };
        // Both are signed into the URL: the request must carry them as they were signed.
        let request = self
            .request(Method::GET, url, "GetObject", timeout)
            .header("range", range.range_header())
            .header("if-range", &range.etag)
            .header("if-match", &range.etag);
        let response = sent(request, what).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(refused(response, what).await);
        }
        // 206 with the range; a 200 is the whole object (another version than the one the
        // range is pinned to, or a store that ignores ranges): right only when it is the
        // range.
        let whole = status != StatusCode::PARTIAL_CONTENT;
        let (body, more) = bounded_body(response, range.len, what).await?;
        if more || body.len() as u64 != range.len || (whole && range.start != 0) {
            return Err(IoError::permanent(
                what(),
                format!(
                    "the answer ({status}, {}{} bytes) is not the {} bytes asked for",
                    if more { "more than " } else { "" },
                    body.len(),
                    range.len
                ),
            ));
        }
        Ok(body)
    }

    async fn put_if_absent(&self, url: &Capability, body: Vec<u8>) -> Result<Delivery, IoError> {
        let what = || format!("PUT {}", url.shown());
        let request = self
            .request(Method::PUT, url, "PutObject", SMALL_TIMEOUT)
            .header("content-type", "application/json")
            .header("if-none-match", "*")
            .body(body);
        let response = sent(request, what).await?;
        match response.status() {
            status if status.is_success() => Ok(Delivery::Stored),
            StatusCode::PRECONDITION_FAILED => Ok(Delivery::AlreadyThere),
            _ => Err(refused(response, what).await),
        }
    }

    async fn put(&self, url: &Capability, body: Vec<u8>) -> Result<(), IoError> {
        let what = || format!("PUT {}", url.shown());
        let request = self
            .request(Method::PUT, url, "PutObject", SMALL_TIMEOUT)
            .header("content-type", LOG_CONTENT_TYPE)
            .body(body);
        succeeded(sent(request, what).await?, what).await
    }

    async fn put_file(&self, url: &Capability, path: &Path) -> Result<(), IoError> {
        let what = || format!("PUT {}", url.shown());
        let reading = |e: std::io::Error| {
            IoError::permanent(what(), format!("reading {}: {e}", path.display()))
        };
        let file = tokio::fs::File::open(path).await.map_err(reading)?;
        let length = file.metadata().await.map_err(reading)?.len();
        let chunks = tokio_util::io::ReaderStream::new(file);
        let request = self
            .request(Method::PUT, url, "PutObject", LARGE_TIMEOUT)
            .header("content-type", LOG_CONTENT_TYPE)
            .header("content-length", length)
            .body(reqwest::Body::wrap_stream(chunks));
        succeeded(sent(request, what).await?, what).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL that names a closed port on this machine, signed.
    const UNREACHABLE: &str = "http://127.0.0.1:1/tmp/claims/r/0001/a1?X-Amz-Signature=topsecret";

    #[tokio::test]
    async fn a_failed_connection_is_transient_and_names_neither_host_nor_signature() {
        let transfer = HttpTransfer::new().unwrap();
        let error = transfer
            .get(&Capability::new(UNREACHABLE), 10)
            .await
            .unwrap_err();
        assert!(error.transient, "{error}");
        let text = format!("{error} {error:?}");
        assert!(text.contains("/tmp/claims/r/0001/a1"), "{text}");
        assert!(text.contains("could not connect"), "{text}");
        for leaked in ["topsecret", "127.0.0.1", "Signature"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
    }

    #[tokio::test]
    async fn a_url_that_cannot_be_requested_is_not_tried_again() {
        let transfer = HttpTransfer::new().unwrap();
        let error = transfer
            .get(
                &Capability::new("file:///etc/passwd?X-Amz-Signature=topsecret"),
                10,
            )
            .await
            .unwrap_err();
        assert!(!error.transient, "{error}");
        assert!(!format!("{error:?}").contains("topsecret"));
    }
}
