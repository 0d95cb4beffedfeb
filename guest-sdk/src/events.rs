//! Events: one small JSON file per event in the order's events folder.
//!
//! The format (also documented in docs/jobs.md, for orders that write files themselves):
//! `{"kind": "...", "message": "...", "data": {...}, "at_ms": 1700000000000}`, at most
//! 4 KiB, `kind` made of `a-z 0-9 _ - .` (1 to 64 characters). Files are written under a
//! temporary `.`-name and renamed, so Sluice never reads half an event, and named by time
//! and sequence, so they sort in the order they were emitted, even across processes.

use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ContextError;

/// Largest event file Sluice accepts.
const MAX_EVENT_BYTES: usize = 4 * 1024;
/// Longest `kind`.
const MAX_KIND_LEN: usize = 64;

/// A value in an event's `data` object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A number (non-finite values are written as `null`).
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// One event: a kind, an optional message, optional flat data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    kind: String,
    message: Option<String>,
    data: Vec<(String, Value)>,
}

impl Event {
    /// An event of `kind` (checked when emitted).
    pub fn new(kind: &str) -> Self {
        Event {
            kind: kind.to_owned(),
            message: None,
            data: Vec::new(),
        }
    }

    /// Adds a line for humans.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Adds a `data` field (a later field with the same key replaces it).
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.retain(|(k, _)| k != key);
        self.data.push((key.to_owned(), value.into()));
        self
    }

    /// The event as the JSON document Sluice reads, stamped `at_ms`.
    pub fn to_json(&self, at_ms: u64) -> String {
        let mut out = String::from("{\"kind\":");
        push_str(&mut out, &self.kind);
        if let Some(message) = &self.message {
            out.push_str(",\"message\":");
            push_str(&mut out, message);
        }
        if !self.data.is_empty() {
            out.push_str(",\"data\":{");
            for (i, (key, value)) in self.data.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(&mut out, key);
                out.push(':');
                match value {
                    Value::Str(s) => push_str(&mut out, s),
                    Value::Int(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::Float(x) if x.is_finite() => {
                        let _ = write!(out, "{x:?}");
                    }
                    Value::Float(_) => out.push_str("null"),
                    Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                }
            }
            out.push('}');
        }
        let _ = write!(out, ",\"at_ms\":{at_ms}}}");
        out
    }

    fn check(&self) -> Result<(), EventError> {
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= MAX_KIND_LEN
            && self.kind.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
            });
        if kind_ok {
            Ok(())
        } else {
            Err(EventError::BadKind(self.kind.clone()))
        }
    }
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why an event was not written.
#[derive(Debug)]
pub enum EventError {
    /// `kind` is empty, too long, or has characters outside `a-z 0-9 _ - .`.
    BadKind(String),
    /// The event is larger than the 4 KiB Sluice accepts.
    TooLarge(usize),
    /// Writing the file failed.
    Io(io::Error),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::BadKind(kind) => write!(
                f,
                "event kind {kind:?} must be 1 to {MAX_KIND_LEN} characters of a-z, 0-9, '_', '-', '.'"
            ),
            EventError::TooLarge(size) => write!(
                f,
                "event is {size} bytes, more than the {MAX_EVENT_BYTES} allowed"
            ),
            EventError::Io(e) => write!(f, "writing the event: {e}"),
        }
    }
}

impl std::error::Error for EventError {}

/// The order's events folder, and the sequence of events emitted through this value.
#[derive(Debug)]
pub struct Events {
    dir: PathBuf,
    seq: u32,
}

impl Events {
    /// The folder named by `SLUICE_EVENTS_DIR`.
    ///
    /// # Errors
    ///
    /// [`ContextError`] when the variable is not set (not run by Sluice).
    pub fn from_env() -> Result<Self, ContextError> {
        crate::path_from_env("SLUICE_EVENTS_DIR").map(Events::in_dir)
    }

    /// Events written to `dir` (for tests, or a folder chosen elsewhere).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Events {
            dir: dir.into(),
            seq: 0,
        }
    }

    /// The folder events are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `event`, stamped with the current time, as a new file.
    ///
    /// # Errors
    ///
    /// [`EventError`] for a bad kind, an event over 4 KiB, or a failed write.
    pub fn emit(&mut self, event: &Event) -> Result<(), EventError> {
        event.check()?;
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let at_ms = since.as_secs() * 1000 + u64::from(since.subsec_millis());
        let json = event.to_json(at_ms);
        if json.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(json.len()));
        }
        self.seq += 1;
        // Time first so files sort in emission order; sequence and sub-millisecond time
        // keep names distinct between processes emitting in the same millisecond.
        let name = format!(
            "{at_ms:013}-{:06}-{:09}-{}.json",
            self.seq,
            since.subsec_nanos(),
            event.kind
        );
        let temp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&temp, json.as_bytes()).map_err(EventError::Io)?;
        fs::rename(&temp, self.dir.join(&name)).map_err(EventError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_json_with_escapes() {
        let event = Event::new("progress")
            .message("say \"hi\"\n\tback\\slash \u{1}")
            .field("done", 5)
            .field("ratio", 0.5)
            .field("ok", true)
            .field("name", "é");
        assert_eq!(
            event.to_json(17),
            r#"{"kind":"progress","message":"say \"hi\"\n\tback\\slash \u0001","data":{"done":5,"ratio":0.5,"ok":true,"name":"é"},"at_ms":17}"#
        );
        assert_eq!(Event::new("x").to_json(1), r#"{"kind":"x","at_ms":1}"#);
        assert_eq!(
            Event::new("x")
                .field("nan", f64::NAN)
                .field("nan", 1)
                .to_json(1),
            r#"{"kind":"x","data":{"nan":1},"at_ms":1}"#
        );
    }

    #[test]
    fn emitted_files_sort_in_order_and_bad_events_are_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-guest-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut events = Events::in_dir(&dir);
        for i in 0..3 {
            events.emit(&Event::new("step").field("i", i)).unwrap();
        }
        assert!(matches!(
            events.emit(&Event::new("Bad Kind")),
            Err(EventError::BadKind(_))
        ));
        assert!(matches!(
            events.emit(&Event::new("big").message("x".repeat(5000))),
            Err(EventError::TooLarge(_))
        ));
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        let bodies: Vec<String> = names
            .iter()
            .map(|n| fs::read_to_string(dir.join(n)).unwrap())
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            assert!(body.contains(&format!("\"i\":{i}")), "{body}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
