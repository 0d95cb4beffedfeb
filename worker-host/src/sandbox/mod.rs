//! The local sandbox of shell orders: namespaces of their own, a read-only world, no
//! network unless granted.
//!
//! An order is hostile code, and `sluice run` runs it as the user, on the user's machine.
//! Sandboxed, each command starts in new user, mount, PID, IPC, UTS, cgroup and (unless the
//! order may reach the network) network namespaces, and sees:
//!
//! - the root filesystem read-only, without set-user-id or devices;
//! - its own folders (code, events, output) writable, at their usual paths, and a private,
//!   empty `/tmp`, `/dev` (null, zero, full, random, urandom, tty, a pty of its own) and
//!   `/proc` of its own PID namespace: no other process, no parent's environment;
//! - empty folders in place of `/run`, the user's homes, and what the caller hides
//!   ([`SandboxSettings::hidden`]: the job's folder, the runtime folder where the SSH, GPG
//!   and D-Bus sockets are…), an empty file in place of every other socket bound to a path;
//! - never Sluice's own files ([`SandboxSettings::protected`]: the state folder, the
//!   compile cache, the secrets file), whatever is granted;
//! - what its job grants (`"sandbox": {"network": true, "read": […], "write": […]}`), at the
//!   same paths, through no symbolic link, without the hidden paths inside;
//! - a loopback interface of its own, unless it may reach the network.
//!
//! **Why the namespaces are set up by Sluice and not by bubblewrap:** the order's timeout
//! and stop must work as without the sandbox: SIGTERM to every process of the order, the
//! grace period, then SIGKILL. bubblewrap's process outside the sandbox dies on the first
//! SIGTERM and takes the sandbox with it (`--die-with-parent`), and its first process
//! inside forwards no signal. Here the sandbox's first process is this binary (`init.rs`):
//! a direct child of the worker, in the command's process group, which forwards what it
//! gets to every process of the sandbox and ends it when the command ends. It also means
//! nothing to install.
//!
//! How a command starts ([`Jail`]): the worker clones its child straight into the new
//! namespaces (`spawn.rs`); the child, still sharing the worker's memory, makes the
//! capabilities the set-up needs ambient, so they survive `execve`, and executes this binary
//! as the sandbox's first process, with no variable (the order's could act on it:
//! `LD_PRELOAD`): its view and the command's variables come through a pipe on its stdin.
//! That process maps the user to itself (`uid_map`,
//! `gid_map`: the command runs as the same user, root as root), builds the view
//! (`view.rs`), drops every capability, forbids gaining any (`no_new_privs`), starts
//! `/bin/sh -c <command>` in a session of its own, forwards signals and reaps orphans until
//! the shell ends, then exits with its status: the kernel kills whatever else is left in
//! the PID namespace.

mod init;
mod view;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};
use sluice_contract::SandboxSpec;
use tokio::io::AsyncReadExt;

pub use init::serve_if_asked;

use crate::containment::{Inheritable, prctl_unless_unknown, set_inheritable};

/// The first argument that makes this binary a sandbox's first process.
pub(crate) const INIT_ARG: &str = "__sluice-sandbox-init";

/// Exit code of a sandbox whose set-up failed (its message is on stderr, so in the log).
pub const SETUP_FAILED: i32 = 125;

pub(crate) use init::caught_signals;

/// How the worker sandboxes shell orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// The program run as each sandbox's first process: a binary that calls
    /// [`serve_if_asked`] first thing (`/proc/self/exe` for `sluice`).
    pub init: PathBuf,
    /// What `~` in a grant names: the user's home.
    pub home: Option<PathBuf>,
    /// Folders and files no order sees unless its job grants them (the home, the job's
    /// folder, the temporary folder…); those that do not exist are skipped.
    pub hidden: Vec<PathBuf>,
    /// Sluice's own folders and files (the state folder, the compile cache, the secrets
    /// file): hidden like `hidden`, and never granted, not even inside a granted folder —
    /// another run's keys, or code `sluice` itself would load.
    pub protected: Vec<PathBuf>,
    /// Every order may reach the network (`--network`).
    pub network: bool,
}

/// Why a sandbox cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A granted path cannot be granted or prepared.
    #[error("sandbox grant {grant}: {message}")]
    Grant {
        /// The grant as the job wrote it.
        grant: String,
        /// What is wrong.
        message: String,
    },
    /// A path of the sandbox cannot be used (the order's own folders).
    #[error("sandbox: {0}")]
    Path(String),
    /// A trial sandbox did not start or did not run `true`.
    #[error("{0}")]
    Unavailable(String),
}

