//! A [`RunStory`] as one HTML file that needs nothing else: its style inline, its DAG an
//! inline SVG, no script at all, and a Content-Security-Policy that forbids loading or
//! running anything — so a report opened from a CI artifact reaches no network, and even
//! markup that escaped its escaping could not run.
//!
//! Every text from a run (names, reasons, logs, events, outputs) goes through [`maud`],
//! which escapes it; control and invisible characters that would change how it reads
//! (a log's colour codes among them) are shown escaped (`\u{1b}`) as on a terminal.

use std::fmt::Write as _;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use sluice_contract::result::format_timestamp;
use sluice_contract::{JobStatus, OrderStatus};

use sluice_engine::report::LogExcerpt;

use super::{AttemptBar, OrderStory, RunStory};
use crate::graph::shortened;
use crate::graph::svg::{self, Arrow, Figure};
use crate::progress::{EMITTED_PREFIX, format_ms, terminal_safe};

/// The most orders a run may have for the logs of those that did not succeed to start
/// unfolded.
const UNFOLDED_UP_TO: usize = 50;
/// Rows laid out together, or not at all while out of sight (`content-visibility`).
const ROWS_TOGETHER: usize = 200;
/// About how tall a folded row is, in pixels: what an unseen group of rows takes.
const ROW_HEIGHT: usize = 27;
/// Most characters of an order's name its box shows (all of it is in the table).
const BOX_NAME_CHARS: usize = 40;

/// Forbids every fetch, script, frame and form: the page is all there is.
const CONTENT_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'";

