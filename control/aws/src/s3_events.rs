//! What the orchestrator Lambda does with an S3 notification ([`S3Notification`]): every
//! record's key is URL-decoded (S3 encodes keys in events, spaces as `+`), keys outside the
//! callback layout (`tmp/callbacks/runs/<run_id>/<order_num>/<attempt>/result.json`) are
//! ignored, and the orchestrator runs once per distinct run, whatever the number of records,
//! told which results the records name (so its first step reads them without listing).

use std::collections::BTreeMap;

use aws_lambda_events::s3::S3Entity;
use serde::Deserialize;
use sluice_contract::{RunId, keys};
use sluice_engine::orchestrator::{Arrivals, Outcome};
use sluice_engine::{Engine, EngineError};

/// An S3 notification as the orchestrator reads it: of each record, only what S3 says of
/// the object (aws_lambda_events' [`S3Entity`]). aws_lambda_events' whole `S3Event` would
/// also require the request's identity, parameters and time, which the orchestrator does not
/// use and which not every sender writes (moto's notifications have none); S3's test event,
/// which has no records, is a notification of nothing.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct S3Notification {
    /// The records (none in a test event).
    #[serde(rename = "Records", default)]
    pub records: Vec<S3NotificationRecord>,
}

/// One record of an [`S3Notification`].
#[derive(Debug, Clone, Deserialize)]
pub struct S3NotificationRecord {
    /// The bucket and the object.
    pub s3: S3Entity,
}

/// The distinct runs whose callbacks a notification reports, in order, each with the
/// results it names.
pub fn runs_in_event(event: &S3Notification) -> BTreeMap<RunId, Arrivals> {
    let mut runs: BTreeMap<RunId, Arrivals> = BTreeMap::new();
    let results = (event.records.iter())
        .filter_map(|record| record.s3.object.key.as_deref())
        .filter_map(|key| keys::parse_result(&url_decode(key)));
    for result in results {
        (runs.entry(result.run_id).or_default()).insert((result.order_num, result.attempt));
    }
    runs
}

/// Runs the orchestrator once for each run of the event; returns each run's outcome.
///
/// # Errors
///
/// The first run whose orchestration failed (the others still ran); Lambda then retries
/// the event, which is safe: orchestration is idempotent.
pub async fn orchestrate_event(
    engine: &Engine,
    event: &S3Notification,
) -> Result<Vec<(RunId, Outcome)>, EngineError> {
    let mut outcomes = Vec::new();
    let mut first_error = None;
    for (run_id, arrived) in runs_in_event(event) {
        match engine.orchestrate_notified(&run_id, arrived).await {
            Ok(outcome) => outcomes.push((run_id, outcome)),
            Err(error) => {
                tracing::error!(run_id = %run_id, %error, "orchestration failed");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(outcomes),
    }
}

/// Decodes an S3 event key: form encoding, spaces as `+` (a `+` itself is `%2B`).
fn url_decode(key: &str) -> String {
    percent_encoding::percent_decode_str(&key.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_and_only_callbacks_count() {
        assert_eq!(url_decode("a%2Fb+c%3A"), "a/b c:");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz"), "%zz");
        let run = RunId::generate();
        let other = RunId::generate();
        let event = serde_json::json!({"Records": [
            {"s3": {"bucket": {"name": "b"}, "object": {"key": format!("tmp/callbacks/runs/{run}/0001/a1/result.json")}}},
            {"s3": {"bucket": {"name": "b"}, "object": {"key": format!("tmp%2Fcallbacks%2Fruns%2F{run}%2F0002%2Fa1%2Fresult.json")}}},
            {"s3": {"bucket": {"name": "b"}, "object": {"key": format!("tmp/callbacks/runs/{other}/0000/init/result.json")}}},
            {"s3": {"bucket": {"name": "b"}, "object": {"key": format!("tmp/logs/{run}/0001/log.txt")}}},
            {"s3": {"bucket": {"name": "b"}, "object": {"key": "tmp/callbacks/runs/not-a-run/0001/a1/result.json"}}},
            {"s3": {"bucket": {"name": "b"}, "object": {}}},
        ]});
        let event: S3Notification = serde_json::from_value(event).unwrap();
        let attempt = |id| sluice_contract::AttemptId::parse(id).unwrap();
        let num = sluice_contract::OrderNum::from_index;
        let expected = BTreeMap::from([
            (
                run,
                Arrivals::from([(num(0), attempt("a1")), (num(1), attempt("a1"))]),
            ),
            (
                other,
                Arrivals::from([(sluice_contract::OrderNum::INIT, attempt("init"))]),
            ),
        ]);
        assert_eq!(runs_in_event(&event), expected);
        let test_event = serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent"});
        let test_event: S3Notification = serde_json::from_value(test_event).unwrap();
        assert!(runs_in_event(&test_event).is_empty());
    }
}
