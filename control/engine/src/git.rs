//! Code from git repositories (`git_repo`, `commit_hash`, `git_folder`), fetched by init_job
//! with the `git` command.
//!
//! One bare clone per repository per job, shared by its orders; then one `git archive` of
//! each distinct (commit, folder) as a zip, which becomes the orders' code like any other
//! zip: the folder's files at the root, without `.git`, modes and links kept, and no
//! checkout on disk.
//!
//! A token (`git_token_location`) goes to git through `GIT_ASKPASS`: a script reading it
//! from a 0600 file in the job's workspace, so it is in no command line and no environment
//! variable, and it is only sent over HTTPS (or plain HTTP to this machine). An SSH key
//! (`git_ssh_key_location`) is written to a 0600 file that `ssh -i` reads (no agent, no
//! user configuration). Both files are deleted as soon as the clone is done. A credential
//! goes only to the hosts the deployment lists ([`GitPolicy::credential_hosts`], github.com
//! by default): a job naming another host with a token is refused before anything is sent.
//! SSH checks the server's key against the deployment's known hosts
//! ([`GitPolicy::known_hosts`]); trusting a key on first use (for the job only) happens only
//! when the deployment asks for it. git runs with
//! an environment built from scratch: no user or system configuration, no prompts, only the
//! `https`, `http`, `ssh`, `git` and `file` transports (never `ext::`), and its messages are
//! shown with the token masked. Of the host's environment git gets only what locates git
//! itself ([`HOST_VARIABLES`], handed in by the binary through [`GitPolicy`]): a git from a
//! Lambda layer lives under `/opt` and needs its helpers' and libraries' paths.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sluice_contract::validate::GitSource;

/// The variables of this process that git is given, when set: where git, its helpers
/// (`git-remote-https`, `git-upload-pack`) and its libraries are. Nothing else of the
/// host's environment reaches git.
pub const HOST_VARIABLES: &[&str] = &["PATH", "LD_LIBRARY_PATH", "GIT_EXEC_PATH"];

/// What ssh says when the server's key is not among the known hosts.
const HOST_KEY_FAILED: &str = "Host key verification failed";

/// The user name sent with a token (GitHub's convention for tokens of every kind).
const TOKEN_USER: &str = "x-access-token";

/// Answers git's username and password prompts from the token file.
const ASKPASS: &str = "#!/bin/sh\ncase \"$1\" in\n  Username*) echo x-access-token ;;\n  *) cat \"$SLUICE_GIT_TOKEN_FILE\" ;;\nesac\n";

