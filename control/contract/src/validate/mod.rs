//! Job validation: every rule of the contract, checked fail-fast.
//!
//! [`validate`] turns a [`JobSpec`] into a [`ValidJob`]: defaults applied (names, queue ids,
//! targets, timeouts), dependencies resolved to order numbers, the graph checked for cycles.
//! The first problem found is returned as one [`ValidationError`] that names the order and
//! the field, so a user fixes one thing at a time with nothing to guess.
//!
//! Queue ids are compared after normalising numbers (`"01"`, `1` and `"1"` are the same id),
//! so a dependency on a default queue id (an order's position) resolves, and a cycle through
//! default queue ids is found like any other.
//!
//! This module holds the entry point, the validated types and what the rules share (the
//! error and its location, the limits); the rules themselves live beside the part of the job
//! they are about:
//!
//! - `order`: one order's fields (name, commands, timeout, target, env, credential
//!   locations) and the job's labels, idempotency key and pull request;
//! - `wasm`: a WebAssembly order's module, variables, mounts and limits;
//! - `code`: where an order's code comes from ([`CodeSource`], [`GitSource`]);
//! - `graph`: dependencies resolved to order numbers, and the graph checked for cycles;
//! - `inputs`: the outputs of earlier orders an order takes, resolved to its ancestors.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::caller::Caller;
use crate::credentials::SecretLocation;
use crate::ids::OrderNum;
use crate::job::JobSpec;
use crate::manifest::Task;
use crate::plan::OrderPlan;

mod code;
mod graph;
mod inputs;
mod order;
mod sandbox;
mod wasm;

pub use code::{CodeSource, GitSource};
pub use order::{MAX_IDEMPOTENCY_KEY_LEN, PullRequest};

/// Default `flow_label`.
pub const DEFAULT_FLOW_LABEL: &str = "exec";
/// Default `job_timeout`, seconds.
pub const DEFAULT_JOB_TIMEOUT: u64 = 3600;
/// How long an attempt's callback URL outlives the job's deadline (or the order's timeout),
/// seconds.
pub const PRESIGN_MARGIN: u64 = 300;
/// Longest life of a presigned URL: SigV4 presigned URLs live at most 7 days.
pub const MAX_PRESIGN_EXPIRY: u64 = 7 * 24 * 3600;
/// Longest order `timeout`: its callback URL must outlive it by [`PRESIGN_MARGIN`].
pub const MAX_ORDER_TIMEOUT: u64 = MAX_PRESIGN_EXPIRY - PRESIGN_MARGIN;
/// Longest `job_timeout`, 30 days.
pub const MAX_JOB_TIMEOUT: u64 = 30 * 24 * 3600;
/// Default memory limit of a WebAssembly order, MiB.
pub const DEFAULT_WASM_MEMORY_MB: u64 = 256;
/// Largest memory limit of a WebAssembly order, MiB: all a 32-bit module can address.
pub const MAX_WASM_MEMORY_MB: u64 = 4096;

/// Where a job will run; some fields only make sense in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// The local engine: `code_dir` allowed, `s3_location` may be a local path.
    Local,
    /// AWS: `username` required, `s3_location` must be `s3://`, no `code_dir`.
    Aws,
}

/// What validation needs to know beyond the job itself.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// Where the job will run.
    pub platform: Platform,
    /// Username used when the job has none (locally, `$USER`).
    pub default_username: Option<String>,
    /// The authenticated submitter, when the deployment knows one: the job runs under its
    /// name, and a job naming another `username` is refused.
    pub caller: Option<Caller>,
}

impl ValidateOptions {
    /// Options for the local engine, with the user to default `username` to.
    pub fn local(default_username: impl Into<String>) -> Self {
        ValidateOptions {
            platform: Platform::Local,
            default_username: Some(default_username.into()),
            caller: None,
        }
    }

    /// Options for AWS (a job must name its user).
    pub fn aws() -> Self {
        ValidateOptions {
            platform: Platform::Aws,
            default_username: None,
            caller: None,
        }
    }

    /// Options for AWS with an authenticated submitter: the job runs under its name.
    pub fn aws_from(caller: Caller) -> Self {
        ValidateOptions {
            caller: Some(caller),
            ..Self::aws()
        }
    }
}

