//! Taking a run's lock with a step's first writes rather than before its reads: a call less
//! per hop of a chain.
//!
//! A warm process remembers the runs whose lock it last released with one order in flight,
//! the lock's wake-up count then, and the run's rows as that release left them
//! ([`LastReleases`]). The next notification of such a run most likely names that order's
//! result and finds the lock as it was left: its step plans from those rows and the result
//! (read without the lock), and writes the result and the moves it leads to in one
//! all-or-none write that also takes the lock, on the condition that the lock is still
//! released with that count ([`OrderStore::take_lock_with`](crate::OrderStore::take_lock_with)).
//! Every acquire adds one to the count, so an equal count means nobody held the lock since
//! that release and no step wrote the rows since: reading them again would be a call per
//! hop for nothing. Only a write made without the lock — a cancel's, and the results it
//! applies — may have moved orders since; every move the step plans is conditional on the
//! order's status, the in-flight order's result among them, so its write is refused when an
//! order it moves was moved meanwhile. Memory can only lag the store for orders the step
//! does not move (a queued order a cancel has already cancelled), as rows read just before
//! the take could: finalize waits for every row to end, and a cancel in progress cancels
//! what a step starts. A take whose answer was lost is told by the lock: held by the step's
//! owner, it was made. From the taking on, the step is an ordinary one under the lock (its
//! launches, PR comment and events are ordered before any finalize, as every step's).
//!
//! A run's first step, woken by its init trigger, takes the lock from a count of 0: a lock
//! never made, so never taken, and nothing written under it since init-job wrote the rows
//! (which the step reads without the lock). Its claims and the lock's making are one write.
//! When init-job takes that step itself, the rows are not written yet: the step inserts
//! them, as its claims leave them, with the run's `started` event, in the write that makes
//! the lock ([`TakeLock::inserting`]) — the rows and the first claims are one write.
//!
//! An orchestrator that has not seen the run (a fresh process, or another than the one
//! that released the lock: on AWS, where Lambda spreads invocations over its instances,
//! often) learns the count from the notification itself: a step that leaves one order in
//! flight, the one it claims, names its attempt after the lock's count it holds
//! ([`lone_attempt`]: `<random>-l<count>`), and the result's key carries the attempt. The
//! step that the result wakes reads the rows, and takes the lock from that count with its
//! writes — but only when the rows show that order `running` with that attempt
//! ([`TakeLock::lone`]). That move is written with the release of that count (or apart,
//! when the step looped — and then released with a higher count, so the take's condition
//! fails), so rows that show it were read after it, and the take's condition says nobody
//! took the lock since that release. What may still be written after the move under the
//! same count — the same step tried again after a transient failure, which moves that
//! order by its result, or a cancel, without the lock — moves that order too, and the
//! take's own move of it, conditional on `running`, is refused. Rows read before the move
//! (the result landed before the release: the order is still `dispatching`) refuse the
//! take; a lone take's rows, refused for any reason, are not planned from again. The count
//! is the orchestrator's own word: a worker cannot change the key its result goes to (its
//! presigned URL names it), and a count that is wrong only fails the take's condition.
//!
//! When anything says otherwise — the count moved (another invocation, the watch), a row
//! is not as read, a result must be recorded first, the job's deadline passed, the moves do
//! not fit one write — the step writes nothing ([`TakeLock::refuse`]) and the invocation
//! takes the lock as usual: a stale memory costs one refused write, never a wrong one. When
//! the step was refused before it wrote, and that acquire counts one more than the release
//! the step started from, nobody took the lock in between: the invocation plans from the
//! rows the step had ([`TakeLock::planned_rows`]) rather than reading them again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use sluice_contract::{AttemptId, OrderNum, OrderStatus, RunId};

use super::Arrivals;
use crate::ports::{OrderEvent, OrderRecord};

/// What separates a lone attempt's random part from the lock's count in its id.
const LONE_MARK: &str = "-l";

/// A fresh attempt id for the one order in flight a step leaves, dispatched under the
/// lock's count `marks`: `<32 hex>-l<marks>` (see the module docs).
pub(crate) fn lone_attempt(marks: u64) -> AttemptId {
    let random = uuid::Uuid::new_v4().simple();
    AttemptId::parse(&format!("{random}{LONE_MARK}{marks}")).expect("hex, `-l` and digits")
}

