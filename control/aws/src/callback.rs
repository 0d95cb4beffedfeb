//! [`HttpCallback`]: a worker's result PUT to its presigned callback URL over HTTPS (or
//! plain HTTP for moto in tests), with the platform's trusted roots. Success is a 2xx
//! answer (or the 412 below); anything else is an error naming the status (never the URL's
//! signature).
//!
//! The PUT is conditional (`If-None-Match: *`): the attempt's result key takes one result.
//! A 412 says one is already there — this worker's own earlier PUT whose answer was lost,
//! or the watchdog's time-out, which then stands ([`Delivery::AlreadyThere`]).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use sluice_engine::http::HttpClient;
use sluice_worker::store_io::Callback;
use sluice_worker::{Delivery, IoError};

/// How long one PUT may take.
const PUT_TIMEOUT: Duration = Duration::from_secs(60);

/// PUTs results over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpCallback {
    client: HttpClient,
}

impl HttpCallback {
    /// A client trusting the platform's root certificates.
    ///
    /// # Errors
    ///
    /// The platform's certificates cannot be loaded.
    pub fn new() -> std::io::Result<Self> {
        Ok(HttpCallback {
            client: HttpClient::new(PUT_TIMEOUT)?,
        })
    }
}

/// The URL without its query (the signature), for messages.
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[async_trait]
impl Callback for HttpCallback {
    async fn put(&self, url: &str, body: Vec<u8>) -> Result<Delivery, IoError> {
        let what = || format!("PUT {}", shown(url));
        let request = hyper::Request::put(url)
            .header("content-type", "application/json")
            .header("if-none-match", "*")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| IoError::permanent(what(), e.to_string()))?;
        // No answer at all may well be a passing network failure.
        let answer = self
            .client
            .send(request)
            .await
            .map_err(|e| IoError::transient(what(), e))?;
        let status = answer.status;
        if status.is_success() {
            Ok(Delivery::Stored)
        } else if status.as_u16() == 412 {
            Ok(Delivery::AlreadyThere)
        } else if status.is_server_error() || status.as_u16() == 429 {
            Err(IoError::transient(what(), answer.refusal()))
        } else {
            Err(IoError::permanent(what(), answer.refusal()))
        }
    }
}
