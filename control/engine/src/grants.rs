//! Which credentials a caller may name: a deployment's credential grants.
//!
//! A job names credential locations (`ssm_paths`, `secret_manager_paths`, git tokens and
//! keys), and init-job's role can read every one under the deployment's prefixes. Without
//! grants, whoever may submit a job could name any team's secrets. So, when the submitter is
//! known ([`Caller`]: an IAM principal through API Gateway or a function URL, an SNS
//! topic), every location the job names must match one of the patterns granted to it:
//! - the rules whose principal pattern matches the caller's canonical ARN (an assumed
//!   role's as `arn:aws:iam::A:role/R`; in principal patterns `*` stays within one `/` or
//!   `:` segment), each granting location patterns written like the job's locations
//!   (`aws:::ssm:/team/deploy/*`, `aws:::secretd:team/*`; there `*` matches anything);
//! - and, by default, a prefix of its own, named by its kind and name so a user, a role
//!   and a topic of the same name never share one:
//!   `aws:::ssm:<parameter root>/<kind>/<name>/*` and
//!   `aws:::secretd:<secret prefix><kind>/<name>/*` (`user/alice`, `role/Deployer`,
//!   `topic/jobs`).
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
                "aws:::ssm:{}/{}/{}/*",
                root.trim_end_matches('/'),
                caller.kind,
                caller.name
            ));
        }
        if let Some(prefix) = &self.own_secret_prefix {
            allowed.push(format!(
                "aws:::secretd:{prefix}{}/{}/*",
                caller.kind, caller.name
            ));
        }
        for (principal, locations) in &self.rules {
            if glob(principal, &caller.principal, &['/', ':']) {
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
            if !allowed.iter().any(|pattern| glob(pattern, &location, &[])) {
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

/// Whether `text` matches `pattern`, where `*` matches any run of characters other than
/// `stops` (which only match themselves) and everything else itself.
fn glob(pattern: &str, text: &str, stops: &[char]) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            // Every length the star may take, shortest first, within its segment.
            let mut taken = 0;
            loop {
                if glob(tail, &rest[taken..], stops) {
                    return true;
                }
                match rest[taken..].chars().next() {
                    Some(c) if !stops.contains(&c) => taken += c.len_utf8(),
                    _ => return false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_contract::validate::validate;
    use sluice_contract::{ValidateOptions, parse_job};

    #[test]
    fn globs_match_runs_of_characters_within_their_segment() {
        let any: &[char] = &[];
        let segment: &[char] = &['/', ':'];
        assert!(glob("/c/user/alice/*", "/c/user/alice/db/pw", any));
        assert!(!glob("/c/user/alice/*", "/c/user/alicia/db", any));
        let ci = "arn:aws:iam::*:role/ci-*";
        assert!(glob(ci, "arn:aws:iam::123:role/ci-deploy", segment));
        assert!(!glob(ci, "arn:aws:iam::123:role/prod", segment));
        // In a principal, `*` does not reach across `/` or `:`.
        assert!(!glob(ci, "arn:aws:iam::1:role/ci-x/evil", segment));
        assert!(!glob(ci, "arn:aws:iam::1:x:role/ci-a", segment));
        assert!(glob("exact", "exact", any) && !glob("exact", "exactly", any));
        assert!(glob("a*b*c", "abc", any) && !glob("a*b*c", "acb", any));
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
        let own = job("/sluice-credentials/user/alice/db");
        assert!(grants.check(&alice, &own).is_ok());
        assert!(grants.check(&alice, &job("/shared/token")).is_ok());
        let err = grants
            .check(&alice, &job("/sluice-credentials/user/bob/db"))
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, EngineError::Forbidden { .. }));
        assert!(
            message.contains("order 0001 (plan), field `ssm_paths`")
                && message
                    .contains("user/alice may not use aws:::ssm:/sluice-credentials/user/bob/db"),
            "{message}"
        );
        // No grant at all: nothing may be named.
        assert!(CredentialGrants::default().check(&alice, &own).is_err());
        // A role named like the user has a prefix of its own.
        let role = Caller::from_iam_arn("arn:aws:sts::1:assumed-role/alice/s").unwrap();
        assert_eq!(
            grants.allowed(&role)[0],
            "aws:::ssm:/sluice-credentials/role/alice/*"
        );
    }
}
