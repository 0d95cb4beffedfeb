//! The sentinel: a small process `sluice run` and `sluice resume` start beside themselves,
//! so that the orders' processes die with `sluice` even when it is killed with SIGKILL.
//!
//! A dropped worker kills its process groups, but a killed `sluice` drops nothing. The
//! sentinel is `sluice` itself, run as the hidden `sentinel` command in a process group of
//! its own (a Ctrl-C at the terminal does not reach it) with a pipe from its parent as
//! stdin. The parent writes each run id it starts workers for; when the pipe closes —
//! `sluice` exited, normally or not — the sentinel takes each run's hold in the state
//! folder (the dead sluice's is gone with it) and, holding it, kills every process that
//! carries the run in its environment ([`kill_run_processes`]), then exits. A run whose
//! hold someone else took first (a `sluice resume` quick off the mark) is theirs: the
//! sentinel leaves it alone, and `resume` kills the leftovers itself.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;

use sluice_contract::RunId;
use sluice_engine::local::RunOwnership;
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
    pub fn spawn(state_dir: &Path) -> std::io::Result<Sentinel> {
        use std::os::unix::process::CommandExt;
        let child = Command::new(std::env::current_exe()?)
            .arg(COMMAND)
            .arg(state_dir)
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
/// left of those runs in `state_dir`. Returns the exit code.
pub fn serve(state_dir: &Path) -> i32 {
    let mut runs = Vec::new();
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(run) => runs.extend(RunId::parse(run.trim())),
            Err(_) => break,
        }
    }
    for run in runs {
        // Holding the run while its leftovers are killed: a resume waits for it.
        let Ok(_hold) = RunOwnership::take(state_dir, &run) else {
            continue;
        };
        let killed = kill_run_processes(run.as_str());
        if killed > 0 {
            let _ = writeln!(
                std::io::stderr(),
                "sluice: sentinel: killed {killed} processes of run {run} that outlived sluice"
            );
        }
    }
    0
}
