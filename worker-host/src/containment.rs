//! Nothing an order starts outlives it, and nothing it starts can read the worker.
//!
//! An order is hostile code running as the worker's user. Two things keep it in its place:
//!
//! - **The worker is not dumpable** (`PR_SET_DUMPABLE=0`, [`harden_process`]): its
//!   `/proc/<pid>/environ`, `mem` and `maps` belong to root and ptrace is refused, so an
//!   order cannot read the worker's environment (on Lambda: the role's credentials, locally:
//!   the user's shell variables) through `/proc/$PPID`. `execve` resets the flag, so the
//!   orders' own processes stay as dumpable as any program. A root worker's commands keep
//!   only the capabilities Docker leaves a container's root (`ROOT_ORDER_CAPABILITIES`):
//!   with `CAP_SYS_PTRACE`, `CAP_SYS_ADMIN` or `CAP_PERFMON`, root reads every process
//!   regardless.
//! - **Every process a command starts ends with it** ([`spawn_shell`], [`sweep`]). A
//!   command's shell leads a session of its own and is a child subreaper: whatever it starts
//!   and orphans (double forks, `setsid`, `nohup … &`, a cleared environment) is re-parented
//!   to it, not to init. The worker is a subreaper too, so when the shell ends, what is left
//!   of its tree comes to the worker, and [`sweep`] kills it. A child of the worker that is
//!   in the worker's own session is the worker's (git, the sentinel): an order's processes
//!   are all in sessions of their own, and a session can be left but never joined. Every
//!   other child that is not a running command's shell is a leftover.
//!
//! What this does not cover: a program the order asks to start processes for it (a user's
//! systemd, `at`, an ssh to localhost); the local sandbox (namespaces) closes those.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// The shells of the commands running now: children of this process that are not leftovers.
static RUNNING_SHELLS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Makes this process undumpable and a child subreaper (see the module docs). Idempotent;
/// binaries call it first thing, [`spawn_shell`] before every command. A kernel that
/// refuses either is logged once: orders then run with less containment, not not at all.
pub fn harden_process() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(error) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(%error, "could not make the worker undumpable: orders may read its /proc entries");
        }
        if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%error, "could not make the worker a subreaper: an order's orphaned processes go to init and are not killed with it");
        }
    });
}

/// A running command's shell: it is no leftover until it has been waited for.
#[derive(Debug)]
pub struct RunningShell {
    pid: u32,
}

impl Drop for RunningShell {
    fn drop(&mut self) {
        if let Some(shells) = RUNNING_SHELLS.lock().unwrap().as_mut() {
            shells.remove(&self.pid);
        }
    }
}

/// Spawns `command` as a command's shell: in a session of its own (so it also leads a new
/// process group) and a child subreaper. Drop the [`RunningShell`] only once the child has
/// been waited for, or a concurrent [`sweep`] may take it for a leftover.
///
/// # Errors
///
/// The command cannot be started.
#[expect(unsafe_code, reason = "a pre_exec hook; see SAFETY")]
pub fn spawn_shell(
    mut command: std::process::Command,
) -> std::io::Result<(tokio::process::Child, RunningShell)> {
    harden_process();
    let lose: &'static [caps::Capability] = if nix::unistd::geteuid().is_root() {
        capabilities_to_drop()
    } else {
        &[]
    };
    // SAFETY: between fork and exec the closure only makes system calls; it allocates
    // nothing on its success paths, and its errors are built from error codes.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid()?;
            nix::sys::prctl::set_child_subreaper(true)?;
            if !lose.is_empty() {
                drop_capabilities(lose)?;
            }
            Ok(())
        });
    }
    // Held across spawn and registration: a sweep never sees the new shell unregistered.
    let mut shells = RUNNING_SHELLS.lock().unwrap();
    let child = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("a just-spawned child has a pid");
    shells.get_or_insert_with(HashSet::new).insert(pid);
    Ok((child, RunningShell { pid }))
}

