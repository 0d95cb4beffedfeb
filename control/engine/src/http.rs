//! What Sluice's HTTP clients (GitHub's API, `sluice submit`) say when a call gets no
//! whole answer. The presigned transfers of the worker say less (`sluice-worker-aws`): their
//! URLs and hosts are secrets, these are not.

/// What happened to a call that got no (whole) answer, with its causes, without the URL
/// (the call is named beside it).
pub fn transport_message(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time".to_owned();
    }
    let error = error.without_url();
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        message = format!("{message}: {inner}");
        cause = inner.source();
    }
    message
}
