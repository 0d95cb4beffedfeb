//! The job payload, exactly as users write it.
//!
//! These types mirror the JSON a user submits; every field of the design's job and order
//! contract is here, and nothing else is accepted: an unknown field (`dependecies`) is an
//! error that names the field and where it is. Defaults that depend on an order's position
//! (its name, its queue id) are applied by [`crate::validate`], which turns a [`JobSpec`]
//! into a [`crate::ValidJob`].

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// A job: job-level settings plus a non-empty list of orders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Accepted and ignored: the JSON Schema an editor checks the file against (`sluice
    /// schema` prints it).
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Who submitted the job; required on AWS, defaults to `$USER` locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Label that ends the flow id (default `exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_label: Option<String>,
    /// Repository the orders' code comes from, unless an order names its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<String>,
    /// Credential location of an HTTPS token for `git_repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_token_location: Option<String>,
    /// Credential location of an SSH key for `git_repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ssh_key_location: Option<String>,
    /// Commit of `git_repo` to check out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_hash: Option<String>,
    /// VCS provider for PR comments (default `github`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_provider: Option<String>,
    /// Accepted and ignored: callback URLs were minted at init and lived this long; they are
    /// now minted per attempt at dispatch, living until the job's deadline plus 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presign_expiry: Option<u64>,
    /// Seconds after which the whole job is timed out (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_timeout: Option<u64>,
    /// Pull request to comment on; no comments when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<u64>,
    /// Upload a copy of each bundle without the encrypted env, for inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripped_copy: Option<bool>,
    /// A key of the caller's (1 to 128 of `A-Z a-z 0-9 . _ : -`) that makes submitting the
    /// job again harmless: the same user submitting the same key gets the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The orders, in order; an order's position gives its number (`0001` first).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub orders: Vec<OrderSpec>,
}

/// One order of a job, as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderSpec {
    /// Shell commands, each run with `sh -c` in turn (exclusive with `wasm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmds: Option<Vec<String>>,
    /// A WebAssembly module to run instead of commands (exclusive with `cmds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmSpec>,
    /// Seconds the order may run (required, > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout: Option<u64>,
    /// The order's name (default `order-<n>`, n being its 1-based position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_name: Option<String>,
    /// Id other orders use to depend on this one (default: its 1-based position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<Reference>,
    /// Queue ids or order names of the orders this one waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Reference>,
    /// A condition instead of `dependencies`: the order waits until every order it names
    /// has ended, then runs if it holds, else is skipped. Terms `<order name or
    /// queue_id>.succeeded|failed|timed_out|skipped|cancelled|ended`, with `&&`, `||`, `!`
    /// and parentheses: `"build.succeeded && (lint.failed || lint.skipped)"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub depends: Option<String>,
    /// Run the order again after it fails or times out (see [`RetrySpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Outputs of earlier orders this one takes as variables: `{"PLAN_FILE":
    /// "plan.plan_file"}` sets `PLAN_FILE` to the output `plan_file` of the order named (by
    /// name or queue id) `plan`, which must be among this order's ancestors. A WebAssembly
    /// order must also list the variable in `wasm.env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// Whether this order's outcome decides the job (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_succeed: Option<bool>,
    /// Code as a zip: `s3://bucket/key.zip` on AWS; locally also a path or `file://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_location: Option<String>,
    /// Code from a repository (with `git_token_location` or `git_ssh_key_location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<String>,
    /// Credential location of an HTTPS token for `git_repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_token_location: Option<String>,
    /// Credential location of an SSH key for `git_repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ssh_key_location: Option<String>,
    /// Folder of `git_repo` that holds the order's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_folder: Option<String>,
    /// Commit of `git_repo` to check out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_hash: Option<String>,
    /// Local engine only: a folder holding the order's code (relative to the job file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_dir: Option<String>,
    /// Plain environment variables of the order (stored encrypted in its bundle).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    /// SSM credential locations merged into the env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssm_paths: Vec<String>,
    /// Secrets Manager credential locations merged into the env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_manager_paths: Vec<String>,
    /// An age recipient to encrypt the env to, instead of a fresh per-order key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sops_key: Option<String>,
    /// Where the order runs on AWS (default `codebuild`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_target: Option<ExecutionTarget>,
    /// Older spelling of `execution_target`: `true` = `lambda`, `false` = `codebuild`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_lambda: Option<bool>,
    /// What a shell order may reach beyond its own folders when `sluice run` sandboxes it
    /// (see [`SandboxSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSpec>,
}

