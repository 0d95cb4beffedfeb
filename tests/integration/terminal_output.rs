//! What an order writes cannot drive the terminal of whoever reads `sluice run`: escape
//! sequences in its log, events and reason reach stdout and stderr as text.

use crate::util::Sandbox;

#[test]
fn escape_sequences_from_an_order_are_shown_escaped() {
    let sandbox = Sandbox::new();
    // OSC 0 retitles the window, OSC 52 writes the clipboard; one in the log, one in an event.
    let job = r#"{"orders": [{"order_name": "hostile", "timeout": 30, "cmds": [
        "printf '\\033]0;pwned\\007\\033]52;c;ZXZpbA==\\007 visible\\n'; printf '%s' '{\"kind\":\"progress\",\"message\":\"\\u001b]0;title\\u0007 half\"}' > \"$SLUICE_EVENTS_DIR/1.json\"; exit 3"]}]}"#;
    let job = sandbox.write_job("job.json", job);
    let output = sandbox.run_command(&job).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        !output.stdout.contains(&0x1b) && !output.stderr.contains(&0x1b),
        "an escape reached the terminal:\n{stdout:?}\n{stderr:?}"
    );
    // `--json`: the summary, with the failed order's log tail, is on stderr.
    assert!(
        stderr.contains(r"\u{1b}]0;pwned\u{7}\u{1b}]52;c;ZXZpbA==\u{7} visible"),
        "the log tail shows the sequences as text: {stderr}"
    );
}

#[test]
fn the_summary_stays_aligned_with_wide_characters_in_names() {
    let sandbox = Sandbox::new();
    let job = r#"{"orders": [
        {"order_name": "构建", "timeout": 30, "cmds": ["true"]},
        {"order_name": "b", "timeout": 30, "cmds": ["true"]}]}"#;
    let job = sandbox.write_job("job.json", job);
    let output = sandbox.run(&job, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // The column, in terminal cells, where `word` starts on `line` (CJK takes two cells).
    let cells_before = |line: &str, word: &str| {
        let at = line.find(word).unwrap();
        line[..at]
            .chars()
            .map(|c| {
                if ('\u{4e00}'..='\u{9fff}').contains(&c) {
                    2
                } else {
                    1
                }
            })
            .sum::<usize>()
    };
    let line_of = |start: &str| {
        stderr
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in {stderr}"))
    };
    let header = cells_before(line_of("ORDER"), "STATUS");
    assert_eq!(
        cells_before(line_of("0001"), "succeeded"),
        header,
        "{stderr}"
    );
    assert_eq!(
        cells_before(line_of("0002"), "succeeded"),
        header,
        "{stderr}"
    );
}
