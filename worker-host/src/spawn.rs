//! Starting a command's process without copying the worker: `clone(CLONE_VM | CLONE_VFORK)`.
//!
//! `std::process::Command` forks whenever a `pre_exec` hook is set, and a command's shell
//! needs one ([`crate::containment`]: a session of its own, a subreaper, capabilities
//! dropped). `fork` copies the worker's page tables, marks every page copy-on-write (the
//! worker then faults on each page it writes until the child execs) and flushes the TLB of
//! every worker thread: measured on a 500-order local run, more than half of all CPU time,
//! growing with the worker's memory. Here the child shares the worker's memory until it
//! execs, as glibc's `posix_spawn` does, and the worker's calling thread waits meanwhile:
//! the cost no longer depends on the worker's size.
//!
//! The child runs on a stack of its own and makes system calls only, on data prepared
//! before the clone (program, arguments, environment, working folder, descriptors); its
//! hook ([`Launch::setup`]) must not allocate either: a child stopped or killed inside
//! `malloc` would leave a lock of the worker's held. Every signal is blocked from before the
//! clone until just before `execve`, and the child first puts back the default disposition
//! of every signal this process handles (and of SIGPIPE, which Rust's runtime ignores, as
//! `std::process::Command` does), so no handler of the worker runs in the child. (glibc
//! keeps two real-time signals for its threads out of both; their handlers act only on
//! signals their own process sent.) An `execve` that fails reports its error through memory
//! the two share.
//!
//! The started process is waited for without a thread, through a pidfd (Linux 5.3 and
//! later; where there is none, SIGCHLD).
//! [`Spawned::wait`] learns how the process ended without reaping it (`WNOWAIT`): the
//! zombie keeps its pid, and so its process group's id, from being reused while the caller
//! still signals the group. It is reaped when its [`Spawned`] is dropped, which also kills
//! it if it was never waited for (and then reaps it in the background once it has ended).

use std::ffi::{CString, c_char};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::signal::unix::{SignalKind, signal};

/// Size of the child's stack: it only makes a few system calls before `execve`.
const CHILD_STACK: usize = 128 * 1024;

/// A program to start, and what the child does before it execs.
pub(crate) struct Launch<'a> {
    /// The program's absolute path (no `PATH` lookup).
    pub program: &'a str,
    /// Its arguments, `argv[1..]`.
    pub args: &'a [&'a str],
    /// Its complete environment.
    pub env: &'a [(String, String)],
    /// Its working folder.
    pub cwd: &'a Path,
    /// Namespaces the child starts in (none: the worker's own; see [`crate::sandbox`]).
    pub namespaces: CloneFlags,
    /// Its stdin (`/dev/null` when `None`).
    pub stdin: Option<BorrowedFd<'a>>,
    /// Signals it starts with blocked (none but for a sandbox's first process, which must
    /// not miss one sent before it could take them).
    pub blocked: SigSet,
    /// Runs in the child before `execve`. It shares the worker's memory: system calls only,
    /// no allocation, errors from error codes.
    pub setup: &'a dyn Fn() -> std::io::Result<()>,
}

/// A started process: its pid, its output pipes and its end. Dropped, it is reaped, and
/// killed first if it was never waited for.
#[derive(Debug)]
pub struct Spawned {
    pid: Pid,
    /// Its stdout (taken by the caller).
    pub stdout: Option<pipe::Receiver>,
    /// Its stderr (taken by the caller).
    pub stderr: Option<pipe::Receiver>,
    exits: Exits,
    /// How it ended, once it has (it is reaped on drop).
    status: Option<ExitStatus>,
    /// Someone else reaped it (`waitid` said there is no such child): its pid is no longer
    /// this process's to signal or reap.
    gone: bool,
    /// Killed, and handed to a task that reaps it once it has ended: should that task be
    /// dropped first (its runtime shutting down), it is reaped if it has ended, never
    /// handed on again — a task spawned on a runtime shutting down is dropped at once, and
    /// each drop handing it on again was a recursion without end.
    handed_off: bool,
}

