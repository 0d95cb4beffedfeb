//! What `sluice run` shows while a run goes on, and the summary at its end.
//!
//! On a terminal: a live table of orders redrawn in place by indicatif (a line of counts
//! when there are too many orders for a screen). Otherwise (CI logs, pipes): one plain line
//! per status change. Tables are laid out by comfy-table, by displayed width, so names in
//! wide characters (CJK, emoji) stay aligned. Both go to stderr, so `--json` keeps stdout for the done document. The display
//! polls the orders table, the same rows `sluice status` would read: it observes the run and
//! never takes part in it.
//!
//! Everything an order wrote — its log, events, reasons, its name — is shown through
//! [`terminal_safe`]: an order is code from a pull request, and its output must not drive
//! the terminal of whoever reads it (retitle the window, write the clipboard, move the
//! cursor over earlier lines).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_contract::result::{DoneDoc, DoneOrder};
use sluice_contract::{OrderNum, OrderStatus, RunId, SandboxSpec};
use sluice_engine::local::DirStore;
use sluice_engine::{Clock as _, Engine, OrderEvent, OrderRecord};
use tokio::sync::oneshot;

/// Above this many orders the live view shows counts instead of one line per order.
const MAX_LIVE_ROWS: usize = 20;
/// The event name prefix of events orders emit themselves.
pub(crate) const EMITTED_PREFIX: &str = "emitted:";
/// Lines of a failed order's log shown in the summary.
const LOG_LINES_SHOWN: usize = 10;
/// A table of plain columns two spaces apart, laid out by displayed width, never wrapped.
fn plain_table(header: Option<Vec<&str>>, rows: Vec<Vec<String>>) -> Vec<String> {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    if let Some(header) = header {
        table.set_header(header);
    }
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect()
}

/// Follows a run until `stop` fires, drawing its progress on stderr.
pub async fn follow(
    engine: Arc<Engine>,
    run_id: RunId,
    interactive: bool,
    mut stop: oneshot::Receiver<()>,
) {
    let started = Instant::now();
    let mut seen: HashMap<OrderNum, (OrderStatus, usize)> = HashMap::new();
    let mut events_seen: HashSet<String> = HashSet::new();
    let live = interactive.then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        bar
    });
    let base = Duration::from_millis(if interactive { 150 } else { 250 });
    let mut period = base;
    loop {
        let finished = tokio::select! {
            _ = &mut stop => true,
            _ = tokio::time::sleep(period) => false,
        };
        if let Ok(orders) = engine.ports.orders.run_orders(&run_id).await {
            period = poll_period(base, orders.len());
            let elapsed = started.elapsed();
            let emitted = match orders.first() {
                Some(order) => emitted_events(&engine, order).await,
                None => Vec::new(),
            };
            if let Some(live) = &live {
                live.set_message(live_view(&orders, &emitted, elapsed));
            } else {
                print_changes(&orders, elapsed, &mut seen);
                print_new_events(&orders, &emitted, elapsed, &mut events_seen);
            }
        }
        if finished {
            if let Some(live) = &live {
                // Leave the summary to replace the live view.
                live.finish_and_clear();
            }
            return;
        }
    }
}

/// Orders a look at the run reads at the base period: each look reads every row and
/// event of the run, so a larger run is looked at less often (9 999 orders: every 1.25 s
/// rather than 250 ms), and following it costs a bounded share of the run's work.
const ORDERS_PER_BASE_PERIOD: usize = 2000;

/// How long to wait between looks at a run of `orders` orders.
fn poll_period(base: Duration, orders: usize) -> Duration {
    base * orders.div_ceil(ORDERS_PER_BASE_PERIOD).max(1) as u32
}

/// The events the run's orders emitted (`emitted:<kind>` rows), oldest first.
async fn emitted_events(engine: &Engine, any_order: &OrderRecord) -> Vec<OrderEvent> {
    let mut events: Vec<OrderEvent> =
        match engine.ports.orders.trace_events(&any_order.trace_id).await {
            Ok(events) => events,
            Err(_) => return Vec::new(),
        };
    events.retain(|e| e.run_id == any_order.run_id && e.event.starts_with(EMITTED_PREFIX));
    events.sort_by_key(|e| e.epoch_ms);
    events
}

/// `text` with its control characters (but tabs) shown escaped (`\u{1b}`), so that it
/// reaches a terminal as text, never as escape sequences, carriage returns or new lines;
/// and its invisible characters that change how text reads (bidirectional overrides and
/// isolates, zero-width spaces, line and paragraph separators), so that a command shown
/// is the command that runs ("trojan source").
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\t') || is_invisible(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            safe.extend(c.escape_default());
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

