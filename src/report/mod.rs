//! A run report (`sluice report`, `sluice run --report`): one self-contained HTML file
//! telling a run's story — its header, its DAG coloured by status, a timeline of every
//! attempt, the orders table, and each order's log and events.
//!
//! [`RunStory`] settles what the page shows from what the stores hold
//! ([`sluice_engine::report::RunReport`]): the rows when they are still there (they hold
//! the waits and every attempt's times), else the done document alone. [`html`] draws it.

pub mod html;

use std::collections::BTreeMap;

use sluice_contract::result::{AttemptRecord, DoneDoc};
use sluice_contract::{JobStatus, OrderNum, OrderStatus, exit_codes};
use sluice_engine::ports::{OrderEvent, OrderRecord};
use sluice_engine::report::{LogExcerpt, RunReport};

/// What a report shows of a run.
#[derive(Debug, Clone)]
pub struct RunStory {
    /// The run's id.
    pub run_id: String,
    /// How it ended, or `None` while it runs.
    pub status: Option<JobStatus>,
    /// The exit code `sluice run` gives it, once it ended.
    pub exit_code: Option<i32>,
    /// Its flow id (the job's label and submitter).
    pub flow_id: String,
    /// Who submitted it, when its start was recorded.
    pub user: Option<String>,
    /// When it was accepted, ms since the epoch.
    pub started_ms: Option<u64>,
    /// When it ended (its last order did), ms since the epoch.
    pub ended_ms: Option<u64>,
    /// The run it runs again.
    pub rerun_of: Option<String>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// Why it ended without its orders deciding.
    pub reason: Option<String>,
    /// Its orders, in order.
    pub orders: Vec<OrderStory>,
    /// The job's own events (`started`, `completed`).
    pub job_events: Vec<OrderEvent>,
    /// Why the events could not be read, when they could not.
    pub events_unread: Option<String>,
}

/// What a report shows of one order.
#[derive(Debug, Clone)]
pub struct OrderStory {
    /// Its number.
    pub num: OrderNum,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: OrderStatus,
    /// Why it ended so.
    pub reason: Option<String>,
    /// Its last command's exit code.
    pub exit_code: Option<i32>,
    /// How long its deciding attempt ran.
    pub duration_ms: Option<u64>,
    /// The orders it waits for, by index into the run's orders.
    pub waits_for: Vec<usize>,
    /// Its `depends` condition, when it has one.
    pub condition: Option<String>,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptBar>,
    /// The outputs the done document shows.
    pub outputs: BTreeMap<String, String>,
    /// Outputs named but withheld (they hold a secret).
    pub withheld_outputs: Vec<String>,
    /// Where all its outputs are stored.
    pub outputs_key: Option<String>,
    /// The run it was not run again from (`rerun --failed`).
    pub reused_from: Option<String>,
    /// What there is of its log.
    pub log: LogExcerpt,
    /// Its events, oldest first.
    pub events: Vec<OrderEvent>,
}

/// One attempt on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptBar {
    /// Its number (1 for the first).
    pub number: u32,
    /// How it ended, or its order's status while it runs.
    pub status: OrderStatus,
    /// When it could have started (its waits ended, or its previous attempt), ms.
    pub ready_ms: Option<u64>,
    /// When it was dispatched, ms.
    pub dispatched_ms: Option<u64>,
    /// When it ended, ms.
    pub finished_ms: Option<u64>,
}

impl RunStory {
    /// The story of a run as its stores hold it; `now_ms` ends the bars of what still runs.
    pub fn of(report: RunReport, now_ms: u64) -> Self {
        let RunReport {
            run_id,
            done,
            orders: rows,
            events,
            logs,
            events_unread,
        } = report;
        let mut logs: BTreeMap<OrderNum, LogExcerpt> = logs.into_iter().collect();
        let (job_events, order_events): (Vec<_>, Vec<_>) = events
            .into_iter()
            .partition(|e| e.order_name == OrderEvent::JOB);
        let mut events_of: BTreeMap<String, Vec<OrderEvent>> = BTreeMap::new();
        for event in order_events {
            events_of
                .entry(event.order_name.clone())
                .or_default()
                .push(event);
        }
        let started = job_events.iter().find(|e| e.event == "started");
        let user = (started.and_then(|e| e.detail.get("username")))
            .and_then(|name| name.as_str())
            .map(str::to_owned);
        let mut orders = match rows.is_empty() {
            false => stories_from_rows(&rows, now_ms),
            true => (done.iter())
                .flat_map(|done| done.orders.iter())
                .map(story_from_done)
                .collect(),
        };
        for order in &mut orders {
            order.log = logs.remove(&order.num).unwrap_or_else(|| LogExcerpt {
                missing: Some("its log was not read".to_owned()),
                ..LogExcerpt::default()
            });
            order.events = events_of.remove(&order.name).unwrap_or_default();
        }
        if let Some(done) = &done {
            overlay_done(&mut orders, done);
        }
        let started_ms =
            (rows.first().map(|row| row.created_at_ms)).or_else(|| started.map(|e| e.epoch_ms));
        // The `completed` event is dated by the last order to end, dispatched or not.
        let completed = job_events.iter().find(|e| e.event == "completed");
        let ended_ms = match &done {
            Some(_) => completed.map(|e| e.epoch_ms).or_else(|| {
                let attempts = orders.iter().flat_map(|o| &o.attempts);
                (rows.iter().filter_map(|row| row.finished_at_ms))
                    .chain(attempts.filter_map(|a| a.finished_ms))
                    .max()
            }),
            None => None,
        };
        let mut story = RunStory {
            run_id: run_id.to_string(),
            status: done.as_ref().map(|done| done.status),
            exit_code: done
                .as_ref()
                .map(|done| exit_codes::for_job_status(done.status)),
            flow_id: (done.as_ref().map(|done| done.flow_id.clone()))
                .or_else(|| rows.first().map(|row| row.flow_id.clone()))
                .unwrap_or_default(),
            user,
            started_ms,
            ended_ms,
            rerun_of: (done.as_ref().and_then(|done| done.rerun_of.clone())).or_else(|| {
                rows.first()
                    .and_then(|row| row.rerun_of.as_ref())
                    .map(|r| r.to_string())
            }),
            cancelled_by: done.as_ref().and_then(|done| done.cancelled_by.clone()),
            reason: done.as_ref().and_then(|done| done.reason.clone()),
            orders,
            job_events,
            events_unread,
        };
        // Without its start recorded (its rows expired), the run starts with its first
        // attempt.
        story.started_ms = (story.started_ms).or_else(|| story.span().map(|(start, _)| start));
        story
    }

