//! dispatch: fail what cannot run, start what can, and retry starts that were interrupted.
//!
//! Starting an order is idempotent: `queued → dispatching` is a conditional write that also
//! records a fresh attempt id (written with the results the step read, see
//! `move_with_results`), then the attempt's payload is made (the order's key derived
//! from the run's, read once a run by a warm orchestrator — see [`crate::run_key`] — and a
//! presigned URL minted for each object the attempt touches: workers hold no credentials),
//! then the worker is started (the run's watch, started before the run's rows, watches
//! it: nothing runs unwatched), then `dispatching → running`, written with the step's
//! release of the lock. An order found `dispatching`
//! longer than the dispatch lease (its orchestrator crashed mid-start) is started again with
//! the same attempt id; the worker claims the attempt before running anything, so the order
//! still runs at most once. A start that fails transiently (throttled, timed out) is
//! retried a few times in the pass, then left `dispatching` for that later retry; only a
//! permanent failure fails the order (`dispatch_failed`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use sluice_contract::dispatch::{
    Capability, DispatchPayload, InputSource, OrderIdentity, SharedCode,
};
use sluice_contract::outputs::Input;
use sluice_contract::validate::{MAX_PRESIGN_EXPIRY, PRESIGN_MARGIN, Platform};
use sluice_contract::{AttemptId, OrderNum, OrderStatus, RunId, keys};

use super::Moved;
use super::evaluate::{Node, evaluate};
use super::finalize::run_end;
use super::put_back;
use super::read_state::{ReadResult, order_event};
use super::taking::{TakeLock, lone_attempt};
use crate::engine::{Engine, millis};
use crate::error::{EngineError, ErrorKind, StoreError};
use crate::ports::{
    DispatchError, LockStatus, MAX_MOVES_TOGETHER, OrderEvent, OrderMove, OrderRecord, Presigned,
    StepWrites, Transition,
};
use crate::retry::{Backoff, while_transient};
use crate::run_key::order_identity;

/// The keys a pass read, by path: the stored value, or why it could not be read.
type StoredKeys = std::collections::HashMap<String, Result<String, StoreError>>;

/// Retries of the lock's read after a failed taking (whose answer may have been lost),
/// and the first wait: unread, the step is refused though it may hold the lock, and what
/// it wrote is then recorded late (its results' events lost unless it ended the run, its
/// claims started after the dispatch lease).
const LOCK_READ_RETRIES: u32 = 3;
const LOCK_READ_RETRY_FIRST: Duration = Duration::from_millis(100);

/// The most the run's last events may hold (their details, JSON) to be written with the
/// step's last moves.
const RUN_END_EVENT_BYTES: usize = 256 << 10;

/// Retries of a start that failed transiently within one pass, and the first wait.
const START_RETRIES: u32 = 2;
const START_RETRY_FIRST: Duration = Duration::from_secs(1);

/// What a step's evaluations and actions left ([`Engine::apply_plan`]).
pub(crate) struct Applied {
    /// The run's rows.
    pub orders: Vec<OrderRecord>,
    /// The `→ running` moves of the orders it started, to write with the release.
    pub started: Vec<(OrderRecord, Transition)>,
    /// Whether it wrote the run's last events, `completed` among them, with its moves.
    pub closed: bool,
}

/// What became of a step's first moves ([`Engine::move_with_results`]).
struct FirstMoves {
    ended: Vec<Moved>,
    claimed: Vec<Moved>,
    /// The run's last events were written with them.
    closed: bool,
}

/// The event of an order a step ended itself — a dependency failed, or it could not start —
/// (`row`, as its move left it), dated by that move: made again, it is the same event.
fn end_event(row: &OrderRecord) -> OrderEvent {
    let detail = serde_json::json!({ "reason": row.reason });
    let at_ms = row.finished_at_ms.unwrap_or_default();
    order_event(row, at_ms, row.status.as_str(), detail)
}

