//! One way to word an SDK failure for people, for every adapter: the SDK error's chain of
//! causes, each once ("service error: ResourceNotFoundException: Project cannot be found:
//! …", "dispatch failure: io error: …: Connection refused"), so a throttling or permission
//! error says what was refused and why. The SDK's own `DisplayErrorContext` appends the
//! error's `Debug` form (the raw HTTP response, headers and all): fine in an operator's
//! log, not in an order's reason, a done document or a CLI message.
//!
//! It also says whether the failure is transient ([`kind`]), with the SDK's own lists of
//! throttling and transient error codes: the engine retries those (a throttled table, a
//! 503 SlowDown, a connection reset) instead of failing an order or a pass for good.

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use sluice_ports::ErrorKind;
use sluice_ports::StoreError;

/// Codes that say a service is busy for now, beyond the SDK's lists: CodeBuild's limit on
/// concurrent builds, a Lambda function being updated or not ready yet, SSM's own name for
/// throttled writes, and DynamoDB refusing a write to an item a transaction is writing
/// (a run's lock while a step's release transaction is in flight: the acquire that would
/// count a wake-up on it must be made again, not dropped).
const BUSY_ERRORS: &[&str] = &[
    "AccountLimitExceededException",
    "ResourceConflictException",
    "ResourceNotReadyException",
    "TooManyUpdates",
    "TransactionConflictException",
];

/// A backend failure of the operation described by `what`: [`StoreError::Unavailable`] when
/// it is transient, [`StoreError::Denied`] when the caller's role lacks the permission,
/// [`StoreError::Backend`] otherwise.
pub(crate) fn backend<E>(what: impl Into<String>, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (what, message) = (what.into(), describe(&error));
    if is_denied(&error) {
        return StoreError::Denied { what, message };
    }
    match kind(&error) {
        ErrorKind::Transient => StoreError::Unavailable { what, message },
        ErrorKind::Permanent => StoreError::Backend { what, message },
    }
}

/// Whether the service refused the caller's permissions: an access-denied code, or a 403
/// without a code (S3's answer to HEAD; and to a missing key when the caller may not list
/// the bucket). A 403 for a bad signature, an unknown key or a skewed clock has its own code
/// and is not this: it is the deployment's fault, not a job's.
fn is_denied<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(code) => matches!(code, "AccessDenied" | "AccessDeniedException"),
            None => service.raw().status().as_u16() == 403,
        },
        _ => false,
    }
}

/// Whether the call may succeed when made again: a time-out, a failed connection, an answer
/// that could not be read, a 5xx or 429, or a throttling or transient error code.
pub(crate) fn kind<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> ErrorKind {
    match error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Transient,
        SdkError::DispatchFailure(failure) if !failure.is_user() => ErrorKind::Transient,
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or_default();
            let transient = status >= 500
                || status == 429
                || THROTTLING_ERRORS.contains(&code)
                || TRANSIENT_ERRORS.contains(&code)
                || BUSY_ERRORS.contains(&code);
            if transient {
                ErrorKind::Transient
            } else {
                ErrorKind::Permanent
            }
        }
        _ => ErrorKind::Permanent,
    }
}

/// `error` and its causes, `: `-separated, leaving out a cause already worded by the one
/// before it.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let part = current.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Link {
        text: &'static str,
        #[source]
        cause: Option<Box<Link>>,
    }

    fn chain(texts: &[&'static str]) -> Link {
        texts
            .iter()
            .rev()
            .fold(None, |cause, text| {
                Some(Link {
                    text,
                    cause: cause.map(Box::new),
                })
            })
            .unwrap()
    }

    /// A write that met a transaction on its item is tried again (the SDK does not).
    #[test]
    fn a_write_refused_by_a_transaction_in_flight_is_transient() {
        use aws_sdk_dynamodb::error::ErrorMetadata;
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_sdk_s3::primitives::SdkBody;
        let refused = |code: &str| {
            let error = UpdateItemError::generic(ErrorMetadata::builder().code(code).build());
            let raw = HttpResponse::new(400.try_into().unwrap(), SdkBody::empty());
            SdkError::service_error(error, raw)
        };
        assert_eq!(
            kind(&refused("TransactionConflictException")),
            ErrorKind::Transient
        );
        assert_eq!(kind(&refused("ValidationException")), ErrorKind::Permanent);
    }

    #[test]
    fn each_cause_once_and_no_debug_dump() {
        let error = chain(&[
            "dispatch failure",
            "io error",
            "connection refused",
            "connection refused",
        ]);
        assert_eq!(
            describe(&error),
            "dispatch failure: io error: connection refused"
        );
    }
}
