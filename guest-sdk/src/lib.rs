//! Helpers for people who write Sluice orders: the order's context, its events and its
//! outputs.
//!
//! Every order Sluice runs is told who it is through environment variables:
//! `SLUICE_RUN_ID`, `SLUICE_ORDER_NUM`, `SLUICE_ORDER_NAME`, `SLUICE_TRACE_ID`,
//! `SLUICE_FLOW_ID` and `SLUICE_TIMEOUT`. [`OrderContext::from_env`] reads them into one
//! typed value, so a program (a native tool run by a `cmds` order, or a WASI module) can tag
//! its own logs and outputs with the run it belongs to.
//!
//! An order can also report what it is doing as [`Event`]s: [`Events::from_env`] finds the
//! events folder (`$SLUICE_EVENTS_DIR`; WASI modules see it at `/sluice/events`) and
//! [`Events::emit`] writes one event file there. When the order ends, Sluice sends them with
//! its result and records each as an `order_events` row (`emitted:<kind>`).
//!
//! An order passes values to the orders after it through [`Outputs`]: [`Outputs::set`]
//! appends a name and value to its output file (`$SLUICE_OUTPUT`; WASI modules see it at
//! `/sluice/output`), which a later order takes as a variable with `inputs`.
//!
//! The crate has no dependencies and builds with Rust 1.63 (Debian's `rustc` for
//! `wasm32-wasi`) as well as current Rust (`wasm32-wasip1`, native targets).
//!
//! # Example
//!
//! ```no_run
//! use sluice_guest::{Event, Events, OrderContext};
//!
//! let ctx = OrderContext::from_env().expect("run by sluice");
//! eprintln!("[{}] order {} of run {}", ctx.trace_id, ctx.order_name, ctx.run_id);
//! let mut events = Events::from_env().expect("run by sluice");
//! events
//!     .emit(&Event::new("progress").message("half way").field("done", 5).field("of", 10))
//!     .expect("the events folder is writable");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

mod events;
mod outputs;

pub use events::{Event, EventError, Events, Value};
pub use outputs::{entry as output_entry, OutputError, Outputs, MAX_NAME_LEN};

/// Who the running order is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderContext {
    /// The run (a UUID).
    pub run_id: String,
    /// The order's number, zero-padded (`0001`).
    pub order_num: String,
    /// The order's name.
    pub order_name: String,
    /// The run's trace id (8 hex characters).
    pub trace_id: String,
    /// The run's flow id (`<user>:<trace_id>-<label>`).
    pub flow_id: String,
    /// Seconds the order may run in all.
    pub timeout_secs: u64,
}

/// A context variable is missing or unreadable: the program was not started by Sluice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (is this program run by sluice?)",
            self.variable, self.problem
        )
    }
}

impl std::error::Error for ContextError {}

/// The path a context variable names (the events folder, the output file).
///
/// # Errors
///
/// [`ContextError`] when it is not set (the program was not started by Sluice).
pub(crate) fn path_from_env(variable: &'static str) -> Result<std::ffi::OsString, ContextError> {
    match std::env::var_os(variable) {
        Some(path) if !path.is_empty() => Ok(path),
        _ => Err(ContextError {
            variable,
            problem: "is not set",
        }),
    }
}

impl OrderContext {
    /// Reads the context from the process environment.
    ///
    /// # Errors
    ///
    /// [`ContextError`] naming the first variable that is missing or malformed.
    pub fn from_env() -> Result<Self, ContextError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the context through `lookup` (for tests, or an env captured elsewhere).
    ///
    /// # Errors
    ///
    /// [`ContextError`] naming the first variable that is missing or malformed.
    pub fn from_lookup<F: Fn(&str) -> Option<String>>(lookup: F) -> Result<Self, ContextError> {
        let get = |variable: &'static str| {
            lookup(variable)
                .filter(|v| !v.is_empty())
                .ok_or(ContextError {
                    variable,
                    problem: "is not set",
                })
        };
        let timeout = get("SLUICE_TIMEOUT")?;
        let timeout_secs = timeout.parse().map_err(|_| ContextError {
            variable: "SLUICE_TIMEOUT",
            problem: "is not a number of seconds",
        })?;
        Ok(OrderContext {
            run_id: get("SLUICE_RUN_ID")?,
            order_num: get("SLUICE_ORDER_NUM")?,
            order_name: get("SLUICE_ORDER_NAME")?,
            trace_id: get("SLUICE_TRACE_ID")?,
            flow_id: get("SLUICE_FLOW_ID")?,
            timeout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const FULL: &[(&str, &str)] = &[
        ("SLUICE_RUN_ID", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        ("SLUICE_ORDER_NUM", "0002"),
        ("SLUICE_ORDER_NAME", "build"),
        ("SLUICE_TRACE_ID", "deadbeef"),
        ("SLUICE_FLOW_ID", "alice:deadbeef-exec"),
        ("SLUICE_TIMEOUT", "60"),
    ];

    #[test]
    fn reads_every_field() {
        let ctx = OrderContext::from_lookup(env(FULL)).unwrap();
        assert_eq!(ctx.order_num, "0002");
        assert_eq!(ctx.order_name, "build");
        assert_eq!(ctx.timeout_secs, 60);
        assert_eq!(ctx.flow_id, "alice:deadbeef-exec");
    }

    #[test]
    fn names_the_missing_variable() {
        let partial: Vec<(&str, &str)> = FULL
            .iter()
            .copied()
            .filter(|(k, _)| *k != "SLUICE_TRACE_ID")
            .collect();
        let err = OrderContext::from_lookup(env(&partial)).unwrap_err();
        assert_eq!(err.variable, "SLUICE_TRACE_ID");
        assert!(err.to_string().contains("is not set"));
    }

    #[test]
    fn rejects_a_bad_timeout() {
        let mut bad: Vec<(&str, &str)> = FULL.to_vec();
        bad[5] = ("SLUICE_TIMEOUT", "soon");
        assert_eq!(
            OrderContext::from_lookup(env(&bad)).unwrap_err().variable,
            "SLUICE_TIMEOUT"
        );
    }
}