impl Engine {
    /// Evaluates the run and acts on the plan until nothing more can change without a
    /// worker's result; returns the orders as they are afterwards, and the `→ running`
    /// moves of the orders it started, which the step writes with its release (until then
    /// they are `dispatching`, as after a crash mid-start: retried after the dispatch lease
    /// with the same attempt).
    ///
    /// An order whose start failed is `failed` at once, with no worker and so no result to
    /// wake the orchestrator again: the plan is evaluated once more, so its dependents fail
    /// (or, when they need not succeed, start) now rather than wait forever.
    ///
    /// Past the job's deadline nothing new is started: finalize times the rest out.
    ///
    /// A step that is to take the lock with its first writes (`take`) takes it with the
    /// results and the moves they lead to, or, refused, writes nothing and returns at once.
    /// `holding`: the lock's count the step holds (or will, once it takes it), which names
    /// the attempt of an order it leaves alone in flight (see [`super::taking`]).
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub(crate) async fn apply_plan(
        &self,
        mut orders: Vec<OrderRecord>,
        mut results: Vec<ReadResult>,
        take: Option<&TakeLock>,
        holding: u64,
    ) -> Result<Applied, EngineError> {
        let mut started = Vec::new();
        let mut closed = false;
        loop {
            if take.is_some_and(TakeLock::is_refused) {
                break;
            }
            let again;
            (orders, again) = self
                .apply_plan_once(
                    orders,
                    &mut results,
                    &mut started,
                    &mut closed,
                    take,
                    holding,
                )
                .await?;
            if !again {
                break;
            }
        }
        Ok(Applied {
            orders,
            started,
            closed,
        })
    }

