//! [`S3Store`]: the engine's object store over one S3 bucket; [`S3Archives`]: orders'
//! code zips named by `s3://bucket/key` URLs, in any bucket.
//!
//! Conditional puts use `If-None-Match: *` (S3 answers 412 when the key exists), lists
//! follow continuation tokens, uploads of files stream from disk, and the URLs workers are
//! given are SigV4-presigned GETs, PUTs (conditional ones with the condition signed) and
//! DELETEs. Errors name the bucket, key and operation.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use sluice_ports::StoreError;
use sluice_ports::{CodeArchives, ObjectStore, Presigned};

use crate::calls::CallCounter;

const SERVICE: &str = "s3";

/// One bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    calls: CallCounter,
}

impl S3Store {
    /// The store over `bucket`, counting its calls in `calls`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, calls: CallCounter) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
            calls,
        }
    }

    fn what(&self, operation: &str, key: &str) -> String {
        format!("{operation} s3://{}/{key}", self.bucket)
    }

    /// GetObject, whole or its first `max_bytes + 1` bytes (a ranged GET).
    async fn get_object(&self, key: &str, max_bytes: Option<u64>) -> Result<Vec<u8>, StoreError> {
        self.calls.count(SERVICE, "GetObject");
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(max_bytes.map(|max| format!("bytes=0-{max}")))
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound {
                    key: format!("s3://{}/{key}", self.bucket),
                });
            }
            // An empty object has no byte 0: S3 answers 416 to any range of it.
            Err(e)
                if max_bytes.is_some()
                    && e.raw_response().is_some_and(|r| r.status().as_u16() == 416) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.backend("GetObject", key, e)),
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Backend {
                what: self.what("reading GetObject body of", key),
                message: e.to_string(),
            })?;
        Ok(body.into_bytes().to_vec())
    }

    fn backend<E>(&self, operation: &str, key: &str, error: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        crate::sdk_error::backend(self.what(operation, key), error)
    }
}

/// Code zips by `s3://bucket/key` URL — never from Sluice's own buckets, which hold every
/// run's bundles, modules, results and idempotency records: init-job reads a zip with its
/// own role, so a job naming one of those objects would read, or learn of, another run's.
#[derive(Debug, Clone)]
pub struct S3Archives {
    client: aws_sdk_s3::Client,
    own_buckets: Vec<String>,
    calls: CallCounter,
}

impl S3Archives {
    /// Zips read with `client`, refusing those in `own_buckets` as if access were denied
    /// (so whether an object is there is not told either), counting calls in `calls`.
    pub fn new(client: aws_sdk_s3::Client, own_buckets: Vec<String>, calls: CallCounter) -> Self {
        S3Archives {
            client,
            own_buckets,
            calls,
        }
    }
}

#[async_trait]
impl CodeArchives for S3Archives {
    async fn fetch_zip(&self, location: &str) -> Result<Vec<u8>, StoreError> {
        let (bucket, key) = location
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
            .ok_or_else(|| StoreError::Backend {
                what: format!("reading {location}"),
                message: "not an s3://bucket/key URL".to_owned(),
            })?;
        if self.own_buckets.iter().any(|own| own == bucket) {
            return Err(StoreError::Denied {
                what: format!("reading {location}"),
                message: "a bucket of Sluice's own".to_owned(),
            });
        }
        S3Store::new(self.client.clone(), bucket, self.calls.clone())
            .get(key)
            .await
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.get_object(key, None).await
    }