/// How the worker hears that a child ended.
#[derive(Debug)]
enum Exits {
    /// A pidfd of the child: readable once it has ended.
    Pidfd(AsyncFd<OwnedFd>),
    /// SIGCHLD, where there is no pidfd (kernels before 5.3, seccomp filters refusing it).
    Sigchld(tokio::signal::unix::Signal),
    /// Handed to the task that reaps a process dropped unwaited.
    Taken,
}

impl Spawned {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Waits for the process to end (cancel-safe; once it has ended, returns how at once).
    /// The process stays a zombie until this value is dropped.
    ///
    /// # Errors
    ///
    /// `waitid` failed, or the pidfd could not be polled.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            self.status = match ended(self.pid) {
                Ok(status) => status,
                Err(error) => {
                    self.gone = error.raw_os_error() == Some(libc::ECHILD);
                    return Err(error);
                }
            };
            if self.status.is_some() {
                continue;
            }
            match &mut self.exits {
                Exits::Pidfd(pidfd) => pidfd.readable().await?.clear_ready(),
                Exits::Sigchld(child_exits) => {
                    child_exits.recv().await;
                }
                Exits::Taken => unreachable!("only a dropped Spawned gives its exits away"),
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.gone {
            return;
        }
        if self.status.is_some() || self.handed_off {
            reap(self.pid);
            return;
        }
        // Not reaped yet, so the pid is still this process's.
        let _ = kill(self.pid, Signal::SIGKILL);
        // A process just killed may need a moment to end: reaped in the background then.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            reap(self.pid);
            return;
        };
        let mut dying = Spawned {
            pid: self.pid,
            stdout: None,
            stderr: None,
            exits: std::mem::replace(&mut self.exits, Exits::Taken),
            status: None,
            gone: false,
            handed_off: true,
        };
        runtime.spawn(async move {
            // Dropped once it has ended: that drop reaps it. Should waiting fail, it is left
            // alone rather than killed and handed on again.
            dying.gone = dying.wait().await.is_err();
            drop(dying);
        });
    }
}

/// How `pid` ended, if it has, without reaping it (`waitid` with `WNOWAIT`); the raw status
/// (nix's cannot hold a real-time signal).
#[expect(unsafe_code, reason = "waitid(2); see SAFETY")]
fn ended(pid: Pid) -> std::io::Result<Option<ExitStatus>> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid one; waitid fills it in; the accessors read
        // the SIGCHLD fields, which a child's `waitid` sets.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            if libc::waitid(libc::P_PID, pid.as_raw() as libc::id_t, &mut info, flags) != 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    errno => return Err(errno.into()),
                }
            }
            if info.si_pid() == 0 {
                return Ok(None);
            }
            let status = info.si_status();
            return Ok(Some(ExitStatus::from_raw(match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => status | 0x80,
                _ => status,
            })));
        }
    }
}

/// Reaps `pid` if it has ended (`waitpid` with `WNOHANG`; the status is known already).
fn reap(pid: Pid) {
    let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
}

/// Makes [`pidfd_open`] answer as a kernel without pidfds does, to test the SIGCHLD path.
#[cfg(test)]
static WITHOUT_PIDFDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A pidfd for `pid`, or `None` where the kernel has none (before 5.3).
#[expect(unsafe_code, reason = "pidfd_open(2) has no wrapper in libc or nix")]
fn pidfd_open(pid: Pid) -> std::io::Result<Option<OwnedFd>> {
    #[cfg(test)]
    if WITHOUT_PIDFDS.load(Ordering::SeqCst) {
        return Ok(None);
    }
    // SAFETY: pidfd_open takes numbers and returns a new descriptor, owned from here on.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return match Errno::last() {
            Errno::ENOSYS => Ok(None),
            errno => Err(errno.into()),
        };
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Bytes the child needs, prepared in the worker before the clone.
struct Prepared {
    /// `argv` and `envp` point into these.
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    program: CString,
    cwd: CString,
}