/// An order that passed validation, with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidOrder {
    /// What the run and its stored row know of it.
    pub plan: OrderPlan,
    /// What it runs.
    pub task: Task,
    /// Where its code comes from.
    pub code: CodeSource,
    /// Its plain variables.
    pub env_vars: BTreeMap<String, String>,
    /// Where its credentials live, in the order they are merged into its env (`ssm_paths`,
    /// then `secret_manager_paths`; a later one overrides an earlier one's variable).
    pub credentials: Vec<SecretLocation>,
    /// An age recipient to encrypt its env to.
    pub sops_key: Option<String>,
}

/// A job that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    /// Who submitted it.
    pub username: String,
    /// Its flow label.
    pub flow_label: String,
    /// The job's deadline, seconds after init.
    pub job_timeout: u64,
    /// The pull request whose comment follows the run (`pr_number` set).
    pub pr: Option<PullRequest>,
    /// Whether to upload bundles without their env too.
    pub stripped_copy: bool,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// The orders, in order.
    pub orders: Vec<ValidOrder>,
}

impl ValidJob {
    /// The orders in waves: each wave's orders wait only for orders of earlier waves, so
    /// they can run at the same time; the first wave starts at once.
    pub fn waves(&self) -> Vec<Vec<&ValidOrder>> {
        graph::waves(&self.orders)
            .into_iter()
            .map(|wave| wave.into_iter().map(|i| &self.orders[i]).collect())
            .collect()
    }

    /// Every credential location the job names, with where (`order 0001 (plan), field
    /// `ssm_paths``): the orders' credentials, their git token or SSH key, the PR's token.
    pub fn credential_locations(&self) -> Vec<(String, &SecretLocation)> {
        let mut found = Vec::new();
        for order in &self.orders {
            let at = |field: &str| {
                format!(
                    "order {} ({}), field `{field}`",
                    order.plan.order_num, order.plan.order_name
                )
            };
            for location in &order.credentials {
                let field = match location {
                    SecretLocation::Ssm(_) => "ssm_paths",
                    SecretLocation::SecretsManager(_) => "secret_manager_paths",
                };
                found.push((at(field), location));
            }
            if let CodeSource::Git(git) = &order.code {
                if let Some(token) = &git.token_location {
                    found.push((at("git_token_location"), token));
                }
                if let Some(key) = &git.ssh_key_location {
                    found.push((at("git_ssh_key_location"), key));
                }
            }
        }
        if let Some(token) = self.pr.as_ref().and_then(|pr| pr.token_location.as_ref()) {
            found.push(("job field `git_token_location`".to_owned(), token));
        }
        found
    }
}

/// The first rule a job breaks: which order, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ValidationError {
    /// The order (or the job) and the field.
    pub location: Location,
    /// What is wrong, quoting the bad value.
    pub message: String,
}

/// Where a validation error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The order, as `(number, name)`; `None` for a job-level field.
    pub order: Option<(OrderNum, String)>,
    /// The field (`dependencies`, `cmds[2]`, `orders`).
    pub field: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.order {
            Some((num, name)) => write!(f, "order {num} ({name}), field `{}`", self.field),
            None => write!(f, "job, field `{}`", self.field),
        }
    }
}

// The helpers below are private to this module, and so visible to its submodules (the
// rules) and to nothing else.

/// An error in a job-level field.
fn job_error(field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        location: Location {
            order: None,
            field: field.to_owned(),
        },
        message: message.into(),
    }
}

/// The name and number of the order being checked, for error messages.
struct OrderCtx {
    num: OrderNum,
    name: String,
}

impl OrderCtx {
    /// An error in `field` of this order.
    fn error(&self, field: &str, message: impl Into<String>) -> ValidationError {
        ValidationError {
            location: Location {
                order: Some((self.num, self.name.clone())),
                field: field.to_owned(),
            },
            message: message.into(),
        }
    }
}

/// Normalises a queue id or reference: decimal numbers lose leading zeros.
fn normalise_ref(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let trimmed = text.trim_start_matches('0');
        if trimmed.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        }
    } else {
        text.to_owned()
    }
}

/// `0002 (build)`: the order at `index`, for messages naming another order.
fn orders_label(orders: &[ValidOrder], index: usize) -> String {
    let o = &orders[index];
    format!("{} ({})", o.plan.order_num, o.plan.order_name)
}