/// The one result `arrived` names, when its attempt is a lone one (see [`lone_attempt`]):
/// its order, its attempt and the lock's count it was dispatched under.
pub(crate) fn lone_arrival(arrived: &Arrivals) -> Option<(OrderNum, AttemptId, u64)> {
    let mut arrivals = arrived.iter();
    let (order_num, attempt) = arrivals.next()?;
    let marks = lone_count(attempt)?;
    arrivals
        .next()
        .is_none()
        .then(|| (*order_num, attempt.clone(), marks))
}

/// The lock's count a lone attempt (see [`lone_attempt`]) was dispatched under; `None` for
/// any other attempt id.
fn lone_count(attempt: &AttemptId) -> Option<u64> {
    let (random, marks) = attempt.as_str().split_once(LONE_MARK)?;
    let hex = random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !marks.is_empty() && marks.bytes().all(|b| b.is_ascii_digit());
    (hex && digits).then(|| marks.parse().ok()).flatten()
}

/// A run's rows as a step left them, to plan a later step from instead of reading them
/// again, and which of this process's writes without the lock they may miss (see
/// [`LastReleases::rows_written_apart`]).
#[derive(Debug)]
pub(crate) struct KeptRows {
    pub rows: Vec<OrderRecord>,
    /// [`LastReleases::generation`] when the rows were read from the store.
    pub generation: u64,
}

/// What a release of a run's lock by this process left.
#[derive(Debug)]
pub(crate) struct Release {
    /// The lock's wake-up count.
    pub marks: u64,
    /// The run's rows as the step that released it left them; `None` when they are not
    /// kept (more than the memory allows).
    pub rows: Option<KeptRows>,
}

impl Release {
    /// The "release" a lock never made stands for — nobody has taken it (every acquire
    /// counts one) — with the run's rows as init-job wrote them, when at hand.
    pub(crate) fn never_taken(rows: Option<KeptRows>) -> Self {
        Release { marks: 0, rows }
    }

    /// About how much memory the rows take, bytes.
    fn rows_bytes(&self) -> usize {
        (self.rows.as_ref()).map_or(0, |kept| kept.rows.iter().map(row_bytes).sum())
    }
}

/// About how much memory `row` takes, bytes: its own size and its longer strings and lists
/// (a worker's reason may be long).
fn row_bytes(row: &OrderRecord) -> usize {
    let strings = [
        &row.key_path,
        &row.log_key,
        &row.flow_id,
        &row.plan.order_name,
    ];
    std::mem::size_of::<OrderRecord>()
        + strings.iter().map(|s| s.len()).sum::<usize>()
        + row.reason.as_ref().map_or(0, String::len)
        + row.plan.depends_on.len() * std::mem::size_of::<sluice_contract::OrderNum>()
        + row.plan.condition.as_ref().map_or(0, condition_bytes)
        + (row.attempts.iter())
            .map(|a| {
                std::mem::size_of_val(a)
                    + a.reason.as_ref().map_or(0, String::len)
                    + a.log_key.as_ref().map_or(0, String::len)
            })
            .sum::<usize>()
}

/// About how much memory a condition takes: its text, and its tree (a node of a few words
/// for each term and operator, each a few characters of the text at least).
fn condition_bytes(condition: &sluice_contract::condition::Condition) -> usize {
    condition.text.len() * 8
}

/// The runs this process released the lock of with one order in flight, and what each
/// release left (at most [`LastReleases::RUNS`] runs, newest last; rows of at most
/// [`LastReleases::ROW_BYTES`] in all, the oldest runs' dropped first); and whether rows
/// kept by this process's steps are still fresh.
#[derive(Debug, Default)]
pub(crate) struct LastReleases {
    /// Each with about how much memory its rows take (0 when not kept), counted once.
    runs: Mutex<VecDeque<(RunId, Release, usize)>>,
    /// How many times this process wrote rows without the lock (a cancel).
    written_apart: AtomicU64,
}

impl LastReleases {
    /// How many runs are remembered.
    const RUNS: usize = 256;
    /// How much memory the rows remembered take at most, bytes: a run whose rows go is
    /// read again at its next hop, and still takes the lock with its writes.
    const ROW_BYTES: usize = 8 << 20;