    /// One evaluation and its actions; also says whether to evaluate again (an order
    /// failed to start, or a result could not be written with the moves it led to).
    async fn apply_plan_once(
        &self,
        mut orders: Vec<OrderRecord>,
        results: &mut Vec<ReadResult>,
        started: &mut Vec<(OrderRecord, Transition)>,
        closed: &mut bool,
        take: Option<&TakeLock>,
        holding: u64,
    ) -> Result<(Vec<OrderRecord>, bool), EngineError> {
        let now = self.now_ms();
        let take = take.filter(|take| take.is_pending());
        if orders.iter().any(|o| now >= o.job_deadline_ms) {
            if let Some(take) = take {
                take.refuse(&"the job's deadline has passed");
                return Ok((orders, false));
            }
            self.write_results(&mut orders, std::mem::take(results))
                .await?;
            return Ok((orders, false));
        }
        // The plan is made as if the results were written (they are written with it),
        // without a copy of every row: a result changes its order's status only.
        let mut nodes: Vec<Node> = orders.iter().map(Node::from).collect();
        for result in results.iter() {
            let index = result.row.plan.order_num.index().expect("real order");
            nodes[index].status = result.change.to;
        }
        let mut plan = evaluate(&nodes);
        // An order waiting for its retry starts at its moment (its timer wakes the run) —
        // one a result of this step queues for a retry, at a later step.
        plan.ready.retain(|num| {
            let order = &orders[num.index().expect("real order")];
            let retried_now = (results.iter()).any(|r| r.row.plan.order_num == *num);
            !retried_now && !order.retry_waits(now)
        });

        let ended_by_dependency: Vec<(OrderRecord, Transition)> = (plan.ended.into_iter())
            .map(|ending| {
                let change = Transition {
                    finished_at_ms: Some(now),
                    ..Transition::to(ending.status).reason(ending.reason)
                };
                (
                    orders[ending.num.index().expect("real order")].clone(),
                    change,
                )
            })
            .collect();

        // Claim the ready orders, each with a fresh attempt id, then start them and the
        // starts found interrupted (the same attempt again). An order left alone in flight
        // has its attempt named after the lock's count (see [`super::taking`]).
        let resulted: HashSet<OrderNum> = results.iter().map(|r| r.row.plan.order_num).collect();
        let alone = plan.ready.len() == 1
            && !(orders.iter()).any(|o| {
                matches!(o.status, OrderStatus::Dispatching | OrderStatus::Running)
                    && !resulted.contains(&o.plan.order_num)
            });
        let claims: Vec<(OrderRecord, Transition)> = (plan.ready.iter())
            .map(|num| {
                let attempt = match alone {
                    true => lone_attempt(holding),
                    false => AttemptId::generate(),
                };
                let change = Transition {
                    attempt: Some(attempt),
                    dispatched_at_ms: Some(now),
                    ..Transition::to(OrderStatus::Dispatching)
                };
                (orders[num.index().expect("real order")].clone(), change)
            })
            .collect();
        let Some(first) = self
            .move_with_results(&mut orders, results, ended_by_dependency, claims, take)
            .await?
        else {
            return Ok((orders, true));
        };
        *closed |= first.closed;
        for moved in first.ended {
            if let Moved::Applied(row) = &moved
                && !first.closed
            {
                self.record(end_event(row));
            }
            put_back(&mut orders, moved.row());
        }

        let mut to_start = Vec::new();
        for moved in first.claimed {
            match moved {
                Moved::Applied(claimed) => to_start.push(claimed),
                Moved::Lost(current) => put_back(&mut orders, current),
            }
        }
        // Interrupted starts; not one this step started already (it is `running` only
        // once the step releases the lock).
        let stale_before = now.saturating_sub(millis(self.config.dispatch_lease));
        let started_now: HashSet<OrderNum> =
            started.iter().map(|(o, _)| o.plan.order_num).collect();
        for order in &orders {
            let stale = order.status == OrderStatus::Dispatching
                && order.dispatched_at_ms.is_none_or(|t| t <= stale_before)
                && !started_now.contains(&order.plan.order_num);
            if stale {
                tracing::warn!(order_num = %order.plan.order_num, "retrying an interrupted dispatch");
                to_start.push(order.clone());
            }
        }
        let stored_keys = self.read_keys(to_start.iter()).await;
        let stored_keys = &stored_keys;
        let published = &published_outputs(&to_start, &orders);
        let launched: Vec<(OrderRecord, Result<(), DispatchError>)> = stream::iter(to_start)
            .map(|order| async move {
                let launched = self.launch(&order, now, stored_keys, published).await;
                (order, launched)
            })
            .buffer_unordered(self.config.dispatch_parallelism.max(1))
            .collect()
            .await;

        let mut failed = Vec::new();
        for (order, launched) in launched {
            match launched {
                Ok(()) => {
                    tracing::info!(order_num = %order.plan.order_num, attempt = ?order.attempt, target = %order.plan.execution_target, "order dispatched");
                    let detail = serde_json::json!({ "attempt": order.attempt, "target": order.plan.execution_target.to_string() });
                    self.record_event(&order, "dispatched", detail);
                    started.push((order.clone(), Transition::to(OrderStatus::Running)));
                    put_back(&mut orders, order);
                }
                // It may even have started. The order stays `dispatching`: once the
                // dispatch lease has passed, a pass (kicked by the run's watch) starts the
                // same attempt again, and the worker's claim makes a second start harmless.
                Err(error) if error.kind == ErrorKind::Transient => {
                    tracing::warn!(order_num = %order.plan.order_num, %error, "dispatch failed transiently; it will be retried");
                    put_back(&mut orders, order);
                }
                Err(error) => {
                    tracing::error!(order_num = %order.plan.order_num, %error, "dispatch failed");
                    let change = Transition {
                        finished_at_ms: Some(self.now_ms()),
                        ..Transition::to(OrderStatus::Failed).reason(format!(
                            "dispatch_failed: starting the {}: {}",
                            error.what, error.message
                        ))
                    };
                    failed.push((order, change));
                }
            }
        }
        let failed_to_start = !failed.is_empty();
        for moved in self.move_orders(failed).await? {
            if let Moved::Applied(row) = &moved {
                self.record(end_event(row));
            }
            put_back(&mut orders, moved.row());
        }
        Ok((orders, failed_to_start))
    }

