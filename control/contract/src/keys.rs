//! The storage layout: the same keys in S3 and in the local directory store.
//!
//! Internal bucket: `tmp/exec/<run_id>/<order_num>/exec.zip`,
//! `tmp/exec/<run_id>/packs/<pack>.bin` (AWS),
//! `tmp/callbacks/runs/<run_id>/<order_num>/<attempt>/result.json`,
//! `tmp/logs/<run_id>/<order_num>/log.txt`, `tmp/outputs/<run_id>/<order_num>/<attempt>.json`, `tmp/claims/<run_id>/<order_num>/<attempt>`,
//! `tmp/idempotency/<digest>.json`, `tmp/cancel/<run_id>.json`, `tmp/jobs/<run_id>.age`,
//! `tmp/builds/<run_id>/<order_num>/<attempt>/<build id>` (AWS),
//! `tmp/compiled/<run_id>/<module sha256>.wasm`,
//! `tmp/compiled/<run_id>/<target>/<module sha256>-<engine>.cwasm`.
//! Done bucket: `<run_id>/done`.

use crate::ids::{AttemptId, OrderNum, RunId};
use crate::job::ExecutionTarget;

/// Prefix under which result callbacks land; its objects wake the orchestrator.
pub const CALLBACK_PREFIX: &str = "tmp/callbacks/runs/";

/// Where an order's bundle is stored when it is not in one of its run's packs.
pub fn exec_zip(run_id: &RunId, order_num: OrderNum) -> String {
    format!("tmp/exec/{run_id}/{order_num}/exec.zip")
}

/// Where the run's pack `pack` (0, 1, ...) is on AWS: small bundles stored back to back,
/// one PUT for many orders; each order's row says where its bundle is in which pack.
pub fn bundle_pack(run_id: &RunId, pack: u32) -> String {
    format!("tmp/exec/{run_id}/packs/{pack}.bin")
}

/// Where the copy of an order's bundle without its encrypted env is (`stripped_copy`).
pub fn exec_zip_stripped(run_id: &RunId, order_num: OrderNum) -> String {
    format!("tmp/exec/{run_id}/{order_num}/exec-stripped.zip")
}

/// Where init-job stores a WebAssembly module (its sha256, hex) of a run on AWS for the
/// compile function to read.
pub fn module_to_compile(run_id: &RunId, module_sha256: &str) -> String {
    format!("tmp/compiled/{run_id}/{module_sha256}.wasm")
}

/// Where the compile function stores the code compiled from a WebAssembly module (its
/// sha256, hex) for the workers of one run on AWS, named by what decides the code: the
/// module, the platform and whether the engine meters fuel (`metered`). One run's only, as
/// the rest of a run's objects.
pub fn compiled_code(
    run_id: &RunId,
    target: ExecutionTarget,
    module_sha256: &str,
    metered: bool,
) -> String {
    let engine = if metered { "metered" } else { "plain" };
    format!("tmp/compiled/{run_id}/{target}/{module_sha256}-{engine}.cwasm")
}

/// Where an attempt of an order calls its result back to. Each attempt has its own key, so
/// a late or duplicated worker of an earlier attempt cannot overwrite the result of the
/// current one, and the orchestrator reads only the current attempt's.
pub fn result(run_id: &RunId, order_num: OrderNum, attempt: &AttemptId) -> String {
    format!("{CALLBACK_PREFIX}{run_id}/{order_num}/{attempt}/result.json")
}

/// The init trigger: the object init-job writes last, whose notification starts the run's
/// first pass.
pub fn trigger(run_id: &RunId) -> String {
    result(run_id, OrderNum::INIT, &AttemptId::init_trigger())
}

/// The prefix holding every result of a run.
pub fn run_callbacks(run_id: &RunId) -> String {
    format!("{CALLBACK_PREFIX}{run_id}/")
}

/// Where an order's full log is stored.
pub fn log(run_id: &RunId, order_num: OrderNum) -> String {
    format!("tmp/logs/{run_id}/{order_num}/log.txt")
}

/// Where attempt number `number` of an order stores its log: [`log`] for the first, and
/// `log-<number>.txt` beside it for each retry.
pub fn attempt_log(run_id: &RunId, order_num: OrderNum, number: u32) -> String {
    match number {
        0 | 1 => log(run_id, order_num),
        n => format!("tmp/logs/{run_id}/{order_num}/log-{n}.txt"),
    }
}

/// The cancel trigger: the object `sluice cancel` writes after the run's cancel request,
/// whose notification wakes a pass that cancels the run.
pub fn cancel_trigger(run_id: &RunId) -> String {
    result(run_id, OrderNum::INIT, &AttemptId::cancel_trigger())
}

