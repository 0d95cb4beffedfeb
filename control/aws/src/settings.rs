//! The `SLUICE_*` settings of the AWS binaries, parsed once at start-up.
//!
//! Every missing or malformed variable is reported in one error, each by name, so a
//! misconfigured function fails its first invocation with everything to fix at once.

use std::fmt;

use sluice_engine::git::GitPolicy;
use sluice_engine::grants::CredentialGrants;

/// Where Sluice's AWS resources are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// `SLUICE_INTERNAL_BUCKET`: bundles, callbacks, logs, claims.
    pub internal_bucket: String,
    /// `SLUICE_DONE_BUCKET`: done documents.
    pub done_bucket: String,
    /// `SLUICE_ORDERS_TABLE`.
    pub orders_table: String,
    /// `SLUICE_EVENTS_TABLE`: order_events.
    pub events_table: String,
    /// `SLUICE_LOCKS_TABLE`.
    pub locks_table: String,
    /// `SLUICE_WORKER_FUNCTION`: the worker Lambda (name or ARN).
    pub worker_function: String,
    /// `SLUICE_COMPILE_FUNCTION` (optional): the compile function (name or ARN), which
    /// init-job has compile each WebAssembly module of a run for the workers (who have no
    /// compiler). Without it, init-job refuses jobs with WebAssembly orders.
    pub compile_function: Option<String>,
    /// `SLUICE_CODEBUILD_PROJECT`: the CodeBuild project running long orders.
    pub codebuild_project: String,
    /// `SLUICE_WATCHDOG_STATE_MACHINE`: the watchdog state machine's ARN.
    pub watchdog_state_machine: String,
    /// `SLUICE_SSM_PREFIX` (default `/sluice`): where per-order keys are kept.
    pub ssm_prefix: String,
    /// `SLUICE_EVENT_TTL_DAYS` (default 90): how long order_events rows live.
    pub event_ttl_days: u64,
    /// `SLUICE_ORDER_TTL_DAYS` (default 1): how long orders rows live.
    pub order_ttl_days: u64,
    /// `SLUICE_GITHUB_API` (default `https://api.github.com`; `off` for none): where the PR
    /// comments of runs with `pr_number` are kept.
    pub github_api: Option<String>,
    /// `SLUICE_GIT_CREDENTIAL_HOSTS` (comma-separated, default `github.com`),
    /// `SLUICE_GIT_KNOWN_HOSTS` (known_hosts lines, default none) and `SLUICE_GIT_SSH_TOFU`
    /// (`true`/`false`, default false): where init-job sends git credentials and which SSH
    /// servers it trusts.
    pub git: GitPolicy,
    /// `SLUICE_CREDENTIAL_GRANTS` (a JSON object: principal ARN pattern → credential
    /// location patterns), with each caller's own prefixes under
    /// `SLUICE_CREDENTIALS_PARAMETER_PATH` and `SLUICE_CREDENTIALS_SECRET_PREFIX`: which
    /// credentials a job's submitter may name.
    pub credential_grants: CredentialGrants,
}

/// Variables that are missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsError {
    /// One line per problem, each naming its variable.
    pub problems: Vec<String>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad configuration: {}", self.problems.join("; "))
    }
}