    /// Writes the results a step read together with the moves its plan makes of them —
    /// the dependents a failure ends (`ended`) and the orders it claims — in one write when
    /// they fit ([`MAX_MOVES_TOGETHER`]), with the run's last events when they end the run
    /// (see [`Engine::run_end_events`]); what became of `ended` and `claims`. `None` when
    /// a result was moved by someone else first (the plan assumed otherwise: the results
    /// are written, and the caller evaluates again), or the step was to take the lock with
    /// these writes (`take`) and was refused (nothing written).
    async fn move_with_results(
        &self,
        orders: &mut [OrderRecord],
        results: &mut Vec<ReadResult>,
        ended: Vec<(OrderRecord, Transition)>,
        claims: Vec<(OrderRecord, Transition)>,
        take: Option<&TakeLock>,
    ) -> Result<Option<FirstMoves>, EngineError> {
        let results = std::mem::take(results);
        let alone = ended.is_empty() && claims.is_empty();
        let nothing = results.is_empty() && alone;
        let inserting = take.and_then(TakeLock::inserted_events);
        // A take's write carries the lock's item too; one that inserts the rows, each row
        // (those moved among them) and the events that go with them.
        let items = match inserting {
            Some(events) => TakeLock::inserting_items(orders.len(), events.len()),
            None => results.len() + ended.len() + claims.len() + usize::from(take.is_some()),
        };
        let fits = items <= MAX_MOVES_TOGETHER;
        if let Some(take) = take
            && (nothing || !fits)
        {
            take.refuse(&"nothing to write, or too many moves for one write");
            return Ok(None);
        }
        let run_end = (fits && claims.is_empty() && !nothing)
            .then(|| self.run_end_events(orders, &results, &ended))
            .flatten()
            .filter(|events| items + events.len() <= MAX_MOVES_TOGETHER);
        if take.is_some() || (fits && ((!results.is_empty() && !alone) || run_end.is_some())) {
            let closed = run_end.is_some();
            let moves = (results.iter())
                .map(|r| (&r.row, &r.change))
                .chain((ended.iter().chain(&claims)).map(|(o, c)| (o, c)));
            let writes = match inserting {
                Some(events) => {
                    let mut rows = orders.to_vec();
                    for (order, change) in moves {
                        // Inserted as moved: allowed as the move would be.
                        (change.check_allowed(&order.run_id, order.plan.order_num, order.status))?;
                        put_back(&mut rows, Moved::applied(order.clone(), change).row());
                    }
                    StepWrites {
                        inserts: rows,
                        events: (events.iter().cloned())
                            .chain(run_end.into_iter().flatten())
                            .collect(),
                        ..StepWrites::default()
                    }
                }
                None => StepWrites {
                    moves: moves.map(|(o, c)| OrderMove::of(o, c)).collect(),
                    events: run_end.unwrap_or_default(),
                    ..StepWrites::default()
                },
            };
            let run_id = orders[0].run_id.clone(); // rows are never empty
            let written = match take {
                Some(take) => {
                    let lease_until = self.now_ms() + millis(self.config.lock_lease);
                    (self.ports.orders)
                        .take_lock_with(
                            &run_id,
                            &take.owner,
                            take.released_marks,
                            lease_until,
                            &writes,
                        )
                        .await
                        .map(|marks| take.took(marks))
                }
                None => {
                    self.ports
                        .orders
                        .transition_together(&run_id, &writes)
                        .await
                }
            };
            if let (Some(take), Err(error)) = (take, &written)
                && !self.took_after_all(&run_id, take, error).await
            {
                return Ok(None);
            }
            match written {
                Ok(()) => {
                    for result in results {
                        let moved = Moved::applied(result.row.clone(), &result.change);
                        put_back(orders, self.settle_result(moved, &result, closed));
                    }
                    let applied = |pairs: Vec<(OrderRecord, Transition)>| -> Vec<Moved> {
                        (pairs.into_iter())
                            .map(|(order, change)| Moved::applied(order, &change))
                            .collect()
                    };
                    return Ok(Some(FirstMoves {
                        ended: applied(ended),
                        claimed: applied(claims),
                        closed,
                    }));
                }
                // One at a time: which moves stand says what to do next.
                Err(error) => super::writing_apart(&error, "the step's results"),
            }
        }
        if !self.write_results(orders, results).await? {
            return Ok(None);
        }
        Ok(Some(FirstMoves {
            ended: self.move_orders(ended).await?,
            claimed: self.move_orders(claims).await?,
            closed: false,
        }))
    }

