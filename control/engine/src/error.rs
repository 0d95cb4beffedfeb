//! Errors of the engine: [`EngineError`], over the backends' [`StoreError`] and
//! [`ErrorKind`] (defined with the ports, re-exported here).

use sluice_contract::ValidationError;
pub use sluice_ports::{ErrorKind, StoreError};

use crate::code::CodeError;
use crate::ports::DispatchError;
use crate::rerun::NotRerunnable;

/// An engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The job breaks a rule of the contract.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An order's code could not be had or packaged.
    #[error("order {order_num} ({order_name}): packaging its code failed: {cause}")]
    Bundle {
        /// The order.
        order_num: String,
        /// The order's name.
        order_name: String,
        /// What went wrong, with the path.
        #[source]
        cause: CodeError,
    },
    /// A credential an order lists is missing or breaks its store's rules.
    #[error("order {order_num} ({order_name}), field `{field}`: {message}")]
    Credential {
        /// The order.
        order_num: String,
        /// The order's name.
        order_name: String,
        /// The field listing the location.
        field: String,
        /// What is wrong, naming the location (never the value).
        message: String,
    },
    /// The caller may not use a credential the job names (a 403 on AWS).
    #[error(
        "{at}: {caller} may not use {location} (this deployment lets it use {allowed}; the \
         credential grants are the SLUICE_CREDENTIAL_GRANTS setting)"
    )]
    Forbidden {
        /// The order and field naming the location.
        at: String,
        /// The caller's principal.
        caller: String,
        /// The location.
        location: String,
        /// What the caller may use, as patterns.
        allowed: String,
    },
    /// A backend operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A worker or a watchdog could not be started.
    #[error(transparent)]
    Start(Box<DispatchError>),
    /// The run does not exist.
    #[error("run {0} has no orders")]
    UnknownRun(String),
    /// `sluice rerun` of a run that cannot be run again (yet, or at all).
    #[error("run {run_id} cannot be rerun: {why}")]
    NotRerunnable {
        /// The run asked for.
        run_id: String,
        /// Why not, and what to do instead.
        why: NotRerunnable,
    },
    /// The run has no such order.
    #[error("run {run_id} has no order {order:?} (its orders: {known})")]
    UnknownOrder {
        /// The run.
        run_id: String,
        /// The order asked for.
        order: String,
        /// The run's orders, `0001 name, ...`.
        known: String,
    },
    /// The order has no stored log: it has not run yet, or its worker stored none.
    #[error("order {order} of run {run_id} has no log yet ({why})")]
    NoLog {
        /// The run.
        run_id: String,
        /// The order, `0002 build`.
        order: String,
        /// Its status, and what that means for its log.
        why: String,
    },
}

impl EngineError {
    /// Whether the same operation may succeed later: only a backend's transient failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Store(store) => store.kind(),
            EngineError::Start(start) => start.kind,
            _ => ErrorKind::Permanent,
        }
    }

    /// Whether the caller's input is at fault (a 400 on AWS, exit 3 locally).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            EngineError::Invalid(_)
                | EngineError::Bundle { .. }
                | EngineError::Credential { .. }
                | EngineError::Forbidden { .. }
                | EngineError::NotRerunnable { .. }
        )
    }
}
