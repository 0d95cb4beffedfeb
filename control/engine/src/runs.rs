//! What a client asks about a run after submitting it: its orders and done document, one
//! order's stored log, and waiting for the end — over the ports, so the same on any
//! backend (`sluice status | wait | logs` on AWS; `sluice report` anywhere).

use std::sync::Arc;
use std::time::Duration;

use sluice_contract::result::{DoneDoc, MAX_RESULT_BYTES, parse_done, parse_result};
use sluice_contract::{OrderStatus, RunId, keys};

use crate::engine::{Engine, Ports};
use crate::error::{EngineError, StoreError};
use crate::ports::{ObjectStore, OrderRecord, OrderStore};

/// A run as a client sees it.
#[derive(Debug, Clone)]
pub struct RunView {
    /// Its orders' rows, in order (gone a day after the run: the rows' TTL).
    pub orders: Vec<OrderRecord>,
    /// Its done document, once finalized.
    pub done: Option<DoneDoc>,
}

/// The stores a run is read from: an engine's, or a local state folder's opened without
/// starting anything ([`crate::local::open_run_stores`]).
#[derive(Debug, Clone)]
pub struct RunStores {
    /// The internal bucket (logs, results).
    pub internal: Arc<dyn ObjectStore>,
    /// The done bucket.
    pub done: Arc<dyn ObjectStore>,
    /// The tables.
    pub orders: Arc<dyn OrderStore>,
}

impl RunStores {
    /// An engine's stores.
    pub fn of(ports: &Ports) -> Self {
        RunStores {
            internal: Arc::clone(&ports.internal),
            done: Arc::clone(&ports.done),
            orders: Arc::clone(&ports.orders),
        }
    }

    /// The run's rows and done document.
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownRun`] when there is neither; a backend failure.
    pub async fn view(&self, run_id: &RunId) -> Result<RunView, EngineError> {
        let orders = self.orders.run_orders(run_id).await?;
        let key = keys::done(run_id);
        let done = match self.done.get(&key).await {
            Ok(bytes) => Some(parse_done(&bytes).map_err(|e| StoreError::Backend {
                what: format!("done document {key}"),
                message: e.to_string(),
            })?),
            Err(StoreError::NotFound { .. }) => None,
            Err(other) => return Err(other.into()),
        };
        if orders.is_empty() && done.is_none() {
            return Err(EngineError::UnknownRun(run_id.to_string()));
        }
        Ok(RunView { orders, done })
    }
}

impl Engine {
    /// The run's rows and done document.
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownRun`] when there is neither; a backend failure.
    pub async fn run_view(&self, run_id: &RunId) -> Result<RunView, EngineError> {
        RunStores::of(&self.ports).view(run_id).await
    }

    /// The stored log of the run's order `order` (its number, `2` or `0002`, or its name):
    /// its log object, or its result's `log` when that holds it alone (on AWS) or no log
    /// was stored (then under a line saying so).
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownRun`] for a run without rows; [`EngineError::UnknownOrder`]
    /// listing the run's orders; [`EngineError::NoLog`] when the order has neither a stored
    /// log nor a result (it has not run, or its worker died before reporting).
    pub async fn order_log(&self, run_id: &RunId, order: &str) -> Result<Vec<u8>, EngineError> {
        // Only the rows: the done document has nothing a log needs.
        let orders = self.ports.orders.run_orders(run_id).await?;
        if orders.is_empty() {
            return Err(EngineError::UnknownRun(run_id.to_string()));
        }
        let row = orders
            .iter()
            .find(|o| {
                o.plan.order_name == order
                    || o.plan.order_num.to_string() == order
                    || order
                        .parse::<u32>()
                        .is_ok_and(|n| n == o.plan.order_num.get())
            })
            .ok_or_else(|| EngineError::UnknownOrder {
                run_id: run_id.to_string(),
                order: order.to_owned(),
                known: orders
                    .iter()
                    .map(|o| format!("{} {}", o.plan.order_num, o.plan.order_name))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if row.log_stored != Some(false) {
            match self.ports.internal.get(&row.log_key).await {
                Ok(log) => return Ok(log),
                Err(StoreError::NotFound { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        // Its result holds it alone, or (no log stored: a worker that could not store it,
        // or that reported after the run had ended the order) holds what there is of it.
        let no_log = |why: String| EngineError::NoLog {
            run_id: run_id.to_string(),
            order: format!("{} {}", row.plan.order_num, row.plan.order_name),
            why,
        };
        let none_yet = || {
            no_log(if row.status.is_terminal() {
                format!("it is {}: its worker stored none", row.status)
            } else {
                format!("it is {}: its log is stored when it ends", row.status)
            })
        };
        let Some(key) = row.result_key() else {
            return Err(none_yet());
        };
        let result = self
            .ports
            .internal
            .get_prefix(&key, MAX_RESULT_BYTES as u64);
        match result.await {
            Ok(result) => log_in_result(&key, &result).ok_or_else(|| {
                no_log(format!(
                    "its result {key} is malformed, and no log was stored"
                ))
            }),
            Err(StoreError::NotFound { .. }) => Err(none_yet()),
            Err(other) => Err(other.into()),
        }
    }

    /// Waits for the run's done document, looking every `poll` and calling `on_change`
    /// with the run whenever an order's status changed.
    ///
    /// # Errors
    ///
    /// As [`Engine::run_view`].
    pub async fn wait_for_done(
        &self,
        run_id: &RunId,
        poll: Duration,
        mut on_change: impl FnMut(&RunView),
    ) -> Result<DoneDoc, EngineError> {
        let mut last: Option<Vec<OrderStatus>> = None;
        loop {
            let view = self.run_view(run_id).await?;
            let statuses: Vec<OrderStatus> = view.orders.iter().map(|o| o.status).collect();
            if last.as_ref() != Some(&statuses) {
                on_change(&view);
                last = Some(statuses);
            }
            if let Some(done) = view.done {
                return Ok(done);
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// The log a result (at `key`) holds: the whole log, or, when no log was stored, what the
/// result kept of it (its last 256 KiB, as text) under a line that says so; `None` for a
/// result that cannot be read as one.
fn log_in_result(key: &str, result: &[u8]) -> Option<Vec<u8>> {
    let doc = parse_result(result).ok()?;
    let mut log = Vec::with_capacity(doc.log.len() + 100);
    if !doc.log_in_result {
        let of = match doc.log_bytes {
            0 => String::new(),
            bytes => format!(" of its {bytes} bytes"),
        };
        let note = format!(
            "==> no log of this order was stored: this is what its result {key} kept{of}\n"
        );
        log.extend_from_slice(note.as_bytes());
    }
    log.extend_from_slice(doc.log.as_bytes());
    if !log.ends_with(b"\n") {
        log.push(b'\n');
    }
    Some(log)
}