/// Whether `c` is an invisible character that reorders or hides text: the bidirectional
/// marks, embeddings, overrides and isolates, zero-width spaces and the byte-order mark,
/// and the line and paragraph separators. (Zero-width joiners, which emoji and several
/// scripts need, are left alone.)
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// `progress: checked haiku.txt`.
fn describe(event: &OrderEvent) -> String {
    let kind = event
        .event
        .strip_prefix(EMITTED_PREFIX)
        .unwrap_or(&event.event);
    let described = match event.detail.get("message").and_then(|m| m.as_str()) {
        Some(message) => format!("{kind}: {message}"),
        None => kind.to_owned(),
    };
    terminal_safe(&described).into_owned()
}

fn print_new_events(
    orders: &[OrderRecord],
    emitted: &[OrderEvent],
    elapsed: Duration,
    seen: &mut HashSet<String>,
) {
    let mut stderr = std::io::stderr().lock();
    for event in emitted {
        if !seen.insert(event.sk()) {
            continue;
        }
        let num = orders
            .iter()
            .find(|o| o.plan.order_name == event.order_name)
            .map(|o| o.plan.order_num.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            stderr,
            "[{:>8}] {num} {} · {}",
            format_ms(elapsed.as_millis() as u64),
            terminal_safe(&event.order_name),
            describe(event)
        );
    }
}

fn symbol(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Queued => "·",
        OrderStatus::Dispatching | OrderStatus::Running => "▸",
        OrderStatus::Succeeded => "✓",
        OrderStatus::Failed => "✗",
        OrderStatus::TimedOut => "⏱",
        OrderStatus::Cancelled => "■",
        OrderStatus::Skipped => "⤼",
    }
}

fn running_for(order: &OrderRecord) -> String {
    match (order.status, order.dispatched_at_ms, order.duration_ms) {
        (_, _, Some(ms)) => format_ms(ms),
        (OrderStatus::Running | OrderStatus::Dispatching, Some(at), None) => {
            let now = sluice_engine::SystemClock.now_ms();
            format_ms(now.saturating_sub(at))
        }
        _ => String::new(),
    }
}

/// The live view: a line per order (when they fit a screen) and a line of counts.
fn live_view(orders: &[OrderRecord], emitted: &[OrderEvent], elapsed: Duration) -> String {
    let mut screen = String::new();
    if orders.len() <= MAX_LIVE_ROWS {
        let rows = orders
            .iter()
            .map(|order| {
                // The order's latest event says what it is doing.
                let latest = emitted
                    .iter()
                    .rev()
                    .find(|e| e.order_name == order.plan.order_name)
                    .map(describe)
                    .unwrap_or_default();
                vec![
                    symbol(order.status).to_owned(),
                    order.plan.order_num.to_string(),
                    terminal_safe(&order.plan.order_name).into_owned(),
                    order.status.as_str().to_owned(),
                    running_for(order),
                    latest,
                ]
            })
            .collect();
        for line in plain_table(None, rows) {
            let _ = writeln!(screen, "  {line}");
        }
    }
    let _ = write!(
        screen,
        "  {}  [{}]",
        counts(orders),
        format_ms(elapsed.as_millis() as u64)
    );
    screen
}

fn counts(orders: &[OrderRecord]) -> String {
    let count = |pred: fn(OrderStatus) -> bool| orders.iter().filter(|o| pred(o.status)).count();
    let mut line = format!(
        "{} queued · {} running · {} succeeded · {} failed · {} timed out",
        count(|s| s == OrderStatus::Queued),
        count(|s| matches!(s, OrderStatus::Dispatching | OrderStatus::Running)),
        count(|s| s == OrderStatus::Succeeded),
        count(|s| s == OrderStatus::Failed),
        count(|s| s == OrderStatus::TimedOut),
    );
    for (status, what) in [
        (OrderStatus::Skipped, "skipped"),
        (OrderStatus::Cancelled, "cancelled"),
    ] {
        let n = orders.iter().filter(|o| o.status == status).count();
        if n > 0 {
            let _ = write!(line, " · {n} {what}");
        }
    }
    line
}

