//! A huge output keeps the CLI's memory bounded and its end intact. Alone in its test binary
//! so that the peak RSS of waited-for children is sluice's own.

mod util;

use nix::sys::resource::{UsageWho, getrusage};
use sluice_contract::JobStatus;
use util::{Sandbox, done_of};

#[test]
fn an_order_printing_200_mb_keeps_the_cli_under_100_mb() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "loud", "timeout": 300,
            "cmds": ["yes 'a line of output that repeats, 0123456789' | head -c 200000000; echo; echo END-OF-OUTPUT"]}]}"#,
    );
    let output = sandbox.run(&job, &[]);
    let done = done_of(&output);
    assert_eq!(
        done.status,
        JobStatus::Succeeded,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB");
    let log_key = done.orders[0].log_key.clone().unwrap();
    let log = sandbox.state().join("internal").join(log_key);
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size > 200_000_000, "the whole log is stored: {size}");
    let result = std::fs::read(
        sandbox
            .state()
            .join("internal/tmp/callbacks/runs")
            .join(&done.run_id)
            .join("0001/result.json"),
    )
    .unwrap();
    let result = sluice_contract::result::parse_result(&result).unwrap();
    assert!(result.log_truncated);
    assert!(result.log.len() <= sluice_contract::result::MAX_LOG_TAIL_BYTES);
    assert!(
        result.log.contains("END-OF-OUTPUT"),
        "the end of the output is kept"
    );
    assert!(result.log_bytes > 200_000_000);
}
