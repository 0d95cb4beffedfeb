//! Where an order's code comes from: the rules on `code_dir`, `s3_location`, `git_repo` and
//! the git fields around it.
//!
//! An order has at most one code source of its own, and otherwise inherits the job's
//! `git_repo` (with the job's commit and credential locations, each overridable by the
//! order). A code source decides what is fetched and where a credential is sent, so it is
//! checked before anything is: a local folder only on the local engine, a zip on AWS only as
//! an `s3://` URL, a repository URL by [`crate::repo_url::check`], credential locations in
//! their full form, and a `git_folder` that stays inside the repository.

use super::{OrderCtx, Platform, ValidationError};
use crate::credentials::SecretLocation;
use crate::job::{JobSpec, OrderSpec};
use crate::paths::is_inside;

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

/// The code source of order `spec` of `job`, checked for `platform`.
pub(super) fn code_source(
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
        crate::repo_url::check(repo, platform)
            .map_err(|error| ctx.error("git_repo", error.to_string()))?;
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
        text.map(|t| SecretLocation::parse(t).map_err(|error| ctx.error(field, error.to_string())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse_job;
    use crate::validate::{ValidateOptions, check, error_of, validate};

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
}
