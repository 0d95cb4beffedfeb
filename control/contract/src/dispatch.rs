//! The payload a dispatcher hands to a worker (Lambda event, CodeBuild ticket, local task).

use serde::{Deserialize, Serialize};

use crate::ids::{AttemptId, OrderNum, RunId};

/// Everything a worker needs to fetch, unlock, run and report one order attempt — and
/// nothing more: a worker holds no credential of its own (on AWS its role may read and write
/// no data), so the dispatch carries one capability per operation the attempt needs, each for
/// this attempt's own objects, and the order's decryption identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchPayload {
    /// The run.
    pub run_id: RunId,
    /// The order.
    pub order_num: OrderNum,
    /// The attempt id the worker claims before running anything.
    pub attempt: AttemptId,
    /// Which attempt of the order this is: 1 for the first, 2 for its first retry… (the
    /// order sees it as `SLUICE_ATTEMPT`). Absent: 1.
    #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
    pub attempt_number: u32,
    /// GET: the order's bundle — or, with [`DispatchPayload::bundle_range`], the run's pack
    /// of bundles that holds it.
    pub bundle_url: Capability,
    /// Where the order's bundle is in the pack `bundle_url` names: the GET must send this
    /// range and entity tag as they are signed into the URL (its holder can read no other
    /// order's bundle). `None`: `bundle_url` is the bundle alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_range: Option<PinnedRange>,
    /// PUT, if absent: the attempt's claim.
    pub claim_url: Capability,
    /// GET: the attempt's claim, read back when a claim was there already (this worker's own
    /// earlier put whose answer was lost, or another worker's).
    pub claim_check_url: Capability,
    /// PUT: the order's full log (with [`DispatchPayload::log_in_result`], only a log
    /// longer than its result holds).
    pub log_url: Capability,
    /// The key `log_url` names, which the worker's result reports: a retry's attempt stores
    /// its log beside the first's. Absent: the manifest's `log_key` (the first attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
    /// Whether a log the result can hold byte for byte (UTF-8, at most
    /// [`MAX_LOG_TAIL_BYTES`](crate::result::MAX_LOG_TAIL_BYTES) once JSON-escaped) stays
    /// there alone rather than being stored at `log_url` too — unless the result is not
    /// stored: on AWS a PUT less per order; locally every log is a file one can open.
    /// Absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_in_result: bool,
    /// PUT, if absent: the attempt's result. Minted at dispatch for the attempt's own result
    /// key, living until the job's deadline and a margin.
    pub callback_url: Capability,
    /// PUT, if absent: where the order's outputs are stored, when it publishes any
    /// ([`crate::keys::outputs`]). Absent: the order may publish none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_url: Option<Capability>,
    /// GET: the run's cancel request ([`crate::keys::cancel_request`]), which the worker
    /// looks for every few seconds while the order runs, and stops it once it is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_url: Option<Capability>,
    /// The outputs of earlier orders the order takes: one source per order it takes from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputSource>,
    /// The order's private age identity, which decrypts its bundle's `env.json.age`.
    pub identity: OrderIdentity,
    /// For a WebAssembly order on AWS: where the compile function stores the code compiled
    /// from its module, which the worker loads (it has no compiler of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled: Option<SharedCode>,
}

/// The inputs an attempt takes from one earlier order, and where that order's outputs are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSource {
    /// GET: the outputs the order published ([`crate::outputs::PublishedOutputs`]).
    /// Absent when it published none: its inputs are missing, and the attempt fails before
    /// anything runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Capability>,
    /// The inputs taken from them (each naming that order).
    pub inputs: Vec<crate::outputs::Input>,
}

fn first_attempt() -> u32 {
    1
}

fn is_first_attempt(number: &u32) -> bool {
    *number == 1
}

/// Bytes `start .. start + len` of one version of an object: where one order's bundle is in
/// its run's pack ([`crate::keys::bundle_pack`]). Its GET sends `Range` for these bytes and
/// `If-Range` with the object's entity tag, both signed into its URL: S3 answers a range
/// whose `If-Range` names another version with the whole object, so an unsigned
/// `If-Range` would let the URL's holder read every bundle of the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedRange {
    /// The offset of the first byte.
    pub start: u64,
    /// How many bytes (at least one).
    pub len: u64,
    /// The object's entity tag, as S3 answered it (quotes included).
    pub etag: String,
}

impl PinnedRange {
    /// The HTTP `Range` header's value asking for exactly these bytes (`bytes=10-19`).
    pub fn range_header(&self) -> String {
        let last = self.start + self.len.max(1) - 1;
        format!("bytes={}-{last}", self.start)
    }
}

/// The compiled code of a WebAssembly order's module ([`crate::keys::compiled_code`]),
/// which the compile function stores for the run's workers. A worker loads it only for a
/// module whose sha256 is `module_sha256`; until it is there, the worker looks again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedCode {
    /// The sha256 (hex) of the module the code was compiled from.
    pub module_sha256: String,
    /// GET: the compiled code, once the compile function stored it — or
    /// [`COMPILE_FAILED`] and why.
    pub get_url: Capability,
}

/// How an object of compiled code begins when the compile function could not compile the
/// module: the rest is its message (`module run.wasm: invalid: ...`), the order's reason.
pub const COMPILE_FAILED: &[u8] = b"sluice: compile failed\n";

