//! Run reports end to end: `sluice run --report` and `sluice report` write the same page,
//! which headless Chromium (Debian's `chromium`, installed by scripts/test) opens with the
//! network off: a box per order coloured by status, a bar per attempt, and an order's
//! hostile log shown as text, running nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_contract::{JobStatus, OrderStatus};

use crate::util::{Sandbox, done_of, sluice};

/// What the hostile order prints: markup that would run script if it were not escaped.
const HOSTILE: &str = r#"<script>document.title='pwned'</script><img src=x onerror="document.title='pwned'"><b onmouseover=alert(1)>x</b>"#;

/// Headless Chromium opening `page` with no network (every host name fails to resolve and
/// every connection goes to a closed port), in a profile of its own; `args` say what to
/// make of it (`--dump-dom`, `--screenshot=…`).
fn chromium(page: &Path, args: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().display()));
    // Chromium's own sandbox cannot start as root (CI runs tests as root).
    if nix::unistd::geteuid().is_root() {
        command.arg("--no-sandbox");
    }
    let output = command
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium (scripts/test installs Debian's chromium package)");
    assert!(output.status.success(), "chromium: {output:?}");
    output
}

/// The page's DOM once Chromium has loaded it (scripts run, if any could).
fn dom_of(page: &Path) -> String {
    String::from_utf8(chromium(page, &["--dump-dom".to_owned()]).stdout).unwrap()
}

/// Where a test leaves a screenshot for people to look at: `target/screenshots/`.
fn screenshot_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn screenshot(page: &Path, name: &str, size: &str) -> PathBuf {
    let path = screenshot_path(name);
    let _ = std::fs::remove_file(&path);
    chromium(
        page,
        &[
            format!("--screenshot={}", path.display()),
            format!("--window-size={size}"),
        ],
    );
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        path.display()
    );
    path
}

