//! Signalling a command's process group, and making sure it dies with its owner.
//!
//! Every command runs as the leader of a new process group, so that one signal reaches it
//! and everything it started (pipelines, background jobs, grandchildren). [`ProcessGroup`]
//! kills the whole group with SIGKILL when dropped: a worker that is cancelled (job timeout,
//! shutdown) leaves no process behind.
//!
//! When the worker's own process dies (`kill -9` of `sluice run`), no drop runs: every
//! order process still carries its run's id in its environment (`SLUICE_RUN_ID`, inherited
//! by everything it starts, `setsid` daemons included), and [`kill_run_processes`] finds
//! and kills them by it — the local runtime's sentinel does so when `sluice` dies, and
//! `sluice resume` before it takes a run over.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A process group that is SIGKILLed when this value is dropped.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Pid,
}

impl ProcessGroup {
    /// Takes charge of the group led by `leader_pid` (a command's shell, which leads a session
    /// and so a group of its own).
    pub fn new(leader_pid: u32) -> Self {
        let raw = i32::try_from(leader_pid).expect("pids fit in i32");
        ProcessGroup {
            pgid: Pid::from_raw(raw),
        }
    }

    /// Sends `signal` to every process of the group. A group with no process left is not an
    /// error.
    pub fn signal(&self, signal: Signal) {
        match killpg(self.pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => {
                tracing::warn!(pgid = self.pgid.as_raw(), %error, ?signal, "could not signal process group")
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// The variable every order process of a run carries (see the module docs).
pub const RUN_MARKER: &str = "SLUICE_RUN_ID";

/// Kills (SIGKILL) every process of this user whose environment says it belongs to run
/// `run_id`, again and again until none is left (one may fork while the others die), and
/// returns how many were killed. Never this process itself. Blocking: it reads `/proc`.
pub fn kill_run_processes(run_id: &str) -> usize {
    let marker = format!("{RUN_MARKER}={run_id}");
    let me = std::process::id();
    let mut killed = 0;
    for _ in 0..50 {
        let found = marked_processes(marker.as_bytes(), me);
        if found.is_empty() {
            break;
        }
        for pid in &found {
            let pid = Pid::from_raw(*pid as i32);
            if nix::sys::signal::kill(pid, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed
}

/// Processes (other than `me`) whose initial environment holds `marker` (`NAME=value`).
fn marked_processes(marker: &[u8], me: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            // A process gone meanwhile, or one we may not read, is not ours to kill.
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == marker))
        })
        .collect()
}
