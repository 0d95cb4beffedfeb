//! 6. Run reports (`scripts/bench [RUNS] report`): runs of a 500-wide job, a 100-deep chain
//!    with skip edges and 9 999 orders (100 waves of 100, each order waiting for two of the
//!    wave before), then for each: `sluice report`'s wall time, the page's size, and how
//!    long headless Chromium (Debian's `chromium`) takes to open and draw it — the wall time
//!    of `chromium --headless --screenshot` of the report less that of an empty page, median
//!    of the runs. The screenshots are left in `target/bench-reports/` to be looked at.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::figures::Figures;
use super::median;

/// The (earlier) orders order `i` of a job waits for.
type Waits = fn(usize) -> Vec<usize>;

/// The jobs: name, orders, and what each waits for.
fn jobs() -> Vec<(&'static str, usize, Waits)> {
    vec![
        // One order, 500 waiting for it, and one waiting for them all.
        ("wide_500", 502, |i| match i {
            0 => vec![],
            501 => (1..=500).collect(),
            _ => vec![0],
        }),
        // 100 deep: each order waits for the one before and the third before.
        ("deep_100", 100, |i| match i {
            0 => vec![],
            1..=2 => vec![i - 1],
            _ => vec![i - 1, i - 3],
        }),
        // 100 waves of 100: each order waits for the one above it and a neighbour's.
        ("waves_9999", 9999, |i| match i {
            0..100 => vec![],
            _ if i % 100 == 99 => vec![i - 100, i - 101],
            _ => vec![i - 100, i - 99],
        }),
    ]
}

pub fn report(runs: usize, figures: &mut Figures) {
    let chromium = which_chromium();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-reports");
    std::fs::create_dir_all(&out).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!doctype html><title>blank</title>").unwrap();
    let blank_wall = chromium
        .as_ref()
        .map(|c| median(runs, || open_in(c, &blank, None)));
    for (name, orders, waits) in jobs() {
        let job = write_job(dir.path(), name, orders, waits);
        let state = dir.path().join(format!("state-{name}"));
        let page = out.join(format!("{name}.html"));
        let run_id = run_with_report(&job, &state, &page);
        let written = median(runs, || {
            let started = Instant::now();
            let status = sluice()
                .args(["report", &run_id, "--state-dir"])
                .arg(&state)
                .arg("-o")
                .arg(&page)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            started.elapsed()
        });
        let bytes = std::fs::metadata(&page).unwrap().len();
        let mib = bytes as f64 / (1 << 20) as f64;
        let drawn = match (&chromium, blank_wall) {
            (Some(chromium), Some(blank)) => {
                let shot = out.join(format!("{name}.png"));
                let opened = median(runs, || open_in(chromium, &page, Some(&shot)));
                Some((
                    opened.saturating_sub(blank).as_secs_f64(),
                    blank.as_secs_f64(),
                ))
            }
            _ => None,
        };
        let drawn_text = match drawn {
            Some((draw, blank)) => format!(
                "opened and drawn by Chromium in {draw:.2} s (past an empty page's {blank:.2} s)"
            ),
            None => "not opened (no chromium)".to_owned(),
        };
        println!(
            "report of {name} ({orders} orders): written in {:.2} s, {mib:.2} MiB, {drawn_text}",
            written.as_secs_f64()
        );
        let large = orders > 5000;
        figures.record(
            &format!("report_{name}_write_s"),
            written.as_secs_f64(),
            "s",
            None,
        );
        figures.record(
            &format!("report_{name}_mib"),
            mib,
            "MiB",
            large.then_some("< 5"),
        );
        if let Some((draw, _)) = drawn {
            let goal = large.then_some("< 2");
            figures.record(&format!("report_{name}_chromium_s"), draw, "s", goal);
        }
    }
}

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn write_job(dir: &Path, name: &str, orders: usize, waits: Waits) -> PathBuf {
    let orders: Vec<serde_json::Value> = (0..orders)
        .map(|i| {
            serde_json::json!({
                "order_name": format!("{name}-{i}"),
                "cmds": [format!("echo order {i}")],
                "timeout": 60,
                "dependencies": waits(i).iter().map(|d| format!("{name}-{d}")).collect::<Vec<_>>(),
            })
        })
        .collect();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::json!({ "orders": orders }).to_string()).unwrap();
    path
}

/// Runs `job` with `--report page`; its run id.
fn run_with_report(job: &Path, state: &Path, page: &Path) -> String {
    let output = sluice()
        .arg("run")
        .arg(job)
        .args(["--json", "--concurrency", "32", "--state-dir"])
        .arg(state)
        .arg("--report")
        .arg(page)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let done: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    done["run_id"].as_str().unwrap().to_owned()
}

fn which_chromium() -> Option<PathBuf> {
    let found = Command::new("chromium").arg("--version").output();
    found
        .is_ok_and(|o| o.status.success())
        .then(|| PathBuf::from("chromium"))
}

/// The wall time of headless Chromium opening `page` and drawing it into a screenshot.
fn open_in(chromium: &Path, page: &Path, shot: Option<&Path>) -> Duration {
    let profile = tempfile::tempdir().unwrap();
    let scratch = profile.path().join("shot.png");
    let shot = shot.unwrap_or(&scratch);
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1400,1800",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().display()));
    command.arg(format!("--screenshot={}", shot.display()));
    if nix::unistd::geteuid().is_root() {
        command.arg("--no-sandbox");
    }
    command.arg(format!("file://{}", page.display()));
    let started = Instant::now();
    let output = command.output().unwrap();
    let wall = started.elapsed();
    assert!(output.status.success(), "{output:?}");
    wall
}