/// What init-job asks the compile function to do, once per WebAssembly module of a run on
/// AWS and engine setting: compile the module for the workers, with the engine settings
/// its orders use, and store the code (or why it cannot be compiled) where their
/// dispatches point ([`SharedCode`]). Like a dispatch, it carries capabilities only: the
/// compile function holds no credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileRequest {
    /// The run (for its log).
    pub run_id: RunId,
    /// The module's file name, for messages (`run.wasm`).
    pub module_name: String,
    /// GET: the module ([`crate::keys::module_to_compile`]).
    pub module_url: Capability,
    /// The sha256 (hex) init-job took of it: what is compiled must be it.
    pub module_sha256: String,
    /// Whether the orders meter fuel (the engine setting the code is compiled for).
    pub metered: bool,
    /// The longest timeout of the orders running the module, seconds: compiling longer is
    /// in vain, and is stopped.
    pub timeout: u64,
    /// PUT, if absent: the compiled code.
    pub code_url: Capability,
}

/// A URL that is its own authority (an S3 presigned URL, or a `file://` URL of the local
/// store): whoever holds it may do its one operation. Printed (`Debug`) and named in
/// messages by its path alone: its query holds the signature, and its host names the
/// bucket (and so the account).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capability(String);

impl Capability {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Capability(url.into())
    }

    /// The whole URL, signature included: for the request only, never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL's path — no scheme, host or query (the signature) — for messages.
    pub fn shown(&self) -> &str {
        let url = self.0.split(['?', '#']).next().unwrap_or(&self.0);
        match url.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
            None => url,
        }
    }
}

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capability({:?})", self.shown())
    }
}

/// An order's private age identity (`AGE-SECRET-KEY-1…`). Never printed (`Debug` hides it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderIdentity(String);

impl OrderIdentity {
    /// Wraps the identity's text.
    pub fn new(identity: impl Into<String>) -> Self {
        OrderIdentity(identity.into())
    }

    /// The identity's text, to decrypt with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for OrderIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderIdentity(<redacted>)")
    }
}

/// The marker a worker writes (if absent) at `keys::claim` before running an attempt.
///
/// Its presence tells a retried dispatch that the attempt already runs; its time tells the
/// watchdog when the order really started (a worker may wait for a free slot first). Its
/// `worker` id, fresh for each worker, tells a worker whose conditional put was answered
/// with an error (and retried, finding a claim) whether the claim is its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The attempt claimed.
    pub attempt: AttemptId,
    /// When the worker claimed it, ms since the epoch.
    pub claimed_at_ms: u64,
    /// The claiming worker's own id.
    #[serde(default)]
    pub worker: String,
}

/// The variables through which a CodeBuild worker receives its dispatch as a ticket
/// (issued by the dispatcher, `sluice_aws::ticket`; redeemed by the worker,
/// `sluice_worker_aws::ticket`).
pub mod ticket {
    /// The presigned GET of the ticket.
    pub const URL: &str = "SLUICE_TICKET_URL";
    /// The presigned DELETE of the ticket.
    pub const DELETE_URL: &str = "SLUICE_TICKET_DELETE_URL";
    /// The age identity the ticket is encrypted to (resolved by CodeBuild from the SSM
    /// parameter the build is given).
    pub const KEY: &str = "SLUICE_TICKET_KEY";
    /// The run the build is for, checked against the ticket's.
    pub const RUN_ID: &str = "SLUICE_RUN_ID";
    /// The order the build is for.
    pub const ORDER_NUM: &str = "SLUICE_ORDER_NUM";
    /// The attempt the build is for.
    pub const ATTEMPT: &str = "SLUICE_ATTEMPT";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_a_payload_shows_no_signature_and_no_identity() {
        let url = |key: &str| {
            Capability::new(format!(
                "https://b.s3.amazonaws.com/{key}?X-Amz-Signature=sig"
            ))
        };
        let payload = DispatchPayload {
            run_id: RunId::generate(),
            order_num: OrderNum::from_index(0),
            attempt: AttemptId::parse("a1").unwrap(),
            attempt_number: 1,
            bundle_url: url("exec.zip"),
            bundle_range: Some(PinnedRange {
                start: 10,
                len: 5,
                etag: "\"e\"".to_owned(),
            }),
            claim_url: url("claim"),
            claim_check_url: url("claim"),
            log_url: url("log.txt"),
            log_key: None,
            log_in_result: false,
            callback_url: url("result.json"),
            outputs_url: Some(url("outputs.json")),
            cancel_url: Some(url("cancel.json")),
            inputs: vec![InputSource {
                published: Some(url("plan-outputs.json")),
                inputs: vec![crate::outputs::Input {
                    env: "PLAN".to_owned(),
                    source: "plan.file".to_owned(),
                    order_num: OrderNum::from_index(1),
                    output: "file".to_owned(),
                }],
            }],
            identity: OrderIdentity::new("AGE-SECRET-KEY-1SECRET"),
            compiled: None,
        };
        let printed = format!("{payload:?}");
        assert!(printed.contains(r#"Capability("/exec.zip")"#), "{printed}");
        assert!(
            printed.contains(r#"Capability("/plan-outputs.json")"#),
            "{printed}"
        );
        assert!(
            !printed.contains("amazonaws"),
            "no bucket, no account: {printed}"
        );
        assert_eq!(
            Capability::new("file:///state/tmp/x?a=b").shown(),
            "/state/tmp/x"
        );
        assert!(
            !printed.contains("sig") && !printed.contains("SECRET"),
            "{printed}"
        );
        let json = serde_json::to_string(&payload).unwrap();
        assert!(json.contains("X-Amz-Signature=sig") && json.contains("AGE-SECRET-KEY-1SECRET"));
        assert_eq!(
            serde_json::from_str::<DispatchPayload>(&json).unwrap(),
            payload
        );
    }
}