impl Prepared {
    fn new(launch: &Launch<'_>) -> std::io::Result<Self> {
        let c = |text: &[u8]| {
            CString::new(text).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a command, variable or path holds a NUL byte",
                )
            })
        };
        let program = c(launch.program.as_bytes())?;
        let cwd = c(launch.cwd.as_os_str().as_encoded_bytes())?;
        let mut strings = vec![program.clone()];
        for arg in launch.args {
            strings.push(c(arg.as_bytes())?);
        }
        let argc = strings.len();
        for (name, value) in launch.env {
            strings.push(c(format!("{name}={value}").as_bytes())?);
        }
        let pointers = |range: &[CString]| {
            let mut list: Vec<*const c_char> = range.iter().map(|s| s.as_ptr()).collect();
            list.push(std::ptr::null());
            list
        };
        let argv = pointers(&strings[..argc]);
        let envp = pointers(&strings[argc..]);
        Ok(Prepared {
            _strings: strings,
            argv,
            envp,
            program,
            cwd,
        })
    }
}

/// Starts `launch` with stdin from `/dev/null` and stdout and stderr piped (see the module
/// docs). Must be called inside a tokio runtime.
///
/// # Errors
///
/// The pipes cannot be made, the clone is refused, or the child's setup or `execve` failed
/// (its error code).
#[expect(
    unsafe_code,
    reason = "clone(CLONE_VM | CLONE_VFORK) and registering the pidfd; see SAFETY"
)]
pub(crate) fn spawn(launch: &Launch<'_>) -> std::io::Result<Spawned> {
    let prepared = Prepared::new(launch)?;
    let null = std::fs::File::open("/dev/null")?;
    let stdin = launch.stdin.map_or(null.as_raw_fd(), |fd| fd.as_raw_fd());
    let (stdout_read, stdout_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (stderr_read, stderr_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let stdout = pipe::Receiver::from_owned_fd(stdout_read)?;
    let stderr = pipe::Receiver::from_owned_fd(stderr_read)?;
    let failure = AtomicI32::new(0);
    let mut stack = vec![0u8; CHILD_STACK];
    let stdio = [stdin, stdout_write.as_raw_fd(), stderr_write.as_raw_fd()];
    let child = || -> isize {
        let outcome = start_child(&prepared, stdio, launch);
        // Only reached when something failed: `execve` does not return.
        let errno = outcome.raw_os_error().unwrap_or(libc::EINVAL);
        failure.store(errno, Ordering::SeqCst);
        127
    };
    let mut callers_mask = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut callers_mask),
    )?;
    // SAFETY: the child shares this memory and runs `child` on its own stack while this
    // thread is suspended (CLONE_VFORK) until it execs or exits; `child` only makes system
    // calls on data prepared above, which lives until after the clone returns. Signals are
    // blocked, so no handler of this process runs in the child (see `start_child`).
    let cloned = unsafe {
        nix::sched::clone(
            Box::new(child),
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK | launch.namespaces,
            Some(libc::SIGCHLD),
        )
    };
    let restored = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&callers_mask), None);
    let pid = cloned?;
    drop((null, stdout_write, stderr_write));
    let errno = failure.load(Ordering::SeqCst);
    if errno != 0 {
        // The child has exited: collect it.
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    // Not reaped yet, so the pid cannot have been reused: the pidfd is this child's. Where
    // there is none (a kernel before 5.3, a seccomp filter), SIGCHLD: subscribing only now
    // misses nothing, since `wait` asks whether the child ended before it first waits.
    let exits = match pidfd_open(pid).and_then(|pidfd| {
        let pidfd = pidfd.ok_or(Errno::ENOSYS)?;
        // SAFETY: the OwnedFd holds a valid descriptor, and nothing closes or replaces it
        // while the AsyncFd owns it.
        Ok(unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?)
    }) {
        Ok(pidfd) => Exits::Pidfd(pidfd),
        Err(_) => match signal(SignalKind::child()) {
            Ok(child_exits) => Exits::Sigchld(child_exits),
            Err(error) => {
                // A process nobody could wait for must not run.
                let _ = kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                return Err(error);
            }
        },
    };
    let spawned = Spawned {
        pid,
        stdout: Some(stdout),
        stderr: Some(stderr),
        exits,
        status: None,
        gone: false,
        handed_off: false,
    };
    // Not expected (the mask was read from this thread), but a thread left blocking every
    // signal must not go unnoticed: the process is killed with `spawned`.
    restored?;
    Ok(spawned)
}