    async fn get_prefix(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StoreError> {
        let mut bytes = self.get_object(key, Some(max_bytes)).await?;
        // A store that ignored the range still gives no more than asked for.
        bytes.truncate(usize::try_from(max_bytes.saturating_add(1)).unwrap_or(usize::MAX));
        Ok(bytes)
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.put_tagged(key, bytes).await.map(drop)
    }

    async fn put_tagged(&self, key: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        self.calls.count(SERVICE, "PutObject");
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.backend("PutObject", key, e))?;
        put.e_tag()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Backend {
                what: self.what("PutObject", key),
                message: "S3 answered no ETag".to_owned(),
            })
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.calls.count(SERVICE, "PutObject");
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // 412 Precondition Failed: the key exists; 409 ConditionalRequestConflict: a
            // concurrent conditional put of the same key won.
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) =>
            {
                Err(StoreError::ConditionFailed {
                    what: format!("s3://{}/{key}", self.bucket),
                    detail: "the object already exists".to_owned(),
                })
            }
            Err(e) => Err(self.backend("PutObject (if absent)", key, e)),
        }
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StoreError::Backend {
                what: format!(
                    "reading {} for {}",
                    path.display(),
                    self.what("PutObject", key)
                ),
                message: e.to_string(),
            })?;
        self.calls.count(SERVICE, "PutObject");
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| self.backend("PutObject", key, e))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.calls.count(SERVICE, "HeadObject");
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(
                output
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.backend("HeadObject", key, e)),
        }
    }

    fn keys_per_listing(&self) -> usize {
        // ListObjectsV2's page.
        1000
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.calls.count(SERVICE, "ListObjectsV2");
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.backend("ListObjectsV2", prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.calls.count(SERVICE, "DeleteObject");
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.backend("DeleteObject", key, e))?;
        Ok(())
    }

    fn object_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn presign(
        &self,
        operation: Presigned,
        key: &str,
        expiry: Duration,
    ) -> Result<String, StoreError> {
        let what = format!("presigning {}", operation.operation());
        let config = PresigningConfig::expires_in(expiry).map_err(|e| StoreError::Backend {
            what: self.what(&what, key),
            message: e.to_string(),
        })?;
        // Signing is local: no call to AWS.
        let (bucket, client) = (&self.bucket, &self.client);
        let request = match operation {
            Presigned::Get => {
                let get = client.get_object().bucket(bucket).key(key);
                (get.presigned(config).await).map_err(|e| self.backend(&what, key, e))?
            }
            Presigned::GetRange(range) => {
                let refused = |message: String| StoreError::Backend {
                    what: self.what(&what, key),
                    message,
                };
                // An entity tag is visible ASCII: a header value that cannot fail to insert.
                if range.etag.is_empty() || !range.etag.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(refused(format!("{:?} is no entity tag", range.etag)));
                }
                // The SDK has no field for `If-Range`; a header set before signing is signed.
                let etag = range.etag.clone();
                let get = (client.get_object().bucket(bucket).key(key))
                    .range(range.range_header())
                    .if_match(&range.etag)
                    .customize()
                    .mutate_request(move |request| {
                        request.headers_mut().insert("if-range", etag.clone());
                    });
                let request =
                    (get.presigned(config).await).map_err(|e| self.backend(&what, key, e))?;
                // Unsigned, `If-Range` would let the URL's holder read the whole pack.
                if !signs_headers(request.uri(), &["range", "if-range", "if-match"]) {
                    return Err(refused("the range was not signed into the URL".to_owned()));
                }
                request
            }
            Presigned::Put => {
                let put = client.put_object().bucket(bucket).key(key);
                (put.presigned(config).await).map_err(|e| self.backend(&what, key, e))?
            }
            Presigned::PutIfAbsent => {
                let put = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .if_none_match("*");
                (put.presigned(config).await).map_err(|e| self.backend(&what, key, e))?
            }
            Presigned::Delete => {
                let delete = client.delete_object().bucket(bucket).key(key);
                (delete.presigned(config).await).map_err(|e| self.backend(&what, key, e))?
            }
        };
        Ok(request.uri().to_owned())
    }
}

/// Whether the presigned `url` lists each of `headers` in its `X-Amz-SignedHeaders`.
fn signs_headers(url: &str, headers: &[&str]) -> bool {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let signed = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-SignedHeaders="))
        .map(|list| list.replace("%3B", ";").replace("%3b", ";"))
        .unwrap_or_default();
    headers
        .iter()
        .all(|header| signed.split(';').any(|h| h == *header))
}

#[cfg(test)]
mod tests {
    use super::signs_headers;

    #[test]
    fn a_ranged_url_is_minted_only_with_its_headers_signed() {
        let url = "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-SignedHeaders=host%3Bif-match%3Bif-range%3Brange&X-Amz-Signature=s";
        assert!(signs_headers(url, &["range", "if-range", "if-match"]));
        let unsigned = url.replace("%3Bif-range", "");
        assert!(!signs_headers(
            &unsigned,
            &["range", "if-range", "if-match"]
        ));
        // A header whose name merely contains another's is not it.
        assert!(!signs_headers(url, &["match"]));
        assert!(!signs_headers("https://b/k", &["range"]));
    }
}