/// Checks every rule of the contract and applies defaults (see the module docs).
///
/// # Errors
///
/// The first [`ValidationError`] found.
pub fn validate(job: &JobSpec, options: &ValidateOptions) -> Result<ValidJob, ValidationError> {
    let username = match (&job.username, &options.caller, &options.default_username) {
        (Some(name), Some(caller), _) if *name != caller.name => {
            return Err(job_error(
                "username",
                format!(
                    "is {name:?}, but the job was submitted by {}, whose jobs run as {:?}: \
                     leave username out or give that",
                    caller.principal, caller.name
                ),
            ));
        }
        (_, Some(caller), _) => caller.name.clone(),
        (Some(name), None, _) => name.clone(),
        (None, None, Some(default)) => default.clone(),
        (None, None, None) => return Err(job_error("username", "is required")),
    };
    order::check_label("username", &username)?;
    let flow_label = job
        .flow_label
        .clone()
        .unwrap_or_else(|| DEFAULT_FLOW_LABEL.to_owned());
    order::check_label("flow_label", &flow_label)?;
    let job_timeout = job.job_timeout.unwrap_or(DEFAULT_JOB_TIMEOUT);
    if job_timeout == 0 || job_timeout > MAX_JOB_TIMEOUT {
        return Err(job_error(
            "job_timeout",
            format!("{job_timeout} s is out of range: give 1 to {MAX_JOB_TIMEOUT} seconds"),
        ));
    }
    if let Some(repo) = &job.git_repo {
        crate::repo_url::check(repo, options.platform)
            .map_err(|error| job_error("git_repo", error.to_string()))?;
    }
    if job.orders.is_empty() {
        return Err(job_error(
            "orders",
            "the job has no orders; give at least one",
        ));
    }
    if job.orders.len() > OrderNum::MAX as usize {
        return Err(job_error(
            "orders",
            format!(
                "the job has {} orders; at most {} are allowed",
                job.orders.len(),
                OrderNum::MAX
            ),
        ));
    }

    let mut orders = Vec::with_capacity(job.orders.len());
    let mut by_queue_id: HashMap<String, usize> = HashMap::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (index, spec) in job.orders.iter().enumerate() {
        let order = order::validate_order(job, spec, index, options.platform)?;
        let ctx = OrderCtx {
            num: order.plan.order_num,
            name: order.plan.order_name.clone(),
        };
        if let Some(&other) = by_queue_id.get(&order.plan.queue_id) {
            return Err(ctx.error(
                "queue_id",
                format!(
                    "queue_id {:?} is already used by order {}",
                    order.plan.queue_id,
                    orders_label(&orders, other)
                ),
            ));
        }
        if let Some(&other) = by_name.get(&order.plan.order_name) {
            return Err(ctx.error(
                "order_name",
                format!(
                    "order_name {:?} is already used by order {}",
                    order.plan.order_name,
                    orders_label(&orders, other)
                ),
            ));
        }
        by_queue_id.insert(order.plan.queue_id.clone(), index);
        by_name.insert(order.plan.order_name.clone(), index);
        orders.push(order);
    }

    for (index, spec) in job.orders.iter().enumerate() {
        let (depends_on, condition) =
            graph::resolve_dependencies(&orders[index], spec, &orders, &by_queue_id, &by_name)?;
        orders[index].plan.depends_on = depends_on;
        orders[index].plan.condition = condition;
    }
    graph::check_acyclic(&orders)?;
    for (index, spec) in job.orders.iter().enumerate() {
        orders[index].plan.inputs =
            inputs::resolve_inputs(index, spec, &orders, &by_queue_id, &by_name)?;
    }

    if let Some(key) = &job.idempotency_key {
        order::check_idempotency_key(key)?;
    }

    Ok(ValidJob {
        username,
        flow_label,
        job_timeout,
        pr: order::pull_request(job)?,
        stripped_copy: job.stripped_copy.unwrap_or(false),
        idempotency_key: job.idempotency_key.clone(),
        orders,
    })
}

/// Validates `json` as a local job of user `tester` (for the tests of every submodule).
#[cfg(test)]
fn check(json: &str) -> Result<ValidJob, ValidationError> {
    validate(
        &crate::job::parse_job(json.as_bytes()).unwrap(),
        &ValidateOptions::local("tester"),
    )
}

/// The message of the error validating `json` as `check` does.
#[cfg(test)]
fn error_of(json: &str) -> String {
    check(json).unwrap_err().to_string()
}