/// What one sandbox shows: handed to its first process as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct View {
    /// Paths covered: a folder by an empty, writable one, anything else by an empty file.
    hide: Vec<PathBuf>,
    /// Seen read-only, at their own path.
    read: Vec<PathBuf>,
    /// Seen writable, at their own path.
    write: Vec<PathBuf>,
    /// Hidden paths inside a granted folder: covered again once the grants are in.
    hide_within: Vec<PathBuf>,
    /// Where the command starts.
    cwd: PathBuf,
    /// Shares the host's network (else: a loopback of its own).
    network: bool,
    /// The user and group outside, which the sandbox maps to themselves.
    uid: u32,
    gid: u32,
}

/// Folders hidden from every sandbox whatever the caller says: `/run` holds the system's
/// sockets (Docker's, D-Bus's) and the users' runtime folders, and a socket can be
/// connected to on a read-only filesystem.
const ALWAYS_HIDDEN: [&str; 2] = ["/run", "/var/run"];

impl SandboxSettings {
    /// The sandbox of one order: its own folders writable, `cwd` its start, and what
    /// `grants` (its job's `sandbox` field) adds. A granted folder to write that does not
    /// exist is made; a granted path to read that does not exist is left out (the command
    /// finds it missing, as it would be). Returns it and what it grants in all (with
    /// `--network`).
    ///
    /// # Errors
    ///
    /// A grant goes through a symbolic link (which an order may have planted), names
    /// Sluice's own files, or cannot be made; a path is not UTF-8.
    pub fn jail(
        &self,
        own: &[&Path],
        cwd: &Path,
        grants: Option<&SandboxSpec>,
    ) -> Result<(Jail, SandboxSpec), SandboxError> {
        let mut granted = grants.cloned().unwrap_or_default();
        granted.network |= self.network;
        let sockets = real_paths(&unix_sockets()?);
        let hide = self.hidden_paths(&sockets);
        let protected = real_paths(&self.protected);
        // With network, the resolver's file stays readable where it lies in a hidden folder
        // (systemd-resolved's, in `/run`).
        let resolver = (std::fs::canonicalize("/etc/resolv.conf").ok())
            .filter(|file| granted.network && hide.iter().any(|folder| file.starts_with(folder)));
        let real = |path: &Path| {
            std::fs::canonicalize(path)
                .map_err(|e| SandboxError::Path(format!("resolving {}: {e}", path.display())))
        };
        let mut view = View {
            hide,
            read: resolver.into_iter().collect(),
            write: own
                .iter()
                .map(|path| real(path))
                .collect::<Result<_, _>>()?,
            hide_within: Vec::new(),
            cwd: real(cwd)?,
            network: granted.network,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        };
        let mut grant_paths = Vec::new();
        for grant in &granted.write {
            let path = self.grant_path(grant, &protected)?;
            // A folder it may write holding one of Sluice's own: renaming the folder
            // between them would carry it out from under its cover.
            if let Some(own) = protected.iter().find(|own| own.starts_with(&path)) {
                return Err(SandboxError::Grant {
                    grant: grant.clone(),
                    message: format!(
                        "{} holds Sluice's own {}: grant a folder beside it",
                        path.display(),
                        own.display()
                    ),
                });
            }
            if !path.exists() {
                std::fs::create_dir_all(&path).map_err(|e| SandboxError::Grant {
                    grant: grant.clone(),
                    message: format!("making {}: {e}", path.display()),
                })?;
                // Made through no link: checked again.
                self.grant_path(grant, &protected)?;
            }
            view.write.push(path.clone());
            grant_paths.push(path);
        }
        for grant in &granted.read {
            let path = self.grant_path(grant, &protected)?;
            if path.symlink_metadata().is_ok() {
                view.read.push(path.clone());
                grant_paths.push(path);
            }
        }
        // Every socket counts here, those under a hidden folder or `/tmp` too: a grant of
        // `/tmp` would show them again.
        view.hide_within = (view.hide.iter().chain(&protected).chain(&sockets))
            .filter(|hidden| {
                (grant_paths.iter()).any(|grant| hidden.starts_with(grant) && *hidden != grant)
            })
            .cloned()
            .collect();
        view.hide_within.sort();
        view.hide_within.dedup();
        view.hide.extend(protected);
        Ok((Jail::new(&self.init, &view)?, granted))
    }