    fn runs(&self) -> MutexGuard<'_, VecDeque<(RunId, Release, usize)>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers that this process released `run_id`'s lock as `release` says (or as a
    /// later release with a higher count said, when another of its invocations released it
    /// later and remembered first).
    pub(crate) fn remember(&self, run_id: &RunId, mut release: Release) {
        let mut bytes = release.rows_bytes();
        if bytes > Self::ROW_BYTES {
            (release.rows, bytes) = (None, 0);
        }
        let mut runs = self.runs();
        if let Some(index) = runs.iter().position(|(run, ..)| run == run_id)
            && let Some((_, later, later_bytes)) = runs.remove(index)
            && later.marks > release.marks
        {
            (release, bytes) = (later, later_bytes);
        }
        runs.push_back((run_id.clone(), release, bytes));
        if runs.len() > Self::RUNS {
            runs.pop_front();
        }
        let mut total: usize = runs.iter().map(|(.., bytes)| bytes).sum();
        for (_, release, bytes) in runs.iter_mut() {
            if total <= Self::ROW_BYTES {
                break;
            }
            total -= *bytes;
            (release.rows, *bytes) = (None, 0);
        }
    }

    /// Counts a write of rows this process made without the lock (a cancel, which moves
    /// orders no step moves after it, so nothing refuses a plan from rows kept before),
    /// once it is written: rows read before are not planned from again.
    pub(crate) fn rows_written_apart(&self) {
        self.written_apart.fetch_add(1, Ordering::SeqCst);
    }

    /// The count of [`LastReleases::rows_written_apart`], to tell rows read now by.
    pub(crate) fn generation(&self) -> u64 {
        self.written_apart.load(Ordering::SeqCst)
    }

    /// `kept`, unless this process wrote rows without the lock since they were read.
    pub(crate) fn fresh(&self, kept: KeptRows) -> Option<KeptRows> {
        (kept.generation == self.generation()).then_some(kept)
    }

    /// What this process's last release of `run_id`'s lock left, forgotten as it is told:
    /// whatever the invocation asking does next moves the count or leaves it to be
    /// remembered again.
    pub(crate) fn take(&self, run_id: &RunId) -> Option<Release> {
        let mut runs = self.runs();
        let index = runs.iter().position(|(run, ..)| run == run_id)?;
        runs.remove(index).map(|(_, release, _)| release)
    }
}

/// Where a step that takes the lock with its first writes is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taking {
    /// Nothing written yet.
    Pending,
    /// Taken; the wake-up count the step has accounted for.
    Taken(u64),
    /// Not taken, nothing written: the invocation takes the lock as usual. `planned` when
    /// the step was refused before it wrote (rather than by its write's condition), so the
    /// rows it planned from are as it read them.
    Refused { planned: bool },
}

/// A step's taking of the lock with its first writes, for `owner`, from the release that
/// left `released_marks` (and the rows it left, which the step plans from).
#[derive(Debug)]
pub(crate) struct TakeLock {
    pub(crate) owner: String,
    pub(crate) released_marks: u64,
    /// `Some` when the rows are not written yet: the events written with them.
    inserting: Option<Vec<OrderEvent>>,
    /// `Some` when the count comes from a lone attempt's id: the order and attempt the rows
    /// read must show `running` for the take to go on (see the module docs).
    lone: Option<(OrderNum, AttemptId)>,
    rows: Mutex<Option<KeptRows>>,
    state: Mutex<Taking>,
}

impl TakeLock {
    pub(crate) fn new(owner: &str, released: Release) -> Self {
        TakeLock {
            owner: owner.to_owned(),
            released_marks: released.marks,
            inserting: None,
            lone: None,
            rows: Mutex::new(released.rows),
            state: Mutex::new(Taking::Pending),
        }
    }

    /// The taking of a lock never made by the step that writes the run's rows (`rows`, not
    /// stored yet) as its moves leave them, and `events` (the run's first) with them.
    pub(crate) fn inserting(owner: &str, rows: KeptRows, events: Vec<OrderEvent>) -> Self {
        TakeLock {
            inserting: Some(events),
            ..TakeLock::new(owner, Release::never_taken(Some(rows)))
        }
    }

    /// The taking of the lock from the count `attempt`, the lone attempt of `order_num`,
    /// was dispatched under (see [`lone_count`]), by the step its result wakes, planned from
    /// rows it reads.
    pub(crate) fn lone(owner: &str, order_num: OrderNum, attempt: AttemptId, marks: u64) -> Self {
        TakeLock {
            lone: Some((order_num, attempt)),
            ..TakeLock::new(owner, Release { marks, rows: None })
        }
    }

    /// Whether rows read show what the take's count stands for: a lone attempt's order
    /// `running` with it, so they were read after the release that left the count. Always,
    /// for a take from a release this process made or from a lock never made.
    pub(crate) fn follows_its_release(&self, rows: &[OrderRecord]) -> bool {
        let Some((order_num, attempt)) = &self.lone else {
            return true;
        };
        (rows.iter()).any(|row| {
            row.plan.order_num == *order_num
                && row.status == OrderStatus::Running
                && row.attempt.as_ref() == Some(attempt)
        })
    }

