//! A job's DAG as a picture (`sluice graph`): one node per order — its name, where it runs
//! on AWS, what it runs, and its condition — and an edge from each order to each order
//! that waits for it, drawn dashed (labelled with the outcomes the condition asks of it)
//! when the wait is a `depends` condition rather than plain `dependencies`.
//!
//! [`JobGraph`] is what every format draws: [`mermaid`] (pastes into a PR comment or a
//! Markdown file, which render it), [`dot`] (Graphviz) and [`svg`] (drawn here, laid out
//! by [`layout`]; the run report draws a run with it too). Everything from the job file is
//! escaped for the format that carries it: a name or command cannot end a label and start
//! syntax of its own.

pub mod dot;
pub mod layout;
pub mod mermaid;
pub mod svg;

use sluice_contract::OrderNum;
use sluice_contract::condition::Expr;
use sluice_contract::manifest::Task;
use sluice_contract::validate::{ValidJob, ValidOrder};

/// Most characters of the command or module a node shows.
const SUMMARY_CHARS: usize = 48;
/// Most characters of the condition a node shows.
const CONDITION_CHARS: usize = 64;

/// A job's orders and what waits for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobGraph {
    /// One per order, in order.
    pub nodes: Vec<Node>,
    /// From an order to an order that waits for it.
    pub edges: Vec<Edge>,
}

/// One order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its number.
    pub order_num: OrderNum,
    /// Its name.
    pub name: String,
    /// Where it runs on AWS (`lambda`, `codebuild`).
    pub target: String,
    /// What it runs, shortened: its first command (and how many more), or its module.
    pub summary: String,
    /// Its `depends` condition as written, shortened, if it has one.
    pub condition: Option<String>,
}

/// An order waited for by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The index of the order waited for.
    pub from: usize,
    /// The index of the order that waits.
    pub to: usize,
    /// `None` for plain `dependencies`; for a `depends` condition, the outcomes it asks of
    /// the order waited for (`failed`, `skipped`, `!succeeded`).
    pub outcomes: Option<Vec<String>>,
}

impl Node {
    /// What its box says, line by line: its name, where and what it runs, its condition.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            self.name.clone(),
            format!("{} · {}", self.target, self.summary),
        ];
        if let Some(condition) = &self.condition {
            lines.push(format!("if {condition}"));
        }
        lines
    }
}

impl JobGraph {
    /// The graph of a valid job.
    pub fn of(job: &ValidJob) -> Self {
        let nodes = job.orders.iter().map(node).collect();
        let mut edges = Vec::new();
        for (to, order) in job.orders.iter().enumerate() {
            for waited in &order.plan.depends_on {
                let Some(from) = waited.index() else {
                    continue;
                };
                let outcomes = (order.plan.condition.as_ref())
                    .map(|condition| outcomes_of(&condition.expr, *waited));
                edges.push(Edge { from, to, outcomes });
            }
        }
        JobGraph { nodes, edges }
    }
}

fn node(order: &ValidOrder) -> Node {
    let plan = &order.plan;
    let summary = match &order.task {
        Task::Cmds(cmds) => {
            let first = cmds.first().map(String::as_str).unwrap_or_default();
            let first = (first.lines().map(str::trim))
                .find(|line| !line.is_empty())
                .unwrap_or_default();
            match cmds.len() {
                0 | 1 => shortened(first, SUMMARY_CHARS),
                n => format!("{} (+{} more)", shortened(first, SUMMARY_CHARS), n - 1),
            }
        }
        Task::Wasm(wasm) => {
            let call = std::iter::once(wasm.module.as_str())
                .chain(wasm.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            format!("wasm {}", shortened(&call, SUMMARY_CHARS))
        }
    };
    Node {
        order_num: plan.order_num,
        name: plan.order_name.clone(),
        target: plan.execution_target.to_string(),
        summary,
        condition: (plan.condition.as_ref()).map(|c| shortened(&c.text, CONDITION_CHARS)),
    }
}

/// The outcomes `expr` asks of the order `waited`, each once, in the order written; one
/// under an odd number of `!` as `!outcome`.
fn outcomes_of(expr: &Expr<OrderNum>, waited: OrderNum) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut stack = vec![(expr, false)];
    while let Some((expr, negated)) = stack.pop() {
        match expr {
            Expr::Term(num, outcome) if *num == waited => {
                let asked = match negated {
                    true => format!("!{}", outcome.as_str()),
                    false => outcome.as_str().to_owned(),
                };
                if !found.contains(&asked) {
                    found.push(asked);
                }
            }
            Expr::Term(..) => {}
            Expr::Not(inner) => stack.push((inner, !negated)),
            Expr::And(a, b) | Expr::Or(a, b) => {
                stack.push((b, negated));
                stack.push((a, negated));
            }
        }
    }
    found
}

/// `text` with control characters, line or paragraph separators (which JavaScript takes
/// for line ends) and the noncharacters XML forbids (U+FFFE, U+FFFF) written as spaces,
/// and each character `special` writes a replacement of
/// into the output (answering `true`) replaced: what each format escapes.
fn escaped(text: &str, special: impl Fn(char, &mut String) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FFFE}' | '\u{FFFF}') {
            out.push(' ');
        } else if !special(c, &mut out) {
            out.push(c);
        }
    }
    out
}

/// `text` cut to `max` characters, with `…` when cut.
pub(crate) fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use sluice_contract::{ValidateOptions, parse_job};

    use super::*;

    pub(crate) fn graph_of(json: &str) -> JobGraph {
        let job = parse_job(json.as_bytes()).unwrap();
        let valid =
            sluice_contract::validate::validate(&job, &ValidateOptions::local("u")).unwrap();
        JobGraph::of(&valid)
    }

    #[test]
    fn plain_and_conditional_waits_are_told_apart() {
        let graph = graph_of(
            r#"{"orders": [
                {"order_name": "build", "timeout": 5, "cmds": ["make all", "make test", "ls"]},
                {"order_name": "lint", "timeout": 5, "cmds": ["lint"], "execution_target": "lambda"},
                {"order_name": "deploy", "timeout": 5, "dependencies": ["build", "lint"],
                 "code_dir": "code", "wasm": {"module": "m.wasm", "args": ["--fast"]}},
                {"order_name": "cleanup", "timeout": 5,
                 "depends": "deploy.failed || deploy.timed_out || !build.succeeded",
                 "cmds": ["./cleanup.sh"]}
            ]}"#,
        );
        assert_eq!(graph.nodes[0].summary, "make all (+2 more)");
        assert_eq!(graph.nodes[1].target, "lambda");
        assert_eq!(graph.nodes[2].summary, "wasm m.wasm --fast");
        assert_eq!(
            graph.nodes[3].condition.as_deref(),
            Some("deploy.failed || deploy.timed_out || !build.succeeded")
        );
        let edge = |from, to| graph.edges.iter().find(|e| e.from == from && e.to == to);
        assert_eq!(edge(0, 2).unwrap().outcomes, None);
        assert_eq!(edge(1, 2).unwrap().outcomes, None);
        assert_eq!(
            edge(2, 3).unwrap().outcomes,
            Some(vec!["failed".to_owned(), "timed_out".to_owned()])
        );
        assert_eq!(
            edge(0, 3).unwrap().outcomes,
            Some(vec!["!succeeded".to_owned()])
        );
        assert_eq!(graph.edges.len(), 4);
    }

    #[test]
    fn long_commands_and_conditions_are_shortened() {
        assert_eq!(shortened("abcdef", 3), "abc…");
        assert_eq!(shortened("abc", 3), "abc");
        assert_eq!(shortened("ééé", 2), "éé…");
    }
}
