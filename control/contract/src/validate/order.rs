//! The rules on one order's own fields, and on the job-level fields that describe the job
//! rather than its code or its graph.
//!
//! An order gets its defaults here (name, queue id, target) and is refused when a field could
//! not be run as written: no or both of `cmds` and `wasm`, a blank or NUL-bearing command, a
//! timeout its target cannot honour, a variable name the environment cannot hold, a credential
//! location of the wrong store or listed twice. Names and labels end up in flow ids and
//! storage keys, and the idempotency key in a lookup, so they are kept to plain text. A job
//! with `pr_number` must say which GitHub repository the pull request is in.

use serde::{Deserialize, Serialize};

use super::code::code_source;
use super::sandbox::validate_sandbox;
use super::wasm::validate_wasm;
use super::{
    CodeSource, MAX_ORDER_TIMEOUT, OrderCtx, Platform, ValidOrder, ValidationError, job_error,
    normalise_ref,
};
use crate::credentials::{SecretLocation, SecretStore, is_variable_name};
use crate::ids::OrderNum;
use crate::job::{ExecutionTarget, JobSpec, OrderSpec, RetrySpec};
use crate::manifest::Task;
use crate::plan::OrderPlan;
use crate::retries::{
    DEFAULT_BACKOFF_MS, DEFAULT_MAX_BACKOFF_MS, MAX_BACKOFF_SECONDS, MAX_RETRY_LIMIT, RetryOn,
    RetryPolicy,
};

