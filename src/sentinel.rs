//! The sentinel: a small process `sluice run` and `sluice resume` start beside themselves,
//! so that the orders' processes die with `sluice` even when it is killed with SIGKILL.
//!
//! A dropped worker kills its process groups, but a killed `sluice` drops nothing. The
//! sentinel is `sluice` itself, run as the hidden `sentinel` command in a process group of
//! its own (a Ctrl-C at the terminal does not reach it) with a pipe from its parent as
//! stdin. The parent writes each run id it starts workers for; when the pipe closes —
//! `sluice` exited, normally or not — the sentinel kills every process that carries one of
//! those runs in its environment ([`kill_run_processes`]) and exits.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;

use sluice_worker::process_group::kill_run_processes;

/// The hidden command's name.
pub const COMMAND: &str = "sentinel";

/// The parent's end: tells the sentinel which runs to clean up after.
#[derive(Debug)]
pub struct Sentinel {
    pipe: Mutex<Option<ChildStdin>>,
    told: Mutex<HashSet<String>>,
}

impl Sentinel {
    /// Starts the sentinel process.
    ///
    /// # Errors
    ///
    /// This executable cannot be found or started.
    pub fn spawn() -> std::io::Result<Sentinel> {
        use std::os::unix::process::CommandExt;
        let child = Command::new(std::env::current_exe()?)
            .arg(COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        Ok(Sentinel {
            pipe: Mutex::new(child.stdin),
            told: Mutex::default(),
        })
    }

    /// Makes sure the sentinel will clean up after `run_id` (once per run).
    pub fn watch(&self, run_id: &str) {
        if !self.told.lock().unwrap().insert(run_id.to_owned()) {
            return;
        }
        if let Some(pipe) = self.pipe.lock().unwrap().as_mut()
            && let Err(error) = writeln!(pipe, "{run_id}")
        {
            tracing::warn!(%error, run_id, "could not tell the sentinel about a run; its processes may outlive a killed sluice");
        }
    }
}

/// The sentinel's body: collects run ids from stdin until it closes, then kills what is
/// left of those runs. Returns the exit code.
pub fn serve() -> i32 {
    let mut runs = Vec::new();
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(run) if !run.trim().is_empty() => runs.push(run.trim().to_owned()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    for run in runs {
        let killed = kill_run_processes(&run);
        if killed > 0 {
            eprintln!(
                "sluice: sentinel: killed {killed} processes of run {run} that outlived sluice"
            );
        }
    }
    0
}
