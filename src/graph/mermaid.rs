//! A [`JobGraph`] as a Mermaid flowchart (top to bottom), which GitHub renders in a PR
//! comment or a Markdown file (inside a `mermaid` code block).
//!
//! Nodes are `n0001`, `n0002`, … (not `o…` or `x…`, which after an arrow Mermaid reads as
//! a circle or a cross end); labels are quoted strings in which every character that
//! could end the string or mean something to Mermaid or HTML (`"`, `#`, `&`, `<`, `>`, `|`,
//! `` ` ``, `\`, brackets and braces) is written as Mermaid's entity code (`#34;`), and control
//! characters as spaces; lines break with `<br/>`. A conditional wait is a dotted arrow
//! (`-.->`) labelled, between pipes, with the outcomes it asks for.

use std::fmt::Write as _;

use super::JobGraph;

/// The flowchart's text.
pub fn render(graph: &JobGraph) -> String {
    let mut out = String::from("flowchart TD\n");
    for node in &graph.nodes {
        let lines: Vec<String> = node.lines().iter().map(|line| escape(line)).collect();
        let _ = writeln!(out, "    n{}[\"{}\"]", node.order_num, lines.join("<br/>"));
    }
    for edge in &graph.edges {
        let (from, to) = (&graph.nodes[edge.from], &graph.nodes[edge.to]);
        let _ = match &edge.outcomes {
            None => writeln!(out, "    n{} --> n{}", from.order_num, to.order_num),
            Some(outcomes) => writeln!(
                out,
                "    n{} -.->|\"{}\"| n{}",
                from.order_num,
                escape(&outcomes.join(" / ")),
                to.order_num
            ),
        };
    }
    out
}

/// `text` safe inside a quoted Mermaid label.
fn escape(text: &str) -> String {
    let escaped = super::escaped(text, |c, out| {
        let special = matches!(
            c,
            '"' | '#' | '&' | '<' | '>' | '|' | '`' | '[' | ']' | '{' | '}' | '\\'
        );
        if special {
            let _ = write!(out, "#{};", c as u32);
        }
        special
    });
    without_direction_words(&escaped)
}

/// `text` with the first letter of each `direction` (in any case) written as its code:
/// Mermaid's lexer takes `direction TB` anywhere on a line for a statement, even inside a
/// quoted label, and drops the node.
fn without_direction_words(text: &str) -> String {
    const WORD: &str = "direction";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(WORD) {
        out.push_str(&text[rest..at]);
        let first = text.as_bytes()[at];
        let _ = write!(out, "#{first};");
        rest = at + 1;
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::graph_of;

    #[test]
    fn orders_and_waits_become_nodes_and_arrows() {
        let graph = graph_of(
            r#"{"orders": [
                {"order_name": "plan", "timeout": 5, "cmds": ["tofu plan"]},
                {"order_name": "apply", "timeout": 5, "dependencies": ["plan"], "cmds": ["tofu apply"]},
                {"order_name": "rollback", "timeout": 5, "depends": "apply.failed", "cmds": ["undo"]}
            ]}"#,
        );
        assert_eq!(
            render(&graph),
            "flowchart TD\n\
             \x20   n0001[\"plan<br/>codebuild · tofu plan\"]\n\
             \x20   n0002[\"apply<br/>codebuild · tofu apply\"]\n\
             \x20   n0003[\"rollback<br/>codebuild · undo<br/>if apply.failed\"]\n\
             \x20   n0001 --> n0002\n\
             \x20   n0002 -.->|\"failed\"| n0003\n"
        );
    }

    #[test]
    fn no_direction_statement_or_line_end_hides_in_a_label() {
        assert_eq!(escape("set Direction LR"), "set #68;irection LR");
        assert_eq!(escape("a\u{2028}%% x"), "a %% x");
    }

    #[test]
    fn nothing_in_a_label_ends_it() {
        assert_eq!(
            escape("a\"] --> x[\"<b>#1 & `c`|\n"),
            "a#34;#93; --#62; x#91;#34;#60;b#62;#35;1 #38; #96;c#96;#124; "
        );
    }
}
