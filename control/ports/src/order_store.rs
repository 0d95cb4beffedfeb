//! The tables: orders, order_events and locks (DynamoDB on AWS, SQLite locally).
//!
//! Every status change is a conditional write from the expected previous status, and every
//! lock operation is a conditional write on the lock row; the orchestrator's correctness
//! (no lost wake-ups, no double dispatch, finalize once) rests on these conditions alone.

use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_contract::dispatch::PinnedRange;
use sluice_contract::result::AttemptRecord;
use sluice_contract::validate::PullRequest;
use sluice_contract::{
    AttemptId, OrderNum, OrderPlan, OrderStatus, RunId, SandboxSpec, TraceId, keys,
};

use crate::StoreError;

/// One row of the orders table (pk `<run_id>:<order_num>`). Holds no logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// The run.
    pub run_id: RunId,
    /// The order as validated; its fields are the row's own attributes.
    #[serde(flatten)]
    pub plan: OrderPlan,
    /// The run's trace id.
    pub trace_id: TraceId,
    /// The run's flow id.
    pub flow_id: String,
    /// When the job was initialised, ms since the epoch.
    pub created_at_ms: u64,
    /// When the job times out, ms since the epoch.
    pub job_deadline_ms: u64,
    /// Where the worker fetches the order's private key.
    pub key_path: String,
    /// Where the full log will be stored (see `log_stored`).
    pub log_key: String,
    /// Whether the worker stored the order's log at `log_key`, as the result that ended it
    /// said (`None` until a worker's result did, or when it did not say): on AWS a log its
    /// result holds whole is only there (`Some(false)`), and the result
    /// (`sluice_contract::keys::result`) is where to read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_stored: Option<bool>,
    /// Current status.
    pub status: OrderStatus,
    /// The current dispatch attempt.
    #[serde(default)]
    pub attempt: Option<AttemptId>,
    /// When the current attempt was dispatched, ms since the epoch.
    #[serde(default)]
    pub dispatched_at_ms: Option<u64>,
    /// When the order reached a terminal status, ms since the epoch.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// How long it ran.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Exit code of its last command.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it ended as it did.
    #[serde(default)]
    pub reason: Option<String>,
    /// The attempts that ended and were followed by a retry, in order (the current
    /// attempt is number `attempts.len() + 1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
    /// A queued order waiting to be retried: not dispatched before this, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<u64>,
    /// Where the outputs its order published are stored, when the result that ended it
    /// said it published some (`sluice_contract::keys::outputs` of that attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_key: Option<String>,
    /// The pull request whose comment follows the run (the same on every row of a run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<PullRequest>,
    /// A WebAssembly order on AWS: what names the code the compile function makes for its
    /// run's workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled: Option<CompiledModule>,
    /// Where the order's bundle is when it is in one of its run's packs (on AWS, small
    /// bundles are stored together: one PUT for many orders); `None`: alone, at
    /// `sluice_contract::keys::exec_zip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packed: Option<PackedBundle>,
    /// The run this one runs again (`sluice rerun`), when it is a rerun (the same on every
    /// row of a run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<RunId>,
    /// An order not run again by `sluice rerun --failed`: the run in which it succeeded,
    /// whose log and outputs it keeps. Inserted `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<RunId>,
    /// What the sandbox its commands ran in granted, as the result that ended it said
    /// (`None`: unsandboxed, or not run). Not `sandbox`, which is its plan's grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_sandboxed: Option<SandboxSpec>,
}

/// Where an order's bundle is among its run's packs of bundles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedBundle {
    /// Which pack (`sluice_contract::keys::bundle_pack`).
    pub pack: u32,
    /// The bundle's bytes in it, and the pack's entity tag.
    pub range: PinnedRange,
}

/// What names the code compiled from a WebAssembly order's module, which the compile
/// function makes for the run's workers (`sluice_contract::keys::compiled_code`): set by
/// init_job from the module it packaged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledModule {
    /// The sha256 (hex) of the module in the order's bundle.
    pub module_sha256: String,
    /// Whether the order's engine meters fuel (its code differs).
    pub metered: bool,
}

