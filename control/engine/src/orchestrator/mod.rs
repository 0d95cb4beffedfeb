//! The orchestrator: one invocation per result event, advancing a run under its lock.
//!
//! Each invocation first takes `lock:<run_id>` ([`lock`]) — or, for a run whose lock this
//! process last released with one order in flight, for the result of an order a step left
//! alone in flight (its attempt names the lock's count), and for a run's first step (woken
//! by its init trigger), with its step's first writes (`taking.rs`). If another invocation holds it,
//! this one's wake-up is counted on the lock and it leaves: the holder loops once more
//! before releasing, so the event that woke us is processed by someone. The holder loops
//! [`read_state`] → [`evaluate`] → [`dispatch`] →
//! [`finalize`] until nothing changed and the lock is released clean, or the run is
//! finalized. A crash anywhere leaves a lock whose lease expires; the next event (or a
//! watchdog's kick) resumes the run from what the tables say.

pub mod dispatch;
pub mod evaluate;
pub mod finalize;
pub mod lock;
pub mod read_state;
pub(crate) mod taking;

use std::collections::HashSet;
use std::time::Duration;

use sluice_contract::{AttemptId, JobStatus, OrderNum, OrderStatus, RunId};
use tracing::Instrument;

use crate::engine::{Engine, millis};
use crate::error::{EngineError, ErrorKind, StoreError};
use crate::ports::{
    MAX_MOVES_TOGETHER, OrderEvent, OrderMove, OrderRecord, ReleaseOutcome, StepWrites, Transition,
};
use crate::retry::Backoff;
use lock::{LockAttempt, Release};
use taking::TakeLock;

/// How many times one invocation retries a pass that failed transiently, and the first
/// wait: about 0.5 + 1 + 2 + 4 s at most, far inside the lock's lease.
const PASS_RETRIES: u32 = 4;
const PASS_RETRY_FIRST: Duration = Duration::from_millis(500);

/// The longest an invocation waits between two steps when results arrived during the
/// first: at most as long as that step took, so the orchestrator spends no more than half
/// its time reading a run's rows, and a result waits at most this much more.
const MAX_STEP_PACE: Duration = Duration::from_millis(100);

/// The results a notification named: `(order, attempt)` of each.
pub type Arrivals = HashSet<(OrderNum, AttemptId)>;

/// The arrival a run's init trigger names.
fn init_trigger() -> (OrderNum, AttemptId) {
    (OrderNum::INIT, AttemptId::init_trigger())
}

/// How many more passes a cancel trigger runs, a second apart, to finalize its run.
const CANCEL_PASSES: u32 = 20;

/// The arrival a run's cancel trigger names.
fn cancel_trigger() -> (OrderNum, AttemptId) {
    (OrderNum::INIT, AttemptId::cancel_trigger())
}

/// Puts `order` back in `orders`, at its index.
pub(crate) fn put_back(orders: &mut [OrderRecord], order: OrderRecord) {
    let index = order.plan.order_num.index().expect("real order");
    orders[index] = order;
}

/// Logs why writes that go together are made apart: quietly for what happens in a
/// healthy run (an order moved by someone else, an answer lost, throttling), loudly for
/// a refusal — a role without a permission, say — which costs a call in every step until
/// it is fixed.
fn writing_apart(error: &StoreError, what: &str) {
    if error.is_condition_failed() || error.is_transient() {
        tracing::debug!(%error, "writing {what}");
    } else {
        tracing::warn!(%error, "a combined write was refused; writing {what}");
    }
}

/// Which step of an invocation is taken.
enum Step<'a> {
    /// The first: the lock was just taken with a whole lease, and the notifications that
    /// woke the invocation name what arrived (`None`: unknown, list it). With the run's
    /// rows when a step refused the taking before this acquire planned from them and
    /// nobody took the lock in between (see [`taking::TakeLock::planned_rows`]).
    First(Option<Arrivals>, Option<taking::KeptRows>),
    /// The first, taking the lock with its first writes (see [`taking`]), woken by the
    /// notifications of what arrived.
    Taking(Arrivals, &'a TakeLock),
    /// A later one (wake-ups were counted on the lock meanwhile, or a step failed): renew
    /// the lease (which answers the count the step's release is made against), list. With
    /// the run's rows as the step before left them, when it ended with the lock still held
    /// (its release found wake-ups): the lock held since, nobody wrote them, and they are
    /// not read again; after a failed step, they are.
    Later(Option<taking::KeptRows>),
}