/// Why an order's code could not be had from its git repository: a credential the
/// deployment does not let go where the job sends it, a secret file that could not be
/// written, or git failing to clone, find the commit or folder, or archive it. Every
/// message names the repository (and the commit or folder), and none holds a token: git's
/// words, and every text a job gave, come with the token masked (`***`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// A token or SSH key would go to a host the deployment does not list
    /// ([`GitPolicy::credential_hosts`]), or to a local repository.
    #[error(
        "{repo}: git credentials are sent only to {} (the deployment's git credential \
         hosts: SLUICE_GIT_CREDENTIAL_HOSTS, or --git-credential-hosts locally), not \
         to {}",
        listed_hosts(allowed),
        host.as_deref().unwrap_or("a local repository")
    )]
    CredentialHost {
        /// The repository.
        repo: String,
        /// The hosts credentials may be sent to.
        allowed: Vec<String>,
        /// The repository's host (`None` for a local repository).
        host: Option<String>,
    },
    /// A token would travel in clear: the repository is neither `https://` nor `http://`
    /// to this machine.
    #[error("{repo}: a git token is only sent over https:// (or http:// to this machine)")]
    TokenTransport {
        /// The repository.
        repo: String,
    },
    /// A secret file of the workspace (a token, an SSH key, or the askpass script reading
    /// the token) could not be written.
    #[error("writing {path}: {source}")]
    WritePrivate {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The repository could not be cloned (a hint follows git's words when the server's
    /// SSH key is not among the known hosts).
    #[error("cloning {repo}: {source}{}", host_key_hint(source))]
    Clone {
        /// The repository.
        repo: String,
        /// What git said.
        #[source]
        source: GitCommandError,
    },
    /// The commit (or, with none given, the default branch's head) is not in the clone.
    #[error("commit {commit} is not in {repo}")]
    NoCommit {
        /// The repository.
        repo: String,
        /// The commit asked for (`HEAD` when none was).
        commit: String,
    },
    /// `git_folder` is not a folder of the repository at the commit.
    #[error("git_folder {folder} is not a folder of {repo} at commit {sha}")]
    NoFolder {
        /// The repository.
        repo: String,
        /// The folder, without leading or trailing `/`.
        folder: String,
        /// The commit, resolved.
        sha: String,
    },
    /// `git archive` of the commit's tree or folder failed.
    #[error("archiving {tree} of {repo}: {source}")]
    Archive {
        /// The repository.
        repo: String,
        /// What was archived: the commit, or `commit:folder`.
        tree: String,
        /// What git said.
        #[source]
        source: GitCommandError,
    },
}

impl GitError {
    /// This error with `token` (and the Basic credentials made of it) masked in every text
    /// it holds.
    fn masked(self, token: Option<&str>) -> Self {
        if token.is_none() {
            return self;
        }
        let mask = |text: String| mask_token(text, token);
        match self {
            GitError::CredentialHost {
                repo,
                allowed,
                host,
            } => GitError::CredentialHost {
                repo: mask(repo),
                allowed,
                host: host.map(mask),
            },
            GitError::TokenTransport { repo } => GitError::TokenTransport { repo: mask(repo) },
            GitError::WritePrivate { path, source } => GitError::WritePrivate { path, source },
            GitError::Clone { repo, source } => GitError::Clone {
                repo: mask(repo),
                source: source.masked(token),
            },
            GitError::NoCommit { repo, commit } => GitError::NoCommit {
                repo: mask(repo),
                commit: mask(commit),
            },
            GitError::NoFolder { repo, folder, sha } => GitError::NoFolder {
                repo: mask(repo),
                folder: mask(folder),
                sha: mask(sha),
            },
            GitError::Archive { repo, tree, source } => GitError::Archive {
                repo: mask(repo),
                tree: mask(tree),
                source: source.masked(token),
            },
        }
    }
}

/// The hosts credentials may be sent to, as a message lists them.
fn listed_hosts(allowed: &[String]) -> String {
    if allowed.is_empty() {
        "no host".to_owned()
    } else {
        allowed.join(", ")
    }
}

/// What a failed clone's message ends with: how to trust the server when ssh refused its
/// key, else nothing.
fn host_key_hint(error: &GitCommandError) -> &'static str {
    if error.to_string().contains(HOST_KEY_FAILED) {
        " (the server's SSH key is not among the deployment's known hosts: add it to \
         SLUICE_GIT_KNOWN_HOSTS, or --git-known-hosts locally, e.g. from its \
         published keys or `ssh-keyscan HOST`; or allow trust on first use with \
         SLUICE_GIT_SSH_TOFU=1)"
    } else {
        ""
    }
}

/// Why running the `git` command failed. What git said is kept as it said it until the
/// [`GitError`] holding it is masked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitCommandError {
    /// There is no `git` where it is looked for (the policy's `PATH`).
    #[error(
        "git is not installed (it fetches code from git repositories; on AWS, \
         deploy init-job with a git layer: GitLayerArn in docs/deploy.md)"
    )]
    NotInstalled(#[source] io::Error),
    /// git could not be started.
    #[error("running git: {0}")]
    Start(#[source] io::Error),
    /// git ran and failed, saying why.
    #[error("{said}")]
    Failed {
        /// The git command (`clone`, `archive`...).
        command: String,
        /// How git ended.
        status: ExitStatus,
        /// The last lines git wrote to stderr, joined with ` / ` (ssh's reason for refusing
        /// a server's key kept first).
        said: String,
    },
    /// git ran and failed without a word.
    #[error("git {command} failed ({status})")]
    FailedSilently {
        /// The git command (`clone`, `archive`...).
        command: String,
        /// How git ended.
        status: ExitStatus,
    },
}

impl GitCommandError {
    /// This error with `token` masked in what git said.
    fn masked(self, token: Option<&str>) -> Self {
        match self {
            GitCommandError::Failed {
                command,
                status,
                said,
            } => GitCommandError::Failed {
                command,
                status,
                said: mask_token(said, token),
            },
            other => other,
        }
    }
}

/// Where git credentials may go and which SSH servers are trusted: a deployment's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitPolicy {
    /// Hosts a token or SSH key is sent to (compared without case, user or port).
    pub credential_hosts: Vec<String>,
    /// Lines of an OpenSSH `known_hosts` file: the SSH servers whose keys are trusted.
    pub known_hosts: String,
    /// Trust an SSH server's key the first time it is seen (remembered for the job only)
    /// when `known_hosts` does not have it.
    pub trust_on_first_use: bool,
    /// Where git, its helpers and its libraries are: the binary's own [`HOST_VARIABLES`],
    /// read once where it starts ([`GitPolicy::locating_git_with`]). Without `PATH`, git is
    /// looked for in `/usr/bin:/bin`.
    pub host_env: Vec<(&'static str, String)>,
}

impl Default for GitPolicy {
    fn default() -> Self {
        GitPolicy {
            credential_hosts: vec!["github.com".to_owned()],
            known_hosts: String::new(),
            trust_on_first_use: false,
            host_env: Vec::new(),
        }
    }
}

impl GitPolicy {
    /// This policy, with git found through the [`HOST_VARIABLES`] that `lookup` (the
    /// binary's environment) has.
    pub fn locating_git_with(self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let host_env = HOST_VARIABLES
            .iter()
            .filter_map(|&name| Some((name, lookup(name)?)))
            .collect();
        GitPolicy { host_env, ..self }
    }

    /// Refuses to send a credential to `repo`'s host unless it is listed.
    fn check_credential_host(&self, repo: &str) -> Result<(), GitError> {
        let host = sluice_contract::repo_url::host(repo);
        match &host {
            Some(host)
                if self
                    .credential_hosts
                    .iter()
                    .any(|allowed| allowed.trim().eq_ignore_ascii_case(host)) =>
            {
                Ok(())
            }
            _ => Err(GitError::CredentialHost {
                repo: repo.to_owned(),
                allowed: self.credential_hosts.clone(),
                host,
            }),
        }
    }
}

/// What a repository is cloned with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GitCredential {
    /// An HTTPS token.
    Token(String),
    /// An SSH private key (OpenSSH or PEM text).
    SshKey(String),
}

