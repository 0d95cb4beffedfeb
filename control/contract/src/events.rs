//! Events an order emits about itself while it runs (DESIGN §4, step 5).
//!
//! An order drops one JSON file per event into its events folder (`$SLUICE_EVENTS_DIR`; a
//! WASI module sees it mounted at [`GUEST_EVENTS_DIR`]). When the order ends, the worker
//! reads them with [`parse_event_file`], keeps at most [`MAX_EVENTS`], and sends them in
//! `result.json`; the orchestrator records each one as an `order_events` row. The worker
//! has no table access of its own (on AWS it only holds a presigned URL), so the result is
//! the one way events travel.
//!
//! A file is one object: `{"kind": "progress", "message": "half way", "data": {...},
//! "at_ms": 1700000000000}`; only `kind` is required. Files are taken in name order, so a
//! writer that names them with a sequence number (as `sluice-guest` does) keeps its order.

use serde::{Deserialize, Serialize};

/// Where a WASI module sees its events folder.
pub const GUEST_EVENTS_DIR: &str = "/sluice/events";
/// The variable that tells an order where its events folder is.
pub const EVENTS_DIR_VAR: &str = "SLUICE_EVENTS_DIR";
/// Largest event file read, bytes.
pub const MAX_EVENT_FILE_BYTES: u64 = 4 * 1024;
/// Most events kept per order attempt (later files are skipped and reported).
pub const MAX_EVENTS: usize = 64;
/// Longest `kind`.
pub const MAX_KIND_LEN: usize = 64;

/// One event an order emitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderEmitted {
    /// What happened: 1 to [`MAX_KIND_LEN`] characters of `a-z`, `0-9`, `_`, `-`, `.`.
    pub kind: String,
    /// A line for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// When it happened, ms since the epoch (the worker fills in the file's time if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// Why an event file was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadEvent {
    /// Larger than [`MAX_EVENT_FILE_BYTES`].
    #[error("{size} bytes, more than the {MAX_EVENT_FILE_BYTES} allowed")]
    TooLarge {
        /// Its size.
        size: u64,
    },
    /// Not an event object.
    #[error("not an event object: {0}")]
    Unreadable(String),
    /// A `kind` outside the allowed characters or length.
    #[error("kind {0:?} must be 1 to {MAX_KIND_LEN} characters of a-z, 0-9, '_', '-', '.'")]
    BadKind(String),
}

/// Reads one event file's contents.
///
/// # Errors
///
/// [`BadEvent`] saying why the file cannot be an event.
pub fn parse_event_file(bytes: &[u8]) -> Result<OrderEmitted, BadEvent> {
    let size = bytes.len() as u64;
    if size > MAX_EVENT_FILE_BYTES {
        return Err(BadEvent::TooLarge { size });
    }
    let event: OrderEmitted =
        serde_json::from_slice(bytes).map_err(|e| BadEvent::Unreadable(e.to_string()))?;
    let kind_ok = !event.kind.is_empty()
        && event.kind.len() <= MAX_KIND_LEN
        && event
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    if !kind_ok {
        return Err(BadEvent::BadKind(event.kind));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_event_and_a_minimal_one() {
        let full = parse_event_file(
            br#"{"kind":"progress","message":"half","data":{"done":5},"at_ms":17}"#,
        )
        .unwrap();
        assert_eq!(full.kind, "progress");
        assert_eq!(full.data.unwrap()["done"], 5);
        assert_eq!(full.at_ms, Some(17));
        let minimal = parse_event_file(br#"{"kind":"plan.ready"}"#).unwrap();
        assert_eq!(minimal.message, None);
    }

    #[test]
    fn rejects_what_cannot_be_an_event() {
        assert!(matches!(
            parse_event_file(b"not json"),
            Err(BadEvent::Unreadable(_))
        ));
        assert!(matches!(
            parse_event_file(br#"{"kind":"Bad Kind"}"#),
            Err(BadEvent::BadKind(_))
        ));
        assert!(matches!(
            parse_event_file(br#"{"kind":""}"#),
            Err(BadEvent::BadKind(_))
        ));
        assert!(matches!(
            parse_event_file(br#"{"kind":"x","extra":1}"#),
            Err(BadEvent::Unreadable(_))
        ));
        let big = format!(r#"{{"kind":"x","message":"{}"}}"#, "a".repeat(5000));
        assert!(matches!(
            parse_event_file(big.as_bytes()),
            Err(BadEvent::TooLarge { .. })
        ));
    }
}