    /// Runs `true` in a sandbox like an order's (its own folder in the temporary folder),
    /// to learn whether this machine allows one (user namespaces may be off, or refused to
    /// this process: a container, a seccomp filter, AppArmor).
    ///
    /// # Errors
    ///
    /// [`SandboxError::Unavailable`] with what the kernel or the set-up said.
    pub async fn probe(&self) -> Result<(), SandboxError> {
        let unavailable = |what: String| SandboxError::Unavailable(what);
        let folder = tempfile::Builder::new()
            .prefix("sluice-trial-")
            .tempdir()
            .map_err(|e| unavailable(format!("making a folder for a trial sandbox: {e}")))?;
        let (jail, _) = self.jail(&[folder.path()], folder.path(), None)?;
        let (_shell, mut child) =
            crate::containment::spawn_shell("true", &[], folder.path(), Some(&jail)).map_err(
                |e| unavailable(format!("a trial sandbox did not start: {}", why_not(&e))),
            )?;
        let mut said = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let read = stderr.read_to_string(&mut said);
            let _ = tokio::time::timeout(PROBE_PATIENCE, read).await;
        }
        let status = tokio::time::timeout(PROBE_PATIENCE, child.wait())
            .await
            .map_err(|_| unavailable(format!("a trial did not end within {PROBE_PATIENCE:?}")))?
            .map_err(|e| unavailable(format!("waiting for a trial: {e}")))?;
        if status.success() {
            return Ok(());
        }
        let said = said.trim();
        Err(unavailable(if said.is_empty() {
            format!("a trial ended with {status}")
        } else {
            said.to_owned()
        }))
    }

    /// Every path the sandbox covers, as real paths (a symbolic link would be followed
    /// inside, from a root where its target is not); never `/`. Besides those it is given:
    /// every Unix socket bound to a path outside them (`/proc/net/unix`), since a socket
    /// can be connected to on a read-only filesystem and the user keeps their groups
    /// (`lxd`, `docker`, …) in the sandbox.
    fn hidden_paths(&self, sockets: &[PathBuf]) -> Vec<PathBuf> {
        let given: Vec<PathBuf> = (self.hidden.iter().cloned())
            .chain(ALWAYS_HIDDEN.iter().map(PathBuf::from))
            .chain(own_home().cloned())
            .collect();
        let mut hidden = real_paths(&given);
        let replaced = [Path::new("/tmp"), Path::new("/dev"), Path::new("/proc")];
        let visible: Vec<PathBuf> = (sockets.iter())
            .filter(|socket| {
                !(hidden.iter().map(PathBuf::as_path).chain(replaced))
                    .any(|covered| socket.starts_with(covered))
            })
            .cloned()
            .collect();
        hidden.extend(visible);
        hidden.sort();
        hidden.dedup();
        hidden
    }

    /// A grant's path, `~` expanded to the (real) home; refused when it goes through a
    /// symbolic link (an order with a grant could plant one, to have a later grant show
    /// what it points to) or names Sluice's own files.
    fn grant_path(&self, grant: &str, protected: &[PathBuf]) -> Result<PathBuf, SandboxError> {
        let refuse = |message: String| SandboxError::Grant {
            grant: grant.to_owned(),
            message,
        };
        let path = match grant.strip_prefix('~') {
            None => PathBuf::from(grant),
            Some(rest) => {
                let home = (self.home.as_ref())
                    .ok_or_else(|| refuse("names the home folder, and HOME is not set".into()))?;
                let home = std::fs::canonicalize(home)
                    .map_err(|e| refuse(format!("resolving the home {}: {e}", home.display())))?;
                home.join(rest.trim_start_matches('/'))
            }
        };
        let mut prefix = PathBuf::new();
        for step in path.components() {
            prefix.push(step);
            match prefix.symlink_metadata() {
                Ok(found) if found.file_type().is_symlink() => {
                    return Err(refuse(format!(
                        "{} is a symbolic link: grant the path it points to",
                        prefix.display()
                    )));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if path.parent().is_none() {
            return Err(refuse("names the whole filesystem (/)".to_owned()));
        }
        if let Some(own) = protected.iter().find(|own| path.starts_with(own)) {
            return Err(refuse(format!(
                "{} is Sluice's own ({}): it is never granted",
                path.display(),
                own.display()
            )));
        }
        Ok(path)
    }
}

/// `paths` that exist, with every link resolved; never `/`.
fn real_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    (paths.iter())
        .filter_map(|path| std::fs::canonicalize(path).ok())
        .filter(|path| path.parent().is_some())
        .collect()
}

/// The home the user database gives this user: hidden too, `HOME` may be unset or wrong.
/// Looked up once (the database may be a network service), not for every order.
fn own_home() -> Option<&'static PathBuf> {
    static HOME: OnceLock<Option<PathBuf>> = OnceLock::new();
    HOME.get_or_init(|| {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok()??;
        Some(user.dir)
    })
    .as_ref()
}

