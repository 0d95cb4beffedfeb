//! [`HttpClient`]: the one HTTP(S) client of Sluice's adapters (the worker's presigned
//! transfers, the GitHub API): the platform's trusted roots, plain HTTP allowed (moto and
//! the test stand-ins on 127.0.0.1), a timeout on every request, the answer read up to a
//! bound. Bodies go out whole ([`body`]) or streamed (a log file).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An answer.
#[derive(Debug)]
pub struct HttpAnswer {
    /// Its status.
    pub status: hyper::StatusCode,
    /// Its headers.
    pub headers: hyper::HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl HttpAnswer {
    /// The answer as an error text: its status and the start of its body.
    pub fn refusal(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        format!(
            "HTTP {}: {}",
            self.status,
            text.chars().take(300).collect::<String>()
        )
    }
}

/// A request body: bytes in memory ([`body`]) or a stream.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A request body of `bytes`.
pub fn body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Most bytes of an answer read when the caller sets no bound.
const DEFAULT_MAX_ANSWER: usize = 16 << 20;

/// An HTTP(S) client (cheap to clone: connections are pooled and shared).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    timeout: Duration,
}

impl HttpClient {
    /// A client trusting the platform's root certificates, giving each request `timeout`.
    ///
    /// # Errors
    ///
    /// The platform's certificates cannot be loaded.
    pub fn new(timeout: Duration) -> std::io::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpClient {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    /// Sends `request` and reads the answer (at most 16 MiB of it).
    ///
    /// # Errors
    ///
    /// A message when there is no answer within the timeout, the connection fails or the
    /// answer is longer (the status of an answer, whatever it is, is the caller's to judge).
    pub async fn send(&self, request: hyper::Request<Body>) -> Result<HttpAnswer, String> {
        self.send_bounded(request, DEFAULT_MAX_ANSWER).await
    }

    /// Sends `request` and reads an answer of at most `max_bytes`.
    ///
    /// # Errors
    ///
    /// As [`HttpClient::send`].
    pub async fn send_bounded(
        &self,
        request: hyper::Request<Body>,
        max_bytes: usize,
    ) -> Result<HttpAnswer, String> {
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {} s", self.timeout.as_secs()))?
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(self.timeout, Limited::new(body, max_bytes).collect())
            .await
            .map_err(|_| {
                format!(
                    "the answer did not finish within {} s",
                    self.timeout.as_secs()
                )
            })?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(HttpAnswer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