/// Most paths an order's `sandbox.read` or `sandbox.write` lists.
pub const MAX_SANDBOX_PATHS: usize = 64;

/// A shell order's `sandbox` field: what it may reach beyond its own folders when `sluice
/// run` runs it in a sandbox (by default it sees a read-only system without the user's
/// home, the state folder or the job's folder, and no network). Paths are absolute, or
/// `~/…` for the home of the user running `sluice`; what they name is seen at the same
/// path. Not applied on AWS, where orders run in the worker's own isolation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Reach the network (default: a loopback of its own only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
    /// Files and folders it may read (`["~/.terraform.d"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub read: Vec<String>,
    /// Files and folders it may read and write (`["/var/cache/tofu"]`); a folder not there
    /// is made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub write: Vec<String>,
}

impl SandboxSpec {
    /// Whether it grants nothing.
    pub fn is_empty(&self) -> bool {
        !self.network && self.read.is_empty() && self.write.is_empty()
    }
}

impl fmt::Display for SandboxSpec {
    /// `network, read ~/.aws, write /cache`, or `nothing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.network {
            parts.push("network".to_owned());
        }
        for (verb, paths) in [("read", &self.read), ("write", &self.write)] {
            if !paths.is_empty() {
                parts.push(format!("{verb} {}", paths.join(" ")));
            }
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// An order's `retry` field: run it again after a failure or a time-out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Further attempts, 1 to 10.
    #[schemars(range(min = 1, max = 10))]
    pub limit: u32,
    /// Seconds before the second attempt (default 1; fractions allowed); each further
    /// delay doubles it, up to `max_backoff`, jittered between half and all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001, max = 86400.0))]
    pub backoff: Option<f64>,
    /// The longest delay, seconds (default 300, or `backoff` when that is longer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001, max = 86400.0))]
    pub max_backoff: Option<f64>,
    /// Which outcomes retry (default both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    pub on: Option<Vec<crate::retries::RetryOn>>,
    /// Retry a `failed` outcome only when its failing command exited with one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_codes: Option<Vec<i32>>,
}

/// The largest module file a WebAssembly order may name.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// A WebAssembly order: which module, and what of the host it may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmSpec {
    /// Path of the module, relative to the order's code root.
    pub module: String,
    /// Arguments after `argv[0]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Names of the order's variables the module may see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Directories of the code root mounted into the module.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<WasmDir>,
    /// Memory limit in MiB (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Optional fuel limit (instructions, roughly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
}

/// A directory mount of a WebAssembly order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmDir {
    /// Folder relative to the order's code root.
    pub host: String,
    /// Absolute path the module sees it at.
    pub guest: String,
    /// `ro` (default) or `rw`.
    #[serde(default)]
    pub mode: DirMode,
}

/// Access mode of a mounted directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DirMode {
    /// Read-only.
    #[default]
    Ro,
    /// Read-write.
    Rw,
}

/// Where an order runs on AWS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionTarget {
    /// The worker Lambda (short orders, up to 15 minutes).
    Lambda,
    /// A CodeBuild build (long orders).
    #[default]
    Codebuild,
}

impl ExecutionTarget {
    /// How long the platform lets one worker run, seconds: Lambda's 15 minutes, CodeBuild's
    /// 36 hours.
    pub const fn platform_limit(self) -> u64 {
        match self {
            ExecutionTarget::Lambda => 15 * 60,
            ExecutionTarget::Codebuild => 36 * 3600,
        }
    }

    /// What a worker needs on top of the order's timeout, seconds: fetching and unpacking
    /// the bundle before, the kill grace, the log upload and the callback after (and, on
    /// CodeBuild, provisioning the build container).
    pub const fn worker_margin(self) -> u64 {
        match self {
            ExecutionTarget::Lambda => 60,
            ExecutionTarget::Codebuild => 600,
        }
    }