#[test]
fn a_runs_report_draws_its_orders_attempts_and_hostile_log_in_chromium() {
    let sandbox = Sandbox::new();
    let counter = sandbox.path().join("count");
    let job = serde_json::json!({"orders": [
        {"order_name": "build", "timeout": 10, "cmds": ["echo built; sleep 0.2"]},
        {"order_name": "flaky <em>tests", "timeout": 10, "dependencies": ["build"],
         "retry": {"limit": 2, "backoff": 0.1, "max_backoff": 0.1},
         "cmds": [format!("n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; [ $n -ge 1 ]", c = counter.display())]},
        {"order_name": "hostile", "timeout": 10, "dependencies": ["build"],
         "cmds": [format!("printf '%s\\n' '{}'; exit 3", HOSTILE.replace('\'', "'\\''"))]},
        {"order_name": "deploy", "timeout": 10, "dependencies": ["flaky <em>tests", "hostile"],
         "cmds": ["echo deploying"]},
        {"order_name": "notify", "timeout": 10, "depends": "hostile.failed", "cmds": ["echo told"]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let written = sandbox.path().join("run-report.html");
    let output = sandbox.run(&job, &["--report", written.to_str().unwrap()]);
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Failed);
    let statuses: Vec<OrderStatus> = done.orders.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [
            OrderStatus::Succeeded,
            OrderStatus::Succeeded,
            OrderStatus::Failed,
            OrderStatus::Failed,
            OrderStatus::Succeeded
        ]
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sluice: report of run"), "{stderr}");

    // `sluice report` of the finished run writes the same page.
    let reported = sandbox.path().join("report.html");
    let report = sluice()
        .args(["report", &done.run_id, "-o"])
        .arg(&reported)
        .arg("--state-dir")
        .arg(sandbox.state())
        .output()
        .unwrap();
    assert_eq!(report.status.code(), Some(0), "{report:?}");
    let page = std::fs::read_to_string(&reported).unwrap();
    assert_eq!(page, std::fs::read_to_string(&written).unwrap());

    // Self-contained: nothing is fetched, nothing runs.
    for outside in [
        " src=\"",
        "href=\"http",
        "url(http",
        "@import",
        "<script",
        "<link",
    ] {
        assert!(!page.contains(outside), "{outside} in the page");
    }

    let dom = dom_of(&reported);
    // The title no script rewrote.
    let title = format!("<title>sluice run {} — failed</title>", done.run_id);
    assert!(dom.contains(&title), "{dom}");
    // A box per order, coloured by its status, linking to its row.
    for (index, status) in statuses.iter().enumerate() {
        let node = format!(
            "<a href=\"#o{:04}\" class=\"{}\"",
            index + 1,
            status.as_str()
        );
        assert!(dom.contains(&node), "no {node} in the DOM");
    }
    assert_eq!(dom.matches("<rect ").count(), 5);
    // Arrows: build → flaky, build → hostile, flaky → deploy, hostile → deploy,
    // hostile ⇢ notify (dashed: a condition).
    assert_eq!(dom.matches("<path class=\"dashed\"").count(), 1);
    assert_eq!(
        dom.matches("<path ").count(),
        5 + 1,
        "5 arrows and the arrowhead"
    );
    // A bar per attempt: flaky ran twice, deploy not at all.
    assert_eq!(dom.matches(" style=\"left:").count(), 5, "{dom}");
    // flaky's first attempt failed: its bar says so, unlike the row's status.
    assert_eq!(
        dom.matches("<i class=\"failed\" style=\"left:").count(),
        1,
        "{dom}"
    );
    assert!(dom.contains("title=\"2: +"), "{dom}");
    // A row per order, its log unfolded when it failed.
    assert!(
        dom.contains("<details id=\"o0003\" class=\"failed\" open=\"\">"),
        "{dom}"
    );
    // The hostile log is text: no element came of it.
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x onerror="),
        "{dom}"
    );
    assert!(
        !dom.contains("<img") && !dom.contains("<b onmouseover"),
        "{dom}"
    );
    assert!(dom.contains("flaky &lt;em&gt;tests"));
    screenshot(&reported, "report.png", "1280,1400");
}

#[test]
fn a_report_of_no_known_run_is_refused() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"orders": [{"timeout": 5, "cmds": ["true"]}]}"#,
    );
    assert_eq!(
        done_of(&sandbox.run(&job, &[])).status,
        JobStatus::Succeeded
    );
    let report = |run: &str, state: &Path| {
        sluice()
            .args(["report", run, "--state-dir"])
            .arg(state)
            .current_dir(sandbox.path())
            .output()
            .unwrap()
    };
    for (run, state, says) in [
        ("not-a-run", sandbox.state(), "is not a run id"),
        (
            "6f1c1a2e-8d3b-4c0e-9a57-0b1f4c7d2e10",
            sandbox.state(),
            "has no orders",
        ),
        (
            "6f1c1a2e-8d3b-4c0e-9a57-0b1f4c7d2e10",
            sandbox.path().join("nothing"),
            "holds no runs",
        ),
    ] {
        let output = report(run, &state);
        assert_eq!(output.status.code(), Some(3), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
    assert!(
        !sandbox.path().join("nothing").exists(),
        "no state folder is made"
    );
}

#[test]
fn a_job_is_drawn_as_svg_that_chromium_reads() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job_with_marks(
        "job.json",
        r#"{"orders": [
            {"order_name": "a & <b>", "timeout": 5, "cmds": ["echo \"x\" > y"]},
            {"order_name": "c", "timeout": 5, "dependencies": ["a & <b>"], "cmds": ["true"]},
            {"order_name": "d", "timeout": 5, "depends": "c.failed || 1.timed_out", "cmds": ["true"]}
        ]}"#,
    );
    let output = sluice()
        .args(["graph", "--format", "svg"])
        .arg(&job)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let svg = sandbox.path().join("job.svg");
    std::fs::write(&svg, &output.stdout).unwrap();
    let dom = dom_of(&svg);
    // Chromium parses it as XML: a parse error would be shown instead of the drawing.
    assert!(!dom.contains("error on line"), "{dom}");
    assert_eq!(dom.matches("<rect ").count(), 3, "{dom}");
    assert!(dom.contains("a &amp; &lt;b&gt;"), "{dom}");
    // `d`'s condition asks `c` to fail and order 1 to time out: a label on each arrow.
    assert!(
        dom.contains(">failed</text>") && dom.contains(">timed_out</text>"),
        "{dom}"
    );
    screenshot(&svg, "graph.png", "800,600");
}
