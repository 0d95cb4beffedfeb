//! Bad job files and bad usage: exit 3 with one clear line naming the problem, never a
//! panic or a backtrace, and nothing queued.

use crate::util::{Sandbox, sluice};

const T: &str = r#""timeout": 5"#;

fn cases() -> Vec<(&'static str, String, &'static [&'static str])> {
    vec![
        ("not json", "orders: [".to_owned(), &["not valid JSON"]),
        ("no orders", r#"{"orders": []}"#.to_owned(), &["no orders"]),
        (
            "unknown field",
            format!(r#"{{"orders": [{{"cmds": ["true"], {T}, "dependecies": ["x"]}}]}}"#),
            &["orders[0]", "dependecies"],
        ),
        (
            "cycle",
            format!(
                r#"{{"orders": [{{"order_name": "a", "cmds": ["true"], {T}, "dependencies": ["b"]}}, {{"order_name": "b", "cmds": ["true"], {T}, "dependencies": ["a"]}}]}}"#
            ),
            &["dependency cycle: a -> b -> a"],
        ),
        (
            "cycle through default queue ids",
            format!(
                r#"{{"orders": [{{"cmds": ["true"], {T}, "dependencies": [2]}}, {{"cmds": ["true"], {T}, "dependencies": ["1"]}}]}}"#
            ),
            &["dependency cycle", "order-1", "order-2"],
        ),
        (
            "unknown dependency",
            format!(
                r#"{{"orders": [{{"order_name": "deploy", "cmds": ["true"], {T}, "dependencies": ["biuld"]}}]}}"#
            ),
            &["order 0001 (deploy)", "unknown dependency \"biuld\""],
        ),
        (
            "duplicate queue_id",
            format!(
                r#"{{"orders": [{{"cmds": ["true"], {T}, "queue_id": "q"}}, {{"cmds": ["true"], {T}, "queue_id": "q"}}]}}"#
            ),
            &["order 0002", "queue_id \"q\" is already used"],
        ),
        (
            "duplicate order_name",
            format!(
                r#"{{"orders": [{{"cmds": ["true"], {T}, "order_name": "n"}}, {{"cmds": ["true"], {T}, "order_name": "n"}}]}}"#
            ),
            &["order 0002", "order_name \"n\" is already used"],
        ),
        (
            "empty cmds",
            format!(r#"{{"orders": [{{"cmds": [], {T}}}]}}"#),
            &["`cmds`", "empty"],
        ),
        (
            "missing timeout",
            r#"{"orders": [{"cmds": ["true"]}]}"#.to_owned(),
            &["`timeout`", "missing"],
        ),
        (
            "zero timeout",
            r#"{"orders": [{"cmds": ["true"], "timeout": 0}]}"#.to_owned(),
            &["`timeout`", "greater than 0"],
        ),
        (
            "both cmds and wasm",
            format!(r#"{{"orders": [{{"cmds": ["true"], "wasm": {{"module": "m.wasm"}}, {T}}}]}}"#),
            &["both `cmds` and `wasm`"],
        ),
        (
            "missing code_dir",
            format!(r#"{{"orders": [{{"cmds": ["true"], {T}, "code_dir": "nowhere"}}]}}"#),
            &["code_dir", "nowhere", "not a folder"],
        ),
    ]
}

fn assert_one_clear_line(name: &str, output: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{name}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{name}: one line expected, got:\n{stderr}");
    assert!(lines[0].starts_with("sluice: error: "), "{name}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{name}: {stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{name}: {needle:?} not in {stderr}"
        );
    }
}

#[test]
fn bad_jobs_exit_3_with_a_message_naming_the_problem() {
    let sandbox = Sandbox::new();
    for (name, json, needles) in cases() {
        let job = sandbox.write_job("job.json", &json);
        let output = sandbox.run(&job, &[]);
        assert_one_clear_line(name, &output, needles);
        assert!(output.stdout.is_empty(), "{name}: nothing on stdout");
        let validate = sluice().arg("validate").arg(&job).output().unwrap();
        assert_one_clear_line(name, &validate, needles);
    }
    assert!(
        !sandbox.state().exists(),
        "a bad job leaves no trace, not even a state folder"
    );
}

#[test]
fn a_missing_job_file_is_named() {
    let output = sluice()
        .args(["run", "/nonexistent/job.json"])
        .output()
        .unwrap();
    assert_one_clear_line("missing file", &output, &["/nonexistent/job.json"]);
}

#[test]
fn bad_usage_exits_3() {
    let output = sluice().arg("frobnicate").output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let output = sluice().args(["run"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let output = sluice()
        .args(["run", "x.json", "--concurrency", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let output = sluice().arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
}

/// A reader that stops reading (`sluice schema | head -1`) ends the printing, not
/// `sluice`: before, `println!` panicked on the closed pipe (exit 101).
#[test]
fn a_closed_stdout_ends_the_printing_quietly() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("schema")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