    /// Longest order `timeout` this target can host, seconds.
    pub const fn max_order_timeout(self) -> u64 {
        self.platform_limit() - self.worker_margin()
    }
}

impl fmt::Display for ExecutionTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutionTarget::Lambda => "lambda",
            ExecutionTarget::Codebuild => "codebuild",
        })
    }
}

/// A queue id or a dependency reference: written as a string or as an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Reference(pub String);

impl Reference {
    /// The reference as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Reference {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Reference".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A queue id or an order name: a string, or a non-negative integer.",
            "anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
        })
    }
}

/// The JSON Schema (draft 2020-12) of a job file, for editors and checks before
/// submitting. It says what each field is and accepts; [`crate::validate`] checks the rest
/// (a job's orders, their references and limits), and is what decides.
pub fn job_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(JobSpec);
    schema.insert("title".to_owned(), "Sluice job".into());
    let mut schema = serde_json::to_value(schema).expect("a schema serializes");
    // Required although their types have serde defaults (so that a missing one is named
    // by validation, not by the parser).
    schema["required"] = serde_json::json!(["orders"]);
    schema["$defs"]["OrderSpec"]["required"] = serde_json::json!(["timeout"]);
    schema
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a string or a non-negative integer")]
        enum Raw {
            Text(String),
            Number(u64),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Text(text) => Reference(text),
            Raw::Number(n) => Reference(n.to_string()),
        })
    }
}

/// Why a job document could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes are not JSON, or not a job: the message names the field's path.
    #[error("{}{message}", if path == "." { String::new() } else { format!("{path}: ") })]
    Invalid {
        /// Where in the document (`orders[1].dependecies`, or `.` for the top).
        path: String,
        /// What is wrong there.
        message: String,
    },
}

/// Reads a job from JSON, rejecting unknown fields and naming where any problem is.
///
/// # Errors
///
/// [`ParseError::Invalid`] with the path of the offending field (for example
/// `orders[1]: unknown field "dependecies"`).
pub fn parse_job(bytes: &[u8]) -> Result<JobSpec, ParseError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("not valid JSON: {inner}")
        } else {
            inner.to_string()
        };
        ParseError::Invalid { path, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job file may name the schema an editor checks it against.
    #[test]
    fn a_schema_reference_is_accepted_and_ignored() {
        let job = parse_job(
            br#"{"$schema":"./sluice.schema.json","orders":[{"cmds":["true"],"timeout":1}]}"#,
        )
        .unwrap();
        assert_eq!(job.schema.as_deref(), Some("./sluice.schema.json"));
        let schema = job_schema();
        assert!(schema["properties"]["$schema"].is_object(), "{schema}");
    }

    #[test]
    fn unknown_order_field_names_the_field_and_the_order() {
        let err = parse_job(br#"{"orders":[{"cmds":["true"],"timeout":1},{"cmds":["true"],"timeout":1,"dependecies":["1"]}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("orders[1]"), "{err}");
        assert!(err.contains("dependecies"), "{err}");
    }

    #[test]
    fn unknown_job_field_is_rejected() {
        let err = parse_job(br#"{"orders":[],"job_timout":5}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("job_timout"), "{err}");
    }

    #[test]
    fn not_json_says_so() {
        let err = parse_job(b"orders: []").unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn references_accept_numbers_and_strings() {
        let job = parse_job(br#"{"orders":[{"cmds":["true"],"timeout":1,"queue_id":7,"dependencies":[3,"build"]}]}"#).unwrap();
        let order = &job.orders[0];
        assert_eq!(order.queue_id, Some(Reference("7".into())));
        assert_eq!(
            order.dependencies,
            vec![Reference("3".into()), Reference("build".into())]
        );
    }

    #[test]
    fn wasm_and_targets_parse() {
        let job = parse_job(br#"{"orders":[{"wasm":{"module":"m.wasm","dirs":[{"host":"d","guest":"/d","mode":"rw"}]},"timeout":1,"execution_target":"lambda"}]}"#).unwrap();
        let order = &job.orders[0];
        assert_eq!(order.wasm.as_ref().unwrap().dirs[0].mode, DirMode::Rw);
        assert_eq!(order.execution_target, Some(ExecutionTarget::Lambda));
    }
}