    /// The events that end the run, when `results` and `ended` end every order of `orders`
    /// not ended yet: theirs, and the job's `completed` — written with those moves, so that
    /// finalize has no events left to write apart before the done document.
    fn run_end_events(
        &self,
        orders: &[OrderRecord],
        results: &[ReadResult],
        ended: &[(OrderRecord, Transition)],
    ) -> Option<Vec<OrderEvent>> {
        let moving: HashSet<OrderNum> = (results.iter().map(|r| r.row.plan.order_num))
            .chain(ended.iter().map(|(order, _)| order.plan.order_num))
            .collect();
        let rest_ended =
            (orders.iter()).all(|o| o.status.is_terminal() || moving.contains(&o.plan.order_num));
        let moves_end = (results.iter().map(|r| r.change.to))
            .chain(ended.iter().map(|(_, change)| change.to))
            .all(OrderStatus::is_terminal);
        if !(rest_ended && moves_end) {
            return None;
        }
        let mut after = orders.to_vec();
        let mut events = Vec::new();
        for result in results {
            let row = Moved::applied(result.row.clone(), &result.change).row();
            events.extend(self.result_events(&row, result));
            put_back(&mut after, row);
        }
        for (order, change) in ended {
            let row = Moved::applied(order.clone(), change).row();
            events.push(end_event(&row));
            put_back(&mut after, row);
        }
        let (_, completed) = run_end(&after[0].run_id, &after);
        events.push(completed);
        // Far inside a transaction's 4 MB and an item's 400 KB: what orders emitted can be
        // larger (a result may hold 1 MiB), and is then written apart, as before.
        let bytes: usize = (events.iter()).map(|e| e.detail.to_string().len()).sum();
        (bytes <= RUN_END_EVENT_BYTES).then_some(events)
    }

    /// Whether a take that failed (`error`) took the lock all the same — its answer was
    /// lost after it took effect, or the store's own retry of it then found the lock held:
    /// the lock says, held by the step's owner. Then the step holds the lock, and its
    /// moves are written apart, which says which stand; otherwise it is refused.
    async fn took_after_all(&self, run_id: &RunId, take: &TakeLock, error: &StoreError) -> bool {
        let read = while_transient(
            self.ports.clock.as_ref(),
            Backoff::new(LOCK_READ_RETRY_FIRST, LOCK_READ_RETRIES),
            "reading the lock after its taking failed",
            StoreError::kind,
            || self.ports.orders.lock_state(run_id),
        );
        if let Ok(Some(lock)) = read.await
            && lock.owner == take.owner
            && lock.status == LockStatus::Held
        {
            take.took(take.released_marks + 1);
            return true;
        }
        if !error.is_condition_failed() && !error.is_transient() {
            tracing::warn!(%error, "taking the lock with a step's writes was refused");
        }
        take.refuse_written(error);
        false
    }