impl AwsSettings {
    /// Reads the settings from the process environment.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming every missing or malformed variable.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming every missing or malformed variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut problems = Vec::new();
        let mut required = |name: &str| match lookup(name).filter(|v| !v.trim().is_empty()) {
            Some(value) => value,
            None => {
                problems.push(format!("{name} is not set"));
                String::new()
            }
        };
        let internal_bucket = required("SLUICE_INTERNAL_BUCKET");
        let done_bucket = required("SLUICE_DONE_BUCKET");
        let orders_table = required("SLUICE_ORDERS_TABLE");
        let events_table = required("SLUICE_EVENTS_TABLE");
        let locks_table = required("SLUICE_LOCKS_TABLE");
        let worker_function = required("SLUICE_WORKER_FUNCTION");
        let codebuild_project = required("SLUICE_CODEBUILD_PROJECT");
        let compile_function = lookup("SLUICE_COMPILE_FUNCTION").filter(|v| !v.trim().is_empty());
        let watchdog_state_machine = required("SLUICE_WATCHDOG_STATE_MACHINE");
        let ssm_prefix = match lookup("SLUICE_SSM_PREFIX") {
            Some(prefix) if prefix.starts_with('/') => prefix,
            Some(prefix) => {
                problems.push(format!("SLUICE_SSM_PREFIX={prefix:?} must start with '/'"));
                prefix
            }
            None => "/sluice".to_owned(),
        };
        let mut days = |name: &str, default: u64| match lookup(name) {
            None => default,
            Some(value) => match value.trim().parse::<u64>() {
                Ok(days) if days > 0 => days,
                _ => {
                    problems.push(format!("{name}={value:?} is not a positive number of days"));
                    default
                }
            },
        };
        let event_ttl_days = days("SLUICE_EVENT_TTL_DAYS", 90);
        let order_ttl_days = days("SLUICE_ORDER_TTL_DAYS", 1);
        let github_api = match lookup("SLUICE_GITHUB_API") {
            Some(api) if api.trim() == "off" => None,
            Some(api) if api.starts_with("https://") || api.starts_with("http://") => Some(api),
            Some(api) => {
                problems.push(format!(
                    "SLUICE_GITHUB_API={api:?} is not an http(s):// URL (or \"off\")"
                ));
                None
            }
            None => Some(sluice_engine::github::GITHUB_API.to_owned()),
        };
        let mut git = GitPolicy::default().locating_git_with(&lookup);
        if let Some(hosts) = lookup("SLUICE_GIT_CREDENTIAL_HOSTS") {
            git.credential_hosts = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
        }
        git.known_hosts = lookup("SLUICE_GIT_KNOWN_HOSTS").unwrap_or_default();
        git.trust_on_first_use = match lookup("SLUICE_GIT_SSH_TOFU").as_deref().map(str::trim) {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                problems.push(format!(
                    "SLUICE_GIT_SSH_TOFU={other:?} is not true or false"
                ));
                false
            }
        };
        let mut credential_grants = CredentialGrants {
            own_parameter_root: lookup("SLUICE_CREDENTIALS_PARAMETER_PATH")
                .filter(|p| !p.trim().is_empty()),
            own_secret_prefix: lookup("SLUICE_CREDENTIALS_SECRET_PREFIX")
                .filter(|p| !p.trim().is_empty()),
            ..CredentialGrants::default()
        };
        if let Some(text) = lookup("SLUICE_CREDENTIAL_GRANTS").filter(|t| !t.trim().is_empty()) {
            match serde_json::from_str::<std::collections::BTreeMap<String, Vec<String>>>(&text) {
                Ok(rules) => credential_grants.rules = rules.into_iter().collect(),
                Err(error) => problems.push(format!(
                    "SLUICE_CREDENTIAL_GRANTS is not a JSON object of principal patterns to \
                     lists of credential location patterns: {error}"
                )),
            }
        }
        if !problems.is_empty() {
            return Err(SettingsError { problems });
        }
        Ok(AwsSettings {
            internal_bucket,
            done_bucket,
            orders_table,
            events_table,
            locks_table,
            worker_function,
            compile_function,
            codebuild_project,
            watchdog_state_machine,
            ssm_prefix,
            event_ttl_days,
            order_ttl_days,
            github_api,
            git,
            credential_grants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    /// Every required setting.
    const REQUIRED: &[(&str, &str)] = &[
        ("SLUICE_INTERNAL_BUCKET", "internal"),
        ("SLUICE_DONE_BUCKET", "done"),
        ("SLUICE_ORDERS_TABLE", "orders"),
        ("SLUICE_EVENTS_TABLE", "events"),
        ("SLUICE_LOCKS_TABLE", "locks"),
        ("SLUICE_WORKER_FUNCTION", "worker"),
        ("SLUICE_CODEBUILD_PROJECT", "builds"),
        (
            "SLUICE_WATCHDOG_STATE_MACHINE",
            "arn:aws:states:us-east-1:1:stateMachine:w",
        ),
    ];

    #[test]
    fn reads_every_setting_with_defaults() {
        let settings = AwsSettings::from_lookup(lookup(REQUIRED)).unwrap();
        assert_eq!(settings.ssm_prefix, "/sluice");
        assert_eq!(settings.internal_bucket, "internal");
        assert_eq!(settings.event_ttl_days, 90);
        assert_eq!(settings.order_ttl_days, 1);
        assert_eq!(settings.git, GitPolicy::default());
        assert_eq!(settings.git.credential_hosts, ["github.com"]);
    }

    #[test]
    fn git_credential_hosts_and_ssh_trust_are_settings() {
        const GIT: &[(&str, &str)] = &[
            ("SLUICE_GIT_CREDENTIAL_HOSTS", "github.com, git.example.com"),
            ("SLUICE_GIT_KNOWN_HOSTS", "git.example.com ssh-ed25519 AAAA"),
            ("SLUICE_GIT_SSH_TOFU", "true"),
        ];
        let settings =
            AwsSettings::from_lookup(|name| lookup(REQUIRED)(name).or_else(|| lookup(GIT)(name)))
                .unwrap();
        assert_eq!(
            settings.git.credential_hosts,
            ["github.com", "git.example.com"]
        );
        assert_eq!(settings.git.known_hosts, "git.example.com ssh-ed25519 AAAA");
        assert!(settings.git.trust_on_first_use);
    }

    #[test]
    fn credential_grants_are_read_and_checked() {
        const GRANTS: &[(&str, &str)] = &[
            ("SLUICE_CREDENTIALS_PARAMETER_PATH", "/sluice-credentials"),
            ("SLUICE_CREDENTIALS_SECRET_PREFIX", "sluice/"),
            (
                "SLUICE_CREDENTIAL_GRANTS",
                r#"{"arn:aws:iam::*:role/ci-*": ["aws:::ssm:/shared/*"]}"#,
            ),
        ];
        let settings = AwsSettings::from_lookup(|name| {
            lookup(REQUIRED)(name).or_else(|| lookup(GRANTS)(name))
        })
        .unwrap();
        let grants = settings.credential_grants;
        assert_eq!(
            grants.own_parameter_root.as_deref(),
            Some("/sluice-credentials")
        );
        assert_eq!(
            grants.rules,
            [(
                "arn:aws:iam::*:role/ci-*".to_owned(),
                vec!["aws:::ssm:/shared/*".to_owned()]
            )]
        );
        const BAD: &[(&str, &str)] = &[("SLUICE_CREDENTIAL_GRANTS", "[1]")];
        let err =
            AwsSettings::from_lookup(|name| lookup(REQUIRED)(name).or_else(|| lookup(BAD)(name)))
                .unwrap_err();
        assert!(
            err.problems[0].starts_with("SLUICE_CREDENTIAL_GRANTS is not"),
            "{err}"
        );
    }

    #[test]
    fn names_every_missing_or_bad_variable_at_once() {
        let err = AwsSettings::from_lookup(lookup(&[
            ("SLUICE_INTERNAL_BUCKET", "internal"),
            ("SLUICE_DONE_BUCKET", " "),
            ("SLUICE_EVENT_TTL_DAYS", "soon"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.problems,
            [
                "SLUICE_DONE_BUCKET is not set",
                "SLUICE_ORDERS_TABLE is not set",
                "SLUICE_EVENTS_TABLE is not set",
                "SLUICE_LOCKS_TABLE is not set",
                "SLUICE_WORKER_FUNCTION is not set",
                "SLUICE_CODEBUILD_PROJECT is not set",
                "SLUICE_WATCHDOG_STATE_MACHINE is not set",
                "SLUICE_EVENT_TTL_DAYS=\"soon\" is not a positive number of days",
            ]
        );
    }
}