    /// The span the timeline covers, ms since the epoch: from the run's start to its last
    /// attempt's end.
    pub fn span(&self) -> Option<(u64, u64)> {
        let times = (self.orders.iter().flat_map(|o| &o.attempts))
            .flat_map(|a| [a.ready_ms, a.dispatched_ms, a.finished_ms])
            .flatten();
        let (first, last) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let start = self.started_ms.unwrap_or(first).min(first);
        (last >= start && last > 0).then_some((start, last.max(start.saturating_add(1))))
    }
}

/// The orders as their rows tell them: every attempt, each ready when its waits (or its
/// previous attempt) ended.
fn stories_from_rows(rows: &[OrderRecord], now_ms: u64) -> Vec<OrderStory> {
    let index_of: BTreeMap<OrderNum, usize> = (rows.iter().enumerate())
        .map(|(index, row)| (row.plan.order_num, index))
        .collect();
    rows.iter()
        .map(|row| {
            let waits_for: Vec<usize> = (row.plan.depends_on.iter())
                .filter_map(|num| index_of.get(num).copied())
                .collect();
            let waits_ended = (waits_for.iter())
                .filter_map(|&index| rows[index].finished_at_ms)
                .max();
            let first_ready = waits_ended
                .unwrap_or(row.created_at_ms)
                .max(row.created_at_ms);
            OrderStory {
                num: row.plan.order_num,
                name: row.plan.order_name.clone(),
                status: row.status,
                reason: row.reason.clone(),
                exit_code: row.exit_code,
                duration_ms: row.duration_ms,
                waits_for,
                condition: row.plan.condition.as_ref().map(|c| c.text.clone()),
                attempts: attempts_of(row, first_ready, now_ms),
                outputs: BTreeMap::new(),
                withheld_outputs: Vec::new(),
                outputs_key: row.outputs_key.clone(),
                reused_from: row.reused_from.as_ref().map(ToString::to_string),
                log: LogExcerpt::default(),
                events: Vec::new(),
            }
        })
        .collect()
}

fn attempts_of(row: &OrderRecord, first_ready: u64, now_ms: u64) -> Vec<AttemptBar> {
    if row.reused_from.is_some() {
        // It ran in another run: nothing of this run's time.
        return Vec::new();
    }
    let mut bars: Vec<AttemptBar> = Vec::with_capacity(row.attempts.len() + 1);
    let mut ready = Some(first_ready);
    for ended in &row.attempts {
        bars.push(bar_of(ended, ready));
        ready = ended.finished_at_ms;
    }
    // The current (or deciding) attempt, if one was dispatched and is not among those
    // (it ended and the order waits for its retry, or was ended while it waited).
    let current = row.attempt.is_some() && row.last_attempt_recorded().is_none();
    if current && row.dispatched_at_ms.is_some() {
        let finished = match row.status.is_terminal() {
            true => row.finished_at_ms,
            false => Some(now_ms),
        };
        bars.push(AttemptBar {
            number: row.attempts.len() as u32 + 1,
            status: row.status,
            ready_ms: ready,
            dispatched_ms: row.dispatched_at_ms,
            finished_ms: finished,
        });
    }
    bars
}

fn bar_of(attempt: &AttemptRecord, ready_ms: Option<u64>) -> AttemptBar {
    AttemptBar {
        number: attempt.number,
        status: attempt.status,
        ready_ms,
        dispatched_ms: attempt.dispatched_at_ms,
        finished_ms: attempt.finished_at_ms,
    }
}