/// End-to-end rules of the job as a whole; each part's rules are tested in its submodule.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ExecutionTarget, parse_job};

    /// Fail-fast (the original specification's rule): a job with two bad orders reports
    /// the first, and only it.
    #[test]
    fn two_bad_orders_report_only_the_first() {
        let error = check(
            r#"{"orders":[{"cmds":["true"],"timeout":5},{"order_name":"second","timeout":5},{"order_name":"third","cmds":["true"]}]}"#,
        )
        .unwrap_err();
        let (num, name) = error.location.order.clone().expect("an order's error");
        assert_eq!((num, name.as_str()), (OrderNum::from_index(1), "second"));
        assert!(!error.to_string().contains("third"), "{error}");
    }

    #[test]
    fn defaults_are_applied() {
        let job = check(r#"{"orders":[{"cmds":["true"],"timeout":5},{"cmds":["true"],"timeout":5,"dependencies":["1"],"use_lambda":true}]}"#).unwrap();
        assert_eq!(job.username, "tester");
        assert_eq!(job.flow_label, "exec");
        assert_eq!(job.job_timeout, DEFAULT_JOB_TIMEOUT);
        let second = &job.orders[1];
        assert_eq!(second.plan.order_name, "order-2");
        assert_eq!(second.plan.queue_id, "2");
        assert!(second.plan.must_succeed);
        assert_eq!(second.plan.execution_target, ExecutionTarget::Lambda);
        assert_eq!(second.plan.depends_on, vec![OrderNum::from_index(0)]);
        assert_eq!(
            job.orders[0].plan.execution_target,
            ExecutionTarget::Codebuild
        );
    }

    #[test]
    fn no_orders() {
        assert!(error_of(r#"{"orders":[]}"#).contains("no orders"));
        assert!(error_of(r#"{}"#).contains("no orders"));
    }

    #[test]
    fn duplicates_are_rejected() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"queue_id":"q"},{"cmds":["true"],"timeout":5,"queue_id":"q"}]}"#,
        );
        assert!(
            e.contains("order 0002") && e.contains("queue_id \"q\" is already used by order 0001"),
            "{e}"
        );
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"order_name":"n"},{"cmds":["true"],"timeout":5,"order_name":"n"}]}"#,
        );
        assert!(e.contains("order_name \"n\" is already used"), "{e}");
        // An explicit queue id that collides with another order's default one.
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5},{"cmds":["true"],"timeout":5,"queue_id":"01"}]}"#,
        );
        assert!(e.contains("queue_id \"1\" is already used"), "{e}");
    }

    #[test]
    fn durations_are_bounded() {
        let e = error_of(r#"{"orders":[{"cmds":["true"],"timeout":18446744073709551615}]}"#);
        assert!(e.contains("`timeout`") && e.contains("longer than"), "{e}");
        let e = error_of(
            r#"{"job_timeout":18446744073709551615,"orders":[{"cmds":["true"],"timeout":5}]}"#,
        );
        assert!(
            e.contains("`job_timeout`") && e.contains("out of range"),
            "{e}"
        );
    }

    /// Callback URLs are minted per attempt at dispatch: a job written for when they were
    /// minted at init, with its `presign_expiry`, is still accepted.
    #[test]
    fn presign_expiry_is_accepted_and_ignored() {
        assert!(
            check(r#"{"presign_expiry":600,"orders":[{"cmds":["true"],"timeout":400}]}"#).is_ok()
        );
    }

    #[test]
    fn aws_requires_a_username() {
        let job = parse_job(br#"{"orders":[{"cmds":["true"],"timeout":5}]}"#).unwrap();
        let e = validate(&job, &ValidateOptions::aws())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`username`") && e.contains("required"), "{e}");
    }

    #[test]
    fn a_known_caller_is_the_username() {
        let caller =
            crate::caller::Caller::from_iam_arn("arn:aws:iam::123456789012:user/alice").unwrap();
        let options = ValidateOptions::aws_from(caller);
        let unnamed = parse_job(br#"{"orders":[{"cmds":["true"],"timeout":5}]}"#).unwrap();
        assert_eq!(validate(&unnamed, &options).unwrap().username, "alice");
        let own =
            parse_job(br#"{"username":"alice","orders":[{"cmds":["true"],"timeout":5}]}"#).unwrap();
        assert_eq!(validate(&own, &options).unwrap().username, "alice");
        let other =
            parse_job(br#"{"username":"bob","orders":[{"cmds":["true"],"timeout":5}]}"#).unwrap();
        let e = validate(&other, &options).unwrap_err().to_string();
        assert!(
            e.contains("`username`") && e.contains("user/alice, whose jobs run as \"alice\""),
            "{e}"
        );
    }
}
