//! Which credentials a caller may name: a deployment's credential grants.
//!
//! A job names credential locations (`ssm_paths`, `secret_manager_paths`, git tokens and
//! keys), and init-job's role can read every one under the deployment's prefixes. Without
//! grants, whoever may submit a job could name any team's secrets. So, when the submitter is
//! known ([`Caller`]: an IAM principal through API Gateway or a function URL, an SNS
//! topic), every location the job names must match one of the patterns granted to it:
//! - the rules whose principal pattern matches the caller's ARN (`*` matches any run of
//!   characters), each granting location patterns written like the job's locations
//!   (`aws:::ssm:/team/deploy/*`, `aws:::secretd:team/*`);
//! - and, by default, a prefix of its own: `aws:::ssm:<parameter root>/<name>/*` and
//!   `aws:::secretd:<secret prefix><name>/*`.
//!
//! A location outside them fails init before anything is fetched ([`EngineError::Forbidden`],
//! a 403). A job without a known caller (a direct invoke, which needs
//! `lambda:InvokeFunction`: an operator's permission; the local engine) is not checked.

use sluice_contract::caller::Caller;
use sluice_contract::validate::ValidJob;

use crate::error::EngineError;

/// A deployment's credential grants (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialGrants {
    /// Principal pattern → the location patterns it grants.
    pub rules: Vec<(String, Vec<String>)>,
    /// The SSM path under which each caller has `<name>/` of its own, if any.
    pub own_parameter_root: Option<String>,
    /// The Secrets Manager name prefix under which each caller has `<name>/`, if any.
    pub own_secret_prefix: Option<String>,
}

impl CredentialGrants {
    /// The location patterns `caller` may use.
    pub fn allowed(&self, caller: &Caller) -> Vec<String> {
        let mut allowed = Vec::new();
        if let Some(root) = &self.own_parameter_root {
            allowed.push(format!(
                "aws:::ssm:{}/{}/*",
                root.trim_end_matches('/'),
                caller.name
            ));
        }
        if let Some(prefix) = &self.own_secret_prefix {
            allowed.push(format!("aws:::secretd:{prefix}{}/*", caller.name));
        }
        for (principal, locations) in &self.rules {
            if glob(principal, &caller.principal) {
                allowed.extend(locations.iter().cloned());
            }
        }
        allowed
    }

    /// Refuses the first location `valid` names that `caller` may not use.
    ///
    /// # Errors
    ///
    /// [`EngineError::Forbidden`] naming the order, field, caller and location.
    pub fn check(&self, caller: &Caller, valid: &ValidJob) -> Result<(), EngineError> {
        let allowed = self.allowed(caller);
        for (at, location) in valid.credential_locations() {
            let location = location.to_string();
            if !allowed.iter().any(|pattern| glob(pattern, &location)) {
                return Err(EngineError::Forbidden {
                    at,
                    caller: caller.principal.clone(),
                    location,
                    allowed: if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    },
                });
            }
        }
        Ok(())
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (`/` too) and
/// everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_contract::validate::validate;
    use sluice_contract::{ValidateOptions, parse_job};

    #[test]
    fn globs_match_runs_of_any_characters() {
        assert!(glob(
            "aws:::ssm:/sluice-credentials/alice/*",
            "aws:::ssm:/sluice-credentials/alice/db/pw"
        ));
        assert!(!glob(
            "aws:::ssm:/sluice-credentials/alice/*",
            "aws:::ssm:/sluice-credentials/alicia/db"
        ));
        assert!(glob(
            "arn:aws:iam::*:role/ci-*",
            "arn:aws:iam::123:role/ci-deploy"
        ));
        assert!(!glob(
            "arn:aws:iam::*:role/ci-*",
            "arn:aws:iam::123:role/prod"
        ));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
        assert!(glob("a*b*c", "abc") && !glob("a*b*c", "acb"));
    }

    fn job(ssm: &str) -> ValidJob {
        let job = parse_job(
            format!(r#"{{"orders": [{{"order_name": "plan", "cmds": ["true"], "timeout": 5, "ssm_paths": ["{ssm}"]}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        let caller = Caller::from_iam_arn("arn:aws:iam::123456789012:user/alice").unwrap();
        validate(&job, &ValidateOptions::aws_from(caller)).unwrap()
    }

    #[test]
    fn a_caller_uses_its_own_prefix_and_what_rules_grant_it() {
        let alice = Caller::from_iam_arn("arn:aws:iam::123456789012:user/alice").unwrap();
        let grants = CredentialGrants {
            rules: vec![(
                "arn:aws:iam::*:user/alice".to_owned(),
                vec!["aws:::ssm:/shared/*".to_owned()],
            )],
            own_parameter_root: Some("/sluice-credentials".to_owned()),
            own_secret_prefix: Some("sluice/".to_owned()),
        };
        assert!(
            grants
                .check(&alice, &job("/sluice-credentials/alice/db"))
                .is_ok()
        );
        assert!(grants.check(&alice, &job("/shared/token")).is_ok());
        let err = grants
            .check(&alice, &job("/sluice-credentials/bob/db"))
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, EngineError::Forbidden { .. }));
        assert!(
            message.contains("order 0001 (plan), field `ssm_paths`")
                && message.contains("arn:aws:iam::123456789012:user/alice may not use aws:::ssm:/sluice-credentials/bob/db"),
            "{message}"
        );
        // No grant at all: nothing may be named.
        let none = CredentialGrants::default();
        assert!(
            none.check(&alice, &job("/sluice-credentials/alice/db"))
                .is_err()
        );
    }
}