/// An order as the done document alone tells it (its rows expired).
fn story_from_done(order: &sluice_contract::result::DoneOrder) -> OrderStory {
    let attempts = order.attempts.iter().map(|a| bar_of(a, None)).collect();
    OrderStory {
        num: order.order_num,
        name: order.order_name.clone(),
        status: order.status,
        reason: order.reason.clone(),
        exit_code: order.exit_code,
        duration_ms: order.duration_ms,
        waits_for: Vec::new(),
        condition: None,
        attempts,
        outputs: BTreeMap::new(),
        withheld_outputs: Vec::new(),
        outputs_key: order.outputs_key.clone(),
        reused_from: order.reused_from.clone(),
        log: LogExcerpt::default(),
        events: Vec::new(),
    }
}

/// What only the done document holds: the outputs it shows.
fn overlay_done(orders: &mut [OrderStory], done: &DoneDoc) {
    let mut by_num: BTreeMap<OrderNum, &sluice_contract::result::DoneOrder> =
        done.orders.iter().map(|o| (o.order_num, o)).collect();
    for order in orders {
        if let Some(doc) = by_num.remove(&order.num) {
            order.outputs.clone_from(&doc.outputs);
            order.withheld_outputs.clone_from(&doc.withheld_outputs);
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_contract::RunId;
    use sluice_contract::result::parse_done;

    use super::*;

    #[test]
    fn a_run_whose_rows_expired_is_told_from_its_done_document() {
        let done = parse_done(
            br#"{"status": "failed", "run_id": "r", "flow_id": "me:job",
                 "cancelled_by": null, "rerun_of": "earlier",
                 "orders": [
                   {"order_num": "0001", "order_name": "build", "status": "succeeded",
                    "duration_ms": 1200, "exit_code": 0, "outputs": {"tag": "v1"}},
                   {"order_num": "0002", "order_name": "test", "status": "failed",
                    "reason": "command 1 failed: exit code 2", "attempts": [
                      {"number": 1, "attempt": "a1", "status": "failed",
                       "dispatched_at_ms": 1000, "finished_at_ms": 2000},
                      {"number": 2, "attempt": "a2", "status": "failed",
                       "dispatched_at_ms": 3000, "finished_at_ms": 4000}]}
                 ]}"#,
        )
        .unwrap();
        let report = RunReport {
            run_id: RunId::generate(),
            done: Some(done),
            orders: Vec::new(),
            events: Vec::new(),
            logs: Vec::new(),
            events_unread: None,
        };
        let story = RunStory::of(report, 10_000);
        assert_eq!(story.status, Some(JobStatus::Failed));
        assert_eq!(story.exit_code, Some(exit_codes::FAILED));
        assert_eq!(story.rerun_of.as_deref(), Some("earlier"));
        assert_eq!(story.orders.len(), 2);
        assert_eq!(story.orders[0].outputs["tag"], "v1");
        assert!(story.orders[0].attempts.is_empty() && story.orders[0].waits_for.is_empty());
        // Each attempt the document lists, with its times but no wait (nothing says when
        // it was ready); the span of the run is theirs.
        let bars = &story.orders[1].attempts;
        assert_eq!(bars.len(), 2);
        assert_eq!(
            (bars[1].dispatched_ms, bars[1].finished_ms),
            (Some(3000), Some(4000))
        );
        assert_eq!(story.span(), Some((1000, 4000)));
        assert_eq!(story.ended_ms, Some(4000));
        // The page draws it: two boxes, no arrow, two bars.
        let page = html::page(&story);
        assert_eq!(page.matches("<rect ").count(), 2);
        assert_eq!(page.matches(" style=\"left:").count(), 2);
    }

    #[test]
    fn an_order_waiting_for_its_retry_has_a_bar_per_attempt_that_ran() {
        let run = RunId::generate();
        let row: OrderRecord = serde_json::from_value(serde_json::json!({
            "run_id": run, "order_num": "0001", "order_name": "flaky", "queue_id": "1",
            "depends_on": [], "must_succeed": true, "timeout": 60,
            "execution_target": "codebuild", "trace_id": "0123abcd", "flow_id": "me:job",
            "created_at_ms": 500, "job_deadline_ms": 100_000, "key_path": "k",
            "log_key": "l", "status": "queued", "attempt": "a1", "dispatched_at_ms": 1000,
            "retry_at_ms": 5000,
            "attempts": [{"number": 1, "attempt": "a1", "status": "failed",
                          "dispatched_at_ms": 1000, "finished_at_ms": 2000}]
        }))
        .unwrap();
        let report = RunReport {
            run_id: run,
            done: None,
            orders: vec![row],
            events: Vec::new(),
            logs: Vec::new(),
            events_unread: None,
        };
        let story = RunStory::of(report, 3000);
        assert_eq!(story.status, None);
        let bars = &story.orders[0].attempts;
        assert_eq!(bars.len(), 1, "{bars:?}");
        assert_eq!(bars[0].status, OrderStatus::Failed);
        assert_eq!(
            (bars[0].ready_ms, bars[0].finished_ms),
            (Some(500), Some(2000))
        );
        assert!(html::page(&story).contains("<title>sluice run "));
    }
}