/// Longest `idempotency_key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// Checks the job's `idempotency_key`: short, of characters safe in any key.
pub(super) fn check_idempotency_key(key: &str) -> Result<(), ValidationError> {
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
pub(super) fn pull_request(job: &JobSpec) -> Result<Option<PullRequest>, ValidationError> {
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
        .map_err(|error| job_error("git_token_location", error.to_string()))?;
    Ok(Some(PullRequest {
        repo,
        number,
        token_location,
    }))
}

/// Labels end up in flow ids and keys: keep them to printable text without separators.
pub(super) fn check_label(field: &str, value: &str) -> Result<(), ValidationError> {
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

/// Checks the order at `index` of `job` on its own (its dependencies are resolved later, by
/// the caller) and applies its defaults.
pub(super) fn validate_order(
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

    let sandbox = (spec.sandbox.as_ref())
        .map(|grants| validate_sandbox(&ctx, &task, grants))
        .transpose()?;

    Ok(ValidOrder {
        plan: OrderPlan {
            order_num: num,
            order_name,
            queue_id,
            depends_on: Vec::new(),
            condition: None,
            inputs: Vec::new(),
            must_succeed: spec.must_succeed.unwrap_or(true),
            retry: spec
                .retry
                .as_ref()
                .map(|retry| retry_policy(&ctx, retry))
                .transpose()?,
            timeout,
            execution_target,
            sandbox,
        },
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
                .map_err(|error| ctx.error(&format!("{field}[{i}]"), error.to_string()))?;
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

/// The policy of an order's `retry` field, checked.
fn retry_policy(ctx: &OrderCtx, spec: &RetrySpec) -> Result<RetryPolicy, ValidationError> {
    if !(1..=MAX_RETRY_LIMIT).contains(&spec.limit) {
        return Err(ctx.error(
            "retry.limit",
            format!(
                "{} is not 1 to {MAX_RETRY_LIMIT} further attempts",
                spec.limit
            ),
        ));
    }
    let seconds = |field: &str, value: Option<f64>, default_ms: u64| match value {
        None => Ok(default_ms),
        Some(s) if s.is_finite() && s > 0.0 && s <= MAX_BACKOFF_SECONDS => {
            Ok(((s * 1000.0).round() as u64).max(1))
        }
        Some(s) => Err(ctx.error(
            field,
            format!("{s} is not a number of seconds above 0 and at most {MAX_BACKOFF_SECONDS}"),
        )),
    };
    let backoff_ms = seconds("retry.backoff", spec.backoff, DEFAULT_BACKOFF_MS)?;
    // Unsaid, the longest delay is 300 s, or the first delay when that is longer.
    let max_backoff_ms = seconds(
        "retry.max_backoff",
        spec.max_backoff,
        DEFAULT_MAX_BACKOFF_MS.max(backoff_ms),
    )?;
    if max_backoff_ms < backoff_ms {
        return Err(ctx.error(
            "retry.max_backoff",
            "max_backoff is shorter than backoff, the first delay",
        ));
    }
    let on = spec
        .on
        .clone()
        .unwrap_or_else(|| vec![RetryOn::Failed, RetryOn::TimedOut]);
    if on.is_empty() {
        return Err(ctx.error(
            "retry.on",
            "no outcome to retry: name failed, timed_out or both",
        ));
    }
    if on.iter().enumerate().any(|(i, o)| on[..i].contains(o)) {
        return Err(ctx.error("retry.on", "an outcome is named twice"));
    }
    let exit_codes = spec.exit_codes.clone().unwrap_or_default();
    if spec.exit_codes.as_ref().is_some_and(Vec::is_empty) {
        return Err(ctx.error(
            "retry.exit_codes",
            "empty: leave it out to retry every failure",
        ));
    }
    if let Some(code) = exit_codes.iter().find(|c| !(1..=255).contains(*c)) {
        return Err(ctx.error(
            "retry.exit_codes",
            format!("{code} is not the exit code of a failed command (1 to 255)"),
        ));
    }
    if !exit_codes.is_empty() && !on.contains(&RetryOn::Failed) {
        return Err(ctx.error(
            "retry.exit_codes",
            "exit codes narrow `failed` outcomes, which `on` does not retry",
        ));
    }
    Ok(RetryPolicy {
        limit: spec.limit,
        backoff_ms,
        max_backoff_ms,
        on,
        exit_codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse_job;
    use crate::validate::{ValidateOptions, check, error_of, validate};

    #[test]
    fn a_retry_policy_gets_its_defaults_and_its_limits_checked() {
        let job = check(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"retry":{"limit":2}},
                {"cmds":["true"],"timeout":5,"retry":{"limit":10,"backoff":0.25,"max_backoff":2.5,
                 "on":["failed"],"exit_codes":[75,1]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            job.orders[0].plan.retry,
            Some(RetryPolicy {
                limit: 2,
                backoff_ms: 1000,
                max_backoff_ms: 300_000,
                on: vec![RetryOn::Failed, RetryOn::TimedOut],
                exit_codes: Vec::new(),
            })
        );
        let second = job.orders[1].plan.retry.as_ref().unwrap();
        assert_eq!((second.backoff_ms, second.max_backoff_ms), (250, 2500));
        assert_eq!(second.exit_codes, [75, 1]);
        let refused = |retry: &str, needle: &str| {
            let e = error_of(&format!(
                r#"{{"orders":[{{"cmds":["true"],"timeout":5,"order_name":"r","retry":{retry}}}]}}"#
            ));
            assert!(
                e.contains("order 0001 (r)") && e.contains(needle),
                "{retry}: {e}"
            );
        };
        refused(r#"{"limit":0}"#, "`retry.limit`: 0 is not 1 to 10");
        refused(r#"{"limit":11}"#, "`retry.limit`");
        refused(r#"{"limit":1,"backoff":0}"#, "`retry.backoff`");
        refused(r#"{"limit":1,"backoff":-1}"#, "`retry.backoff`");
        refused(
            r#"{"limit":1,"backoff":5,"max_backoff":1}"#,
            "`retry.max_backoff`",
        );
        let long = check(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"retry":{"limit":1,"backoff":600}}]}"#,
        )
        .unwrap();
        let long = long.orders[0].plan.retry.as_ref().unwrap();
        assert_eq!((long.backoff_ms, long.max_backoff_ms), (600_000, 600_000));
        refused(r#"{"limit":1,"on":[]}"#, "`retry.on`");
        refused(r#"{"limit":1,"on":["failed","failed"]}"#, "named twice");
        refused(r#"{"limit":1,"exit_codes":[]}"#, "`retry.exit_codes`");
        refused(
            r#"{"limit":1,"exit_codes":[0]}"#,
            "0 is not the exit code of a failed command",
        );
        refused(
            r#"{"limit":1,"on":["timed_out"],"exit_codes":[1]}"#,
            "`on` does not retry",
        );
        let unknown = parse_job(
            br#"{"orders":[{"cmds":["true"],"timeout":5,"retry":{"limit":1,"on":["crashed"]}}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("crashed"), "{unknown}");
        let typo = parse_job(br#"{"orders":[{"cmds":["true"],"timeout":5,"retry":{"limt":1}}]}"#)
            .unwrap_err()
            .to_string();
        assert!(typo.contains("limt"), "{typo}");
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
    fn contradictory_targets_are_rejected() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"use_lambda":false,"execution_target":"lambda"}]}"#,
        );
        assert!(e.contains("contradicts"), "{e}");
    }
}