    /// Reads, once each, the keys the orders to start are derived from (one run key for a
    /// run queued since run keys, kept for the run's later passes — see
    /// [`crate::run_key::RunKeyCache`]; an order's own key for one queued before). A key that
    /// cannot be read is kept as its error, and fails only the orders that need it.
    async fn read_keys<'o>(&self, orders: impl Iterator<Item = &'o OrderRecord>) -> StoredKeys {
        let paths: std::collections::BTreeMap<&str, &RunId> = orders
            .map(|order| (order.key_path.as_str(), &order.run_id))
            .collect();
        let mut stored = StoredKeys::new();
        for (path, run_id) in paths {
            if let Some(kept) = self.run_keys.get(path) {
                stored.insert(path.to_owned(), Ok(kept));
                continue;
            }
            let read = while_transient(
                self.ports.clock.as_ref(),
                Backoff::new(START_RETRY_FIRST, START_RETRIES),
                "reading a run's key",
                StoreError::kind,
                || self.ports.keys.get_key(path),
            )
            .await;
            if let Ok(value) = &read {
                self.run_keys.keep(run_id, path, value);
            }
            stored.insert(path.to_owned(), read);
        }
        stored
    }

    /// Starts the worker, retrying a transient failure a few times. The run's watch,
    /// started before the run's rows, watches it.
    async fn start_worker(
        &self,
        order: &OrderRecord,
        payload: &DispatchPayload,
    ) -> Result<(), DispatchError> {
        let backoff = Backoff::new(START_RETRY_FIRST, START_RETRIES);
        let start = || {
            self.ports.dispatcher.start(
                order.plan.execution_target,
                Duration::from_secs(order.plan.timeout),
                payload,
            )
        };
        let kind_of = |error: &DispatchError| error.kind;
        while_transient(
            self.ports.clock.as_ref(),
            backoff,
            "starting",
            kind_of,
            start,
        )
        .await
    }

    /// What the worker of `attempt` is handed: a URL for each object the attempt reads or
    /// writes, minted now for this attempt's own keys, and the order's identity. Workers
    /// hold no credentials: a worker that cannot even read its bundle can still report
    /// through its callback URL, and a worker of an earlier attempt cannot overwrite this
    /// attempt's result. The URLs live as long as the attempt may report — until the job's
    /// deadline (a worker may wait in a queue before its timeout starts) — and a margin,
    /// within what a presigned URL can live. A WebAssembly order on AWS also gets the URL of
    /// the code the compile function makes from its module.
    ///
    /// # Errors
    ///
    /// The order's key cannot be read (a transient failure after a few tries), or a URL
    /// cannot be signed.
    async fn attempt_payload(
        &self,
        order: &OrderRecord,
        attempt: &AttemptId,
        now: u64,
        stored_keys: &StoredKeys,
        published: &PublishedKeys,
    ) -> Result<DispatchPayload, DispatchError> {
        let failed = |kind, message: String| DispatchError {
            kind,
            what: "worker".to_owned(),
            run_id: order.run_id.clone(),
            order_num: order.plan.order_num,
            message,
        };
        let until_deadline = order.job_deadline_ms.saturating_sub(now) / 1000;
        let expiry = Duration::from_secs(
            until_deadline
                .max(order.plan.timeout)
                .saturating_add(PRESIGN_MARGIN)
                .min(MAX_PRESIGN_EXPIRY),
        );
        let (run_id, num) = (&order.run_id, order.plan.order_num);
        let presign_for = |operation, key: String, expiry| async move {
            let url = self.ports.internal.presign(operation, &key, expiry).await;
            url.map(Capability::new)
                .map_err(|e| failed(e.kind(), format!("presigning its URLs: {e}")))
        };
        let presign = |operation, key| presign_for(operation, key, expiry);
        let stored = match stored_keys.get(&order.key_path) {
            Some(Ok(stored)) => stored,
            Some(Err(e)) => {
                let message = format!("its key {} cannot be read: {e}", order.key_path);
                return Err(failed(e.kind(), message));
            }
            None => {
                let message = format!("its key {} was not read", order.key_path);
                return Err(failed(ErrorKind::Transient, message));
            }
        };
        let identity = order_identity(stored, run_id, num).map_err(|e| {
            failed(
                ErrorKind::Permanent,
                format!("its key {}: {e}", order.key_path),
            )
        })?;
        let compiled = match shared_code_key(order) {
            Some((module_sha256, key)) => Some(SharedCode {
                module_sha256,
                get_url: presign(Presigned::Get, key).await?,
            }),
            None => None,
        };
        // One source per order the inputs name, its outputs' URL signed once.
        let mut by_producer: BTreeMap<OrderNum, Vec<Input>> = BTreeMap::new();
        for input in &order.plan.inputs {
            (by_producer.entry(input.order_num).or_default()).push(input.clone());
        }
        let mut inputs = Vec::with_capacity(by_producer.len());
        for (producer, taken) in by_producer {
            let published = match published.get(&producer) {
                Some(Some(key)) => Some(presign(Presigned::Get, key.clone()).await?),
                Some(None) | None => None,
            };
            inputs.push(InputSource {
                published,
                inputs: taken,
            });
        }
        Ok(DispatchPayload {
            run_id: run_id.clone(),
            order_num: num,
            attempt: attempt.clone(),
            attempt_number: order.attempts.len() as u32 + 1,
            bundle_url: match &order.packed {
                Some(at) => {
                    let pack = keys::bundle_pack(run_id, at.pack);
                    presign(Presigned::GetRange(at.range.clone()), pack).await?
                }
                None => presign(Presigned::Get, keys::exec_zip(run_id, num)).await?,
            },
            bundle_range: order.packed.as_ref().map(|at| at.range.clone()),
            claim_url: presign(Presigned::PutIfAbsent, keys::claim(run_id, num, attempt)).await?,
            claim_check_url: presign(Presigned::Get, keys::claim(run_id, num, attempt)).await?,
            log_url: presign(Presigned::Put, order.log_key.clone()).await?,
            log_key: (!order.attempts.is_empty()).then(|| order.log_key.clone()),
            log_in_result: self.config.platform == Platform::Aws,
            callback_url: presign(Presigned::PutIfAbsent, keys::result(run_id, num, attempt))
                .await?,
            outputs_url: Some(
                presign(Presigned::PutIfAbsent, keys::outputs(run_id, num, attempt)).await?,
            ),
            cancel_url: Some(presign(Presigned::Get, keys::cancel_request(run_id)).await?),
            inputs,
            identity: OrderIdentity::new(identity),
            compiled,
        })
    }

    /// Starts the worker of `order`'s attempt (claimed `dispatching` already).
    async fn launch(
        &self,
        order: &OrderRecord,
        now: u64,
        stored_keys: &StoredKeys,
        published: &PublishedKeys,
    ) -> Result<(), DispatchError> {
        let Some(attempt) = &order.attempt else {
            return Err(DispatchError {
                kind: ErrorKind::Permanent,
                what: "worker".to_owned(),
                run_id: order.run_id.clone(),
                order_num: order.plan.order_num,
                message: "it is dispatching without an attempt id".to_owned(),
            });
        };
        let payload = self
            .attempt_payload(order, attempt, now, stored_keys, published)
            .await?;
        self.start_worker(order, &payload).await
    }
}