    /// The events to write with the rows, when the take inserts the run's rows.
    pub(crate) fn inserted_events(&self) -> Option<&[OrderEvent]> {
        self.inserting.as_deref()
    }

    /// How many items a take that inserts `rows` rows with `events` events writes: each
    /// row (those its claims move among them), each event and the lock's.
    pub(crate) fn inserting_items(rows: usize, events: usize) -> usize {
        rows + events + 1
    }

    /// The run's rows as the release left them, once (`None` when not kept): the take's
    /// condition says whether they are still the stored ones.
    pub(crate) fn rows_as_released(&self) -> Option<KeptRows> {
        (self.rows.lock())
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn state(&self) -> MutexGuard<'_, Taking> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the step has written nothing yet and may still take the lock.
    pub(crate) fn is_pending(&self) -> bool {
        *self.state() == Taking::Pending
    }

    /// Whether the step was refused (it wrote nothing and holds nothing).
    pub(crate) fn is_refused(&self) -> bool {
        matches!(*self.state(), Taking::Refused { .. })
    }

    /// The count the step accounted for when it took the lock; `None` until then.
    pub(crate) fn taken(&self) -> Option<u64> {
        match *self.state() {
            Taking::Taken(marks) => Some(marks),
            Taking::Pending | Taking::Refused { .. } => None,
        }
    }

    /// The step took the lock, having accounted for `marks` wake-ups.
    pub(crate) fn took(&self, marks: u64) {
        *self.state() = Taking::Taken(marks);
    }

    /// The step will not take the lock (`why`, for the debug log), and has not tried: it
    /// must write nothing.
    pub(crate) fn refuse(&self, why: &dyn std::fmt::Display) {
        self.refused(why, true);
    }

    /// The step's write, which was to take the lock, was refused (`why`): a row may not be
    /// as the step read it.
    pub(crate) fn refuse_written(&self, why: &dyn std::fmt::Display) {
        self.refused(why, false);
    }

    /// The step read rows that may be older than the release its count stands for (see
    /// [`TakeLock::follows_its_release`]): it writes nothing, and the rows are not planned
    /// from again.
    pub(crate) fn refuse_unproven(&self) {
        self.refused(
            &"the rows read may be older than the release taken from",
            false,
        );
    }

    /// Refused; `planned` as [`Taking::Refused`] says — never for a lone take, whose rows
    /// are proven fresh only by the write it did not make.
    fn refused(&self, why: &dyn std::fmt::Display, planned: bool) {
        let mut state = self.state();
        if *state == Taking::Pending {
            tracing::debug!(%why, "not taking the lock with the step's first writes");
            let planned = planned && self.lone.is_none();
            *state = Taking::Refused { planned };
        }
    }

    /// Keeps `rows`, which the step planned from, if it was refused before it wrote.
    pub(crate) fn keep_planned_rows(&self, rows: KeptRows) {
        if *self.state() == (Taking::Refused { planned: true }) {
            *self.rows.lock().unwrap_or_else(|p| p.into_inner()) = Some(rows);
        }
    }

    /// The rows the refused step planned from, when the lock acquired after it counted
    /// `marks`: one more than the release this step started from, nobody took the lock in
    /// between, and the rows are as the step read them (as for the take's own condition).
    pub(crate) fn planned_rows(&self, marks: u64) -> Option<KeptRows> {
        let planned = *self.state() == (Taking::Refused { planned: true });
        (planned && marks == self.released_marks + 1)
            .then(|| self.rows_as_released())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance::sample_order;

    fn release(marks: u64, rows: usize) -> Release {
        let run = RunId::generate();
        let rows = (0..rows).map(|i| sample_order(&run, i)).collect();
        Release {
            marks,
            rows: Some(KeptRows {
                rows,
                generation: 0,
            }),
        }
    }

    #[test]
    fn a_release_is_told_once_and_the_oldest_runs_are_forgotten() {
        let releases = LastReleases::default();
        let run = RunId::generate();
        releases.remember(&run, release(5, 1));
        releases.remember(&run, release(3, 2));
        let told = releases.take(&run).expect("remembered");
        assert_eq!(told.marks, 5, "the latest release: the higher count");
        assert_eq!(
            told.rows.map(|kept| kept.rows.len()),
            Some(1),
            "and its rows"
        );
        assert!(releases.take(&run).is_none(), "told once");
        let runs: Vec<RunId> = (0..=LastReleases::RUNS)
            .map(|_| RunId::generate())
            .collect();
        for (marks, run) in runs.iter().enumerate() {
            releases.remember(run, release(marks as u64, 0));
        }
        assert!(
            releases.take(&runs[0]).is_none(),
            "the oldest is pushed out"
        );
        let newest = releases.take(&runs[LastReleases::RUNS]).expect("kept");
        assert_eq!(newest.marks, LastReleases::RUNS as u64);
    }

    #[test]
    fn a_lone_attempt_names_the_count_it_was_dispatched_under() {
        let attempt = lone_attempt(42);
        let order = OrderNum::from_index(3);
        let arrived = Arrivals::from([(order, attempt.clone())]);
        assert_eq!(lone_arrival(&arrived), Some((order, attempt.clone(), 42)));
        assert_ne!(lone_attempt(42), attempt, "fresh each time");
        let two = Arrivals::from([(order, attempt), (order, lone_attempt(42))]);
        assert_eq!(lone_arrival(&two), None, "one result only");
        let random = "0123456789abcdef0123456789abcdef";
        for other in [
            AttemptId::generate().as_str().to_owned(),
            "init".to_owned(),
            "abc-l5".to_owned(),
            format!("{random}-l"),
            format!("{random}-lx"),
            format!("{random}-l5-l6"),
        ] {
            let arrived = Arrivals::from([(order, AttemptId::parse(&other).unwrap())]);
            assert_eq!(lone_arrival(&arrived), None, "{other}");
        }
    }

    #[test]
    fn a_lone_take_goes_on_only_from_rows_that_show_its_attempt_running() {
        let run = RunId::generate();
        let attempt = lone_attempt(7);
        let take = TakeLock::lone("o", OrderNum::from_index(0), attempt.clone(), 7);
        assert_eq!(take.released_marks, 7);
        let mut row = sample_order(&run, 0);
        row.attempt = Some(attempt);
        for (status, follows) in [
            (OrderStatus::Dispatching, false),
            (OrderStatus::Running, true),
            (OrderStatus::Succeeded, false),
        ] {
            row.status = status;
            assert_eq!(
                take.follows_its_release(&[row.clone()]),
                follows,
                "{status}"
            );
        }
        row.attempt = Some(AttemptId::generate());
        assert!(!take.follows_its_release(&[row.clone()]), "another attempt");
        let own = TakeLock::new(
            "o",
            Release {
                marks: 7,
                rows: None,
            },
        );
        assert!(
            own.follows_its_release(&[]),
            "its own release: no proof needed"
        );
        take.refuse_unproven();
        take.keep_planned_rows(KeptRows {
            rows: vec![row],
            generation: 0,
        });
        assert!(take.planned_rows(8).is_none(), "never planned from again");
    }

    #[test]
    fn rows_read_before_a_write_without_the_lock_are_not_fresh() {
        let releases = LastReleases::default();
        let kept = |generation| KeptRows {
            rows: Vec::new(),
            generation,
        };
        let before = releases.generation();
        assert!(releases.fresh(kept(before)).is_some());
        releases.rows_written_apart();
        assert!(
            releases.fresh(kept(before)).is_none(),
            "read before the cancel"
        );
        assert!(releases.fresh(kept(releases.generation())).is_some());
    }

    /// A release whose one row takes about `bytes` (a long reason).
    fn release_of_bytes(marks: u64, bytes: usize) -> Release {
        let mut row = sample_order(&RunId::generate(), 0);
        row.reason = Some("x".repeat(bytes));
        Release {
            marks,
            rows: Some(KeptRows {
                rows: vec![row],
                generation: 0,
            }),
        }
    }

    #[test]
    fn rows_beyond_the_budget_are_dropped_oldest_first_and_counts_kept() {
        let releases = LastReleases::default();
        let half = LastReleases::ROW_BYTES / 2;
        let (large, first, second) = (RunId::generate(), RunId::generate(), RunId::generate());
        releases.remember(&large, release_of_bytes(1, LastReleases::ROW_BYTES));
        let told = releases.take(&large).expect("its count is kept");
        assert!(told.rows.is_none(), "too large to keep");
        releases.remember(&first, release_of_bytes(2, half));
        releases.remember(&second, release_of_bytes(3, half));
        let oldest = releases
            .take(&first)
            .expect("the oldest run's count is kept");
        assert_eq!(oldest.marks, 2);
        assert!(oldest.rows.is_none(), "the oldest run's rows go first");
        assert!(
            releases
                .take(&second)
                .is_some_and(|told| told.rows.is_some())
        );
    }
}
