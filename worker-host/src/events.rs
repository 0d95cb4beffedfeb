//! Collecting the events an order dropped into its events folder (DESIGN §4, step 5).
//!
//! Each attempt gets a fresh, empty folder (`$SLUICE_EVENTS_DIR` for commands, mounted at
//! `/sluice/events` for WASI modules). When the order ends, its regular `*.json` files are
//! read in name order, bounded in size and number, and returned for `result.json`; names
//! starting with `.` are in-progress writes and ignored. Whatever is skipped (too large,
//! not an event, a link, over the count) is reported in the order's log, so an author sees
//! why an event is missing. Nothing here follows a symlink: an order cannot make the worker
//! read a file on its behalf.

use std::path::Path;
use std::time::UNIX_EPOCH;

use sluice_contract::events::{
    BadEvent, MAX_EVENT_FILE_BYTES, MAX_EVENTS, OrderEmitted, parse_event_file,
};

use crate::log_sink::LogSink;
use crate::redact::Redactor;

/// Reads the events in `dir` with the order's secrets masked, noting every skipped file in
/// `log`.
pub async fn collect_events(dir: &Path, log: &LogSink, redactor: &Redactor) -> Vec<OrderEmitted> {
    let dir = dir.to_owned();
    let read = tokio::task::spawn_blocking(move || read_events(&dir)).await;
    let (events, skipped) = match read {
        Ok(read) => read,
        Err(error) => (Vec::new(), vec![format!("reading events: {error}")]),
    };
    for line in skipped {
        log.note(&line).await;
    }
    events.into_iter().map(|e| masked(e, redactor)).collect()
}

/// `event` with secrets masked: in its message, and in its data's JSON text (data that no
/// longer parses once masked, a secret number for one, is kept as that text). A kind that
/// was a secret becomes `redacted`, which is still a valid kind.
fn masked(event: OrderEmitted, redactor: &Redactor) -> OrderEmitted {
    let kind = match redactor.redact_str(&event.kind) {
        std::borrow::Cow::Borrowed(_) => event.kind,
        std::borrow::Cow::Owned(_) => "redacted".to_owned(),
    };
    let message = event.message.map(|m| redactor.redact_str(&m).into_owned());
    let data = event.data.map(|data| {
        let text = data.to_string();
        match redactor.redact_str(&text) {
            std::borrow::Cow::Borrowed(_) => data,
            std::borrow::Cow::Owned(masked) => {
                serde_json::from_str(&masked).unwrap_or(serde_json::Value::String(masked))
            }
        }
    });
    OrderEmitted {
        kind,
        message,
        data,
        at_ms: event.at_ms,
    }
}

/// The events of `dir`, and a line for each file skipped.
fn read_events(dir: &Path) -> (Vec<OrderEmitted>, Vec<String>) {
    let mut skipped = Vec::new();
    let mut names: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.file_name())
            .filter(|name| !name.to_string_lossy().starts_with('.'))
            .collect(),
        Err(error) => {
            return (
                Vec::new(),
                vec![format!("reading the events folder: {error}")],
            );
        }
    };
    names.sort();
    let mut events = Vec::new();
    for name in names {
        let shown = name.to_string_lossy().into_owned();
        if events.len() == MAX_EVENTS {
            skipped.push(format!(
                "skipped event {shown} and any after it: an order keeps at most {MAX_EVENTS} events"
            ));
            break;
        }
        match read_event(&dir.join(&name)) {
            Ok(event) => events.push(event),
            Err(reason) => skipped.push(format!("skipped event {shown}: {reason}")),
        }
    }
    (events, skipped)
}

/// Why an event file was skipped (noted in the order's log after `skipped event NAME: `).
#[derive(Debug, thiserror::Error)]
enum SkippedEvent {
    /// It cannot be read.
    #[error("cannot be read: {0}")]
    Unreadable(#[source] std::io::Error),
    /// It is a link, a folder or another special file.
    #[error("not a regular file")]
    NotAFile,
    /// It is not an event (too large, not JSON, a bad kind).
    #[error(transparent)]
    Bad(#[from] BadEvent),
}

fn read_event(path: &Path) -> Result<OrderEmitted, SkippedEvent> {
    // `symlink_metadata` and the size check first: a link or a huge file is never opened.
    let meta = std::fs::symlink_metadata(path).map_err(SkippedEvent::Unreadable)?;
    if !meta.is_file() {
        return Err(SkippedEvent::NotAFile);
    }
    if meta.len() > MAX_EVENT_FILE_BYTES {
        return Err(BadEvent::TooLarge { size: meta.len() }.into());
    }
    let bytes = std::fs::read(path).map_err(SkippedEvent::Unreadable)?;
    let mut event = parse_event_file(&bytes)?;
    if event.at_ms.is_none() {
        event.at_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_in_name_order_and_reports_what_it_skips() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).unwrap();
        write("002-b.json", r#"{"kind":"second","at_ms":5}"#);
        write("001-a.json", r#"{"kind":"first","message":"hi"}"#);
        write("003-bad.json", "not json");
        write(".004-partial.json", "{");
        write(
            "005-big.json",
            &format!(r#"{{"kind":"x","message":"{}"}}"#, "a".repeat(5000)),
        );
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("006-link.json")).unwrap();
        let (events, skipped) = read_events(dir.path());
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["first", "second"]);
        assert!(events[0].at_ms.is_some(), "the file time stands in");
        assert_eq!(events[1].at_ms, Some(5));
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("003-bad.json") && skipped[0].contains("not an event"));
        assert!(skipped[1].contains("005-big.json") && skipped[1].contains("more than"));
        assert!(skipped[2].contains("006-link.json") && skipped[2].contains("not a regular"));
    }

    #[test]
    fn secrets_are_masked_in_messages_data_and_kinds() {
        let redactor = Redactor::new([("TOKEN", "tok-123456"), ("PIN", "98765432")]);
        let event = |json: &str| masked(serde_json::from_str(json).unwrap(), &redactor);
        let e = event(
            r#"{"kind":"login","message":"used tok-123456","data":{"t":"tok-123456","n":1}}"#,
        );
        assert_eq!(e.kind, "login");
        assert_eq!(e.message.as_deref(), Some("used ***"));
        assert_eq!(e.data, Some(serde_json::json!({"t": "***", "n": 1})));
        let e = event(r#"{"kind":"tok-123456","data":{"pin":98765432}}"#);
        assert_eq!(e.kind, "redacted");
        assert_eq!(e.data, Some(serde_json::json!(r#"{"pin":***}"#)));
    }

    #[test]
    fn keeps_at_most_the_allowed_count() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_EVENTS + 3 {
            std::fs::write(
                dir.path().join(format!("{i:04}.json")),
                r#"{"kind":"tick"}"#,
            )
            .unwrap();
        }
        let (events, skipped) = read_events(dir.path());
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("at most"), "{skipped:?}");
    }
}
