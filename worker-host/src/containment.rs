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
//! - **Every process a command starts ends with it** (`spawn_shell`, [`sweep`]). A
//!   command's shell leads a session of its own and is a child subreaper: whatever it starts
//!   and orphans (double forks, `setsid`, `nohup … &`, a cleared environment) is re-parented
//!   to it, not to init. The worker is a subreaper too, so when the shell ends, what is left
//!   of its tree comes to the worker (to its main thread), and [`sweep`] kills it. A child
//!   of the worker that is in the worker's own session is the worker's (git, the sentinel):
//!   an order's processes are all in sessions of their own, and a session can be left but
//!   never joined. Every other child that is not a running command's shell is a leftover.
//!
//! What this does not cover: a program the order asks to start processes for it (a user's
//! systemd, `at`, an ssh to localhost); the local sandbox (namespaces) closes those.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, Once, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::SigSet;

use crate::sandbox::{self, INIT_ARG, Jail};
use crate::spawn::{Launch, Spawned, default_disposition_where, spawn};

/// The shells of the commands running now (pid → registration token): children of this
/// process that are not leftovers. The token keeps a pid reused by a newer shell from being
/// unregistered by the older one's end.
static RUNNING_SHELLS: LazyLock<Mutex<HashMap<u32, u64>>> = LazyLock::new(Mutex::default);
/// The next registration token.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

/// Makes this process undumpable and a child subreaper (see the module docs), and its
/// children waitable (SIGCHLD not ignored). Idempotent; binaries call it first thing,
/// `spawn_shell` before every command. A kernel that refuses either of the first two is
/// logged once: orders then run with less containment, not not at all.
pub fn harden_process() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(error) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(%error, "could not make the worker undumpable: orders may read its /proc entries");
        }
        if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%error, "could not make the worker a subreaper: an order's orphaned processes go to init and are not killed with it");
        }
        keep_children_waitable();
    });
}

/// Puts SIGCHLD back to its default where this process was started with it ignored (or
/// with `SA_NOCLDWAIT`): both survive `execve`, a supervisor may leave them so, and then the
/// kernel reaps every child as it ends — the worker could not learn how a command ended,
/// and a shell's pid (its group's id) could be reused while the group is still signalled.
fn keep_children_waitable() {
    default_disposition_where(libc::SIGCHLD, |current| {
        current.sa_sigaction == libc::SIG_IGN || current.sa_flags & libc::SA_NOCLDWAIT != 0
    });
}

/// A running command's shell: it is no leftover until it has been waited for.
#[derive(Debug)]
pub struct RunningShell {
    pid: u32,
    token: u64,
}

impl Drop for RunningShell {
    fn drop(&mut self) {
        let mut shells = RUNNING_SHELLS.lock().unwrap();
        if shells.get(&self.pid) == Some(&self.token) {
            shells.remove(&self.pid);
        }
    }
}

