//! What a `git_repo` may be, and which host it names.
//!
//! A repository URL decides where code comes from and where a credential is sent, so it is
//! checked before anything is fetched:
//! - no credential in the URL itself (`https://user:pw@…`, `https://<token>@…`): it would be
//!   echoed in errors and logs; tokens go in `git_token_location`;
//! - a transport that authenticates the server: `https://` or SSH (`ssh://`, `git+ssh://`,
//!   `user@host:path`); plain `http://` and `git://` only to this machine (tests, mirrors on
//!   loopback); `file://` and local paths only on the local engine, never on AWS, where
//!   they would read init-job's own file system.
//!
//! [`host`] gives the host a credential would go to, for the deployment's list of hosts
//! credentials may be sent to.

use crate::validate::Platform;

/// Why a repository URL is refused: what is wrong and what to give instead. No variant
/// holds the URL, which may carry a credential. A message is the rest of a sentence whose
/// subject is the URL ("is not a repository URL ..."): validation puts it after the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoUrlError {
    /// It starts with `-` (git would read an option) or holds whitespace.
    #[error("is not a repository URL (it starts with `-` or holds spaces)")]
    NotAUrl,
    /// `%`, `?`, `#` or `\` in the user, host and port part, which git and [`host`] could
    /// read differently.
    #[error(
        "has `%`, `?`, `#` or `\\` before its path, where git and this check could read a \
         different host: write the host plainly"
    )]
    AmbiguousHost,
    /// git's `<helper>::<address>` syntax, which runs a program.
    #[error(
        "uses git's `<helper>::<address>` syntax, which runs a program: give an \
         https:// or ssh repository"
    )]
    RemoteHelper,
    /// A password or token before the host's `@`.
    #[error(
        "carries a credential in the URL (before its `@`): remove it and give the token \
         with git_token_location (or an SSH key with git_ssh_key_location)"
    )]
    CredentialInUrl,
    /// `http://` or `git://` to another machine: the server is not authenticated.
    #[error(
        "uses {scheme}://, which does not authenticate the server (anyone on the path \
         could change the code): use https:// or ssh (plain {scheme}:// only to this \
         machine)"
    )]
    Unauthenticated {
        /// The scheme, lower-cased (`http` or `git`).
        scheme: String,
    },
    /// A scheme git would fetch with but Sluice does not accept.
    #[error("uses {scheme}://: give an https:// or ssh repository")]
    UnknownScheme {
        /// The scheme, lower-cased.
        scheme: String,
    },
    /// A local path or `file://` URL on AWS, where init-job would read its own file system.
    #[error(
        "is a local repository (a path or file:// URL), which init-job would read from \
         its own file system: on AWS give an https:// or ssh repository"
    )]
    LocalOnAws,
}

/// Checks `repo` against the rules above, for a job running on `platform`.
///
/// # Errors
///
/// [`RepoUrlError`], saying what is wrong and what to give instead. It never repeats the
/// URL: it may hold a credential.
pub fn check(repo: &str, platform: Platform) -> Result<(), RepoUrlError> {
    if repo.starts_with('-') || repo.chars().any(char::is_whitespace) {
        return Err(RepoUrlError::NotAUrl);
    }
    if authority(repo).is_some_and(|a| a.contains(['%', '?', '#', '\\'])) {
        return Err(RepoUrlError::AmbiguousHost);
    }
    let Some((scheme, rest)) = repo.split_once("://") else {
        if repo.contains("::") {
            return Err(RepoUrlError::RemoteHelper);
        }
        if is_scp_like(repo) {
            // `user@host:path`: a password cannot be given this way.
            return Ok(());
        }
        return local_only(platform);
    };
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some((user_info, _)) = authority.rsplit_once('@')
        && (user_info.contains(':') || matches!(scheme.as_str(), "http" | "https"))
    {
        return Err(RepoUrlError::CredentialInUrl);
    }
    match scheme.as_str() {
        "https" | "ssh" | "git+ssh" | "ssh+git" => Ok(()),
        "http" | "git" if host(repo).is_some_and(|h| is_loopback(&h)) => Ok(()),
        "http" | "git" => Err(RepoUrlError::Unauthenticated { scheme }),
        "file" => local_only(platform),
        _ => Err(RepoUrlError::UnknownScheme { scheme }),
    }
}

/// The host `repo` names (lower case, without user or port), if it names one: `None` for
/// a local path or `file://` URL.
pub fn host(repo: &str) -> Option<String> {
    let authority = authority(repo)?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The part of `repo` naming user, host and port: up to the first `/` after `scheme://`
/// (git ends an ssh host only there), or before the `:` of `user@host:path`.
fn authority(repo: &str) -> Option<&str> {
    match repo.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("file") => None,
        Some((_, rest)) => rest.split('/').next(),
        None if is_scp_like(repo) => repo.split(':').next(),
        None => None,
    }
}

/// Whether `host` is this machine.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[user@]host:path`, git's scp-like SSH syntax: a colon before any slash.
fn is_scp_like(repo: &str) -> bool {
    match (repo.find(':'), repo.find('/')) {
        (Some(colon), Some(slash)) => colon < slash && colon > 0,
        (Some(colon), None) => colon > 0,
        _ => false,
    }
}

/// A local repository: accepted only on the local engine.
fn local_only(platform: Platform) -> Result<(), RepoUrlError> {
    match platform {
        Platform::Local => Ok(()),
        Platform::Aws => Err(RepoUrlError::LocalOnAws),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_found_in_every_syntax() {
        for (repo, expected) in [
            ("https://GitHub.com/acme/infra.git", Some("github.com")),
            (
                "https://github.example.com:8443/a/b",
                Some("github.example.com"),
            ),
            ("ssh://git@github.com:22/acme/infra.git", Some("github.com")),
            ("git@github.com:acme/infra.git", Some("github.com")),
            ("http://[::1]:9000/r.git", Some("::1")),
            ("file:///srv/repo", None),
            ("/srv/repo", None),
            ("./repo", None),
        ] {
            assert_eq!(host(repo).as_deref(), expected, "{repo}");
        }
    }

    #[test]
    fn transports_that_do_not_authenticate_the_server_are_refused() {
        use Platform::{Aws, Local};
        for repo in [
            "https://github.com/a/b",
            "ssh://git@github.com/a/b",
            "git@github.com:a/b.git",
            "http://127.0.0.1:8080/r.git",
            "http://localhost/r.git",
            "git://[::1]/r.git",
        ] {
            assert_eq!(check(repo, Aws), Ok(()), "{repo}");
        }
        for repo in [
            "http://example.com/r.git",
            "git://example.com/r.git",
            "ext::sh -c x",
            // git decodes `%2F` and ends an ssh host only at `/`: these reach evil.com.
            "ssh://evil.com%2F@github.com/r",
            "ssh://github.com?@evil.com/r",
            "ssh://github.com#@evil.com/r",
            "git://evil.invalid%2F@localhost/x",
            "git@github.com\\@evil.com:r",
        ] {
            assert!(check(repo, Local).is_err(), "{repo}");
        }
        for repo in ["file:///srv/repo", "/srv/repo", "../repo"] {
            assert_eq!(check(repo, Local), Ok(()), "{repo}");
            assert!(
                check(repo, Aws).unwrap_err().to_string().contains("on AWS"),
                "{repo}"
            );
        }
    }
}