fn print_changes(
    orders: &[OrderRecord],
    elapsed: Duration,
    seen: &mut HashMap<OrderNum, (OrderStatus, usize)>,
) {
    let mut stderr = std::io::stderr().lock();
    for order in orders {
        // Dispatching is a blink between queued and running: not worth a line. An order
        // seen again with more attempts ended was retried in between.
        let now = (order.status, order.attempts.len());
        if order.status == OrderStatus::Dispatching || seen.get(&order.plan.order_num) == Some(&now)
        {
            continue;
        }
        if order.status == OrderStatus::Queued && !seen.contains_key(&order.plan.order_num) {
            seen.insert(order.plan.order_num, now);
            continue;
        }
        let retried_unseen = seen
            .insert(order.plan.order_num, now)
            .is_some_and(|(_, attempts)| attempts < order.attempts.len())
            && order.status == OrderStatus::Running;
        let waiting = order.awaiting_retry().or_else(|| {
            // A retry that started between two looks: still say the attempt before ended.
            (order.attempts.last())
                .filter(|_| retried_unseen)
                .map(|a| (a, 0))
        });
        let (status, detail) = match waiting {
            // Back in the queue after an attempt ended: a retry.
            Some((ended, retry_at)) => {
                let wait = format_ms(retry_at.saturating_sub(sluice_engine::SystemClock.now_ms()));
                let reason = ended
                    .reason
                    .as_deref()
                    .map(terminal_safe)
                    .unwrap_or_default();
                let detail = format!(
                    " (attempt {} {}{}{reason}; attempt {} in {wait})",
                    ended.number,
                    ended.status,
                    if reason.is_empty() { "" } else { ": " },
                    ended.number + 1
                );
                ("retrying".to_owned(), detail)
            }
            None => {
                let detail = order
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({})", terminal_safe(r)))
                    .unwrap_or_default();
                (order.status.to_string(), detail)
            }
        };
        let _ = writeln!(
            stderr,
            "[{:>8}] {} {} {status}{detail}",
            format_ms(elapsed.as_millis() as u64),
            order.plan.order_num,
            terminal_safe(&order.plan.order_name),
        );
    }
}

/// `1.23s`, `2m05s`.
pub fn format_ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// The end-of-run table, with the end of each unsuccessful order's log (of every order's
/// with `all_logs`), read from `internal`, the store holding the logs.
pub fn summary(done: &DoneDoc, internal: &DirStore, all_logs: bool) -> String {
    let mut out = String::new();
    let rows = done
        .orders
        .iter()
        .map(|order| {
            vec![
                order.order_num.to_string(),
                terminal_safe(&order.order_name).into_owned(),
                order.status.as_str().to_owned(),
                order
                    .duration_ms
                    .map(format_ms)
                    .unwrap_or_else(|| "-".to_owned()),
                detail_of(order),
            ]
        })
        .collect();
    let header = vec!["ORDER", "NAME", "STATUS", "DURATION", "DETAIL"];
    for line in plain_table(Some(header), rows) {
        let _ = writeln!(out, "{line}");
    }
    let shown = |o: &&DoneOrder| {
        all_logs
            || matches!(
                o.status,
                OrderStatus::Failed | OrderStatus::TimedOut | OrderStatus::Cancelled
            )
    };
    for order in done.orders.iter().filter(shown) {
        let Some(log_key) = &order.log_key else {
            continue;
        };
        let Ok(path) = internal.path_of(log_key) else {
            continue;
        };
        if let Some(tail) = last_lines(&path, LOG_LINES_SHOWN) {
            let _ = writeln!(
                out,
                "\n--- {} {}: last lines of {}",
                order.order_num,
                terminal_safe(&order.order_name),
                path.display()
            );
            for line in tail {
                let _ = writeln!(out, "    {}", terminal_safe(&line));
            }
        }
    }
    if let Some(line) = sandbox_line(done) {
        let _ = writeln!(out, "\n{line}");
    }
    let s = &done.summary;
    let mut counts = format!(
        "{} succeeded, {} failed, {} timed out",
        s.succeeded, s.failed, s.timed_out
    );
    for (count, what) in [(s.skipped, "skipped"), (s.cancelled, "cancelled")] {
        if count > 0 {
            let _ = write!(counts, ", {count} {what}");
        }
    }
    let rerun = match &done.rerun_of {
        Some(run) => format!(" (rerun of {})", terminal_safe(run)),
        None => String::new(),
    };
    let _ = writeln!(out, "\njob {}{rerun}: {counts}", done.status);
    out
}