impl OrderRecord {
    /// Where the result of its current attempt is: under its run, or, for an order a
    /// rerun reused, under the run it ran in.
    pub fn result_key(&self) -> Option<String> {
        let run = self.reused_from.as_ref().unwrap_or(&self.run_id);
        (self.attempt.as_ref()).map(|attempt| keys::result(run, self.plan.order_num, attempt))
    }

    /// The table's primary key, `<run_id>:<order_num>`.
    pub fn pk(&self) -> String {
        order_pk(&self.run_id, self.plan.order_num)
    }

    /// For an order queued again for a retry and not dispatched since: the attempt that
    /// ended, and when the retry may start. (`retry_at_ms` stays in the row after the
    /// retry is dispatched, and an order `sluice resume` queued again is not waiting for a
    /// retry: its attempt is not the last ended one.)
    pub fn awaiting_retry(&self) -> Option<(&AttemptRecord, u64)> {
        let ended = self.last_attempt_recorded()?;
        let retry_at_ms = self
            .retry_at_ms
            .filter(|_| self.status == OrderStatus::Queued)?;
        Some((ended, retry_at_ms))
    }

    /// Whether the order waits for a retry that may not start before `now_ms`.
    pub fn retry_waits(&self, now_ms: u64) -> bool {
        self.awaiting_retry().is_some_and(|(_, at)| at > now_ms)
    }

    /// The current attempt's record, when the attempt is recorded already: the order ended
    /// it and has not been dispatched since (it waits for a retry, or was ended while it
    /// waited: by the job's deadline, by a stop).
    pub fn last_attempt_recorded(&self) -> Option<&AttemptRecord> {
        (self.attempts.last()).filter(|ended| self.attempt.as_ref() == Some(&ended.attempt))
    }
}

/// The primary key of an order row.
pub fn order_pk(run_id: &RunId, order_num: OrderNum) -> String {
    format!("{run_id}:{order_num}")
}

/// A status change and the fields it sets (fields left `None` keep their value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new status.
    pub to: OrderStatus,
    /// Sets `attempt`.
    pub attempt: Option<AttemptId>,
    /// Sets `dispatched_at_ms`.
    pub dispatched_at_ms: Option<u64>,
    /// Sets `finished_at_ms`.
    pub finished_at_ms: Option<u64>,
    /// Sets `duration_ms`.
    pub duration_ms: Option<u64>,
    /// Sets `exit_code`.
    pub exit_code: Option<i32>,
    /// Sets `reason`.
    pub reason: Option<String>,
    /// Sets `log_stored`.
    pub log_stored: Option<bool>,
    /// Sets `log_key`: where the next attempt's log goes (a retry).
    pub log_key: Option<String>,
    /// Sets `retry_at_ms` (a retry).
    pub retry_at_ms: Option<u64>,
    /// Appends to `attempts` the attempt that ended (a retry).
    pub ended_attempt: Option<AttemptRecord>,
    /// Sets `outputs_key`.
    pub outputs_key: Option<String>,
    /// Sets `ran_sandboxed` (a change that sets `attempt`, a new attempt's dispatch, clears
    /// it: that attempt has not run yet).
    pub ran_sandboxed: Option<SandboxSpec>,
}