/// Where the orders that `to_start` take inputs from stored their outputs (`None`: they
/// published none), by order number.
type PublishedKeys = HashMap<OrderNum, Option<String>>;

/// The [`PublishedKeys`] of the producers of `to_start`'s inputs, from the run's rows.
fn published_outputs(to_start: &[OrderRecord], orders: &[OrderRecord]) -> PublishedKeys {
    (to_start.iter())
        .flat_map(|order| &order.plan.inputs)
        .filter_map(|input| {
            let producer = orders.get(input.order_num.index()?)?;
            Some((input.order_num, producer.outputs_key.clone()))
        })
        .collect()
}

/// The module digest and the key of the code the compile function makes for a WebAssembly
/// order's workers. The
/// digest must be a sha256 (hex), so the key stays one of the run's own.
fn shared_code_key(order: &OrderRecord) -> Option<(String, String)> {
    let compiled = order.compiled.as_ref()?;
    let sha = &compiled.module_sha256;
    let is_sha256 = sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_sha256 {
        tracing::warn!(module_sha256 = %sha, "not a sha256: the order's worker is pointed at no compiled code");
        return None;
    }
    let key = keys::compiled_code(
        &order.run_id,
        order.plan.execution_target,
        sha,
        compiled.metered,
    );
    Some((sha.clone(), key))
}