const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:16px 24px;color:#0f172a}\
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:28px 0 8px}\
code,pre{font:12px/1.4 ui-monospace,monospace}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}dt{color:#475569}dd{margin:0}\
.status{padding:0 8px;border-radius:9px;font-weight:600;background:#e2e8f0}\
.muted{color:#64748b}.gap{color:#9a3412;font-style:italic}\
.scroll{overflow:auto;max-height:80vh;border:1px solid #e2e8f0;border-radius:6px}\
.row,summary{display:grid;grid-template-columns:minmax(10em,1.3fr) minmax(8em,1.4fr) 9em minmax(4em,.7fr) 2fr;gap:0 10px;padding:3px 8px}\
.row{font-weight:600;background:#f8fafc;position:sticky;top:0;z-index:1}\
summary{cursor:pointer;list-style:none;overflow-wrap:anywhere}\
summary>span:first-child::before{content:'▸ ';color:#94a3b8}\
details[open]>summary>span:first-child::before{content:'▾ '}\
details{border-top:1px solid #f1f5f9}.rows{content-visibility:auto}\
details>:not(summary){margin:4px 8px 8px 5em}\
summary>span:last-child{position:relative}\
summary i,.legend i{position:absolute;top:5px;height:12px;min-width:2px;background:var(--c,#64748b)}\
summary i b,.legend .wait{position:absolute;left:0;height:100%;background:repeating-linear-gradient(45deg,#cbd5e1 0 3px,#f1f5f9 3px 6px)}\
.legend i{display:inline-block;position:relative;top:1px;width:24px;height:10px;margin:0 4px 0 12px}\
.succeeded{--c:#16a34a;--bg:#dcfce7;--fg:#166534}.failed{--c:#dc2626;--bg:#fee2e2;--fg:#991b1b}\
.timed_out{--c:#ea580c;--bg:#ffedd5;--fg:#9a3412}.cancelled{--c:#4b5563;--bg:#e5e7eb;--fg:#374151}\
.skipped{--c:#94a3b8;--bg:#f1f5f9;--fg:#475569}.running,.dispatching{--c:#2563eb;--bg:#dbeafe;--fg:#1e40af}\
.queued{--c:#ca8a04;--bg:#fef9c3;--fg:#854d0e}\
.status,summary>span>b{background:var(--bg);color:var(--fg)}summary>span>b{border-radius:4px;padding:0 4px;margin-right:4px}\
pre{background:#f8fafc;padding:8px;overflow:auto;max-height:480px;white-space:pre-wrap;word-break:break-all}\
ol{margin:4px 0;padding-left:20px}";

/// The report's whole page.
pub fn page(story: &RunStory) -> String {
    let status = status_word(story);
    let title = format!("sluice run {} — {status}", story.run_id);
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(CONTENT_POLICY);
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (header(story, status))
                (graph(story))
                (orders(story))
                (run_events(story))
            }
        }
    };
    markup.into_string()
}

fn status_word(story: &RunStory) -> &'static str {
    story.status.map_or("running", JobStatus::as_str)
}

fn header(story: &RunStory, status: &str) -> Markup {
    let counts = status_counts(story);
    html! {
        header id="run" {
            h1 { "Run " code { (story.run_id) } " " span class={ "status " (status) } { (status) } }
            dl class="head" {
                dt { "Flow" } dd { code { (safe(&story.flow_id)) } }
                @if let Some(user) = &story.user { dt { "Submitted by" } dd { (safe(user)) } }
                @if let Some(start) = story.started_ms { dt { "Started" } dd { (time(start)) } }
                @if let Some(end) = story.ended_ms {
                    dt { "Ended" } dd { (time(end)) }
                    @if let Some(start) = story.started_ms {
                        dt { "Took" } dd { (format_ms(end.saturating_sub(start))) }
                    }
                }
                @if let Some(code) = story.exit_code { dt { "Exit code" } dd { (code) } }
                @if let Some(of) = &story.rerun_of { dt { "Rerun of" } dd { code { (safe(of)) } } }
                @if let Some(by) = &story.cancelled_by { dt { "Cancelled by" } dd { (safe(by)) } }
                @if let Some(reason) = &story.reason { dt { "Reason" } dd { (safe(reason)) } }
                dt { "Orders" } dd { (story.orders.len()) @if !counts.is_empty() { ": " (counts) } }
            }
        }
    }
}

/// `3 succeeded, 1 failed`.
fn status_counts(story: &RunStory) -> String {
    let mut counts: Vec<(OrderStatus, usize)> = Vec::new();
    for order in &story.orders {
        match counts
            .iter_mut()
            .find(|(status, _)| *status == order.status)
        {
            Some((_, count)) => *count += 1,
            None => counts.push((order.status, 1)),
        }
    }
    let parts: Vec<String> = (counts.iter())
        .map(|(status, count)| format!("{count} {status}"))
        .collect();
    parts.join(", ")
}

fn graph(story: &RunStory) -> Markup {
    let boxes: Vec<Figure> = (story.orders.iter())
        .map(|order| Figure {
            lines: vec![
                shortened(&safe(&order.name), BOX_NAME_CHARS),
                box_status(order),
            ],
            class: order.status.as_str(),
            link: Some(format!("#o{}", order.num)),
        })
        .collect();
    let arrows: Vec<Arrow> = (story.orders.iter().enumerate())
        .flat_map(|(to, order)| {
            (order.waits_for.iter()).map(move |&from| Arrow {
                from,
                to,
                dashed: order.condition.is_some(),
                label: None,
            })
        })
        .collect();
    let drawing = svg::draw(&boxes, &arrows, svg::Surface::Page);
    html! {
        section id="graph" {
            h2 { "Graph" }
            @match drawing {
                Ok(svg) => div class="scroll" { (svg) },
                Err(error) => p class="gap" {
                    "The graph could not be laid out: " (error.to_string())
                },
            }
        }
    }
}

/// `failed · 1.20s`.
fn box_status(order: &OrderStory) -> String {
    match order.duration_ms {
        Some(ms) => format!("{} · {}", order.status, format_ms(ms)),
        None => order.status.to_string(),
    }
}

/// What every row of the orders table draws with.
struct Rows<'a> {
    /// The run's time axis (first time, last time), ms.
    span: Option<(u64, u64)>,
    /// The run's start: events' and bars' times are from it.
    start: u64,
    /// Where every log of the run is, said once above the rows.
    logs_at: &'a str,
    /// Whether the logs of orders that did not succeed start unfolded.
    unfold: bool,
    /// Whether the logs not read are all in `logs_at` under their order's number, which
    /// the legend says once (in a run of 10 000 orders, half a megabyte of notes fewer).
    unread_named_once: bool,
}

/// The orders table: a row per order (status, reason, exit code, duration, attempts,
/// outputs, and its timeline: a bar per attempt) that unfolds into the order's log and
/// events. Rows are `<details>` laid out as a grid, in groups laid out only when scrolled
/// to (`content-visibility`), so a run of 10 000 orders opens at once.
fn orders(story: &RunStory) -> Markup {
    let rows = Rows {
        span: story.span(),
        start: story.started_ms.unwrap_or_default(),
        logs_at: logs_folder(story),
        unfold: story.orders.len() <= UNFOLDED_UP_TO,
        unread_named_once: false,
    };
    let rows = Rows {
        unread_named_once: unread_named_by_number(story, rows.logs_at),
        ..rows
    };
    html! {
        section id="orders" {
            h2 { "Orders" }
            p class="legend muted" {
                "Unfold an order for its log and events (times from the run's start). "
                "Timeline: a bar per attempt;"
                i { b class="wait" style="width:100%" {} } "waiting to start"
                i class="succeeded" {} "running, coloured by how it ended."
                @if !rows.logs_at.is_empty() {
                    " Logs are stored in " code { (safe(rows.logs_at)) } "."
                }
                @if rows.unread_named_once {
                    " Those not shown (too many to show) are there, named by their order's number."
                }
            }
            div class="scroll" {
                div class="row" {
                    span { "Order" } span { "Status" } span { "Exit · duration · tries" }
                    span { "Outputs" } span { "Timeline" }
                }
                @for group in story.orders.chunks(ROWS_TOGETHER) {
                    @let height = group.len() * ROW_HEIGHT;
                    div class="rows" style={ "contain-intrinsic-size:auto " (height) "px" } {
                        @for order in group { (order_row(order, &rows)) }
                    }
                }
            }
        }
    }
}

/// An order's row, which unfolds into its log and events.
fn order_row(order: &OrderStory, rows: &Rows<'_>) -> Markup {
    let unwell = !matches!(order.status, OrderStatus::Succeeded | OrderStatus::Skipped);
    let unfolded = rows.unfold && unwell && order.status.is_terminal();
    html! {
        details id={ "o" (order.num) } class=(order.status.as_str()) open[unfolded] {
            summary {
                span { (order.num) " " (safe(&order.name)) }
                span {
                    b { (order.status.as_str()) }
                    @if let Some(reason) = &order.reason { " " (safe(reason)) }
                    @if let Some(from) = &order.reused_from { " reused from run " (safe(from)) }
                }
                span {
                    @match order.exit_code { Some(code) => (code), None => "–" }
                    " · " @match order.duration_ms { Some(ms) => (format_ms(ms)), None => "–" }
                    " · " (order.attempts.len())
                }
                span { (outputs(order)) }
                span {
                    @if let Some(span) = rows.span {
                        @for attempt in &order.attempts {
                            (bar(attempt, order.status, span, rows.start))
                        }
                    }
                }
            }
            (log(order, rows))
            (events(order, rows.start))
        }
    }
}

fn outputs(order: &OrderStory) -> Markup {
    html! {
        @for (name, value) in &order.outputs {
            code { (safe(name)) "=" (safe(&shortened(value, 80))) } " "
        }
        @for name in &order.withheld_outputs {
            code { (safe(name)) } span class="muted" { " (withheld: holds a secret) " }
        }
        @if order.outputs.is_empty() && order.withheld_outputs.is_empty() {
            @if let Some(key) = &order.outputs_key {
                span class="muted" { "at " code { (safe(key)) } }
            }
        }
    }
}

/// One attempt's bar, coloured by how it ended, its wait to start hatched at its left.
fn bar(
    attempt: &AttemptBar,
    order: OrderStatus,
    (start, end): (u64, u64),
    run_start: u64,
) -> Markup {
    let length = (end - start) as f64;
    let at = |ms: u64| (ms.clamp(start, end) - start) as f64 / length * 100.0;
    let (Some(dispatched), ready) = (attempt.dispatched_ms, attempt.ready_ms) else {
        return html! {};
    };
    let ready = ready.unwrap_or(dispatched).min(dispatched);
    let finished = attempt.finished_ms.unwrap_or(dispatched).max(dispatched);
    let waited = dispatched - ready;
    let mut style = String::new();
    let _ = write!(
        style,
        "left:{:.1}%;width:{:.1}%",
        at(ready),
        at(finished) - at(ready)
    );
    let mut title = format!(
        "{}: +{}",
        attempt.number,
        format_ms(ready.saturating_sub(run_start))
    );
    if waited > 0 {
        let _ = write!(title, ", waited {}", format_ms(waited));
    }
    let _ = write!(title, ", ran {}", format_ms(finished - dispatched));
    let wait_share = waited as f64 / (finished - ready).max(1) as f64 * 100.0;
    html! {
        // Coloured by its order's status (its row's class), unless it ended otherwise.
        i class=[(attempt.status != order).then_some(attempt.status.as_str())]
            style=(style) title=(title) {
            @if waited > 0 { b style={ "width:" (format!("{wait_share:.1}")) "%" } {} }
        }
    }
}

fn run_events(story: &RunStory) -> Markup {
    html! {
        @if let Some(why) = &story.events_unread {
            p class="gap" { "The run's events could not be read: " (safe(why)) }
        }
        @if !story.job_events.is_empty() {
            section id="run-events" {
                h2 { "Run events" }
                ol {
                    @for event in &story.job_events {
                        li {
                            (time(event.epoch_ms)) " " (safe(&event.event)) " "
                            code { (safe(&event.detail.to_string())) }
                        }
                    }
                }
            }
        }
    }
}

/// What there is of an order's log; where it is, less where all the run's logs are (said
/// once above the rows).
fn log(order: &OrderStory, rows: &Rows<'_>) -> Markup {
    let log = &order.log;
    let location = (log.location.as_deref()).map(|at| at.strip_prefix(rows.logs_at).unwrap_or(at));
    let shown = (log.head.len() + log.tail.as_ref().map_or(0, String::len)) as u64;
    // A `<pre>`'s first line break is dropped by the parser: one of ours goes first.
    html! {
        @if let Some(missing) = &log.missing {
            p class="muted" {
                "No log: " (safe(missing))
                @if let Some(at) = location { " (" code { (safe(at)) } ")" }
            }
        } @else if !log.cut && log.head.is_empty() {
            p class="muted" { "An empty log." }
        } @else if unread(log) && rows.unread_named_once {
            // The legend says where it is.
        } @else if unread(log) {
            p class="muted" {
                "Not shown"
                @if let Some(at) = location { ": " code { (safe(at)) } }
            }
        } @else {
            @if !log.head.is_empty() { pre { "\n" (log_text(&log.head)) } }
            @if log.cut {
                p class="gap" {
                    "… "
                    @match log.total_bytes {
                        Some(total) if shown > 0 => {
                            (total.saturating_sub(shown)) " of its " (total) " bytes not shown"
                        }
                        Some(total) => { "its " (total) " bytes not shown" }
                        None => "not shown",
                    }
                    @if let Some(at) = location { "; the whole log: " code { (safe(at)) } }
                    " …"
                }
            }
            @if let Some(tail) = &log.tail { pre { "\n" (log_text(tail)) } }
        }
    }
}

/// Whether nothing of a log was read (its share of a large run's budget was too small):
/// its row names where it is.
fn unread(log: &LogExcerpt) -> bool {
    log.cut && log.head.is_empty() && log.tail.is_none() && log.missing.is_none()
}

/// Whether every log not read is in `logs_at`, named by its order's number.
fn unread_named_by_number(story: &RunStory, logs_at: &str) -> bool {
    let mut unread_logs = story
        .orders
        .iter()
        .filter(|order| unread(&order.log))
        .peekable();
    unread_logs.peek().is_some()
        && unread_logs.all(|order| {
            let location = order.log.location.as_deref().unwrap_or_default();
            let name = location
                .strip_prefix(logs_at)
                .filter(|_| !logs_at.is_empty());
            name.is_some_and(|name| name.starts_with(&order.num.to_string()))
        })
}

/// Where every log of the run is (the longest start of their locations ending in `/`).
fn logs_folder(story: &RunStory) -> &str {
    let mut locations = story
        .orders
        .iter()
        .filter_map(|o| o.log.location.as_deref());
    let Some(first) = locations.next() else {
        return "";
    };
    let mut common = first.len();
    for location in locations {
        common = (first.bytes().zip(location.bytes()))
            .take(common)
            .take_while(|(a, b)| a == b)
            .count();
    }
    let slash = first.as_bytes()[..common]
        .iter()
        .rposition(|&byte| byte == b'/');
    slash.map_or("", |slash| &first[..=slash])
}

/// The events the order emitted, each at its time from `start` (the run's start). (The
/// engine's own — each attempt's dispatch and end — are its timeline's bars.)
fn events(order: &OrderStory, start: u64) -> Markup {
    let emitted: Vec<_> = (order.events.iter())
        .filter(|event| event.event.starts_with(EMITTED_PREFIX))
        .collect();
    html! {
        @if !emitted.is_empty() {
            ol {
                @for event in emitted {
                    li {
                        "+" (format_ms(event.epoch_ms.saturating_sub(start))) " "
                        b { (safe(event.event.trim_start_matches(EMITTED_PREFIX))) }
                        @if let Some(message) = event.detail.get("message").and_then(|m| m.as_str()) {
                            ": " (safe(message))
                        }
                    }
                }
            }
        }
    }
}

fn time(epoch_ms: u64) -> Markup {
    let stamp = format_timestamp(epoch_ms);
    html! { time datetime=(stamp) { (stamp.replacen('T', " ", 1)) } }
}

/// `text` with control and invisible characters shown escaped.
fn safe(text: &str) -> String {
    terminal_safe(text).into_owned()
}

/// A log's text: carriage returns ending lines, and its control characters (colour codes
/// among them) and invisible ones shown escaped, line by line, as on a terminal. (Colour
/// codes are not dropped: the worker masked secrets in the log as written, and a secret
/// split by one would be whole again without it.)
fn log_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<_> = text.split(['\n', '\r']).map(terminal_safe).collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logs_control_characters_show_escaped_and_colour_codes_stay() {
        // Dropping the colour code would make `hunter2` whole again, unmasked.
        assert_eq!(
            log_text("hun\u{1b}[31mter2\r\nb\u{202e}c"),
            "hun\\u{1b}[31mter2\nb\\u{202e}c"
        );
    }

    #[test]
    fn the_logs_folder_is_said_once() {
        let order = |location: &str| OrderStory {
            num: sluice_contract::OrderNum::from_index(0),
            name: "o".to_owned(),
            status: OrderStatus::Succeeded,
            reason: None,
            exit_code: None,
            duration_ms: None,
            waits_for: Vec::new(),
            condition: None,
            attempts: Vec::new(),
            outputs: Default::default(),
            withheld_outputs: Vec::new(),
            outputs_key: None,
            reused_from: None,
            log: LogExcerpt {
                location: Some(location.to_owned()),
                ..LogExcerpt::default()
            },
            events: Vec::new(),
        };
        let story = RunStory {
            run_id: "r".to_owned(),
            status: None,
            exit_code: None,
            flow_id: String::new(),
            user: None,
            started_ms: None,
            ended_ms: None,
            rerun_of: None,
            cancelled_by: None,
            reason: None,
            orders: vec![
                order("s3://b/tmp/logs/r/0001/log.txt"),
                order("s3://b/tmp/logs/r/0002/log.txt"),
                order("s3://b/tmp/logs/r/0003/log-2.txt"),
            ],
            job_events: Vec::new(),
            events_unread: None,
        };
        assert_eq!(logs_folder(&story), "s3://b/tmp/logs/r/");
        // Logs read are named in their rows; not read ones, once when named by number.
        assert!(!unread_named_by_number(&story, "s3://b/tmp/logs/r/"));
        let mut story = story;
        for (index, order) in story.orders.iter_mut().enumerate() {
            order.num = sluice_contract::OrderNum::from_index(index);
            order.log.cut = true;
        }
        assert!(unread_named_by_number(&story, "s3://b/tmp/logs/r/"));
        story.orders[2].log.location = Some("s3://b/tmp/callbacks/r/0003/a/result.json".into());
        let logs_at = logs_folder(&story);
        assert_eq!(logs_at, "s3://b/tmp/");
        assert!(!unread_named_by_number(&story, logs_at));
    }
}
