//! Running an order's commands as real subprocesses.
//!
//! Each command runs as `/bin/sh -c <cmd>` in a session of its own ([`containment`]), with
//! stdin closed, the environment built from scratch (only what [`ShellOrder::env`] lists),
//! and stdout and stderr read concurrently, as they arrive, into the log pipeline. One
//! deadline covers the whole order. At the deadline, or when the run is stopped, the group
//! gets SIGTERM, then, after the grace period (output still drained meanwhile), SIGKILL.
//! After a command exits, its pipes get a bounded time to close: a background process
//! holding them cannot hang the worker. When a command is done, whatever is left of its
//! process group is killed, and so is every process it left behind outside the group
//! ([`containment::sweep`]): nothing an order started outlives it. Commands run in turn
//! and the first non-zero exit stops the order.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::containment;
use crate::log_sink::{CHUNK_SIZE, LogSender, LogSink};
use crate::process_group::ProcessGroup;
use crate::sandbox::Jail;

/// How commands are stopped and drained. Defaults: 10 s grace, 2 s for pipes to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellSettings {
    /// Time between SIGTERM and SIGKILL at the deadline.
    pub grace: Duration,
    /// Time pipes get to close after their command exited.
    pub pipe_drain: Duration,
}

impl Default for ShellSettings {
    fn default() -> Self {
        ShellSettings {
            grace: Duration::from_secs(10),
            pipe_drain: Duration::from_secs(2),
        }
    }
}

/// What to run, where, with what.
#[derive(Debug)]
pub struct ShellOrder<'a> {
    /// The commands, in order.
    pub cmds: &'a [String],
    /// The complete environment of every command.
    pub env: &'a [(String, String)],
    /// The working directory.
    pub cwd: &'a Path,
    /// When the order's time is up.
    pub deadline: Instant,
    /// Cancelled when the run is stopped (Ctrl-C, SIGTERM): the command is stopped as at
    /// the deadline (SIGTERM, the grace period, SIGKILL).
    pub stop: &'a CancellationToken,
    /// The sandbox each command runs in, if any ([`crate::sandbox`]).
    pub jail: Option<&'a Jail>,
}

/// How an order's commands ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOutcome {
    /// Every command exited 0.
    Succeeded,
    /// A command exited non-zero or was killed by a signal.
    Failed {
        /// Which command (0-based).
        cmd_index: usize,
        /// Its exit code (128 + signal when killed by one).
        exit_code: i32,
        /// A sentence for the result's `reason`.
        reason: String,
    },
    /// The deadline passed; the command's group was stopped.
    TimedOut {
        /// Which command was running.
        cmd_index: usize,
    },
    /// The run was stopped; the command's group was stopped with it.
    Stopped {
        /// Which command was running.
        cmd_index: usize,
    },
    /// A command could not be started.
    SpawnFailed {
        /// Which command.
        cmd_index: usize,
        /// Why.
        reason: String,
    },
}

/// Runs the commands (see the module docs), writing their output into `log`.
pub async fn run_cmds(
    order: &ShellOrder<'_>,
    log: &LogSink,
    settings: ShellSettings,
) -> ShellOutcome {
    let total = order.cmds.len();
    for (cmd_index, cmd) in order.cmds.iter().enumerate() {
        log.note(&format!("[{}/{total}] {cmd}", cmd_index + 1))
            .await;
        match run_one(cmd, order, log, settings).await {
            Ok(CmdEnd::Exited(status)) if status.success() => {}
            Ok(CmdEnd::Exited(status)) => {
                let (exit_code, reason) = describe(&status);
                log.note(&reason).await;
                return ShellOutcome::Failed {
                    cmd_index,
                    exit_code,
                    reason,
                };
            }
            Ok(CmdEnd::TimedOut) => {
                log.note(&format!(
                    "timed out: command {} stopped at the order's deadline",
                    cmd_index + 1
                ))
                .await;
                return ShellOutcome::TimedOut { cmd_index };
            }
            Ok(CmdEnd::Stopped) => {
                log.note(&format!(
                    "stopped: command {} stopped because the run was cancelled",
                    cmd_index + 1
                ))
                .await;
                return ShellOutcome::Stopped { cmd_index };
            }
            Err(e) => {
                let reason = format!("command {} could not be started: {e}", cmd_index + 1);
                log.note(&reason).await;
                return ShellOutcome::SpawnFailed { cmd_index, reason };
            }
        }
    }
    ShellOutcome::Succeeded
}

