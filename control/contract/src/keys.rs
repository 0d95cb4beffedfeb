//! The storage layout: the same keys in S3 and in the local directory store.
//!
//! Internal bucket: `tmp/exec/<run_id>/<order_num>/exec.zip`,
//! `tmp/callbacks/runs/<run_id>/<order_num>/result.json`,
//! `tmp/logs/<run_id>/<order_num>/log.txt`, `tmp/claims/<run_id>/<order_num>/<attempt>`,
//! `tmp/idempotency/<digest>.json`.
//! Done bucket: `<run_id>/done`.

use crate::ids::{OrderNum, RunId};

/// Prefix under which result callbacks land; its objects wake the orchestrator.
pub const CALLBACK_PREFIX: &str = "tmp/callbacks/runs/";

/// Where an order's bundle is stored.
pub fn exec_zip(run_id: &RunId, order_num: OrderNum) -> String {
    format!("tmp/exec/{run_id}/{order_num}/exec.zip")
}

/// Where the copy of an order's bundle without its encrypted env is (`stripped_copy`).
pub fn exec_zip_stripped(run_id: &RunId, order_num: OrderNum) -> String {
    format!("tmp/exec/{run_id}/{order_num}/exec-stripped.zip")
}

/// Where an order's result is called back to (`0000` is the init trigger).
pub fn result(run_id: &RunId, order_num: OrderNum) -> String {
    format!("{CALLBACK_PREFIX}{run_id}/{order_num}/result.json")
}

/// The prefix holding every result of a run.
pub fn run_callbacks(run_id: &RunId) -> String {
    format!("{CALLBACK_PREFIX}{run_id}/")
}

/// Where an order's full log is stored.
pub fn log(run_id: &RunId, order_num: OrderNum) -> String {
    format!("tmp/logs/{run_id}/{order_num}/log.txt")
}

/// The marker a worker writes (if absent) before it runs an attempt, so that an attempt
/// dispatched twice runs once.
pub fn claim(run_id: &RunId, order_num: OrderNum, attempt: &str) -> String {
    format!("tmp/claims/{run_id}/{order_num}/{attempt}")
}

/// Where the run a submission created is recorded, by the digest of its user and
/// idempotency key: a second submission with the same key gets the same run.
pub fn idempotency(digest: &str) -> String {
    format!("tmp/idempotency/{digest}.json")
}

/// Where a run's done document lives in the done bucket.
pub fn done(run_id: &RunId) -> String {
    format!("{run_id}/done")
}

/// Reads `tmp/callbacks/runs/<run_id>/<order_num>/result.json` back into its ids.
///
/// Returns `None` for any key outside that layout (so the orchestrator ignores it).
pub fn parse_result(key: &str) -> Option<(RunId, OrderNum)> {
    let rest = key.strip_prefix(CALLBACK_PREFIX)?;
    let mut parts = rest.split('/');
    let run_id = RunId::parse(parts.next()?)?;
    let order_num = parts.next()?.parse().ok()?;
    (parts.next()? == "result.json" && parts.next().is_none()).then_some((run_id, order_num))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_keys_round_trip_and_strangers_are_ignored() {
        let run = RunId::generate();
        let num = OrderNum::from_index(2);
        assert_eq!(parse_result(&result(&run, num)), Some((run.clone(), num)));
        assert_eq!(
            parse_result(&result(&run, OrderNum::INIT)),
            Some((run.clone(), OrderNum::INIT))
        );
        assert_eq!(parse_result(&log(&run, num)), None);
        assert_eq!(parse_result(&format!("{}/extra", result(&run, num))), None);
        assert_eq!(parse_result("tmp/callbacks/runs/x/0001/result.json"), None);
        assert!(result(&run, num).starts_with(&run_callbacks(&run)));
    }
}
