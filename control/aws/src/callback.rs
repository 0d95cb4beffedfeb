//! [`HttpCallback`]: a worker's result PUT to its presigned callback URL over HTTPS (or
//! plain HTTP for moto in tests), with the platform's trusted roots. Success is a 2xx
//! answer; anything else is an error naming the status (never the URL's signature).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_worker::IoError;
use sluice_worker::store_io::Callback;

/// How long one PUT may take.
const PUT_TIMEOUT: Duration = Duration::from_secs(60);

/// PUTs results over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpCallback {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpCallback {
    /// A client trusting the platform's root certificates.
    ///
    /// # Errors
    ///
    /// The platform's certificates cannot be loaded.
    pub fn new() -> std::io::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpCallback {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

/// The URL without its query (the signature), for messages.
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[async_trait]
impl Callback for HttpCallback {
    async fn put(&self, url: &str, body: Vec<u8>) -> Result<(), IoError> {
        let failed = |message: String| IoError {
            what: format!("PUT {}", shown(url)),
            message,
        };
        let request = hyper::Request::put(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(e.to_string()))?;
        let response = tokio::time::timeout(PUT_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| failed(format!("no answer within {} s", PUT_TIMEOUT.as_secs())))?
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        // Read the body so the connection can be reused, and to explain a refusal.
        let answer = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            let answer = String::from_utf8_lossy(&answer);
            Err(failed(format!(
                "HTTP {status}: {}",
                answer.chars().take(300).collect::<String>()
            )))
        }
    }
}