/// What a root worker's commands may keep: the capabilities Docker leaves a container's
/// root by default, a baseline package managers and build tools are known to work with.
const ROOT_ORDER_CAPABILITIES: [caps::Capability; 14] = {
    use caps::Capability::*;
    [
        CAP_CHOWN,
        CAP_DAC_OVERRIDE,
        CAP_FSETID,
        CAP_FOWNER,
        CAP_MKNOD,
        CAP_NET_RAW,
        CAP_SETGID,
        CAP_SETUID,
        CAP_SETFCAP,
        CAP_SETPCAP,
        CAP_NET_BIND_SERVICE,
        CAP_SYS_CHROOT,
        CAP_KILL,
        CAP_AUDIT_WRITE,
    ]
};

/// The capabilities a root worker's commands must lose: every one this process holds in
/// its bounding set beyond [`ROOT_ORDER_CAPABILITIES`]. Root with `CAP_SYS_PTRACE`,
/// `CAP_SYS_ADMIN` or `CAP_PERFMON` reads any process's `/proc/<pid>/environ`,
/// undumpable or not, and others (`CAP_SYS_MODULE`, `CAP_BPF`, …) reach the whole machine.
fn capabilities_to_drop() -> &'static [caps::Capability] {
    static DROP: OnceLock<Vec<caps::Capability>> = OnceLock::new();
    DROP.get_or_init(|| {
        caps::all()
            .into_iter()
            .filter(|cap| !ROOT_ORDER_CAPABILITIES.contains(cap))
            .filter(|cap| caps::has_cap(None, caps::CapSet::Bounding, *cap).unwrap_or(false))
            .collect()
    })
}

/// Takes `lose` out of every capability set this process and what it executes could hold
/// them in. Runs between fork and exec: no allocation on success.
fn drop_capabilities(lose: &[caps::Capability]) -> std::io::Result<()> {
    use caps::CapSet;
    let refused = |_| std::io::Error::from_raw_os_error(Errno::EPERM as i32);
    caps::clear(None, CapSet::Ambient).map_err(refused)?;
    caps::clear(None, CapSet::Inheritable).map_err(refused)?;
    for cap in lose {
        caps::drop(None, CapSet::Bounding, *cap).map_err(refused)?;
    }
    Ok(())
}

/// Kills (SIGKILL) and reaps every leftover child of this process (see the module docs),
/// again until none is left (a leftover's own children come to this process as it dies),
/// and returns how many were killed. Blocking: it reads `/proc`.
pub fn sweep() -> usize {
    let me = nix::unistd::getpid();
    let Ok(my_session) = nix::unistd::getsid(None) else {
        return 0;
    };
    let mut killed = 0;
    for _ in 0..100 {
        let leftovers: Vec<Pid> = {
            let shells = RUNNING_SHELLS.lock().unwrap();
            let found: Vec<Pid> = children(me)
                .into_iter()
                .filter(|child| child.session != my_session.as_raw())
                .filter(|child| {
                    !shells
                        .as_ref()
                        .is_some_and(|s| s.contains(&(child.pid as u32)))
                })
                .map(|child| Pid::from_raw(child.pid))
                .collect();
            // Killed under the lock: no shell is spawned (and could reuse a pid) meanwhile.
            for pid in &found {
                match kill(*pid, Signal::SIGKILL) {
                    Ok(()) => killed += 1,
                    Err(Errno::ESRCH) => {}
                    Err(error) => {
                        tracing::warn!(pid = pid.as_raw(), %error, "could not kill an order's leftover process")
                    }
                }
            }
            found
        };
        if leftovers.is_empty() {
            break;
        }
        for pid in leftovers {
            reap(pid);
        }
    }
    killed
}

/// Waits a moment for a killed child to die, then collects its exit status so it leaves no
/// zombie behind.
fn reap(pid: Pid) {
    for _ in 0..100 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            _ => return,
        }
    }
}

struct Child {
    pid: i32,
    session: i32,
}

/// The children of `parent`, from `/proc/<pid>/stat`.
fn children(parent: Pid) -> Vec<Child> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid pgrp session …`; comm may hold spaces and parentheses.
            let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
            let ppid: i32 = fields.nth(1)?.parse().ok()?;
            let session: i32 = fields.nth(1)?.parse().ok()?;
            (ppid == parent.as_raw()).then_some(Child { pid, session })
        })
        .collect()
}
