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

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::credentials::{SecretLocation, SecretStore, is_variable_name};
use crate::ids::OrderNum;
use crate::job::{ExecutionTarget, JobSpec, OrderSpec, Reference, WasmSpec};
use crate::manifest::Task;
use crate::paths::is_inside;

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

/// Where an order's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    /// No code: self-contained commands.
    None,
    /// A local folder (local engine only), as written in the job.
    Dir(String),
    /// A zip: `s3://bucket/key.zip`, or locally a path or `file://` URL.
    Zip(String),
    /// A folder of a repository at a commit.
    Git(GitSource),
}

/// A repository source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The repository URL.
    pub repo: String,
    /// Credential location of an HTTPS token.
    pub token_location: Option<SecretLocation>,
    /// Credential location of an SSH key.
    pub ssh_key_location: Option<SecretLocation>,
    /// Commit to check out (default: the default branch's head).
    pub commit: Option<String>,
    /// Folder holding the order's code (default: the whole repository).
    pub folder: Option<String>,
}

/// An order that passed validation, with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidOrder {
    /// Its number (1-based position).
    pub order_num: OrderNum,
    /// Its name.
    pub order_name: String,
    /// Its queue id (normalised).
    pub queue_id: String,
    /// The orders it waits for, sorted, without repeats.
    pub depends_on: Vec<OrderNum>,
    /// Whether its outcome decides the job.
    pub must_succeed: bool,
    /// Seconds it may run.
    pub timeout: u64,
    /// Where it runs on AWS.
    pub execution_target: ExecutionTarget,
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
    /// Every credential location the job names, with where (`order 0001 (plan), field
    /// `ssm_paths``): the orders' credentials, their git token or SSH key, the PR's token.
    pub fn credential_locations(&self) -> Vec<(String, &SecretLocation)> {
        let mut found = Vec::new();
        for order in &self.orders {
            let at = |field: &str| {
                format!(
                    "order {} ({}), field `{field}`",
                    order.order_num, order.order_name
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
    check_label("username", &username)?;
    let flow_label = job
        .flow_label
        .clone()
        .unwrap_or_else(|| DEFAULT_FLOW_LABEL.to_owned());
    check_label("flow_label", &flow_label)?;
    let job_timeout = job.job_timeout.unwrap_or(DEFAULT_JOB_TIMEOUT);
    if job_timeout == 0 || job_timeout > MAX_JOB_TIMEOUT {
        return Err(job_error(
            "job_timeout",
            format!("{job_timeout} s is out of range: give 1 to {MAX_JOB_TIMEOUT} seconds"),
        ));
    }
    if let Some(repo) = &job.git_repo {
        crate::repo_url::check(repo, options.platform)
            .map_err(|message| job_error("git_repo", message))?;
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
        let order = validate_order(job, spec, index, options.platform)?;
        let ctx = OrderCtx {
            num: order.order_num,
            name: order.order_name.clone(),
        };
        if let Some(&other) = by_queue_id.get(&order.queue_id) {
            return Err(ctx.error(
                "queue_id",
                format!(
                    "queue_id {:?} is already used by order {}",
                    order.queue_id,
                    orders_label(&orders, other)
                ),
            ));
        }
        if let Some(&other) = by_name.get(&order.order_name) {
            return Err(ctx.error(
                "order_name",
                format!(
                    "order_name {:?} is already used by order {}",
                    order.order_name,
                    orders_label(&orders, other)
                ),
            ));
        }
        by_queue_id.insert(order.queue_id.clone(), index);
        by_name.insert(order.order_name.clone(), index);
        orders.push(order);
    }

    for (index, spec) in job.orders.iter().enumerate() {
        let depends_on =
            resolve_dependencies(&orders[index], spec, &orders, &by_queue_id, &by_name)?;
        orders[index].depends_on = depends_on;
    }
    check_acyclic(&orders)?;

    if let Some(key) = &job.idempotency_key {
        check_idempotency_key(key)?;
    }

    Ok(ValidJob {
        username,
        flow_label,
        job_timeout,
        pr: pull_request(job)?,
        stripped_copy: job.stripped_copy.unwrap_or(false),
        idempotency_key: job.idempotency_key.clone(),
        orders,
    })
}

/// Longest `idempotency_key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

fn check_idempotency_key(key: &str) -> Result<(), ValidationError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.chars().all(allowed) {
        return Err(job_error(
            "idempotency_key",
            format!("{key:?} must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} of A-Z a-z 0-9 . _ : -"),
        ));
    }
    Ok(())
}

/// A pull request of a GitHub repository, which a run's comment follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// `owner/name`.
    pub repo: String,
    /// The PR's number.
    pub number: u64,
    /// Credential location of the token to post with (the job's `git_token_location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_location: Option<SecretLocation>,
}

/// The PR a job with `pr_number` comments on: in the repository of its `git_repo`.
fn pull_request(job: &JobSpec) -> Result<Option<PullRequest>, ValidationError> {
    let Some(number) = job.pr_number else {
        return Ok(None);
    };
    if number == 0 {
        return Err(job_error("pr_number", "must be greater than 0"));
    }
    let provider = job.git_provider.as_deref().unwrap_or("github");
    if provider != "github" {
        return Err(job_error(
            "git_provider",
            format!("{provider:?}: PR comments are posted to GitHub only (\"github\")"),
        ));
    }
    let Some(url) = &job.git_repo else {
        return Err(job_error(
            "pr_number",
            "needs the job's git_repo, the repository the pull request is in",
        ));
    };
    let path = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path.trim_end_matches('/').trim_end_matches(".git"));
    let repo = match path.map(|p| p.split('/').collect::<Vec<_>>()) {
        Some(parts) if parts.len() == 2 && parts.iter().all(|p| !p.is_empty()) => parts.join("/"),
        _ => {
            return Err(job_error(
                "git_repo",
                format!(
                    "{url:?} is not an https://host/owner/name repository URL, which pr_number needs"
                ),
            ));
        }
    };
    let token_location = job
        .git_token_location
        .as_deref()
        .map(SecretLocation::parse)
        .transpose()
        .map_err(|message| job_error("git_token_location", message))?;
    Ok(Some(PullRequest {
        repo,
        number,
        token_location,
    }))
}