impl Transition {
    /// A change to `status` that sets nothing else.
    pub fn to(status: OrderStatus) -> Self {
        Transition {
            to: status,
            attempt: None,
            dispatched_at_ms: None,
            finished_at_ms: None,
            duration_ms: None,
            exit_code: None,
            reason: None,
            log_stored: None,
            log_key: None,
            retry_at_ms: None,
            ended_attempt: None,
            outputs_key: None,
            ran_sandboxed: None,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Refuses a change the status table does not allow from `from` (every store checks
    /// this before writing anything).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] naming the order and the refused change.
    pub fn check_allowed(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        from: OrderStatus,
    ) -> Result<(), StoreError> {
        if from.can_become(self.to) {
            Ok(())
        } else {
            Err(StoreError::Backend {
                what: format!("order {run_id}:{order_num}"),
                message: format!("{from} -> {} is not an allowed transition", self.to),
            })
        }
    }

    /// Whether `record` already holds this change: its status and every field the change
    /// sets. A change that sets a value nobody else writes (a fresh attempt id, a time)
    /// is then known to be this writer's own, applied by a write whose answer was lost.
    pub fn is_applied_in(&self, record: &OrderRecord) -> bool {
        let mut expected = record.clone();
        self.apply(&mut expected);
        expected == *record
    }

    /// Applies the change to a record (the store has checked the condition).
    pub fn apply(&self, record: &mut OrderRecord) {
        record.status = self.to;
        let fields = [
            (&self.dispatched_at_ms, &mut record.dispatched_at_ms),
            (&self.finished_at_ms, &mut record.finished_at_ms),
            (&self.duration_ms, &mut record.duration_ms),
        ];
        for (new, old) in fields {
            if new.is_some() {
                *old = *new;
            }
        }
        if self.attempt.is_some() {
            record.attempt.clone_from(&self.attempt);
            record.ran_sandboxed = None;
        }
        if self.exit_code.is_some() {
            record.exit_code = self.exit_code;
        }
        if self.reason.is_some() {
            record.reason.clone_from(&self.reason);
        }
        if self.log_stored.is_some() {
            record.log_stored = self.log_stored;
        }
        if let Some(log_key) = &self.log_key {
            record.log_key.clone_from(log_key);
        }
        if self.retry_at_ms.is_some() {
            record.retry_at_ms = self.retry_at_ms;
        }
        if self.outputs_key.is_some() {
            record.outputs_key.clone_from(&self.outputs_key);
        }
        if self.ran_sandboxed.is_some() {
            record.ran_sandboxed.clone_from(&self.ran_sandboxed);
        }
        // Appended once: a change applied again (a write whose answer was lost, checked)
        // finds its attempt there already.
        if let Some(ended) = &self.ended_attempt
            && record.attempts.last() != Some(ended)
        {
            record.attempts.push(ended.clone());
        }
    }
}

/// The most moves and events one [`OrderStore::transition_together`] takes, and items one
/// transaction holds in all (DynamoDB's limit).
pub const MAX_MOVES_TOGETHER: usize = 100;

/// One order's change in [`OrderStore::transition_together`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderMove {
    /// The order.
    pub order_num: OrderNum,
    /// The status it must be in.
    pub from: OrderStatus,
    /// The change.
    pub change: Transition,
}

impl OrderMove {
    /// `change` of `order`, from the status it has in `order`.
    pub fn of(order: &OrderRecord, change: &Transition) -> Self {
        OrderMove {
            order_num: order.plan.order_num,
            from: order.status,
            change: change.clone(),
        }
    }
}

/// One row of order_events (pk `trace_id`, sk `<order_name>:<epoch_ms>:<event>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// The run's trace id.
    pub trace_id: TraceId,
    /// The order's name, or `_job` for job-level events.
    pub order_name: String,
    /// When it happened, ms since the epoch.
    pub epoch_ms: u64,
    /// What happened (`started`, `dispatched`, `succeeded`, `completed`...).
    pub event: String,
    /// The run.
    pub run_id: RunId,
    /// Free-form details (status, reason, attempt...).
    pub detail: serde_json::Value,
}

impl OrderEvent {
    /// The order_name used for job-level events.
    pub const JOB: &'static str = "_job";

    /// The sort key, `<order_name>:<epoch_ms>:<event>`.
    pub fn sk(&self) -> String {
        format!("{}:{}:{}", self.order_name, self.epoch_ms, self.event)
    }
}

/// What [`OrderStore::acquire_lock`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// The caller holds the lock now. `missed`: it was taken over from a holder (whose lease
    /// ended, or the caller's own earlier acquire), so results may have arrived that no
    /// pass has read (the caller then looks for them all rather than trusting its own
    /// notification). `marks`: the lock's wake-up count as the caller took it, which its
    /// release compares against.
    Acquired {
        /// Whether wake-ups may have been missed.
        missed: bool,
        /// The wake-up count the caller has accounted for.
        marks: u64,
    },
    /// Another owner holds it with a live lease; the caller's wake-up was counted on the
    /// lock, so that holder goes round once more before it releases.
    Marked,
    /// The run was finalized; there is nothing left to do.
    Completed,
}

