//! The PR comment that follows a run with `pr_number`: posted by init_job with every order
//! queued, updated by the orchestrator (at most once a pass, when a status changed) and
//! completed by finalize with durations and the job's status.
//!
//! Its first line is the run's search tag (`#sluice-<run_id>`), by which later updates find
//! it. It shows names, statuses, durations and reasons — what the done document shows; the
//! reasons come from results whose secrets the worker already masked. A failure to reach
//! the host is logged and never fails the run.

use std::time::Duration;

use sluice_contract::ids::pr_search_tag;
use sluice_contract::{JobStatus, OrderStatus};

use crate::engine::Engine;
use crate::ports::OrderRecord;

/// Longest a whole comment update may take (the host's calls have their own timeouts).
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

impl Engine {
    /// Brings the run's PR comment up to date with `rows` (and the job's final `status`,
    /// once finalized). Does nothing for a run without `pr_number` or an engine without a
    /// [`crate::ports::Vcs`].
    pub(crate) async fn update_pr_comment(&self, rows: &[OrderRecord], ending: Option<Ending<'_>>) {
        let (Some(vcs), Some(first)) = (&self.ports.vcs, rows.first()) else {
            return;
        };
        let Some(pr) = &first.pr else {
            return;
        };
        let token = match &pr.token_location {
            Some(location) => match self.ports.secrets.fetch(location).await {
                Ok(token) => Some(token),
                Err(error) => {
                    tracing::warn!(%error, pr = pr.number, "PR comment not updated: no token");
                    return;
                }
            },
            None => None,
        };
        let tag = format!("#{}", pr_search_tag(&first.run_id));
        let body = render(&tag, rows, ending);
        let update = vcs.upsert_comment(pr, token.as_deref(), &tag, &body);
        match tokio::time::timeout(UPDATE_TIMEOUT, update).await {
            Ok(Ok(())) => tracing::debug!(pr = pr.number, "PR comment updated"),
            Ok(Err(error)) => {
                tracing::warn!(%error, pr = pr.number, repo = %pr.repo, "PR comment not updated")
            }
            Err(_) => {
                tracing::warn!(pr = pr.number, repo = %pr.repo, "PR comment not updated: the host did not answer in time")
            }
        }
    }
}

/// How a run ended, as its comment says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ending<'a> {
    /// The job's status.
    pub status: JobStatus,
    /// Who cancelled it, when someone did.
    pub cancelled_by: Option<&'a str>,
}

/// The comment's text.
pub(crate) fn render(tag: &str, rows: &[OrderRecord], ending: Option<Ending<'_>>) -> String {
    let first = &rows[0];
    let state = match ending {
        Some(Ending {
            status,
            cancelled_by: Some(by),
        }) => format!("**{status}** by {}", cell(by)),
        Some(Ending { status, .. }) => format!("**{status}**"),
        None => "running".to_owned(),
    };
    let rerun = match &first.rerun_of {
        Some(of) => format!(" · rerun of `{of}`"),
        None => String::new(),
    };
    let mut text = format!(
        "{tag}\n**Sluice** run `{}`{rerun} · flow `{}` · {state}\n\n| order | name | status | duration | detail |\n|---|---|---|---|---|\n",
        first.run_id,
        cell(&first.flow_id)
    );
    for row in rows {
        let duration = row
            .duration_ms
            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        text.push_str(&format!(
            "| {} | {} | {} {} | {duration} | {} |\n",
            row.plan.order_num,
            cell(&row.plan.order_name),
            mark(row.status),
            row.status,
            cell(&detail(row))
        ));
    }
    text
}

/// An order's reason, and its attempt when it was retried (`attempt 2 of 4, retrying: …`
/// while it waits for a retry); for an order a rerun reused, the run it ran in.
fn detail(row: &OrderRecord) -> String {
    if let Some(from) = &row.reused_from {
        return format!("reused from `{from}`");
    }
    let reason = row.reason.as_deref().unwrap_or_default();
    let Some(policy) = row.plan.retry.as_ref().filter(|_| !row.attempts.is_empty()) else {
        return reason.to_owned();
    };
    let total = policy.limit + 1;
    if let Some((ended, _)) = row.awaiting_retry() {
        return format!(
            "attempt {} of {total} {}, retrying: {}",
            ended.number,
            ended.status,
            ended.reason.as_deref().unwrap_or_default()
        );
    }
    // Ended while waiting for a retry, its last attempt is the recorded one.
    let recorded = row.last_attempt_recorded().is_some();
    let attempt = row.attempts.len() + usize::from(!recorded);
    match reason.is_empty() {
        true => format!("attempt {attempt} of {total}"),
        false => format!("attempt {attempt} of {total}: {reason}"),
    }
}

fn mark(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Succeeded => "✅",
        OrderStatus::Failed => "❌",
        OrderStatus::TimedOut => "⏱️",
        OrderStatus::Cancelled => "⏹️",
        OrderStatus::Skipped => "⏭️",
        OrderStatus::Running | OrderStatus::Dispatching => "🔄",
        OrderStatus::Queued => "⏳",
    }
}

/// Text that stays in its table cell: on one line, `|` escaped, at most 200 characters.
fn cell(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    flat.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use sluice_contract::RunId;

    use super::*;
    use sluice_ports::conformance::sample_order;

    #[test]
    fn the_comment_starts_with_its_tag_and_has_a_row_per_order() {
        let run = RunId::generate();
        let mut rows = vec![sample_order(&run, 0), sample_order(&run, 1)];
        rows[0].status = OrderStatus::Succeeded;
        rows[0].duration_ms = Some(1250);
        rows[1].status = OrderStatus::Failed;
        rows[1].reason = Some("command 1 failed: exit code 3\n| oops".to_owned());
        let failed = Ending {
            status: JobStatus::Failed,
            cancelled_by: None,
        };
        let text = render("#sluice-x", &rows, Some(failed));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#sluice-x");
        assert!(lines[1].contains(&run.to_string()) && lines[1].ends_with("**failed**"));
        assert!(
            lines[5].contains("| ✅ succeeded | 1.2 s |"),
            "{}",
            lines[5]
        );
        assert!(lines[6].contains("exit code 3 \\| oops |"), "{}", lines[6]);
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn a_rerun_names_the_run_it_reruns_and_what_it_reused() {
        let (run, of) = (RunId::generate(), RunId::generate());
        let mut rows = vec![sample_order(&run, 0), sample_order(&run, 1)];
        for row in &mut rows {
            row.rerun_of = Some(of.clone());
        }
        rows[0].status = OrderStatus::Succeeded;
        rows[0].reused_from = Some(of.clone());
        let text = render("#sluice-x", &rows, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains(&format!("`{run}` · rerun of `{of}` · flow")),
            "{}",
            lines[1]
        );
        assert!(
            lines[5].ends_with(&format!("| ✅ succeeded |  | reused from `{of}` |")),
            "{}",
            lines[5]
        );
    }

    #[test]
    fn a_cancelled_run_says_who_cancelled_it() {
        let run = RunId::generate();
        let mut rows = vec![sample_order(&run, 0)];
        rows[0].status = OrderStatus::Cancelled;
        rows[0].reason = Some("cancelled by alice".to_owned());
        let cancelled = Ending {
            status: JobStatus::Cancelled,
            cancelled_by: Some("alice|x"),
        };
        let text = render("#sluice-x", &rows, Some(cancelled));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].ends_with("**cancelled** by alice\\|x"),
            "{}",
            lines[1]
        );
        assert!(
            lines[5].contains("| ⏹️ cancelled |  | cancelled by alice |"),
            "{}",
            lines[5]
        );
    }
}