fn orders_label(orders: &[ValidOrder], index: usize) -> String {
    let o = &orders[index];
    format!("{} ({})", o.order_num, o.order_name)
}

/// Labels end up in flow ids and keys: keep them to printable text without separators.
fn check_label(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_control() || c == ':' || c == '/' || c.is_whitespace())
    {
        return Err(job_error(
            field,
            format!("{value:?} must be non-empty, without spaces, `:` or `/`"),
        ));
    }
    Ok(())
}

fn validate_order(
    job: &JobSpec,
    spec: &OrderSpec,
    index: usize,
    platform: Platform,
) -> Result<ValidOrder, ValidationError> {
    let num = OrderNum::from_index(index);
    let order_name = spec
        .order_name
        .clone()
        .unwrap_or_else(|| format!("order-{}", num.get()));
    let ctx = OrderCtx {
        num,
        name: order_name.clone(),
    };
    if order_name.is_empty()
        || order_name.len() > 128
        || order_name
            .chars()
            .any(|c| c.is_control() || c == ':' || c == '/')
    {
        return Err(ctx.error(
            "order_name",
            format!("{order_name:?} must be 1 to 128 characters, without `:` or `/`"),
        ));
    }

    let task = match (&spec.cmds, &spec.wasm) {
        (Some(_), Some(_)) => {
            return Err(ctx.error(
                "cmds",
                "both `cmds` and `wasm` are set; an order runs one or the other",
            ));
        }
        (None, None) => {
            return Err(ctx.error("cmds", "neither `cmds` nor `wasm` is set; give one of them"));
        }
        (Some(cmds), None) => {
            if cmds.is_empty() {
                return Err(ctx.error("cmds", "is empty; give at least one command"));
            }
            if let Some(i) = cmds.iter().position(|c| c.trim().is_empty()) {
                return Err(ctx.error(&format!("cmds[{i}]"), "is blank"));
            }
            if let Some(i) = cmds.iter().position(|c| c.contains('\0')) {
                return Err(ctx.error(&format!("cmds[{i}]"), "contains a NUL byte"));
            }
            Task::Cmds(cmds.clone())
        }
        (None, Some(wasm)) => Task::Wasm(validate_wasm(&ctx, wasm)?),
    };

    let timeout = match spec.timeout {
        None => return Err(ctx.error("timeout", "is missing; give the order's timeout in seconds")),
        Some(0) => return Err(ctx.error("timeout", "must be greater than 0 seconds")),
        Some(t) if t > MAX_ORDER_TIMEOUT => {
            return Err(ctx.error(
                "timeout",
                format!("{t} s is longer than the {MAX_ORDER_TIMEOUT} s an order may run"),
            ));
        }
        Some(t) => t,
    };

    let queue_id = match &spec.queue_id {
        Some(id) if id.as_str().trim().is_empty() => return Err(ctx.error("queue_id", "is empty")),
        Some(id) => normalise_ref(id.as_str()),
        None => num.get().to_string(),
    };

    let execution_target = match (spec.execution_target, spec.use_lambda) {
        (Some(target), Some(use_lambda)) if (target == ExecutionTarget::Lambda) != use_lambda => {
            return Err(ctx.error(
                "use_lambda",
                format!("use_lambda={use_lambda} contradicts execution_target={target}; keep one"),
            ));
        }
        (Some(target), _) => target,
        (None, Some(true)) => ExecutionTarget::Lambda,
        (None, Some(false)) | (None, None) => ExecutionTarget::Codebuild,
    };
    if platform == Platform::Aws && timeout > execution_target.max_order_timeout() {
        let limit = execution_target.max_order_timeout();
        let hint = match execution_target {
            ExecutionTarget::Lambda => "; use execution_target codebuild for longer orders",
            ExecutionTarget::Codebuild => "",
        };
        return Err(ctx.error(
            "timeout",
            format!(
                "{timeout} s is longer than a {execution_target} order can run ({limit} s: the platform's {} s less the worker's {} s){hint}",
                execution_target.platform_limit(),
                execution_target.worker_margin()
            ),
        ));
    }

    let code = code_source(&ctx, job, spec, platform)?;
    if matches!(task, Task::Wasm(_)) && code == CodeSource::None {
        return Err(ctx.error(
            "wasm.module",
            "a wasm order needs a code source holding its module (code_dir, s3_location or git_repo)",
        ));
    }

    for (name, value) in &spec.env_vars {
        if !is_variable_name(name) {
            return Err(ctx.error("env_vars", format!("{name:?} is not a valid variable name")));
        }
        if value.contains('\0') {
            return Err(ctx.error(
                "env_vars",
                format!("the value of {name} contains a NUL byte"),
            ));
        }
    }
    let credentials = credential_locations(&ctx, spec)?;
    if let Some(key) = &spec.sops_key
        && !key.starts_with("age1")
    {
        return Err(ctx.error(
            "sops_key",
            format!("{key:?} is not an age recipient (age1...)"),
        ));
    }

    Ok(ValidOrder {
        order_num: num,
        order_name,
        queue_id,
        depends_on: Vec::new(),
        must_succeed: spec.must_succeed.unwrap_or(true),
        timeout,
        execution_target,
        task,
        code,
        env_vars: spec.env_vars.clone(),
        credentials,
        sops_key: spec.sops_key.clone(),
    })
}

