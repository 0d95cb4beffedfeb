//! A [`JobGraph`] in Graphviz's DOT language (`sluice graph --format dot | dot -Tsvg`):
//! top to bottom, boxes, a conditional wait dashed and labelled with the outcomes it asks
//! for. Names and commands go in quoted strings, `"` and `\` escaped, `&` written `&amp;`
//! (Graphviz decodes entities in labels) and control characters written as spaces; lines
//! break with `\n`.

use std::fmt::Write as _;

use super::JobGraph;

/// The digraph's text.
pub fn render(graph: &JobGraph) -> String {
    let mut out = String::from(
        "digraph job {\n    rankdir=TB;\n    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n    edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    for node in &graph.nodes {
        let lines: Vec<String> = node.lines().iter().map(|line| escape(line)).collect();
        let label = lines.join("\\n");
        let _ = writeln!(out, "    \"{}\" [label=\"{label}\"];", node.order_num);
    }
    for edge in &graph.edges {
        let (from, to) = (&graph.nodes[edge.from], &graph.nodes[edge.to]);
        let _ = match &edge.outcomes {
            None => writeln!(out, "    \"{}\" -> \"{}\";", from.order_num, to.order_num),
            Some(outcomes) => writeln!(
                out,
                "    \"{}\" -> \"{}\" [style=dashed, label=\"{}\"];",
                from.order_num,
                to.order_num,
                escape(&outcomes.join(" / "))
            ),
        };
    }
    out.push_str("}\n");
    out
}

/// `text` safe inside a quoted DOT string.
fn escape(text: &str) -> String {
    super::escaped(text, |c, out| match c {
        '"' | '\\' => {
            out.push('\\');
            out.push(c);
            true
        }
        // Graphviz reads HTML entities in plain labels too: `&lt;` would show as `<`.
        '&' => {
            out.push_str("&amp;");
            true
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::graph_of;

    #[test]
    fn orders_and_waits_become_boxes_and_edges() {
        let graph = graph_of(
            r#"{"orders": [
                {"order_name": "plan \"x\"", "timeout": 5, "cmds": ["echo a\\b"]},
                {"order_name": "notify", "timeout": 5, "depends": "1.ended", "cmds": ["true"]}
            ]}"#,
        );
        let text = render(&graph);
        assert!(
            text.contains("\"0001\" [label=\"plan \\\"x\\\"\\ncodebuild · echo a\\\\b\"];"),
            "{text}"
        );
        assert!(
            text.contains("\"0001\" -> \"0002\" [style=dashed, label=\"ended\"];"),
            "{text}"
        );
        assert!(text.starts_with("digraph job {\n") && text.ends_with("}\n"));
    }

    #[test]
    fn entities_show_as_written() {
        assert_eq!(escape("a&lt;b &#x41;"), "a&amp;lt;b &amp;#x41;");
    }
}