/// Writes a step makes together: with its release ([`OrderStore::release_lock`]) its
/// orders' last status changes (those it started become `running`) and its events; with
/// its first status changes ([`OrderStore::transition_together`],
/// [`OrderStore::take_lock_with`]) the events of a run's end; with the taking of a run's
/// lock never made, in init-job, the run's rows themselves, as its first claims leave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepWrites {
    /// Rows inserted, each only where no row with its key exists.
    pub inserts: Vec<OrderRecord>,
    /// Status changes, each conditional on its order's status.
    pub moves: Vec<OrderMove>,
    /// Events (each replacing one with the same key).
    pub events: Vec<OrderEvent>,
}

impl StepWrites {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.moves.is_empty() && self.events.is_empty()
    }

    /// How many items the writes are: rows inserted, moves and events.
    pub fn len(&self) -> usize {
        self.inserts.len() + self.moves.len() + self.events.len()
    }

    /// Checks that the statuses allow every move of `run_id`'s orders (see
    /// [`Transition::check_allowed`]).
    ///
    /// # Errors
    ///
    /// As [`Transition::check_allowed`], for the first move refused.
    pub fn check_allowed(&self, run_id: &RunId) -> Result<(), StoreError> {
        (self.moves.iter()).try_for_each(|m| m.change.check_allowed(run_id, m.order_num, m.from))
    }
}

/// What [`OrderStore::release_lock`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Released: no wake-up arrived since the holder last accounted for them.
    Released,
    /// Wake-ups arrived meanwhile; still held. `marks` is the count now: the holder looks
    /// for results again and releases with it.
    Marked {
        /// The lock's wake-up count now.
        marks: u64,
    },
}

/// Where a run's lock is in its life: taken and given back any number of times, then
/// completed for good when the run is finalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockStatus {
    /// An orchestrator pass holds it until its lease ends.
    Held,
    /// Nobody holds it: the next event's pass may take it.
    Released,
    /// The run was finalized: nobody takes it again.
    Completed,
}