/// The order's credential locations, `ssm_paths` then `secret_manager_paths`, each parsed.
fn credential_locations(
    ctx: &OrderCtx,
    spec: &OrderSpec,
) -> Result<Vec<SecretLocation>, ValidationError> {
    let fields = [
        ("ssm_paths", SecretStore::Ssm, &spec.ssm_paths),
        (
            "secret_manager_paths",
            SecretStore::SecretsManager,
            &spec.secret_manager_paths,
        ),
    ];
    let mut locations = Vec::new();
    for (field, store, entries) in fields {
        for (i, entry) in entries.iter().enumerate() {
            let location = SecretLocation::parse_for(store, entry)
                .map_err(|message| ctx.error(&format!("{field}[{i}]"), message))?;
            if locations.contains(&location) {
                return Err(ctx.error(
                    &format!("{field}[{i}]"),
                    format!("{location} is listed twice"),
                ));
            }
            locations.push(location);
        }
    }
    Ok(locations)
}

fn validate_wasm(ctx: &OrderCtx, wasm: &WasmSpec) -> Result<WasmSpec, ValidationError> {
    if !is_inside(&wasm.module) {
        return Err(ctx.error(
            "wasm.module",
            format!(
                "{:?} must be a path inside the order's code root",
                wasm.module
            ),
        ));
    }
    if let Some(i) = wasm.args.iter().position(|a| a.contains('\0')) {
        return Err(ctx.error(&format!("wasm.args[{i}]"), "contains a NUL byte"));
    }
    for (i, name) in wasm.env.iter().enumerate() {
        let field = format!("wasm.env[{i}]");
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(ctx.error(&field, format!("{name:?} is not a valid variable name")));
        }
        if name.starts_with("SLUICE_") {
            return Err(ctx.error(
                &field,
                format!("{name} is Sluice's own; every module sees the SLUICE_* variables"),
            ));
        }
        if wasm.env[..i].contains(name) {
            return Err(ctx.error(&field, format!("{name} is listed twice")));
        }
    }
    let mut guests: Vec<String> = Vec::new();
    for (i, dir) in wasm.dirs.iter().enumerate() {
        if !is_inside(&dir.host) && dir.host != "." {
            return Err(ctx.error(
                &format!("wasm.dirs[{i}].host"),
                format!(
                    "{:?} must be a folder inside the order's code root",
                    dir.host
                ),
            ));
        }
        let field = format!("wasm.dirs[{i}].guest");
        let Some(guest) = normalise_guest_path(&dir.guest) else {
            return Err(ctx.error(
                &field,
                format!(
                    "{:?} must be an absolute path without `.` or `..` components",
                    dir.guest
                ),
            ));
        };
        if guest == "/" || guest == "/sluice" || guest.starts_with("/sluice/") {
            return Err(ctx.error(
                &field,
                format!("{guest:?} is reserved (`/sluice/events` is the events folder)"),
            ));
        }
        if guests.contains(&guest) {
            return Err(ctx.error(&field, format!("{guest:?} is mounted twice")));
        }
        guests.push(guest);
    }
    match wasm.memory_mb {
        Some(0) => return Err(ctx.error("wasm.memory_mb", "must be greater than 0")),
        Some(mb) if mb > MAX_WASM_MEMORY_MB => {
            return Err(ctx.error(
                "wasm.memory_mb",
                format!("{mb} is more than a 32-bit module can address ({MAX_WASM_MEMORY_MB})"),
            ));
        }
        _ => {}
    }
    if wasm.fuel == Some(0) {
        return Err(ctx.error("wasm.fuel", "must be greater than 0 (or left out)"));
    }
    let mut wasm = wasm.clone();
    wasm.memory_mb.get_or_insert(DEFAULT_WASM_MEMORY_MB);
    for (dir, guest) in wasm.dirs.iter_mut().zip(guests) {
        dir.guest = guest;
    }
    Ok(wasm)
}

