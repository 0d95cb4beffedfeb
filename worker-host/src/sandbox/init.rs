//! The sandbox's first process: it builds the view, drops every capability, starts the
//! command, and stands between it and the worker until it ends.
//!
//! It is PID 1 of the sandbox's PID namespace, which the kernel treats apart: a signal it
//! has no handler for is not delivered to it, whoever sends it, SIGKILL from outside
//! excepted. So it takes the signals a command's process group gets (the worker's SIGTERM
//! at the deadline, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) and sends each to every
//! process of the sandbox (`kill(-1)` from PID 1); the orphans of the sandbox come to it,
//! and it reaps them; and when the command's shell ends, it exits with the shell's status
//! (128 + the signal's number when a signal ended it) and the kernel kills whatever is left
//! in the namespace: nothing an order starts outlives it. The worker's SIGKILL ends it, and
//! so the whole sandbox, at once.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{INIT_ARG, SETUP_FAILED, View, view};
use crate::containment::{Inheritable, last_capability, prctl_unless_unknown, set_inheritable};

/// The signals passed on to every process of the sandbox.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Makes this process a sandbox's first process when its first argument says so (the
/// worker starts it: [`super::Jail`]): it runs the command its other arguments give in the
/// sandbox and exits with its status. Otherwise returns at once. Call it first thing in
/// `main`, before any thread starts.
pub fn serve_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(INIT_ARG)) {
        return;
    }
    std::process::exit(serve(args.collect()));
}

/// The signals the first process takes: those it forwards, and SIGCHLD. The worker starts
/// it with them blocked (a blocked signal is queued, not ignored, even for PID 1), so
/// none sent before it takes them is lost.
pub(crate) fn caught_signals() -> SigSet {
    let mut caught = SigSet::empty();
    for signal in FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
        caught.add(signal);
    }
    caught
}

/// The first process's life: `command` is the command to start; its view and the
/// command's variables come on stdin.
fn serve(command: Vec<OsString>) -> i32 {
    close_inherited_descriptors();
    let caught = caught_signals();
    if let Err(error) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&caught), None) {
        return failed("blocking signals", error);
    }
    let (view, env) = match handed_over() {
        Ok(handed) => handed,
        Err(error) => return failed("reading its view", error),
    };
    let Some((program, program_args)) = command.split_first() else {
        return failed("reading its arguments", "no command given");
    };
    if let Err(error) = map_user(&view) {
        return failed("mapping the user", error);
    }
    // Nothing in the sandbox may trace it (it stands for the whole sandbox): from here its
    // `/proc` files are the kernel's.
    let _ = nix::sys::prctl::set_dumpable(false);
    if let Err(error) = view::enter(&view) {
        return failed("building the sandbox", error);
    }
    if let Err(error) = drop_every_capability() {
        return failed("dropping capabilities", error);
    }
    // A session keyring of its own: the user's (and the keys it holds) stays out of reach.
    // Best effort: a kernel without keys has nothing to reach either.
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a null name takes no memory of ours.
    #[expect(unsafe_code, reason = "keyctl(2); see SAFETY")]
    unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    let mut shell = std::process::Command::new(program);
    shell.args(program_args).env_clear().envs(env);
    // SAFETY: between fork and exec in a single-threaded process: system calls only.
    #[expect(unsafe_code, reason = "pre_exec; see SAFETY")]
    unsafe {
        shell.pre_exec(|| {
            nix::unistd::setsid()?;
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
        });
    }
    let child = match shell.spawn() {
        Ok(child) => child,
        Err(error) => return failed("starting the command", error),
    };
    let main = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    supervise(main, &caught)
}

/// Passes on signals and reaps every child until `main` ends; its status.
fn supervise(main: Pid, caught: &SigSet) -> i32 {
    loop {
        let signal = match caught.wait() {
            Ok(signal) => signal,
            Err(Errno::EINTR) => continue,
            Err(error) => return failed("waiting for signals", error),
        };
        if signal != Signal::SIGCHLD {
            // Every process of the namespace but this one.
            let _ = kill(Pid::from_raw(-1), signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == main => return code,
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == main => {
                    return 128 + signal as i32;
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(error) => return failed("reaping", error),
            }
        }
    }
}

/// `keyctl`'s operation that gives the caller a new session keyring.
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;

/// The view and the command's variables, read from stdin to its end; stdin is `/dev/null`
/// afterwards, as for any command.
fn handed_over() -> std::io::Result<(View, Vec<(String, String)>)> {
    use std::io::Read as _;
    let mut handed = Vec::new();
    std::io::stdin().lock().read_to_end(&mut handed)?;
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    let text = String::from_utf8(handed).map_err(std::io::Error::other)?;
    let (view, env) = text
        .split_once('\n')
        .ok_or_else(|| std::io::Error::other("no variables after the view"))?;
    Ok((
        serde_json::from_str(view).map_err(std::io::Error::other)?,
        serde_json::from_str(env).map_err(std::io::Error::other)?,
    ))
}

/// Closes every descriptor but stdin, stdout and stderr: one the worker let through (a
/// file of the state folder, opened without `O_CLOEXEC` by a library) would reach past
/// every mount of the view (`openat` from it).
#[expect(
    unsafe_code,
    reason = "close_range(2) and close(2) on numbers; see SAFETY"
)]
fn close_inherited_descriptors() {
    // SAFETY: close_range takes numbers; nothing of this process uses a descriptor above 2
    // yet (Rust's runtime opens none before main).
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0 {
        return;
    }
    // Before Linux 5.9: each open descriptor, as /proc lists it.
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            (entries.filter_map(Result::ok))
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open.into_iter().filter(|fd| *fd > 2) {
        // SAFETY: closing a number; the listing's own descriptor is closed already, so
        // this at most fails with EBADF.
        unsafe { libc::close(fd) };
    }
}

/// Maps the user and group outside to themselves (root to root): what the command creates
/// is the user's. Unprivileged, `gid_map` may be written once `setgroups` is denied.
fn map_user(view: &View) -> std::io::Result<()> {
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{0} {0} 1\n", view.uid))?;
    std::fs::write("/proc/self/gid_map", format!("{0} {0} 1\n", view.gid))
}

/// Empties every capability set, the bounding set included, and forbids gaining any
/// (`no_new_privs`): the command runs as the plain user, or as root without capabilities.
fn drop_every_capability() -> std::io::Result<()> {
    for cap in 0..=last_capability() {
        prctl_unless_unknown(libc::PR_CAPBSET_DROP, cap)?;
    }
    prctl_unless_unknown(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;
    set_inheritable(Inheritable::Nothing)?;
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        caps::clear(None, set).map_err(std::io::Error::other)?;
    }
    nix::sys::prctl::set_no_new_privs()?;
    Ok(())
}

/// Says what failed on stderr (the order's log) and returns [`SETUP_FAILED`].
fn failed(what: &str, error: impl std::fmt::Display) -> i32 {
    eprintln!("sluice sandbox: {what}: {error}");
    SETUP_FAILED
}
