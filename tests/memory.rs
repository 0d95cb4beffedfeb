//! A huge output keeps the CLI's memory bounded, and its log is stored as its head and tail
//! around a marker saying how much was dropped. Alone in its test binary so that the peak
//! RSS of waited-for children is sluice's own.

mod util;

use nix::sys::resource::{UsageWho, getrusage};
use util::{Sandbox, succeeded};

#[test]
fn an_order_printing_2_gb_keeps_the_cli_under_100_mb_and_its_log_head_and_tail() {
    let sandbox = Sandbox::new();
    // A registered secret keeps the redactor busy on every byte.
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "loud", "timeout": 600,
            "env_vars": {"API_TOKEN": "tok-0123456789"},
            "cmds": ["echo START-OF-OUTPUT; yes 'a line of output that repeats, 0123456789' | head -c 2000000000; echo; echo \"END-OF-OUTPUT $API_TOKEN\""]}]}"#,
    );
    let output = sandbox.run(&job, &["--max-log-mb", "8"]);
    let done = succeeded(&output);
    let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB");

    let log_key = done.orders[0].log_key.clone().unwrap();
    let log = sandbox.object_path(&log_key);
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(
        (8 << 20..(8 << 20) + 200).contains(&size),
        "the stored log is its first and last 4 MiB and a marker: {size}"
    );
    let bytes = std::fs::read(&log).unwrap();
    assert!(bytes.starts_with(b"==> [1/1] echo START-OF-OUTPUT"));
    assert!(bytes.ends_with(b"END-OF-OUTPUT ***\n"));
    let marker = String::from_utf8_lossy(&bytes[4 << 20..(4 << 20) + 200]);
    let dropped: u64 = marker
        .strip_prefix("\n==> ")
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the marker follows the first 4 MiB: {marker}"));

    let results = sandbox.results_of("0001");
    assert_eq!(results.len(), 1, "{results:?}");
    let result = std::fs::read(&results[0]).unwrap();
    let result = sluice_contract::result::parse_result(&result).unwrap();
    assert!(result.log_truncated);
    assert!(result.log.len() <= sluice_contract::result::MAX_LOG_TAIL_BYTES);
    assert!(result.log.ends_with("END-OF-OUTPUT ***\n"));
    assert!(
        (2_000_000_000..2_000_000_200).contains(&result.log_bytes),
        "log_bytes is the whole log's size: {}",
        result.log_bytes
    );
    assert_eq!(
        dropped,
        result.log_bytes - (8 << 20),
        "the marker counts the gap"
    );
}
