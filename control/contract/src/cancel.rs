//! A request to cancel a run: who asked, and when.
//!
//! `sluice cancel` stores it once ([`crate::keys::cancel_request`], written if absent: the
//! first to ask is who cancelled), then wakes the run ([`crate::keys::cancel_trigger`], a
//! result key of order `0000`). What acts on it: the pass that trigger wakes, the run's
//! watch at its next check should the trigger's notification be lost, the `sluice run`
//! carrying the run (it looks for the request), and each running worker, which looks for it
//! every few seconds through a URL of its dispatch and stops its order.

use serde::{Deserialize, Serialize};

/// The most bytes of a cancel request a reader accepts.
pub const MAX_CANCEL_REQUEST_BYTES: u64 = 4096;
/// The most bytes of the name of who cancelled.
pub const MAX_CANCELLED_BY_BYTES: usize = 128;

/// Who asked to cancel a run, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Who asked: the user's name (locally `$USER`, on AWS the caller `sluice` runs as).
    pub by: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

impl CancelRequest {
    /// What an unreadable request stands for: it still cancels, as asked by `unknown` (it
    /// is written only through the control plane's grants, by `sluice cancel`).
    pub fn unreadable(at_ms: u64) -> Self {
        CancelRequest {
            by: "unknown".to_owned(),
            at_ms,
        }
    }

    /// The reason of the orders it cancels: `cancelled by alice`.
    pub fn reason(&self) -> String {
        format!("cancelled by {}", self.by)
    }
}

/// Reads a stored cancel request.
///
/// # Errors
///
/// Why it is not one (too large, not JSON of that shape, a name that is too long or holds
/// control characters).
pub fn parse_cancel_request(bytes: &[u8]) -> Result<CancelRequest, String> {
    if bytes.len() as u64 > MAX_CANCEL_REQUEST_BYTES {
        return Err(format!(
            "{} bytes, more than a cancel request can be",
            bytes.len()
        ));
    }
    let request: CancelRequest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    check_cancelled_by(&request.by)?;
    Ok(request)
}

/// Checks the name of who cancels: 1 to [`MAX_CANCELLED_BY_BYTES`] bytes, no control
/// characters (it is shown in reasons, tables and PR comments).
///
/// # Errors
///
/// What is wrong with it.
pub fn check_cancelled_by(by: &str) -> Result<(), String> {
    if by.is_empty() || by.len() > MAX_CANCELLED_BY_BYTES || by.chars().any(char::is_control) {
        return Err(format!(
            "{by:?}: who cancels must be 1 to {MAX_CANCELLED_BY_BYTES} bytes without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let request = CancelRequest {
            by: "alice".to_owned(),
            at_ms: 1_700_000_000_000,
        };
        let bytes = serde_json::to_vec(&request).unwrap();
        assert_eq!(parse_cancel_request(&bytes).unwrap(), request);
        assert_eq!(request.reason(), "cancelled by alice");
        assert!(parse_cancel_request(b"{}").is_err());
        assert!(parse_cancel_request(br#"{"by":"a\u001b]0;x","at_ms":1}"#).is_err());
        assert!(parse_cancel_request(&vec![b' '; 5000]).is_err());
        assert!(check_cancelled_by(&"a".repeat(129)).is_err());
    }
}