/// The paths of the Unix sockets bound in this network namespace: `/proc/net/unix`'s
/// eighth column to the end of its line (a path may hold spaces, and any byte), when it
/// is a path (abstract ones start with `@`). Only this namespace's are listed (not those of
/// containers with networks of their own).
///
/// # Errors
///
/// The table cannot be read: a sandbox without its sockets covered is not built.
fn unix_sockets() -> Result<Vec<PathBuf>, SandboxError> {
    use std::os::unix::ffi::OsStrExt;
    let table = std::fs::read("/proc/net/unix").map_err(|e| {
        SandboxError::Path(format!("listing the Unix sockets (/proc/net/unix): {e}"))
    })?;
    let path_of = |line: &[u8]| -> Option<PathBuf> {
        let mut rest = line;
        for _ in 0..7 {
            let start = rest.iter().position(|b| *b != b' ')?;
            let end = rest[start..].iter().position(|b| *b == b' ')? + start;
            rest = &rest[end..];
        }
        let path = &rest[rest.iter().position(|b| *b != b' ')?..];
        path.starts_with(b"/")
            .then(|| PathBuf::from(std::ffi::OsStr::from_bytes(path)))
    };
    Ok((table.split(|b| *b == b'\n').skip(1))
        .filter_map(path_of)
        .collect())
}

/// What the kernel's refusal to start a sandbox's first process means.
fn why_not(error: &std::io::Error) -> String {
    let meaning = match error.raw_os_error() {
        Some(libc::ENOSPC) => {
            "user namespaces are used up or limited to none here (user.max_user_namespaces)"
        }
        Some(libc::EPERM | libc::EACCES) => {
            "refused: this process may not create user namespaces (kernel.unprivileged_userns_clone, AppArmor's restrict_unprivileged_userns, or a container's seccomp filter) or keep capabilities in them"
        }
        Some(libc::EINVAL) => "this kernel lacks a namespace the sandbox needs",
        _ => return error.to_string(),
    };
    format!("{meaning}: {error}")
}

/// How long a trial sandbox may take.
const PROBE_PATIENCE: Duration = Duration::from_secs(10);

/// One command's sandbox, prepared before its process is cloned: what the child needs
/// between clone and `execve`, where it may not allocate.
#[derive(Debug)]
pub struct Jail {
    /// The first process's program.
    init: String,
    /// Its view, as JSON.
    view: String,
    /// The namespaces it starts in.
    namespaces: CloneFlags,
}

/// Capabilities the first process keeps across `execve` for the set-up: its user and group
/// maps (`CAP_SETUID`, `CAP_SETGID`), mounts, the hostname and `pivot_root`
/// (`CAP_SYS_ADMIN`), the loopback (`CAP_NET_ADMIN`), dropping the bounding set
/// (`CAP_SETPCAP`). All over the new namespaces only.
const SETUP_CAPABILITIES: [u32; 5] = [7, 6, 21, 12, 8];

impl Jail {
    fn new(init: &Path, view: &View) -> Result<Self, SandboxError> {
        let not_utf8 = |what: String| SandboxError::Path(format!("{what} is not UTF-8"));
        let init = (init.to_str())
            .ok_or_else(|| not_utf8(init.display().to_string()))?
            .to_owned();
        let network = view.network;
        let view = serde_json::to_string(view)
            .map_err(|e| not_utf8(format!("a path of the sandbox ({e})")))?;
        let mut namespaces = CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP;
        if !network {
            namespaces |= CloneFlags::CLONE_NEWNET;
        }
        Ok(Jail {
            init,
            view,
            namespaces,
        })
    }

    /// The program the worker executes (with [`INIT_ARG`] and the command after it).
    pub(crate) fn program(&self) -> &str {
        &self.init
    }

    /// The namespaces the child is cloned into.
    pub(crate) fn namespaces(&self) -> CloneFlags {
        self.namespaces
    }

    /// What the first process reads on its stdin: its view, a line, then the command's
    /// variables (JSON both).
    pub(crate) fn handover(&self, env: &[(String, String)]) -> Vec<u8> {
        let env = serde_json::to_string(env).expect("strings serialize");
        format!("{}\n{env}", self.view).into_bytes()
    }

    /// In the child, between clone and `execve`: dies with the worker's thread that started
    /// it (so a sandbox does not outlive a killed `sluice` even when nothing in it carries
    /// the run's id), and keeps the set-up's capabilities across `execve`, where the first
    /// process maps its user (the child cannot: it shares the worker's memory, which is not
    /// dumpable, so its `/proc` files are root's). System calls only, no allocation.
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        prctl_unless_unknown(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)?;
        set_inheritable(Inheritable::Permitted)?;
        for cap in SETUP_CAPABILITIES {
            raise_ambient(cap)?;
        }
        Ok(())
    }
}

/// Makes `cap` ambient (it is permitted and inheritable). System calls only.
#[expect(unsafe_code, reason = "prctl(2); see SAFETY")]
fn raise_ambient(cap: u32) -> std::io::Result<()> {
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_CAP_AMBIENT_RAISE takes numbers only and touches no memory.
    let raised = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            libc::c_ulong::from(cap),
            zero,
            zero,
        )
    };
    if raised != 0 {
        return Err(Errno::last().into());
    }
    Ok(())
}