/// Where a run's cancel request is ([`crate::cancel::CancelRequest`], written if absent).
/// Outside [`CALLBACK_PREFIX`]: its trigger is what wakes the run.
pub fn cancel_request(run_id: &RunId) -> String {
    format!("tmp/cancel/{run_id}.json")
}

/// Where a run's job is kept as it was submitted (sealed with age), for `sluice rerun` to
/// run it again. Read and written by init only: outside [`CALLBACK_PREFIX`], and no worker
/// is handed a URL to it.
pub fn job(run_id: &RunId) -> String {
    format!("tmp/jobs/{run_id}.age")
}

/// Where an attempt stores the outputs its order published
/// ([`crate::outputs::PublishedOutputs`]), which later orders of the run read. Outside
/// [`CALLBACK_PREFIX`]: storing them wakes nobody.
pub fn outputs(run_id: &RunId, order_num: OrderNum, attempt: &AttemptId) -> String {
    format!("tmp/outputs/{run_id}/{order_num}/{attempt}.json")
}

/// The marker a worker writes (if absent) before it runs an attempt, so that an attempt
/// dispatched twice runs once.
pub fn claim(run_id: &RunId, order_num: OrderNum, attempt: &AttemptId) -> String {
    format!("tmp/claims/{run_id}/{order_num}/{attempt}")
}

/// Where the CodeBuild ticket `name` (`<attempt>-<nonce>`) of an order is stored: the
/// dispatch payload encrypted to the build's own key (see `sluice_aws::ticket`).
pub fn ticket(run_id: &RunId, order_num: OrderNum, name: &str) -> String {
    format!("tmp/tickets/{run_id}/{order_num}/{name}.age")
}

/// Where the dispatcher records that it started the CodeBuild build `build_id` for an
/// attempt (an empty object, named by the build): a cancel stops the run's builds.
pub fn build(run_id: &RunId, order_num: OrderNum, attempt: &AttemptId, build_id: &str) -> String {
    format!("{}{order_num}/{attempt}/{build_id}", run_builds(run_id))
}

/// The prefix holding the records of every build a run's dispatches started.
pub fn run_builds(run_id: &RunId) -> String {
    format!("tmp/builds/{run_id}/")
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

/// The ids a result key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResultKey {
    /// The run.
    pub run_id: RunId,
    /// The order (`0000` for the init trigger).
    pub order_num: OrderNum,
    /// The attempt ([`AttemptId::init_trigger`] for the init trigger).
    pub attempt: AttemptId,
}

/// Reads `tmp/callbacks/runs/<run_id>/<order_num>/<attempt>/result.json` back into its ids.
///
/// Returns `None` for any key outside that layout (so the orchestrator ignores it), an
/// attempt id that [`AttemptId::parse`] refuses included.
pub fn parse_result(key: &str) -> Option<ResultKey> {
    let rest = key.strip_prefix(CALLBACK_PREFIX)?;
    let mut parts = rest.split('/');
    let run_id = RunId::parse(parts.next()?)?;
    let order_num = parts.next()?.parse().ok()?;
    let attempt = AttemptId::parse(parts.next()?)?;
    (parts.next()? == "result.json" && parts.next().is_none()).then_some(ResultKey {
        run_id,
        order_num,
        attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_keys_round_trip_and_strangers_are_ignored() {
        let run = RunId::generate();
        let num = OrderNum::from_index(2);
        let a1 = AttemptId::parse("a1").unwrap();
        let key = |order_num, attempt: &AttemptId| ResultKey {
            run_id: run.clone(),
            order_num,
            attempt: attempt.clone(),
        };
        assert_eq!(parse_result(&result(&run, num, &a1)), Some(key(num, &a1)));
        assert_eq!(
            parse_result(&trigger(&run)),
            Some(key(OrderNum::INIT, &AttemptId::init_trigger()))
        );
        assert_eq!(parse_result(&log(&run, num)), None);
        assert_eq!(
            parse_result(&format!("{}/extra", result(&run, num, &a1))),
            None
        );
        assert_eq!(
            parse_result(&format!("{CALLBACK_PREFIX}{run}/0002/result.json")),
            None
        );
        assert_eq!(
            parse_result(&format!("{CALLBACK_PREFIX}{run}/0002/a.b/result.json")),
            None
        );
        assert_eq!(
            parse_result("tmp/callbacks/runs/x/0001/a1/result.json"),
            None
        );
        assert!(result(&run, num, &a1).starts_with(&run_callbacks(&run)));
    }
}