/// `/data/./x/` → `/data/x`; `None` for a relative path or one with `..`.
fn normalise_guest_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            _ if part.contains('\0') => return None,
            _ => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn code_source(
    ctx: &OrderCtx,
    job: &JobSpec,
    spec: &OrderSpec,
    platform: Platform,
) -> Result<CodeSource, ValidationError> {
    let given: Vec<&str> = [
        spec.s3_location.as_ref().map(|_| "s3_location"),
        spec.git_repo.as_ref().map(|_| "git_repo"),
        spec.code_dir.as_ref().map(|_| "code_dir"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(ctx.error(
            given[1],
            format!(
                "an order has one code source, but {} are set",
                given.join(" and ")
            ),
        ));
    }
    if let Some(location) = &spec.s3_location {
        if platform == Platform::Aws && !location.starts_with("s3://") {
            return Err(ctx.error(
                "s3_location",
                format!("{location:?} must be an s3://bucket/key.zip URL"),
            ));
        }
        if location.trim().is_empty() {
            return Err(ctx.error("s3_location", "is empty"));
        }
        return Ok(CodeSource::Zip(location.clone()));
    }
    if let Some(dir) = &spec.code_dir {
        if platform == Platform::Aws {
            return Err(ctx.error(
                "code_dir",
                "is only for the local engine; on AWS use s3_location or git_repo",
            ));
        }
        if dir.trim().is_empty() {
            return Err(ctx.error("code_dir", "is empty"));
        }
        return Ok(CodeSource::Dir(dir.clone()));
    }
    if let Some(repo) = &spec.git_repo {
        crate::repo_url::check(repo, platform).map_err(|message| ctx.error("git_repo", message))?;
    }
    let (repo, token, ssh) = match &spec.git_repo {
        Some(repo) => (repo, &spec.git_token_location, &spec.git_ssh_key_location),
        None => match &job.git_repo {
            Some(repo) => (repo, &job.git_token_location, &job.git_ssh_key_location),
            None => {
                if spec.git_folder.is_some() {
                    return Err(ctx.error(
                        "git_folder",
                        "is set but neither the order nor the job has a git_repo",
                    ));
                }
                return Ok(CodeSource::None);
            }
        },
    };
    let location = |field: &str, text: Option<&String>| {
        text.map(|t| SecretLocation::parse(t).map_err(|message| ctx.error(field, message)))
            .transpose()
    };
    let token = location(
        "git_token_location",
        token.as_ref().or(job.git_token_location.as_ref()),
    )?;
    let ssh = location(
        "git_ssh_key_location",
        ssh.as_ref().or(job.git_ssh_key_location.as_ref()),
    )?;
    if let Some(folder) = &spec.git_folder
        && !is_inside(folder)
    {
        return Err(ctx.error(
            "git_folder",
            format!("{folder:?} must be a folder inside the repository"),
        ));
    }
    Ok(CodeSource::Git(GitSource {
        repo: repo.clone(),
        token_location: token,
        ssh_key_location: ssh,
        commit: spec.commit_hash.clone().or_else(|| job.commit_hash.clone()),
        folder: spec.git_folder.clone(),
    }))
}

fn resolve_dependencies(
    order: &ValidOrder,
    spec: &OrderSpec,
    orders: &[ValidOrder],
    by_queue_id: &HashMap<String, usize>,
    by_name: &HashMap<String, usize>,
) -> Result<Vec<OrderNum>, ValidationError> {
    let ctx = OrderCtx {
        num: order.order_num,
        name: order.order_name.clone(),
    };
    let mut resolved = Vec::with_capacity(spec.dependencies.len());
    for reference in &spec.dependencies {
        let index = resolve_one(&ctx, reference, orders, by_queue_id, by_name)?;
        if orders[index].order_num == order.order_num {
            return Err(ctx.error(
                "dependencies",
                format!(
                    "dependency cycle: the order depends on itself ({:?})",
                    reference.as_str()
                ),
            ));
        }
        resolved.push(orders[index].order_num);
    }
    resolved.sort();
    resolved.dedup();
    Ok(resolved)
}

fn resolve_one(
    ctx: &OrderCtx,
    reference: &Reference,
    orders: &[ValidOrder],
    by_queue_id: &HashMap<String, usize>,
    by_name: &HashMap<String, usize>,
) -> Result<usize, ValidationError> {
    let by_id = by_queue_id.get(&normalise_ref(reference.as_str())).copied();
    let by_order_name = by_name.get(reference.as_str()).copied();
    match (by_id, by_order_name) {
        (Some(a), Some(b)) if a != b => Err(ctx.error(
            "dependencies",
            format!(
                "dependency {:?} is ambiguous: it is the queue_id of order {} and the order_name of order {}",
                reference.as_str(),
                orders_label(orders, a),
                orders_label(orders, b)
            ),
        )),
        (Some(index), _) | (None, Some(index)) => Ok(index),
        (None, None) => Err(ctx.error(
            "dependencies",
            format!("unknown dependency {:?}: no order has that queue_id or order_name", reference.as_str()),
        )),
    }
}

/// Finds a cycle with a depth-first search and reports it as a path of order names.
fn check_acyclic(orders: &[ValidOrder]) -> Result<(), ValidationError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; orders.len()];
    for start in 0..orders.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (order index, next dependency to visit).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let deps = &orders[node].depends_on;
            if *next == deps.len() {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            }
            let dep = deps[*next].index().expect("dependencies are real orders");
            *next += 1;
            match marks[dep] {
                Mark::Done => {}
                Mark::New => {
                    marks[dep] = Mark::OnPath;
                    stack.push((dep, 0));
                }
                Mark::OnPath => {
                    let from = stack.iter().position(|&(n, _)| n == dep).expect("on path");
                    let mut path: Vec<&str> = stack[from..]
                        .iter()
                        .map(|&(n, _)| orders[n].order_name.as_str())
                        .collect();
                    path.push(&orders[dep].order_name);
                    let first = &orders[dep];
                    return Err(OrderCtx {
                        num: first.order_num,
                        name: first.order_name.clone(),
                    }
                    .error(
                        "dependencies",
                        format!("dependency cycle: {}", path.join(" -> ")),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse_job;

    fn check(json: &str) -> Result<ValidJob, ValidationError> {
        validate(
            &parse_job(json.as_bytes()).unwrap(),
            &ValidateOptions::local("tester"),
        )
    }

    fn error_of(json: &str) -> String {
        check(json).unwrap_err().to_string()
    }

    #[test]
    fn idempotency_keys_are_short_plain_words() {
        let with = |key: &str| {
            check(&format!(
                r#"{{"idempotency_key":{key:?},"orders":[{{"cmds":["true"],"timeout":5}}]}}"#
            ))
        };
        assert_eq!(
            with("pr-42:build.7_a").unwrap().idempotency_key.as_deref(),
            Some("pr-42:build.7_a")
        );
        for bad in ["", "a b", "x/y", &"k".repeat(129)] {
            let error = with(bad).unwrap_err().to_string();
            assert!(error.contains("idempotency_key"), "{error}");
        }
    }

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
        assert_eq!(second.order_name, "order-2");
        assert_eq!(second.queue_id, "2");
        assert!(second.must_succeed);
        assert_eq!(second.execution_target, ExecutionTarget::Lambda);
        assert_eq!(second.depends_on, vec![OrderNum::from_index(0)]);
        assert_eq!(job.orders[0].execution_target, ExecutionTarget::Codebuild);
    }

    #[test]
    fn dependencies_resolve_by_name_padded_number_or_queue_id() {
        let job = check(
            r#"{"orders":[
                {"cmds":["true"],"timeout":5,"order_name":"build"},
                {"cmds":["true"],"timeout":5,"queue_id":"lint"},
                {"cmds":["true"],"timeout":5,"dependencies":["build","lint","0001",1]}]}"#,
        )
        .unwrap();
        assert_eq!(
            job.orders[2].depends_on,
            vec![OrderNum::from_index(0), OrderNum::from_index(1)]
        );
    }

    #[test]
    fn credential_locations_keep_their_order_and_are_checked() {
        let job = check(
            r#"{"orders":[{"cmds":["true"],"timeout":5,
                "secret_manager_paths":["aws:::secretd:prod/api"],
                "ssm_paths":["/team/db","aws:::ssm:/team/cache"]}]}"#,
        )
        .unwrap();
        let listed: Vec<String> = job.orders[0]
            .credentials
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            listed,
            [
                "aws:::ssm:/team/db",
                "aws:::ssm:/team/cache",
                "aws:::secretd:prod/api"
            ]
        );
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"ssm_paths":["aws:::secretd:x"]}]}"#,
        );
        assert!(
            e.contains("`ssm_paths[0]`") && e.contains("belongs in secret_manager_paths"),
            "{e}"
        );
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"ssm_paths":["/a","aws:::ssm:/a"]}]}"#,
        );
        assert!(
            e.contains("`ssm_paths[1]`") && e.contains("listed twice"),
            "{e}"
        );
        let e =
            error_of(r#"{"orders":[{"cmds":["true"],"timeout":5,"secret_manager_paths":[""]}]}"#);
        assert!(e.contains("names no parameter or secret"), "{e}");
    }

    #[test]
    fn on_aws_an_orders_timeout_must_fit_its_target() {
        let aws = |json: &str| {
            validate(
                &parse_job(json.as_bytes()).unwrap(),
                &ValidateOptions::aws(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let job = |target: &str, timeout: u64| {
            format!(
                r#"{{"username":"u","presign_expiry":604800,"orders":[{{"cmds":["true"],"timeout":{timeout},"execution_target":"{target}"}}]}}"#
            )
        };
        assert!(aws(&job("lambda", 840)).is_ok());
        let e = aws(&job("lambda", 841)).unwrap_err();
        assert!(
            e.contains("`timeout`")
                && e.contains("841 s is longer than a lambda order can run (840 s")
                && e.contains("use execution_target codebuild"),
            "{e}"
        );
        assert!(aws(&job("codebuild", 36 * 3600 - 600)).is_ok());
        assert!(aws(&job("codebuild", 36 * 3600)).is_err());
        // Locally targets are ignored, and so are their limits.
        assert!(check(&job("lambda", 3600)).is_ok());
    }

    #[test]
    fn git_credential_locations_are_checked() {
        let e = error_of(
            r#"{"git_token_location":"/team/token","orders":[{"cmds":["true"],"timeout":5,"git_repo":"https://x/r.git"}]}"#,
        );
        assert!(
            e.contains("`git_token_location`") && e.contains("is not a credential location"),
            "{e}"
        );
        let job = check(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"git_repo":"https://x/r.git","git_token_location":"aws:::ssm:/team/token"}]}"#,
        )
        .unwrap();
        let CodeSource::Git(git) = &job.orders[0].code else {
            panic!("{:?}", job.orders[0].code)
        };
        assert_eq!(
            git.token_location,
            Some(SecretLocation::Ssm("/team/token".to_owned()))
        );
    }

    #[test]
    fn a_pr_number_names_the_repository_its_pr_is_in() {
        let job = check(
            r#"{"pr_number":7,"git_repo":"https://github.com/acme/infra.git","git_token_location":"aws:::ssm:/t","orders":[{"cmds":["true"],"timeout":5}]}"#,
        )
        .unwrap();
        assert_eq!(
            job.pr,
            Some(PullRequest {
                repo: "acme/infra".to_owned(),
                number: 7,
                token_location: Some(SecretLocation::Ssm("/t".to_owned())),
            })
        );
        let e = error_of(r#"{"pr_number":7,"orders":[{"cmds":["true"],"timeout":5}]}"#);
        assert!(
            e.contains("`pr_number`") && e.contains("needs the job's git_repo"),
            "{e}"
        );
        let e = error_of(
            r#"{"pr_number":7,"git_repo":"git@github.com:acme/infra.git","orders":[{"cmds":["true"],"timeout":5}]}"#,
        );
        assert!(e.contains("`git_repo`") && e.contains("owner/name"), "{e}");
        let e = error_of(
            r#"{"pr_number":7,"git_provider":"gitlab","git_repo":"https://gitlab.com/a/b","orders":[{"cmds":["true"],"timeout":5}]}"#,
        );
        assert!(e.contains("GitHub only"), "{e}");
        assert_eq!(
            check(r#"{"orders":[{"cmds":["true"],"timeout":5}]}"#)
                .unwrap()
                .pr,
            None
        );
    }

    #[test]
    fn no_orders() {
        assert!(error_of(r#"{"orders":[]}"#).contains("no orders"));
        assert!(error_of(r#"{}"#).contains("no orders"));
    }

    #[test]
    fn empty_and_blank_cmds() {
        let e = error_of(r#"{"orders":[{"cmds":[],"timeout":5,"order_name":"x"}]}"#);
        assert!(
            e.contains("order 0001 (x)") && e.contains("`cmds`") && e.contains("empty"),
            "{e}"
        );
        let e = error_of(r#"{"orders":[{"cmds":["true","  "],"timeout":5}]}"#);
        assert!(e.contains("cmds[1]") && e.contains("blank"), "{e}");
    }

    #[test]
    fn missing_or_zero_timeout() {
        let e = error_of(r#"{"orders":[{"cmds":["true"]}]}"#);
        assert!(e.contains("`timeout`") && e.contains("missing"), "{e}");
        let e = error_of(r#"{"orders":[{"cmds":["true"],"timeout":0}]}"#);
        assert!(
            e.contains("`timeout`") && e.contains("greater than 0"),
            "{e}"
        );
    }

    #[test]
    fn cmds_and_wasm_are_exclusive() {
        let e =
            error_of(r#"{"orders":[{"cmds":["true"],"wasm":{"module":"a.wasm"},"timeout":5}]}"#);
        assert!(e.contains("both `cmds` and `wasm`"), "{e}");
        let e = error_of(r#"{"orders":[{"timeout":5}]}"#);
        assert!(e.contains("neither `cmds` nor `wasm`"), "{e}");
    }

    #[test]
    fn unknown_dependency_names_the_reference() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"order_name":"a","dependencies":["biuld"]}]}"#,
        );
        assert!(
            e.contains("order 0001 (a)") && e.contains("unknown dependency \"biuld\""),
            "{e}"
        );
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
    fn cycles_are_reported_as_paths() {
        let e = error_of(
            r#"{"orders":[
                {"cmds":["true"],"timeout":5,"order_name":"a","dependencies":["c"]},
                {"cmds":["true"],"timeout":5,"order_name":"b","dependencies":["a"]},
                {"cmds":["true"],"timeout":5,"order_name":"c","dependencies":["b"]}]}"#,
        );
        assert!(e.contains("dependency cycle: a -> c -> b -> a"), "{e}");
    }

    #[test]
    fn cycles_through_default_queue_ids_are_found() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"dependencies":[2]},{"cmds":["true"],"timeout":5,"dependencies":["1"]}]}"#,
        );
        assert!(
            e.contains("dependency cycle: order-1 -> order-2 -> order-1"),
            "{e}"
        );
        let e = error_of(r#"{"orders":[{"cmds":["true"],"timeout":5,"dependencies":["0001"]}]}"#);
        assert!(e.contains("depends on itself"), "{e}");
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
    /// A password or token in a repository URL would be echoed in errors, logs and PR
    /// comments: refused, without repeating it. Before, such a job was accepted.
    #[test]
    fn repository_urls_with_credentials_are_refused_without_echoing_them() {
        for repo in [
            "https://alice:hunter2-secret@github.com/acme/infra.git",
            "https://ghp_tokensecret@github.com/acme/infra.git",
            "ssh://git:hunter2-secret@example.com/acme/infra.git",
        ] {
            for job in [
                format!(r#"{{"git_repo":"{repo}","orders":[{{"cmds":["true"],"timeout":5}}]}}"#),
                format!(r#"{{"orders":[{{"cmds":["true"],"timeout":5,"git_repo":"{repo}"}}]}}"#),
            ] {
                let e = error_of(&job);
                assert!(e.contains("`git_repo`") && e.contains("credential"), "{e}");
                assert!(!e.contains("secret"), "{e}");
            }
        }
        for repo in [
            "https://github.com/acme/infra.git",
            "git@github.com:acme/infra.git",
            "ssh://git@example.com/acme/infra.git",
            "https://github.com/acme/infra.git?ref=a@b",
        ] {
            let job =
                format!(r#"{{"orders":[{{"cmds":["true"],"timeout":5,"git_repo":"{repo}"}}]}}"#);
            assert!(check(&job).is_ok(), "{repo}");
        }
    }

    #[test]
    fn presign_expiry_is_accepted_and_ignored() {
        assert!(
            check(r#"{"presign_expiry":600,"orders":[{"cmds":["true"],"timeout":400}]}"#).is_ok()
        );
    }

    #[test]
    fn one_code_source_per_order() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"code_dir":"a","s3_location":"b.zip"}]}"#,
        );
        assert!(e.contains("one code source"), "{e}");
        let job = parse_job(
            br#"{"username":"u","orders":[{"cmds":["true"],"timeout":5,"code_dir":"a"}]}"#,
        )
        .unwrap();
        let e = validate(&job, &ValidateOptions::aws())
            .unwrap_err()
            .to_string();
        assert!(e.contains("only for the local engine"), "{e}");
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

    #[test]
    fn contradictory_targets_are_rejected() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"use_lambda":false,"execution_target":"lambda"}]}"#,
        );
        assert!(e.contains("contradicts"), "{e}");
    }

    #[test]
    fn wasm_orders_are_checked_field_by_field() {
        let wasm = |spec: &str| {
            error_of(&format!(
                r#"{{"orders":[{{"wasm":{spec},"timeout":5,"code_dir":"c"}}]}}"#
            ))
        };
        let cases = [
            (
                r#"{"module":"m.wasm","env":["A","A"]}"#,
                "wasm.env[1]",
                "listed twice",
            ),
            (
                r#"{"module":"m.wasm","env":["SLUICE_RUN_ID"]}"#,
                "wasm.env[0]",
                "Sluice's own",
            ),
            (
                r#"{"module":"m.wasm","env":["A=B"]}"#,
                "wasm.env[0]",
                "not a valid",
            ),
            (
                r#"{"module":"m.wasm","dirs":[{"host":"a","guest":"/d/"},{"host":"b","guest":"/d/."}]}"#,
                "wasm.dirs[1].guest",
                "mounted twice",
            ),
            (
                r#"{"module":"m.wasm","dirs":[{"host":"a","guest":"/d/../e"}]}"#,
                "wasm.dirs[0].guest",
                "without `.` or `..`",
            ),
            (
                r#"{"module":"m.wasm","dirs":[{"host":"a","guest":"/sluice/events"}]}"#,
                "wasm.dirs[0].guest",
                "reserved",
            ),
            (
                r#"{"module":"m.wasm","dirs":[{"host":"a","guest":"/"}]}"#,
                "wasm.dirs[0].guest",
                "reserved",
            ),
            (
                r#"{"module":"m.wasm","memory_mb":5000}"#,
                "wasm.memory_mb",
                "32-bit",
            ),
            (
                r#"{"module":"m.wasm","fuel":0}"#,
                "wasm.fuel",
                "greater than 0",
            ),
        ];
        for (spec, field, message) in cases {
            let e = wasm(spec);
            assert!(e.contains(field) && e.contains(message), "{spec}: {e}");
        }
        let e = error_of(r#"{"orders":[{"wasm":{"module":"m.wasm"},"timeout":5}]}"#);
        assert!(e.contains("needs a code source"), "{e}");
    }

    #[test]
    fn wasm_defaults_and_normalised_mounts() {
        let valid = check(
            r#"{"orders":[{"wasm":{"module":"m.wasm","dirs":[{"host":"d","guest":"/data/./in/"}]},"timeout":5,"code_dir":"c"}]}"#,
        )
        .unwrap();
        let Task::Wasm(wasm) = &valid.orders[0].task else {
            panic!("a wasm order")
        };
        assert_eq!(wasm.memory_mb, Some(DEFAULT_WASM_MEMORY_MB));
        assert_eq!(wasm.dirs[0].guest, "/data/in");
    }

    #[test]
    fn wasm_paths_stay_inside_the_code_root() {
        let e = error_of(r#"{"orders":[{"wasm":{"module":"../x.wasm"},"timeout":5}]}"#);
        assert!(e.contains("wasm.module"), "{e}");
        let e = error_of(
            r#"{"orders":[{"wasm":{"module":"x.wasm","dirs":[{"host":"d","guest":"rel"}]},"timeout":5}]}"#,
        );
        assert!(e.contains("wasm.dirs[0].guest"), "{e}");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::job::OrderSpec;
    use proptest::prelude::*;

    fn job_with_edges(n: usize, edges: &[(usize, usize)]) -> JobSpec {
        let mut orders: Vec<OrderSpec> = (0..n)
            .map(|_| OrderSpec {
                cmds: Some(vec!["true".into()]),
                timeout: Some(5),
                ..OrderSpec::default()
            })
            .collect();
        for &(from, to) in edges {
            orders[from]
                .dependencies
                .push(Reference((to + 1).to_string()));
        }
        JobSpec {
            orders,
            ..JobSpec::default()
        }
    }

    proptest! {
        /// Invariant: a graph whose edges all point to earlier orders is a DAG and validates;
        /// adding one edge from an order to one of its transitive dependents makes a cycle
        /// that validation reports.
        #[test]
        fn forward_edges_validate_and_a_back_edge_is_a_cycle(
            n in 2usize..12,
            raw in proptest::collection::vec((0usize..100, 0usize..100), 0..30),
        ) {
            let edges: Vec<(usize, usize)> = raw
                .iter()
                .map(|&(a, b)| (a % n, b % n))
                .filter(|&(a, b)| a > b)
                .collect();
            let options = ValidateOptions::local("p");
            let dag = job_with_edges(n, &edges);
            prop_assert!(validate(&dag, &options).is_ok());
            if let Some(&(from, to)) = edges.first() {
                // `from` depends on `to`; make `to` depend on `from`.
                let mut cyclic = edges.clone();
                cyclic.push((to, from));
                let err = validate(&job_with_edges(n, &cyclic), &options).unwrap_err();
                prop_assert!(err.message.contains("dependency cycle"), "{}", err);
            }
        }
    }
}
