//! One way to word an SDK failure for people, for every adapter: the SDK error's chain of
//! causes, each once ("service error: ResourceNotFoundException: Project cannot be found:
//! …", "dispatch failure: io error: …: Connection refused"), so a throttling or permission
//! error says what was refused and why. The SDK's own `DisplayErrorContext` appends the
//! error's `Debug` form (the raw HTTP response, headers and all): fine in an operator's
//! log, not in an order's reason, a done document or a CLI message.

use aws_sdk_s3::error::SdkError;
use sluice_engine::error::StoreError;

/// A backend failure of the operation described by `what`.
pub(crate) fn backend<E, R>(what: impl Into<String>, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    StoreError::Backend {
        what: what.into(),
        message: describe(&error),
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
