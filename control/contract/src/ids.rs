//! Identifiers: run ids, trace ids, flow ids, order numbers and attempt ids.
//!
//! Their textual forms are part of the storage layout and of the PR comments users search
//! for, so formatting lives here and nowhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A run's id: a UUIDv4 in its hyphenated lower-case form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A fresh random run id.
    pub fn generate() -> Self {
        RunId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Parses a run id, accepting only the hyphenated UUID form (which is what keys hold).
    pub fn parse(text: &str) -> Option<Self> {
        let uuid = uuid::Uuid::try_parse(text).ok()?;
        let canonical = uuid.hyphenated().to_string();
        (canonical == text).then_some(RunId(canonical))
    }

    /// The id as it appears in keys and documents.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's trace id: 8 lower-case hex characters, shared by every event of the run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TraceId(String);

impl TraceId {
    /// A fresh random trace id.
    pub fn generate() -> Self {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        TraceId(hex[..8].to_owned())
    }

    /// Reads a trace id as documents hold it (8 lower-case hex characters).
    pub fn parse(text: &str) -> Option<Self> {
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        (text.len() == 8 && text.chars().all(hex)).then(|| TraceId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An attempt's id: which start of an order a claim, a log, a result or a worker belongs
/// to. Each dispatch gets a fresh one (32 lower-case hex characters; the orchestrator adds
/// `-l<n>`, the run lock's count, to the attempt of an order it leaves alone in flight); in
/// storage keys an attempt id is letters, digits, `-` and `_` ([`AttemptId::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttemptId(String);

impl AttemptId {
    /// A fresh random attempt id.
    pub fn generate() -> Self {
        AttemptId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// An attempt id read from a key or a document: `None` unless it is 1 to 64 letters,
    /// digits, `-` and `_` (so it stays one segment of a key).
    pub fn parse(text: &str) -> Option<Self> {
        let valid = (1..=64).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        valid.then(|| AttemptId(text.to_owned()))
    }

    /// The attempt of the init trigger (order `0000`): `init`.
    pub fn init_trigger() -> Self {
        AttemptId("init".to_owned())
    }

    /// The attempt of the cancel trigger (order `0000`): `cancel`.
    pub fn cancel_trigger() -> Self {
        AttemptId("cancel".to_owned())
    }

    /// The attempt of a run's own watch (order `0000`): `run`.
    pub fn run_watch() -> Self {
        AttemptId("run".to_owned())
    }

    /// The timer that wakes a run for attempt number `number` of an order being retried
    /// (`retry-<number>`): a watch of one check, which names no attempt of a worker.
    pub fn retry_timer(number: u32) -> Self {
        AttemptId(format!("retry-{number}"))
    }

    /// The id as it appears in keys and documents.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The flow id users see: `<username>:<trace_id>-<flow_label>`.
pub fn flow_id(username: &str, trace_id: &TraceId, flow_label: &str) -> String {
    format!("{username}:{trace_id}-{flow_label}")
}

/// The tag that marks a run's PR comment so it can be found again: `sluice-<run_id>`.
pub fn pr_search_tag(run_id: &RunId) -> String {
    format!("sluice-{run_id}")
}

/// An order's 1-based position in its job, written zero-padded to four digits (`0001`).
///
/// `0000` ([`OrderNum::INIT`]) is not an order: it is the init trigger whose result wakes the
/// orchestrator for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct OrderNum(u32);

impl OrderNum {
    /// The init trigger's number, `0000`.
    pub const INIT: OrderNum = OrderNum(0);
    /// The largest order number that fits the four-digit layout.
    pub const MAX: u32 = 9999;

    /// The number of the order at `index` (0-based) in the job's `orders` list.
    ///
    /// # Panics
    ///
    /// Panics if `index + 1` exceeds [`OrderNum::MAX`]; validation rejects such jobs first.
    pub fn from_index(index: usize) -> Self {
        let n = u32::try_from(index + 1).expect("order index fits u32");
        assert!(n <= Self::MAX, "order number {n} exceeds {}", Self::MAX);
        OrderNum(n)
    }

    /// The order's 1-based number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The order's 0-based index in the job's `orders` list (`None` for the init trigger).
    pub fn index(self) -> Option<usize> {
        (self.0 > 0).then(|| self.0 as usize - 1)
    }
}

impl fmt::Display for OrderNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

/// Text that is not an order number (four digits, `0001`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderNumError {
    /// It is not exactly four ASCII digits.
    #[error("order number {text:?} is not four digits")]
    NotFourDigits {
        /// The text.
        text: String,
    },
    /// Its four digits do not read as a number.
    #[error("order number {text:?}: {source}")]
    NotANumber {
        /// The text.
        text: String,
        /// Why it does not read.
        #[source]
        source: std::num::ParseIntError,
    },
}

impl FromStr for OrderNum {
    type Err = OrderNumError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OrderNumError::NotFourDigits {
                text: text.to_owned(),
            });
        }
        text.parse::<u32>()
            .map(OrderNum)
            .map_err(|source| OrderNumError::NotANumber {
                text: text.to_owned(),
                source,
            })
    }
}

impl From<OrderNum> for String {
    fn from(num: OrderNum) -> String {
        num.to_string()
    }
}

impl TryFrom<String> for OrderNum {
    type Error = OrderNumError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_read_back_as_generated() {
        let trace = TraceId::generate();
        assert_eq!(TraceId::parse(trace.as_str()), Some(trace));
        for bad in ["", "0123abc", "0123abcde", "0123ABCD", "0123abcg"] {
            assert_eq!(TraceId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn order_num_is_zero_padded_and_round_trips() {
        let num = OrderNum::from_index(6);
        assert_eq!(num.to_string(), "0007");
        assert_eq!("0007".parse::<OrderNum>(), Ok(num));
        assert_eq!(OrderNum::INIT.to_string(), "0000");
        assert!("7".parse::<OrderNum>().is_err());
        assert!("00a7".parse::<OrderNum>().is_err());
    }

    #[test]
    fn run_id_parse_accepts_only_canonical_uuids() {
        let id = RunId::generate();
        assert_eq!(RunId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(RunId::parse(&id.as_str().to_uppercase()), None);
        assert_eq!(RunId::parse("../etc"), None);
    }

    #[test]
    fn trace_id_is_eight_hex_chars() {
        let t = TraceId::generate();
        assert_eq!(t.as_str().len(), 8);
        assert!(t.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(flow_id("bob", &t, "exec"), format!("bob:{t}-exec"));
    }

    #[test]
    fn attempt_ids_stay_one_segment_of_a_key() {
        let fresh = AttemptId::generate();
        assert_eq!(AttemptId::parse(fresh.as_str()), Some(fresh.clone()));
        assert_ne!(AttemptId::generate(), fresh);
        for named in [
            AttemptId::init_trigger(),
            AttemptId::cancel_trigger(),
            AttemptId::run_watch(),
        ] {
            assert_eq!(AttemptId::parse(named.as_str()), Some(named.clone()));
        }
        for bad in ["", "a/b", "..", "a b", "a.b", &"x".repeat(65)] {
            assert_eq!(AttemptId::parse(bad), None, "{bad:?}");
        }
    }
}