/// The summary's detail of an order: its reason, how many attempts it took when more
/// than one (or the run it was reused from), and the names of the outputs it published.
fn detail_of(order: &DoneOrder) -> String {
    let reason = order
        .reason
        .as_deref()
        .map(terminal_safe)
        .unwrap_or_default();
    let mut detail = match (order.attempts.len(), reason.is_empty()) {
        (0 | 1, _) => reason.into_owned(),
        (n, true) => format!("{n} attempts"),
        (n, false) => format!("{reason} ({n} attempts)"),
    };
    if let Some(run) = &order.reused_from {
        detail = format!("reused from {}", terminal_safe(run));
    }
    if let Some(granted) = (order.sandbox.as_ref()).filter(|_| order.status == OrderStatus::Failed)
    {
        let _ = write!(detail, "; {}", sandbox_hint(granted));
    }
    let names: Vec<&str> = (order.outputs.keys())
        .chain(&order.withheld_outputs)
        .map(String::as_str)
        .collect();
    let outputs = match (names.len(), &order.outputs_key) {
        // Too large for the done document: only where they are.
        (0, Some(key)) => format!("outputs at {}", terminal_safe(key)),
        (0, None) => return detail,
        (n, _) if n <= OUTPUT_NAMES_SHOWN => format!("outputs: {}", names.join(", ")),
        (n, _) => format!(
            "outputs: {} and {} more",
            names[..OUTPUT_NAMES_SHOWN].join(", "),
            n - OUTPUT_NAMES_SHOWN
        ),
    };
    if !detail.is_empty() {
        detail.push_str("; ");
    }
    detail.push_str(&outputs);
    detail
}

/// What a failed sandboxed order's line adds: how it ran, and how to grant more (a `tofu
/// plan` that cannot reach its cloud says why at once).
fn sandbox_hint(granted: &SandboxSpec) -> String {
    let ran = match granted.is_empty() {
        true => "without network, seeing only its own folders".to_owned(),
        false => format!("granted {}", terminal_safe(&granted.to_string())),
    };
    format!(
        "it ran sandboxed {ran}: grant more in its \"sandbox\" field ({{\"network\": true, \"read\": [\"~/.aws\"]}}) or run with --network or --sandbox off"
    )
}

/// The summary's line on the sandbox, when orders ran in one: how many, and what each
/// order granted more was granted.
fn sandbox_line(done: &DoneDoc) -> Option<String> {
    let sandboxed: Vec<(&DoneOrder, &SandboxSpec)> = (done.orders.iter())
        .filter_map(|order| Some((order, order.sandbox.as_ref()?)))
        .collect();
    let (count, their) = match sandboxed.len() {
        0 => return None,
        1 => ("1 order".to_owned(), "its"),
        n => (format!("{n} orders"), "their"),
    };
    let granted: Vec<String> = (sandboxed.iter())
        .filter(|(_, granted)| !granted.is_empty())
        .map(|(order, granted)| {
            let name = terminal_safe(&order.order_name);
            let granted = granted.to_string();
            format!("{} {name}: {}", order.order_num, terminal_safe(&granted))
        })
        .collect();
    Some(match granted.is_empty() {
        true => format!(
            "sandbox: {count} ran sandboxed, without network, seeing only {their} own folders"
        ),
        false => format!(
            "sandbox: {count} ran sandboxed; granted more: {}",
            granted.join("; ")
        ),
    })
}

/// How many output names an order's line of the summary shows.
const OUTPUT_NAMES_SHOWN: usize = 4;

/// The last `count` lines of a file, reading only its end.
fn last_lines(path: &Path, count: usize) -> Option<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(8 * 1024);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let skip = lines.len().saturating_sub(count);
    Some(lines.into_iter().skip(skip).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_invisible_reordering_characters_are_escaped() {
        assert_eq!(terminal_safe("plain\ttext"), "plain\ttext");
        assert_eq!(terminal_safe("a\u{1b}]0;x\u{7}"), "a\\u{1b}]0;x\\u{7}");
        // "Trojan source": an override that would show `rm -rf /` as something else.
        assert_eq!(
            terminal_safe("echo \u{202E}/ fr- mr\u{2066}"),
            "echo \\u{202e}/ fr- mr\\u{2066}"
        );
        assert_eq!(
            terminal_safe("a\u{2028}b\u{200B}c"),
            "a\\u{2028}b\\u{200b}c"
        );
        assert_eq!(terminal_safe("👩\u{200D}💻 ok"), "👩\u{200D}💻 ok");
    }

    #[test]
    fn larger_runs_are_looked_at_less_often() {
        let base = Duration::from_millis(250);
        assert_eq!(poll_period(base, 0), base);
        assert_eq!(poll_period(base, 2000), base);
        assert_eq!(poll_period(base, 2001), base * 2);
        assert_eq!(poll_period(base, 9999), Duration::from_millis(1250));
    }
}