/// Puts back the default disposition of `signo` where its current one (`sigaction`) is
/// one `replace` picks. System calls only: the vfork child calls it.
#[expect(unsafe_code, reason = "sigaction(2); see SAFETY")]
pub(crate) fn default_disposition_where(
    signo: libc::c_int,
    replace: impl Fn(&libc::sigaction) -> bool,
) {
    // SAFETY: sigaction reads and writes `sigaction` structs on this stack; a zeroed one is
    // a valid one (no flags, empty mask, SIG_DFL).
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signo, std::ptr::null(), &mut current) == 0 && replace(&current) {
            let default: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signo, &default, std::ptr::null_mut());
        }
    }
}

/// The child's side: the default disposition for each handled signal, `stdio` in place,
/// the working folder, the caller's setup, the signal mask `launch` asks (empty but for a
/// sandbox), then `execve`. Returns only on failure.
#[expect(unsafe_code, reason = "dup2 and execve; see SAFETY")]
fn start_child(
    prepared: &Prepared,
    stdio: [libc::c_int; 3],
    launch: &Launch<'_>,
) -> std::io::Error {
    let run = || -> std::io::Result<()> {
        for signo in 1..=libc::SIGRTMAX() {
            // Numbers the C library keeps for itself refuse to be read: they stay as they are.
            default_disposition_where(signo, |current| {
                let handled = !matches!(current.sa_sigaction, libc::SIG_DFL | libc::SIG_IGN);
                handled || signo == libc::SIGPIPE
            });
        }
        for (target, fd) in stdio.into_iter().enumerate() {
            let target = target as libc::c_int;
            if fd == target {
                // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                // SAFETY: `fd` is open for the whole call (owned by the parent).
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            // SAFETY: dup2 on two descriptor numbers; no memory is involved.
            } else if unsafe { libc::dup2(fd, target) } < 0 {
                return Err(Errno::last().into());
            }
        }
        nix::unistd::chdir(prepared.cwd.as_c_str())?;
        (launch.setup)()?;
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&launch.blocked), None)?;
        // SAFETY: NUL-terminated strings and NULL-terminated arrays, alive until exec.
        unsafe {
            libc::execve(
                prepared.program.as_ptr(),
                prepared.argv.as_ptr(),
                prepared.envp.as_ptr(),
            )
        };
        Err(Errno::last().into())
    };
    match run() {
        Ok(()) => std::io::Error::from_raw_os_error(libc::EINVAL),
        Err(error) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn nothing() -> std::io::Result<()> {
        Ok(())
    }

    async fn output_of(
        program: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> (ExitStatus, String) {
        let mut child = spawn(&Launch {
            program,
            args,
            env,
            cwd: Path::new("/"),
            namespaces: CloneFlags::empty(),
            stdin: None,
            blocked: SigSet::empty(),
            setup: &nothing,
        })
        .unwrap();
        let mut text = String::new();
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_to_string(&mut text).await.unwrap();
        (child.wait().await.unwrap(), text)
    }

    #[tokio::test]
    async fn the_child_gets_default_signals_and_only_the_given_environment() {
        // This process ignores SIGPIPE (Rust's runtime does) and blocks every signal
        // around the clone: the program must start with none blocked and SIGPIPE back to
        // its default, as a program `std::process::Command` starts does.
        let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
        let field = |status: &str, name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_ne!(field(&own, "SigIgn:") & pipe_bit, 0, "{own}");
        let (status, text) = output_of("/bin/cat", &["/proc/self/status"], &[]).await;
        assert!(status.success(), "{text}");
        assert_eq!(field(&text, "SigBlk:"), 0, "{text}");
        assert_eq!(field(&text, "SigIgn:") & pipe_bit, 0, "{text}");
        let env = [("ONLY".to_owned(), "this".to_owned())];
        let (status, text) = output_of("/usr/bin/env", &[], &env).await;
        assert!(status.success(), "{text}");
        assert_eq!(text, "ONLY=this\n");
    }

    #[tokio::test]
    async fn exit_codes_and_signals_come_back_and_waiting_again_is_harmless() {
        let (status, _) = output_of("/bin/sh", &["-c", "exit 3"], &[]).await;
        assert_eq!(status.code(), Some(3));
        let (status, _) = output_of("/bin/sh", &["-c", "kill -TERM $$"], &[]).await;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        let launch = Launch {
            program: "/bin/true",
            args: &[],
            env: &[],
            cwd: Path::new("/"),
            namespaces: CloneFlags::empty(),
            stdin: None,
            blocked: SigSet::empty(),
            setup: &nothing,
        };
        let mut child = spawn(&launch).unwrap();
        assert!(child.wait().await.unwrap().success());
        assert!(child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn a_real_time_signal_that_ends_the_process_is_reported() {
        let (status, _) = output_of("/bin/sh", &["-c", "kill -35 $$"], &[]).await;
        assert_eq!(status.signal(), Some(35));
    }

    #[tokio::test]
    async fn the_setup_runs_in_the_child_only_and_the_callers_mask_is_kept() {
        let own_group = nix::unistd::getpgrp();
        let setup = || -> std::io::Result<()> {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            Ok(())
        };
        let launch = Launch {
            program: "/bin/cat",
            args: &["/proc/self/stat"],
            env: &[],
            cwd: Path::new("/"),
            namespaces: CloneFlags::empty(),
            stdin: None,
            blocked: SigSet::empty(),
            setup: &setup,
        };
        let mut child = spawn(&launch).unwrap();
        let mut stat = String::new();
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_to_string(&mut stat).await.unwrap();
        assert!(child.wait().await.unwrap().success());
        // `pid (comm) state ppid pgrp …`: the child leads a group of its own.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        assert_eq!(fields[2], child.id().to_string(), "{stat}");
        assert_eq!(nix::unistd::getpgrp(), own_group);
        let mut mask = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask)).unwrap();
        assert_eq!(mask, SigSet::empty());
    }

    #[tokio::test]
    async fn no_handler_of_the_worker_runs_in_the_child() {
        // This process handles SIGUSR1; the child raises it before exec. With the handler
        // still installed it would run (in this process's memory) and `true` would exit 0;
        // with the default disposition back, the signal ends the child.
        let _handled = tokio::signal::unix::signal(SignalKind::user_defined1()).unwrap();
        let setup = || -> std::io::Result<()> {
            nix::sys::signal::raise(Signal::SIGUSR1)?;
            Ok(())
        };
        let launch = Launch {
            program: "/bin/true",
            args: &[],
            env: &[],
            cwd: Path::new("/"),
            namespaces: CloneFlags::empty(),
            stdin: None,
            blocked: SigSet::empty(),
            setup: &setup,
        };
        let mut child = spawn(&launch).unwrap();
        assert_eq!(child.wait().await.unwrap().signal(), Some(libc::SIGUSR1));
    }

    #[tokio::test]
    async fn a_child_dropped_unwaited_is_killed_and_many_ending_at_once_are_all_seen() {
        let launch = Launch {
            program: "/bin/sleep",
            args: &["100"],
            env: &[],
            cwd: Path::new("/"),
            namespaces: CloneFlags::empty(),
            stdin: None,
            blocked: SigSet::empty(),
            setup: &nothing,
        };
        let child = spawn(&launch).unwrap();
        let stat = format!("/proc/{}/stat", child.id());
        drop(child);
        // Killed; reaped at once, or left a zombie for the sweep.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(std::time::Instant::now() < deadline, "still running");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut exits = tokio::task::JoinSet::new();
        for i in 0..50 {
            exits.spawn(async move {
                let script = format!("exit {}", i % 7);
                let code = output_of("/bin/sh", &["-c", &script], &[]).await.0.code();
                (i, code)
            });
        }
        let all = tokio::time::timeout(std::time::Duration::from_secs(30), exits.join_all())
            .await
            .expect("every exit is seen");
        let mut codes: Vec<(i32, Option<i32>)> = all;
        codes.sort();
        let expected: Vec<(i32, Option<i32>)> = (0..50).map(|i| (i, Some(i % 7))).collect();
        assert_eq!(codes, expected);
    }

    #[tokio::test]
    async fn without_pidfds_ends_are_seen_through_sigchld() {
        WITHOUT_PIDFDS.store(true, Ordering::SeqCst);
        let launch = Launch {
            program: "/bin/sleep",
            args: &["0.1"],
            env: &[],
            cwd: Path::new("/"),
            namespaces: CloneFlags::empty(),
            stdin: None,
            blocked: SigSet::empty(),
            setup: &nothing,
        };
        let mut child = spawn(&launch).unwrap();
        assert!(matches!(child.exits, Exits::Sigchld(_)));
        assert!(child.wait().await.unwrap().success());
        let (status, _) = output_of("/bin/sh", &["-c", "exit 4"], &[]).await;
        WITHOUT_PIDFDS.store(false, Ordering::SeqCst);
        assert_eq!(status.code(), Some(4));
    }

    /// A runtime shutting down drops the tasks holding children still running: before,
    /// each drop handed its killed child to a new task, which the runtime dropped at once,
    /// whose drop handed it on again, until the stack overflowed (a worker whose run was
    /// cut short, a test failing with a command still running, aborted the process).
    #[test]
    fn a_runtime_shutting_down_with_children_running_drops_them() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pid = runtime.block_on(async {
            let launch = Launch {
                program: "/bin/sleep",
                args: &["300"],
                env: &[],
                cwd: Path::new("/"),
                namespaces: CloneFlags::empty(),
                stdin: None,
                blocked: SigSet::empty(),
                setup: &nothing,
            };
            let mut child = spawn(&launch).unwrap();
            let pid = child.pid;
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            tokio::task::yield_now().await;
            pid
        });
        drop(runtime);
        // Killed: its pid is gone, or a zombie this process may reap.
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while kill(pid, None).is_ok() && std::time::Instant::now() < give_up {
            reap(pid);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(kill(pid, None), Err(Errno::ESRCH));
    }

    #[tokio::test]
    async fn a_failed_start_says_why() {
        let missing = Path::new("/nonexistent/folder");
        let failing = |program: &str, cwd: &Path, setup: &dyn Fn() -> std::io::Result<()>| {
            let launch = Launch {
                program,
                args: &[],
                env: &[],
                cwd,
                namespaces: CloneFlags::empty(),
                stdin: None,
                blocked: SigSet::empty(),
                setup,
            };
            spawn(&launch).unwrap_err()
        };
        let refused = || Err(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            failing("/bin/true", missing, &nothing).kind(),
            std::io::ErrorKind::NotFound
        );
        assert_eq!(
            failing("/nonexistent/program", Path::new("/"), &nothing).kind(),
            std::io::ErrorKind::NotFound
        );
        assert_eq!(
            failing("/bin/true", Path::new("/"), &refused).raw_os_error(),
            Some(libc::EPERM)
        );
        let nul = [("A".to_owned(), "b\0c".to_owned())];
        let launch = Launch {
            program: "/bin/true",
            args: &[],
            env: &nul,
            cwd: Path::new("/"),
            namespaces: CloneFlags::empty(),
            stdin: None,
            blocked: SigSet::empty(),
            setup: &nothing,
        };
        assert_eq!(
            spawn(&launch).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
}