/// Starts `/bin/sh -c <script>` as a command's shell (with `env` as its whole environment,
/// in `cwd`, stdin from `/dev/null`, stdout and stderr piped): in a session of its own (so
/// it also leads a new process group) and a child subreaper, without the capabilities
/// [`capabilities_to_drop`] lists. In `jail`, when given, the shell is started by the
/// sandbox's first process, which leads the session instead ([`crate::sandbox`]): that
/// process starts with no variable and in `/`, and is handed its view and `env` through its
/// stdin (must be called inside a tokio runtime, which writes them), and dies with the
/// thread calling this (`PR_SET_PDEATHSIG`): call it from a thread that lives as long as
/// the command (a runtime's worker thread, not a `spawn_blocking` one). Keep the
/// [`RunningShell`] until the child has been waited for (declare it before the child, so it
/// is dropped after), or a concurrent [`sweep`] may take the shell for a leftover.
///
/// # Errors
///
/// The shell cannot be started.
pub(crate) fn spawn_shell(
    script: &str,
    env: &[(String, String)],
    cwd: &Path,
    jail: Option<&Jail>,
) -> std::io::Result<(RunningShell, Spawned)> {
    harden_process();
    let lose: &'static [libc::c_ulong] = if nix::unistd::geteuid().is_root() {
        capabilities_to_drop()
    } else {
        &[]
    };
    // Runs in the child between clone and exec: system calls only, errors from error codes.
    let setup = || -> std::io::Result<()> {
        match jail {
            // The sandbox's first process drops every capability itself, once it has
            // built the sandbox with them.
            Some(jail) => jail.enter()?,
            None => {
                nix::sys::prctl::set_child_subreaper(true)?;
                drop_capabilities(lose)?;
            }
        }
        nix::unistd::setsid()?;
        Ok(())
    };
    let shell = ["/bin/sh", "-c", script];
    // A sandbox's first process gets its view and the command's variables through a pipe:
    // in its own environment, they would act on it (`LD_PRELOAD`) while it still holds
    // the capabilities and the host's tree it builds the sandbox with.
    let (handover_read, handover_write) = match jail {
        Some(_) => {
            let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            let write = tokio::net::unix::pipe::Sender::from_owned_fd(write)?;
            (Some(read), Some(write))
        }
        None => (None, None),
    };
    let (program, args, launch_env, launch_cwd): (&str, Vec<&str>, &[(String, String)], &Path) =
        match jail {
            Some(jail) => (
                jail.program(),
                [INIT_ARG].into_iter().chain(shell).collect(),
                &[],
                Path::new("/"),
            ),
            None => (shell[0], shell[1..].to_vec(), env, cwd),
        };
    let launch = Launch {
        program,
        args: &args,
        env: launch_env,
        cwd: launch_cwd,
        namespaces: jail.map_or(CloneFlags::empty(), Jail::namespaces),
        stdin: handover_read.as_ref().map(AsFd::as_fd),
        blocked: jail.map_or(SigSet::empty(), |_| sandbox::caught_signals()),
        setup: &setup,
    };
    // Held across spawn and registration: a sweep never sees the new shell unregistered.
    let mut shells = RUNNING_SHELLS.lock().unwrap();
    let child = spawn(&launch)?;
    let (pid, token) = (child.id(), NEXT_TOKEN.fetch_add(1, Ordering::Relaxed));
    shells.insert(pid, token);
    drop(shells);
    drop(handover_read);
    if let (Some(jail), Some(mut sender)) = (jail, handover_write) {
        let handed = jail.handover(env);
        // Written as the first process reads it; one that died first reads nothing, and its
        // end is reported as its command's.
        tokio::spawn(async move {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut sender, &handed).await;
        });
    }
    Ok((RunningShell { pid, token }, child))
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