impl LockStatus {
    /// The status as the tables store it.
    pub fn as_str(self) -> &'static str {
        match self {
            LockStatus::Held => "held",
            LockStatus::Released => "released",
            LockStatus::Completed => "completed",
        }
    }

    /// The status a table stored, `None` for any other text.
    pub fn parse(text: &str) -> Option<Self> {
        [
            LockStatus::Held,
            LockStatus::Released,
            LockStatus::Completed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

impl std::fmt::Display for LockStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lock row, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    /// Current owner.
    pub owner: String,
    /// Where the lock is in its life.
    pub status: LockStatus,
    /// When the holder's lease ends, ms since the epoch.
    pub lease_until_ms: u64,
    /// How many wake-ups were counted on it (each acquire or mark adds one).
    pub marks: u64,
}

impl LockState {
    /// Whether the run was finalized (the lock is `completed` for good).
    pub fn is_completed(&self) -> bool {
        self.status == LockStatus::Completed
    }
}

/// The three tables.
#[async_trait]
pub trait OrderStore: Send + Sync + Debug {
    /// Inserts a run's orders, all or none, and records `events` (the run's first) with
    /// the last of the rows' writes where they fit in it (DynamoDB: one transaction of at
    /// most [`MAX_MOVES_TOGETHER`] items), else right after: a run's start costs no write
    /// of its own.
    ///
    /// # Errors
    ///
    /// [`StoreError::ConditionFailed`] when a row with one of the keys exists (nothing
    /// written); a failure writing `events` apart once the rows are in.
    async fn insert_orders(
        &self,
        orders: &[OrderRecord],
        events: &[OrderEvent],
    ) -> Result<(), StoreError>;

    /// Every order of a run, by order number (all pages).
    async fn run_orders(&self, run_id: &RunId) -> Result<Vec<OrderRecord>, StoreError>;

    /// One order.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is no such order.
    async fn get_order(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
    ) -> Result<OrderRecord, StoreError>;

    /// Changes an order's status if, and only if, it is `from` now; returns the new row.
    ///
    /// # Errors
    ///
    /// [`StoreError::ConditionFailed`] when the order is not in `from`;
    /// [`StoreError::NotFound`] when it does not exist.
    async fn transition(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        from: OrderStatus,
        change: &Transition,
    ) -> Result<OrderRecord, StoreError>;

    /// Changes several orders of one run at once, each if, and only if, it is in its `from`
    /// now, and records `writes.events` with them: all or none (DynamoDB: one
    /// `TransactWriteItems`). At most [`MAX_MOVES_TOGETHER`] moves and events. The new rows
    /// are the old ones with each change applied ([`Transition::apply`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::ConditionFailed`] when any order is not in its `from` (nothing
    /// written); [`StoreError::NotFound`] when one does not exist.
    async fn transition_together(
        &self,
        run_id: &RunId,
        writes: &StepWrites,
    ) -> Result<(), StoreError>;

    /// Records events (each replacing one with the same key), in as few calls as the
    /// backend allows (DynamoDB: one per 25). Not atomic: after an error some may be
    /// recorded; recording them again is harmless.
    async fn put_events(&self, events: &[OrderEvent]) -> Result<(), StoreError>;

    /// Every event of a trace, by sort key.
    async fn trace_events(&self, trace_id: &TraceId) -> Result<Vec<OrderEvent>, StoreError>;

    /// Takes `lock:<run_id>` for `owner` if it is absent, released, held with a lease that
    /// ended before `now_ms`, or held by `owner` already (an acquire tried again after its
    /// answer was lost); otherwise counts the caller's wake-up on it (the holder's release
    /// then fails, and it looks again). Acquiring and marking are one decision: DynamoDB
    /// makes it in one call, and a second only to take over an ended lease.
    async fn acquire_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<AcquireOutcome, StoreError>;

    /// Takes `lock:<run_id>` for `owner` if it is released with `released_marks` wake-ups
    /// counted — nobody has taken it since the release that left that count, so nothing was
    /// written under it since — or, with `released_marks` 0, if it was never made (nobody
    /// has ever taken it: a run's first step); counting one more, and in the same
    /// all-or-none write makes `writes`: a step's first moves (and events), planned from
    /// rows read without the lock — or, in a run's first step taken by init-job, the run's
    /// rows themselves, inserted as its claims leave them (DynamoDB: one
    /// `TransactWriteItems`, at most [`MAX_MOVES_TOGETHER`] items in all). Returns the
    /// wake-up count the caller has accounted for (`released_marks + 1`), which its
    /// release compares against.
    ///
    /// # Errors
    ///
    /// [`StoreError::ConditionFailed`] when the lock is not released with that count (taken
    /// since, held, completed, or never made while the count is not 0), an order of
    /// `writes` is not in its `from`, or a row it inserts exists: nothing written either
    /// way.
    async fn take_lock_with(
        &self,
        run_id: &RunId,
        owner: &str,
        released_marks: u64,
        lease_until_ms: u64,
        writes: &StepWrites,
    ) -> Result<u64, StoreError>;

    /// Extends the holder's lease; sets it to `0` to give the lock back after an error
    /// (a lease set to `0` is never extended again). Returns the lock's wake-up count as
    /// the renewal left it: a step that renews and then looks for every result has
    /// accounted for the wake-ups counted so far, and releases against this count.
    ///
    /// # Errors
    ///
    /// [`StoreError::ConditionFailed`] when `owner` no longer holds the lock.
    async fn renew_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        lease_until_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Releases the lock if `owner` holds it and its wake-up count is still `seen_marks`,
    /// and in the same all-or-none write makes the step's last `writes` (DynamoDB: one
    /// `UpdateItem`, or one `TransactWriteItems` with writes, at most
    /// [`MAX_MOVES_TOGETHER`] items in all). When the count grew, nothing is written and the
    /// answer says what the count is now.
    ///
    /// # Errors
    ///
    /// [`StoreError::ConditionFailed`] when `owner` no longer holds the lock, or when an order
    /// of `writes` is not in its `from` (nothing written either way).
    async fn release_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        seen_marks: u64,
        writes: &StepWrites,
    ) -> Result<ReleaseOutcome, StoreError>;

    /// Marks the run finalized: the lock becomes `completed` for good.
    ///
    /// # Errors
    ///
    /// [`StoreError::ConditionFailed`] when `owner` no longer holds it.
    async fn complete_lock(&self, run_id: &RunId, owner: &str) -> Result<(), StoreError>;

    /// The lock row, if any.
    async fn lock_state(&self, run_id: &RunId) -> Result<Option<LockState>, StoreError>;
}
