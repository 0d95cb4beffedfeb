//! Signalling a command's process group, and making sure it dies with its owner.
//!
//! Every command runs as the leader of a new process group, so that one signal reaches it
//! and everything it started (pipelines, background jobs, grandchildren). [`ProcessGroup`]
//! kills the whole group with SIGKILL when dropped: a worker that is cancelled (job timeout,
//! shutdown) leaves no process behind.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A process group that is SIGKILLed when this value is dropped.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Pid,
}

impl ProcessGroup {
    /// Takes charge of the group led by `leader_pid` (spawned with `process_group(0)`).
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