/// The token among a clone's credential, for masking messages.
fn token_of(credential: Option<&GitCredential>) -> Option<&str> {
    match credential {
        Some(GitCredential::Token(token)) => Some(token),
        _ => None,
    }
}

/// The secret file a clone authenticates with.
enum Auth<'a> {
    /// A token file, read by the askpass script.
    Token(&'a Path),
    /// An SSH private key file.
    SshKey(&'a Path),
}

/// The clones and archives of one job, in a folder deleted with it.
#[derive(Debug)]
pub struct GitWorkspace {
    dir: tempfile::TempDir,
    policy: GitPolicy,
    /// Clone folder of each (repository, credential).
    clones: HashMap<(String, Option<GitCredential>), PathBuf>,
    /// Zip of each (clone, commit, folder).
    archives: HashMap<(PathBuf, String, Option<String>), PathBuf>,
}

impl GitWorkspace {
    /// A new, empty workspace in the system's temp folder, cloning under `policy`.
    ///
    /// # Errors
    ///
    /// The folder cannot be created.
    pub fn new(policy: GitPolicy) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sluice-git-").tempdir()?;
        std::fs::write(dir.path().join("known_hosts"), &policy.known_hosts)?;
        Ok(GitWorkspace {
            dir,
            policy,
            clones: HashMap::new(),
            archives: HashMap::new(),
        })
    }

    /// A zip of `source`'s folder at its commit (the default branch's head when none),
    /// cloning the repository first (with `credential`, the value of its
    /// `git_token_location` or `git_ssh_key_location`) if this job has not.
    ///
    /// # Errors
    ///
    /// A [`GitError`] (with the token masked) saying which repository, commit or folder
    /// could not be had, and why.
    pub async fn code_zip(
        &mut self,
        source: &GitSource,
        credential: Option<&GitCredential>,
    ) -> Result<PathBuf, GitError> {
        self.archive_of(source, credential)
            .await
            .map_err(|error| error.masked(token_of(credential)))
    }

    /// [`GitWorkspace::code_zip`], its error not masked yet.
    async fn archive_of(
        &mut self,
        source: &GitSource,
        credential: Option<&GitCredential>,
    ) -> Result<PathBuf, GitError> {
        let clone = self.clone_of(source, credential).await?;
        let commit = source.commit.as_deref().unwrap_or("HEAD");
        let sha = git(
            &clone,
            &self.env(None),
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{commit}^{{commit}}"),
            ],
        )
        .await
        .map_err(|_| GitError::NoCommit {
            repo: source.repo.clone(),
            commit: commit.to_owned(),
        })?;
        let key = (clone.clone(), sha.clone(), source.folder.clone());
        if let Some(zip) = self.archives.get(&key) {
            return Ok(zip.clone());
        }
        let tree = match &source.folder {
            Some(folder) => {
                let folder = folder.trim_matches('/');
                let object = format!("{sha}:{folder}");
                let kind = git(&clone, &self.env(None), &["cat-file", "-t", &object]).await;
                if !matches!(kind.as_deref(), Ok("tree")) {
                    return Err(GitError::NoFolder {
                        repo: source.repo.clone(),
                        folder: folder.to_owned(),
                        sha,
                    });
                }
                object
            }
            None => sha.clone(),
        };
        let zip = self
            .dir
            .path()
            .join(format!("code-{}.zip", self.archives.len() + 1));
        let output = zip.display().to_string();
        git(
            &clone,
            &self.env(None),
            &["archive", "--format=zip", "-o", &output, &tree],
        )
        .await
        .map_err(|error| GitError::Archive {
            repo: source.repo.clone(),
            tree: tree.clone(),
            source: error,
        })?;
        self.archives.insert(key, zip.clone());
        Ok(zip)
    }

    /// The bare clone of `source.repo` made with `credential`, made now if need be.
    async fn clone_of(
        &mut self,
        source: &GitSource,
        credential: Option<&GitCredential>,
    ) -> Result<PathBuf, GitError> {
        let key = (source.repo.clone(), credential.cloned());
        if let Some(clone) = self.clones.get(&key) {
            return Ok(clone.clone());
        }
        let n = self.clones.len() + 1;
        if credential.is_some() {
            self.policy.check_credential_host(&source.repo)?;
        }
        let (secret_file, env) = match credential {
            Some(GitCredential::Token(token)) => {
                check_token_transport(&source.repo)?;
                let file = self.write_private(&format!("token-{n}"), token.trim().as_bytes())?;
                let env = self.env(Some(Auth::Token(&file)));
                (Some(file), env)
            }
            Some(GitCredential::SshKey(key)) => {
                let text = format!("{}\n", key.trim());
                let file = self.write_private(&format!("ssh-key-{n}"), text.as_bytes())?;
                let env = self.env(Some(Auth::SshKey(&file)));
                (Some(file), env)
            }
            None => (None, self.env(None)),
        };
        let clone = self.dir.path().join(format!("repo-{n}.git"));
        let dest = clone.display().to_string();
        let result = git(
            self.dir.path(),
            &env,
            &["clone", "--bare", "--quiet", "--", &source.repo, &dest],
        )
        .await;
        if let Some(file) = &secret_file {
            let _ = std::fs::remove_file(file);
        }
        result.map_err(|error| GitError::Clone {
            repo: source.repo.clone(),
            source: error,
        })?;
        self.clones.insert(key, clone.clone());
        Ok(clone)
    }

    /// git's environment: nothing of the host's but [`HOST_VARIABLES`] (as the policy has
    /// them); with a token
    /// file, the askpass script that reads it; with a key file, the ssh command that uses
    /// it.
    fn env(&self, auth: Option<Auth<'_>>) -> Vec<(&'static str, String)> {
        let home = self.dir.path().display().to_string();
        let mut env = self.policy.host_env.clone();
        if !env.iter().any(|(name, _)| *name == "PATH") {
            env.push(("PATH", "/usr/bin:/bin".to_owned()));
        }
        env.extend([
            ("HOME", home),
            ("LC_ALL", "C".to_owned()),
            ("GIT_CONFIG_NOSYSTEM", "1".to_owned()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".to_owned()),
            ("GIT_TERMINAL_PROMPT", "0".to_owned()),
            ("GIT_ALLOW_PROTOCOL", "https:http:ssh:git:file".to_owned()),
        ]);
        match auth {
            Some(Auth::Token(file)) => {
                let askpass = self.dir.path().join("askpass.sh");
                env.push(("GIT_ASKPASS", askpass.display().to_string()));
                env.push(("SLUICE_GIT_TOKEN_FILE", file.display().to_string()));
            }
            Some(Auth::SshKey(file)) => {
                env.push(("GIT_SSH_COMMAND", self.ssh_command(Some(file))));
            }
            None => env.push(("GIT_SSH_COMMAND", self.ssh_command(None))),
        }
        env
    }

    /// The ssh git runs: no user configuration or agent, the key file if any, and the
    /// server checked against the policy's known hosts (the workspace's copy, which also
    /// remembers keys trusted on first use, for this job only).
    fn ssh_command(&self, key: Option<&Path>) -> String {
        let known_hosts = self.dir.path().join("known_hosts");
        let checking = if self.policy.trust_on_first_use {
            "accept-new"
        } else {
            "yes"
        };
        let identity = match key {
            Some(file) => format!("-i '{}' -o IdentitiesOnly=yes ", file.display()),
            None => String::new(),
        };
        format!(
            "ssh -F /dev/null {identity}-o IdentityAgent=none -o BatchMode=yes \
             -o StrictHostKeyChecking={checking} -o UserKnownHostsFile='{}' \
             -o GlobalKnownHostsFile=/dev/null",
            known_hosts.display()
        )
    }

    /// Writes `bytes` to a new file of the workspace readable by its owner only; writes the
    /// askpass script beside it the first time.
    fn write_private(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, GitError> {
        let askpass = self.dir.path().join("askpass.sh");
        if !askpass.exists() {
            std::fs::write(&askpass, ASKPASS)
                .and_then(|()| {
                    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|source| GitError::WritePrivate {
                    path: askpass.clone(),
                    source,
                })?;
        }
        let path = self.dir.path().join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|source| GitError::WritePrivate {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }
}

/// A token is sent over HTTPS, or over plain HTTP only to this machine.
fn check_token_transport(repo: &str) -> Result<(), GitError> {
    let lower = repo.to_ascii_lowercase();
    // The host as parsed, not a prefix of the text: `http://127.0.0.1.evil.example` is no
    // loopback.
    let loopback = lower.starts_with("http://")
        && sluice_contract::repo_url::host(repo)
            .is_some_and(|host| sluice_contract::repo_url::is_loopback(&host));
    if lower.starts_with("https://") || loopback {
        Ok(())
    } else {
        Err(GitError::TokenTransport {
            repo: repo.to_owned(),
        })
    }
}

/// `text` with the token, and the Basic credentials made of it, masked.
fn mask_token(text: String, token: Option<&str>) -> String {
    match token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => {
            let basic = STANDARD.encode(format!("{TOKEN_USER}:{token}"));
            text.replace(token, "***").replace(&basic, "***")
        }
        None => text,
    }
}

/// Runs `git ARGS` in `dir` with exactly `env`; its trimmed stdout, or its stderr's last
/// lines in the error.
async fn git(
    dir: &Path,
    env: &[(&'static str, String)],
    args: &[&str],
) -> Result<String, GitCommandError> {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => GitCommandError::NotInstalled(e),
            _ => GitCommandError::Start(e),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut last = lines[lines.len().saturating_sub(3)..].join(" / ");
        // ssh says why first, git's generic lines follow: keep the reason.
        if let Some(reason) = lines.iter().find(|l| l.contains(HOST_KEY_FAILED))
            && !last.contains(HOST_KEY_FAILED)
        {
            last = format!("{reason} / {last}");
        }
        let command = args[0].to_owned();
        Err(if last.is_empty() {
            GitCommandError::FailedSilently {
                command,
                status: output.status,
            }
        } else {
            GitCommandError::Failed {
                command,
                status: output.status,
                said: last,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_travel_only_over_https_or_to_this_machine() {
        assert!(check_token_transport("https://github.com/o/r.git").is_ok());
        assert!(check_token_transport("http://127.0.0.1:8080/r.git").is_ok());
        let e = check_token_transport("http://git.example.com/r.git")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only sent over https://"), "{e}");
        assert!(check_token_transport("git@github.com:o/r.git").is_err());
    }

    #[test]
    fn messages_never_show_the_token() {
        let basic = STANDARD.encode("x-access-token:ghp_secret123");
        let text = format!("fatal: https://ghp_secret123@h/r: Authorization: Basic {basic}");
        let masked = mask_token(text, Some("ghp_secret123\n"));
        assert_eq!(masked, "fatal: https://***@h/r: Authorization: Basic ***");
    }

    #[test]
    fn typed_errors_hold_no_token_once_masked() {
        use std::os::unix::process::ExitStatusExt;
        let error = GitError::Clone {
            repo: "https://h/r".to_owned(),
            source: GitCommandError::Failed {
                command: "clone".to_owned(),
                status: ExitStatus::from_raw(128 << 8),
                said: "fatal: https://ghp_secret123@h/r: denied".to_owned(),
            },
        }
        .masked(Some("ghp_secret123"));
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("ghp_secret123"), "{shown}");
        assert!(
            error
                .to_string()
                .starts_with("cloning https://h/r: fatal: https://***@h/r"),
            "{error}"
        );
    }
}