impl<'a> Step<'a> {
    /// The taking of the lock this step makes with its first writes, if it does.
    fn take(&self) -> Option<&'a TakeLock> {
        match self {
            Step::Taking(_, take) => Some(*take),
            Step::First(..) | Step::Later(_) => None,
        }
    }
}

/// What [`Engine::move_order`] found.
#[derive(Debug)]
pub(crate) enum Moved {
    /// This call changed the order; the new row.
    Applied(OrderRecord),
    /// Someone moved the order first (a result, the job timeout...); their row stands.
    Lost(OrderRecord),
}

impl Moved {
    /// `order` with `change` applied: the row a move this pass wrote leaves (stores that
    /// write several moves together answer none of the rows).
    pub(crate) fn applied(mut order: OrderRecord, change: &Transition) -> Self {
        change.apply(&mut order);
        Moved::Applied(order)
    }

    /// The order's row, whoever moved it.
    pub(crate) fn row(self) -> OrderRecord {
        match self {
            Moved::Applied(row) | Moved::Lost(row) => row,
        }
    }
}

/// How far an invocation carries the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carry {
    /// Until it is finalized or the lock released clean.
    Settled,
    /// One step (init_job's: its submitter waits), then the lock given back when the step
    /// would loop.
    OneStep,
}

/// How an orchestrator invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This invocation finalized the run.
    Finalized(JobStatus),
    /// It advanced the run and released the lock.
    Released,
    /// Another invocation held the lock; this one's wake-up was counted on it.
    Deferred,
    /// The run had already been finalized.
    AlreadyFinished,
    /// The lock's lease expired while this invocation worked and another took over.
    LostLock,
    /// It took one step and gave the lock back, results having arrived meanwhile: another
    /// invocation goes on (init_job's first step, which its submitter waits for).
    HandedOff,
}

impl Engine {
    /// Advances `run_id` as far as it can go now (see the module docs), finding the
    /// results that arrived by listing the run's callbacks.
    ///
    /// # Errors
    ///
    /// [`EngineError::Store`] when a backend fails; the lock is then given back (its lease
    /// ended, so whoever takes it next looks for every result) and the next event retries
    /// from the tables.
    pub async fn orchestrate(&self, run_id: &RunId) -> Result<Outcome, EngineError> {
        self.orchestrate_with(run_id, None).await
    }

    /// Advances `run_id` woken by the notifications of `arrived` (its results' keys): the
    /// first step reads those results without listing the run's callbacks. Any other result
    /// is read all the same: its own notification runs a pass, or, when a pass held the
    /// lock, was counted on it, and every step after the first lists; a lock taken over from
    /// a holder whose lease ended (it crashed, or gave the lock back after an error) makes
    /// the first step list too.
    ///
    /// # Errors
    ///
    /// As [`Engine::orchestrate`].
    pub async fn orchestrate_notified(
        &self,
        run_id: &RunId,
        arrived: Arrivals,
    ) -> Result<Outcome, EngineError> {
        if arrived.contains(&cancel_trigger()) {
            return self.cancelled_on_trigger(run_id, arrived).await;
        }
        self.orchestrate_with(run_id, Some(arrived)).await
    }