/// The capabilities a root worker's commands must lose: every one the kernel has
/// (`/proc/sys/kernel/cap_last_cap`, so ones newer than this code are included) beyond
/// [`ROOT_ORDER_CAPABILITIES`]. Root with `CAP_SYS_PTRACE`, `CAP_SYS_ADMIN` or
/// `CAP_PERFMON` reads any process's `/proc/<pid>/environ`, undumpable or not, and others
/// (`CAP_SYS_MODULE`, `CAP_BPF`, …) reach the whole machine.
///
/// Only capabilities still in this process's bounding set are listed, and none when this
/// process may not drop them (no `CAP_SETPCAP`, as in containers stripped of capabilities,
/// where the dangerous ones are gone already): a refused drop would fail every command.
#[expect(
    unsafe_code,
    reason = "prctl(2) has no safe wrapper for PR_CAPBSET_READ"
)]
fn capabilities_to_drop() -> &'static [libc::c_ulong] {
    static DROP: OnceLock<Vec<libc::c_ulong>> = OnceLock::new();
    DROP.get_or_init(|| {
        if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)
            .unwrap_or(false)
        {
            tracing::warn!(
                "running as root without CAP_SETPCAP: orders keep this process's capabilities"
            );
            return Vec::new();
        }
        // SAFETY: PR_CAPBSET_READ takes a capability number and touches no memory.
        let held =
            |cap: libc::c_ulong| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 1;
        let last = last_capability();
        let keep: Vec<libc::c_ulong> = ROOT_ORDER_CAPABILITIES
            .iter()
            .map(|cap| libc::c_ulong::from(cap.index()))
            .collect();
        (0..=last)
            .filter(|cap| !keep.contains(cap) && held(*cap))
            .collect()
    })
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`, so
/// ones newer than this code count too); 63 where it cannot be read.
pub(crate) fn last_capability() -> libc::c_ulong {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(63)
}

/// Clears the ambient and inheritable capabilities (anyone may) and takes `lose` out of the
/// bounding set (root may), so nothing the command executes holds them. Runs between clone
/// and exec, sharing the worker's memory: raw system calls only, no allocation, not even on
/// an error path (the `caps` crate formats its errors).
fn drop_capabilities(lose: &[libc::c_ulong]) -> std::io::Result<()> {
    // A kernel before 4.3 has no ambient set: nothing to clear.
    prctl_unless_unknown(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;
    set_inheritable(Inheritable::Nothing)?;
    for &cap in lose {
        // A number the kernel does not know: there is nothing to drop.
        prctl_unless_unknown(libc::PR_CAPBSET_DROP, cap)?;
    }
    Ok(())
}

/// What [`set_inheritable`] makes the inheritable set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inheritable {
    /// Empty.
    Nothing,
    /// The permitted set (so any of it may be made ambient).
    Permitted,
}

/// Sets this thread's inheritable capabilities. System calls only, no allocation: the vfork
/// child calls it.
#[expect(
    unsafe_code,
    reason = "capget/capset(2) have no allocation-free safe wrappers"
)]
pub(crate) fn set_inheritable(to: Inheritable) -> std::io::Result<()> {
    /// `struct __user_cap_header_struct`, version 3 (two 32-bit words of each set).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    /// `struct __user_cap_data_struct`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two `Data` into the array; capset reads them; both read the
    // header. All three live on this stack for the calls.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(Errno::last().into());
        }
        for word in &mut data {
            word.inheritable = match to {
                Inheritable::Nothing => 0,
                Inheritable::Permitted => word.permitted,
            };
        }
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(Errno::last().into());
        }
    }
    Ok(())
}

/// `prctl(option, arg, 0, 0, 0)`, where EINVAL (an option or number this kernel does not
/// know) means there is nothing to do. System calls only: the vfork child calls it.
#[expect(unsafe_code, reason = "prctl(2); see SAFETY")]
pub(crate) fn prctl_unless_unknown(option: libc::c_int, arg: libc::c_ulong) -> std::io::Result<()> {
    // prctl reads its arguments as unsigned longs: they are passed so.
    let zero: libc::c_ulong = 0;
    // SAFETY: both options used here take numbers only and touch no memory.
    if unsafe { libc::prctl(option, arg, zero, zero, zero) } != 0 {
        match Errno::last() {
            Errno::EINVAL => {}
            errno => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Kills (SIGKILL) every leftover child of this process (see the module docs) together
/// with all its descendants, and reaps the children; again until none is left. Each round
/// first stops (SIGSTOP) every process of the leftover trees, so none can fork meanwhile,
/// then kills them all: a chain however deep goes in one round. Returns how many processes
/// were killed. Blocking: it reads `/proc`.
pub fn sweep() -> usize {
    let me = nix::unistd::getpid().as_raw();
    let Ok(my_session) = nix::unistd::getsid(None) else {
        return 0;
    };
    let mut killed: HashSet<i32> = HashSet::new();
    for round in 0.. {
        // Usually there is no leftover: then only this process's children are listed, not
        // the whole of /proc, and only those that are no running shell are read (this runs
        // after every command, while up to `--concurrency` shells run).
        let children = own_children();
        let (leftovers, alive) = {
            let shells = RUNNING_SHELLS.lock().unwrap();
            let leftovers: Vec<i32> = children
                .iter()
                .filter(|p| p.ppid == me && p.session != my_session.as_raw())
                .filter(|p| !shells.contains_key(&(p.pid as u32)))
                .map(|p| p.pid)
                .collect();
            if leftovers.is_empty() {
                break;
            }
            let table = process_table();
            let trees: Vec<&Process> = descendants(&table, &leftovers)
                .into_iter()
                .filter_map(|pid| table.iter().find(|p| p.pid == pid))
                .collect();
            // Signalled under the lock: no shell is spawned (and could reuse a pid) meanwhile.
            for signal in [Signal::SIGSTOP, Signal::SIGKILL] {
                for process in &trees {
                    match kill(Pid::from_raw(process.pid), signal) {
                        Ok(()) | Err(Errno::ESRCH) => {}
                        Err(error) => {
                            tracing::warn!(pid = process.pid, %error, "could not stop an order's leftover process")
                        }
                    }
                }
            }
            let alive: Vec<i32> = trees.iter().filter(|p| !p.zombie).map(|p| p.pid).collect();
            (leftovers, alive)
        };
        killed.extend(alive);
        for pid in leftovers {
            reap(Pid::from_raw(pid));
        }
        if round == 1000 {
            tracing::warn!("an order's leftover processes outlast 1000 sweeps; giving up");
            break;
        }
    }
    killed.len()
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

/// One process, as `/proc/<pid>/stat` describes it.
struct Process {
    pid: i32,
    ppid: i32,
    session: i32,
    zombie: bool,
}

/// Every process visible in `/proc`.
fn process_table() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        tracing::warn!("cannot read /proc: an order's leftover processes cannot be found");
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(process)
        .collect()
}

/// This process's children that are no running shell, from its main thread's `children`
/// file; every child, from the whole table, where the kernel has no such file
/// (`CONFIG_PROC_CHILDREN`).
///
/// A leftover is always the main thread's: a process whose parent ends goes to the nearest
/// subreaper, and of that process to its first live thread, the main thread (which lives as
/// long as the worker does). The children a command's shell leaves behind are re-parented
/// so, whichever thread started the shell. Reading one file instead of one per thread
/// matters: this runs after every command, and the worker has a thread per blocking task
/// (87 in a 2 000-order run at `--concurrency 64`).
fn own_children() -> Vec<Process> {
    let me = nix::unistd::getpid().as_raw();
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{me}/children")) else {
        return process_table()
            .into_iter()
            .filter(|p| p.ppid == me)
            .collect();
    };
    // A running shell is no leftover: not worth a read of its /proc entry (checked again,
    // under the lock, by the caller).
    let shells = RUNNING_SHELLS.lock().unwrap();
    let unregistered: Vec<i32> = (text.split_whitespace())
        .filter_map(|pid| pid.parse::<i32>().ok())
        .filter(|pid| !shells.contains_key(&pid.unsigned_abs()))
        .collect();
    drop(shells);
    unregistered.into_iter().filter_map(process).collect()
}

/// The process `pid`, if it still exists.
fn process(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp session …`; comm may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let zombie = fields.next()? == "Z";
    let ppid: i32 = fields.next()?.parse().ok()?;
    let session: i32 = fields.nth(1)?.parse().ok()?;
    Some(Process {
        pid,
        ppid,
        session,
        zombie,
    })
}

/// `roots` and every process below them.
fn descendants(table: &[Process], roots: &[i32]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for process in table {
        children.entry(process.ppid).or_default().push(process.pid);
    }
    let mut found = roots.to_vec();
    let mut next = 0;
    while next < found.len() {
        if let Some(below) = children.get(&found[next]) {
            found.extend(below.iter().filter(|pid| !roots.contains(pid)));
        }
        next += 1;
    }
    found
}