enum CmdEnd {
    Exited(ExitStatus),
    TimedOut,
    Stopped,
}

fn describe(status: &ExitStatus) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, format!("exit code {code}")),
        (None, Some(signal)) => (128 + signal, format!("killed by signal {signal}")),
        (None, None) => (-1, "ended without an exit code".to_owned()),
    }
}

async fn run_one(
    cmd: &str,
    order: &ShellOrder<'_>,
    log: &LogSink,
    settings: ShellSettings,
) -> std::io::Result<CmdEnd> {
    let (shell, mut child) = containment::spawn_shell(cmd, order.env, order.cwd, order.jail)?;
    let group = ProcessGroup::new(child.id());
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    widen_pipe(&stdout);
    widen_pipe(&stderr);
    let mut readers = vec![pump(stdout, log.sender()), pump(stderr, log.sender())];

    let stopped = tokio::select! {
        status = child.wait() => Ok(status?),
        _ = tokio::time::sleep_until(order.deadline) => Err(CmdEnd::TimedOut),
        _ = order.stop.cancelled() => Err(CmdEnd::Stopped),
    };
    let end = match stopped {
        Ok(status) => CmdEnd::Exited(status),
        Err(why) => {
            group.signal(Signal::SIGTERM);
            let kill_at = Instant::now() + settings.grace;
            // Wait for the command to exit and its output to end, up to the grace period.
            let exited = timeout_at(kill_at, async {
                let status = child.wait().await;
                join_all(&mut readers).await;
                status
            })
            .await;
            if exited.is_err() {
                group.signal(Signal::SIGKILL);
                child.wait().await?;
            }
            why
        }
    };
    if timeout(settings.pipe_drain, join_all(&mut readers))
        .await
        .is_err()
    {
        log.note("output still open after the command exited: its background processes are killed")
            .await;
    }
    drop(group); // SIGKILL to whatever is left of the group.
    drop(child); // Reaped: until now its pid, the group's id, could not be reused.
    drop(shell); // From here on, what it left behind is a leftover.
    // Processes that left the group (setsid, double forks) came to this process when the
    // shell ended: kill them too.
    let swept = tokio::task::spawn_blocking(containment::sweep)
        .await
        .unwrap_or(0);
    if swept > 0 {
        log.note(&format!(
            "{swept} background process(es) left behind by the command were killed"
        ))
        .await;
    }
    // Killed processes close their pipes at once; a reader still stuck now is held by a
    // process that left the group (setsid): give up on it rather than hang.
    if timeout(Duration::from_secs(1), join_all(&mut readers))
        .await
        .is_err()
    {
        for reader in &readers {
            reader.abort();
        }
    }
    Ok(end)
}

/// Waits for every reader still running; cancel-safe (finished handles are removed).
async fn join_all(readers: &mut Vec<JoinHandle<()>>) {
    while let Some(reader) = readers.last_mut() {
        let _ = reader.await;
        readers.pop();
    }
}

/// Copies a pipe into the log, chunk by chunk, as data arrives.
fn pump<R: AsyncRead + Unpin + Send + 'static>(mut pipe: R, log: LogSender) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut buffer = log.buffer();
            match (&mut pipe)
                .take(CHUNK_SIZE as u64)
                .read_buf(&mut buffer)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if log.send(buffer).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Grows a pipe's kernel buffer so a fast producer wakes the reader less often. Best effort:
/// the system's limit (`/proc/sys/fs/pipe-max-size`) may refuse, which changes nothing else.
fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(CHUNK_SIZE as i32));
}