    /// Woken by a cancel trigger: cancels the run (without the lock, as every cancel),
    /// then runs passes until one finalizes it or finds it finalized, a second apart, for
    /// [`CANCEL_PASSES`] at most — a pass holding the lock meanwhile may have planned from
    /// rows read before the cancel and released it without finalizing; should none, the
    /// run's watch finalizes it. A request that cannot be read (a permission missing) is
    /// left to the watch too.
    async fn cancelled_on_trigger(
        &self,
        run_id: &RunId,
        arrived: Arrivals,
    ) -> Result<Outcome, EngineError> {
        match self.cancel_if_requested(run_id).await {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::Transient => return Err(error),
            Err(error) => {
                tracing::warn!(run_id = %run_id, %error, "the run's cancel request cannot be acted on")
            }
        }
        let mut outcome = self.orchestrate_with(run_id, Some(arrived)).await?;
        for _ in 0..CANCEL_PASSES {
            if matches!(outcome, Outcome::Finalized(_) | Outcome::AlreadyFinished) {
                break;
            }
            self.ports.clock.sleep(Duration::from_secs(1)).await;
            outcome = self.orchestrate_with(run_id, None).await?;
        }
        Ok(outcome)
    }

    /// Takes the run's first step in the process that has just written its rows (`rows`,
    /// as written), or is about to (`unwritten`: the events to write with them): planned
    /// from them, it takes the lock — never made — with its claims, or with the rows as its
    /// claims leave them (see [`taking`]), and goes on as any step, but for one step only:
    /// when results arrived meanwhile, it gives the lock back ([`Outcome::HandedOff`]).
    /// `None` when it did not take it (its writes do not fit one, someone took the lock
    /// first, a row exists, or its write failed and the lock does not say it was made —
    /// then, rarely, it may have been). Either way, the run's init trigger is then what
    /// carries it on.
    ///
    /// # Errors
    ///
    /// As [`Engine::orchestrate`], once the step took the lock (and wrote any rows).
    pub(crate) async fn take_first_step(
        &self,
        run_id: &RunId,
        rows: Vec<OrderRecord>,
        unwritten: Option<Vec<OrderEvent>>,
    ) -> Result<Option<Outcome>, EngineError> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let span = tracing::info_span!("first step", run_id = %run_id, owner = %owner);
        async {
            let generation = self.last_releases.generation();
            let kept = taking::KeptRows { rows, generation };
            let take = match unwritten {
                Some(events) => TakeLock::inserting(&owner, kept, events),
                None => TakeLock::new(&owner, taking::Release::never_taken(Some(kept))),
            };
            let first = Step::Taking(Arrivals::from([init_trigger()]), &take);
            let outcome = (self.hold_and_advance(run_id, &owner, first, 0, Carry::OneStep)).await;
            if take.taken().is_some() {
                return (self.given_back_after_error(run_id, &owner, outcome).await).map(Some);
            }
            if let Err(error) = outcome {
                tracing::debug!(%error, "the first step failed before it took the lock");
            }
            Ok(None)
        }
        .instrument(span)
        .await
    }

    async fn orchestrate_with(
        &self,
        run_id: &RunId,
        arrived: Option<Arrivals>,
    ) -> Result<Outcome, EngineError> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let span = tracing::info_span!("orchestrate", run_id = %run_id, owner = %owner);
        async {
            let released = self.last_releases.take(run_id);
            let take = arrived.as_ref().and_then(|arrived| {
                let lone = taking::lone_arrival(arrived);
                match (released, lone) {
                    // This process released the lock last, as far as the notification
                    // knows: plan from the rows it left.
                    (Some(released), None) => Some(TakeLock::new(&owner, released)),
                    (Some(released), Some((_, _, marks))) if released.marks >= marks => {
                        Some(TakeLock::new(&owner, released))
                    }
                    // Another released it after: take from the count the attempt names.
                    (_, Some((order_num, attempt, marks))) => {
                        Some(TakeLock::lone(&owner, order_num, attempt, marks))
                    }
                    // Woken by its init trigger: the run's first step, most likely, to find
                    // a lock never made (see [`taking`]).
                    (None, None) => arrived
                        .contains(&init_trigger())
                        .then(|| TakeLock::new(&owner, taking::Release::never_taken(None))),
                }
            });
            let mut refused = None;
            if let (Some(arrived), Some(take)) = (&arrived, take) {
                let first = Step::Taking(arrived.clone(), &take);
                let outcome = (self.hold_and_advance(run_id, &owner, first, 0, Carry::Settled)).await;
                if take.taken().is_some() {
                    return self.given_back_after_error(run_id, &owner, outcome).await;
                }
                // Nothing written, nothing held: take the lock as usual.
                if let Err(error) = outcome {
                    tracing::debug!(%error, "the step taking the lock with its writes failed first");
                }
                refused = Some(take);
            }
            let first = match lock::acquire(self, run_id, &owner).await? {
                LockAttempt::Acquired { missed: false, marks } => {
                    let rows = refused.and_then(|take| take.planned_rows(marks));
                    (Step::First(arrived, rows), marks)
                }
                // A holder may have left results unread: look for all of them.
                LockAttempt::Acquired { missed: true, marks } => (Step::First(None, None), marks),
                LockAttempt::Deferred => return Ok(Outcome::Deferred),
                LockAttempt::Completed => return Ok(Outcome::AlreadyFinished),
            };
            let (first, marks) = first;
            let outcome = (self.hold_and_advance(run_id, &owner, first, marks, Carry::Settled)).await;
            self.given_back_after_error(run_id, &owner, outcome).await
        }
        .instrument(span)
        .await
    }

    /// `outcome` of holding the lock, which is given back after an error so the next event
    /// can retry at once rather than after the lease; the tables hold everything needed to
    /// resume.
    async fn given_back_after_error(
        &self,
        run_id: &RunId,
        owner: &str,
        outcome: Result<Outcome, EngineError>,
    ) -> Result<Outcome, EngineError> {
        if outcome.is_err()
            && let Err(release) = lock::abandon(self, run_id, owner).await
        {
            tracing::warn!(error = %release, "could not give back the lock after an error");
        }
        outcome
    }

    /// Moves `order` from the status it has in `order` with `change` (a conditional write);
    /// when it is no longer in that status, reads what it became instead.
    ///
    /// A failed condition is not always someone else's move: a write that timed out may have
    /// been applied, and the store's own retry of it then finds the condition failed (or
    /// the store reports the time-out). The row read back tells: when it already holds
    /// every field `change` sets (a fresh attempt id, a finish time), the move is ours.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub(crate) async fn move_order(
        &self,
        order: &OrderRecord,
        change: &Transition,
    ) -> Result<Moved, EngineError> {
        let store = &self.ports.orders;
        match store
            .transition(&order.run_id, order.plan.order_num, order.status, change)
            .await
        {
            Ok(updated) => Ok(Moved::Applied(updated)),
            Err(StoreError::ConditionFailed { .. }) => {
                let current = store.get_order(&order.run_id, order.plan.order_num).await?;
                if change.is_applied_in(&current) {
                    Ok(Moved::Applied(current))
                } else {
                    Ok(Moved::Lost(current))
                }
            }
            // The write may have landed though its answer was lost: the row tells.
            Err(error) if error.is_transient() => {
                match store.get_order(&order.run_id, order.plan.order_num).await {
                    Ok(current) if change.is_applied_in(&current) => Ok(Moved::Applied(current)),
                    _ => Err(error.into()),
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Ends a step: releases the lock, writing in the same call the `→ running` moves of
    /// the orders the step started and its events (before the lock goes: the next holder
    /// may finalize at once). When wake-ups arrived meanwhile (the count in `marks` grew),
    /// those are written apart and the step loops (`None`); when they cannot go with the
    /// release (too many, an order moved by someone else, an answer lost, a write refused),
    /// they are written apart — the events first, so a failing move loses none — and the
    /// lock released alone. `shown`, the run's rows with the started orders `running`, is
    /// left as the store holds them: a move written apart puts back the row it found.
    async fn release_step(
        &self,
        run_id: &RunId,
        owner: &str,
        marks: &mut u64,
        started: Vec<(OrderRecord, Transition)>,
        shown: &mut [OrderRecord],
    ) -> Result<Option<Outcome>, EngineError> {
        let writes = StepWrites {
            moves: started.iter().map(|(o, c)| OrderMove::of(o, c)).collect(),
            events: self.take_events(),
            ..StepWrites::default()
        };
        let together = !writes.is_empty() && writes.len() < MAX_MOVES_TOGETHER;
        let mut answered = None;
        if together {
            match (self.ports.orders)
                .release_lock(run_id, owner, *marks, &writes)
                .await
            {
                Ok(ReleaseOutcome::Released) => return Ok(Some(Outcome::Released)),
                Ok(ReleaseOutcome::Marked { marks: now }) => {
                    answered = Some(Release::Dirty { marks: now });
                }
                // An order moved by someone else, an answer lost, a write DynamoDB refuses
                // (too large): apart, each write says what stands.
                Err(error) => {
                    writing_apart(&error, "the step's writes, apart from the lock's release");
                }
            }
        }
        self.put_events(&writes.events).await;
        for moved in self.move_orders(started).await? {
            put_back(shown, moved.row());
        }
        let released = match answered {
            Some(release) => release,
            None => lock::release(self, run_id, owner, *marks).await?,
        };
        Ok(match released {
            Release::Released => Some(Outcome::Released),
            Release::Dirty { marks: now } => {
                *marks = now;
                None
            }
            Release::Lost => Some(Outcome::LostLock),
        })
    }

    /// Moves several orders, as [`Engine::move_order`] each, in as few writes as the store
    /// allows: [`MAX_MOVES_TOGETHER`] at a time, all or none. When a batch cannot be written
    /// whole (an order moved by someone else, a write whose answer was lost), its orders
    /// are moved one at a time, which tells whose move stands.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub(crate) async fn move_orders(
        &self,
        moves: Vec<(OrderRecord, Transition)>,
    ) -> Result<Vec<Moved>, EngineError> {
        let mut moved = Vec::with_capacity(moves.len());
        for batch in moves.chunks(MAX_MOVES_TOGETHER) {
            if let [(order, change)] = batch {
                moved.push(self.move_order(order, change).await?);
                continue;
            }
            let run_id = &batch[0].0.run_id; // chunks are never empty
            let together = StepWrites {
                moves: (batch.iter())
                    .map(|(order, change)| OrderMove::of(order, change))
                    .collect(),
                ..StepWrites::default()
            };
            match self
                .ports
                .orders
                .transition_together(run_id, &together)
                .await
            {
                Ok(()) => moved.extend(
                    (batch.iter()).map(|(order, change)| Moved::applied(order.clone(), change)),
                ),
                // One moved by someone else, an answer lost, a write refused whole: one at a
                // time, each says whose move stands (or fails for itself).
                Err(error) => {
                    writing_apart(&error, "orders' moves, one at a time");
                    for (order, change) in batch {
                        moved.push(self.move_order(order, change).await?);
                    }
                }
            }
        }
        Ok(moved)
    }

    /// Advances the run while keeping the lock's lease: a pass may take longer than the
    /// lease (thousands of results to apply, hundreds of orders to start). Should the lease
    /// be lost all the same, the pass stops where it is — as a crash would, which every step
    /// is written to survive — since another invocation owns the run now.
    ///
    /// A first step that takes the lock with its writes holds nothing until it took it
    /// (nor keeps a lease); when it did not, it ends there, and its caller takes the lock.
    async fn hold_and_advance(
        &self,
        run_id: &RunId,
        owner: &str,
        first: Step<'_>,
        marks: u64,
        carry: Carry,
    ) -> Result<Outcome, EngineError> {
        let take = first.take();
        tokio::select! {
            biased;
            outcome = self.advance_until_settled(run_id, owner, first, marks, carry) => outcome,
            () = self.keep_lease(run_id, owner, take) => {
                tracing::warn!("the lease was lost during the pass; another invocation took over");
                Ok(Outcome::LostLock)
            }
        }
    }

    /// Extends `owner`'s lease on the run's lock by a whole lease from now; returns the
    /// lock's wake-up count as the renewal left it.
    async fn renew_lease(&self, run_id: &RunId, owner: &str) -> Result<u64, StoreError> {
        let lease_until = self.now_ms() + millis(self.config.lock_lease);
        self.ports
            .orders
            .renew_lock(run_id, owner, lease_until)
            .await
    }

    /// Renews the lease every third of it for as long as it is polled — once `take` took
    /// the lock, when the step takes it with its writes; returns only once the lease is
    /// lost. A failed renewal is tried again at the next third.
    async fn keep_lease(&self, run_id: &RunId, owner: &str, take: Option<&TakeLock>) {
        let every = self.config.lock_lease / 3;
        loop {
            tokio::time::sleep(every).await;
            if take.is_some_and(|take| take.taken().is_none()) {
                continue;
            }
            match self.renew_lease(run_id, owner).await {
                Ok(_) => {}
                Err(StoreError::ConditionFailed { .. }) => return,
                Err(error) => tracing::warn!(%error, "renewing the lease failed; trying again"),
            }
        }
    }

    /// Loops one step at a time until the run is finalized or the lock released clean. A
    /// transient failure (throttling, a folder unwritable for a while) is retried after a
    /// backoff, from the tables, as a new event would: every step is safe to repeat. With
    /// [`Carry::OneStep`], a step that would loop gives the lock back instead, and a
    /// failure is not retried.
    async fn advance_until_settled(
        &self,
        run_id: &RunId,
        owner: &str,
        first: Step<'_>,
        mut marks: u64,
        carry: Carry,
    ) -> Result<Outcome, EngineError> {
        // The statuses the PR comment was last brought up to date with in this invocation.
        let mut commented: Option<Vec<sluice_contract::OrderStatus>> = None;
        let mut backoff = Backoff::new(PASS_RETRY_FIRST, PASS_RETRIES);
        let mut step = first;
        loop {
            let this = std::mem::replace(&mut step, Step::Later(None));
            let taking = this.take();
            let started_ms = self.now_ms();
            let mut left = None;
            let stepped = self
                .advance_once(run_id, owner, this, &mut marks, &mut commented, &mut left)
                .await;
            if let Some(take) = taking
                && take.taken().is_none()
            {
                // It wrote nothing and holds nothing (see [`Engine::hold_and_advance`]).
                take.refuse(&"the step ended first");
                return stepped.map(|_| Outcome::Deferred);
            }
            // What a step that failed had recorded; the timers of retries it decided.
            self.write_events().await;
            self.start_retry_timers().await;
            match stepped {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) if carry == Carry::OneStep => {
                    lock::abandon(self, run_id, owner).await?;
                    return Ok(Outcome::HandedOff);
                }
                Err(error) if carry == Carry::OneStep => return Err(error),
                Ok(None) => {
                    step = Step::Later(left);
                    backoff.reset(PASS_RETRIES);
                    // Results arrived during the step: let more gather, for as long as the
                    // step took (see [`MAX_STEP_PACE`]), so that a step reading a large
                    // run's rows applies many results rather than the few of its own time.
                    let took = Duration::from_millis(self.now_ms().saturating_sub(started_ms));
                    if !took.is_zero() {
                        self.ports.clock.sleep(took.min(MAX_STEP_PACE)).await;
                    }
                }
                Err(error) if error.kind() == ErrorKind::Transient => {
                    let Some(delay) = backoff.next_delay(self.ports.clock.as_ref()) else {
                        return Err(error);
                    };
                    tracing::warn!(%error, ?delay, "transient failure in an orchestrator pass; retrying");
                    self.ports.clock.sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One step: renew the lease (not in the first step, which has just taken the lock or
    /// takes it with its first writes), read,
    /// evaluate and dispatch, finalize or release. `None` when an event arrived meanwhile
    /// and the loop must go round again, the rows as the step left them in `left`.
    async fn advance_once(
        &self,
        run_id: &RunId,
        owner: &str,
        step: Step<'_>,
        marks: &mut u64,
        commented: &mut Option<Vec<sluice_contract::OrderStatus>>,
        left: &mut Option<taking::KeptRows>,
    ) -> Result<Option<Outcome>, EngineError> {
        // Woken by the run's watch, or taking over from a holder whose lease ended: the
        // timers of retries decided before may have been lost with a crashed holder.
        let rearm_timers = matches!(step, Step::First(None, _));
        let (arrived, take, kept) = match step {
            Step::First(arrived, rows) => (arrived, None, rows),
            Step::Taking(arrived, take) => (Some(arrived), Some(take), take.rows_as_released()),
            Step::Later(rows) => {
                match self.renew_lease(run_id, owner).await {
                    // This step looks for every result that arrived: the wake-ups counted
                    // until now are its own, and only a later one must make it loop again.
                    // (Counts only grow: an answer below what was seen is no reason to
                    // forget a wake-up.)
                    Ok(now) => *marks = (*marks).max(now),
                    Err(StoreError::ConditionFailed { .. }) => {
                        tracing::warn!("lease expired while working; another invocation took over");
                        return Ok(Some(Outcome::LostLock));
                    }
                    Err(other) => return Err(other.into()),
                }
                (None, None, rows)
            }
        };
        // Rows kept from before, unless a write without the lock may have changed them (not
        // rows a take is to insert: none are stored yet); else read now.
        let inserting = take.is_some_and(|take| take.inserted_events().is_some());
        let kept = kept.and_then(|kept| match inserting {
            true => Some(kept),
            false => self.last_releases.fresh(kept),
        });
        let generation =
            (kept.as_ref()).map_or_else(|| self.last_releases.generation(), |k| k.generation);
        let rows = kept.map(|kept| kept.rows);
        let (orders, results) = (self.read_results(run_id, arrived.as_ref(), take, rows)).await?;
        // The lock's count the step holds, or will once its first write takes the lock.
        let holding = take.map_or(*marks, |take| take.released_marks + 1);
        if orders.is_empty() {
            return Err(EngineError::UnknownRun(run_id.to_string()));
        }
        if rearm_timers {
            // Starting a timer again is harmless: one execution per name.
            let now = self.now_ms();
            (orders.iter())
                .filter(|o| o.retry_waits(now))
                .for_each(|o| self.schedule_retry_timer(o));
        }
        let dispatch::Applied {
            orders,
            started,
            closed,
        } = (self.apply_plan(orders, results, take, holding)).await?;
        if let Some(take) = take {
            match take.taken() {
                Some(taken) => *marks = taken,
                None => {
                    let rows = orders;
                    take.keep_planned_rows(taking::KeptRows { rows, generation });
                    return Ok(None);
                }
            }
        }
        if let Some(status) = (self.finalize_if_done(run_id, owner, &orders, closed)).await? {
            return Ok(Some(Outcome::Finalized(status)));
        }
        // The comment shows the orders started as running, as the release will write them.
        let mut shown = orders;
        for (order, change) in &started {
            put_back(&mut shown, Moved::applied(order.clone(), change).row());
        }
        let statuses: Vec<_> = shown.iter().map(|o| o.status).collect();
        if commented.as_ref() != Some(&statuses) {
            self.update_pr_comment(&shown, None).await;
            *commented = Some(statuses);
        }
        let in_flight = (shown.iter())
            .filter(|o| matches!(o.status, OrderStatus::Dispatching | OrderStatus::Running))
            .count();
        let released = (self.release_step(run_id, owner, marks, started, &mut shown)).await?;
        match released {
            // Its result most likely wakes the run next, finding the lock and the rows as
            // they are left.
            Some(Outcome::Released) if in_flight == 1 => {
                let rows = taking::KeptRows {
                    rows: shown,
                    generation,
                };
                let release = taking::Release {
                    marks: *marks,
                    rows: Some(rows),
                };
                self.last_releases.remember(run_id, release);
            }
            // The lock is still held: the next step starts from these rows.
            None => {
                *left = Some(taking::KeptRows {
                    rows: shown,
                    generation,
                });
            }
            Some(_) => {}
        }
        Ok(released)
    }
}
