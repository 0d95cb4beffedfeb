//! `sluice graph` end to end: the DAG of a job in Mermaid and in DOT, the DOT drawn by
//! Graphviz (installed by scripts/test), whatever the orders' names and commands hold.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::util::{Sandbox, examples, sluice};

/// `dot -T<format>` of `text`: its exit code and output.
fn graphviz(text: &str, format: &str) -> (Option<i32>, String) {
    let mut dot = Command::new("dot")
        .arg(format!("-T{format}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Graphviz's dot (scripts/test installs the graphviz package)");
    dot.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = dot.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.is_empty(), "dot said: {said}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn graph(job: &std::path::Path, format: &str) -> std::process::Output {
    sluice()
        .arg("graph")
        .arg(job)
        .args(["--format", format])
        .output()
        .unwrap()
}

#[test]
fn the_example_release_flow_is_drawn_in_mermaid_and_by_graphviz() {
    let job = examples().join("release.json");
    let mermaid = graph(&job, "mermaid");
    assert_eq!(mermaid.status.code(), Some(0));
    let text = String::from_utf8(mermaid.stdout).unwrap();
    assert!(text.starts_with("flowchart TD\n"), "{text}");
    // Plain waits are arrows; `rollback`'s condition is a dotted arrow from each order it
    // names.
    assert!(text.contains(" --> "), "{text}");
    assert!(text.contains(" -.->|\""), "{text}");

    let dot = graph(&job, "dot");
    assert_eq!(dot.status.code(), Some(0));
    let text = String::from_utf8(dot.stdout).unwrap();
    let (code, svg) = graphviz(&text, "svg");
    assert_eq!(code, Some(0));
    assert!(svg.contains("<svg") && svg.contains("apply"), "{svg}");
}

#[test]
fn hostile_names_and_commands_stay_in_their_labels() {
    let sandbox = Sandbox::new();
    let job = serde_json::json!({"orders": [
        {"order_name": "a\"];evil[\"x", "timeout": 5, "cmds": ["echo \"}\" \\\\ <b>|x|</b>"]},
        {"order_name": "b-->c", "timeout": 5, "depends": "1.failed || !1.succeeded",
         "cmds": ["printf '%s\\n' \"digraph { x }\""]},
        {"order_name": "set direction LR", "timeout": 5, "cmds": ["echo\u{2028}%% hidden"]},
    ]});
    let job = sandbox.write_job("job.json", &job.to_string());
    // Graphviz reads two nodes and one edge, the labels as written.
    let text = String::from_utf8(graph(&job, "dot").stdout).unwrap();
    let (code, json) = graphviz(&text, "json");
    assert_eq!(code, Some(0), "{text}");
    let drawn: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(drawn["objects"].as_array().unwrap().len(), 3, "{text}");
    assert_eq!(drawn["edges"].as_array().unwrap().len(), 1, "{text}");
    // (Graphviz gives labels back as written in DOT: its `\n` line breaks as they are.)
    let label = drawn["objects"][0]["label"].as_str().unwrap();
    assert!(label.starts_with("a\"];evil[\"x\\n"), "{label}");
    assert_eq!(drawn["edges"][0]["label"], "failed / !succeeded");
    // In Mermaid, no character that could end a label or start syntax is left as it is.
    let text = String::from_utf8(graph(&job, "mermaid").stdout).unwrap();
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_once("[\"").map(|(_, rest)| rest))
        .collect();
    assert_eq!(labels.len(), 3, "{text}");
    // Mermaid's lexer takes `direction LR` anywhere on a line for a statement, and a line
    // separator for a line end (after which `%%` comments out the label's end).
    assert!(!text.to_lowercase().contains("direction"), "{text}");
    assert!(!text.contains(['\u{2028}', '\u{2029}']), "{text}");
    for label in labels {
        let inside = label
            .strip_suffix("\"]")
            .expect("the label ends where it should");
        let text = inside.replace("<br/>", "");
        assert!(!text.contains(['"', '[', ']', '<', '>', '|']), "{inside}");
    }
}

#[test]
fn an_invalid_job_is_refused_as_run_refuses_it() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "a", "timeout": 5, "cmds": ["true"], "dependencies": ["nope"]}]}"#,
    );
    let output = graph(&job, "dot");
    assert_eq!(output.status.code(), Some(3));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("nope"), "{said}");
}
